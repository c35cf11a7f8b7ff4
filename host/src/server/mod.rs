//! `host serve`: the HTTP API over the control plane. Handlers are thin: they
//! parse, call `control`, and turn the answer into JSON. One file per resource.
//!
//! Bad input never reaches a 500: bodies are parsed here with the failing
//! field named, and every error leaves as `{"error": ..., "field": ...}`.
//! `error.rs` is the one place an error becomes a status; a 500 tells the
//! client only an id, under which the whole error is logged. Handlers read
//! and write through `Control` only, never the store.
//!
//! Who may call what is `access`'s table: a token acts only within its
//! role and pools, checked before any handler runs.

mod access;
mod deployments;
mod error;
mod events;
mod forward;
mod guard;
mod limits;
mod openapi;
mod pools;
mod runs;
mod sessions;
mod tokens;
mod ui;

pub use access::Caller;
pub use events::limit_event_streams;
pub use limits::{Limits, MAX_BODY, serve};
pub use runs::{Appended, LogPage, TransitionResponse};
pub use sessions::Sessions;
pub use tokens::Whoami;

use crate::control::Control;
use crate::error::ApiError;
use crate::metrics::{ServerMetrics, StoredState};
use axum::extract::MatchedPath;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub control: Control,
    /// The bootstrap admin token (`HOST_API_TOKEN`); without it the server
    /// is open to everyone, and makes no named tokens.
    token: Option<Arc<str>>,
    /// The UI's logins (only with a token).
    sessions: Arc<Sessions>,
    /// Requests arrive over TLS, so cookies are `Secure`. Nothing sets it
    /// yet: the server speaks plain HTTP (a proxy in front that ends TLS
    /// would set it, once there is a flag for it).
    over_tls: bool,
    metrics: Arc<ServerMetrics>,
    forwarder: forward::Forwarder,
    /// Bound to loopback: only loopback names in `Host` (DNS rebinding).
    loopback_only: bool,
    /// Signs the UI's CSRF tokens.
    csrf_key: Arc<[u8; 32]>,
}

impl AppState {
    pub fn new(control: Control, token: Option<String>) -> AppState {
        let token: Option<Arc<str>> = token.filter(|t| !t.is_empty()).map(Arc::from);
        AppState {
            control,
            sessions: Arc::default(),
            over_tls: false,
            metrics: Arc::default(),
            forwarder: forward::Forwarder::default(),
            loopback_only: false,
            csrf_key: Arc::new(csrf_key(token.as_deref())),
            token,
        }
    }

    /// The address the server listens on: bound to loopback, it answers
    /// only requests naming a loopback host.
    pub fn bound_to(mut self, local: std::net::SocketAddr) -> AppState {
        self.loopback_only = local.ip().is_loopback();
        self
    }

    /// Writes relayed to a leading replica trust what `tls` adds.
    pub fn forwarding_with(mut self, tls: &crate::tls::ClientTls) -> AppState {
        self.forwarder = forward::Forwarder::new(tls);
        self
    }

    /// Cookies it sets are `Secure`: for a server reached over TLS.
    pub fn served_over_tls(mut self, over_tls: bool) -> AppState {
        self.over_tls = over_tls;
        self
    }

    /// Who sends a request: the holder of the bearer token (the bootstrap
    /// token, or a live named token), or where `cookie` allows, of a live UI
    /// session whose token is still there; anybody when the server has no
    /// token. 401 otherwise; a store that cannot be read is its own error
    /// (a 503 says nothing of the token).
    fn caller(&self, headers: &HeaderMap, cookie: bool) -> Result<Caller, ApiError> {
        let Some(token) = &self.token else {
            return Ok(Caller::open());
        };
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(given) = bearer {
            if crate::secret::same_text(given, token) {
                return Ok(Caller::bootstrap());
            }
            if let Some(verified) = self.control.verify_token(given)? {
                return Ok(Caller::named(verified));
            }
        }
        if cookie
            && let Some(id) = ui::session_cookie(headers)
            && let Some(caller) = self.sessions.caller(id)
        {
            let holds = match (&caller.token, &caller.hash) {
                (Some(name), Some(hash)) => self.control.token_holds(name, hash)?,
                _ => true,
            };
            if holds {
                return Ok(caller);
            }
            self.sessions.end(id);
        }
        Err(ApiError::unauthorized())
    }

