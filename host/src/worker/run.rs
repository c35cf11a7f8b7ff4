//! One flow run on this worker: start it through the plugin, watch it, report
//! how it ended, clean up. Every report is idempotent (keyed by run and step),
//! so retrying one after a lost answer cannot move the run twice.

use super::logs::RunLog;
use super::{Shared, retry};
use crate::model::{ClaimedRun, StateType};
use crate::orchestration::Transition;
use crate::runtime::{CallError, ExitStatus, Job, RunStatus};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `start` attempts for retryable errors, and the first backoff.
const START_ATTEMPTS: u32 = 5;
const START_BACKOFF: Duration = Duration::from_millis(250);

/// How monitoring ended.
enum Outcome {
    Exited(Result<ExitStatus, CallError>),
    Cancelled,
    TimedOut(u64),
    /// The worker is shutting down: leave the infrastructure for recovery.
    Abandoned,
}

pub(super) async fn execute(
    shared: &Arc<Shared>,
    claimed: ClaimedRun,
    cancel: watch::Receiver<bool>,
) {
    let run_id = claimed.flow_run.id.clone();
    tracing::info!(flow_run_id = %run_id, pool = %shared.config.pool, worker = %shared.config.name, "PENDING: claimed");
    let log = RunLog::start(shared.client.clone(), run_id.clone());
    let configuration = claimed.job_configuration.to_string();
    if let Err(error) = shared.plugin.validate(&configuration).await {
        log.finish(
            shared,
            &run_id,
            StateType::Crashed,
            format!("invalid job configuration: {error}"),
            None,
        )
        .await;
        return;
    }
    if *cancel.borrow() {
        log.finish(
            shared,
            &run_id,
            StateType::Cancelled,
            "cancelled before it started".into(),
            None,
        )
        .await;
        return;
    }
    let job = job_for(shared, &claimed, configuration);
    let handle = match start_with_retries(shared, &run_id, job).await {
        Ok(handle) => handle,
        Err(error) => {
            log.finish(
                shared,
                &run_id,
                StateType::Crashed,
                format!("start failed: {error}"),
                None,
            )
            .await;
            return;
        }
    };
    log.push(
        "worker",
        format!(
            "started on worker {} through the {} plugin",
            shared.config.name,
            shared.plugin.name()
        ),
    );
    let running = Transition {
        to: Some(StateType::Running),
        worker: Some(shared.config.name.clone()),
        idempotency_key: Some(format!("{run_id}:running")),
        infrastructure_handle: Some(handle.clone()),
        ..Transition::default()
    };
    report(shared, &run_id, running).await;
    tracing::info!(flow_run_id = %run_id, "RUNNING");
    let timeout = claimed
        .job_variables
        .get("timeout_seconds")
        .and_then(Value::as_u64);
    watch_run(shared, &run_id, &handle, timeout, cancel, log).await;
}

