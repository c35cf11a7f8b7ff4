//! The `ecs` job configuration: Prefect's ECS worker variables, checked
//! before anything is provisioned, and where the AWS endpoints come from.

use host_plugin_sdk::template::{self, Template};
use host_plugin_sdk::{Error, Result};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The container the flow runs in, unless `container_name` says otherwise
/// (Prefect's name, so task definitions written for it work here).
pub const DEFAULT_CONTAINER: &str = "prefect";
pub const DEFAULT_FAMILY: &str = "host-ecs";
pub const DEFAULT_LOG_GROUP: &str = "host-ecs";
pub const DEFAULT_STREAM_PREFIX: &str = "host";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    /// CPU units (256 = a quarter vCPU), as ECS takes them.
    #[serde(default)]
    pub cpu: Option<u32>,
    /// MiB.
    #[serde(default)]
    pub memory: Option<u32>,
    /// Overrides the deployment's command; split like a shell would.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Become the task's tags (with the run's identity).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub task_definition_arn: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub launch_type: Option<String>,
    /// `{"awsvpcConfiguration": {...}}` as RunTask takes it.
    #[serde(default)]
    pub network_configuration: Option<Value>,
    #[serde(default)]
    pub task_role_arn: Option<String>,
    #[serde(default)]
    pub execution_role_arn: Option<String>,
    #[serde(default)]
    pub container_name: Option<String>,
    /// `awslogs` driver options; the group and prefix have defaults.
    #[serde(default)]
    pub cloudwatch_logs_options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stream_output: Option<bool>,
    #[serde(default)]
    pub region: Option<String>,
    /// The ECS endpoint, `scheme://host[:port]`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The CloudWatch Logs endpoint.
    #[serde(default)]
    pub logs_endpoint: Option<String>,
}

pub const LAUNCH_TYPES: &[&str] = &["FARGATE", "EC2", "EXTERNAL"];

pub fn template() -> Value {
    Template::new()
        .variable("image", template::string("Image to run; the deployment's image unless set", None))
        .variable("cluster", template::string("ECS cluster name or ARN; the account's default cluster unless set", None))
        .variable("cpu", template::integer("Task CPU units (1024 = 1 vCPU)", 128, None))
        .variable("memory", template::integer("Task memory in MiB", 128, None))
        .variable("command", template::string("Command to run instead of the deployment's command", None))
        .variable("env", template::string_map("Environment variables for the container"))
        .variable("labels", template::string_map("Tags for the task (the run's identity is added)"))
        .variable("task_definition_arn", template::string("An existing task definition to run; none is registered", None))
        .variable("family", template::string("Family of the task definition registered for runs", Some(DEFAULT_FAMILY)))
        .variable("launch_type", json!({"type": "string", "enum": LAUNCH_TYPES, "default": "FARGATE", "description": "Where ECS runs the task"}))
        .variable("network_configuration", json!({"type": "object", "description": "RunTask's networkConfiguration, e.g. {\"awsvpcConfiguration\": {\"subnets\": [...]}}"}))
        .variable("task_role_arn", template::string("IAM role the task's code runs as", None))
        .variable("execution_role_arn", template::string("IAM role ECS pulls the image and ships logs with", None))
        .variable("container_name", template::string("The container the flow runs in", Some(DEFAULT_CONTAINER)))
        .variable("cloudwatch_logs_options", template::string_map("awslogs options (awslogs-group, awslogs-stream-prefix, ...)"))
        .variable("stream_output", template::boolean("Forward the container's output from CloudWatch Logs to the run's logs", true))
        .variable("region", template::string("AWS region; the worker's AWS_REGION unless set", None))
        .variable("endpoint", template::string("ECS endpoint URL; the worker's AWS_ENDPOINT_URL_ECS or AWS_ENDPOINT_URL, else AWS's", None))
        .variable("logs_endpoint", template::string("CloudWatch Logs endpoint URL; the worker's AWS_ENDPOINT_URL_CLOUDWATCH_LOGS or AWS_ENDPOINT_URL, else AWS's", None))
        .build()
}

