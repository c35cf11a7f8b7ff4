//! Who may do what. Invariant: **a token acts only within its role and
//! pools.** Every route's need is in one table, [`ROUTES`], read by the
//! API's middleware ([`enforce`]), the UI's (`ui::auth::require_login`) and
//! the UI's pages (`ui::view::may`, so a page offers only what its reader
//! may do). A route missing from the table needs the admin role; a unit
//! test and `tests/all/tokens.rs` hold every documented route to an entry.
//!
//! - `admin` (the bootstrap token `HOST_API_TOKEN`, a named admin token,
//!   or anybody on a server with no token at all): everything.
//! - `viewer`: every read (each `GET`), and nothing else.
//! - `deployer`: the reads, and deployments and their runs (create,
//!   update, delete, run, cancel) in its pools.
//! - `worker`: the reads, and claims, heartbeats, states and logs in its
//!   pools, under its own name.
//!
//! The pool comes from the route's `{pool}`, or from the record the route
//! names (a run's pool, a deployment's), or for `PUT /api/deployments` from
//! the body and the deployment it replaces (both must be the token's). A
//! worker acts under its token's name: the body's `worker` (claims, states)
//! or `name` (heartbeats) must be that name or is left out, when it is
//! filled in with it; another name is refused (403 naming the field), not
//! silently replaced, so a misconfigured worker learns at its first call.
//! A worker token may not `force` a state past the run's holder.
//!
//! A token's pools scope what it changes, not what it reads: each role
//! reads everything a viewer does. Refusals name what is missing: `role`,
//! `pool`, or the identity field; an unknown or revoked token is 401.

use super::AppState;
use crate::control::{Scope, Verified};
use crate::error::ApiError;
use crate::model::Role;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Who sends a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The named token's name; `None` for the bootstrap token, or anybody
    /// on a server without a token.
    pub token: Option<String>,
    pub role: Role,
    /// The pools a deployer or worker token covers.
    pub pools: Vec<String>,
    /// The named token's stored hash: a UI session checks that it is still
    /// there (not revoked) at every request.
    pub hash: Option<String>,
}

impl Caller {
    /// Anybody, on a server with no token at all.
    pub fn open() -> Caller {
        Caller {
            token: None,
            role: Role::Admin,
            pools: Vec::new(),
            hash: None,
        }
    }

    /// The holder of `HOST_API_TOKEN`.
    pub fn bootstrap() -> Caller {
        Caller::open()
    }

    pub fn named(verified: Verified) -> Caller {
        Caller {
            token: Some(verified.token.name),
            role: verified.token.role,
            pools: verified.token.pools,
            hash: Some(verified.hash),
        }
    }

    /// What this caller's writes may touch, for the checks a write makes
    /// inside its transaction.
    pub fn scope(&self) -> Scope {
        Scope {
            pools: self.role.scoped_to_pools().then(|| self.pools.clone()),
            worker: (self.role == Role::Worker).then(|| self.label().to_string()),
        }
    }

    fn label(&self) -> &str {
        self.token.as_deref().unwrap_or("HOST_API_TOKEN")
    }

    fn covers(&self, pool: &str) -> bool {
        !self.role.scoped_to_pools() || self.pools.iter().any(|p| p == pool)
    }

    /// Whether this caller may use a route on `pool` (as far as it is known
    /// without the request: a page showing or hiding an action).
    pub fn may(&self, need: Need, pool: Option<&str>) -> bool {
        let covered = pool.is_none_or(|pool| self.covers(pool));
        match (need, self.role) {
            (_, Role::Admin) | (Need::Read, _) => true,
            (Need::Deploy(_), Role::Deployer) => covered,
            (Need::Work(..), Role::Worker) => covered,
            _ => false,
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any token: every role reads.
    Read,
    /// An admin token.
    Admin,
    /// A deployer token of the pool (or an admin's).
    Deploy(Pool),
    /// A worker token of the pool, acting as itself (or an admin's).
    Work(Pool, Identity),
}

impl Need {
    /// The roles that may use a route (on a pool of their own), for the
    /// API document.
    pub fn roles(self) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|role| {
                let caller = Caller {
                    role: *role,
                    ..Caller::open()
                };
                caller.may(self, None)
            })
            .collect()
    }
}

