//! `GET /api/events`: the change feed as Server-Sent Events. Each event's
//! `data` is the changed record (`run`, `run_deleted`, `log`, `worker`,
//! `pool`, `pool_deleted`); a reconnecting client sends `Last-Event-ID` and gets what
//! it missed, or a `reset` event when that is gone (reload, then go on).

use super::{AppState, Params};
use crate::events::{Event, Start, Subscription};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Streams open now, and how many may be: each holds a descriptor for its
/// life, and past the process's open-file limit the server could accept
/// nothing, health included. One past the cap is a 503 saying so.
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);
static MAX_STREAMS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_STREAMS);
const DEFAULT_MAX_STREAMS: usize = 256;

/// Sets the cap from the open-file limit: a quarter of the descriptors,
/// leaving the rest to requests, the database and the data files.
pub fn limit_event_streams(open_files: u64) {
    let cap = usize::try_from(open_files / 4).unwrap_or(usize::MAX);
    MAX_STREAMS.store(cap.clamp(16, 100_000), Ordering::Relaxed);
}

/// One open stream, counted until dropped.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<StreamSlot> {
        let max = MAX_STREAMS.load(Ordering::Relaxed);
        OPEN_STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/events", get(stream))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct Filter {
    /// Only this run's state changes and log lines.
    #[serde(default)]
    flow_run: Option<String>,
    /// Only this pool's runs, workers and pool changes.
    #[serde(default)]
    pool: Option<String>,
}

impl Filter {
    fn admits(&self, event: &Event) -> bool {
        let change = &event.change;
        self.flow_run
            .as_deref()
            .is_none_or(|id| change.flow_run_id() == Some(id))
            && self
                .pool
                .as_deref()
                .is_none_or(|pool| change.pool() == Some(pool))
    }
}

#[utoipa::path(
    get,
    operation_id = "events_stream",
    path = "/api/events",
    tag = "events",
    summary = "Live changes as Server-Sent Events; resumes after Last-Event-ID",
    params(Filter, ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received")),
    responses(
        (status = 200, description = "An endless text/event-stream", content_type = "text/event-stream", body = String),
        crate::server::openapi::Errors
    )
)]
async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    Params(filter): Params<Filter>,
) -> Response {
    let Some(slot) = StreamSlot::take() else {
        return crate::error::ApiError::unavailable(format!(
            "too many event streams open ({}); close some, or raise the server's open-file limit (LimitNOFILE)",
            MAX_STREAMS.load(Ordering::Relaxed)
        ))
        .into_response();
    };
    let start = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map_or(Start::Now, |id| Start::After(id.to_string()));
    // Waiting first: on a shared database the server then follows the
    // others' changes as they commit, from before this subscription on.
    let waiting = s.control.waiting();
    let events = s.control.events();
    let Subscription {
        missed,
        live,
        reset,
    } = events.subscribe(start);
    let reader = Reader {
        filter,
        pending: missed.into(),
        live,
        reset,
        last_write: Instant::now() - MIN_GAP,
        _waiting: waiting,
        _slot: slot,
    };
    let body = futures_util::stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), reader))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

struct Reader {
    filter: Filter,
    pending: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    reset: bool,
    last_write: Instant,
    /// For as long as the stream is read.
    _waiting: crate::store::Waiting,
    _slot: StreamSlot,
}

/// Events written in one chunk at most.
const BATCH: usize = 1024;
/// A busy stream writes at most this often, sending what piled up in one
/// chunk: with 100 streams open, one write per event per stream would cost
/// the server more than the changes themselves. An idle stream's first
/// event goes out at once.
const MIN_GAP: Duration = Duration::from_millis(25);
/// A comment line this often keeps idle connections (and proxies) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

impl Reader {
    /// The next piece of the stream: every admitted event that is ready,
    /// or a keep-alive comment; `None` once the server shuts down.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let mut frames = Vec::new();
            if std::mem::take(&mut self.reset) {
                frames.push(Bytes::from_static(b"event: reset\ndata: {}\n\n"));
            }
            if self.pending.is_empty() && frames.is_empty() {
                match tokio::time::timeout(KEEP_ALIVE, self.live.recv()).await {
                    Err(_) => return Some(Bytes::from_static(b": keep-alive\n\n")),
                    Ok(received) => self.take(received)?,
                }
                let since = self.last_write.elapsed();
                if since < MIN_GAP {
                    tokio::time::sleep(MIN_GAP - since).await;
                }
            }
            while self.pending.len() < BATCH {
                match self.live.try_recv() {
                    Err(TryRecvError::Empty) => break,
                    received => self.take(received.map_err(|e| match e {
                        TryRecvError::Lagged(n) => RecvError::Lagged(n),
                        _ => RecvError::Closed,
                    }))?,
                }
            }
            for event in self.pending.drain(..) {
                if self.filter.admits(&event) {
                    frames.push(event.sse_frame());
                }
            }
            self.last_write = Instant::now();
            match frames.len() {
                0 => continue,
                // The shared frame itself: no copy per stream.
                1 => return frames.pop(),
                _ => return Some(frames.concat().into()),
            }
        }
    }

    /// Queues a received event; a reader too slow to keep up is told to
    /// reload, as what it shows may be stale. `None` when closed.
    fn take(&mut self, received: Result<Arc<Event>, RecvError>) -> Option<()> {
        match received {
            Ok(event) => self.pending.push_back(event),
            Err(RecvError::Lagged(_)) => {
                self.pending.clear();
                self.reset = true;
            }
            Err(RecvError::Closed) => return None,
        }
        Some(())
    }
}