    /// The CSRF token of the UI's forms for this request's session (none
    /// without a token): only a page of this server, read by the browser
    /// that holds the session, has it.
    fn csrf_token(&self, headers: &HeaderMap) -> String {
        let session = ui::session_cookie(headers).unwrap_or("");
        crate::secret::to_hex(&crate::secret::hmac_sha256(
            self.csrf_key.as_ref(),
            session.as_bytes(),
        ))
    }
}

/// Derived from the API token when there is one, so that every replica and
/// a restarted server accept the forms of the pages they served; random
/// otherwise (a form outlives only the server that rendered it).
fn csrf_key(token: Option<&str>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let seed = match token {
        Some(token) => format!("host-ui-csrf\0{token}"),
        None => format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()),
    };
    Sha256::digest(seed.as_bytes()).into()
}

/// A JSON object body whose parse errors name the field (`limit`,
/// `schedules[0].cron`). serde would fill a struct from an array too; the
/// API takes objects only, as its document says.
pub struct Body<T>(pub T);

/// A JSON array body, each element parsed like a [`Body`].
pub struct List<T>(pub Vec<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_body(req, state, b'{', "object").await.map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for List<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_body(req, state, b'[', "array").await.map(List)
    }
}

async fn parse_body<S: Send + Sync, T: DeserializeOwned>(
    req: Request,
    state: &S,
    opening: u8,
    kind: &str,
) -> Result<T, ApiError> {
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                limits::body_too_large()
            } else {
                ApiError::bad_request("body", format!("cannot read the request body: {e}"))
            }
        })?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != opening) {
        return Err(ApiError::bad_request(
            "body",
            format!("body: must be a JSON {kind}"),
        ));
    }
    let mut value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("body", format!("body: {e}")))?;
    integral_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::bad_request(&field, format!("{field}: {}", e.into_inner()))
    })
}

/// Fields holding the user's own values, passed on as given: a flow
/// parameter `1.0` stays a float.
const FREE_FORM: [&str; 3] = ["parameters", "job_variables", "base_job_template"];

/// JSON has one number type: `830.0` is the integer 830 to JSON Schema and
/// to most clients' encoders, so the API's own integer fields accept it.
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53 a float holds every integer exactly.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields
            .iter_mut()
            .filter(|(key, _)| !FREE_FORM.contains(&key.as_str()))
            .for_each(|(_, field)| integral_floats_as_integers(field)),
        _ => {}
    }
}

/// Query strings, with the same kind of error.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        parse_query(query).map(Params)
    }
}

/// Query values stay strings; numeric fields parse them with [`number`].
pub(super) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut object = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        // A repeated key is its values joined by commas (`state=A&state=B`
        // is `state=A,B`), not the last one alone.
        let value = match object.remove(key.as_ref()) {
            Some(serde_json::Value::String(earlier)) => format!("{earlier},{value}"),
            _ => value.into_owned(),
        };
        object.insert(key.into_owned(), serde_json::Value::String(value));
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(|e| {
        let field = e.path().to_string();
        ApiError::bad_request(&field, format!("{field}: {}", e.into_inner()))
    })
}

/// `deserialize_with` for numbers that arrive as query-string text.
pub fn number<'de, D, N>(deserializer: D) -> Result<N, D::Error>
where
    D: serde::Deserializer<'de>,
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    let text: String = serde::Deserialize::deserialize(deserializer)?;
    text.parse()
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a number: {e}")))
}

