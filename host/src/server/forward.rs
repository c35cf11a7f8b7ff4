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
//!
//! A relayed write has a deadline, and is given up as soon as the leader
//! stops refreshing its lead (paused, cut off from the database). Then it
//! was sent and its outcome is unknown: the answer is a 504 saying so, and
//! it is never made here as well (that could make it twice); the next
//! writes are made here. A 503 the leader marks as nothing written
//! (`x-host-not-written`) is made here at once.

use super::AppState;
use crate::client::{NOT_WRITTEN_HEADER, SetAside, WRITER_HEADER};
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

/// How long a relayed write may take, answer included, on top of the wait
/// a long-poll asks for (a claim's `wait_ms`).
const DEADLINE: Duration = Duration::from_secs(10);
/// The longest wait a long-poll may ask for (the claim's bound).
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a relayed write looks whether the leader still leads.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The HTTP client that relays writes, its connections kept between them,
/// and the last leader address it could not reach.
#[derive(Clone)]
pub(super) struct Forwarder {
    client: reqwest::Client,
    unreachable: Arc<SetAside>,
}

impl Default for Forwarder {
    fn default() -> Forwarder {
        Forwarder::new(&crate::tls::ClientTls::default())
    }
}

impl Forwarder {
    /// Trusting what `tls` adds to the system's roots: the leader's
    /// certificate may come from the operator's own CA.
    pub(super) fn new(tls: &crate::tls::ClientTls) -> Forwarder {
        let client = tls
            .builder()
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
    if let Err(error) = s.caller(request.headers(), false) {
        return error.into_response();
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
    let deadline = DEADLINE + long_poll_wait(&parts, &body);
    let relayed = async {
        let answer = relayed.send().await.map_err(Failed::Send)?;
        if answer.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE
            && answer.headers().contains_key(NOT_WRITTEN_HEADER)
        {
            return Err(Failed::NotWritten);
        }
        relay(answer).await.map_err(Failed::Answer)
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(deadline, relayed) => {
            outcome.unwrap_or_else(|_| Err(Failed::Late(deadline)))
        }
        () = stops_leading(&s, &writer) => Err(Failed::Deposed),
    };
    match outcome {
        Ok(mut response) => {
            // Clients that can reach it send their next writes there.
            if let Ok(writer) = writer.parse() {
                response.headers_mut().insert(WRITER_HEADER, writer);
            }
            response
        }
        Err(Failed::Send(error)) if error.is_connect() => {
            // Nothing reached the leader: the write is made here instead.
            tracing::warn!(%writer, %error, "leading replica unreachable; writing here");
            s.forwarder.unreachable.put(&writer);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(Failed::NotWritten) => {
            // It did nothing (most often: it lost its database).
            tracing::warn!(%writer, "the leading replica cannot write; writing here");
            s.forwarder.unreachable.put(&writer);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(failed) => {
            // It got the request and may have made the write: making it
            // here too could make it twice. The next writes are made here.
            s.forwarder.unreachable.put(&writer);
            let why = match failed {
                Failed::Send(error) | Failed::Answer(error) => format!("broke off ({error})"),
                Failed::Late(deadline) => format!("did not answer within {deadline:?}"),
                Failed::Deposed => {
                    "stopped refreshing its lead (paused, or cut off from the database)".into()
                }
                Failed::NotWritten => "wrote nothing".into(),
            };
            tracing::warn!(%writer, %why, method = %parts.method, %path, "a relayed write's outcome is unknown; writing here from now on");
            ApiError::outcome_unknown(format!(
                "the leading replica ({writer}) {why}: this write may or may not have been made there (it was not made here); check before retrying. Writes through this replica are made here from now on"
            ))
            .into_response()
        }
    }
}

/// Why a relayed write has no answer to relay.
enum Failed {
    /// Not sent (a connect error), or sent and then the connection broke.
    Send(reqwest::Error),
    /// The leader answered 503 and says it wrote nothing.
    NotWritten,
    /// Its answer broke off.
    Answer(reqwest::Error),
    /// No answer within the deadline.
    Late(Duration),
    /// The leader stopped refreshing its lead while it had the request.
    Deposed,
}

/// The wait a long-poll asks for (a claim's `wait_ms`), bounded as the
/// claim bounds it; zero for every other write.
fn long_poll_wait(parts: &axum::http::request::Parts, body: &[u8]) -> Duration {
    if !parts.uri.path().ends_with("/claim") {
        return Duration::ZERO;
    }
    let wait_ms = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|body| body.get("wait_ms")?.as_u64())
        .unwrap_or(0);
    Duration::from_millis(wait_ms).min(MAX_WAIT)
}

/// Resolves once this replica no longer forwards to `writer`: the leader
/// row went stale (see `store::postgres::lead`), or another leads.
async fn stops_leading(s: &AppState, writer: &str) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        if s.control.writer_address().as_deref() != Some(writer) {
            return;
        }
    }
}

async fn relay(answer: reqwest::Response) -> Result<Response, reqwest::Error> {
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    Ok(response)
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
