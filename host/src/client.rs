//! The HTTP client of the API, for the CLI and the worker.
//!
//! Every request has a deadline (`HOST_API_TIMEOUT`, 30 s, or the caller's:
//! the worker gives a claim long-poll its wait plus a margin), so a server
//! that went silent costs seconds, then the next URL. A write goes to
//! another URL only after a 503 marked `x-host-not-written`; one that timed
//! out, or whose connection broke once it was sent, may have been made, so
//! it is never sent elsewhere: the caller gets the error (a worker's
//! reports retry under their idempotency keys).

use crate::error::ErrorBody;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:4200";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the server at {url} ({reason}); is `host serve` running? (set --api-url or HOST_API_URL)"
    )]
    Unreachable { url: String, reason: String },
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        field: Option<String>,
    },
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The header with which a replica that forwarded a write says where the
/// writes of its shared database are made.
pub const WRITER_HEADER: &str = "x-host-writer";

/// Set on a 503 by a server that did nothing of the request (most often:
/// it cannot reach its database), so the write may be made elsewhere. A
/// 503 without it (a proxy's, say) may follow a write that was made.
pub const NOT_WRITTEN_HEADER: &str = "x-host-not-written";

/// How often a request sent straight to the writer asks the client's own
/// server whether that is still the writer, once it has waited this long.
const WRITER_WATCH: Duration = Duration::from_secs(1);

/// Talks to one server, or to any of several replicas sharing a database:
/// a request that cannot reach one goes to the next, and the one that
/// answered is tried first from then on.
#[derive(Clone)]
pub struct Client {
    bases: Arc<[String]>,
    /// Index into `bases` of the server that answered last.
    current: Arc<AtomicUsize>,
    token: Option<String>,
    http: reqwest::Client,
    /// Where writes go first, once a server said (`x-host-writer`): the
    /// replica that batches a shared database's writes, one hop nearer than
    /// the replica that forwards them. Forgotten when it cannot be reached.
    writer: Arc<Mutex<Option<String>>>,
    /// A writer address this client could not reach (a replica's internal
    /// one, behind a load balancer): not taken up again for a minute.
    unreachable_writer: Arc<SetAside>,
    /// How long one request may take, answer included (event streams
    /// excepted): a server that accepted the connection and then went
    /// silent (paused, partitioned) must not hang its clients.
    deadline: Duration,
}

/// A request's deadline unless the caller sets another ([`Client::with_deadline`]).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// The last address that could not be reached, set aside for a while: an
/// address that stays unreachable costs one failed connect per `window`,
/// not one per request.
pub(crate) struct SetAside {
    window: Duration,
    last: Mutex<Option<(String, std::time::Instant)>>,
}

impl SetAside {
    pub(crate) fn new(window: Duration) -> SetAside {
        SetAside {
            window,
            last: Mutex::new(None),
        }
    }

    /// Whether `address` failed within the window.
    pub(crate) fn holds(&self, address: &str) -> bool {
        self.last.lock().is_ok_and(|last| {
            last.as_ref()
                .is_some_and(|(at, since)| at == address && since.elapsed() < self.window)
        })
    }

    pub(crate) fn put(&self, address: &str) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some((address.to_string(), std::time::Instant::now()));
        }
    }
}

const RETRY_UNREACHABLE_WRITER: Duration = Duration::from_secs(60);

