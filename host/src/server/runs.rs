//! `/api/flow-runs/...`: listing, state changes, cancel, retry, delete, logs.

use super::{AppState, Body, List, Params};
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
        .route("/api/flow-runs/{id}", get(read).delete(delete))
        .route("/api/flow-runs/{id}/state", post(set_state))
        .route("/api/flow-runs/{id}/cancel", post(cancel))
        .route("/api/flow-runs/{id}/retry", post(retry))
        .route("/api/flow-runs/{id}/logs", get(logs).post(append_logs))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    deployment: Option<String>,
    #[serde(default)]
    #[param(value_type = Option<StateType>)]
    state: Option<String>,
    #[serde(default = "default_limit", deserialize_with = "super::number")]
    #[param(minimum = 1, maximum = 1000)]
    limit: usize,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    #[param(pattern = r"^([0-9a-fA-F]{2})*$")]
    cursor: Option<String>,
}

fn default_limit() -> usize {
    100
}

/// The `state` filter of a run listing (the API's and the UI's).
pub(super) fn state_param(text: &str) -> Result<StateType, ApiError> {
    StateType::parse(text).ok_or_else(|| {
        ApiError::bad_request("state", format!("state: unknown state {text:?} (one of SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, CANCELLING, CANCELLED)"))
    })
}

#[utoipa::path(
    get,
    operation_id = "runs_list",
    path = "/api/flow-runs",
    tag = "flow-runs",
    summary = "List flow runs, newest first, a page at a time",
    params(ListParams),
    responses((status = 200, description = "OK", body = RunPage), crate::server::openapi::Errors)
)]
async fn list(
    State(s): State<AppState>,
    Params(p): Params<ListParams>,
) -> Result<Json<RunPage>, ApiError> {
    let filter = RunFilter {
        pool: p.pool,
        deployment: p.deployment,
        state: p.state.as_deref().map(state_param).transpose()?,
    };
    Ok(Json(s.control.runs(
        &filter,
        p.cursor.as_deref().filter(|c| !c.is_empty()),
        p.limit,
    )?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    /// Wait until the run was updated after this time (for `--watch`).
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    changed_after: Option<Timestamp>,
    #[serde(default, deserialize_with = "super::number")]
    wait_ms: u64,
}

#[utoipa::path(
    get,
    operation_id = "runs_read",
    path = "/api/flow-runs/{id}",
    tag = "flow-runs",
    summary = "Read a run; with wait_ms and changed_after, wait for a change",
    params(("id" = String, Path), ReadParams),
    responses((status = 200, description = "OK", body = FlowRun), crate::server::openapi::Errors)
)]
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

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitionResponse {
    pub flow_run: FlowRun,
    /// False when the request was a replay or the run already was in that state.
    pub applied: bool,
}

#[utoipa::path(
    post,
    operation_id = "runs_set_state",
    path = "/api/flow-runs/{id}/state",
    tag = "flow-runs",
    summary = "Propose a state transition",
    params(("id" = String, Path)),
    request_body = Transition,
    responses((status = 200, description = "OK", body = TransitionResponse), crate::server::openapi::Errors)
)]
async fn set_state(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(t): Body<Transition>,
) -> Result<Json<TransitionResponse>, ApiError> {
    let (flow_run, applied) = s.control.transition(&id, t).await?;
    Ok(Json(TransitionResponse { flow_run, applied }))
}

#[utoipa::path(
    post,
    operation_id = "runs_cancel",
    path = "/api/flow-runs/{id}/cancel",
    tag = "flow-runs",
    summary = "Cancel a run",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK", body = FlowRun), crate::server::openapi::Errors)
)]
async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FlowRun>, ApiError> {
    Ok(Json(s.control.cancel(&id).await?))
}

#[utoipa::path(
    post,
    operation_id = "runs_retry",
    path = "/api/flow-runs/{id}/retry",
    tag = "flow-runs",
    summary = "Retry a FAILED, CRASHED or CANCELLED run",
    description = "A new attempt of the same run, as Prefect's Retry: SCHEDULED and due now, claimed like any other run. The state history keeps the earlier attempts; the worker, exit code, infrastructure handle and idempotency keys of the last attempt are cleared. 409 for a run in any other state, or whose deployment was deleted.",
    params(("id" = String, Path)),
    responses((status = 200, description = "The run, SCHEDULED again", body = FlowRun), crate::server::openapi::Errors)
)]
async fn retry(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FlowRun>, ApiError> {
    Ok(Json(s.control.retry(&id).await?))
}

#[utoipa::path(
    delete,
    operation_id = "runs_delete",
    path = "/api/flow-runs/{id}",
    tag = "flow-runs",
    summary = "Delete a run and its logs",
    description = "SCHEDULED and final runs only: 409 while a worker holds it (PENDING, RUNNING, CANCELLING); cancel it first.",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::server::openapi::Errors)
)]
async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    s.control.delete_run(&id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The run's state when the page was read; a follower stops once it is final.
    pub state: StateType,
}

#[utoipa::path(
    get,
    operation_id = "runs_logs",
    path = "/api/flow-runs/{id}/logs",
    tag = "flow-runs",
    summary = "Read a run's logs; wait_ms follows them",
    params(("id" = String, Path), LogParams),
    responses((status = 200, description = "OK", body = LogPage), crate::server::openapi::Errors)
)]
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

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Appended {
    pub next_seq: u64,
}

#[utoipa::path(
    post,
    operation_id = "runs_append_logs",
    path = "/api/flow-runs/{id}/logs",
    tag = "flow-runs",
    summary = "Append a batch of log lines",
    params(("id" = String, Path)),
    request_body = Vec<NewLogLine>,
    responses((status = 200, description = "OK", body = Appended), crate::server::openapi::Errors)
)]
async fn append_logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    List(lines): List<NewLogLine>,
) -> Result<Json<Appended>, ApiError> {
    Ok(Json(Appended {
        next_seq: s.control.append_logs(&id, lines).await?,
    }))
}
