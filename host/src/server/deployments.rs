//! `/api/deployments/...`: create-or-update by name, and runs from a deployment.

use super::{AppState, Body, Caller};
use crate::control::{DeploymentSpec, RunRequest, ScheduleUpdate, UpsertOutcome};
use crate::error::ApiError;
use crate::model::{Deployment, FlowRun};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/deployments", get(list).put(upsert))
        .route("/api/deployments/{flow}/{name}", get(read).delete(delete))
        .route("/api/deployments/{flow}/{name}/runs", post(create_run))
        .route("/api/deployments/{flow}/{name}/pause", post(pause))
        .route("/api/deployments/{flow}/{name}/resume", post(resume))
        .route(
            "/api/deployments/{flow}/{name}/schedules/{index}",
            patch(update_schedule),
        )
}

#[utoipa::path(
    put,
    operation_id = "deployments_upsert",
    path = "/api/deployments",
    tag = "deployments",
    summary = "Create or update a deployment by flow/name",
    request_body = DeploymentSpec,
    responses((status = 200, description = "Updated", body = UpsertOutcome), (status = 201, description = "Created", body = UpsertOutcome), crate::server::openapi::Errors)
)]
async fn upsert(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(spec): Body<DeploymentSpec>,
) -> Result<(StatusCode, Json<UpsertOutcome>), ApiError> {
    let outcome = s.control.upsert_deployment(spec, &caller.scope()).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)))
}

#[utoipa::path(
    get,
    operation_id = "deployments_list",
    path = "/api/deployments",
    tag = "deployments",
    summary = "List deployments",
    responses((status = 200, description = "OK", body = Vec<Deployment>), crate::server::openapi::Errors)
)]
async fn list(State(s): State<AppState>) -> Result<Json<Vec<Deployment>>, ApiError> {
    Ok(Json(s.control.deployments()?))
}

#[utoipa::path(
    get,
    operation_id = "deployments_read",
    path = "/api/deployments/{flow}/{name}",
    tag = "deployments",
    summary = "Read a deployment",
    params(("flow" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "OK", body = Deployment), crate::server::openapi::Errors)
)]
async fn read(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
) -> Result<Json<Deployment>, ApiError> {
    Ok(Json(s.control.deployment(&format!("{flow}/{name}"))?))
}

#[utoipa::path(
    delete,
    operation_id = "deployments_delete",
    path = "/api/deployments/{flow}/{name}",
    tag = "deployments",
    summary = "Delete a deployment and its scheduled runs",
    description = "Every SCHEDULED run of the deployment goes with it; runs that started keep their record and logs.",
    params(("flow" = String, Path), ("name" = String, Path)),
    responses((status = 204, description = "Deleted"), crate::server::openapi::Errors)
)]
async fn delete(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.control
        .delete_deployment(&format!("{flow}/{name}"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    operation_id = "deployments_create_run",
    path = "/api/deployments/{flow}/{name}/runs",
    tag = "flow-runs",
    summary = "Create a flow run of the deployment",
    params(("flow" = String, Path), ("name" = String, Path)),
    request_body = RunRequest,
    responses((status = 201, description = "Created", body = FlowRun), crate::server::openapi::Errors)
)]
async fn create_run(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
    Body(request): Body<RunRequest>,
) -> Result<(StatusCode, Json<FlowRun>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(
            s.control
                .create_run(&format!("{flow}/{name}"), request)
                .await?,
        ),
    ))
}

#[utoipa::path(
    post,
    operation_id = "deployments_pause",
    path = "/api/deployments/{flow}/{name}/pause",
    tag = "deployments",
    summary = "Pause a deployment: its schedules make no runs and its runs are not claimed",
    description = "The scheduler's future runs are dropped (made again on resume); runs created by hand stay SCHEDULED until it is resumed; claimed runs go on. Pausing a paused deployment changes nothing.",
    params(("flow" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "OK", body = Deployment), crate::server::openapi::Errors)
)]
async fn pause(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
) -> Result<Json<Deployment>, ApiError> {
    Ok(Json(
        s.control
            .set_deployment_paused(&format!("{flow}/{name}"), true)
            .await?,
    ))
}

#[utoipa::path(
    post,
    operation_id = "deployments_resume",
    path = "/api/deployments/{flow}/{name}/resume",
    tag = "deployments",
    summary = "Resume a paused deployment",
    params(("flow" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "OK", body = Deployment), crate::server::openapi::Errors)
)]
async fn resume(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
) -> Result<Json<Deployment>, ApiError> {
    Ok(Json(
        s.control
            .set_deployment_paused(&format!("{flow}/{name}"), false)
            .await?,
    ))
}

#[utoipa::path(
    patch,
    operation_id = "deployments_update_schedule",
    path = "/api/deployments/{flow}/{name}/schedules/{index}",
    tag = "deployments",
    summary = "Turn one schedule of a deployment on or off, or change its cron, interval or time zone",
    description = "`index` counts the deployment's schedules from 0. An inactive schedule makes no runs; any change drops the scheduler's future SCHEDULED runs of the deployment, which are made again from the schedules as they now are. A cron replaces an interval and an interval a cron.",
    params(("flow" = String, Path), ("name" = String, Path), ("index" = usize, Path)),
    request_body = ScheduleUpdate,
    responses((status = 200, description = "OK", body = Deployment), crate::server::openapi::Errors)
)]
async fn update_schedule(
    State(s): State<AppState>,
    Path((flow, name, index)): Path<(String, String, String)>,
    Body(update): Body<ScheduleUpdate>,
) -> Result<Json<Deployment>, ApiError> {
    let index = schedule_index(&index)?;
    Ok(Json(
        s.control
            .update_schedule(&format!("{flow}/{name}"), index, update)
            .await?,
    ))
}

/// A schedule's place in the path, refused as JSON naming `index` (axum's
/// own rejection would be plain text).
pub(super) fn schedule_index(text: &str) -> Result<usize, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "index",
            format!("index: {text:?} is not a schedule's number (0, 1, ...)"),
        )
    })
}
