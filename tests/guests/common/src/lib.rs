//! A small well-behaved plugin skeleton: each test guest overrides the one
//! call that misbehaves, so the guests stay a few lines each.
//!
//! A run lasts the job variable `seconds` (0 for the example, 300 for the
//! long-running example), says one line, and exits 0.

pub use host_plugin_sdk;
use host_plugin_sdk::log::{self, OutputStream};
use host_plugin_sdk::{Exit, Status};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn info(name: &str, capabilities: &[&str]) -> host_plugin_sdk::Info {
    use host_plugin_sdk::template::{self, Template};
    host_plugin_sdk::Info {
        name: name.into(),
        version: "0.0.1".into(),
        description: format!("test guest {name}"),
        default_base_job_template: Template::new()
            .variable(
                "seconds",
                template::integer("How long a run lasts", 0, Some(0)),
            )
            .build(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        example_variables: serde_json::json!({}),
    }
}

pub fn long_running() -> Option<serde_json::Value> {
    Some(serde_json::json!({"seconds": 300}))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The handle: when the run ends.
pub fn start(config: &serde_json::Value) -> serde_json::Value {
    let seconds = config["seconds"].as_u64().unwrap_or(0);
    serde_json::json!({"until_ms": now_ms() + seconds * 1000})
}

fn until(handle: &serde_json::Value) -> u64 {
    handle["until_ms"].as_u64().unwrap_or(0)
}

/// Sleeps until the run ends, then says so.
pub fn wait(handle: &serde_json::Value) {
    std::thread::sleep(Duration::from_millis(
        until(handle).saturating_sub(now_ms()),
    ));
    log::output(OutputStream::Stdout, "done");
}

pub fn inspect(handle: &serde_json::Value, exit: Exit) -> Status {
    if now_ms() < until(handle) {
        Status::Running
    } else {
        Status::Exited(exit)
    }
}

/// Implements every call but `info` as the skeleton's.
#[macro_export]
macro_rules! guest_plugin {
    ($plugin:ident, info = $info:expr) => {
        pub struct $plugin;
        impl $crate::host_plugin_sdk::Plugin for $plugin {
            type Config = $crate::host_plugin_sdk::serde_json::Value;
            type Handle = $crate::host_plugin_sdk::serde_json::Value;
            fn info() -> $crate::host_plugin_sdk::Info {
                $info
            }
            fn long_running_example() -> Option<$crate::host_plugin_sdk::serde_json::Value> {
                $crate::long_running()
            }
            fn start(
                job: $crate::host_plugin_sdk::Job<Self::Config>,
            ) -> $crate::host_plugin_sdk::Result<Self::Handle> {
                Ok($crate::start(&job.config))
            }
            fn wait(
                h: Self::Handle,
            ) -> $crate::host_plugin_sdk::Result<$crate::host_plugin_sdk::Exit> {
                $crate::wait(&h);
                Ok($crate::host_plugin_sdk::Exit::code(0))
            }
            fn inspect(
                h: Self::Handle,
            ) -> $crate::host_plugin_sdk::Result<$crate::host_plugin_sdk::Status> {
                Ok($crate::inspect(&h, $crate::host_plugin_sdk::Exit::code(0)))
            }
            fn stop(_h: Self::Handle, _grace: u32) -> $crate::host_plugin_sdk::Result<()> {
                Ok(())
            }
            fn destroy(_h: Self::Handle) -> $crate::host_plugin_sdk::Result<()> {
                Ok(())
            }
        }
        $crate::host_plugin_sdk::export_plugin!($plugin);
    };
}
