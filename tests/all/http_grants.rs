//! What an operator and a plugin author meet around the `http` capability
//! beyond the allow-list itself: `host plugin test` holding a plugin to
//! tagging what its `start` makes with the flow run id (checked through the
//! host's record of what was sent, against a real recording server), the
//! grants a lone `.wasm` file gets, and an allow entry's own trust: a private
//! CA and a client certificate against a real TLS server that demands one.

use crate::common;
use crate::http_capability::{Recorder, http_client_granted, seen, server};

use common::certs::{Ca, LOCAL_NAMES};
use common::guests;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

struct Lone {
    dir: tempfile::TempDir,
    wasm: PathBuf,
}

/// The http-client guest as a file of its own, outside any plugin directory.
fn lone_plugin() -> Lone {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("http-client.wasm");
    std::fs::copy(guests::HTTP_CLIENT, &wasm).expect("copy");
    Lone { dir, wasm }
}

fn host(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .env("HOST_CACHE_DIR", dir.join("cache"))
        .env("HOST_LOG", "warn,host::capabilities=info")
        .env_remove("HOST_PLUGIN_DIR")
        .output()
        .expect("run host")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The line `host plugin test` printed for check `name`.
fn check_line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` check in:\n{stdout}"))
}

#[tokio::test]
async fn plugin_test_fails_a_start_that_does_not_tag_what_it_makes() {
    let recorder = Recorder::default();
    let origin = server("127.0.0.1", &recorder, String::new()).await;
    let lone = lone_plugin();
    let grants = lone.dir.path().join("grants.toml");
    std::fs::write(
        &grants,
        format!(
            "[http-client]\ncapabilities = [\"http\"]\n\n[[http-client.http.allow]]\nurl = \"http://{origin}\"\n"
        ),
    )
    .expect("grants");
    let wasm = lone.wasm.to_str().expect("utf-8");
    let grants = grants.to_str().expect("utf-8");
    let test_with = |requests: serde_json::Value| {
        let variables = serde_json::json!({ "requests": requests }).to_string();
        let dir = lone.dir.path().to_path_buf();
        let args = [
            "plugin",
            "test",
            wasm,
            "--grants",
            grants,
            "--variables",
            variables.as_str(),
        ]
        .map(String::from);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            host(&dir, &args)
        })
    };

    // Makes a thing and reads it back, the id nowhere: refused, naming it.
    let untagged = test_with(serde_json::json!([
        {"method": "POST", "url": format!("http://{origin}/things"), "body": "{\"name\": \"flow\"}"},
        {"url": format!("http://{origin}/things/1")},
    ]))
    .await
    .expect("join");
    let (stdout, stderr) = text(&untagged);
    assert!(!untagged.status.success(), "{stdout}{stderr}");
    let line = check_line(&stdout, "start-tags");
    assert!(
        line.contains("FAILED") && line.contains("none carried the flow run id"),
        "{line}"
    );
    assert!(
        stdout.contains(&format!("POST http://{origin}/things did not carry it")),
        "{stdout}"
    );
    // The requests really went out, and the suite's record matches.
    let posts: Vec<_> = seen(&recorder)
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    // Each request is a span with the run and the origin.
    assert!(
        stderr.contains("http_request")
            && stderr.contains("flow_run_id=")
            && stderr.contains(&format!("host=\"{origin}\""))
            && stderr.contains("method=POST"),
        "{stderr}"
    );

    // The same, the run id as a tag in the body: passes that check.
    let tagged = test_with(serde_json::json!([
        {"method": "POST", "url": format!("http://{origin}/things"),
         "body": "{\"name\": \"flow\", \"tags\": {\"host.flow-run-id\": \"{flow_run_id}\"}}"},
    ]))
    .await
    .expect("join");
    let (stdout, _) = text(&tagged);
    let line = check_line(&stdout, "start-tags");
    assert!(line.contains("ok") && line.contains("1 of 1"), "{line}");
    let tagged_post = seen(&recorder)
        .into_iter()
        .filter(|r| r.method == "POST")
        .nth(1)
        .expect("the second POST");
    let body = String::from_utf8_lossy(&tagged_post.body).into_owned();
    let run_id = body
        .split("host.flow-run-id\": \"")
        .nth(1)
        .and_then(|rest| rest.get(..36))
        .expect("a run id in the body");
    assert!(uuid::Uuid::parse_str(run_id).is_ok(), "{body}");

    // A plugin whose start sends nothing has nothing remote to tag.
    let none = test_with(serde_json::json!([])).await.expect("join");
    let (stdout, _) = text(&none);
    assert!(check_line(&stdout, "start-tags").contains("ok"), "{stdout}");
}

#[test]
fn a_lone_wasm_file_gets_its_section_of_a_grants_file_and_is_told_when_it_has_none() {
    let lone = lone_plugin();
    let wasm = lone.wasm.to_str().expect("utf-8");
    let out = host(
        lone.dir.path(),
        &["plugin", "inspect", wasm, "--grant", "http"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("log, http"), "{stdout}");
    assert!(
        stderr.contains("`http` is granted with no origins") && stderr.contains("--grants FILE"),
        "{stderr}"
    );

    let grants = lone.dir.path().join("grants.toml");
    std::fs::write(&grants, "[other]\ncapabilities = [\"http\"]\n").expect("grants");
    let grants = grants.to_str().expect("utf-8");
    let out = host(
        lone.dir.path(),
        &["plugin", "inspect", wasm, "--grants", grants],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("has no [http-client] section"), "{stderr}");

    let out = host(
        lone.dir.path(),
        &[
            "plugin",
            "test",
            wasm,
            "--grant",
            "http",
            "--variables",
            "[1]",
        ],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--variables: not a JSON object"),
        "{stderr}"
    );
}

/// A TLS server that demands a client certificate signed by `clients`,
/// answering `ok` to what it can read of one request per connection.
async fn mutual_tls_server(cert: &Path, key: &Path, clients: &Path) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    host::tls::install_default_provider();
    let mut roots = rustls::RootCertStore::empty();
    for ca in host::tls::read_certificates(clients).expect("client CA") {
        roots.add(ca).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            host::tls::read_certificates(cert).expect("cert"),
            host::tls::read_private_key(key).expect("key"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = vec![0; 4096];
                let _ = tls.read(&mut head).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_allow_entry_trusts_its_own_ca_and_presents_its_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server_ca, client_ca) = (
        Ca::new(dir.path(), "server-ca"),
        Ca::new(dir.path(), "client-ca"),
    );
    let (cert, key) = server_ca.issue(dir.path(), "server", LOCAL_NAMES);
    let (client_cert, client_key) = client_ca.issue(dir.path(), "plugin-client", LOCAL_NAMES);
    // Three servers alike, each granted differently.
    let full = mutual_tls_server(&cert, &key, &client_ca.cert).await;
    let no_client_cert = mutual_tls_server(&cert, &key, &client_ca.cert).await;
    let no_ca = mutual_tls_server(&cert, &key, &client_ca.cert).await;
    let path = |p: &PathBuf| p.display().to_string();
    let grants = format!(
        r#"
[http-client]
capabilities = ["http"]

[[http-client.http.allow]]
url = "https://localhost:{full}"
ca_file = "{ca}"
client_cert_file = "{client_cert}"
client_key_file = "{client_key}"

[[http-client.http.allow]]
url = "https://localhost:{no_client_cert}"
ca_file = "{ca}"

[[http-client.http.allow]]
url = "https://localhost:{no_ca}"
client_cert_file = "{client_cert}"
client_key_file = "{client_key}"
"#,
        ca = path(&server_ca.cert),
        client_cert = path(&client_cert),
        client_key = path(&client_key),
    );
    let plugin = http_client_granted(dir.path(), &grants).await;
    let handle = plugin
        .start(common::job(
            "33333333-4444-4555-8666-777777777777",
            serde_json::json!({"requests": [
                {"url": format!("https://localhost:{full}/ok")},
                {"url": format!("https://localhost:{no_client_cert}/ok")},
                {"url": format!("https://localhost:{no_ca}/ok")},
            ]}),
        ))
        .await
        .expect("start");
    let handle: serde_json::Value = serde_json::from_str(&handle).expect("handle");
    let got = handle["results"].as_array().expect("results");
    assert_eq!(got[0]["status"], 200, "{}", got[0]);
    assert_eq!(got[0]["body"], "ok", "{}", got[0]);
    // The server refuses a connection without a client certificate; a
    // server certificate from a CA the entry does not name is not trusted.
    for refused in &got[1..] {
        assert!(refused["status"].is_null(), "{refused}");
        assert!(
            !refused["error"].as_str().unwrap_or_default().is_empty(),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn requests_past_the_in_flight_cap_fail_and_the_cap_is_per_call() {
    let recorder = Recorder::default();
    let origin = server("127.0.0.1", &recorder, String::new()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let grants = format!(
        "[http-client]\ncapabilities = [\"http\"]\n\n[http-client.http]\nmax_concurrent_requests = 2\n\n[[http-client.http.allow]]\nurl = \"http://{origin}\"\n"
    );
    let plugin = http_client_granted(dir.path(), &grants).await;
    let all_at_once = |run: &'static str, count: usize| {
        let plugin = plugin.clone();
        let requests: Vec<_> = (0..count)
            .map(|i| serde_json::json!({"url": format!("http://{origin}/ok?{run}-{i}")}))
            .collect();
        async move {
            let handle = plugin
                .start(common::job(
                    run,
                    serde_json::json!({"requests": requests, "concurrent": true}),
                ))
                .await
                .expect("start");
            let handle: serde_json::Value = serde_json::from_str(&handle).expect("handle");
            handle["results"].as_array().cloned().expect("results")
        }
    };
    // Three sent before any answer is read: the third is past the cap.
    let got = all_at_once("44444444-5555-4666-8777-888888888888", 3).await;
    assert_eq!(got[0]["status"], 200, "{got:?}");
    assert_eq!(got[1]["status"], 200, "{got:?}");
    assert!(
        got[2]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ConnectionLimitReached"),
        "{got:?}"
    );
    assert_eq!(seen(&recorder).len(), 2, "the refused request never left");
    // The next call has a cap of its own.
    let got = all_at_once("55555555-6666-4777-8888-999999999999", 2).await;
    assert!(got.iter().all(|g| g["status"] == 200), "{got:?}");
    assert_eq!(seen(&recorder).len(), 4);
}
