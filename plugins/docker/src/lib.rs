//! The `docker` infrastructure: each flow run is a container on the worker's
//! Docker daemon, through the `container-runtime` capability.
//!
//! Containers carry the run's identity as labels, so a restarted worker finds
//! them again (`recover`) even when the handle's id is stale.

use host_plugin_sdk::capabilities::container_runtime::{self as docker, ContainerSpec};
use host_plugin_sdk::log;
use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Error, Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub struct DockerPlugin;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    image: Option<String>,
    #[serde(default)]
    image_pull_policy: Option<String>,
    /// Overrides the deployment's command; split like a shell would.
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    network_mode: Option<String>,
    #[serde(default)]
    volumes: Option<Vec<String>>,
    /// Bytes, or a string like "512m" / "1g".
    #[serde(default)]
    mem_limit: Option<Value>,
    #[serde(default)]
    auto_remove: Option<bool>,
    #[serde(default)]
    privileged: Option<bool>,
    /// Keep the stopped container after the run (for debugging).
    #[serde(default)]
    keep_container: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Handle {
    id: String,
    name: String,
    flow_run_id: String,
    keep: bool,
}

const RUN_LABEL: &str = "host.flow-run-id";
const NAME_ATTEMPTS: u32 = 5;

impl Plugin for DockerPlugin {
    type Config = Config;
    type Handle = Handle;

    fn info() -> Info {
        Info {
            name: "docker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Run each flow run in a Docker container on the worker's Docker daemon".into(),
            default_base_job_template: Template::new()
                .variable("image", template::string("Image to run; the deployment's image unless set", None))
                .variable(
                    "image_pull_policy",
                    json!({"type": "string", "enum": ["IfNotPresent", "Always", "Never"], "default": "IfNotPresent",
                           "description": "When to pull the image"}),
                )
                .variable("command", template::string("Command to run instead of the deployment's command", None))
                .variable("env", template::string_map("Environment variables for the container"))
                .variable("labels", template::string_map("Labels for the container (the run's identity is added)"))
                .variable("name", template::string("Container name; a slug of the flow run name by default", None))
                .variable("network_mode", template::string("Network mode; `host` when the API is on localhost", None))
                .variable(
                    "volumes",
                    json!({"type": "array", "items": {"type": "string"}, "description": "host-path:container-path[:ro] mounts"}),
                )
                .variable("mem_limit", json!({"type": ["string", "integer"], "description": "Memory limit: bytes, or like 512m"}))
                .variable("auto_remove", template::boolean("Let Docker remove the container when it exits", false))
                .variable("privileged", template::boolean("Run the container privileged", false))
                .variable("keep_container", template::boolean("Keep the stopped container after the run", false))
                .build(),
            capabilities: vec!["container-runtime".into()],
            example_variables: json!({"image": "busybox:latest", "command": "echo hello from docker"}),
        }
    }

    fn long_running_example() -> Option<serde_json::Value> {
        Some(json!({"image": "busybox:latest", "command": "sleep 300"}))
    }

