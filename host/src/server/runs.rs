//! `/api/flow-runs/...`: listing, state changes, cancel, retry, delete, logs.

use super::{AppState, Body, Caller, List, Params};
use crate::control::NewLogLine;
use crate::error::ApiError;
use crate::model::{FlowRun, LogLine, StateType, Timestamp};
use crate::orchestration::Transition;
use crate::store::{RunFilter, RunPage, RunSort};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
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
        .route("/api/flow-runs/{id}/logs/download", get(download_logs))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    deployment: Option<String>,
    /// Runs in any of these states: a comma-separated list, or the
    /// parameter repeated (`state=FAILED,CRASHED`). `LATE` stands for
    /// SCHEDULED runs past their time.
    #[serde(default)]
    #[param(value_type = Option<String>, example = "FAILED,CRASHED", pattern = r"^(SCHEDULED|LATE|PENDING|RUNNING|COMPLETED|FAILED|CRASHED|CANCELLING|CANCELLED)(,(SCHEDULED|LATE|PENDING|RUNNING|COMPLETED|FAILED|CRASHED|CANCELLING|CANCELLED))*$")]
    state: Option<String>,
    /// `true`: also SCHEDULED runs past their time (their state is named
    /// `Late`); without `state`, only those.
    #[serde(default, deserialize_with = "super::optional_bool")]
    #[param(value_type = Option<bool>)]
    late: Option<bool>,
    /// Runs whose name contains this, ignoring case.
    #[serde(default)]
    name: Option<String>,
    /// Runs expected to start (scheduled) at or after this time (RFC 3339).
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Runs expected to start at or before this time (RFC 3339).
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// `expected` (the default): by expected start time, newest first, so
    /// runs scheduled for later come first; `created`: by creation, newest first.
    #[serde(default)]
    #[param(inline)]
    sort: Option<RunSort>,
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

/// The `state` filter of a run listing (the API's and the UI's): the
/// states, and whether LATE was among them.
pub(super) fn states_param<'a>(
    texts: impl IntoIterator<Item = &'a str>,
) -> Result<(Vec<StateType>, bool), ApiError> {
    let (mut states, mut late) = (Vec::new(), false);
    for text in texts.into_iter().flat_map(|t| t.split(',')) {
        if text.eq_ignore_ascii_case("LATE") {
            late = true;
            continue;
        }
        let state = StateType::parse(text).ok_or_else(|| {
            ApiError::bad_request("state", format!("state: unknown state {text:?} (one of SCHEDULED, LATE, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, CANCELLING, CANCELLED)"))
        })?;
        if !states.contains(&state) {
            states.push(state);
        }
    }
    Ok((states, late))
}

/// An RFC 3339 time of a run listing's `since` or `until`.
pub(super) fn time_param(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            ApiError::bad_request(
                field,
                format!(
                    "{field}: {text:?} is not an RFC 3339 time (like 2026-01-31T12:00:00Z): {e}"
                ),
            )
        })
}

/// The `sort` of a run listing.
pub(super) fn sort_param(text: &str) -> Result<RunSort, ApiError> {
    RunSort::parse(text.trim()).ok_or_else(|| {
        ApiError::bad_request(
            "sort",
            format!("sort: unknown order {text:?} (expected or created)"),
        )
    })
}

#[utoipa::path(
    get,
    operation_id = "runs_list",
    path = "/api/flow-runs",
    tag = "flow-runs",
    summary = "Find flow runs, newest first, a page at a time, with how many match",
    description = "Filters combine: name substring, states, expected start range, pool, deployment. Every page carries `total`, the number of runs that match in all.",
    params(ListParams),
    responses((status = 200, description = "OK", body = RunPage), crate::server::openapi::Errors)
)]
async fn list(
    State(s): State<AppState>,
    Params(p): Params<ListParams>,
) -> Result<Json<RunPage>, ApiError> {
    let (states, late) = states_param(p.state.as_deref())?;
    // Text fields may be empty (no filter); a time may not.
    let blank = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let filter = RunFilter {
        pool: blank(p.pool),
        deployment: blank(p.deployment),
        states,
        late: late || p.late.unwrap_or(false),
        name: blank(p.name),
        since: p.since.map(|t| time_param("since", &t)).transpose()?,
        until: p.until.map(|t| time_param("until", &t)).transpose()?,
    };
    Ok(Json(s.control.find_runs(
        &filter,
        p.sort.unwrap_or_default(),
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
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(t): Body<Transition>,
) -> Result<Json<TransitionResponse>, ApiError> {
    let (flow_run, applied) = s.control.transition(&id, t, &caller.scope()).await?;
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

/// Lines read per page of a download.
const DOWNLOAD_PAGE: usize = 1000;

#[utoipa::path(
    get,
    operation_id = "runs_download_logs",
    path = "/api/flow-runs/{id}/logs/download",
    tag = "flow-runs",
    summary = "The whole log as text, one line each: time (RFC 3339), stream, message",
    description = "Streamed a page at a time from the first line to the last there is when the reading gets there; a log the server cut ends with its notice.",
    params(("id" = String, Path)),
    responses((status = 200, description = "OK", content_type = "text/plain", body = String), crate::server::openapi::Errors)
)]
async fn download_logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    // The first page before the answer: an unknown run is a 404, not an empty file.
    let first = s.control.log_lines(&id, None, DOWNLOAD_PAGE)?;
    let filename = format!(
        "flow-run-{}.log",
        id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
    );
    let pages = futures_util::stream::unfold(
        (s.control.clone(), id, Some(first)),
        |(control, id, page)| async move {
            let lines = match page {
                Some(lines) => lines,
                None => return None,
            };
            if lines.is_empty() {
                return None;
            }
            let after = lines.last().map(|l| l.seq);
            let mut text = String::new();
            for line in &lines {
                text.push_str(&format!(
                    "{} {} {}\n",
                    line.timestamp
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    line.stream,
                    line.message
                ));
            }
            // A read that fails ends the file early; the error is logged.
            let next = match control.log_lines(&id, after, DOWNLOAD_PAGE) {
                Ok(next) if lines.len() == DOWNLOAD_PAGE => Some(next),
                Ok(_) => Some(Vec::new()),
                Err(error) => {
                    tracing::warn!(flow_run_id = %id, error = %error.message, "log download cut short");
                    None
                }
            };
            Some((
                Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(text)),
                (control, id, next),
            ))
        },
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
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
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    List(lines): List<NewLogLine>,
) -> Result<Json<Appended>, ApiError> {
    Ok(Json(Appended {
        next_seq: s.control.append_logs(&id, lines, &caller.scope()).await?,
    }))
}