/// Where the calls go. The host sees the same environment and grants these
/// origins (see `grants.toml` in docs/PLUGINS.md); a pool variable pointing
/// elsewhere needs its own grant.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub region: String,
    pub ecs: String,
    pub logs: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    pub fn endpoints(&self) -> Result<Endpoints> {
        let region = self
            .region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .ok_or_else(|| {
                Error::fatal("region: not set (set the region job variable, or AWS_REGION in the worker's environment)")
            })?;
        let pick = |field: &str, given: &Option<String>, specific: &str, aws: String| {
            let url = given
                .clone()
                .filter(|u| !u.trim().is_empty())
                .or_else(|| env(specific))
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .unwrap_or(aws);
            let url = url.trim().trim_end_matches('/').to_string();
            if url.starts_with("http://") || url.starts_with("https://") {
                Ok(url)
            } else {
                Err(Error::fatal(format!(
                    "{field}: {url:?} is not an http(s):// URL"
                )))
            }
        };
        Ok(Endpoints {
            ecs: pick(
                "endpoint",
                &self.endpoint,
                "AWS_ENDPOINT_URL_ECS",
                format!("https://ecs.{region}.amazonaws.com"),
            )?,
            logs: pick(
                "logs_endpoint",
                &self.logs_endpoint,
                "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
                format!("https://logs.{region}.amazonaws.com"),
            )?,
            region,
        })
    }

    pub fn container_name(&self) -> String {
        self.container_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_CONTAINER.into())
    }

    pub fn launch_type(&self) -> String {
        self.launch_type.clone().unwrap_or_else(|| "FARGATE".into())
    }

    pub fn stream_output(&self) -> bool {
        self.stream_output.unwrap_or(true)
    }

    /// The awslogs options: the pool's, with a group, a prefix and the
    /// region filled in.
    pub fn log_options(&self, region: &str) -> BTreeMap<String, String> {
        let mut options = self.cloudwatch_logs_options.clone().unwrap_or_default();
        options
            .entry("awslogs-group".into())
            .or_insert_with(|| DEFAULT_LOG_GROUP.into());
        options
            .entry("awslogs-stream-prefix".into())
            .or_insert_with(|| DEFAULT_STREAM_PREFIX.into());
        options
            .entry("awslogs-region".into())
            .or_insert_with(|| region.into());
        options
            .entry("awslogs-create-group".into())
            .or_insert_with(|| "true".into());
        options
    }

    /// Every check that needs no call to AWS.
    pub fn check(&self) -> Result<()> {
        if self.task_definition_arn.is_none()
            && self.image.as_deref().is_none_or(|i| i.trim().is_empty())
        {
            return Err(Error::fatal(
                "image: required unless task_definition_arn is set (set the deployment's image or the image job variable)",
            ));
        }
        if let Some(launch) = &self.launch_type
            && !LAUNCH_TYPES.contains(&launch.as_str())
        {
            return Err(Error::fatal(format!(
                "launch_type: {launch:?} is not one of {}",
                LAUNCH_TYPES.join(", ")
            )));
        }
        if let Some(network) = &self.network_configuration
            && !network.is_object()
        {
            return Err(Error::fatal(
                "network_configuration: must be an object like {\"awsvpcConfiguration\": {\"subnets\": [...]}}",
            ));
        }
        if let Some(family) = &self.family
            && (family.is_empty()
                || family.len() > 255
                || !family
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(Error::fatal(format!(
                "family: {family:?} must be 1 to 255 letters, digits, '-' or '_'"
            )));
        }
        if let Some(arn) = &self.task_definition_arn
            && !arn.contains("task-definition/")
            && !arn.contains(':')
        {
            return Err(Error::fatal(format!(
                "task_definition_arn: {arn:?} is neither an ARN nor family:revision"
            )));
        }
        if let Some(command) = &self.command {
            template::split_command(command)?;
        }
        // Not the endpoints: they come from the worker's environment, and
        // the server that validates a deployment need not have it.
        Ok(())
    }

    /// The task definition `start` registers when none is named: one
    /// container, the image, the logs, the roles; the command and the
    /// environment go in RunTask's overrides, so runs share a revision.
    pub fn task_definition(&self, family: &str, region: &str) -> Value {
        let mut container = json!({
            "name": self.container_name(),
            "image": self.image.clone().unwrap_or_default(),
            "essential": true,
        });
        if self.stream_output() || self.cloudwatch_logs_options.is_some() {
            container["logConfiguration"] =
                json!({"logDriver": "awslogs", "options": self.log_options(region)});
        }
        let launch = self.launch_type();
        let mut definition = json!({
            "family": family,
            "containerDefinitions": [container],
            "requiresCompatibilities": [launch],
        });
        if launch == "FARGATE" {
            // Fargate takes only awsvpc, and task-level sizes from a fixed set.
            definition["networkMode"] = json!("awsvpc");
            definition["cpu"] = json!(self.cpu.unwrap_or(256).to_string());
            definition["memory"] = json!(self.memory.unwrap_or(512).to_string());
        } else {
            if let Some(cpu) = self.cpu {
                definition["cpu"] = json!(cpu.to_string());
            }
            if let Some(memory) = self.memory {
                definition["memory"] = json!(memory.to_string());
            }
        }
        if let Some(role) = &self.task_role_arn {
            definition["taskRoleArn"] = json!(role);
        }
        if let Some(role) = &self.execution_role_arn {
            definition["executionRoleArn"] = json!(role);
        }
        definition
    }
}

/// Whether a registered definition (DescribeTaskDefinition's) is the one we
/// would register, so it can be reused instead of adding a revision.
pub fn same_definition(wanted: &Value, existing: &Value) -> bool {
    let container = |d: &Value| {
        let c = &d["containerDefinitions"][0];
        (
            c["name"].clone(),
            c["image"].clone(),
            c["logConfiguration"].clone(),
            d["containerDefinitions"].as_array().map_or(0, Vec::len),
        )
    };
    let keys = [
        "cpu",
        "memory",
        "networkMode",
        "taskRoleArn",
        "executionRoleArn",
        "requiresCompatibilities",
    ];
    existing["status"] != json!("INACTIVE")
        && container(wanted) == container(existing)
        && keys.iter().all(|k| {
            wanted.get(*k).unwrap_or(&Value::Null) == existing.get(*k).unwrap_or(&Value::Null)
        })
}
