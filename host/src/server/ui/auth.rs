//! The token, asked once: `/login` checks it (the bootstrap token or a
//! named one) and begins a session (a random id the server keeps with who
//! logged in, `server::sessions`) whose cookie (HttpOnly, SameSite=Strict)
//! the pages, actions and the event stream accept in place of the
//! `Authorization` header. `/logout` ends it, and so does revoking its
//! token. Pages and actions are the token's role's (`server::access`).

use super::{back_to, view};
use crate::error::ErrorKind;
use crate::server::AppState;
use crate::server::access::{self, Caller};
use axum::Router;
use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;

pub const SESSION_COOKIE: &str = "host_session";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

/// The session cookie's value in a request, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// Pages without the token go to the login form, then back; a page or an
/// action outside the token's role or pools is refused (403), and a page
/// offers only what its reader may do (`view::CALLER`).
pub async fn require_login(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match state.caller(request.headers(), true) {
        Ok(caller) => {
            return match access::admit(&state, &caller, request).await {
                Ok(request) => view::CALLER.scope(caller, next.run(request)).await,
                Err(error) => super::PageError::from(error).into_response(),
            };
        }
        Err(error) if error.kind != ErrorKind::Unauthorized => {
            return super::PageError::from(error).into_response();
        }
        Err(_) => {}
    }
    // After logging in the browser GETs `next`: an action's path is no page.
    let wanted = match *request.method() {
        axum::http::Method::GET => request.uri().path_and_query().map_or("/", |p| p.as_str()),
        _ => "/",
    }
    .to_string();
    let target = format!("/login?next={}", view::query_escape(&wanted));
    Redirect::to(&target).into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<LoginQuery>,
) -> Response {
    if state.token.is_none() {
        return back_to(query.next.as_deref(), "/").into_response();
    }
    login_page(query.next.as_deref().unwrap_or("/"), None).into_response()
}

fn login_page(next: &str, error: Option<&str>) -> maud::Markup {
    view::page(
        "Log in",
        view::Nav::None,
        None,
        html! {
            h1 { "Log in" }
            p { "This server needs an API token: its own (" code { "HOST_API_TOKEN" } "), or one made by " code { "host token create" } "." }
            form.card method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                (view::csrf_field())
                (view::field_error_wrap("token", "API token", error, html! {
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                }))
                button type="submit" { "Log in" }
            }
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, super::PageError> {
    let next = form.next.as_deref().unwrap_or("/");
    let Some(token) = state.token.as_deref() else {
        return Ok(back_to(Some(next), "/").into_response());
    };
    // Compared in the same time wherever the typed token differs.
    let caller = if crate::secret::same_text(&form.token, token) {
        Caller::bootstrap()
    } else if let Some(verified) = state.control.verify_token(&form.token)? {
        Caller::named(verified)
    } else {
        let page = login_page(next, Some("token: not this server's API token"));
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    tracing::info!(token = caller.token.as_deref().unwrap_or("HOST_API_TOKEN"), role = %caller.role, "UI login");
    // A session the browser had before is replaced, not kept alongside.
    if let Some(old) = session_cookie(&headers) {
        state.sessions.end(old);
    }
    let id = state
        .sessions
        .begin(caller)
        .map_err(|e| super::PageError::from(crate::error::ApiError::internal(e.to_string())))?;
    let cookie = cookie(&state, &id, state.sessions.lifetime().as_secs());
    Ok(([(header::SET_COOKIE, cookie)], back_to(Some(next), "/")).into_response())
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        state.sessions.end(id);
    }
    let cookie = cookie(&state, "", 0);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

/// The session cookie: never readable by scripts, never sent by another
/// site's page, and over TLS never sent in the clear. It lasts no longer
/// than the session it names.
fn cookie(state: &AppState, id: &str, max_age: u64) -> String {
    let secure = if state.over_tls { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}
