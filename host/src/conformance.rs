//! The conformance suite behind `host plugin test`: what every infrastructure
//! plugin must do, checked against the plugin's own examples.
//!
//! The suite does not take the plugin's word: the host knows what a plugin
//! created through its capabilities, so "stop stopped it" and "destroy left
//! nothing behind" are checked against those records, and the capabilities
//! `describe` lists against the component's real imports.

use crate::capabilities::{OutputSink, SentRequest};
use crate::contract::OutputStream;
use crate::runtime::{CallError, Capability, ErrorKind, Job, LoadedPlugin, RunStatus};
use crate::template;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one check may take before it counts as hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the long-running example gets to come up before it is stopped.
const STARTUP: Duration = Duration::from_secs(30);
/// How many of a failing run's last output lines a failed check shows.
pub const OUTPUT_TAIL_LINES: usize = 20;

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    /// `Ok(detail)` passed; `Err(reason)` failed.
    pub outcome: Result<String, String>,
    /// What helps to see why it failed: the run's last output lines, what
    /// the host found still running or left behind and removed.
    pub notes: Vec<String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// The suite with the plugin's own examples.
pub async fn run(plugin: &LoadedPlugin) -> Vec<Check> {
    run_with(plugin, &Map::new()).await
}

/// The suite with `variables` over the plugin's examples (say, an endpoint
/// of the author's own to run against).
pub async fn run_with(plugin: &LoadedPlugin, variables: &Map<String, Value>) -> Vec<Check> {
    let mut checks = vec![
        check("describe", describe(plugin)).await,
        check("capabilities", capabilities_match_imports(plugin)).await,
    ];
    let info = plugin.info();
    let configuration = example_configuration(
        &info.default_base_job_template,
        &info.example_variables,
        variables,
    );
    checks.push(
        check("template", async {
            configuration.clone().map(|c| format!("renders to {c}"))
        })
        .await,
    );
    let Ok(configuration) = configuration else {
        return checks;
    };
    checks.push(check("validate-example", validate_example(plugin, &configuration)).await);
    checks.push(check("reject-bad-configuration", reject_bad_configuration(plugin)).await);
    checks.extend(example_run(plugin, &configuration).await);
    checks.push(stop_check(plugin, variables).await);
    checks.push(check("foreign-handle", foreign_handle(plugin)).await);
    checks
}

async fn describe(plugin: &LoadedPlugin) -> Result<String, String> {
    let info = plugin.info();
    let again = plugin.describe().await.map_err(|e| e.to_string())?;
    if again.name != info.name || again.default_base_job_template != info.default_base_job_template
    {
        return Err("describe answers differently from one call to the next".into());
    }
    Ok(format!(
        "{} {} (contract {})",
        info.name, info.version, info.contract_version
    ))
}

/// `describe` must list exactly the capabilities the component imports: the
/// list is what an operator grants from.
async fn capabilities_match_imports(plugin: &LoadedPlugin) -> Result<String, String> {
    let imported: Vec<&str> = plugin
        .imports()
        .iter()
        .filter(|c| **c != Capability::Log)
        .map(|c| c.name())
        .collect();
    let mut declared: Vec<&str> = plugin
        .info()
        .capabilities
        .iter()
        .map(String::as_str)
        .filter(|c| *c != "log")
        .collect();
    declared.sort_unstable();
    if declared != imported {
        return Err(format!(
            "describe lists [{}] but the component imports [{}]",
            declared.join(", "),
            imported.join(", ")
        ));
    }
    Ok(format!("[{}], as imported", imported.join(", ")))
}

async fn validate_example(plugin: &LoadedPlugin, configuration: &str) -> Result<String, String> {
    plugin
        .validate(configuration)
        .await
        .map_err(|e| e.to_string())?;
    Ok("the example configuration is accepted".into())
}

