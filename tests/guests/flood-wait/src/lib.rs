//! Its example run floods `log.output` with 1 KiB lines for five seconds:
//! whoever collects the output (`host plugin test`, a worker) must stay small.
use host_plugin_sdk::log::{self, OutputStream};
use host_plugin_sdk::{Exit, Info, Job, Plugin, Result, Status, export_plugin};
use std::time::{Duration, Instant};

struct FloodWait;

impl Plugin for FloodWait {
    type Config = serde_json::Value;
    type Handle = serde_json::Value;

    fn info() -> Info {
        guest_common::info("flood-wait", &[])
    }
    fn long_running_example() -> Option<serde_json::Value> {
        guest_common::long_running()
    }
    fn start(job: Job<Self::Config>) -> Result<Self::Handle> {
        Ok(guest_common::start(&job.config))
    }
    fn wait(_handle: Self::Handle) -> Result<Exit> {
        let line = "f".repeat(1024);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            log::output(OutputStream::Stdout, &line);
        }
        Ok(Exit::code(0))
    }
    fn inspect(handle: Self::Handle) -> Result<Status> {
        Ok(guest_common::inspect(&handle, Exit::code(0)))
    }
    fn stop(_handle: Self::Handle, _grace_seconds: u32) -> Result<()> {
        Ok(())
    }
    fn destroy(_handle: Self::Handle) -> Result<()> {
        Ok(())
    }
}

export_plugin!(FloodWait);