/// Where a route's pool comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The `{pool}` of the path.
    Path,
    /// The pool of the run `{id}`.
    Run,
    /// The pool of the deployment `{flow}/{name}`.
    Deployment,
    /// The body's `pool`, and the pool of the deployment the body's
    /// `flow`/`name` replaces, if any.
    Body,
}

/// The body field that names the worker acting, if the route has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    None,
    /// This field of the JSON body names the worker.
    Body(&'static str),
}

use Identity::Body as As;
use Need::{Admin, Deploy, Read, Work};

/// Every route and what it needs: the API's and the UI's.
pub const ROUTES: &[(&str, &str, Need)] = &[
    ("GET", "/api/openapi.json", Read),
    ("GET", "/metrics", Read),
    ("GET", "/api/events", Read),
    ("GET", "/api/whoami", Read),
    ("GET", "/api/tokens", Admin),
    ("POST", "/api/tokens", Admin),
    ("DELETE", "/api/tokens/{name}", Admin),
    ("GET", "/api/work-pools", Read),
    ("POST", "/api/work-pools", Admin),
    ("GET", "/api/work-pools/{pool}", Read),
    ("PATCH", "/api/work-pools/{pool}", Admin),
    ("DELETE", "/api/work-pools/{pool}", Admin),
    ("GET", "/api/work-pools/{pool}/upcoming", Read),
    ("GET", "/api/work-pools/{pool}/queues", Read),
    ("POST", "/api/work-pools/{pool}/queues", Admin),
    ("GET", "/api/work-pools/{pool}/queues/{queue}", Read),
    ("PATCH", "/api/work-pools/{pool}/queues/{queue}", Admin),
    ("DELETE", "/api/work-pools/{pool}/queues/{queue}", Admin),
    ("GET", "/api/work-pools/{pool}/workers", Read),
    (
        "POST",
        "/api/work-pools/{pool}/workers/heartbeat",
        Work(Pool::Path, As("name")),
    ),
    ("GET", "/api/work-pools/{pool}/workers/{worker}/runs", Read),
    (
        "POST",
        "/api/work-pools/{pool}/claim",
        Work(Pool::Path, As("worker")),
    ),
    ("GET", "/api/pool-types", Read),
    (
        "GET",
        "/api/pool-types/{type}/default-base-job-template",
        Read,
    ),
    ("GET", "/api/deployments", Read),
    ("PUT", "/api/deployments", Deploy(Pool::Body)),
    ("GET", "/api/deployments/{flow}/{name}", Read),
    (
        "DELETE",
        "/api/deployments/{flow}/{name}",
        Deploy(Pool::Deployment),
    ),
    (
        "POST",
        "/api/deployments/{flow}/{name}/runs",
        Deploy(Pool::Deployment),
    ),
    (
        "POST",
        "/api/deployments/{flow}/{name}/pause",
        Deploy(Pool::Deployment),
    ),
    (
        "POST",
        "/api/deployments/{flow}/{name}/resume",
        Deploy(Pool::Deployment),
    ),
    (
        "PATCH",
        "/api/deployments/{flow}/{name}/schedules/{index}",
        Deploy(Pool::Deployment),
    ),
    ("GET", "/api/flow-runs", Read),
    ("GET", "/api/flow-runs/{id}", Read),
    (
        "POST",
        "/api/flow-runs/{id}/state",
        Work(Pool::Run, As("worker")),
    ),
    ("POST", "/api/flow-runs/{id}/cancel", Deploy(Pool::Run)),
    // Retry and delete are a deployer's, like cancel: its pools' runs.
    ("POST", "/api/flow-runs/{id}/retry", Deploy(Pool::Run)),
    ("DELETE", "/api/flow-runs/{id}", Deploy(Pool::Run)),
    ("GET", "/api/flow-runs/{id}/logs/download", Read),
    ("GET", "/api/flow-runs/{id}/logs", Read),
    (
        "POST",
        "/api/flow-runs/{id}/logs",
        Work(Pool::Run, Identity::None),
    ),
    // The web UI: its pages read, its forms act as the API's routes do.
    ("GET", "/", Read),
    ("GET", "/pools/{name}", Read),
    ("GET", "/deployments", Read),
    ("GET", "/deployments/{flow}/{name}", Read),
    ("GET", "/runs", Read),
    ("GET", "/runs/{id}", Read),
    ("GET", "/plugins", Read),
    ("POST", UI_CREATE_POOL, Admin),
    ("POST", UI_PAUSE_POOL, Admin),
    ("POST", UI_RESUME_POOL, Admin),
    ("POST", UI_DELETE_POOL, Admin),
    ("POST", UI_RUN_DEPLOYMENT, Deploy(Pool::Deployment)),
    ("POST", UI_CANCEL_RUN, Deploy(Pool::Run)),
    ("POST", UI_RETRY_RUN, Deploy(Pool::Run)),
    ("POST", UI_DELETE_RUN, Deploy(Pool::Run)),
    ("POST", UI_PAUSE_DEPLOYMENT, Deploy(Pool::Deployment)),
    ("POST", UI_RESUME_DEPLOYMENT, Deploy(Pool::Deployment)),
    ("POST", UI_DELETE_DEPLOYMENT, Deploy(Pool::Deployment)),
    ("POST", UI_UPDATE_SCHEDULE, Deploy(Pool::Deployment)),
    ("POST", UI_UPDATE_POOL, Admin),
    // Queues, like their API, are an admin's.
    ("POST", UI_CREATE_QUEUE, Admin),
    ("POST", UI_UPDATE_QUEUE, Admin),
    ("POST", UI_PAUSE_QUEUE, Admin),
    ("POST", UI_RESUME_QUEUE, Admin),
];

