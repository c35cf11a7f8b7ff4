//! Attacks the host during runs, as the job variable `mode` says:
//! - `validate-flood`, `start-flood`: call `log.message` forever in that call;
//! - `warn-flood`: 20,000 warnings of 64 KiB in `start`, then run as `ok`;
//! - `big-handle`, `big-error`, `big-exit`: answer with 50 MB values;
//! - `flood`: send output lines for `seconds` seconds, then exit 0;
//! - `signal`: SIGKILL the process `target` (another run's), exit 0 when refused;
//! - `remove-dir`: remove the directory `target`, exit 0 when refused;
//! - `stop-container`, `remove-container`: stop or remove container `target`,
//!   exit 0 when it is still there afterwards;
//! - `create-privileged`, `create-mount`: create a privileged container, or one
//!   mounting `target` (the host's /etc when empty); exit 0 when the grant
//!   refused it;
//! - `name-as`: create a container named `target` (another run's container
//!   id), then stop and remove `target`; exit 0 when the create was refused;
//! - `create-remove`: create a container named `target` and remove it again;
//!   exit 0 when both worked;
//! - `create-network`: create a container with network mode `target`; exit 0
//!   when refused;
//! - `share-own-network`: start a container of its own, then create one in
//!   its network (`container:NAME`); exit 0 when allowed;
//! - `ok`: exit 0.
//!
//! Every attack that the host refuses ends the run COMPLETED, every one that
//! got through ends it FAILED with what happened.
use host_plugin_sdk::capabilities::{container_runtime, process};
use host_plugin_sdk::log::{self, OutputStream};
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Error, Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

struct Hostile;

#[derive(Deserialize)]
struct Config {
    mode: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    seconds: u64,
}

#[derive(Serialize, Deserialize)]
struct Handle {
    mode: String,
    target: String,
    seconds: u64,
    padding: String,
}

const BIG: usize = 50 << 20;

fn flood_messages() -> ! {
    loop {
        log::debug("busy");
    }
}

fn outcome(refused: bool, what: String) -> Result<Exit> {
    Ok(if refused {
        Exit::code(0)
    } else {
        Exit {
            code: Some(1),
            message: what,
            ..Exit::default()
        }
    })
}

/// A container that exits at once, named `name`, in `network`.
fn spec(name: Option<&str>, network: Option<&str>) -> container_runtime::ContainerSpec {
    container_runtime::ContainerSpec {
        image: "busybox:latest".into(),
        command: vec!["true".into()],
        env: vec![],
        labels: vec![],
        name: name.map(String::from),
        network_mode: network.map(String::from),
        mounts: vec![],
        memory_limit_bytes: None,
        auto_remove: false,
        privileged: false,
    }
}

impl Plugin for Hostile {
    type Config = Config;
    type Handle = Handle;

    fn info() -> Info {
        Info {
            name: "hostile".into(),
            version: "0.0.1".into(),
            description: "test guest that attacks the host".into(),
            default_base_job_template: Template::new()
                .variable("mode", template::string("what to do", Some("ok")))
                .variable("target", template::string("whom to do it to", Some("")))
                .variable("seconds", template::integer("how long", 0, Some(0)))
                .build(),
            capabilities: vec!["process".into(), "container-runtime".into()],
            example_variables: serde_json::json!({"mode": "ok"}),
        }
    }

    fn validate(config: &Config) -> Result<()> {
        if config.mode == "validate-flood" {
            flood_messages();
        }
        Ok(())
    }

    fn start(job: Job<Config>) -> Result<Handle> {
        let config = job.config;
        match config.mode.as_str() {
            "start-flood" => flood_messages(),
            "warn-flood" => {
                let text = "w".repeat(64 << 10);
                for _ in 0..20_000 {
                    log::warn(&text);
                }
            }
            "big-error" => return Err(Error::fatal("e".repeat(BIG))),
            _ => {}
        }
        Ok(Handle {
            padding: if config.mode == "big-handle" {
                "h".repeat(BIG)
            } else {
                String::new()
            },
            mode: config.mode,
            target: config.target,
            seconds: config.seconds,
        })
    }

