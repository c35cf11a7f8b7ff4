//! `ecs`: each flow run is an AWS ECS task, driven over the `http`
//! capability (the host signs with SigV4; this plugin never sees a key).
//! It mirrors Prefect's ECS worker (prefect-aws `workers/ecs_worker.py`):
//! register or reuse a task definition, RunTask tagged with the run,
//! DescribeTasks until STOPPED, the container's output from CloudWatch
//! Logs, StopTask on cancel.
//!
//! Tasks carry the flow run id as a tag and as `startedBy`, so a restarted
//! worker finds them again (`recover`) even without the handle's ARN.

mod api;
mod config;

use api::{Api, ApiError};
use config::{Config, Endpoints};
use host_plugin_sdk::log::{self, OutputStream};
use host_plugin_sdk::{Error, Exit, Info, Job, Plugin, Result, Status, export_plugin};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

pub struct EcsPlugin;

const RUN_TAG: &str = "host.flow-run-id";
/// Between two DescribeTasks of one run: quick at first, so a short task's
/// end is seen soon, then Prefect's pace divided by five (it polls every
/// 5 s); ECS allows DescribeTasks far more often than either.
const QUICK_POLL: Duration = Duration::from_millis(250);
const QUICK_POLLS: u32 = 20;
const POLL: Duration = Duration::from_secs(1);
/// Polls in a row that may fail (after the client's own retries) before
/// `wait` gives up: a blip of the API must not end a run (Prefect #22077).
const POLL_FAILURES: u32 = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handle {
    task_arn: String,
    /// As configured; `None` is the account's default cluster.
    cluster: Option<String>,
    flow_run_id: String,
    container: String,
    region: String,
    ecs: String,
    logs: String,
    /// Where the container's output goes, when it is forwarded.
    log_group: Option<String>,
    log_stream: Option<String>,
    /// The task definition `start` registered, deregistered by `destroy`.
    registered: Option<String>,
}

impl Plugin for EcsPlugin {
    type Config = Config;
    type Handle = Handle;

    fn info() -> Info {
        Info {
            name: "ecs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Run each flow run as an AWS ECS task (Fargate or EC2), through the http capability"
                    .into(),
            default_base_job_template: config::template(),
            capabilities: vec!["http".into()],
            example_variables: json!({"image": "busybox:latest", "command": "echo hello from ecs"}),
        }
    }

    fn long_running_example() -> Option<Value> {
        Some(json!({"image": "busybox:latest", "command": "sleep 300"}))
    }

    fn validate(config: &Config) -> Result<()> {
        config.check()
    }

