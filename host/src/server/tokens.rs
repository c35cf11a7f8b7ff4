//! `/api/tokens`: named tokens, made and revoked by an admin
//! (`control::tokens` keeps them, `access` gives each route its role), and
//! `/api/whoami`, what the asking token is.

use super::access::Caller;
use super::{AppState, Body};
use crate::control::{NewToken, TokenSpec, TokenView};
use crate::error::ApiError;
use crate::model::Role;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/tokens", get(list).post(create))
        .route("/api/tokens/{name}", delete(revoke))
        .route("/api/whoami", get(whoami))
}

#[utoipa::path(
    post,
    operation_id = "tokens_create",
    path = "/api/tokens",
    tag = "tokens",
    summary = "Make a named token; its secret is in this answer only",
    request_body = TokenSpec,
    responses((status = 201, description = "Created; `secret` is the bearer token, shown once", body = NewToken), crate::server::openapi::Errors)
)]
async fn create(
    State(s): State<AppState>,
    Body(spec): Body<TokenSpec>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    // Without a bootstrap token the server is open: a named token would
    // restrict nobody, and look as if it did.
    if s.token.is_none() {
        return Err(ApiError::conflict(
            "this server has no token (HOST_API_TOKEN) and is open to everyone; start it with one before making named tokens",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(s.control.create_token(spec).await?),
    ))
}

#[utoipa::path(
    get,
    operation_id = "tokens_list",
    path = "/api/tokens",
    tag = "tokens",
    summary = "List named tokens (never their secrets)",
    responses((status = 200, description = "OK", body = Vec<TokenView>), crate::server::openapi::Errors)
)]
async fn list(State(s): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    Ok(Json(s.control.tokens()?))
}

#[utoipa::path(
    delete,
    operation_id = "tokens_revoke",
    path = "/api/tokens/{name}",
    tag = "tokens",
    summary = "Revoke a named token: refused at its next request, on every replica",
    params(("name" = String, Path)),
    responses((status = 204, description = "Revoked"), crate::server::openapi::Errors)
)]
async fn revoke(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.control.revoke_token(&name).await?;
    // Other replicas' sessions end at their next request (`AppState::caller`).
    s.sessions.end_token(&name);
    Ok(StatusCode::NO_CONTENT)
}

/// The token a request carries, as the server sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Whoami {
    /// The named token's name; none for the bootstrap token, or on a server
    /// without tokens.
    pub token: Option<String>,
    pub role: Role,
    /// The pools a deployer or worker token covers.
    pub pools: Vec<String>,
}

#[utoipa::path(
    get,
    operation_id = "whoami",
    path = "/api/whoami",
    tag = "tokens",
    summary = "The asking token's name, role and pools",
    responses((status = 200, description = "OK", body = Whoami), crate::server::openapi::Errors)
)]
async fn whoami(Extension(caller): Extension<Caller>) -> Json<Whoami> {
    Json(Whoami {
        token: caller.token,
        role: caller.role,
        pools: caller.pools,
    })
}
