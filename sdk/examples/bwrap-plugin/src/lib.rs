//! A `bwrap` infrastructure: each flow run is a local process in a bubblewrap
//! sandbox of its own: new namespaces, the system read-only, the run's fresh
//! directory as `/work`, and nothing else of the machine unless asked.

use host_plugin_sdk::local::LocalProcess;
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::wrap::Wrapper;
use host_plugin_sdk::{Info, Job, Plugin, Result, export_plugin};
use serde::Deserialize;

struct Bwrap;

/// New namespaces, `/usr` read-only, the run's fresh directory as `/work`
/// (`.`: bwrap starts in it). No --new-session: the host ends a run through
/// its process tree, and --die-with-parent ends the sandbox with bwrap.
const SANDBOX: &str = "--die-with-parent --unshare-all --ro-bind /usr /usr \
    --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
    --proc /proc --dev /dev --tmpfs /tmp --bind . /work --chdir /work";

/// `env` is not here: the worker hands it over as `job.env`.
#[derive(Deserialize)]
struct Config {
    command: Option<String>,
    read_only: Vec<String>,
    network: bool,
}

impl Plugin for Bwrap {
    type Config = Config;
    type Handle = LocalProcess;

    fn info() -> Info {
        let (command, paths, network, env) = (
            template::string_matching("Shell command", r"\S", None),
            template::string_list("Host paths shown read-only", Some("^/")),
            template::boolean("Share the host's network", false),
            template::string_map("Environment inside the sandbox"),
        );
        Info {
            name: "bwrap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Run each flow run in a bubblewrap sandbox of its own".into(),
            default_base_job_template: (Template::new().variable("command", command))
                .variable("read_only", paths)
                .variable("network", network)
                .variable("env", env)
                .build(),
            capabilities: vec!["process".into()],
            example_variables: serde_json::json!({"command": "echo hello from $PWD"}),
        }
    }

    fn long_running_example() -> Option<serde_json::Value> {
        Some(serde_json::json!({"command": "sleep 300"}))
    }

    fn start(job: Job<Config>) -> Result<LocalProcess> {
        let mut args: Vec<&str> = SANDBOX.split_whitespace().collect();
        for path in &job.config.read_only {
            args.extend(["--ro-bind", path.as_str(), path.as_str()]);
        }
        if job.config.network {
            args.push("--share-net");
        }
        let command = match &job.config.command {
            Some(command) => vec!["sh".into(), "-c".into(), command.clone()],
            None => job.command,
        };
        // The job's env, with the run's identity, is set inside: bwrap gets none.
        let bwrap = Wrapper::new("bwrap")
            .args(args)
            .env_flags("--clearenv", "--setenv");
        bwrap.spawn(command, job.env)
    }

    host_plugin_sdk::local_process_calls!();
}

export_plugin!(Bwrap);
