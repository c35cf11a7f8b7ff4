//! The `http` capability with a real component in wasmtime and real HTTP
//! servers on loopback that record what reached them: a plugin reaches only
//! the origins `grants.toml` grants it, the host adds the credentials
//! (bearer, basic, a SigV4 signature this file verifies on its own), the
//! guest can neither set nor read them, and a slow or oversized answer ends
//! in an error, not a hang.

use crate::common;

use common::guests;
use host::plugins::Registry;
use host::runtime::LoadedPlugin;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUN: &str = "22222222-3333-4444-8555-666666666666";
const TOKEN: &str = "s3cr3t-bearer-token";
const BASIC: &str = "robot:pa55w0rd";
const AWS_ID: &str = "AKIDHOSTTEST";
const AWS_SECRET: &str = "hostTestSecretKey/abcdefghijklmnopqrstuv";
const AWS_TOKEN: &str = "hostTestSessionToken";

/// What one server saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub port: u16,
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) type Recorder = Arc<Mutex<Vec<Seen>>>;

pub(crate) fn seen(recorder: &Recorder) -> Vec<Seen> {
    recorder.lock().expect("recorder").clone()
}

/// A server on `ip` that records every request and answers by path.
pub(crate) async fn server(ip: &str, recorder: &Recorder, redirect_to: String) -> SocketAddr {
    use axum::body::{Body, Bytes};
    use axum::response::Response;
    use futures_util::StreamExt;
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let address = listener.local_addr().expect("address");
    let recorder = recorder.clone();
    let flaky = Arc::new(AtomicU32::new(0));
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (recorder, flaky, redirect_to) = (recorder.clone(), flaky.clone(), redirect_to.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let authorization = parts
                .headers
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            recorder.lock().expect("recorder").push(Seen {
                port: address.port(),
                method: parts.method.to_string(),
                path_and_query: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers,
                body: body.to_vec(),
            });
            let answer = Response::builder();
            let answer = match parts.uri.path() {
                "/redirect" => answer
                    .status(302)
                    .header("location", redirect_to)
                    .body(Body::empty()),
                "/slow-head" => {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    answer.body(Body::from("late"))
                }
                "/stall" => answer.body(Body::from_stream(
                    futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("first"))])
                        .chain(futures_util::stream::pending()),
                )),
                "/big" => answer.body(Body::from(vec![b'x'; 2 << 20])),
                "/big-chunked" => answer.body(Body::from_stream(futures_util::stream::iter(
                    (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 64 << 10]))),
                ))),
                "/flaky" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => {
                    answer.status(503).body(Body::from("try again"))
                }
                // An endpoint that echoes credentials in its headers: the
                // host must keep them from the guest.
                _ => answer
                    .header("authorization", format!("echo {authorization}"))
                    .header("x-amz-security-token", "echo")
                    .header("x-visible", "yes")
                    .body(Body::from("ok")),
            };
            answer.unwrap_or_default()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// The http-client guest alone in a plugin directory under `dir` whose
/// grants.toml is `grants`, loaded with no failure or warning.
pub(crate) async fn http_client_granted(dir: &Path, grants: &str) -> Arc<LoadedPlugin> {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("dir");
    std::fs::copy(guests::HTTP_CLIENT, plugins.join("http-client.wasm")).expect("copy");
    std::fs::write(plugins.join("grants.toml"), grants).expect("grants");
    let runtime = common::runtime(&dir.join("cache"));
    let registry = Registry::load(&runtime, Some(&plugins))
        .await
        .expect("registry");
    assert!(registry.failures().is_empty(), "{:?}", registry.failures());
    assert!(registry.warnings().is_empty(), "{:?}", registry.warnings());
    registry.get("http-client").expect("loaded")
}

struct Setup {
    _dir: tempfile::TempDir,
    plugin: Arc<LoadedPlugin>,
    recorder: Recorder,
    bearer: SocketAddr,
    basic: SocketAddr,
    sigv4: SocketAddr,
    limits: SocketAddr,
    other_port: SocketAddr,
    other_host: SocketAddr,
}

