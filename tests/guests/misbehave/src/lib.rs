//! Loads and describes itself fine, then misbehaves during a run as the job
//! variable `mode` says: `trap` (panic in wait), `loop` (spin in wait),
//! `alloc` (1 GiB in wait) or `ok`. A worker must mark such a run CRASHED and
//! carry on claiming.
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::{Deserialize, Serialize};

struct Misbehave;

#[derive(Deserialize)]
struct Config {
    mode: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Handle {
    mode: String,
}

impl Plugin for Misbehave {
    type Config = Config;
    type Handle = Handle;

    fn info() -> Info {
        Info {
            name: "misbehave".into(),
            version: "0.0.1".into(),
            description: "test guest that misbehaves during runs".into(),
            default_base_job_template: Template::new()
                .variable(
                    "mode",
                    template::string("trap | loop | alloc | ok", Some("ok")),
                )
                .build(),
            capabilities: vec![],
            example_variables: serde_json::json!({"mode": "ok"}),
        }
    }

    fn start(job: Job<Config>) -> Result<Handle> {
        Ok(Handle {
            mode: job.config.mode.unwrap_or_else(|| "ok".into()),
        })
    }

    fn wait(handle: Handle) -> Result<Exit> {
        match handle.mode.as_str() {
            "trap" => panic!("misbehave: deliberate trap in wait"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let big = vec![1u8; 1 << 30];
                Ok(Exit::code(i32::from(std::hint::black_box(&big)[7])))
            }
            _ => Ok(Exit::code(0)),
        }
    }

    fn inspect(_handle: Handle) -> Result<Status> {
        Ok(Status::Exited(Exit::code(0)))
    }

    fn stop(_handle: Handle, _grace_seconds: u32) -> Result<()> {
        Ok(())
    }

    fn destroy(_handle: Handle) -> Result<()> {
        Ok(())
    }
}

export_plugin!(Misbehave);
