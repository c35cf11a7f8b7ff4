//! One flow run on this worker: start it through the plugin, watch it, report
//! how it ended, clean up. Every report is idempotent (keyed by run and step),
//! so retrying one after a lost answer cannot move the run twice.
//!
//! Cancel, `timeout_seconds` and worker shutdown win over every plugin call,
//! not only `wait`: each call is raced against them ([`Stops::race`]).
//!
//! Every path through a run ends in a final state: a trap or a spent budget
//! in a plugin call ends this run CRASHED and no other; a final state the
//! server refuses becomes CRASHED with the reason; a run whose outcome
//! cannot be known is CRASHED, never COMPLETED. A run left unfinished would
//! look alive, and count against its pool's, queue's and deployment's
//! limits, until someone ended it by hand.

use super::logs::RunLog;
use super::{Shared, retry};
use crate::model::{ClaimedRun, StateType};
use crate::orchestration::Transition;
use crate::runtime::{CallError, ExitStatus, Job, RunStatus};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `start` attempts for retryable errors, and the first backoff.
const START_ATTEMPTS: u32 = 5;
const START_BACKOFF: Duration = Duration::from_millis(250);

/// What ended a call before it answered.
#[derive(Debug, Clone, Copy)]
enum Stopped {
    Cancelled,
    TimedOut(u64),
    /// The worker is shutting down: leave the infrastructure for recovery.
    Abandoned,
}

/// The things that may end a run's calls early.
struct Stops {
    cancel: watch::Receiver<bool>,
    abandon: watch::Receiver<bool>,
    timeout: Option<(u64, tokio::time::Instant)>,
}

impl Stops {
    fn new(shared: &Shared, cancel: watch::Receiver<bool>, claimed: &ClaimedRun) -> Stops {
        let timeout = claimed
            .job_variables
            .get("timeout_seconds")
            .and_then(Value::as_u64)
            .map(|s| (s, tokio::time::Instant::now() + Duration::from_secs(s)));
        Stops {
            cancel,
            abandon: shared.abandon.clone(),
            timeout,
        }
    }

