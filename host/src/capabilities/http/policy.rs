//! What an `http` grant allows: the endpoints a plugin may reach, each as
//! `scheme://host[:port]`, with how the host signs requests to it, its
//! deadlines, its response cap and its TLS trust. Read from `grants.toml`
//! once, at load, so a mistake stops the plugin from loading with the entry
//! named, never a request later.

use super::tls;
use http::uri::{Authority, Scheme, Uri};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Requests one plugin call may have in flight at once, unless the grant says.
pub const DEFAULT_MAX_CONCURRENT: usize = 8;
/// Far below wasmtime's 600 s: a plugin call has its own deadline, and an
/// endpoint that has not answered in 30 s is down for our purposes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BETWEEN_BYTES: Duration = Duration::from_secs(30);
/// A cloud API's answer is JSON of kilobytes; a log page at most megabytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// What a SigV4 request body may hold: the host hashes it whole to sign it.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 8 << 20;

/// A mistake in a plugin's `[NAME.http]` section of `grants.toml`.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct HttpGrantError {
    /// Where, as `grants.toml: [plugin].http.allow[0] (https://...)`.
    pub at: String,
    pub message: String,
}

/// The `http` capability's grant for one plugin. Empty: every request denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Requests in flight at once, per plugin call (each call is an instance).
    pub max_concurrent: usize,
    pub endpoints: Vec<Arc<Endpoint>>,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            endpoints: Vec::new(),
        }
    }
}

/// How the host signs requests to one endpoint. The secrets are read from
/// their files at each request (so a rotated token is picked up), never kept
/// here and never handed to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// `Authorization: Bearer <the file's content, trimmed>`.
    Bearer {
        token_file: PathBuf,
    },
    /// `Authorization: Basic ...` of the file's `user:password`.
    Basic {
        credentials_file: PathBuf,
    },
    /// AWS Signature Version 4, credentials from the standard chain (or
    /// the named profile).
    AwsSigV4 {
        service: String,
        region: String,
        /// A profile of the shared files, used instead of the environment.
        profile: Option<String>,
        /// Instead of `~/.aws/credentials` (or `AWS_SHARED_CREDENTIALS_FILE`).
        credentials_file: Option<PathBuf>,
    },
}

/// One allowed `scheme://host[:port]`.
#[derive(Debug)]
pub struct Endpoint {
    /// As written in `grants.toml`, for messages.
    pub url: String,
    pub https: bool,
    /// Lowercase; an IPv6 address keeps its brackets.
    pub host: String,
    pub port: u16,
    pub auth: Auth,
    /// Connecting, TLS and the response's head, together.
    pub timeout: Duration,
    /// Silence allowed between two pieces of the response body.
    pub between_bytes: Duration,
    pub max_response_bytes: u64,
    pub max_request_bytes: u64,
    /// The files the TLS trust was built from, for equality and messages.
    pub tls_files: tls::TlsFiles,
    /// Built at load (certificates parsed once); `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        // The TLS configuration is built from `tls_files`, so they stand for it.
        (
            &self.url,
            self.https,
            &self.host,
            self.port,
            &self.auth,
            self.timeout,
            self.between_bytes,
            self.max_response_bytes,
            self.max_request_bytes,
            &self.tls_files,
        ) == (
            &other.url,
            other.https,
            &other.host,
            other.port,
            &other.auth,
            other.timeout,
            other.between_bytes,
            other.max_response_bytes,
            other.max_request_bytes,
            &other.tls_files,
        )
    }
}

impl Eq for Endpoint {}

/// Scheme, lowercase host and effective port of an authority, or why not.
/// An authority with user info is refused: the allow-list names hosts, and
/// `user@host` is one more way to spell one.
pub fn origin(https: bool, authority: &Authority) -> Option<(String, u16)> {
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Some((host, port))
}