/// Like [`number`], for optional parameters.
pub fn optional_number<'de, D, N>(deserializer: D) -> Result<Option<N>, D::Error>
where
    D: serde::Deserializer<'de>,
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    number(deserializer).map(Some)
}

/// `true` or `false` as query-string text.
pub fn optional_bool<'de, D>(deserializer: D) -> Result<Option<bool>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text: String = serde::Deserialize::deserialize(deserializer)?;
    match text.as_str() {
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        _ => Err(serde::de::Error::custom(format!(
            "{text:?} is not true or false"
        ))),
    }
}

/// `ok`, or `degraded` with why (reads work, writes are refused).
#[utoipa::path(
    get,
    operation_id = "health",
    path = "/api/health",
    tag = "health",
    summary = "Liveness and storage health; never needs the token",
    security(()),
    responses((status = 200, description = "`ok`, or `degraded` with the reason. On a shared database also `leading` (this replica holds the lead), `database` (`ok`, or `unreachable`: it gave up the lead and answers 503), `writes` (`here`, `forwarded` to `writes_forwarded_to`, the leading replica, or `refused` while the database is unreachable) and `writer` (the leading replica's address, when the replicas follow one)", body = Object))
)]
async fn health(State(s): State<AppState>) -> Json<serde_json::Value> {
    let version = env!("CARGO_PKG_VERSION");
    let mut health = match s.control.storage_health() {
        crate::store::Health::Ok => serde_json::json!({"status": "ok", "version": version}),
        crate::store::Health::Degraded(reason) => {
            serde_json::json!({"status": "degraded", "reason": reason, "version": version})
        }
    };
    if let Some(trouble) = s.control.task_trouble() {
        health["status"] = "degraded".into();
        let reason = match health["reason"].as_str() {
            Some(storage) => format!("{storage}; {trouble}"),
            None => trouble,
        };
        health["reason"] = reason.into();
    }
    let writer = s.control.writer_address();
    if let Some(replica) = s.control.replica() {
        health["leading"] = replica.leading.into();
        health["database"] = if replica.database_lost.is_some() {
            "unreachable".into()
        } else {
            "ok".into()
        };
        // Where this replica's API writes are made: here, at the leading
        // replica it forwards them to, or nowhere while it lost its database.
        health["writes"] = match (&replica.database_lost, &writer) {
            (Some(_), _) => "refused",
            (None, Some(_)) => "forwarded",
            (None, None) => "here",
        }
        .into();
        // The writer, as the replicas agree on it: clients that write to it
        // directly give up a request once their server names another.
        let named = writer
            .clone()
            .or_else(|| replica.advertised.filter(|_| replica.leading));
        if let Some(named) = named {
            health["writer"] = named.into();
        }
    }
    if let Some(writer) = writer {
        health["writes_forwarded_to"] = writer.into();
    }
    Json(health)
}

/// Prometheus text: counters kept as requests pass, gauges read from the store.
async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let runs = s.control.run_counts()?;
    let workers_online = s
        .control
        .pools()?
        .into_iter()
        .map(|view| (view.pool.name, view.workers_online as u64))
        .collect();
    let text = s.metrics.encode(StoredState {
        runs,
        workers_online,
    });
    Ok(crate::metrics::response(text))
}

/// Counts every answered request by its route template (never the raw path,
/// which would make one series per run id).
async fn count_request(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    s.metrics
        .request(&method, &route, response.status().as_u16());
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/openapi.json")
}

/// The whole API and the web UI. Everything but health, the login form and
/// the UI's two assets needs a token when one is set, and each route the
/// role `access` gives it.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .merge(pools::routes())
        .merge(deployments::routes())
        .merge(runs::routes())
        .merge(events::routes())
        .merge(tokens::routes())
        .route("/api/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::enforce,
        ));
    Router::new()
        .route("/api/health", get(health))
        .merge(protected)
        .merge(ui::routes(state.clone()))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::writes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(middleware::map_response(guard::no_framing))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}
