//! `/api/deployments/...`: create-or-update by name, and runs from a deployment.

use super::{AppState, Body};
use crate::control::{DeploymentSpec, RunRequest, UpsertOutcome};
use crate::error::ApiError;
use crate::model::{Deployment, FlowRun};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/deployments", get(list).put(upsert))
        .route("/api/deployments/{flow}/{name}", get(read).delete(delete))
        .route("/api/deployments/{flow}/{name}/runs", post(create_run))
}

async fn upsert(
    State(s): State<AppState>,
    Body(spec): Body<DeploymentSpec>,
) -> Result<(StatusCode, Json<UpsertOutcome>), ApiError> {
    let outcome = s.control.upsert_deployment(spec).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)))
}

async fn list(State(s): State<AppState>) -> Result<Json<Vec<Deployment>>, ApiError> {
    Ok(Json(s.control.deployments()?))
}

async fn read(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
) -> Result<Json<Deployment>, ApiError> {
    Ok(Json(s.control.deployment(&format!("{flow}/{name}"))?))
}

async fn delete(
    State(s): State<AppState>,
    Path((flow, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.control
        .delete_deployment(&format!("{flow}/{name}"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

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