/// Four granted origins on 127.0.0.1 (bearer, basic, SigV4, tight limits);
/// one more port there and a server on 127.0.0.2, neither granted.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = Recorder::default();
    let other_host = server("127.0.0.2", &recorder, String::new()).await;
    let redirect = format!("http://{other_host}/ok");
    let bearer = server("127.0.0.1", &recorder, redirect.clone()).await;
    let basic = server("127.0.0.1", &recorder, redirect.clone()).await;
    let sigv4 = server("127.0.0.1", &recorder, redirect.clone()).await;
    let limits = server("127.0.0.1", &recorder, redirect.clone()).await;
    let other_port = server("127.0.0.1", &recorder, redirect).await;
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let token = file("token", &format!("{TOKEN}\n"));
    let basic_file = file("basic", BASIC);
    let aws = file(
        "aws-credentials",
        &format!(
            "[test]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\naws_session_token = {AWS_TOKEN}\n"
        ),
    );
    let grants = format!(
        r#"
[http-client]
capabilities = ["http"]

[[http-client.http.allow]]
url = "http://{bearer}"
auth = "bearer"
token_file = "{token}"

[[http-client.http.allow]]
url = "http://{basic}/"
auth = "basic"
credentials_file = "{basic_file}"

[[http-client.http.allow]]
url = "http://{sigv4}"
auth = "aws-sigv4"
aws_service = "ecs"
aws_region = "eu-west-3"
aws_profile = "test"
aws_credentials_file = "{aws}"

[[http-client.http.allow]]
url = "http://{limits}"
timeout_seconds = 1
between_bytes_timeout_seconds = 1
max_response_bytes = 1048576
"#
    );
    let plugin = http_client_granted(dir.path(), &grants).await;
    Setup {
        _dir: dir,
        plugin,
        recorder,
        bearer,
        basic,
        sigv4,
        limits,
        other_port,
        other_host,
    }
}

/// Runs the guest's requests in one `start`; what each got.
async fn requests(plugin: &LoadedPlugin, requests: serde_json::Value) -> Vec<serde_json::Value> {
    let handle = plugin
        .start(common::job(
            RUN,
            serde_json::json!({ "requests": requests }),
        ))
        .await
        .expect("start");
    let handle: serde_json::Value = serde_json::from_str(&handle).expect("handle");
    handle["results"].as_array().cloned().expect("results")
}

