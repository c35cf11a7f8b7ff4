//! A small HTTP client over the standard `wasi:http/outgoing-handler`, for
//! plugins granted the `http` capability: JSON in and out, and retries
//! with backoff on 429 and 5xx.
//!
//! The host sends the request only to the origins `grants.toml` lists
//! (anything else ends in [`HttpError::Denied`]) and adds the credentials
//! the grant names (a bearer token, basic auth, AWS SigV4) itself: the
//! plugin never sees them, and may not set `authorization` (or the SigV4
//! headers) either. Redirects are not followed: a 3xx is a response.
//!
//! ```ignore
//! use host_plugin_sdk::http::Client;
//! let api = Client::new("https://api.example.com");
//! let task: serde_json::Value = api.post_json("/tasks", &serde_json::json!({"image": "x"}))?;
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, HeaderError, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Url(String),
    #[error("{url}: the host denied the request (its origin is not granted in grants.toml)")]
    Denied { url: String },
    #[error("{url}: header `{name}` refused ({reason}); the host sets the credential headers")]
    Header {
        url: String,
        name: String,
        reason: String,
    },
    /// The request did not get an answer: connecting, TLS, a timeout, a cap.
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    /// An answer, but not a 2xx (from the JSON helpers).
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {message}")]
    Json { url: String, message: String },
}

impl HttpError {
    /// Worth trying again later: no answer, 429, or a 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Transport { .. } => true,
            HttpError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl From<HttpError> for crate::Error {
    fn from(error: HttpError) -> Self {
        if error.is_retryable() {
            crate::Error::Retryable(error.to_string())
        } else {
            crate::Error::Fatal(error.to_string())
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Connecting and the first byte, and each silence within the body.
    /// The grant's own deadlines apply when they are shorter.
    pub timeout: Option<Duration>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The body as JSON, with its content type.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value).map_err(|e| HttpError::Json {
            url: self.url.clone(),
            message: format!("cannot encode the body: {e}"),
        })?;
        Ok(self.header("content-type", "application/json").body(body))
    }
}

/// An answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names in lowercase. Never the credential headers: the host removes them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `scheme://authority/path?query`, split.
fn split_url(url: &str) -> Result<(Scheme, &str, String), HttpError> {
    let bad = || HttpError::Url(format!("{url:?}: expected http(s)://host[:port]/path"));
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(bad());
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(bad());
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok((scheme, authority, path))
}

fn method(name: &str) -> Method {
    match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    }
}

/// One attempt, no retries: any status is an `Ok`.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    start(request)?.finish()
}

/// A request sent, its response not yet read: [`start`] several, then
/// [`InFlight::finish`] each, and they run at once (up to the grant's
/// `max_concurrent_requests`; past it a request fails with
/// `ConnectionLimitReached`).
pub struct InFlight {
    url: String,
    pending: wasip2::http::types::FutureIncomingResponse,
}

fn transport(url: &str, message: String) -> HttpError {
    HttpError::Transport {
        url: url.to_string(),
        message,
    }
}

fn failed(url: &str, code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied {
            url: url.to_string(),
        },
        other => transport(url, format!("{other:?}")),
    }
}

/// Sends `request` (head and body) without waiting for the response.
pub fn start(request: &Request) -> Result<InFlight, HttpError> {
    let url = request.url.as_str();
    let transport = |message: String| transport(url, message);
    let failed = |code: ErrorCode| failed(url, code);
    let (scheme, authority, path) = split_url(url)?;
    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| HttpError::Header {
                url: url.to_string(),
                name: name.clone(),
                reason: match e {
                    HeaderError::Forbidden => "forbidden".into(),
                    other => format!("{other:?}"),
                },
            })?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let invalid = |what: &str| HttpError::Url(format!("{url:?}: invalid {what}"));
    outgoing
        .set_method(&method(&request.method))
        .map_err(|()| invalid("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| invalid("host"))?;
    outgoing
        .set_path_with_query(Some(&path))
        .map_err(|()| invalid("path"))?;
    let options = RequestOptions::new();
    if let Some(timeout) = request.timeout {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        // A host may not support one of them; its own deadlines hold anyway.
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
    }
    let body = outgoing
        .body()
        .map_err(|()| transport("no request body".into()))?;
    // Sent first, written after: the body streams into the request.
    let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(failed)?;
    {
        let stream = body
            .write()
            .map_err(|()| transport("cannot write the body".into()))?;
        for chunk in request.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| transport(format!("writing the body: {}", stream_error(e))))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(failed)?;
    Ok(InFlight {
        url: url.to_string(),
        pending,
    })
}

impl InFlight {
    /// Waits for the response and reads its body whole.
    pub fn finish(self) -> Result<Response, HttpError> {
        let InFlight { url, pending } = self;
        read_response(&url, pending)
    }
}

fn read_response(
    url: &str,
    pending: wasip2::http::types::FutureIncomingResponse,
) -> Result<Response, HttpError> {
    let transport = |message: String| transport(url, message);
    let failed = |code: ErrorCode| failed(url, code);
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(failed(code)),
        Some(Err(())) | None => return Err(transport("no response".into())),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| transport("no response body".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| transport("no response body".into()))?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(transport(format!("reading the body: {}", stream_error(e)))),
            }
        }
    }
    drop(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn stream_error(error: StreamError) -> String {
    match error {
        StreamError::Closed => "closed".into(),
        StreamError::LastOperationFailed(e) => match wasip2::http::types::http_error_code(&e) {
            Some(code) => format!("{code:?}"),
            None => e.to_debug_string(),
        },
    }
}

/// A client for one API: a base URL, headers for every request, retries.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    headers: Vec<(String, String)>,
    /// Tries of one request in all (1: no retry).
    pub max_attempts: u32,
    /// The first wait; each next one doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Option<Duration>,
}

