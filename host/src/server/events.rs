//! `GET /api/events`: the change feed as Server-Sent Events. Each event's
//! `data` is the changed record (`run`, `log`, `worker`, `pool`,
//! `pool_deleted`); a reconnecting client sends `Last-Event-ID` and gets what
//! it missed, or a `reset` event when that is gone (reload, then go on).

use super::{AppState, Params};
use crate::events::{Event, Start, Subscription};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

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
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let start = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map_or(Start::Now, |id| Start::After(id.to_string()));
    let events = s.control.store().events().clone();
    let Subscription {
        missed,
        live,
        reset,
    } = events.subscribe(start);
    let reader = Reader {
        events,
        filter,
        pending: missed.into(),
        live,
        reset,
    };
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        let next = reader.next().await?;
        Some((Ok(next), reader))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

struct Reader {
    events: Arc<crate::events::Events>,
    filter: Filter,
    pending: VecDeque<Arc<Event>>,
    live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    reset: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if std::mem::take(&mut self.reset) {
                return Some(SseEvent::default().event("reset").data("{}"));
            }
            let event = match self.pending.pop_front() {
                Some(event) => event,
                None => match self.live.recv().await {
                    Ok(event) => event,
                    // Too slow to keep up: what it shows may be stale.
                    Err(RecvError::Lagged(_)) => {
                        self.reset = true;
                        continue;
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            if !self.filter.admits(&event) {
                continue;
            }
            let data = serde_json::to_string(&event.change).unwrap_or_else(|_| "{}".into());
            return Some(
                SseEvent::default()
                    .id(self.events.id(&event))
                    .event(event.change.name())
                    .data(data),
            );
        }
    }
}