async fn reject_bad_configuration(plugin: &LoadedPlugin) -> Result<String, String> {
    for bad in ["not json", "[1, 2, 3]"] {
        match plugin.validate(bad).await {
            Err(CallError::Plugin {
                kind: ErrorKind::Fatal,
                ..
            }) => {}
            Err(CallError::Plugin {
                kind: ErrorKind::Retryable,
                ..
            }) => {
                return Err(format!(
                    "{bad:?} was refused as retryable; bad configuration is fatal"
                ));
            }
            Err(other) => return Err(format!("{bad:?} was not refused cleanly: {other}")),
            Ok(()) => return Err(format!("{bad:?} was accepted")),
        }
    }
    Ok("malformed configurations are refused with a fatal error".into())
}

/// The example job from start to destroy: it succeeds, its output arrives,
/// the later calls answer for it, and destroy leaves nothing behind.
async fn example_run(plugin: &LoadedPlugin, configuration: &str) -> Vec<Check> {
    let job = job(configuration, "run");
    let run = job.flow_run_id.clone();
    let started = plugin.start(job).await;
    let mut checks = Vec::new();
    let handle = match started {
        Ok(handle) => handle,
        Err(error) => {
            let left = plugin.release(&run).await;
            checks.push(Check {
                name: "start-wait",
                outcome: Err(format!("start: {error}")),
                notes: host_report("after the failed start", left),
            });
            return checks;
        }
    };
    checks.push(start_tags(&run, &plugin.sent_requests(&run)));
    let output = Arc::new(TailOutput::default());
    let mut waited = check(
        "start-wait",
        wait_for_success(plugin, &run, &handle, &output),
    )
    .await;
    if !waited.passed() {
        waited.notes = output.tail_notes();
        waited.notes.extend(host_report(
            "still running after it",
            plugin.still_running(&run).await,
        ));
    }
    checks.push(waited);
    checks.push(
        check("output", async {
            match output.count() {
                0 => Err("the example run's output never reached log.output".into()),
                n => Ok(format!("{n} line(s) forwarded")),
            }
        })
        .await,
    );
    checks.push(
        check("inspect-after-exit", async {
            match plugin
                .inspect(&run, &handle)
                .await
                .map_err(|e| e.to_string())?
            {
                RunStatus::Exited(exit) => Ok(format!("exited: {}", exit.message)),
                other => Err(format!("expected exited, got {}", status_text(&other))),
            }
        })
        .await,
    );
    checks.push(
        check("recover", async {
            let status = plugin
                .recover(&run, &handle)
                .await
                .map_err(|e| e.to_string())?;
            Ok(status_text(&status))
        })
        .await,
    );
    checks.push(check("destroy", destroy_leaves_nothing(plugin, &run, &handle)).await);
    checks
}

/// What `start` made remotely must carry the flow run id (as a tag, a
/// label, a name), or a successor worker's `recover` could not find it and
/// nobody could tell whose it is. The host cannot see what a request makes,
/// so the rule it holds a plugin to: of the writes `start` sent over
/// `http`, at least one carried the run id in its URL, headers or body.
fn start_tags(run: &str, sent: &[SentRequest]) -> Check {
    let writes: Vec<&SentRequest> = sent.iter().filter(|r| r.writes()).collect();
    let untagged: Vec<String> = writes
        .iter()
        .filter(|r| !r.carries_run_id)
        .map(|r| format!("{} {} did not carry it", r.method, r.url))
        .collect();
    let outcome = if writes.is_empty() {
        Ok("start sent no HTTP writes: nothing remote to tag".to_string())
    } else if untagged.len() < writes.len() {
        Ok(format!(
            "{} of {} HTTP write(s) of start carried the flow run id",
            writes.len() - untagged.len(),
            writes.len()
        ))
    } else {
        Err(format!(
            "start sent {} HTTP write(s) and none carried the flow run id {run}: tag what start makes with it (the contract: recover finds remote resources by it)",
            writes.len()
        ))
    };
    let notes = if outcome.is_err() {
        untagged
    } else {
        Vec::new()
    };
    Check {
        name: "start-tags",
        outcome,
        notes,
    }
}