impl Client {
    /// `base` is a URL or a comma-separated list of them (`http://a,http://b`).
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client::with_tls(base, token, &crate::tls::ClientTls::default())
    }

    /// As [`Client::new`], for `https://` servers trusting what `tls` adds
    /// to the system's roots (and showing its client certificate).
    pub fn with_tls(base: &str, token: Option<String>, tls: &crate::tls::ClientTls) -> Client {
        let http = tls
            .builder()
            .connect_timeout(Duration::from_secs(5))
            // Under the server's header timeout (30 s), which closes idle
            // connections: never a request on one it is closing.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_default();
        let mut bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            bases.push(DEFAULT_API_URL.to_string());
        }
        Client {
            bases: bases.into(),
            current: Arc::default(),
            token: token.filter(|t| !t.is_empty()),
            http,
            writer: Arc::default(),
            unreachable_writer: Arc::new(SetAside::new(RETRY_UNREACHABLE_WRITER)),
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// The same client (sharing which server answered last) with another
    /// deadline per request: a long-poll's is its wait plus a margin.
    pub fn with_deadline(&self, deadline: Duration) -> Client {
        Client {
            deadline,
            ..self.clone()
        }
    }

    /// The server this client talks to now.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<(), serde_json::Value>(Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let writes = method != Method::GET;
        let (response, url) = self
            .send(path, writes, |url| {
                let request = self
                    .http
                    .request(method.clone(), url)
                    .timeout(self.deadline);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        let bytes = response.bytes().await.map_err(|e| ClientError::Protocol {
            url: url.clone(),
            reason: root_cause(&e),
        })?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol {
            url,
            reason: e.to_string(),
        })
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct StreamEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An open `/api/events` stream: the server has subscribed by the time
/// [`Client::events`] returns, so nothing committed after that is missed.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    url: String,
}

impl Client {
    /// Opens the change feed with a query such as `flow_run=ID`, after the
    /// event `last_event_id` when resuming.
    pub async fn events(
        &self,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, ClientError> {
        let (response, url) = self
            .send(&format!("/api/events?{query}"), false, |url| {
                let request = self.http.get(url);
                match last_event_id {
                    Some(id) => request.header("Last-Event-ID", id),
                    None => request,
                }
            })
            .await?;
        Ok(EventStream {
            response,
            buffer: Vec::new(),
            url,
        })
    }
}

impl EventStream {
    /// The next raw piece of the stream, unparsed; `None` once it ended.
    pub async fn next_bytes(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        self.response
            .chunk()
            .await
            .map_err(|e| ClientError::Protocol {
                url: self.url.clone(),
                reason: root_cause(&e),
            })
    }

    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        loop {
            if let Some(end) = find_blank_line(&self.buffer) {
                let block: Vec<u8> = self.buffer.drain(..end.1).collect();
                if let Some(event) = parse_event(&block[..end.0]) {
                    return Ok(Some(event));
                }
                continue;
            }
            let chunk = self.next_bytes().await?;
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}

/// Where the first event block ends: (end of its text, end of the separator).
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    buffer
        .windows(2)
        .enumerate()
        .find_map(|(i, pair)| match pair {
            b"\n\n" => Some((i, i + 2)),
            b"\n\r" if buffer[i..].starts_with(b"\n\r\n") => Some((i, i + 3)),
            _ => None,
        })
}

/// A block of `field: value` lines; comment-only blocks (keep-alives) are `None`.
fn parse_event(block: &[u8]) -> Option<StreamEvent> {
    let text = String::from_utf8_lossy(block);
    let mut event = StreamEvent {
        event: "message".into(),
        ..StreamEvent::default()
    };
    let mut data = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = Some(value.to_string()),
            "event" => event.event = value.to_string(),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    event.data = data.join("\n");
    Some(event)
}

impl Client {
    /// Sends `path` with the token to the current server, then to each
    /// other one while none can be reached (the same request: whatever is
    /// safe to retry is safe to send to another replica). A non-2xx answer
    /// becomes [`ClientError::Api`] with the server's message and field.
    /// A write goes first to the server that makes the writes, once one
    /// said where that is.
    async fn send(
        &self,
        path: &str,
        writes: bool,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, String), ClientError> {
        let authorized = |url: &str| match &self.token {
            Some(token) => request(url).bearer_auth(token),
            None => request(url),
        };
        if let Some(writer) = writes.then(|| self.writer()).flatten() {
            let url = format!("{writer}{path}");
            let sent = tokio::select! {
                sent = authorized(&url).send() => Some(sent),
                () = self.writer_disowned(&writer) => None,
            };
            match sent {
                Some(Ok(response)) if !not_written(&response) => {
                    return Ok((self.checked(response, &url).await?, url));
                }
                Some(Ok(_)) => {
                    // It did nothing (it lost its database): the replicas
                    // this client was given will make it.
                    tracing::info!(%writer, "the writing server cannot write; writing through the others");
                    self.writer_unreachable(&writer);
                }
                None => {
                    // Sent, and the replicas no longer write there (it was
                    // paused or cut off): it may have made the write, so it
                    // is not sent again elsewhere.
                    self.writer_unreachable(&writer);
                    return Err(ClientError::Unreachable {
                        url: writer,
                        reason: "it stopped being the writer while it had the request, which may or may not have been made".into(),
                    });
                }
                Some(Err(e)) if was_sent(&e) => {
                    // Sent, then no answer in time or the connection broke
                    // (the writer killed): it may have made the write, so
                    // it is not sent again elsewhere (a claim made there is
                    // adopted by the worker after this error).
                    self.writer_unreachable(&writer);
                    return Err(ClientError::Unreachable {
                        url: writer,
                        reason: unanswered(&e, self.deadline),
                    });
                }
                Some(Err(e)) => {
                    tracing::info!(%writer, error = %root_cause(&e), "the writing server is unreachable; writing through the others");
                    self.writer_unreachable(&writer);
                }
            }
        }
        let first = self.current.load(Ordering::Relaxed);
        let mut unreachable = Vec::new();
        for attempt in 0..self.bases.len() {
            let index = (first + attempt) % self.bases.len();
            let url = format!("{}{path}", self.bases[index]);
            let last = attempt + 1 == self.bases.len();
            let failed = match authorized(&url).send().await {
                // This replica cannot do it now (most often: it lost its
                // database) and did nothing: another one may. A write goes
                // on only when the server said it did nothing.
                Ok(response)
                    if !last
                        && response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                        && (!writes || not_written(&response)) =>
                {
                    format!("{}: answered 503", self.bases[index])
                }
                Ok(response) => {
                    if attempt > 0 {
                        tracing::info!(server = %self.bases[index], "failed over to another server");
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return Ok((self.checked(response, &url).await?, url));
                }
                // Sent, and no answer in time or the connection broke: a
                // write may have been made, so it is not sent again
                // elsewhere; the next request starts with the next server.
                Err(e) if writes && was_sent(&e) => {
                    self.current
                        .store((index + 1) % self.bases.len(), Ordering::Relaxed);
                    return Err(ClientError::Unreachable {
                        url: self.bases[index].clone(),
                        reason: unanswered(&e, self.deadline),
                    });
                }
                Err(e) if self.bases.len() == 1 => root_cause(&e),
                Err(e) => format!("{}: {}", self.bases[index], root_cause(&e)),
            };
            unreachable.push(failed);
        }
        Err(ClientError::Unreachable {
            url: self.bases.join(", "),
            reason: unreachable.join("; "),
        })
    }

    fn writer(&self) -> Option<String> {
        self.writer.lock().ok()?.clone()
    }

    /// Resolves once this client's own server names another writer than
    /// `writer` (`writer` in `/api/health`), or none: the replicas stopped
    /// writing there. Never, when that server is `writer` itself: it is
    /// then this request's server, and its deadline rules.
    async fn writer_disowned(&self, writer: &str) {
        if self.base() == writer {
            return std::future::pending().await;
        }
        let url = format!("{}/api/health", self.base());
        loop {
            tokio::time::sleep(WRITER_WATCH).await;
            let health = async {
                let response = self
                    .http
                    .get(&url)
                    .timeout(WRITER_WATCH * 2)
                    .send()
                    .await
                    .ok()?;
                response.json::<serde_json::Value>().await.ok()
            };
            // No answer (or a server too old to say) says nothing: the
            // request's own deadline rules.
            let Some(health) = health.await.filter(|h| h.get("writes").is_some()) else {
                continue;
            };
            let named = health["writer"].as_str().map(|w| w.trim_end_matches('/'));
            if named != Some(writer) {
                return;
            }
        }
    }

    /// Follows `x-host-writer` only to a server this client was given or
    /// one the cluster itself names: the header crosses proxies, and one
    /// that injected it would otherwise receive every later write, bearer
    /// token included. Another address is taken only once the server this
    /// client talks to confirms it in `/api/health` (`writes_forwarded_to`),
    /// one look per new address.
    async fn learn_writer(&self, address: &str) {
        let address = address.trim_end_matches('/');
        if self.unreachable_writer.holds(address) || self.writer().as_deref() == Some(address) {
            return;
        }
        if !self.bases.iter().any(|b| b == address) && !self.cluster_names(address).await {
            tracing::warn!(writer = %address, server = %self.base(), "a server named a writer it does not list; not following it");
            self.unreachable_writer.put(address);
            return;
        }
        if let Ok(mut writer) = self.writer.lock() {
            *writer = Some(address.to_string());
        }
    }

    /// Whether the current server says its writes go to `address`.
    async fn cluster_names(&self, address: &str) -> bool {
        let url = format!("{}/api/health", self.base());
        let health = async {
            let response = self
                .http
                .get(&url)
                .timeout(self.deadline)
                .send()
                .await
                .ok()?;
            response.json::<serde_json::Value>().await.ok()
        };
        health.await.is_some_and(|health| {
            health["writes_forwarded_to"]
                .as_str()
                .is_some_and(|named| named.trim_end_matches('/') == address)
        })
    }

    fn writer_unreachable(&self, address: &str) {
        self.unreachable_writer.put(address);
        if let Ok(mut writer) = self.writer.lock() {
            *writer = None;
        }
    }

    /// [`Client::check`], after noting where the server says writes go.
    async fn checked(
        &self,
        response: reqwest::Response,
        url: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let writer = response.headers().get(WRITER_HEADER);
        if let Some(writer) = writer.and_then(|w| w.to_str().ok()) {
            self.learn_writer(writer).await;
        }
        Self::check(response, url).await
    }

    async fn check(
        response: reqwest::Response,
        url: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            reason: root_cause(&e),
        })?;
        let (message, field) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => (body.error, body.field),
            Err(_) => (
                format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim()),
                None,
            ),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
            field,
        })
    }
}

/// Whether a failed request reached the server (it was not refused at
/// connect, nor malformed here): a write's outcome is then unknown.
fn was_sent(error: &reqwest::Error) -> bool {
    !error.is_connect() && !error.is_builder()
}

/// Why a request that was sent has no answer: its outcome is unknown.
fn unanswered(error: &reqwest::Error, deadline: Duration) -> String {
    if error.is_timeout() {
        format!("no answer within {deadline:?}; the write may or may not have been made")
    } else {
        format!(
            "the connection broke before the answer ({}); the write may or may not have been made",
            root_cause(error)
        )
    }
}

/// A 503 by which the server says it did nothing.
fn not_written(response: &reqwest::Response) -> bool {
    response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        && response.headers().contains_key(NOT_WRITTEN_HEADER)
}

fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