pub const UI_CREATE_POOL: &str = "/ui/pools";
pub const UI_PAUSE_POOL: &str = "/ui/pools/{name}/pause";
pub const UI_RESUME_POOL: &str = "/ui/pools/{name}/resume";
pub const UI_DELETE_POOL: &str = "/ui/pools/{name}/delete";
pub const UI_RUN_DEPLOYMENT: &str = "/ui/deployments/{flow}/{name}/run";
pub const UI_CANCEL_RUN: &str = "/ui/runs/{id}/cancel";
pub const UI_RETRY_RUN: &str = "/ui/runs/{id}/retry";
pub const UI_DELETE_RUN: &str = "/ui/runs/{id}/delete";
pub const UI_PAUSE_DEPLOYMENT: &str = "/ui/deployments/{flow}/{name}/pause";
pub const UI_RESUME_DEPLOYMENT: &str = "/ui/deployments/{flow}/{name}/resume";
pub const UI_DELETE_DEPLOYMENT: &str = "/ui/deployments/{flow}/{name}/delete";
pub const UI_UPDATE_SCHEDULE: &str = "/ui/deployments/{flow}/{name}/schedules/{index}";
pub const UI_UPDATE_POOL: &str = "/ui/pools/{name}/update";
// `{name}` like the pool routes beside them: one name per path segment.
pub const UI_CREATE_QUEUE: &str = "/ui/pools/{name}/queues";
pub const UI_UPDATE_QUEUE: &str = "/ui/pools/{name}/queues/{queue}/update";
pub const UI_PAUSE_QUEUE: &str = "/ui/pools/{name}/queues/{queue}/pause";
pub const UI_RESUME_QUEUE: &str = "/ui/pools/{name}/queues/{queue}/resume";

/// What `method` on the route `template` needs; admin for a route the
/// table forgot (the safe side).
pub fn need(method: &str, template: &str) -> Need {
    ROUTES
        .iter()
        .find(|(m, t, _)| *m == method && *t == template)
        .map_or(Admin, |(_, _, need)| *need)
}