fn error_of(got: &serde_json::Value) -> String {
    got["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_plugin_reaches_only_granted_origins_with_credentials_it_never_sees() {
    let s = setup().await;
    let got = requests(
        &s.plugin,
        serde_json::json!([
            {"url": format!("http://{}/ok", s.bearer), "headers": [["authorization", "Bearer guest-made"]]},
            {"url": format!("http://{}/ok", s.bearer)},
            {"url": format!("http://{}/ok", s.basic), "headers": [["x-amz-security-token", "guest"]]},
            {"url": format!("http://{}/ok", s.basic)},
            {"url": format!("http://{}/ok", s.other_host)},
            {"url": format!("http://{}/ok", s.other_port)},
            {"url": format!("https://{}/ok", s.bearer)},
            {"url": format!("http://{}/redirect", s.bearer), "follow_redirects": 1},
        ]),
    )
    .await;
    // The guest cannot set the credential headers at all.
    for refused in [&got[0], &got[2]] {
        assert!(error_of(refused).contains("forbidden"), "{refused}");
    }
    for granted in [&got[1], &got[3]] {
        assert_eq!(granted["status"], 200, "{granted}");
        let shown = granted.to_string();
        // The echoed credentials were removed on the way back in.
        assert!(
            !shown.contains(TOKEN) && !shown.contains("cm9ib3Q"),
            "{shown}"
        );
        let names: Vec<&str> = granted["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .filter_map(|h| h[0].as_str())
            .collect();
        assert!(names.contains(&"x-visible"), "{names:?}");
        assert!(!names.contains(&"authorization") && !names.contains(&"x-amz-security-token"));
    }
    for denied in &got[4..7] {
        assert!(error_of(denied).contains("denied"), "{denied}");
    }
    assert_eq!(
        got[7]["redirects"][0],
        format!("http://{}/ok", s.other_host)
    );
    assert!(error_of(&got[7]).contains("denied"), "{}", got[7]);

    let seen = seen(&s.recorder);
    let at = |port: u16| seen.iter().filter(|r| r.port == port).collect::<Vec<_>>();
    assert!(at(s.other_host.port()).is_empty(), "{seen:?}");
    assert!(at(s.other_port.port()).is_empty(), "{seen:?}");
    let bearer = at(s.bearer.port());
    // One /ok (the refused one never left) and the /redirect.
    assert_eq!(bearer.len(), 2, "{bearer:?}");
    for request in &bearer {
        let expected = format!("Bearer {TOKEN}");
        assert_eq!(request.header("authorization"), Some(expected.as_str()));
        assert_eq!(request.header("host"), Some(s.bearer.to_string().as_str()));
    }
    let basic = at(s.basic.port());
    assert_eq!(basic.len(), 1, "{basic:?}");
    // base64("robot:pa55w0rd")
    assert_eq!(
        basic[0].header("authorization"),
        Some("Basic cm9ib3Q6cGE1NXcwcmQ=")
    );
    assert_eq!(basic[0].header("x-amz-security-token"), None);
}

#[tokio::test]
async fn requests_to_a_sigv4_origin_carry_a_signature_that_verifies() {
    let s = setup().await;
    let got = requests(
        &s.plugin,
        serde_json::json!([{
            "method": "POST",
            "url": format!("http://{}/v1/tasks?b=2&a=1", s.sigv4),
            "headers": [["content-type", "application/x-amz-json-1.1"], ["x-amz-target", "AmazonEC2ContainerServiceV20141113.RunTask"]],
            "body": "{\"cluster\":\"default\"}",
        }]),
    )
    .await;
    assert_eq!(got[0]["status"], 200, "{}", got[0]);
    assert!(!got[0].to_string().contains(AWS_SECRET));
    let seen = seen(&s.recorder);
    let request = seen
        .iter()
        .find(|r| r.port == s.sigv4.port())
        .expect("the SigV4 origin got the request");
    assert_eq!(request.body, b"{\"cluster\":\"default\"}");
    assert_eq!(request.header("x-amz-security-token"), Some(AWS_TOKEN));
    verify_sigv4(request, "eu-west-3", "ecs");
}

/// Recomputes the signature from what the server received, following AWS's
/// published algorithm, independently of the `aws-sigv4` crate.
fn verify_sigv4(request: &Seen, region: &str, service: &str) {
    let authorization = request.header("authorization").expect("authorization");
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .expect("SigV4 algorithm");
    let field = |name: &str| {
        rest.split(", ")
            .find_map(|part| part.strip_prefix(name))
            .expect(name)
            .to_string()
    };
    let credential = field("Credential=");
    let signed_headers = field("SignedHeaders=");
    let signature = field("Signature=");
    let amz_date = request.header("x-amz-date").expect("x-amz-date");
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    assert_eq!(credential, format!("{AWS_ID}/{scope}"));
    for required in ["host", "x-amz-date", "x-amz-security-token", "x-amz-target"] {
        assert!(
            signed_headers.split(';').any(|h| h == required),
            "{signed_headers}"
        );
    }
    let hex_sha256 = |bytes: &[u8]| host::secret::to_hex(&Sha256::digest(bytes));
    let body_hash = hex_sha256(&request.body);
    assert_eq!(
        request.header("x-amz-content-sha256"),
        Some(body_hash.as_str())
    );
    let (path, query) = request
        .path_and_query
        .split_once('?')
        .unwrap_or((request.path_and_query.as_str(), ""));
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    let canonical_headers: String = signed_headers
        .split(';')
        .map(|name| {
            format!(
                "{name}:{}\n",
                request.header(name).unwrap_or_default().trim()
            )
        })
        .collect();
    let canonical_request = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{body_hash}",
        request.method,
        pairs.join("&")
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    );
    let mut key = hmac(format!("AWS4{AWS_SECRET}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = host::secret::to_hex(&hmac(&key, string_to_sign.as_bytes()));
    assert_eq!(
        signature, expected,
        "canonical request:\n{canonical_request}"
    );
}

/// HMAC-SHA256 (RFC 2104) on sha2 alone.
fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[tokio::test]
async fn slow_stalled_and_oversized_answers_end_in_errors_not_hangs() {
    let s = setup().await;
    let started = Instant::now();
    let got = requests(
        &s.plugin,
        serde_json::json!([
            {"url": format!("http://{}/slow-head", s.limits)},
            {"url": format!("http://{}/stall", s.limits)},
            {"url": format!("http://{}/big", s.limits)},
            {"url": format!("http://{}/big-chunked", s.limits)},
        ]),
    )
    .await;
    // Three deadlines of 1 s, far below the call's own.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    for (got, says) in got
        .iter()
        .zip(["timeout", "timeout", "bodysize", "bodysize"])
    {
        // As the guest's `error-code` reads, in whichever spelling.
        let error = error_of(got).to_lowercase().replace([' ', '-', '_'], "");
        assert!(error.contains(says), "{got}");
    }
    // The host, the plugin and the origin carry on.
    let got = requests(
        &s.plugin,
        serde_json::json!([
            {"url": format!("http://{}/ok", s.limits)},
            {"url": format!("http://{}/flaky", s.limits), "attempts": 3},
        ]),
    )
    .await;
    assert_eq!(got[0]["status"], 200, "{}", got[0]);
    // The SDK's client retried the 503.
    assert_eq!(got[1]["status"], 200, "{}", got[1]);
}

#[tokio::test]
async fn an_ungranted_plugin_importing_outgoing_handler_does_not_load() {
    let cache = tempfile::tempdir().expect("tempdir");
    let error = host::plugins::load_file(
        &common::runtime(cache.path()),
        Path::new(guests::HTTP_CLIENT),
        host::runtime::Grants::log_only(),
    )
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(error.contains("wasi:http/"), "{error}");
    assert!(error.contains("capability `http`"), "{error}");
}

#[tokio::test]
async fn a_mistaken_allow_entry_stops_the_load_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("grants.toml"),
        "[http-client]\ncapabilities = [\"http\"]\n[[http-client.http.allow]]\nurl = \"https://api.example.com\"\nauth = \"bearer\"\n",
    )
    .expect("grants");
    let runtime = common::runtime(&dir.path().join("cache"));
    let error = Registry::load(&runtime, Some(dir.path()))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("[http-client].http.allow[0] (https://api.example.com)")
            && error.contains("needs `token_file`"),
        "{error}"
    );
}