async fn wait_for_success(
    plugin: &LoadedPlugin,
    run: &str,
    handle: &str,
    output: &Arc<TailOutput>,
) -> Result<String, String> {
    let exit = plugin
        .wait(run, handle, output.clone())
        .await
        .map_err(|e| format!("wait: {e}"))?;
    if exit.code != Some(0) {
        return Err(format!("the example run did not succeed: {}", exit.message));
    }
    Ok(exit.message)
}

async fn destroy_leaves_nothing(
    plugin: &LoadedPlugin,
    run: &str,
    handle: &str,
) -> Result<String, String> {
    plugin
        .destroy(run, handle)
        .await
        .map_err(|e| format!("destroy: {e}"))?;
    plugin
        .destroy(run, handle)
        .await
        .map_err(|e| format!("destroy is not idempotent: {e}"))?;
    let left = plugin.release(run).await;
    if !left.is_empty() {
        return Err(format!("after destroy: {}", left.join("; ")));
    }
    Ok("released, twice, and nothing was left behind".into())
}

/// `stop` on a job that is still running, checked through the capabilities.
async fn stop_a_running_job(
    plugin: &LoadedPlugin,
    variables: &Map<String, Value>,
) -> Result<String, (String, Vec<String>)> {
    let info = plugin.info();
    if info.long_running_variables.trim().is_empty() {
        return Err((
            "the plugin offers no long-running example (Plugin::long_running_example), so stop cannot be checked"
                .into(),
            Vec::new(),
        ));
    }
    let configuration = example_configuration(
        &info.default_base_job_template,
        &info.long_running_variables,
        variables,
    )
    .map_err(|e| (format!("long-running example: {e}"), Vec::new()))?;
    let job = job(&configuration, "stop");
    let run = job.flow_run_id.clone();
    let outcome = async {
        let handle = plugin.start(job).await.map_err(|e| format!("start: {e}"))?;
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            match plugin
                .inspect(&run, &handle)
                .await
                .map_err(|e| format!("inspect: {e}"))?
            {
                RunStatus::Running => break,
                RunStatus::Pending if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => {
                    return Err(format!(
                        "the long-running example is not running: {}",
                        status_text(&other)
                    ));
                }
            }
        }
        plugin
            .stop(&run, &handle, 2)
            .await
            .map_err(|e| format!("stop: {e}"))?;
        let left = plugin.still_running(&run).await;
        if !left.is_empty() {
            return Err(format!("after stop, still running: {}", left.join(", ")));
        }
        plugin
            .stop(&run, &handle, 2)
            .await
            .map_err(|e| format!("stop is not idempotent: {e}"))?;
        plugin
            .destroy(&run, &handle)
            .await
            .map_err(|e| format!("destroy after stop: {e}"))?;
        Ok("a running job was stopped: nothing of it still runs".to_string())
    }
    .await;
    // Whatever happened, nothing of the check may outlive it; when it failed,
    // what the host had to end is said. (After a passing check, what
    // `destroy` left is the `destroy` check's business.)
    let left = plugin.release(&run).await;
    outcome.map_err(|reason| (reason, left))
}

/// The `stop` check, with what the host released after it as notes.
async fn stop_check(plugin: &LoadedPlugin, variables: &Map<String, Value>) -> Check {
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, stop_a_running_job(plugin, variables)).await;
    let (outcome, notes) = match outcome {
        Ok(Ok(detail)) => (Ok(detail), Vec::new()),
        Ok(Err((reason, left))) => (Err(reason), host_report("then the host", left)),
        Err(_) => (
            Err(format!(
                "did not finish within {}s",
                CHECK_TIMEOUT.as_secs()
            )),
            Vec::new(),
        ),
    };
    Check {
        name: "stop",
        outcome,
        notes,
    }
}

/// Notes saying what the host found of the run (`what`), one per item.
fn host_report(what: &str, found: Vec<String>) -> Vec<String> {
    found
        .into_iter()
        .map(|item| format!("{what}: {item}"))
        .collect()
}

/// The example run's output: how many lines, and the last ones, for a
/// failing check to show.
#[derive(Default)]
struct TailOutput {
    lines: Mutex<(u64, VecDeque<(OutputStream, String)>)>,
}

