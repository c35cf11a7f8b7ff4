//! Sending one granted request: the entry's credentials added, a TCP (and
//! TLS) connection of its own, HTTP/1.1 through hyper, and the response
//! body held to the entry's between-bytes deadline and size cap.
//!
//! Ours rather than wasmtime-wasi-http's `default_send_request`, which
//! trusts only the webpki roots, has no client certificate and waits 600 s.

use super::aws::{self, Signer, Sources};
use super::policy::{Auth, Endpoint};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

type Sent = (
    Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Sends `request` to `endpoint` (already checked against the grant) and
/// reports how it went on `span`.
pub(super) async fn send(
    endpoint: Arc<Endpoint>,
    request: Request<WasiBody>,
    options: Option<RequestOptions>,
    permit: OwnedSemaphorePermit,
    span: tracing::Span,
) -> Result<Sent, Error> {
    let started = Instant::now();
    let result = send_checked(&endpoint, request, options, permit, span.clone()).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok((response, _)) => {
            let status = response.status().as_u16();
            span.record("status", status);
            tracing::info!(status, elapsed_ms, "HTTP request");
        }
        Err(error) => tracing::warn!(%error, elapsed_ms, "HTTP request failed"),
    }
    result
}

async fn send_checked(
    endpoint: &Endpoint,
    request: Request<WasiBody>,
    options: Option<RequestOptions>,
    permit: OwnedSemaphorePermit,
    span: tracing::Span,
) -> Result<Sent, Error> {
    // The guest may shorten the entry's deadlines, never lengthen them.
    let shorter = |theirs: Option<Duration>, ours: Duration| theirs.map_or(ours, |t| t.min(ours));
    let options = options.unwrap_or_default();
    let connect = shorter(options.connect_timeout, endpoint.timeout);
    let head = shorter(options.first_byte_timeout, endpoint.timeout);
    let between = shorter(options.between_bytes_timeout, endpoint.between_bytes);
    let deadline = tokio::time::Instant::now() + endpoint.timeout;

    let mut request = authorize(endpoint, with_host(request)?).await?;
    // The request line carries the path only; scheme and authority are
    // for proxies.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = path
        .parse::<Uri>()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let address = format!("{}:{}", endpoint.host, endpoint.port);
    let stream = tokio::time::timeout(connect, TcpStream::connect(&address))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let stream: Box<dyn Stream> = match &endpoint.tls {
        Some(config) => {
            let name = endpoint.host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls_pki_types::ServerName::try_from(name.to_string())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = tokio::time::timeout_at(deadline, connector.connect(name, stream))
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(Error::Tls)?;
            Box::new(tls)
        }
        None => Box::new(stream),
    };
    let (mut sender, connection) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The connection runs on its own task, ended with whatever holds it:
    // this future until the head arrives, then the response's worker.
    let connection = AbortOnDrop(tokio::spawn(connection));
    let response = tokio::time::timeout(head, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;

    let cap = endpoint.max_response_bytes;
    let announced = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > cap) {
        tracing::warn!(announced, cap, "HTTP response refused: larger than the cap");
        return Err(Error::HttpResponseBodySize(announced));
    }
    let response = response.map(|incoming| {
        Guarded {
            incoming,
            between,
            silence: Box::pin(tokio::time::sleep(between)),
            left: cap,
            cap,
            span,
            _permit: permit,
        }
        .boxed_unsync()
    });
    let mut connection = connection;
    let worker = async move {
        match (&mut connection.0).await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(error)) if error.is_timeout() => Err(Error::HttpResponseTimeout),
            Ok(Err(error)) => Err(Error::Hyper(error)),
        }
    };
    Ok((response, Box::new(worker)))
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// wasmtime-wasi-http sets no `host` header, and HTTP/1.1 needs one (SigV4
/// signs it too): the authority as the guest wrote it, which the grant
/// matched.
fn with_host(mut request: Request<WasiBody>) -> Result<Request<WasiBody>, Error> {
    let authority = request
        .uri()
        .authority()
        .ok_or(Error::HttpRequestUriInvalid)?
        .as_str();
    let value = HeaderValue::from_str(authority).map_err(|_| Error::HttpRequestUriInvalid)?;
    request.headers_mut().insert(HOST, value);
    Ok(request)
}

