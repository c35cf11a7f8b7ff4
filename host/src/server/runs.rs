//! `/api/flow-runs/...`: listing, state changes, cancel, logs.

use super::{AppState, Body, Params};
use crate::control::NewLogLine;
use crate::error::ApiError;
use crate::model::{FlowRun, LogLine, StateType, Timestamp};
use crate::orchestration::Transition;
use crate::store::{RunFilter, RunPage};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest a follow request may wait for news.
const MAX_WAIT_MS: u64 = 60_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/flow-runs", get(list))
        .route("/api/flow-runs/{id}", get(read))
        .route("/api/flow-runs/{id}/state", post(set_state))
        .route("/api/flow-runs/{id}/cancel", post(cancel))
        .route("/api/flow-runs/{id}/logs", get(logs).post(append_logs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    deployment: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default = "default_limit", deserialize_with = "super::number")]
    limit: usize,
    #[serde(default)]
    cursor: Option<String>,
}

fn default_limit() -> usize {
    100
}

async fn list(
    State(s): State<AppState>,
    Params(p): Params<ListParams>,
) -> Result<Json<RunPage>, ApiError> {
    let state = match p.state {
        Some(text) => Some(StateType::parse(&text).ok_or_else(|| {
            ApiError::bad_request("state", format!("state: unknown state {text:?} (one of SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, CANCELLING, CANCELLED)"))
        })?),
        None => None,
    };
    let filter = RunFilter {
        pool: p.pool,
        deployment: p.deployment,
        state,
    };
    Ok(Json(s.control.runs(
        &filter,
        p.cursor.as_deref(),
        p.limit,
    )?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    /// Wait until the run was updated after this time (for `--watch`).
    #[serde(default)]
    changed_after: Option<Timestamp>,
    #[serde(default, deserialize_with = "super::number")]
    wait_ms: u64,
}

async fn read(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Params(p): Params<ReadParams>,
) -> Result<Json<FlowRun>, ApiError> {
    if p.wait_ms == 0 {
        return Ok(Json(s.control.run(&id)?));
    }
    let wait = Duration::from_millis(p.wait_ms.min(MAX_WAIT_MS));
    Ok(Json(
        s.control.run_changes(&id, p.changed_after, wait).await?,
    ))
}

#[derive(Serialize, Deserialize)]
pub struct TransitionResponse {
    pub flow_run: FlowRun,
    /// False when the request was a replay or the run already was in that state.
    pub applied: bool,
}

async fn set_state(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(t): Body<Transition>,
) -> Result<Json<TransitionResponse>, ApiError> {
    let (flow_run, applied) = s.control.transition(&id, t).await?;
    Ok(Json(TransitionResponse { flow_run, applied }))
}

async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FlowRun>, ApiError> {
    Ok(Json(s.control.cancel(&id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    #[serde(default, deserialize_with = "super::optional_number")]
    after: Option<u64>,
    #[serde(default = "default_log_limit", deserialize_with = "super::number")]
    limit: usize,
    #[serde(default, deserialize_with = "super::number")]
    wait_ms: u64,
}

fn default_log_limit() -> usize {
    1000
}

#[derive(Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The run's state when the page was read; a follower stops once it is final.
    pub state: StateType,
}

async fn logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Params(p): Params<LogParams>,
) -> Result<Json<LogPage>, ApiError> {
    let wait = Duration::from_millis(p.wait_ms.min(MAX_WAIT_MS));
    let (lines, run) = s.control.logs(&id, p.after, p.limit, wait).await?;
    Ok(Json(LogPage {
        lines,
        state: run.state.state_type,
    }))
}

#[derive(Serialize, Deserialize)]
pub struct Appended {
    pub next_seq: u64,
}

async fn append_logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(lines): Body<Vec<NewLogLine>>,
) -> Result<Json<Appended>, ApiError> {
    Ok(Json(Appended {
        next_seq: s.control.append_logs(&id, lines).await?,
    }))
}