impl Client {
    /// `base` as `https://host[:port]` (a path prefix may follow).
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            headers: Vec::new(),
            max_attempts: 4,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: None,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A request to `path` (from `/`) with the client's headers.
    pub fn request(&self, method: &str, path: &str) -> Request {
        let mut request = Request::new(method, &format!("{}{path}", self.base));
        request.headers = self.headers.clone();
        request.timeout = self.timeout;
        request
    }

    /// Sends, retrying on no answer, 429 and 5xx with exponential backoff
    /// (a `Retry-After` in seconds is honoured, within `max_backoff`). Every
    /// method is retried: make a non-idempotent request idempotent (a client
    /// token) or set `max_attempts` to 1. The last answer is returned
    /// whatever its status.
    pub fn send(&self, request: &Request) -> Result<Response, HttpError> {
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            let outcome = send(request);
            let again = match &outcome {
                Ok(response) => response.status == 429 || response.status >= 500,
                Err(error) => error.is_retryable(),
            };
            if !again || attempt >= self.max_attempts {
                return outcome;
            }
            let asked = outcome
                .as_ref()
                .ok()
                .and_then(|r| r.header("retry-after"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            std::thread::sleep(asked.unwrap_or(wait).min(self.max_backoff));
            wait = (wait * 2).min(self.max_backoff);
            attempt += 1;
        }
    }

    /// Sends with retries; a 2xx's body as JSON, anything else an error.
    pub fn json<T: DeserializeOwned>(&self, request: &Request) -> Result<T, HttpError> {
        let response = self.send(request)?;
        if !response.is_success() {
            let mut body = response.text();
            body.truncate(body.floor_char_boundary(512));
            return Err(HttpError::Status {
                url: request.url.clone(),
                status: response.status,
                body,
            });
        }
        let body = if response.body.is_empty() {
            b"null".as_slice()
        } else {
            response.body.as_slice()
        };
        serde_json::from_slice(body).map_err(|e| HttpError::Json {
            url: request.url.clone(),
            message: format!("the answer is not the JSON expected: {e}"),
        })
    }

    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        self.json(&self.request("GET", path))
    }

    pub fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, HttpError> {
        self.json(&self.request("POST", path).json(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let split = |u: &str| {
            split_url(u).map(|(s, a, p)| (matches!(s, Scheme::Https), a.to_string(), p.to_string()))
        };
        assert_eq!(
            split("https://h:8443/a?b=1"),
            Ok((true, "h:8443".into(), "/a?b=1".into()))
        );
        assert_eq!(split("http://h"), Ok((false, "h".into(), "/".into())));
        assert_eq!(split("http://h?x"), Ok((false, "h".into(), "/?x".into())));
        assert!(split("ftp://h").is_err());
        assert!(split("http:///x").is_err());
    }

    #[test]
    fn only_no_answer_throttling_and_server_errors_are_retried() {
        let status = |status| HttpError::Status {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(status(429).is_retryable() && status(503).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!HttpError::Denied { url: "u".into() }.is_retryable());
        assert!(
            HttpError::Transport {
                url: "u".into(),
                message: "m".into()
            }
            .is_retryable()
        );
    }
}
