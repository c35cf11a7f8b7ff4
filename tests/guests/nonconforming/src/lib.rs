//! Loads fine but breaks the contract twice: its example run fails and `stop`
//! errors. `host plugin test` must name exactly those checks.
use host_plugin_sdk::{Error, Exit, Info, Job, Plugin, Result, Status, export_plugin};

struct Nonconforming;

impl Plugin for Nonconforming {
    type Config = serde_json::Value;
    type Handle = serde_json::Value;

    fn info() -> Info {
        guest_common::info("nonconforming", &[])
    }
    fn long_running_example() -> Option<serde_json::Value> {
        guest_common::long_running()
    }
    fn start(job: Job<Self::Config>) -> Result<Self::Handle> {
        Ok(guest_common::start(&job.config))
    }
    fn wait(handle: Self::Handle) -> Result<Exit> {
        guest_common::wait(&handle);
        Ok(Exit::code(2))
    }
    fn inspect(handle: Self::Handle) -> Result<Status> {
        Ok(guest_common::inspect(&handle, Exit::code(2)))
    }
    fn stop(_handle: Self::Handle, _grace_seconds: u32) -> Result<()> {
        Err(Error::fatal("stop is not implemented"))
    }
    fn destroy(_handle: Self::Handle) -> Result<()> {
        Ok(())
    }
}

export_plugin!(Nonconforming);
