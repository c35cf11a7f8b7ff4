//! `/api/work-pools/...`: pools, their queues, workers and the claim call.

use super::{AppState, Body, Params};
use crate::control::{
    ClaimRequest, ClaimResponse, PoolPatch, PoolSpec, PoolView, QueuePatch, QueueSpec, QueueView,
    WorkerHeartbeat, WorkerView,
};
use crate::error::ApiError;
use crate::model::{ClaimedRun, FlowRun};
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

#[utoipa::path(
    post,
    operation_id = "pools_create",
    path = "/api/work-pools",
    tag = "work-pools",
    summary = "Create a work pool (and its default queue)",
    request_body = PoolSpec,
    responses((status = 201, description = "Created", body = PoolView), crate::server::openapi::Errors)
)]
async fn create(
    State(s): State<AppState>,
    Body(spec): Body<PoolSpec>,
) -> Result<(StatusCode, Json<PoolView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.control.create_pool(spec).await?),
    ))
}

#[utoipa::path(
    get,
    operation_id = "pools_list",
    path = "/api/work-pools",
    tag = "work-pools",
    summary = "List work pools with their status",
    responses((status = 200, description = "OK", body = Vec<PoolView>), crate::server::openapi::Errors)
)]
async fn list(State(s): State<AppState>) -> Result<Json<Vec<PoolView>>, ApiError> {
    Ok(Json(s.control.pools()?))
}

#[utoipa::path(
    get,
    operation_id = "pools_read",
    path = "/api/work-pools/{pool}",
    tag = "work-pools",
    summary = "Read a work pool",
    params(("pool" = String, Path)),
    responses((status = 200, description = "OK", body = PoolView), crate::server::openapi::Errors)
)]
async fn read(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(s.control.pool(&pool)?))
}

#[utoipa::path(
    patch,
    operation_id = "pools_update",
    path = "/api/work-pools/{pool}",
    tag = "work-pools",
    summary = "Update description, template, limit, paused",
    params(("pool" = String, Path)),
    request_body = PoolPatch,
    responses((status = 200, description = "OK", body = PoolView), crate::server::openapi::Errors)
)]
async fn update(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Body(patch): Body<PoolPatch>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(s.control.update_pool(&pool, patch).await?))
}

#[utoipa::path(
    delete,
    operation_id = "pools_delete",
    path = "/api/work-pools/{pool}",
    tag = "work-pools",
    summary = "Delete a work pool no deployment uses",
    params(("pool" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::server::openapi::Errors)
)]
async fn delete(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.control.delete_pool(&pool).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UpcomingParams {
    #[serde(default = "default_upcoming", deserialize_with = "super::number")]
    limit: usize,
}

fn default_upcoming() -> usize {
    10
}

#[utoipa::path(
    get,
    operation_id = "pools_upcoming",
    path = "/api/work-pools/{pool}/upcoming",
    tag = "work-pools",
    summary = "SCHEDULED runs of the pool, soonest first",
    params(("pool" = String, Path), UpcomingParams),
    responses((status = 200, description = "OK", body = Vec<FlowRun>), crate::server::openapi::Errors)
)]
/// SCHEDULED runs of the pool, soonest first (`host work-pool preview`).
async fn upcoming(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Params(p): Params<UpcomingParams>,
) -> Result<Json<Vec<FlowRun>>, ApiError> {
    Ok(Json(s.control.upcoming(&pool, p.limit)?))
}

#[utoipa::path(
    post,
    operation_id = "queues_create",
    path = "/api/work-pools/{pool}/queues",
    tag = "work-queues",
    summary = "Create a work queue",
    params(("pool" = String, Path)),
    request_body = QueueSpec,
    responses((status = 201, description = "Created", body = QueueView), crate::server::openapi::Errors)
)]
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

#[utoipa::path(
    get,
    operation_id = "queues_list",
    path = "/api/work-pools/{pool}/queues",
    tag = "work-queues",
    summary = "List a pool's queues by priority",
    params(("pool" = String, Path)),
    responses((status = 200, description = "OK", body = Vec<QueueView>), crate::server::openapi::Errors)
)]
async fn list_queues(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<Vec<QueueView>>, ApiError> {
    Ok(Json(s.control.queues(&pool)?))
}

#[utoipa::path(
    get,
    operation_id = "queues_read",
    path = "/api/work-pools/{pool}/queues/{queue}",
    tag = "work-queues",
    summary = "Read a work queue",
    params(("pool" = String, Path), ("queue" = String, Path)),
    responses((status = 200, description = "OK", body = QueueView), crate::server::openapi::Errors)
)]
async fn read_queue(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(s.control.queue(&pool, &queue)?))
}

