//! The token, asked once: `/login` checks it and keeps a session cookie
//! (HttpOnly, SameSite=Strict) that the pages, actions and the event
//! stream accept in place of the `Authorization` header.

use super::{back_to, view};
use crate::server::AppState;
use axum::Router;
use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const SESSION_COOKIE: &str = "host_session";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

/// The cookie's value for a token: derived, so the cookie never holds the
/// token itself and needs no escaping whatever characters the token has.
pub fn session_value(token: &str) -> String {
    let digest = Sha256::digest(format!("host-ui-session\0{token}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
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

/// Pages without the token go to the login form, then back.
pub async fn require_login(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.authorized(request.headers(), true) {
        return next.run(request).await;
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
            p { "This server needs its API token (" code { "HOST_API_TOKEN" } ")." }
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
    Form(form): Form<LoginForm>,
) -> Result<Response, super::PageError> {
    let next = form.next.as_deref().unwrap_or("/");
    let Some(session) = state.session.as_deref() else {
        return Ok(back_to(Some(next), "/").into_response());
    };
    if session_value(&form.token) != session {
        let page = login_page(next, Some("token: not this server's API token"));
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let cookie = format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
    Ok(([(header::SET_COOKIE, cookie)], back_to(Some(next), "/")).into_response())
}

async fn logout() -> Response {
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}
