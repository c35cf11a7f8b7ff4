//! A small local-process plugin that keeps its promises unless told to break
//! one: the mutation test of `host plugin test`. Each `broken-*` guest breaks
//! exactly one promise and must fail exactly the check named for it.
pub use host_plugin_sdk;
use host_plugin_sdk::capabilities::process::{self, SpawnRequest};
use host_plugin_sdk::log;
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Error, Exit, Info, Job, Result, Status};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Which promise to break.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// `stop` does nothing.
    Stop,
    /// `destroy` does nothing (the working directory stays).
    Destroy,
    /// `wait` does not forward the output.
    Output,
    /// `describe` lists no capabilities while the component imports `process`.
    Describe,
    /// The example run fails (exit 3) after some output.
    Exit,
}

#[derive(Deserialize)]
pub struct Config {
    command: String,
}

#[derive(Serialize, Deserialize)]
pub struct Handle {
    id: u64,
    cwd: String,
}

pub fn info(name: &str, broken: Broken) -> Info {
    Info {
        name: name.into(),
        version: "0.0.1".into(),
        description: format!("test guest that breaks one promise: {name}"),
        default_base_job_template: Template::new()
            .variable("command", template::string("shell command", Some("true")))
            .build(),
        capabilities: if broken == Broken::Describe {
            vec![]
        } else {
            vec!["process".into()]
        },
        example_variables: if broken == Broken::Exit {
            serde_json::json!({"command": "echo promised; echo 'the last words'; echo 'on stderr' >&2; exit 3"})
        } else {
            serde_json::json!({"command": "echo promised"})
        },
    }
}

pub fn long_running() -> Option<serde_json::Value> {
    Some(serde_json::json!({"command": "sleep 300"}))
}

pub fn start(job: Job<Config>) -> Result<Handle> {
    let spawned = process::spawn(&SpawnRequest {
        argv: vec!["sh".into(), "-c".into(), job.config.command],
        env: job.env,
        cwd: None,
    })
    .map_err(Error::fatal)?;
    Ok(Handle {
        id: spawned.id,
        cwd: spawned.cwd,
    })
}

pub fn wait(handle: Handle, broken: Broken) -> Result<Exit> {
    loop {
        let batch = process::read_output(handle.id, 1_000).map_err(Error::fatal)?;
        if broken != Broken::Output {
            for (stream, line) in &batch.lines {
                log::output(*stream, line);
            }
        }
        if batch.eof {
            break;
        }
    }
    Ok(process::wait(handle.id).map_err(Error::fatal)?.into())
}

pub fn inspect(handle: Handle) -> Result<Status> {
    match process::try_wait(handle.id) {
        Ok(None) => Ok(Status::Running),
        Ok(Some(exit)) => Ok(Status::Exited(exit.into())),
        Err(why) => Ok(Status::NotFound(why)),
    }
}

pub fn stop(handle: Handle, grace_seconds: u32, broken: Broken) -> Result<()> {
    if broken == Broken::Stop {
        return Ok(());
    }
    process::signal(handle.id, 15).map_err(Error::fatal)?;
    let deadline = Instant::now() + Duration::from_secs(grace_seconds.into());
    while Instant::now() < deadline {
        if !matches!(process::try_wait(handle.id), Ok(None)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    process::signal(handle.id, 9).map_err(Error::fatal)
}

pub fn destroy(handle: Handle, broken: Broken) -> Result<()> {
    if broken == Broken::Destroy {
        return Ok(());
    }
    process::remove_dir(&handle.cwd).map_err(Error::fatal)
}

/// A plugin named `$name` that breaks `$broken`.
#[macro_export]
macro_rules! broken_plugin {
    ($plugin:ident, $name:expr, $broken:expr) => {
        pub struct $plugin;
        impl $crate::host_plugin_sdk::Plugin for $plugin {
            type Config = $crate::Config;
            type Handle = $crate::Handle;
            fn info() -> $crate::host_plugin_sdk::Info {
                $crate::info($name, $broken)
            }
            fn long_running_example() -> Option<$crate::host_plugin_sdk::serde_json::Value> {
                $crate::long_running()
            }
            fn start(
                job: $crate::host_plugin_sdk::Job<$crate::Config>,
            ) -> $crate::host_plugin_sdk::Result<$crate::Handle> {
                $crate::start(job)
            }
            fn wait(
                h: $crate::Handle,
            ) -> $crate::host_plugin_sdk::Result<$crate::host_plugin_sdk::Exit> {
                $crate::wait(h, $broken)
            }
            fn inspect(
                h: $crate::Handle,
            ) -> $crate::host_plugin_sdk::Result<$crate::host_plugin_sdk::Status> {
                $crate::inspect(h)
            }
            fn stop(h: $crate::Handle, grace: u32) -> $crate::host_plugin_sdk::Result<()> {
                $crate::stop(h, grace, $broken)
            }
            fn destroy(h: $crate::Handle) -> $crate::host_plugin_sdk::Result<()> {
                $crate::destroy(h, $broken)
            }
        }
        $crate::host_plugin_sdk::export_plugin!($plugin);
    };
}
