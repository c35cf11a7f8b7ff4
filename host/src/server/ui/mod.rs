//! The web UI at `/`: HTML rendered here with maud (checked at compile time),
//! one stylesheet and one small script embedded in the binary.
//!
//! Pages read through `control` like the API does; every action is a POST
//! that answers with a redirect (or the same form, with the field's error
//! next to it). Live updates need no page logic of their own: `app.js`
//! listens to `/api/events` and re-fetches the page's `data-live` regions.
//!
//! # Layout
//! - `auth`: the login form and the session cookie.
//! - `view`: the shared page frame and the small pieces every page uses.
//! - `form`: variables schema → form fields, and the typed values back.
//! - `dashboard`: the top of the home page (runs by hour, Late runs,
//!   pool health).
//! - one file per page group: `pools`, `pool_edit` (a pool's Details tab
//!   edited), `queues` (a pool's Work Queues
//!   tab), `deployments`, `schedules` (a deployment's schedules), `runs`,
//!   `plugins`.

mod auth;
mod dashboard;
mod deployments;
mod form;
mod plugins;
mod pool_edit;
mod pools;
mod queues;
mod runs;
mod schedules;
mod view;

pub use auth::session_cookie;

use super::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::sync::LazyLock;
use tower_http::compression::CompressionLayer;

/// The UI's two assets, each under a name that changes with its content,
/// so a browser keeps it until the server ships another (no revalidation
/// on every page).
pub struct Asset {
    pub path: String,
    content_type: &'static str,
    body: &'static str,
}

impl Asset {
    fn new(stem: &str, extension: &str, content_type: &'static str, body: &'static str) -> Asset {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(body.as_bytes());
        let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            path: format!("/ui/{stem}.{hash}.{extension}"),
            content_type,
            body,
        }
    }

    async fn serve(&'static self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            self.body,
        )
            .into_response()
    }
}

pub static APP_CSS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("app", "css", "text/css", include_str!("assets/app.css")));
pub static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "js",
        "text/javascript",
        include_str!("assets/app.js"),
    )
});

/// Every page and action; they need the token (cookie) when one is set.
/// The login form and the two assets, which reveal no data, do not. Pages
/// and assets are compressed for a browser that asks (a run page is
/// ~150 KB of HTML, re-fetched on its run's events).
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .merge(pools::routes())
        .merge(queues::routes())
        .merge(pool_edit::routes())
        .merge(deployments::routes())
        .merge(runs::routes())
        .merge(plugins::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_login,
        ));
    Router::new()
        .merge(pages)
        .merge(auth::routes())
        .route_layer(middleware::from_fn_with_state(state, with_csrf_token))
        .route(&APP_CSS.path, get(|| APP_CSS.serve()))
        .route(&APP_JS.path, get(|| APP_JS.serve()))
        .layer(CompressionLayer::new())
}

/// Every form rendered for this request carries its session's CSRF token
/// (the server's `guard` checks it when the form comes back); a scope, so
/// that no page function has to pass it down to its forms.
async fn with_csrf_token(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let token = s.csrf_token(request.headers());
    let logged_in = s.token.is_some()
        && session_cookie(request.headers()).is_some_and(|id| s.sessions.caller(id).is_some());
    let page = view::CSRF_TOKEN.scope(token, next.run(request));
    view::LOGGED_IN.scope(logged_in, page).await
}

/// A page that could not be shown: the API's error, as HTML.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = super::error::status(self.0.kind);
        if status.is_server_error() && self.0.kind != crate::error::ErrorKind::Internal {
            tracing::error!(error = %self.0.message, "UI page failed");
        }
        let error = super::error::disclosed(self.0);
        let body = view::page(
            "Error",
            view::Nav::None,
            None,
            maud::html! {
                h1 { "Something went wrong" }
                p.error role="alert" { (error.message) }
                p { a href="/" { "Back to Work Pools" } }
            },
        );
        (status, body).into_response()
    }
}

pub type Page = Result<maud::Markup, PageError>;

/// The `back` field of an action's form: the page to return to.
#[derive(serde::Deserialize)]
struct Back {
    #[serde(default)]
    back: Option<String>,
}

impl Back {
    fn redirect(&self, fallback: &str) -> Redirect {
        back_to(self.back.as_deref(), fallback)
    }
}

/// Where to go after an action: the `back` field when it is a path on this
/// server, else `fallback`. Never another site (`//evil`, `https://...`).
fn back_to(back: Option<&str>, fallback: &str) -> Redirect {
    Redirect::to(back.filter(|b| is_local_path(b)).unwrap_or(fallback))
}

/// A path on this site and nothing else: browsers drop tabs and newlines
/// from a `Location` (`/\t/evil.example/` becomes `//evil.example/`, another
/// site) and a NUL or newline cannot be a header at all, so only visible
/// ASCII is taken.
pub(in crate::server) fn is_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && path.bytes().all(|b| b.is_ascii_graphic())
}
