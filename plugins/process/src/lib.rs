//! The `process` infrastructure: each flow run is a local process in its own
//! process group, in a fresh temporary directory unless told otherwise.

use host_plugin_sdk::local::{LocalProcess, merge_env};
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Error, Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::Deserialize;
use std::collections::BTreeMap;

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

/// The process, its working directory, and whether `destroy` removes it.
pub type Handle = LocalProcess;

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
        let env = merge_env(job.env, job.config.env.unwrap_or_default());
        let mut process = LocalProcess::spawn(argv, env, job.config.working_dir)?;
        process.remove_cwd &= !job.config.keep_working_dir.unwrap_or(false);
        Ok(process)
    }

    fn wait(handle: Handle) -> Result<Exit> {
        handle.forward_output_until_exit()
    }

    fn inspect(handle: Handle) -> Result<Status> {
        Ok(handle.status())
    }

    fn stop(handle: Handle, grace_seconds: u32) -> Result<()> {
        handle.stop(grace_seconds)
    }

    fn destroy(handle: Handle) -> Result<()> {
        handle.destroy()
    }
}

export_plugin!(ProcessPlugin);