/// Why a request was refused: what the token lacks.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("role: {route} needs {needs}; token `{token}` is a {role}")]
    Role {
        route: String,
        needs: &'static str,
        token: String,
        role: Role,
    },
    #[error("pool: token `{token}` covers {covered}, not pool `{pool}`")]
    Pool {
        token: String,
        covered: String,
        pool: String,
    },
    #[error("{field}: token `{token}` acts as worker `{token}` only, not `{given}`")]
    Identity {
        field: &'static str,
        token: String,
        given: String,
    },
    #[error("force: only an admin overrides the worker holding a run; token `{token}` is a worker")]
    Force { token: String },
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        let message = denied.to_string();
        let field = match &denied {
            Denied::Role { .. } => "role",
            Denied::Pool { .. } => "pool",
            Denied::Identity { field, .. } => field,
            Denied::Force { .. } => "force",
        };
        ApiError::forbidden(field, message)
    }
}

/// The API's middleware: who asks (401 when nobody known), then whether the
/// route lets them (403 naming what is missing). Handlers find the
/// [`Caller`] among the request's extensions.
pub(super) async fn enforce(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    // The session cookie counts only for the UI's own reads (its event
    // stream, a run's log lines): a browser sends it along with any page's form.
    let cookie =
        super::guard::is_safe(request.method()) && super::guard::same_origin(headers).is_ok();
    let caller = match s.caller(headers, cookie) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    match admit(&s, &caller, request).await {
        Ok(mut request) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// The request, if `caller` may send it; its body is read only for the few
/// routes whose pool or worker is in it, and only for callers who are no admin.
pub(super) async fn admit(
    s: &AppState,
    caller: &Caller,
    request: Request,
) -> Result<Request, ApiError> {
    if caller.role == Role::Admin {
        return Ok(request);
    }
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = request.method().clone();
    // A HEAD is the GET of the same route without its body.
    let asked = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let need = need(asked, &template);
    let role_denied = |needs| Denied::Role {
        route: format!("{method} {template}"),
        needs,
        token: caller.label().to_string(),
        role: caller.role,
    };
    let (pool, identity) = match (need, caller.role) {
        (Read, _) => return Ok(request),
        (Deploy(pool), Role::Deployer) => (pool, Identity::None),
        (Work(pool, identity), Role::Worker) => (pool, identity),
        (Admin, _) => return Err(role_denied("an admin token").into()),
        (Deploy(_), _) => return Err(role_denied("a deployer token (or an admin's)").into()),
        (Work(..), _) => return Err(role_denied("a worker token (or an admin's)").into()),
    };
    let (mut parts, body) = request.into_parts();
    let params: Vec<(String, String)> = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let reads_body = pool == Pool::Body || identity != Identity::None;
    // The body as checked (a JSON object), or as it came.
    let (mut json, mut kept, mut unread) = (None, None, Some(body));
    if reads_body && let Some(body) = unread.take() {
        let bytes = read_body(body).await?;
        // A body that is no JSON object goes on as it came: its handler
        // refuses it (400), and nothing is done.
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(fields)) => json = Some(fields),
            _ => kept = Some(bytes),
        }
    }
    let pools = match pool {
        Pool::Path => vec![param("pool").to_string()],
        Pool::Run => vec![s.control.run(param("id"))?.pool],
        Pool::Deployment => {
            let name = format!("{}/{}", param("flow"), param("name"));
            vec![s.control.deployment(&name)?.pool]
        }
        Pool::Body => body_pools(s, json.as_ref())?,
    };
    for pool in pools {
        if !caller.covers(&pool) {
            return Err(Denied::Pool {
                token: caller.label().to_string(),
                covered: covered(caller),
                pool,
            }
            .into());
        }
    }
    if let (Identity::Body(field), Some(fields)) = (identity, json.as_mut()) {
        acting_as(caller, field, fields)?;
    }
    let body = match (json, kept, unread) {
        // What was checked is what the handler reads.
        (Some(fields), _, _) => {
            let bytes = serde_json::to_vec(&Value::Object(fields))
                .map_err(|e| ApiError::internal(format!("cannot write the body again: {e}")))?;
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            axum::body::Body::from(bytes)
        }
        (None, Some(bytes), _) => axum::body::Body::from(bytes),
        (None, None, Some(body)) => body,
        (None, None, None) => axum::body::Body::empty(),
    };
    Ok(Request::from_parts(parts, body))
}

