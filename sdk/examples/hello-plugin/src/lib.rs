//! The example plugin of `docs/PLUGINS.md`: its "infrastructure" is a greeting
//! that takes `seconds` to deliver. It needs no capability beyond `log`.

use host_plugin_sdk::log::{self, OutputStream};
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Error, Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Hello;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    greeting: Option<String>,
    seconds: Option<u64>,
}

/// Everything later calls need: the plugin keeps no state between calls.
#[derive(Serialize, Deserialize)]
struct Handle {
    greeting: String,
    done_at_unix_ms: u64,
}

impl Plugin for Hello {
    type Config = Config;
    type Handle = Handle;

    fn info() -> Info {
        Info {
            name: "hello".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Greets instead of provisioning anything".into(),
            default_base_job_template: Template::new()
                .variable("greeting", template::string("What to say", Some("hello")))
                .variable(
                    "seconds",
                    template::integer("How long saying it takes", 0, Some(0)),
                )
                .build(),
            capabilities: vec![],
            example_variables: serde_json::json!({"greeting": "hi", "seconds": 0}),
        }
    }

    fn long_running_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"greeting": "hi", "seconds": 300}))
    }

    fn validate(config: &Config) -> Result<()> {
        match &config.greeting {
            Some(g) if g.trim().is_empty() => Err(Error::fatal("greeting: must not be empty")),
            _ => Ok(()),
        }
    }

    fn start(job: Job<Config>) -> Result<Handle> {
        let seconds = job.config.seconds.unwrap_or(0);
        Ok(Handle {
            greeting: format!(
                "{}, {}",
                job.config.greeting.unwrap_or("hello".into()),
                job.flow_run_name
            ),
            done_at_unix_ms: now_ms() + seconds * 1000,
        })
    }

    fn wait(handle: Handle) -> Result<Exit> {
        std::thread::sleep(Duration::from_millis(
            handle.done_at_unix_ms.saturating_sub(now_ms()),
        ));
        log::output(OutputStream::Stdout, &handle.greeting);
        Ok(Exit::code(0))
    }

    fn inspect(handle: Handle) -> Result<Status> {
        Ok(if now_ms() < handle.done_at_unix_ms {
            Status::Running
        } else {
            Status::Exited(Exit::code(0))
        })
    }

    fn stop(_handle: Handle, _grace_seconds: u32) -> Result<()> {
        Ok(())
    }

    fn destroy(_handle: Handle) -> Result<()> {
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

export_plugin!(Hello);