/// What the guest learns when the host cannot sign: that, not why (the
/// why names files of the worker's machine; it goes to the worker's log).
fn cannot_sign(why: String) -> Error {
    tracing::error!(%why, "cannot add the credentials of a granted endpoint");
    Error::InternalError(Some(
        "the host could not add this endpoint's credentials (see the worker's log)".into(),
    ))
}

async fn read_secret(path: &std::path::Path) -> Result<String, Error> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| cannot_sign(format!("{}: {e}", path.display())))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(cannot_sign(format!("{} is empty", path.display())));
    }
    Ok(text.to_string())
}

fn secret_header(value: String) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| cannot_sign("the credential is not a valid header value".into()))?;
    // Kept out of hyper's debug output.
    value.set_sensitive(true);
    Ok(value)
}

/// Adds the entry's credentials. The guest could not have set any of these
/// headers (they are forbidden to it), so what is there is ours alone.
async fn authorize(
    endpoint: &Endpoint,
    mut request: Request<WasiBody>,
) -> Result<Request<WasiBody>, Error> {
    match &endpoint.auth {
        Auth::None => Ok(request),
        Auth::Bearer { token_file } => {
            let token = read_secret(token_file).await?;
            let value = secret_header(format!("Bearer {token}"))?;
            request.headers_mut().insert(AUTHORIZATION, value);
            Ok(request)
        }
        Auth::Basic { credentials_file } => {
            let pair = read_secret(credentials_file).await?;
            if !pair.contains(':') {
                return Err(cannot_sign(format!(
                    "{}: expected user:password",
                    credentials_file.display()
                )));
            }
            let value = secret_header(format!("Basic {}", base64(pair.as_bytes())))?;
            request.headers_mut().insert(AUTHORIZATION, value);
            Ok(request)
        }
        Auth::AwsSigV4 {
            service,
            region,
            profile,
            credentials_file,
        } => {
            let (mut parts, body) = request.into_parts();
            // SigV4 signs the body's hash, so the body is read whole first
            // (bounded: the guest chooses its size).
            let limit = usize::try_from(endpoint.max_request_bytes).unwrap_or(usize::MAX);
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|_| Error::HttpRequestBodySize(Some(endpoint.max_request_bytes)))?
                .to_bytes();
            let (profile, file) = (profile.clone(), credentials_file.clone());
            // Reads files: off the async threads.
            let keys = tokio::task::spawn_blocking(move || {
                aws::credentials(&Sources::process(), profile.as_deref(), file.as_deref())
            })
            .await
            .map_err(|e| cannot_sign(e.to_string()))?
            .map_err(cannot_sign)?;
            let uri = parts.uri.to_string();
            let headers: Vec<(&str, &str)> = parts
                .headers
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
                .collect();
            let signer = Signer {
                keys: &keys,
                service,
                region,
                time: SystemTime::now(),
                content_sha256_header: true,
            };
            let added = signer
                .headers(parts.method.as_str(), &uri, &headers, &body)
                .map_err(cannot_sign)?;
            for (name, value) in added {
                parts.headers.insert(name, secret_header(value)?);
            }
            let body = Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync();
            Ok(Request::from_parts(parts, body))
        }
    }
}

/// Standard base64 with padding, for `Basic` credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The response body as the guest reads it: no more than `cap` bytes, no
/// silence longer than `between`, and the in-flight permit held until it
/// is read or dropped.
struct Guarded {
    incoming: hyper::body::Incoming,
    between: Duration,
    silence: Pin<Box<tokio::time::Sleep>>,
    left: u64,
    cap: u64,
    span: tracing::Span,
    _permit: OwnedSemaphorePermit,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                if size > this.left {
                    tracing::warn!(parent: &this.span, cap = this.cap, "HTTP response body cut: larger than the cap");
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.cap)))));
                }
                this.left -= size;
                let next = tokio::time::Instant::now() + this.between;
                this.silence.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) if error.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Error::Hyper(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.silence.as_mut().poll(cx));
                tracing::warn!(
                    parent: &this.span,
                    seconds = this.between.as_secs_f64(),
                    "HTTP response body stalled past its between-bytes timeout"
                );
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