    fn start(job: Job<Config>) -> Result<Handle> {
        let config = job.config;
        let endpoints = config.endpoints()?;
        let ecs = Api::ecs(&endpoints.ecs);
        let container = config.container_name();
        // The worker retries `start` after a retryable error, and a RunTask
        // whose answer was lost may still have started a task: a task of this
        // run that is still meant to run is taken up, never a second one.
        let earlier = RunTasks {
            cluster: config.cluster.as_deref(),
            flow_run_id: &job.flow_run_id,
            task_arn: None,
        }
        .listed(&ecs, "RUNNING")?;
        let (definition_arn, registered, definition) = task_definition(&ecs, &config, &endpoints)?;
        let (log_group, log_prefix) = awslogs(&definition, &container);
        let streaming = config.stream_output() && log_group.is_some();
        if streaming && let Some(group) = &log_group {
            create_log_group(&Api::logs(&endpoints.logs), group);
        }
        let command = match &config.command {
            Some(command) => host_plugin_sdk::template::split_command(command)?,
            None => job.command.clone(),
        };
        let env = host_plugin_sdk::local::merge_env(
            job.env.clone(),
            config.env.clone().unwrap_or_default(),
        );
        let mut tags: Vec<(String, String)> = config
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        tags.extend(job.labels.iter().cloned());
        if !tags.iter().any(|(k, _)| k == RUN_TAG) {
            tags.push((RUN_TAG.into(), job.flow_run_id.clone()));
        }
        let mut container_override = json!({
            "name": container,
            "environment": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        });
        if !command.is_empty() {
            container_override["command"] = json!(command);
        }
        let mut overrides = json!({"containerOverrides": [container_override]});
        if config.task_definition_arn.is_some() {
            // A definition we did not write: sizes and roles come as overrides.
            for (key, value) in [
                ("cpu", config.cpu.map(|c| c.to_string())),
                ("memory", config.memory.map(|m| m.to_string())),
                ("taskRoleArn", config.task_role_arn.clone()),
                ("executionRoleArn", config.execution_role_arn.clone()),
            ] {
                if let Some(value) = value {
                    overrides[key] = json!(value);
                }
            }
        }
        let task_arn = if let Some(arn) = earlier.as_ref().and_then(|t| t["taskArn"].as_str()) {
            log::info(&format!(
                "flow run {} already has ECS task {arn} (an earlier try of start ran it): taken up",
                job.flow_run_id
            ));
            arn.to_string()
        } else {
            let mut request = json!({
                "taskDefinition": definition_arn,
                "count": 1,
                "launchType": config.launch_type(),
                // 36 characters at most, a UUID's length: found again by it.
                "startedBy": truncate(&job.flow_run_id, 36),
                "tags": tags.iter().map(|(k, v)| json!({"key": truncate(k, 128), "value": truncate(v, 256)})).collect::<Vec<_>>(),
                "overrides": overrides,
            });
            if let Some(cluster) = &config.cluster {
                request["cluster"] = json!(cluster);
            }
            if let Some(network) = &config.network_configuration {
                request["networkConfiguration"] = network.clone();
            }
            // Never retried here: RunTask is not idempotent. The worker's
            // retry of `start` looks for a task of the run first (above).
            let answer = ecs
                .call_once("RunTask", &request)
                .map_err(|e| e.during("RunTask"));
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    deregister(&ecs, registered.as_deref());
                    return Err(error);
                }
            };
            let Some(task_arn) = answer["tasks"][0]["taskArn"].as_str().map(String::from) else {
                deregister(&ecs, registered.as_deref());
                let failure = &answer["failures"][0];
                return Err(Error::fatal(format!(
                    "RunTask started no task: {} {}",
                    failure["reason"].as_str().unwrap_or("(no reason given)"),
                    failure["detail"].as_str().unwrap_or("")
                )));
            };
            task_arn
        };
        let task_id = task_arn.rsplit('/').next().unwrap_or(&task_arn).to_string();
        log::info(&format!(
            "flow run {} started as ECS task {task_arn}",
            job.flow_run_id
        ));
        Ok(Handle {
            cluster: config.cluster.clone(),
            flow_run_id: job.flow_run_id,
            region: endpoints.region,
            ecs: endpoints.ecs,
            logs: endpoints.logs,
            log_stream: streaming
                .then(|| format!("{}/{container}/{task_id}", log_prefix.unwrap_or_default())),
            log_group: log_group.filter(|_| streaming),
            container,
            registered,
            task_arn,
        })
    }

    fn wait(handle: Handle) -> Result<Exit> {
        let ecs = Api::ecs(&handle.ecs);
        let mut output = handle.log_stream.as_ref().map(|_| Output::new(&handle));
        let mut failures = 0;
        let mut polls: u32 = 0;
        loop {
            polls += 1;
            let pause = if polls <= QUICK_POLLS {
                QUICK_POLL
            } else {
                POLL
            };
            let task = match describe(&ecs, &handle) {
                Ok(task) => {
                    failures = 0;
                    task
                }
                Err(error) if matches!(error, Error::Retryable(_)) && failures < POLL_FAILURES => {
                    failures += 1;
                    log::warn(&format!(
                        "polling the task failed (try {failures}), polling on: {error}"
                    ));
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let Some(task) = task else {
                return Err(Error::fatal(format!(
                    "ECS task {} no longer exists",
                    handle.task_arn
                )));
            };
            let status = task["lastStatus"].as_str().unwrap_or_default();
            if let Some(output) = &mut output
                && status != "PROVISIONING"
                && status != "PENDING"
            {
                output.pump();
            }
            if status == "STOPPED" {
                if let Some(output) = &mut output {
                    output.drain();
                }
                let exit = stopped(&task, &handle.container);
                return match exit.code {
                    Some(_) => Ok(exit),
                    None => Err(Error::fatal(exit.message)),
                };
            }
            std::thread::sleep(pause);
        }
    }

    fn inspect(handle: Handle) -> Result<Status> {
        let ecs = Api::ecs(&handle.ecs);
        Ok(match describe(&ecs, &handle)? {
            None => Status::NotFound(format!("ECS task {} no longer exists", handle.task_arn)),
            Some(task) => status(&task, &handle.container),
        })
    }

    fn recover(handle: Handle) -> Result<Status> {
        Self::inspect(handle)
    }

    /// StopTask in any phase (Prefect #21616): ECS sends SIGTERM and, after
    /// the container's stopTimeout, SIGKILL. A task already gone is stopped.
    fn stop(handle: Handle, _grace_seconds: u32) -> Result<()> {
        let ecs = Api::ecs(&handle.ecs);
        let Some(task) = describe(&ecs, &handle)? else {
            return Ok(());
        };
        if task["lastStatus"] == "STOPPED" {
            return Ok(());
        }
        let arn = task["taskArn"]
            .as_str()
            .unwrap_or(&handle.task_arn)
            .to_string();
        let mut request =
            json!({"task": arn, "reason": "Stopped by host: the flow run was cancelled"});
        if let Some(cluster) = &handle.cluster {
            request["cluster"] = json!(cluster);
        }
        match ecs.call("StopTask", &request) {
            Ok(_) => {
                log::info(&format!("stopped ECS task {arn}"));
                Ok(())
            }
            Err(ApiError::Aws { message, .. }) if message.contains("not found") => Ok(()),
            Err(error) => Err(error.during("StopTask")),
        }
    }

    fn destroy(handle: Handle) -> Result<()> {
        deregister(&Api::ecs(&handle.ecs), handle.registered.as_deref());
        Ok(())
    }
}

/// The definition to run: the one named, the family's latest when it is
/// what we would register, or a new revision (then deregistered by
/// `destroy`). Returns its ARN, whether we registered it, and its body.
fn task_definition(
    ecs: &Api,
    config: &Config,
    endpoints: &Endpoints,
) -> Result<(String, Option<String>, Value)> {
    if let Some(arn) = &config.task_definition_arn {
        let found = ecs
            .call("DescribeTaskDefinition", &json!({"taskDefinition": arn}))
            .map_err(|e| e.during(&format!("task_definition_arn {arn}")))?;
        return Ok((arn.clone(), None, found["taskDefinition"].clone()));
    }
    let family = config
        .family
        .clone()
        .unwrap_or_else(|| config::DEFAULT_FAMILY.into());
    let wanted = config.task_definition(&family, &endpoints.region);
    match ecs.call("DescribeTaskDefinition", &json!({"taskDefinition": family})) {
        Ok(found) if config::same_definition(&wanted, &found["taskDefinition"]) => {
            if let Some(arn) = found["taskDefinition"]["taskDefinitionArn"].as_str() {
                return Ok((arn.to_string(), None, found["taskDefinition"].clone()));
            }
        }
        Ok(_) => {}
        // No such family yet: registered below.
        Err(ApiError::Aws { kind, .. }) if kind == "ClientException" => {}
        Err(error) => return Err(error.during("DescribeTaskDefinition")),
    }
    let registered = ecs
        .call("RegisterTaskDefinition", &wanted)
        .map_err(|e| e.during("RegisterTaskDefinition"))?;
    let arn = registered["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .ok_or_else(|| Error::fatal("RegisterTaskDefinition answered without a taskDefinitionArn"))?
        .to_string();
    log::info(&format!("registered task definition {arn}"));
    Ok((arn.clone(), Some(arn), registered["taskDefinition"].clone()))
}

fn deregister(ecs: &Api, arn: Option<&str>) {
    let Some(arn) = arn else { return };
    match ecs.call("DeregisterTaskDefinition", &json!({"taskDefinition": arn})) {
        Ok(_) => log::info(&format!("deregistered task definition {arn}")),
        // Already inactive, or gone: what destroy wanted.
        Err(error) => log::warn(&format!(
            "DeregisterTaskDefinition {arn}: {}",
            error.during("deregister")
        )),
    }
}

/// The awslogs group and stream prefix of the flow's container, if any.
fn awslogs(definition: &Value, container: &str) -> (Option<String>, Option<String>) {
    let Some(found) = definition["containerDefinitions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == container))
    else {
        return (None, None);
    };
    let logs = &found["logConfiguration"];
    if logs["logDriver"] != "awslogs" {
        return (None, None);
    }
    let option = |key: &str| logs["options"][key].as_str().map(String::from);
    (option("awslogs-group"), option("awslogs-stream-prefix"))
}

fn create_log_group(logs: &Api, group: &str) {
    match logs.call("CreateLogGroup", &json!({"logGroupName": group})) {
        Ok(_) => {}
        Err(error) if error.kind() == "ResourceAlreadyExistsException" => {}
        // awslogs-create-group may still make it; output is not worth a run.
        Err(error) => log::warn(&format!(
            "{}",
            error.during(&format!("CreateLogGroup {group}"))
        )),
    }
}

/// The task by its ARN or, when ECS no longer knows the ARN, by the run's
/// `startedBy` and tag. `None`: ECS knows no task of this run.
fn describe(ecs: &Api, handle: &Handle) -> Result<Option<Value>> {
    let run = RunTasks {
        cluster: handle.cluster.as_deref(),
        flow_run_id: &handle.flow_run_id,
        task_arn: Some(&handle.task_arn),
    };
    if let Some(task) = run.describe(ecs, std::slice::from_ref(&handle.task_arn))? {
        return Ok(Some(task));
    }
    for desired in ["RUNNING", "STOPPED"] {
        if let Some(task) = run.listed(ecs, desired)? {
            return Ok(Some(task));
        }
    }
    Ok(None)
}

/// Finds a run's tasks: by ARN, or by `startedBy` and the run's tag.
struct RunTasks<'a> {
    cluster: Option<&'a str>,
    flow_run_id: &'a str,
    task_arn: Option<&'a str>,
}

impl RunTasks<'_> {
    /// The first task of the run whose desired status is `desired`.
    fn listed(&self, ecs: &Api, desired: &str) -> Result<Option<Value>> {
        let mut request =
            json!({"startedBy": truncate(self.flow_run_id, 36), "desiredStatus": desired});
        if let Some(cluster) = self.cluster {
            request["cluster"] = json!(cluster);
        }
        let listed = ecs
            .call("ListTasks", &request)
            .map_err(|e| e.during("ListTasks"))?;
        let arns: Vec<String> = listed["taskArns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if arns.is_empty() {
            return Ok(None);
        }
        self.describe(ecs, &arns)
    }

    /// The first of `arns` that is the run's task or carries its tag.
    fn describe(&self, ecs: &Api, arns: &[String]) -> Result<Option<Value>> {
        let mut request = json!({"tasks": arns, "include": ["TAGS"]});
        if let Some(cluster) = self.cluster {
            request["cluster"] = json!(cluster);
        }
        let answer = ecs
            .call("DescribeTasks", &request)
            .map_err(|e| e.during("DescribeTasks"))?;
        Ok(answer["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|task| {
                self.task_arn.is_some_and(|arn| task["taskArn"] == arn)
                    || task["tags"].as_array().is_some_and(|tags| {
                        tags.iter()
                            .any(|t| t["key"] == RUN_TAG && t["value"] == self.flow_run_id)
                    })
            })
            .cloned())
    }
}

