//! `--with-healthcheck`: `GET /health` answers 503 once the worker has not
//! polled the server for a while, so a supervisor can restart it; `GET
//! /metrics` is the worker's Prometheus text.

use super::Shared;
use axum::Json;
use axum::http::StatusCode;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn serve(
    address: SocketAddr,
    shared: Arc<Shared>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve the health check on {address}: {e}"))?;
    let local = listener.local_addr()?;
    println!("worker health check on http://{local}/health");
    // Polls return at least every poll_wait; three of them missed is unhealthy.
    let stale_after = shared.config.poll_wait * 3 + Duration::from_secs(5);
    let metrics = shared.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.metrics.encode();
                async move { crate::metrics::response(text) }
            }),
        )
        .route(
            "/health",
            get(move || {
                let shared = shared.clone();
                async move {
                    let since = shared
                        .last_poll
                        .lock()
                        .map(|t| t.elapsed())
                        .unwrap_or(Duration::MAX);
                    let body = Json(serde_json::json!({
                        "worker": shared.config.name,
                        "pool": shared.config.pool,
                        "seconds_since_last_poll": since.as_secs_f64(),
                    }));
                    if since <= stale_after {
                        (StatusCode::OK, body)
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, body)
                    }
                }
            }),
        );
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}