#[utoipa::path(
    patch,
    operation_id = "queues_update",
    path = "/api/work-pools/{pool}/queues/{queue}",
    tag = "work-queues",
    summary = "Update a work queue",
    params(("pool" = String, Path), ("queue" = String, Path)),
    request_body = QueuePatch,
    responses((status = 200, description = "OK", body = QueueView), crate::server::openapi::Errors)
)]
async fn update_queue(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
    Body(patch): Body<QueuePatch>,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(s.control.update_queue(&pool, &queue, patch).await?))
}

#[utoipa::path(
    delete,
    operation_id = "queues_delete",
    path = "/api/work-pools/{pool}/queues/{queue}",
    tag = "work-queues",
    summary = "Delete a work queue",
    params(("pool" = String, Path), ("queue" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::server::openapi::Errors)
)]
async fn delete_queue(
    State(s): State<AppState>,
    Path((pool, queue)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.control.delete_queue(&pool, &queue).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    operation_id = "workers_list",
    path = "/api/work-pools/{pool}/workers",
    tag = "workers",
    summary = "List a pool's workers with their status",
    params(("pool" = String, Path)),
    responses((status = 200, description = "OK", body = Vec<WorkerView>), crate::server::openapi::Errors)
)]
async fn list_workers(
    State(s): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    Ok(Json(s.control.workers(&pool)?))
}

#[utoipa::path(
    post,
    operation_id = "workers_heartbeat",
    path = "/api/work-pools/{pool}/workers/heartbeat",
    tag = "workers",
    summary = "Worker heartbeat (creates the worker on first use)",
    params(("pool" = String, Path)),
    request_body = WorkerHeartbeat,
    responses((status = 200, description = "OK", body = WorkerView), crate::server::openapi::Errors)
)]
async fn heartbeat(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    Body(beat): Body<WorkerHeartbeat>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(s.control.heartbeat(&pool, beat).await?))
}

#[utoipa::path(
    get,
    operation_id = "workers_held_runs",
    path = "/api/work-pools/{pool}/workers/{worker}/runs",
    tag = "workers",
    summary = "Runs a worker holds (PENDING, RUNNING, CANCELLING), for its recovery",
    params(("pool" = String, Path), ("worker" = String, Path)),
    responses((status = 200, description = "OK", body = Vec<ClaimedRun>), crate::server::openapi::Errors)
)]
/// Runs a worker holds (PENDING, RUNNING, CANCELLING), for its recovery after a restart.
async fn held_runs(
    State(s): State<AppState>,
    Path((pool, worker)): Path<(String, String)>,
) -> Result<Json<Vec<ClaimedRun>>, ApiError> {
    Ok(Json(s.control.held_runs(&pool, &worker)?))
}

#[utoipa::path(
    post,
    operation_id = "pools_claim",
    path = "/api/work-pools/{pool}/claim",
    tag = "workers",
    summary = "Claim due runs; long-polls up to wait_ms",
    params(("pool" = String, Path)),
    request_body = ClaimRequest,
    responses((status = 200, description = "OK", body = ClaimResponse), crate::server::openapi::Errors)
)]
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

#[utoipa::path(
    get,
    operation_id = "pool_types_list",
    path = "/api/pool-types",
    tag = "work-pools",
    summary = "Pool types (plugins) the server knows",
    responses((status = 200, description = "OK", body = Vec<String>), crate::server::openapi::Errors)
)]
async fn pool_types(State(s): State<AppState>) -> Json<Vec<String>> {
    Json(s.control.catalog().templates.keys().cloned().collect())
}

#[utoipa::path(
    get,
    operation_id = "pool_types_default_template",
    path = "/api/pool-types/{type}/default-base-job-template",
    tag = "work-pools",
    summary = "A plugin's default base job template",
    params(("type" = String, Path)),
    responses((status = 200, description = "OK", body = Object), crate::server::openapi::Errors)
)]
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