async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, super::MAX_BODY)
        .await
        .map_err(|e| {
            if super::limits::too_large(&e) {
                super::limits::body_too_large()
            } else {
                ApiError::bad_request("body", format!("body: cannot be read ({e})"))
            }
        })
}

/// A deployment's pools as a body says: its new one, and the one it has now.
fn body_pools(
    s: &AppState,
    json: Option<&serde_json::Map<String, Value>>,
) -> Result<Vec<String>, ApiError> {
    let text = |field| json.and_then(|j| j.get(field)).and_then(Value::as_str);
    let pool = text("pool")
        .ok_or_else(|| ApiError::bad_request("pool", "pool: required, the name of a work pool"))?;
    let mut pools = vec![pool.to_string()];
    if let (Some(flow), Some(name)) = (text("flow"), text("name")) {
        match s.control.deployment(&format!("{flow}/{name}")) {
            Ok(existing) => pools.push(existing.pool),
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pools)
}

/// A worker's body names the token's worker, or nobody (then it does).
fn acting_as(
    caller: &Caller,
    field: &'static str,
    fields: &mut serde_json::Map<String, Value>,
) -> Result<(), ApiError> {
    let name = caller.label().to_string();
    if fields.get("force").and_then(Value::as_bool) == Some(true) {
        return Err(Denied::Force { token: name }.into());
    }
    match fields.get(field) {
        None | Some(Value::Null) => {
            fields.insert(field.into(), Value::String(name));
            Ok(())
        }
        Some(Value::String(given)) if *given == name => Ok(()),
        Some(given) => Err(Denied::Identity {
            field,
            given: given
                .as_str()
                .map_or_else(|| given.to_string(), String::from),
            token: name,
        }
        .into()),
    }
}

fn covered(caller: &Caller) -> String {
    let pools: Vec<String> = caller.pools.iter().map(|p| format!("`{p}`")).collect();
    format!("pools {}", pools.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route the document states and the table forgot would be refused to
    /// everyone but admins: a forgotten route is found here, not by users.
    #[test]
    fn every_documented_operation_has_its_entry() {
        let document = super::super::openapi::generated();
        let paths = document["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, _) in item.as_object().expect("path item") {
                let method = method.to_ascii_uppercase();
                if path == "/api/health" {
                    continue;
                }
                assert!(
                    ROUTES.iter().any(|(m, t, _)| *m == method && t == path),
                    "{method} {path} is not in access::ROUTES"
                );
            }
        }
    }

    #[test]
    fn each_role_gets_what_it_is_for() {
        assert_eq!(Read.roles(), Role::ALL);
        assert_eq!(Admin.roles(), [Role::Admin]);
        assert_eq!(Deploy(Pool::Run).roles(), [Role::Admin, Role::Deployer]);
        let work = Work(Pool::Path, Identity::None);
        assert_eq!(work.roles(), [Role::Admin, Role::Worker]);
        let worker = Caller {
            token: Some("w1".into()),
            role: Role::Worker,
            pools: vec!["p1".into()],
            hash: None,
        };
        assert!(worker.may(work, Some("p1")) && !worker.may(work, Some("p2")));
        assert!(!worker.may(Deploy(Pool::Run), Some("p1")));
    }

    #[test]
    fn a_worker_acts_under_its_own_name() {
        let worker = Caller {
            token: Some("w1".into()),
            role: Role::Worker,
            pools: vec!["p1".into()],
            hash: None,
        };
        let mut body = serde_json::Map::new();
        acting_as(&worker, "worker", &mut body).expect("filled in");
        assert_eq!(body["worker"], "w1");
        acting_as(&worker, "worker", &mut body).expect("its own");
        body.insert("worker".into(), "w2".into());
        let refused = acting_as(&worker, "worker", &mut body).expect_err("another");
        assert_eq!(refused.field.as_deref(), Some("worker"));
        assert!(refused.message.contains("`w2`"), "{}", refused.message);
        body.insert("worker".into(), "w1".into());
        body.insert("force".into(), true.into());
        let forced = acting_as(&worker, "worker", &mut body).expect_err("force");
        assert_eq!(forced.field.as_deref(), Some("force"));
    }
}
