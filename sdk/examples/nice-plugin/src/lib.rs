//! A `nice` infrastructure: each flow run is a local process started through
//! `nice -n N`, so flows yield the CPU to the machine's other work.

use host_plugin_sdk::local::LocalProcess;
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::Deserialize;

struct Nice;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    command: String,
    niceness: u8,
}

impl Plugin for Nice {
    type Config = Config;
    type Handle = LocalProcess;

    fn info() -> Info {
        Info {
            name: "nice".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Run each flow run as a local process at a lower CPU priority".into(),
            default_base_job_template: Template::new()
                .required(
                    "command",
                    template::string_matching("Shell command to run", r"\S", None),
                )
                .variable(
                    "niceness",
                    template::integer_between(
                        "Added to the priority: 19 is the lowest",
                        0,
                        19,
                        Some(10),
                    ),
                )
                .build(),
            capabilities: vec!["process".into()],
            example_variables: serde_json::json!({"command": "echo hello from nice"}),
        }
    }

    fn long_running_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"command": "sleep 300"}))
    }

    fn start(job: Job<Config>) -> Result<LocalProcess> {
        let niceness = job.config.niceness.min(19).to_string();
        let argv = ["nice", "-n", &niceness, "sh", "-c", &job.config.command];
        LocalProcess::spawn(argv.map(String::from).to_vec(), job.env, None)
    }

    fn wait(process: LocalProcess) -> Result<Exit> {
        process.forward_output_until_exit()
    }

    fn inspect(process: LocalProcess) -> Result<Status> {
        Ok(process.status())
    }

    fn stop(process: LocalProcess, grace_seconds: u32) -> Result<()> {
        process.stop(grace_seconds)
    }

    fn destroy(process: LocalProcess) -> Result<()> {
        process.destroy()
    }
}

export_plugin!(Nice);
