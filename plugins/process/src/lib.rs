//! The `process` infrastructure: each flow run is a local process in its own
//! process group, in a fresh temporary directory unless told otherwise.

use host_plugin_sdk::capabilities::process::{self, SpawnRequest};
use host_plugin_sdk::log;
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Error, Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

pub struct ProcessPlugin;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Overrides the job's argv: run through `sh -c`.
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    /// Merged over the job's env by the worker already; kept so templates may
    /// set it, and applied last here for direct callers.
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    /// Keep the temporary working dir after the run (for debugging).
    #[serde(default)]
    keep_working_dir: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Handle {
    /// The capability's id of the process: never reused, unlike `pid`.
    id: u64,
    /// For people reading the handle.
    pid: u32,
    cwd: String,
    /// Only a directory we created is removed by `destroy`.
    remove_cwd: bool,
}

impl Plugin for ProcessPlugin {
    type Config = Config;
    type Handle = Handle;

    fn info() -> Info {
        Info {
            name: "process".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Run each flow run as a local process on the worker's machine".into(),
            default_base_job_template: Template::new()
                .variable(
                    "command",
                    template::string(
                        "Shell command to run instead of the deployment's command",
                        None,
                    ),
                )
                .variable(
                    "working_dir",
                    template::string(
                        "Working directory; a fresh temporary directory when unset",
                        None,
                    ),
                )
                .variable(
                    "env",
                    template::string_map("Environment variables for the process"),
                )
                .variable(
                    "keep_working_dir",
                    template::boolean("Keep the temporary working directory after the run", false),
                )
                .build(),
            capabilities: vec!["process".into()],
            example_variables: serde_json::json!({"command": "echo hello from process"}),
        }
    }

    fn long_running_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"command": "sleep 300"}))
    }

    fn validate(config: &Config) -> Result<()> {
        if config
            .command
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(Error::fatal("command: must not be empty"));
        }
        if config
            .working_dir
            .as_deref()
            .is_some_and(|d| !d.starts_with('/'))
        {
            return Err(Error::fatal("working_dir: must be an absolute path"));
        }
        Ok(())
    }

    fn start(job: Job<Config>) -> Result<Handle> {
        let argv = match &job.config.command {
            Some(command) => vec!["sh".into(), "-c".into(), command.clone()],
            None => job.command.clone(),
        };
        if argv.is_empty() {
            return Err(Error::fatal(
                "command: nothing to run (no command in the job or the configuration)",
            ));
        }
        let mut env = job.env;
        for (key, value) in job.config.env.unwrap_or_default() {
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        }
        let spawned = process::spawn(&SpawnRequest {
            argv,
            env,
            cwd: job.config.working_dir.clone(),
        })
        .map_err(Error::fatal)?;
        log::info(&format!(
            "flow run {} started as pid {}",
            job.flow_run_id, spawned.pid
        ));
        Ok(Handle {
            id: spawned.id,
            pid: spawned.pid,
            cwd: spawned.cwd,
            remove_cwd: job.config.working_dir.is_none()
                && !job.config.keep_working_dir.unwrap_or(false),
        })
    }

    fn wait(handle: Handle) -> Result<Exit> {
        loop {
            let batch = process::read_output(handle.id, 1_000).map_err(Error::fatal)?;
            for (stream, line) in &batch.lines {
                log::output(*stream, line);
            }
            if batch.eof {
                break;
            }
        }
        Ok(process::wait(handle.id).map_err(Error::fatal)?.into())
    }

    fn inspect(handle: Handle) -> Result<Status> {
        match process::try_wait(handle.id) {
            Ok(None) => Ok(Status::Running),
            Ok(Some(exit)) => Ok(Status::Exited(exit.into())),
            Err(why) => Ok(Status::NotFound(why)),
        }
    }

    fn stop(handle: Handle, grace_seconds: u32) -> Result<()> {
        process::signal(handle.id, SIGTERM).map_err(Error::fatal)?;
        let deadline = Instant::now() + Duration::from_secs(grace_seconds.into());
        while Instant::now() < deadline {
            match process::try_wait(handle.id) {
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                _ => return Ok(()),
            }
        }
        log::warn(&format!(
            "pid {} ignored SIGTERM for {grace_seconds}s; sending SIGKILL",
            handle.pid
        ));
        process::signal(handle.id, SIGKILL).map_err(Error::fatal)
    }

    fn destroy(handle: Handle) -> Result<()> {
        if handle.remove_cwd {
            process::remove_dir(&handle.cwd).map_err(Error::fatal)?;
        }
        Ok(())
    }
}

export_plugin!(ProcessPlugin);