    fn wait(handle: Handle) -> Result<Exit> {
        let target = handle.target;
        match handle.mode.as_str() {
            "big-exit" => Ok(Exit {
                code: Some(2),
                message: "x".repeat(BIG),
                ..Exit::default()
            }),
            "flood" => {
                let until = Instant::now() + Duration::from_secs(handle.seconds);
                let mut n: u64 = 0;
                while Instant::now() < until {
                    n += 1;
                    log::output(OutputStream::Stdout, &format!("flood line {n}"));
                }
                Ok(Exit::code(0))
            }
            "signal" => {
                let id: u64 = target
                    .parse()
                    .map_err(|_| Error::fatal("target: not an id"))?;
                let result = process::signal(id, 9);
                outcome(result.is_err(), format!("signalled process {id}"))
            }
            "remove-dir" => {
                let result = process::remove_dir(&target);
                outcome(result.is_err(), format!("removed {target}"))
            }
            "stop-container" | "remove-container" => {
                let result = if handle.mode == "stop-container" {
                    container_runtime::stop(&target, 0)
                } else {
                    container_runtime::remove(&target, true)
                };
                let seen = container_runtime::inspect(&target);
                let hidden = matches!(seen, Ok(None));
                outcome(
                    result.is_ok() && hidden,
                    format!("{} {target}: {result:?}, then saw {seen:?}", handle.mode),
                )
            }
            "create-privileged" | "create-mount" => {
                let privileged = handle.mode == "create-privileged";
                let spec = container_runtime::ContainerSpec {
                    image: "busybox:latest".into(),
                    command: vec!["true".into()],
                    env: vec![],
                    labels: vec![],
                    name: None,
                    network_mode: None,
                    mounts: match (privileged, target.as_str()) {
                        (true, _) => vec![],
                        (false, "") => vec!["/etc:/host-etc".into()],
                        (false, source) => vec![format!("{source}:/host-etc")],
                    },
                    memory_limit_bytes: None,
                    auto_remove: true,
                    privileged,
                };
                let result = container_runtime::create(&spec);
                let refused =
                    matches!(&result, Err(e) if e.contains("not allowed by this plugin's grant"));
                outcome(refused, format!("{}: {result:?}", handle.mode))
            }
            "name-as" => match container_runtime::create(&spec(Some(&target), None)) {
                Err(e) => Ok(Exit {
                    code: Some(0),
                    message: e,
                    ..Exit::default()
                }),
                Ok(id) => {
                    let stop = container_runtime::stop(&target, 0);
                    let remove = container_runtime::remove(&target, true);
                    let mine = container_runtime::remove(&id, true);
                    outcome(
                        false,
                        format!(
                            "created {id} as {target}; stop {stop:?}, remove {remove:?}, {mine:?}"
                        ),
                    )
                }
            },
            "create-remove" => {
                let created = container_runtime::create(&spec(Some(&target), None));
                let removed = created
                    .as_ref()
                    .map(|_| container_runtime::remove(&target, true));
                outcome(
                    matches!(removed, Ok(Ok(()))),
                    format!("create {created:?}, remove {removed:?}"),
                )
            }
            "create-network" => {
                let result = container_runtime::create(&spec(None, Some(&target)));
                let refused = matches!(&result, Err(e) if e.contains("not allowed by this plugin's grant")
                    || e.contains("was created for this flow run"));
                outcome(refused, format!("{}: {result:?}", handle.mode))
            }
            "share-own-network" => {
                let mut first = spec(Some(&target), None);
                first.command = vec!["sleep".into(), "300".into()];
                let shared = container_runtime::create(&first).and_then(|id| {
                    container_runtime::start(&id)?;
                    let network = format!("container:{target}");
                    container_runtime::create(&spec(None, Some(&network)))
                });
                outcome(shared.is_ok(), format!("{}: {shared:?}", handle.mode))
            }
            _ => {
                std::thread::sleep(Duration::from_millis(handle.seconds * 1000));
                Ok(Exit::code(0))
            }
        }
    }

    fn inspect(_handle: Handle) -> Result<Status> {
        Ok(Status::Running)
    }

    fn stop(_handle: Handle, _grace_seconds: u32) -> Result<()> {
        Ok(())
    }

    fn destroy(_handle: Handle) -> Result<()> {
        Ok(())
    }
}

export_plugin!(Hostile);