/// Monitors a started run to its end and reports it.
async fn watch_run(
    shared: &Arc<Shared>,
    run_id: &str,
    handle: &str,
    timeout: Option<u64>,
    mut cancel: watch::Receiver<bool>,
    log: RunLog,
) {
    let mut abandon = shared.abandon.clone();
    let timer = async {
        match timeout {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        exit = shared.plugin.wait(handle, log.sink()) => Outcome::Exited(exit),
        _ = cancel.wait_for(|c| *c) => Outcome::Cancelled,
        _ = timer => Outcome::TimedOut(timeout.unwrap_or(0)),
        _ = abandon.wait_for(|a| *a) => Outcome::Abandoned,
    };
    let (state, message, exit_code) = match outcome {
        Outcome::Exited(Ok(exit)) if exit.code == Some(0) => {
            (StateType::Completed, exit.message, Some(0))
        }
        Outcome::Exited(Ok(exit)) => {
            let message = if exit.oom_killed {
                format!("{} (killed: out of memory)", exit.message)
            } else {
                exit.message
            };
            (StateType::Failed, message, exit.code)
        }
        Outcome::Exited(Err(error)) => (StateType::Crashed, error.to_string(), None),
        Outcome::Cancelled => {
            stop(shared, run_id, handle).await;
            (
                StateType::Cancelled,
                "cancelled; infrastructure stopped".into(),
                None,
            )
        }
        Outcome::TimedOut(seconds) => {
            stop(shared, run_id, handle).await;
            (
                StateType::Failed,
                format!("timed out after {seconds}s (timeout_seconds)"),
                None,
            )
        }
        Outcome::Abandoned => {
            log.close().await;
            tracing::info!(flow_run_id = run_id, "left running for recovery");
            return;
        }
    };
    log.finish(shared, run_id, state, message, exit_code).await;
    if let Err(error) = shared.plugin.destroy(handle).await {
        tracing::warn!(flow_run_id = run_id, %error, "destroy failed");
    }
}

async fn stop(shared: &Shared, run_id: &str, handle: &str) {
    if let Err(error) = shared
        .plugin
        .stop(handle, shared.config.stop_grace_seconds)
        .await
    {
        tracing::warn!(flow_run_id = run_id, %error, "stop failed");
    }
}

impl RunLog {
    /// Flushes the run's logs, then records its final state.
    async fn finish(
        self,
        shared: &Shared,
        run_id: &str,
        state: StateType,
        message: String,
        exit_code: Option<i32>,
    ) {
        if state != StateType::Completed {
            self.push("worker", format!("{state}: {message}"));
        }
        self.close().await;
        let transition = Transition {
            to: Some(state),
            message: Some(message.clone()),
            worker: Some(shared.config.name.clone()),
            idempotency_key: Some(format!("{run_id}:final")),
            exit_code,
            ..Transition::default()
        };
        report(shared, run_id, transition).await;
        tracing::info!(flow_run_id = run_id, pool = %shared.config.pool, worker = %shared.config.name, %message, "{state}");
    }
}

async fn report(shared: &Shared, run_id: &str, transition: Transition) {
    let path = format!("/api/flow-runs/{run_id}/state");
    retry("report state", run_id, || {
        shared.client.post::<_, Value>(&path, &transition)
    })
    .await;
}

async fn start_with_retries(shared: &Shared, run_id: &str, job: Job) -> Result<String, CallError> {
    let mut delay = START_BACKOFF;
    let mut attempt = 1;
    loop {
        match shared.plugin.start(job.clone()).await {
            Err(error) if error.is_retryable() && attempt < START_ATTEMPTS => {
                tracing::warn!(flow_run_id = run_id, %error, attempt, "start failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The job handed to `start`: configuration, env with the run's identity, labels.
fn job_for(shared: &Shared, claimed: &ClaimedRun, configuration: String) -> Job {
    let run = &claimed.flow_run;
    let mut env: Vec<(String, String)> = claimed
        .job_configuration
        .get("env")
        .and_then(Value::as_object)
        .map(|env| {
            env.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let identity = [
        ("HOST_API_URL", shared.config.api_url.clone()),
        ("HOST_FLOW_RUN_ID", run.id.clone()),
        ("HOST_FLOW_RUN_NAME", run.name.clone()),
        ("HOST_FLOW_NAME", claimed.deployment.flow.clone()),
        ("HOST_DEPLOYMENT", run.deployment.clone()),
        (
            "HOST_PARAMETERS",
            Value::Object(run.parameters.clone()).to_string(),
        ),
    ];
    for (key, value) in identity {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    }
    Job {
        flow_run_id: run.id.clone(),
        flow_run_name: run.name.clone(),
        configuration,
        env,
        command: claimed.deployment.command.clone(),
        labels: vec![
            ("host.flow-run-id".into(), run.id.clone()),
            ("host.flow-run-name".into(), run.name.clone()),
            ("host.deployment".into(), run.deployment.clone()),
            ("host.pool".into(), run.pool.clone()),
            ("host.worker".into(), shared.config.name.clone()),
        ],
    }
}

/// A run held before a restart: re-attach through `recover` where the plugin
/// can, or end it with what is known.
pub(super) async fn recover(
    shared: &Arc<Shared>,
    claimed: ClaimedRun,
    cancel: watch::Receiver<bool>,
) {
    let run_id = claimed.flow_run.id.clone();
    let log = RunLog::start(shared.client.clone(), run_id.clone());
    let Some(handle) = claimed.flow_run.infrastructure_handle.clone() else {
        // Claimed but never recorded as started: whether `start` ran is unknown.
        let message =
            "the worker restarted before this run's infrastructure was recorded".to_string();
        log.finish(shared, &run_id, StateType::Crashed, message, None)
            .await;
        return;
    };
    let cancelling = claimed.flow_run.state.state_type == StateType::Cancelling;
    match shared.plugin.recover(&handle).await {
        Ok(RunStatus::Pending | RunStatus::Running) => {
            log.push(
                "worker",
                format!("re-attached after worker {} restarted", shared.config.name),
            );
            if cancelling {
                stop(shared, &run_id, &handle).await;
                log.finish(
                    shared,
                    &run_id,
                    StateType::Cancelled,
                    "cancelled; infrastructure stopped".into(),
                    None,
                )
                .await;
                return;
            }
            let timeout = claimed
                .job_variables
                .get("timeout_seconds")
                .and_then(Value::as_u64);
            watch_run(shared, &run_id, &handle, timeout, cancel, log).await;
        }
        Ok(RunStatus::Exited(exit)) => {
            let (state, code) = if exit.code == Some(0) && !cancelling {
                (StateType::Completed, Some(0))
            } else if cancelling {
                (StateType::Cancelled, exit.code)
            } else {
                (StateType::Failed, exit.code)
            };
            log.finish(
                shared,
                &run_id,
                state,
                format!("ended while the worker was away: {}", exit.message),
                code,
            )
            .await;
            let _ = shared.plugin.destroy(&handle).await;
        }
        Ok(RunStatus::NotFound(why)) => {
            log.finish(
                shared,
                &run_id,
                StateType::Crashed,
                format!("infrastructure lost while the worker was away: {why}"),
                None,
            )
            .await;
        }
        Err(error) => {
            log.finish(
                shared,
                &run_id,
                StateType::Crashed,
                format!("recover failed: {error}"),
                None,
            )
            .await;
        }
    }
}

/// A cancellation for a run this worker holds on the server but not in memory.
pub(super) async fn cancel_unheld(shared: &Shared, run_id: &str) {
    let transition = Transition {
        to: Some(StateType::Cancelled),
        message: Some(format!(
            "cancelled; worker {} was not running it",
            shared.config.name
        )),
        worker: Some(shared.config.name.clone()),
        idempotency_key: Some(format!("{run_id}:final")),
        ..Transition::default()
    };
    report(shared, run_id, transition).await;
}