impl TailOutput {
    fn count(&self) -> u64 {
        self.lines.lock().map(|l| l.0).unwrap_or_default()
    }

    fn tail_notes(&self) -> Vec<String> {
        let Ok(lines) = self.lines.lock() else {
            return Vec::new();
        };
        let (count, tail) = &*lines;
        if *count == 0 {
            return vec!["the run printed nothing".into()];
        }
        let mut notes = vec![format!(
            "its last {} of {count} output line(s):",
            tail.len()
        )];
        notes.extend(tail.iter().map(|(stream, line)| {
            let stream = match stream {
                OutputStream::Stdout => "stdout",
                OutputStream::Stderr => "stderr",
            };
            format!("  {stream}| {line}")
        }));
        notes
    }
}

impl OutputSink for TailOutput {
    fn line(&self, stream: OutputStream, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.0 += 1;
            if lines.1.len() == OUTPUT_TAIL_LINES {
                lines.1.pop_front();
            }
            lines.1.push_back((stream, line));
        }
    }
}

async fn foreign_handle(plugin: &LoadedPlugin) -> Result<String, String> {
    let run = uuid::Uuid::new_v4().to_string();
    match plugin.inspect(&run, "not a handle").await {
        Err(CallError::Plugin { .. }) => Ok("an unknown handle is an error value".into()),
        Err(other) => Err(format!(
            "an unknown handle was not refused cleanly: {other}"
        )),
        Ok(status) => Err(format!(
            "an unknown handle was accepted: {}",
            status_text(&status)
        )),
    }
}

async fn check(name: &'static str, body: impl Future<Output = Result<String, String>>) -> Check {
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, body).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "did not finish within {}s",
            CHECK_TIMEOUT.as_secs()
        )),
    };
    Check {
        name,
        outcome,
        notes: Vec::new(),
    }
}

/// The default template rendered with its defaults, `example_json` and
/// `over` (the caller's, over the example).
fn example_configuration(
    template_json: &str,
    example_json: &str,
    over: &Map<String, Value>,
) -> Result<String, String> {
    let template: Value = serde_json::from_str(template_json)
        .map_err(|e| format!("default template is not JSON: {e}"))?;
    let mut example: Map<String, Value> = serde_json::from_str(example_json)
        .map_err(|e| format!("example variables are not a JSON object: {e}"))?;
    example.extend(over.clone());
    let job_configuration = &template["job_configuration"];
    let variables = &template["variables"];
    let undeclared = template::undeclared(job_configuration, variables);
    if !undeclared.is_empty() {
        return Err(format!(
            "placeholders not declared in variables: {}",
            undeclared.join(", ")
        ));
    }
    let declared = variables.get("properties").and_then(Value::as_object);
    if let Some(unknown) = example
        .keys()
        .find(|k| !declared.is_some_and(|d| d.contains_key(*k)))
    {
        return Err(format!(
            "example variable `{unknown}` is not declared in variables"
        ));
    }
    let mut values = template::defaults(variables);
    values.extend(example);
    Ok(template::render(job_configuration, &values).to_string())
}

/// A job of its own run (so of its own capability scope) for each check.
fn job(configuration: &str, purpose: &str) -> Job {
    let id = uuid::Uuid::new_v4().to_string();
    Job {
        flow_run_id: id.clone(),
        flow_run_name: format!("conformance-{purpose}"),
        configuration: configuration.to_string(),
        env: vec![("HOST_FLOW_RUN_ID".into(), id)],
        command: vec!["echo".into(), "host plugin test".into()],
        labels: vec![(
            "host.flow-run-name".into(),
            format!("conformance-{purpose}"),
        )],
    }
}

/// One line for people, e.g. "exited: exited with code 0".
pub fn status_text(status: &RunStatus) -> String {
    match status {
        RunStatus::Pending => "pending".into(),
        RunStatus::Running => "running".into(),
        RunStatus::Exited(exit) => format!("exited: {}", exit.message),
        RunStatus::NotFound(why) => format!("not found: {why}"),
    }
}