impl HttpPolicy {
    /// The endpoint `uri` is for, when it was granted: same scheme, host and
    /// port, compared as written (the name is what is granted, not whatever
    /// it resolves to).
    pub fn find(&self, uri: &Uri) -> Option<&Arc<Endpoint>> {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return None,
        };
        let (host, port) = origin(https, uri.authority()?)?;
        self.endpoints
            .iter()
            .find(|e| e.https == https && e.host == host && e.port == port)
    }

    /// Parses `[NAME.http]`: `max_concurrent_requests` and the `allow` list.
    /// `at(key)` names a place in the file; unknown keys become warnings, as
    /// elsewhere in `grants.toml`.
    pub fn from_toml(
        value: &toml::Value,
        at: &dyn Fn(&str) -> String,
        warnings: &mut Vec<String>,
    ) -> Result<HttpPolicy, HttpGrantError> {
        let fail = |key: &str, message: String| HttpGrantError {
            at: at(key),
            message,
        };
        let Some(table) = value.as_table() else {
            return Err(fail(".http", "must be a table".into()));
        };
        let mut policy = HttpPolicy::default();
        for (key, value) in table {
            match key.as_str() {
                "max_concurrent_requests" => {
                    policy.max_concurrent = value
                        .as_integer()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| {
                            fail(
                                ".http.max_concurrent_requests",
                                "a number from 1 to 1024".into(),
                            )
                        })?;
                }
                "allow" => {
                    let Some(entries) = value.as_array() else {
                        return Err(fail(
                            ".http.allow",
                            "a list of [[NAME.http.allow]] tables".into(),
                        ));
                    };
                    for (index, entry) in entries.iter().enumerate() {
                        let endpoint = parse_endpoint(entry, index, at, warnings)?;
                        if let Some(same) = policy.endpoints.iter().find(|e| {
                            (e.https, &e.host, e.port)
                                == (endpoint.https, &endpoint.host, endpoint.port)
                        }) {
                            return Err(fail(
                                &format!(".http.allow[{index}] ({})", endpoint.url),
                                format!("the same origin as {} above", same.url),
                            ));
                        }
                        policy.endpoints.push(Arc::new(endpoint));
                    }
                }
                other => warnings.push(format!("{}: unknown key `{other}`, ignored", at(".http"))),
            }
        }
        Ok(policy)
    }
}

