//! API writes through a replica that does not lead go to the one that does.
//!
//! Every replica can write (each batch takes the database's write lock, so
//! every check holds, see `store::postgres`), but batches of several
//! writers take turns at that lock and each finds the others' changes
//! uncached. One writer taking everyone's requests makes bigger batches
//! from a warm cache. So a replica that knows where the leading replica's
//! API is sends its API writes there and relays the answer; when that
//! replica cannot be reached, it writes itself, as with one server. Reads,
//! event streams and the web UI stay where they arrive.

use super::AppState;
use crate::client::{SetAside, WRITER_HEADER};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// Marks a forwarded request: it is made where it arrives, never sent on.
const FORWARDED: &str = "x-host-forwarded";

/// A leader address that could not be reached is not tried again for this
/// long: a wrong `--advertise-url` costs one failed connect per interval,
/// not one per write.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(10);

/// The HTTP client that relays writes, its connections kept between them,
/// and the last leader address it could not reach.
#[derive(Clone)]
pub(super) struct Forwarder {
    client: reqwest::Client,
    unreachable: Arc<SetAside>,
}

impl Default for Forwarder {
    fn default() -> Forwarder {
        let client = reqwest::Client::builder()
            // A leader that is gone refuses at once; one that is unreachable
            // must not hold the write long before it is made here.
            .connect_timeout(Duration::from_secs(2))
            // Under the leader's header timeout: never a write on a
            // connection it is closing.
            .pool_idle_timeout(Duration::from_secs(20))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Forwarder {
            client,
            unreachable: Arc::new(SetAside::new(RETRY_UNREACHABLE)),
        }
    }
}

pub(super) async fn writes(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let forwardable = writes
        && request.uri().path().starts_with("/api/")
        && !request.headers().contains_key(FORWARDED);
    let writer = forwardable.then(|| s.control.writer_address()).flatten();
    let Some(writer) = writer.filter(|writer| !s.forwarder.unreachable.holds(writer)) else {
        return next.run(request).await;
    };
    // The body is buffered to be relayed: only for whoever may write.
    // The leader checks the token again; this check keeps anyone else
    // from making this replica read and hold a body.
    if !s.authorized(request.headers(), false) {
        return ApiError::unauthorized().into_response();
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, super::MAX_BODY).await {
        Ok(body) => body,
        Err(e) if super::limits::too_large(&e) => {
            return super::limits::body_too_large().into_response();
        }
        Err(e) => {
            return ApiError::bad_request("body", format!("body: cannot be read ({e})"))
                .into_response();
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut relayed = s
        .forwarder
        .client
        .request(parts.method.clone(), format!("{writer}{path}"))
        .header(FORWARDED, "1")
        .body(body.clone());
    for (name, value) in &parts.headers {
        // Where the request came from was checked here (`guard`); against
        // the leader's own address it would look like another origin.
        let checked = name == header::ORIGIN || name.as_str().starts_with("sec-fetch-");
        if !hop_by_hop(name) && name != header::HOST && !checked {
            relayed = relayed.header(name, value);
        }
    }
    match relayed.send().await {
        Ok(answer) => {
            let mut response = relay(answer).await;
            // Clients that can reach it send their next writes there.
            if let Ok(writer) = writer.parse() {
                response.headers_mut().insert(WRITER_HEADER, writer);
            }
            response
        }
        Err(error) if error.is_connect() => {
            // Nothing reached the leader: the write is made here instead.
            tracing::warn!(%writer, %error, "leading replica unreachable; writing here");
            s.forwarder.unreachable.put(&writer);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(error) => ApiError::unavailable(format!(
            "the leading replica ({writer}) did not answer ({error}); retry"
        ))
        .into_response(),
    }
}

async fn relay(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(error) => {
            return ApiError::unavailable(format!(
                "the leading replica's answer broke off ({error}); retry"
            ))
            .into_response();
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// Headers that describe one connection, not the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}