    fn validate(config: &Config) -> Result<()> {
        if config.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            return Err(Error::fatal(
                "image: required (set the deployment's image or the image job variable)",
            ));
        }
        if let Some(policy) = &config.image_pull_policy
            && !["IfNotPresent", "Always", "Never"].contains(&policy.as_str())
        {
            return Err(Error::fatal(format!(
                "image_pull_policy: {policy:?} is not IfNotPresent, Always or Never"
            )));
        }
        if let Some(limit) = &config.mem_limit {
            parse_memory(limit)?;
        }
        if let Some(command) = &config.command {
            template::split_command(command)?;
        }
        Ok(())
    }

    fn start(job: Job<Config>) -> Result<Handle> {
        let config = job.config;
        let image = config.image.clone().unwrap_or_default();
        ensure_image(
            &image,
            config
                .image_pull_policy
                .as_deref()
                .unwrap_or("IfNotPresent"),
        )?;
        let command = match &config.command {
            Some(command) => template::split_command(command)?,
            None => job.command.clone(),
        };
        let env = host_plugin_sdk::local::merge_env(
            job.env.clone(),
            config.env.clone().unwrap_or_default(),
        );
        let mut labels: Vec<(String, String)> = config
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        labels.extend(job.labels.iter().cloned());
        let api_on_localhost = env.iter().any(|(k, v)| {
            k == "HOST_API_URL"
                && (v.contains("127.0.0.1") || v.contains("localhost") || v.contains("[::1]"))
        });
        let network_mode = config
            .network_mode
            .clone()
            .or_else(|| api_on_localhost.then(|| "host".to_string()));
        let base_name = config
            .name
            .clone()
            .unwrap_or_else(|| slug(&job.flow_run_name));
        let memory = config.mem_limit.as_ref().map(parse_memory).transpose()?;
        let mut attempt = 1;
        let (id, name) = loop {
            let name = if attempt == 1 {
                base_name.clone()
            } else {
                format!("{base_name}-{attempt}")
            };
            let spec = ContainerSpec {
                image: image.clone(),
                command: command.clone(),
                env: env.clone(),
                labels: labels.clone(),
                name: Some(name.clone()),
                network_mode: network_mode.clone(),
                mounts: config.volumes.clone().unwrap_or_default(),
                memory_limit_bytes: memory,
                auto_remove: config.auto_remove.unwrap_or(false),
                privileged: config.privileged.unwrap_or(false),
            };
            match docker::create(&spec) {
                Ok(id) => break (id, name),
                Err(e) if e.starts_with("conflict") && attempt < NAME_ATTEMPTS => attempt += 1,
                Err(e) => return Err(classify(e)),
            }
        };
        if let Err(e) = docker::start(&id) {
            let _ = docker::remove(&id, true);
            return Err(classify(e));
        }
        log::info(&format!(
            "flow run {} started as container {name} ({id:.12})",
            job.flow_run_id
        ));
        Ok(Handle {
            id,
            name,
            flow_run_id: job.flow_run_id,
            keep: config.keep_container.unwrap_or(false),
        })
    }

    fn wait(handle: Handle) -> Result<Exit> {
        let id = locate(&handle)?
            .ok_or_else(|| Error::fatal(format!("container {} no longer exists", handle.name)))?;
        loop {
            let batch = docker::read_output(&id, 1_000).map_err(classify)?;
            for (stream, line) in &batch.lines {
                log::output(*stream, line);
            }
            if batch.eof {
                break;
            }
        }
        Ok(docker::wait(&id).map_err(classify)?.into())
    }

    fn inspect(handle: Handle) -> Result<Status> {
        let Some(id) = locate(&handle)? else {
            return Ok(Status::NotFound(format!(
                "container {} no longer exists",
                handle.name
            )));
        };
        Ok(match docker::inspect(&id).map_err(classify)? {
            None => Status::NotFound(format!("container {} no longer exists", handle.name)),
            Some(state) if state.running => Status::Running,
            Some(state) => match state.exit {
                Some(exit) => Status::Exited(exit.into()),
                None => Status::Pending,
            },
        })
    }

    fn stop(handle: Handle, grace_seconds: u32) -> Result<()> {
        if let Some(id) = locate(&handle)? {
            docker::stop(&id, grace_seconds).map_err(classify)?;
        }
        Ok(())
    }

    fn destroy(handle: Handle) -> Result<()> {
        if handle.keep {
            return Ok(());
        }
        if let Some(id) = locate(&handle)? {
            docker::remove(&id, true).map_err(classify)?;
        }
        Ok(())
    }
}

/// The container's id: the handle's, or found again by the run's label.
fn locate(handle: &Handle) -> Result<Option<String>> {
    if docker::inspect(&handle.id).map_err(classify)?.is_some() {
        return Ok(Some(handle.id.clone()));
    }
    let found = docker::list_by_label(RUN_LABEL, &handle.flow_run_id).map_err(classify)?;
    Ok(found.into_iter().next().map(|state| state.id))
}

fn ensure_image(image: &str, policy: &str) -> Result<()> {
    let present = docker::image_exists(image).map_err(classify)?;
    match policy {
        "Never" if !present => Err(Error::fatal(format!(
            "image {image} is not present on this Docker daemon and image_pull_policy is Never"
        ))),
        "Always" => docker::pull_image(image).map_err(classify),
        _ if !present => docker::pull_image(image).map_err(classify),
        _ => Ok(()),
    }
}

/// A daemon that cannot be reached may come back; anything else will not.
fn classify(message: String) -> Error {
    if message.starts_with("unavailable:") {
        Error::retryable(message)
    } else {
        Error::fatal(message)
    }
}

/// Container names: lowercase letters, digits and '-', from the run's name.
fn slug(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-').to_string();
    if slug.is_empty() {
        "flow-run".into()
    } else if slug.len() >= 12 && slug.bytes().all(|b| b.is_ascii_hexdigit()) {
        // The host refuses names that look like container ids.
        format!("flow-run-{slug}")
    } else {
        slug
    }
}

fn parse_memory(limit: &Value) -> Result<u64> {
    let invalid = || {
        Error::fatal(format!(
            "mem_limit: {limit} is not a size like 536870912, \"512m\" or \"1g\""
        ))
    };
    match limit {
        Value::Number(n) => n.as_u64().ok_or_else(invalid),
        Value::String(text) => {
            let text = text.trim().to_ascii_lowercase();
            let (digits, unit) = text.split_at(
                text.find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(text.len()),
            );
            let number: u64 = digits.parse().map_err(|_| invalid())?;
            let multiplier = match unit.trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => return Err(invalid()),
            };
            number.checked_mul(multiplier).ok_or_else(invalid)
        }
        _ => Err(invalid()),
    }
}

export_plugin!(DockerPlugin);