fn parse_endpoint(
    entry: &toml::Value,
    index: usize,
    at: &dyn Fn(&str) -> String,
    warnings: &mut Vec<String>,
) -> Result<Endpoint, HttpGrantError> {
    let url = entry
        .get("url")
        .and_then(|u| u.as_str())
        .unwrap_or_default()
        .to_string();
    let place = at(&format!(".http.allow[{index}] ({url})"));
    let fail = |message: String| HttpGrantError {
        at: place.clone(),
        message,
    };
    let Some(table) = entry.as_table() else {
        return Err(fail("must be a table".into()));
    };
    let (https, host, port) = parse_url(&url).map_err(fail)?;
    let text = |key: &str| -> Result<Option<String>, HttpGrantError> {
        match table.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| fail(format!("`{key}` must be a non-empty string"))),
        }
    };
    let file = |key: &str| -> Result<Option<PathBuf>, HttpGrantError> {
        let Some(path) = text(key)?.map(PathBuf::from) else {
            return Ok(None);
        };
        if !path.is_absolute() {
            return Err(fail(format!("`{key}` must be an absolute path")));
        }
        if !path.is_file() {
            return Err(fail(format!(
                "`{key}`: {} is not a readable file",
                path.display()
            )));
        }
        Ok(Some(path))
    };
    let number = |key: &str, default: u64| -> Result<u64, HttpGrantError> {
        match table.get(key) {
            None => Ok(default),
            Some(value) => value
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| fail(format!("`{key}` must be a positive whole number"))),
        }
    };
    let needs = |key: &str, what: &str| fail(format!("auth = \"{what}\" needs `{key}`"));
    let auth = match text("auth")?.as_deref() {
        None | Some("none") => Auth::None,
        Some("bearer") => Auth::Bearer {
            token_file: file("token_file")?.ok_or_else(|| needs("token_file", "bearer"))?,
        },
        Some("basic") => Auth::Basic {
            credentials_file: file("credentials_file")?
                .ok_or_else(|| needs("credentials_file", "basic"))?,
        },
        Some("aws-sigv4") => Auth::AwsSigV4 {
            service: text("aws_service")?.ok_or_else(|| needs("aws_service", "aws-sigv4"))?,
            region: text("aws_region")?.ok_or_else(|| needs("aws_region", "aws-sigv4"))?,
            profile: text("aws_profile")?,
            credentials_file: file("aws_credentials_file")?,
        },
        Some(other) => {
            return Err(fail(format!(
                "auth {other:?}: expected \"bearer\", \"basic\", \"aws-sigv4\" or \"none\""
            )));
        }
    };
    let tls_files = tls::TlsFiles {
        ca_file: file("ca_file")?,
        client_cert_file: file("client_cert_file")?,
        client_key_file: file("client_key_file")?,
    };
    let tls = if https {
        Some(tls::client_config(&tls_files).map_err(fail)?)
    } else if tls_files != tls::TlsFiles::default() {
        return Err(fail(
            "ca_file, client_cert_file and client_key_file need an https:// url".into(),
        ));
    } else {
        None
    };
    const KNOWN: &[&str] = &[
        "url",
        "auth",
        "token_file",
        "credentials_file",
        "aws_service",
        "aws_region",
        "aws_profile",
        "aws_credentials_file",
        "timeout_seconds",
        "between_bytes_timeout_seconds",
        "max_response_bytes",
        "max_request_bytes",
        "ca_file",
        "client_cert_file",
        "client_key_file",
    ];
    for key in table.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        warnings.push(format!("{place}: unknown key `{key}`, ignored"));
    }
    Ok(Endpoint {
        url: url.clone(),
        https,
        host,
        port,
        auth,
        timeout: Duration::from_secs(number("timeout_seconds", DEFAULT_TIMEOUT.as_secs())?),
        between_bytes: Duration::from_secs(number(
            "between_bytes_timeout_seconds",
            DEFAULT_BETWEEN_BYTES.as_secs(),
        )?),
        max_response_bytes: number("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)?,
        max_request_bytes: number("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)?,
        tls_files,
        tls,
    })
}

/// `scheme://host[:port]`, a trailing `/` allowed, nothing else: a path
/// would suggest the grant is narrower than it is.
fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    if url.is_empty() {
        return Err("`url` is missing: give it as scheme://host[:port]".into());
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}): give it as scheme://host[:port]"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the scheme must be http or https".into()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "no host: give it as scheme://host[:port]".to_string())?;
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if !path_ok {
        return Err("a grant names an origin, scheme://host[:port], without a path".into());
    }
    let (host, port) = origin(https, authority)
        .ok_or_else(|| "user info (user@host) is not allowed in a grant".to_string())?;
    Ok((https, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<HttpPolicy, HttpGrantError> {
        let value: toml::Value = toml::from_str(text).expect("toml");
        let mut warnings = Vec::new();
        HttpPolicy::from_toml(&value, &|key| format!("[p]{key}"), &mut warnings)
    }

    #[test]
    fn origins_match_by_scheme_host_and_port() {
        let granted = policy(
            r#"
            max_concurrent_requests = 2
            [[allow]]
            url = "http://Example.com:8080/"
            [[allow]]
            url = "https://api.example.com"
            "#,
        )
        .expect("valid");
        assert_eq!(granted.max_concurrent, 2);
        let found = |u: &str| {
            granted
                .find(&u.parse().expect("uri"))
                .map(|e| e.url.clone())
        };
        assert_eq!(
            found("http://example.com:8080/x"),
            Some("http://Example.com:8080/".into())
        );
        assert_eq!(
            found("https://API.example.com:443/"),
            Some("https://api.example.com".into())
        );
        for denied in [
            "http://example.com/x",
            "https://example.com:8080/",
            "http://api.example.com/",
            "https://api.example.com:8443/",
            "http://user@example.com:8080/",
            "https://api.example.com.evil.net/",
        ] {
            assert_eq!(found(denied), None, "{denied}");
        }
    }

    #[test]
    fn mistakes_name_the_entry() {
        for (text, says) in [
            ("[[allow]]\nurl = \"ftp://x\"", "scheme"),
            ("[[allow]]\nurl = \"http://x/path\"", "without a path"),
            ("[[allow]]\nurl = \"http://u@x\"", "user info"),
            (
                "[[allow]]\nurl = \"http://x\"\nauth = \"bearer\"",
                "needs `token_file`",
            ),
            (
                "[[allow]]\nurl = \"http://x\"\nauth = \"aws-sigv4\"\naws_service = \"ecs\"",
                "aws_region",
            ),
            (
                "[[allow]]\nurl = \"http://x\"\nauth = \"magic\"",
                "expected",
            ),
            (
                "[[allow]]\nurl = \"http://x\"\ntoken_file = \"relative\"\nauth = \"bearer\"",
                "absolute",
            ),
            (
                "[[allow]]\nurl = \"http://x\"\n[[allow]]\nurl = \"http://X:80\"",
                "same origin",
            ),
            (
                "[[allow]]\nurl = \"http://x\"\ntimeout_seconds = 0",
                "positive",
            ),
            (
                "[[allow]]\nurl = \"http://x\"\nca_file = \"/etc/hostname\"",
                "https://",
            ),
            ("max_concurrent_requests = 0", "1 to 1024"),
        ] {
            let error = policy(text).expect_err(text).to_string();
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.starts_with("[p].http"), "{error}");
        }
        let error = policy("[[allow]]\nurl = \"http://x/path\"")
            .expect_err("path")
            .to_string();
        assert!(error.contains("allow[0] (http://x/path)"), "{error}");
    }
}
