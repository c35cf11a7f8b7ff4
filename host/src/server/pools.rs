//! `/api/work-pools/...`: pools, their queues, workers and the claim call.

use super::{AppState, Body, Params};
use crate::control::{
    ClaimRequest, ClaimResponse, PoolPatch, PoolSpec, PoolView, QueuePatch, QueueSpec, QueueView,
    WorkerHeartbeat, WorkerView,
};
use crate::error::ApiError;
use crate::model::{ClaimedRun, FlowRun};
use crate::store::{Records, RunFilter};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/work-pools", get(list).post(create))
        .route(
            "/api/work-pools/{pool}",
            get(read).patch(update).delete(delete),
        )
        .route("/api/work-pools/{pool}/upcoming", get(upcoming))
        .route(
            "/api/work-pools/{pool}/queues",
            get(list_queues).post(create_queue),
        )
        .route(
            "/api/work-pools/{pool}/queues/{queue}",
            get(read_queue).patch(update_queue).delete(delete_queue),
        )
        .route("/api/work-pools/{pool}/workers", get(list_workers))
        .route("/api/work-pools/{pool}/workers/heartbeat", post(heartbeat))
        .route(
            "/api/work-pools/{pool}/workers/{worker}/runs",
            get(held_runs),
        )
        .route("/api/work-pools/{pool}/claim", post(claim))
        .route("/api/pool-types", get(pool_types))
        .route(
            "/api/pool-types/{type}/default-base-job-template",
            get(default_template),
        )
}

async fn create(
    State(s): State<AppState>,
    Body(spec): Body<PoolSpec>,
) -> Result<(StatusCode, Json<PoolView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.control.create_pool(spec).await?),
    ))
}

async fn list(State(s): State<AppState>) -> Result<Json<Vec<PoolView>>, ApiError> {
    Ok(Json(s.control.pools()?))
}

async fn read(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(s.control.pool(&pool)?))
}

async fn update(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Body(patch): Body<PoolPatch>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(s.control.update_pool(&pool, patch).await?))
}

async fn delete(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.control.delete_pool(&pool).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpcomingParams {
    #[serde(default = "default_upcoming", deserialize_with = "super::number")]
    limit: usize,
}

fn default_upcoming() -> usize {
    10
}

/// SCHEDULED runs of the pool, soonest first (`host work-pool preview`).
async fn upcoming(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Params(p): Params<UpcomingParams>,
) -> Result<Json<Vec<FlowRun>>, ApiError> {
    s.control.pool(&pool)?;
    let filter = RunFilter {
        pool: Some(pool),
        state: Some(crate::model::StateType::Scheduled),
        ..RunFilter::default()
    };
    let mut runs = s
        .control
        .store()
        .read(|r| r.runs_page(&filter, None, 1000))?
        .runs;
    runs.sort_by_key(|r| r.scheduled_at);
    runs.truncate(p.limit.clamp(1, 1000));
    Ok(Json(runs))
}

async fn create_queue(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Body(spec): Body<QueueSpec>,
) -> Result<(StatusCode, Json<QueueView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.control.create_queue(&pool, spec).await?),
    ))
}

async fn list_queues(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<Vec<QueueView>>, ApiError> {
    Ok(Json(s.control.queues(&pool)?))
}

async fn read_queue(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(s.control.queue(&pool, &queue)?))
}

async fn update_queue(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
    Body(patch): Body<QueuePatch>,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(s.control.update_queue(&pool, &queue, patch).await?))
}

async fn delete_queue(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.control.delete_queue(&pool, &queue).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_workers(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(s.control.workers(&pool)?))
}

async fn heartbeat(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Body(beat): Body<WorkerHeartbeat>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(s.control.heartbeat(&pool, beat).await?))
}

/// Runs a worker holds (PENDING, RUNNING, CANCELLING), for its recovery after a restart.
async fn held_runs(
    State(s): State<AppState>,
    Path((pool, worker)): Path<(String, String)>,
) -> Result<Json<Vec<ClaimedRun>>, ApiError> {
    Ok(Json(s.control.held_runs(&pool, &worker)?))
}

async fn claim(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Body(request): Body<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    let started = std::time::Instant::now();
    let answer = s.control.claim(&pool, request).await;
    let claimed = answer.as_ref().ok().map(|a| a.runs.len());
    s.metrics.claim(&pool, claimed, started.elapsed());
    Ok(Json(answer?))
}

async fn pool_types(State(s): State<AppState>) -> Json<Vec<String>> {
    Json(s.control.catalog().templates.keys().cloned().collect())
}

async fn default_template(
    State(s): State<AppState>,
    Path(pool_type): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let template = s
        .control
        .catalog()
        .default_template(&pool_type)
        .map_err(|e| ApiError::not_found(e.message))?;
    Ok(Json(template.clone()))
}