    /// `work`, unless a cancel, the timeout or shutdown comes first (then
    /// `work` is dropped, and with it the plugin's instance).
    async fn race<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Stopped> {
        let timeout = self.timeout;
        let timer = async move {
            match timeout {
                Some((_, at)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let seconds = timeout.map_or(0, |(s, _)| s);
        tokio::select! {
            biased;
            _ = self.cancel.wait_for(|c| *c) => Err(Stopped::Cancelled),
            _ = self.abandon.wait_for(|a| *a) => Err(Stopped::Abandoned),
            _ = timer => Err(Stopped::TimedOut(seconds)),
            value = work => Ok(value),
        }
    }
}

pub(super) async fn execute(
    shared: &Arc<Shared>,
    claimed: ClaimedRun,
    cancel: watch::Receiver<bool>,
) {
    let run_id = claimed.flow_run.id.clone();
    tracing::info!(flow_run_id = %run_id, pool = %shared.config.pool, worker = %shared.config.name, "PENDING: claimed");
    let log = RunLog::start(shared, run_id.clone());
    let mut stops = Stops::new(shared, cancel, &claimed);
    let configuration = claimed.job_configuration.to_string();
    match stops.race(shared.plugin.validate(&configuration)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            let message = format!("invalid job configuration: {error}");
            return log
                .finish(shared, &run_id, StateType::Crashed, message, None)
                .await;
        }
        Err(stopped) => return end_unstarted(shared, &run_id, log, stopped, "validating").await,
    }
    let job = job_for(shared, &claimed, configuration);
    let handle = match stops.race(start_with_retries(shared, &run_id, job)).await {
        Ok(Ok(handle)) => handle,
        Ok(Err(error)) => {
            release(shared, &run_id, &log).await;
            let message = format!("start failed: {error}");
            return log
                .finish(shared, &run_id, StateType::Crashed, message, None)
                .await;
        }
        Err(stopped) => {
            // Whatever `start` made so far has no handle: the host removes it.
            release(shared, &run_id, &log).await;
            return end_unstarted(shared, &run_id, log, stopped, "starting").await;
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
    if let Err(refused) = report(shared, &run_id, running).await {
        // The run ended meanwhile (cancelled before the report, say): nothing
        // may run on for it.
        tracing::warn!(flow_run_id = %run_id, %refused, "RUNNING refused; stopping the infrastructure");
        stop(shared, &run_id, &handle).await;
        cleanup(shared, &run_id, &handle).await;
        log.close().await;
        return;
    }
    tracing::info!(flow_run_id = %run_id, "RUNNING");
    watch_run(shared, &run_id, &handle, stops, log).await;
}

/// Ends a run whose infrastructure never started.
async fn end_unstarted(
    shared: &Arc<Shared>,
    run_id: &str,
    log: RunLog,
    stopped: Stopped,
    doing: &str,
) {
    let (state, message) = match stopped {
        Stopped::Cancelled => (StateType::Cancelled, format!("cancelled while {doing}")),
        Stopped::TimedOut(seconds) => (
            StateType::Failed,
            format!("timed out after {seconds}s (timeout_seconds) while {doing}"),
        ),
        Stopped::Abandoned => (
            StateType::Crashed,
            format!(
                "worker {} shut down while {doing}; nothing was left running",
                shared.config.name
            ),
        ),
    };
    log.finish(shared, run_id, state, message, None).await;
}

/// Monitors a started run to its end and reports it.
async fn watch_run(
    shared: &Arc<Shared>,
    run_id: &str,
    handle: &str,
    mut stops: Stops,
    log: RunLog,
) {
    let waited = stops
        .race(shared.plugin.wait(run_id, handle, log.sink()))
        .await;
    let (state, message, exit_code) = match waited {
        Ok(Ok(exit)) => exit_outcome(exit),
        Ok(Err(error)) => (StateType::Crashed, error.to_string(), None),
        Err(Stopped::Abandoned) => {
            log.close().await;
            tracing::info!(flow_run_id = run_id, "left running for recovery");
            return;
        }
        Err(Stopped::Cancelled) => (
            StateType::Cancelled,
            format!(
                "cancelled; {}",
                stop_and_verify(shared, run_id, handle).await
            ),
            None,
        ),
        Err(Stopped::TimedOut(seconds)) => (
            StateType::Failed,
            format!(
                "timed out after {seconds}s (timeout_seconds); {}",
                stop_and_verify(shared, run_id, handle).await
            ),
            None,
        ),
    };
    log.finish(shared, run_id, state, message, exit_code).await;
    cleanup(shared, run_id, handle).await;
}

fn exit_outcome(exit: ExitStatus) -> (StateType, String, Option<i32>) {
    if exit.code == Some(0) {
        return (StateType::Completed, exit.message, Some(0));
    }
    let message = if exit.oom_killed {
        format!("{} (killed: out of memory)", exit.message)
    } else {
        exit.message
    };
    (StateType::Failed, message, exit.code)
}

/// Stops the infrastructure, then checks through the capabilities' records
/// that nothing of the run still runs, rather than trusting the plugin.
async fn stop_and_verify(shared: &Shared, run_id: &str, handle: &str) -> String {
    stop(shared, run_id, handle).await;
    let left = shared.plugin.still_running(run_id).await;
    if left.is_empty() {
        return "infrastructure stopped".into();
    }
    let killed = shared.plugin.kill_leftovers(run_id).await;
    tracing::warn!(
        flow_run_id = run_id,
        ?left,
        "stop left the run's infrastructure running"
    );
    format!(
        "the plugin's stop left {} running; the host killed it ({})",
        left.join(", "),
        killed.join("; ")
    )
}

async fn stop(shared: &Shared, run_id: &str, handle: &str) {
    if let Err(error) = shared
        .plugin
        .stop(run_id, handle, shared.config.stop_grace_seconds)
        .await
    {
        tracing::warn!(flow_run_id = run_id, %error, "stop failed");
    }
}

/// `destroy`, then the host's own clean-up of what the plugin left behind.
async fn cleanup(shared: &Shared, run_id: &str, handle: &str) {
    if let Err(error) = shared.plugin.destroy(run_id, handle).await {
        tracing::warn!(flow_run_id = run_id, %error, "destroy failed");
    }
    let left = shared.plugin.release(run_id).await;
    if !left.is_empty() {
        tracing::warn!(
            flow_run_id = run_id,
            ?left,
            "destroy left things behind; cleaned up"
        );
    }
}

/// The host's clean-up for a run that has no handle.
async fn release(shared: &Shared, run_id: &str, log: &RunLog) {
    let left = shared.plugin.release(run_id).await;
    if !left.is_empty() {
        log.push("worker", format!("cleaned up: {}", left.join("; ")));
    }
}

impl RunLog {
    /// Flushes the run's logs, then records its final state. A final state the
    /// server refuses (it should not) is replaced by CRASHED with the reason,
    /// so the run never stays unfinished.
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
        if let Err(refused) = report(shared, run_id, transition).await {
            let crashed = Transition {
                to: Some(StateType::Crashed),
                message: Some(format!(
                    "the server refused this run's final state ({state}): {refused}"
                )),
                worker: Some(shared.config.name.clone()),
                idempotency_key: Some(format!("{run_id}:final-refused")),
                ..Transition::default()
            };
            let _ = report(shared, run_id, crashed).await;
        }
        tracing::info!(flow_run_id = run_id, pool = %shared.config.pool, worker = %shared.config.name, %message, "{state}");
    }
}

/// Sends a transition until the server answers; `Err` when it refused it.
async fn report(
    shared: &Shared,
    run_id: &str,
    mut transition: Transition,
) -> Result<(), crate::client::ClientError> {
    transition.message = transition
        .message
        .map(|m| crate::capabilities::truncate(m, crate::runtime::MAX_MESSAGE_BYTES));
    let path = format!("/api/flow-runs/{run_id}/state");
    retry("report state", run_id, || {
        shared.client.post::<_, Value>(&path, &transition)
    })
    .await
    .map(|_| ())
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
/// can, or end it with what is known. Never an invented outcome: an exit the
/// infrastructure really had, or CRASHED with why it is unknown.
pub(super) async fn recover(
    shared: &Arc<Shared>,
    claimed: ClaimedRun,
    cancel: watch::Receiver<bool>,
) {
    let run_id = claimed.flow_run.id.clone();
    let log = RunLog::start(shared, run_id.clone());
    let Some(handle) = claimed.flow_run.infrastructure_handle.clone() else {
        // Claimed but never recorded as started: whatever `start` made is
        // unknown to the server, but known to the capabilities.
        release(shared, &run_id, &log).await;
        let message =
            "the worker restarted before this run's infrastructure was recorded; its outcome is unknown"
                .to_string();
        return log
            .finish(shared, &run_id, StateType::Crashed, message, None)
            .await;
    };
    let mut stops = Stops::new(shared, cancel, &claimed);
    let cancelling = claimed.flow_run.state.state_type == StateType::Cancelling;
    let recovered = match stops.race(shared.plugin.recover(&run_id, &handle)).await {
        Ok(recovered) => recovered,
        Err(Stopped::Abandoned) => return log.close().await,
        // Cancelled or timed out before we even know where it stands: stop it.
        Err(_) => Ok(RunStatus::Running),
    };
    match recovered {
        Ok(RunStatus::Pending | RunStatus::Running) => {
            log.push(
                "worker",
                format!("re-attached after worker {} restarted", shared.config.name),
            );
            if cancelling {
                let message = format!(
                    "cancelled; {}",
                    stop_and_verify(shared, &run_id, &handle).await
                );
                log.finish(shared, &run_id, StateType::Cancelled, message, None)
                    .await;
                return cleanup(shared, &run_id, &handle).await;
            }
            watch_run(shared, &run_id, &handle, stops, log).await;
        }
        Ok(RunStatus::Exited(exit)) => {
            // The lines written while the worker was away: `wait` on an
            // exited run reads them from where this worker left off, and
            // answers the same exit.
            let exit = match stops
                .race(shared.plugin.wait(&run_id, &handle, log.sink()))
                .await
            {
                Ok(Ok(drained)) => drained,
                _ => exit,
            };
            let (state, message, code) = if cancelling {
                (StateType::Cancelled, exit.message, exit.code)
            } else {
                exit_outcome(exit)
            };
            log.finish(
                shared,
                &run_id,
                state,
                format!("ended while the worker was away: {message}"),
                code,
            )
            .await;
            cleanup(shared, &run_id, &handle).await;
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
            cleanup(shared, &run_id, &handle).await;
        }
        Err(error) => {
            log.finish(
                shared,
                &run_id,
                StateType::Crashed,
                format!("recover failed, so the outcome is unknown: {error}"),
                None,
            )
            .await;
            cleanup(shared, &run_id, &handle).await;
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
    let _ = report(shared, run_id, transition).await;
}
