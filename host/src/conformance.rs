//! The conformance suite behind `host plugin test`: what every infrastructure
//! plugin must do, checked against the plugin's own example.

use crate::capabilities::CollectOutput;
use crate::runtime::{CallError, ErrorKind, Job, LoadedPlugin, RunStatus};
use crate::template;
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long one check may take before it counts as hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    /// `Ok(detail)` passed; `Err(reason)` failed.
    pub outcome: Result<String, String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }
}

pub async fn run(plugin: &LoadedPlugin) -> Vec<Check> {
    let mut checks = Vec::new();
    let info = plugin.info().clone();

    checks.push(
        check("describe", async {
            let again = plugin.describe().await.map_err(|e| e.to_string())?;
            if again.name != info.name
                || again.default_base_job_template != info.default_base_job_template
            {
                return Err("describe answers differently from one call to the next".into());
            }
            Ok(format!(
                "{} {} (contract {})",
                info.name, info.version, info.contract_version
            ))
        })
        .await,
    );

    let configuration =
        example_configuration(&info.default_base_job_template, &info.example_variables);
    checks.push(
        check("template", async {
            configuration.clone().map(|c| format!("renders to {c}"))
        })
        .await,
    );
    let Ok(configuration) = configuration else {
        return checks;
    };

    checks.push(
        check("validate-example", async {
            plugin
                .validate(&configuration)
                .await
                .map_err(|e| e.to_string())?;
            Ok("the example configuration is accepted".into())
        })
        .await,
    );

    checks.push(
        check("reject-bad-configuration", async {
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
        })
        .await,
    );

    let mut finished_handle = None;
    checks.push(
        check("start-wait", async {
            let handle = plugin
                .start(job(&configuration, "run"))
                .await
                .map_err(|e| format!("start: {e}"))?;
            let output = Arc::new(CollectOutput::default());
            let exit = plugin
                .wait(&handle, output.clone())
                .await
                .map_err(|e| format!("wait: {e}"));
            finished_handle = Some(handle);
            let exit = exit?;
            if exit.code != Some(0) {
                return Err(format!("the example run did not succeed: {}", exit.message));
            }
            Ok(format!(
                "{}; {} output line(s)",
                exit.message,
                output.lines().len()
            ))
        })
        .await,
    );

    if let Some(handle) = finished_handle {
        checks.push(
            check("inspect-after-exit", async {
                match plugin.inspect(&handle).await.map_err(|e| e.to_string())? {
                    RunStatus::Exited(exit) => Ok(format!("exited: {}", exit.message)),
                    other => Err(format!("expected exited, got {}", status_text(&other))),
                }
            })
            .await,
        );
        checks.push(
            check("recover", async {
                let status = plugin.recover(&handle).await.map_err(|e| e.to_string())?;
                Ok(status_text(&status))
            })
            .await,
        );
        checks.push(
            check("destroy", async {
                plugin
                    .destroy(&handle)
                    .await
                    .map_err(|e| format!("destroy: {e}"))?;
                plugin
                    .destroy(&handle)
                    .await
                    .map_err(|e| format!("destroy is not idempotent: {e}"))?;
                Ok("released, twice".into())
            })
            .await,
        );
    }

    checks.push(
        check("stop", async {
            let handle = plugin
                .start(job(&configuration, "stop"))
                .await
                .map_err(|e| format!("start: {e}"))?;
            plugin
                .stop(&handle, 2)
                .await
                .map_err(|e| format!("stop: {e}"))?;
            plugin
                .stop(&handle, 2)
                .await
                .map_err(|e| format!("stop is not idempotent: {e}"))?;
            plugin
                .destroy(&handle)
                .await
                .map_err(|e| format!("destroy after stop: {e}"))?;
            Ok("stopped and destroyed".into())
        })
        .await,
    );

    checks.push(
        check("foreign-handle", async {
            match plugin.inspect("not a handle").await {
                Err(CallError::Plugin { .. }) => Ok("an unknown handle is an error value".into()),
                Err(other) => Err(format!(
                    "an unknown handle was not refused cleanly: {other}"
                )),
                Ok(status) => Err(format!(
                    "an unknown handle was accepted: {}",
                    status_text(&status)
                )),
            }
        })
        .await,
    );

    checks
}

async fn check(name: &'static str, body: impl Future<Output = Result<String, String>>) -> Check {
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, body).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "did not finish within {}s",
            CHECK_TIMEOUT.as_secs()
        )),
    };
    Check { name, outcome }
}

/// The default template rendered with its defaults and the plugin's example.
fn example_configuration(template_json: &str, example_json: &str) -> Result<String, String> {
    let template: Value = serde_json::from_str(template_json)
        .map_err(|e| format!("default template is not JSON: {e}"))?;
    let example: Map<String, Value> = serde_json::from_str(example_json)
        .map_err(|e| format!("example variables are not a JSON object: {e}"))?;
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

fn job(configuration: &str, purpose: &str) -> Job {
    let id = format!("00000000-0000-4000-8000-{:012x}", std::process::id());
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
