//! Flow runs: listing, state transitions, cancellation and logs.

use super::{Control, Scope, now};
use crate::error::ApiError;
use crate::model::{FlowRun, LogLine, Timestamp};
use crate::orchestration::{self, Decision, Transition};
use crate::store::{FindRuns, Records, RunFilter, RunPage, RunSort};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Lines accepted in one append.
const MAX_LOG_BATCH: usize = 5_000;
/// Longest accepted line; longer ones are cut, not refused.
const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLogLine {
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub timestamp: Option<Timestamp>,
    #[serde(default)]
    pub stream: Option<String>,
    pub message: String,
}

/// One page of a run's log (see [`Control::log_window`]).
#[derive(Debug, Clone)]
pub struct LogWindow {
    /// Oldest first.
    pub lines: Vec<LogLine>,
    /// The sequence number of the run's last line, if it has any: lines are
    /// numbered from 0 without gaps, so this says how many there are.
    pub last: Option<u64>,
}

fn run_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("flow run `{id}` does not exist"))
}

impl Control {
    pub fn runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RunPage, ApiError> {
        if limit == 0 || limit > 1000 {
            return Err(ApiError::bad_request(
                "limit",
                "limit: must be between 1 and 1000",
            ));
        }
        self.read(|r| Ok(r.runs_page(filter, cursor, limit)?))
    }

