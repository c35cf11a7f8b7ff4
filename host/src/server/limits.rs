//! What a connection may take before anyone knows who sent it.
//!
//! `axum::serve` reads headers for as long as a client likes and takes
//! every connection: a thousand clients sending half a header held a
//! thousand sockets, and five thousand idle ones took 300 MB. So the server
//! runs its own accept loop (the same hyper connection axum would make):
//!
//! - a request's headers must be in within `header_timeout`, counted from
//!   when the connection opened or its previous answer ended, so the same
//!   bound closes idle keep-alive connections (hyper runs one timer for
//!   both). An answer that takes long (a claim's long-poll, an event
//!   stream) is not affected: its headers came in long ago;
//! - at most `max_connections` are served at once; past that a new one is
//!   answered 503 and closed at once, and the burst is logged once;
//! - bodies are read up to [`MAX_BODY`] and answered 413 past it;
//! - with TLS, the handshake must also be done within `header_timeout`;
//!   ALPN picks HTTP/2 or HTTP/1.1 (browsers get HTTP/2, and with it more
//!   than six requests at once to one server).

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The largest request body read, API or form (axum's default, now said
/// in one place). Workers cut their log batches well under it.
pub const MAX_BODY: usize = 2 << 20;

/// hyper's own default once a timer is set. Clients keep idle connections
/// for less (the crate's client 20 s), so they never send on one this
/// server is closing.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Enough for hundreds of workers (two or three connections each) and
/// their users' browsers; a few hundred MB at the most if all sit idle.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long open connections get to finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    /// The default cap, or half the open-file limit if that is lower: the
    /// other half is for the database, the data files and the relays to a
    /// leading replica, so a flood of sockets cannot starve them (with
    /// 1,024 descriptors, health checks timed out).
    pub fn for_open_files(open_files: u64) -> Limits {
        let half = usize::try_from(open_files / 2).unwrap_or(usize::MAX);
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS.min(half).max(16),
            ..Limits::default()
        }
    }
}

/// The answer to a body past [`MAX_BODY`].
pub fn body_too_large() -> crate::error::ApiError {
    crate::error::ApiError::payload_too_large(format!(
        "body: larger than the {} MiB this server reads",
        MAX_BODY >> 20
    ))
}

/// Whether reading a body stopped at the limit.
pub(super) fn too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown`
/// completes, then lets the open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Connections turned away since the cap was last reached.
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if connection_error(&error) => continue,
            Err(error) => {
                // Out of descriptors, most likely: trying again at once
                // would spin.
                tracing::error!(%error, "cannot accept connections; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if refused == 0 {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached: turning new connections away until some close"
                );
            }
            refused += 1;
            // A TLS client would read the plain answer as garbage: it
            // gets the close alone.
            if tls.is_none() {
                turn_away(stream);
            }
            continue;
        };
        if refused > 0 {
            tracing::warn!(
                refused,
                "below the connection cap again; turned away meanwhile"
            );
            refused = 0;
        }
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            watcher: graceful.watcher(),
            header_timeout: limits.header_timeout,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => connection.serve_http1(stream).await,
                Some(tls) => connection.serve_tls(stream, &tls).await,
            };
            if let Err(error) = served {
                tracing::debug!(%remote, %error, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Requests in flight finish; an event stream never does on its own,
    // and held the server's exit for as long as a browser tab stayed open.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the shutdown grace (event streams, most likely); closing them"
        );
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    app: Router,
    watcher: Watcher,
    header_timeout: Duration,
}

type ConnectionError = Box<dyn std::error::Error + Send + Sync>;

impl Connection {
    async fn serve_http1<S>(self, stream: S) -> Result<(), ConnectionError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let service = hyper_util::service::TowerToHyperService::new(self.app);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        Ok(self.watcher.watch(connection).await?)
    }

    async fn serve_tls(
        self,
        stream: TcpStream,
        tls: &tokio_rustls::TlsAcceptor,
    ) -> Result<(), ConnectionError> {
        let stream = tokio::time::timeout(self.header_timeout, tls.accept(stream))
            .await
            .map_err(|_| "TLS handshake not done within the header timeout")??;
        if stream.get_ref().1.alpn_protocol() != Some(&b"h2"[..]) {
            return self.serve_http1(stream).await;
        }
        let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // Pings find dead peers; hyper has no header timeout for HTTP/2,
        // where one connection multiplexes many requests.
        http.timer(TokioTimer::new())
            .keep_alive_interval(self.header_timeout)
            .keep_alive_timeout(self.header_timeout);
        let service = hyper_util::service::TowerToHyperService::new(self.app);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        Ok(self.watcher.watch(connection).await?)
    }
}

/// Answers 503 without reading anything and closes. `try_write` never
/// waits: a client that does not read gets the close alone.
fn turn_away(stream: TcpStream) {
    const BODY: &str = r#"{"error":"the server has too many connections open; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// Errors of one connection that the listener itself survives.
fn connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