fn status(task: &Value, container: &str) -> Status {
    match task["lastStatus"].as_str().unwrap_or_default() {
        "PROVISIONING" | "PENDING" | "ACTIVATING" => Status::Pending,
        "STOPPED" => Status::Exited(stopped(task, container)),
        // RUNNING, and DEACTIVATING/STOPPING/DEPROVISIONING on the way out.
        _ => Status::Running,
    }
}

/// How a STOPPED task ended: the flow container's exit code, or why ECS
/// stopped it without one (a task that never started, Prefect #22410).
fn stopped(task: &Value, container: &str) -> Exit {
    let containers = task["containers"].as_array().cloned().unwrap_or_default();
    let flow = containers
        .iter()
        .find(|c| c["name"] == container)
        .or_else(|| containers.first())
        .cloned()
        .unwrap_or(Value::Null);
    let reason = flow["reason"].as_str().unwrap_or_default();
    let oom_killed = reason.contains("OutOfMemory");
    if let Some(code) = flow["exitCode"]
        .as_i64()
        .and_then(|c| i32::try_from(c).ok())
    {
        return Exit {
            oom_killed,
            ..Exit::code(code)
        };
    }
    let stop_code = task["stopCode"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("stopped");
    let why = task["stoppedReason"].as_str().unwrap_or_default();
    let mut message = format!("ECS task stopped without an exit code: {stop_code}: {why}");
    if !reason.is_empty() && !why.contains(reason) {
        message.push_str(&format!(" (container: {reason})"));
    }
    Exit {
        oom_killed,
        message,
        ..Exit::default()
    }
}

/// The container's output, read from its CloudWatch Logs stream with the
/// forward token (a re-attached `wait` starts again from the head).
struct Output {
    logs: Api,
    group: String,
    stream: String,
    token: Option<String>,
    warned: bool,
}

impl Output {
    fn new(handle: &Handle) -> Output {
        Output {
            logs: Api::logs(&handle.logs),
            group: handle.log_group.clone().unwrap_or_default(),
            stream: handle.log_stream.clone().unwrap_or_default(),
            token: None,
            warned: false,
        }
    }

    /// Reads what is there now; the number of events.
    fn pump(&mut self) -> usize {
        let mut total = 0;
        // Bounded: one poll must not read a flood forever.
        for _ in 0..20 {
            let mut request = json!({"logGroupName": self.group, "logStreamName": self.stream, "startFromHead": true});
            if let Some(token) = &self.token {
                request["nextToken"] = json!(token);
            }
            let page = match self.logs.call("GetLogEvents", &request) {
                Ok(page) => page,
                // The stream appears with the container's first line.
                Err(error) if error.kind() == "ResourceNotFoundException" => return total,
                Err(error) => {
                    if !self.warned {
                        self.warned = true;
                        log::warn(&format!(
                            "{}",
                            error.during("GetLogEvents (output forwarding)")
                        ));
                    }
                    return total;
                }
            };
            let events = page["events"].as_array().cloned().unwrap_or_default();
            for event in &events {
                for line in event["message"].as_str().unwrap_or_default().lines() {
                    log::output(OutputStream::Stdout, line);
                }
            }
            total += events.len();
            let next = page["nextForwardToken"].as_str().map(String::from);
            let same = next == self.token;
            self.token = next.or(self.token.take());
            if events.is_empty() || same {
                break;
            }
        }
        total
    }

    /// After STOPPED: the last lines may land in the stream a moment late.
    fn drain(&mut self) {
        self.pump();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            if self.pump() == 0 {
                break;
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    text[..text.floor_char_boundary(max)].to_string()
}

export_plugin!(EcsPlugin);
