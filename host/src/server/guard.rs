//! What a browser can be made to send on someone else's behalf. Any page
//! the user opens can submit a form to this server (a `text/plain` form
//! carries a JSON body), a page on another port of the same machine is
//! "same-site" and gets the SameSite=Strict cookie sent along, and a name
//! the attacker controls can be rebound to 127.0.0.1. So, before anything
//! else runs:
//!
//! - bound to loopback, only loopback names are answered (`Host`);
//! - a request that changes something and says it comes from another
//!   origin (`Origin`, `Sec-Fetch-Site`) is refused;
//! - an API request with a body must say `application/json`,
//!   which no form can and a cross-origin `fetch` cannot without a CORS
//!   preflight this server never grants;
//! - the UI's actions carry the CSRF token of the page they came from.
//!
//! The session cookie itself is taken by the API only for the UI's own
//! reads (`AppState::caller`).

use super::AppState;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use std::net::IpAddr;

/// The largest UI form read for its token: the UI's largest field (a
/// run's parameters) is 64 KiB.
const MAX_FORM: usize = 256 << 10;
/// How long a UI form's body may take to arrive.
const FORM_READ_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// No page of this server may be shown in another's frame: a click there
/// would be the user's own, with their session and the form's token.
pub(super) async fn no_framing(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

/// Why a request was refused before it reached its handler.
#[derive(Debug, thiserror::Error)]
pub enum Trespass {
    #[error("host: {0:?} is not a loopback name; this server is bound to loopback only")]
    ForeignHost(String),
    #[error(
        "{header}: {value:?}: writes must come from this server's own pages or from a non-browser client"
    )]
    CrossSite { header: &'static str, value: String },
    #[error("content-type: must be application/json (got {0:?})")]
    NotJson(String),
    #[error(
        "csrf: this form is stale or not from this server's pages; reload the page and try again"
    )]
    Csrf,
}

impl From<Trespass> for ApiError {
    fn from(t: Trespass) -> ApiError {
        let message = t.to_string();
        match t {
            Trespass::ForeignHost(_) => ApiError::forbidden("host", message),
            Trespass::CrossSite { header, .. } => ApiError::forbidden(header, message),
            Trespass::NotJson(_) => ApiError::unsupported_media_type(message),
            Trespass::Csrf => ApiError::forbidden("csrf", message),
        }
    }
}

pub(super) async fn guard(State(s): State<AppState>, mut request: Request, next: Next) -> Response {
    // HTTP/2 names the server in `:authority`, which hyper leaves in the
    // URI; every check here (and the relay to a leader) reads `Host`.
    if !request.headers().contains_key(header::HOST)
        && let Some(authority) = request.uri().authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    let api = is_api(request.uri().path());
    let refuse = |t: Trespass| refuse_error(api, ApiError::from(t));
    let headers = request.headers();
    if s.loopback_only
        && let Some(host) = headers.get(header::HOST)
    {
        let host = String::from_utf8_lossy(host.as_bytes());
        if !loopback_name(&host) {
            return refuse(Trespass::ForeignHost(host.into_owned()));
        }
    }
    if is_safe(request.method()) {
        return next.run(request).await;
    }
    if let Err(t) = same_origin(headers) {
        return refuse(t);
    }
    if api {
        if let Err(t) = json_body(headers) {
            return refuse(t);
        }
        return next.run(request).await;
    }
    // The UI's actions: the token is a field of the form. Nobody is made
    // to wait for, or hold, the body of a form that is refused anyway: one
    // from outside a session goes to the login form unread, and every form
    // is read within a bound of size and time.
    if request.uri().path() != "/login" {
        match s.caller(headers, true) {
            Ok(_) => {}
            Err(e) if e.kind == crate::error::ErrorKind::Unauthorized => {
                return Redirect::to("/login?next=/").into_response();
            }
            Err(e) => return refuse_error(api, e),
        }
    }
    let expected = s.csrf_token(headers);
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(FORM_READ_TIME, axum::body::to_bytes(body, MAX_FORM)).await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(e)) if super::limits::too_large(&e) => {
            return refuse_error(
                api,
                ApiError::payload_too_large(format!(
                    "body: a form larger than the {} KiB this server reads",
                    MAX_FORM >> 10
                )),
            );
        }
        Ok(Err(_)) => return refuse(Trespass::Csrf),
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                "the form did not arrive in time",
            )
                .into_response();
        }
    };
    if form_field(&body, "csrf").as_deref() != Some(expected.as_str()) {
        return refuse(Trespass::Csrf);
    }
    // Where to go afterwards is checked before the action is taken.
    for field in ["back", "next"] {
        if let Some(target) = form_field(&body, field).filter(|t| !t.is_empty())
            && !super::ui::is_local_path(&target)
        {
            let message = format!("{field}: {target:?} is not a path on this site");
            return refuse_error(api, ApiError::bad_request(field, message));
        }
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// As JSON for the API, as a page for the UI.
fn refuse_error(api: bool, error: ApiError) -> Response {
    if api {
        error.into_response()
    } else {
        super::ui::PageError::from(error).into_response()
    }
}

pub(super) fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

pub(super) fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `localhost`, `*.localhost` (which resolve to loopback by RFC 6761 and
/// in browsers), or a loopback address; any port.
fn loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(address, _)| address),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Fails when a browser says the request comes from another origin. Clients
/// that are no browser send neither header, and pass.
pub(super) fn same_origin(headers: &HeaderMap) -> Result<(), Trespass> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    // Another port of this machine is "same-site", yet another origin.
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Err(Trespass::CrossSite {
            header: "sec-fetch-site",
            value: site,
        });
    }
    if let Some(origin) = text("origin") {
        // "null" is what sandboxed frames and data: pages send.
        let host = text("host").unwrap_or_default();
        let same = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(&host));
        if !same {
            return Err(Trespass::CrossSite {
                header: "origin",
                value: origin,
            });
        }
    }
    Ok(())
}

/// A request with a body must say it is JSON; one without (a cancel, a
/// delete) needs no type. A bodiless cross-origin POST is left to the
/// `Origin` check: browsers send `Origin` with every POST.
fn json_body(headers: &HeaderMap) -> Result<(), Trespass> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        let bodiless = !headers.contains_key(header::TRANSFER_ENCODING)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|length| length.as_bytes() == b"0");
        if bodiless {
            return Ok(());
        }
        return Err(Trespass::NotJson(String::new()));
    };
    let text = String::from_utf8_lossy(content_type.as_bytes());
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Trespass::NotJson(text.into_owned()))
    }
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "localhost:4200",
            "LOCALHOST.:4200",
            "app.localhost:1",
            "127.0.0.1:4200",
            "127.1.2.3",
            "[::1]:4200",
            "[::1]",
        ] {
            assert!(loopback_name(host), "{host}");
        }
        for host in [
            "rebind.attacker.example:4200",
            "localhost.attacker.example",
            "10.0.0.1:4200",
            "[::2]:4200",
            "",
        ] {
            assert!(!loopback_name(host), "{host}");
        }
    }
}