    /// What a person looks for: one page of the runs `filter` keeps, in
    /// `sort`'s order, with how many match in all.
    pub fn find_runs(
        &self,
        filter: &RunFilter,
        sort: RunSort,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RunPage, ApiError> {
        if limit == 0 || limit > 1000 {
            return Err(ApiError::bad_request(
                "limit",
                "limit: must be between 1 and 1000",
            ));
        }
        self.read(|r| Ok(r.find_runs(filter, sort, cursor, limit)?))
    }

    /// A pool's SCHEDULED runs, soonest first, at most `limit` (1 to 1000).
    pub fn upcoming(&self, pool: &str, limit: usize) -> Result<Vec<FlowRun>, ApiError> {
        let filter = RunFilter {
            pool: Some(pool.to_string()),
            states: vec![crate::model::StateType::Scheduled],
            ..RunFilter::default()
        };
        let mut runs = self.read(|r| {
            r.pool(pool)?
                .ok_or_else(|| super::pools::pool_not_found(pool))?;
            Ok::<_, ApiError>(r.runs_page(&filter, None, 1000)?.runs)
        })?;
        runs.sort_by_key(|r| r.scheduled_at);
        runs.truncate(limit.clamp(1, 1000));
        Ok(runs)
    }

    /// `count` lines of a run's log (1 to 10,000), oldest first: from
    /// sequence number `from` on, or the newest when `from` is `None`.
    pub fn log_window(
        &self,
        id: &str,
        from: Option<u64>,
        count: u64,
    ) -> Result<LogWindow, ApiError> {
        let count = count.clamp(1, 10_000);
        self.read(|r| {
            r.run(id)?.ok_or_else(|| run_not_found(id))?;
            let last = r.last_log_seq(id)?;
            let after = match from {
                Some(from) => from.checked_sub(1),
                None => last.and_then(|last| last.checked_sub(count)),
            };
            Ok(LogWindow {
                lines: r.logs(id, after, count as usize)?,
                last,
            })
        })
    }

    /// Up to `limit` lines after `after`, oldest first, without waiting
    /// (the log download reads the whole log this way, a page at a time).
    pub fn log_lines(
        &self,
        id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LogLine>, ApiError> {
        self.read(|r| {
            r.run(id)?.ok_or_else(|| run_not_found(id))?;
            Ok(r.logs(id, after, limit.clamp(1, 10_000))?)
        })
    }

    pub fn run(&self, id: &str) -> Result<FlowRun, ApiError> {
        self.read(|r| Ok(r.run(id)?))?
            .ok_or_else(|| run_not_found(id))
    }

    /// Applies a transition if orchestration allows it. Returns the run as it
    /// now is and whether this request changed it.
    pub async fn transition(
        &self,
        id: &str,
        request: Transition,
        scope: &Scope,
    ) -> Result<(FlowRun, bool), ApiError> {
        let scope = scope.clone();
        let id = id.to_string();
        let now = now();
        let forced = request
            .force
            .then(|| (id.clone(), request.to, request.worker.clone()));
        let outcome = self
            .write(move |w| {
                let run = w.run(&id)?.ok_or_else(|| run_not_found(&id))?;
                match orchestration::decide(&run, &request, now)? {
                    Decision::Apply(next) => {
                        // A replay stays a replay (a hand-back let go of the run).
                        scope.check_holder(&run)?;
                        w.put_run(Some(&run), &next)?;
                        Ok((*next, true))
                    }
                    Decision::Replay => Ok((run, false)),
                }
            })
            .await?;
        if outcome.1 {
            self.changed();
        }
        if let (Some((id, to, asking)), true) = (forced, outcome.1) {
            tracing::warn!(flow_run_id = %id, to = ?to, holder = ?outcome.0.worker, asking = ?asking, "state forced by an operator");
        }
        Ok(outcome)
    }

    pub async fn cancel(&self, id: &str) -> Result<FlowRun, ApiError> {
        let id = id.to_string();
        let now = now();
        let run = self
            .write(move |w| {
                let run = w.run(&id)?.ok_or_else(|| run_not_found(&id))?;
                match orchestration::cancel(&run, now)? {
                    Decision::Apply(next) => {
                        w.put_run(Some(&run), &next)?;
                        Ok(*next)
                    }
                    Decision::Replay => Ok(run),
                }
            })
            .await?;
        self.changed();
        Ok(run)
    }

    /// A new attempt of a FAILED, CRASHED or CANCELLED run
    /// ([`orchestration::retry`]). Refused (409) when its deployment is gone:
    /// no claim would hand the run out again. A paused deployment's retried
    /// run waits, like its other runs, until the deployment is resumed.
    pub async fn retry(&self, id: &str) -> Result<FlowRun, ApiError> {
        let id = id.to_string();
        let now = now();
        let run = self
            .write(move |w| {
                let run = w.run(&id)?.ok_or_else(|| run_not_found(&id))?;
                let Decision::Apply(next) = orchestration::retry(&run, now)? else {
                    return Ok(run);
                };
                let current = w
                    .deployment(&run.deployment)?
                    .filter(|d| d.id == run.deployment_id);
                if current.is_none() {
                    return Err(ApiError::conflict(format!(
                        "flow run {id}: its deployment `{}` was deleted, so no worker would claim it again",
                        run.deployment
                    )));
                }
                w.put_run(Some(&run), &next)?;
                Ok(*next)
            })
            .await?;
        tracing::info!(flow_run_id = %run.id, attempt = orchestration::attempts(&run) + 1, "flow run retried");
        self.changed();
        Ok(run)
    }

    /// Deletes a run and its logs; refused (409) while a worker holds it
    /// ([`orchestration::deletable`]).
    pub async fn delete_run(&self, id: &str) -> Result<(), ApiError> {
        let id = id.to_string();
        self.write(move |w| {
            let run = w.run(&id)?.ok_or_else(|| run_not_found(&id))?;
            orchestration::deletable(&run)?;
            Ok(w.delete_run(&run)?)
        })
        .await?;
        self.changed();
        Ok(())
    }

    pub async fn append_logs(
        &self,
        id: &str,
        lines: Vec<NewLogLine>,
        scope: &Scope,
    ) -> Result<u64, ApiError> {
        if lines.len() > MAX_LOG_BATCH {
            return Err(ApiError::bad_request(
                "lines",
                format!("at most {MAX_LOG_BATCH} lines per request"),
            ));
        }
        let now = now();
        let lines: Vec<LogLine> = lines
            .into_iter()
            .map(|line| {
                let mut message = line.message;
                if message.len() > MAX_LINE_BYTES {
                    let mut cut = MAX_LINE_BYTES;
                    while !message.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    message.truncate(cut);
                }
                LogLine {
                    seq: 0,
                    timestamp: line.timestamp.unwrap_or(now),
                    stream: line.stream.unwrap_or_else(|| "stdout".into()),
                    message,
                }
            })
            .collect();
        let id = id.to_string();
        let cap = self.config.max_log_lines_per_run;
        let scope = scope.clone();
        let next = self
            .write(move |w| {
                let run = w.run(&id)?.ok_or_else(|| run_not_found(&id))?;
                scope.check_holder(&run)?;
                let mut lines = lines;
                let next = w.last_log_seq(&id)?.map_or(0, |s| s + 1);
                if next > cap {
                    // The notice is stored already: drop the rest.
                    return Ok(next);
                }
                let room = usize::try_from(cap - next).unwrap_or(usize::MAX);
                if lines.len() > room {
                    lines.truncate(room);
                    lines.push(LogLine {
                        seq: 0,
                        timestamp: now,
                        stream: "worker".into(),
                        message: format!(
                            "[the server keeps {cap} log lines per run; later lines were dropped]"
                        ),
                    });
                }
                Ok(w.append_logs(&id, lines)?)
            })
            .await?;
        self.logs_changed();
        Ok(next)
    }

    /// Lines after `after`; with `wait`, blocks until there are some or the run ended.
    pub async fn logs(
        &self,
        id: &str,
        after: Option<u64>,
        limit: usize,
        wait: Duration,
    ) -> Result<(Vec<LogLine>, FlowRun), ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.subscribe();
        let mut log_changes = self.log_changes.subscribe();
        let mut waiting = None;
        loop {
            changes.borrow_and_update();
            log_changes.borrow_and_update();
            let (lines, run) = self.read(|r| {
                let run = r.run(id)?.ok_or_else(|| run_not_found(id))?;
                Ok((r.logs(id, after, limit.clamp(1, 10_000))?, run))
            })?;
            if !lines.is_empty()
                || run.state.state_type.is_terminal()
                || tokio::time::Instant::now() >= deadline
            {
                return Ok((lines, run));
            }
            // New lines or a state change (the run may have ended), whichever first.
            let news = async {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = log_changes.changed() => {}
                }
            };
            waiting.get_or_insert_with(|| self.store.waiting());
            let _ = tokio::time::timeout_at(deadline, news).await;
        }
    }

    /// Waits until the run changes from `seen` (or `wait` passes), for `--watch`.
    pub async fn run_changes(
        &self,
        id: &str,
        seen: Option<Timestamp>,
        wait: Duration,
    ) -> Result<FlowRun, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.subscribe();
        let mut waiting = None;
        loop {
            changes.borrow_and_update();
            let run = self.run(id)?;
            if seen.is_none_or(|t| run.updated > t) || tokio::time::Instant::now() >= deadline {
                return Ok(run);
            }
            waiting.get_or_insert_with(|| self.store.waiting());
            let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
        }
    }
}
