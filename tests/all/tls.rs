//! TLS past one machine: the walkthrough over https (CLI, worker, UI,
//! event stream, HTTP/2), clients that refuse what they cannot verify,
//! certificates rotated without a restart, and PostgreSQL over TLS with
//! `sslmode=verify-full`. Certificates come from a CA each test makes with
//! the `openssl` command; nothing leaves the machine.

use crate::common;
use common::certs::{Ca, LOCAL_NAMES};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// An https server with a certificate for `localhost` and 127.0.0.1 from a
/// fresh CA.
fn https_server(dir: &Path) -> (common::ServerProcess, Ca) {
    let ca = Ca::new(dir, "ca");
    let (cert, key) = ca.issue(dir, "server", LOCAL_NAMES);
    let server = common::ServerProcess::start(
        &dir.join("data"),
        &["--tls-cert", text(&cert), "--tls-key", text(&key)],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    (server, ca)
}

/// A reqwest client that trusts `ca`.
fn trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("ca");
    let roots = reqwest::Certificate::from_pem_bundle(&pem).expect("ca pem");
    common::web_builder()
        .tls_certs_merge(roots)
        .build()
        .expect("client")
}

/// `curl --http2` trusting `ca_file`, printing only `-w`'s `write_out`
/// (the body goes nowhere).
fn curl_h2(ca_file: &str, write_out: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2", "--cacert", ca_file])
        .args(["-o", "/dev/null", "-w", write_out])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The seeds' walkthrough, every hop over https: pool, deployment, a worker
/// that runs the flow, `run --watch`, a UI page, the event stream; HTTP/2
/// is offered by ALPN, and a same-origin UI write over HTTP/2 (which names
/// the server in `:authority`, not `Host`) is taken.
#[tokio::test]
async fn the_walkthrough_runs_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ca) = https_server(dir.path());
    let url = server.url.as_str();
    let ca_file = text(&ca.cert);
    let cli = |args: &[&str]| {
        let mut all = vec!["--ca-file", ca_file];
        all.extend_from_slice(args);
        common::host_ok(url, &all)
    };
    cli(&["work-pool", "create", "--type", "process", "p"]);
    cli(&[
        "deployment",
        "create",
        "f/d",
        "--pool",
        "p",
        "--",
        "sh",
        "-c",
        "echo over tls",
    ]);
    let _worker = common::WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "p", "--ca-file", ca_file],
    );
    let watched = cli(&["deployment", "run", "f/d", "--watch"]);
    assert!(
        watched.contains("over tls"),
        "the flow ran and its output came back: {watched}"
    );

    let web = trusting(&ca.cert);
    let page = web.get(format!("{url}/")).send().await.expect("UI page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("page").contains("<html"), "a page");
    let mut events = web
        .get(format!("{url}/api/events"))
        .send()
        .await
        .expect("event stream");
    assert_eq!(events.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), events.chunk())
        .await
        .expect("an event within 10 s")
        .expect("read")
        .expect("a chunk");
    assert!(!first.is_empty());

    let version = curl_h2(ca_file, "%{http_version}", &[&format!("{url}/api/health")]);
    assert_eq!(version, "2", "HTTP/2 by ALPN");
    let created = curl_h2(
        ca_file,
        "%{http_code}",
        &[
            "-H",
            &format!("origin: {url}"),
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name": "p2", "type": "process"}"#,
            &format!("{url}/api/work-pools"),
        ],
    );
    assert_eq!(created, "201", "a same-origin write over HTTP/2");
    // Bodiless: a refused request's body is never read, and over HTTP/2
    // the stream is then reset under a client still sending it.
    let refused = curl_h2(
        ca_file,
        "%{http_code}",
        &[
            "-X",
            "DELETE",
            "-H",
            "origin: https://elsewhere.example",
            &format!("{url}/api/work-pools/p2"),
        ],
    );
    assert_eq!(refused, "403", "a cross-origin write over HTTP/2");
    let still = web
        .get(format!("{url}/api/work-pools/p2"))
        .send()
        .await
        .expect("read");
    assert_eq!(
        still.status(),
        200,
        "the pool the refused request named is still there"
    );
}

/// Without the CA, the CLI and the worker refuse the server: a clear error
/// and a non-zero exit; the worker never reaches the pool.
#[tokio::test]
async fn clients_refuse_a_server_they_cannot_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ca) = https_server(dir.path());
    let url = server.url.as_str();
    let (code, out, err) = common::host_cli(url, &["work-pool", "ls"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("certificate"), "says why: {err}");

    let other = Ca::new(dir.path(), "other");
    let (code, _, err) =
        common::host_cli(url, &["--ca-file", text(&other.cert), "work-pool", "ls"]);
    assert_ne!(code, 0, "another CA is no better");
    assert!(err.contains("certificate"), "{err}");

    common::host_ok(
        url,
        &[
            "--ca-file",
            text(&ca.cert),
            "work-pool",
            "create",
            "--type",
            "process",
            "p",
        ],
    );
    let log = dir.path().join("worker.log");
    let _worker = common::WorkerProcess::start_logging_to(
        url,
        &dir.path().join("cache"),
        &["--pool", "p"],
        &log,
    );
    let said = common::wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("certificate"))
    })
    .await;
    assert!(
        said,
        "the worker says why: {:?}",
        std::fs::read_to_string(&log)
    );
    let pool = common::host_ok(
        url,
        &[
            "--ca-file",
            text(&ca.cert),
            "work-pool",
            "inspect",
            "p",
            "--output",
            "json",
        ],
    );
    let pool: serde_json::Value = serde_json::from_str(&pool).expect("pool json");
    assert_ne!(
        pool["status"], "READY",
        "no worker reached the pool: {pool}"
    );
}

/// A certificate replaced on disk is served without a restart; a broken
/// replacement (or a SIGHUP with one) keeps the last good one serving.
#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Ca::new(dir.path(), "first");
    let (cert, key) = first.issue(dir.path(), "server", LOCAL_NAMES);
    let (live_cert, live_key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&cert, &live_cert).expect("cert");
    std::fs::copy(&key, &live_key).expect("key");
    let server = common::ServerProcess::start(
        &dir.path().join("data"),
        &["--tls-cert", text(&live_cert), "--tls-key", text(&live_key)],
    );
    let url = server.url.clone();
    let health = format!("{url}/api/health");
    let answers = |ca: &Path| {
        let client = trusting(ca);
        let health = health.clone();
        async move {
            client
                .get(&health)
                .send()
                .await
                .is_ok_and(|a| a.status() == 200)
        }
    };
    assert!(answers(&first.cert).await);

    let second = Ca::new(dir.path(), "second");
    let (cert2, key2) = second.issue(dir.path(), "server2", LOCAL_NAMES);
    // As a rotation tool does: the new files written beside, renamed over.
    for (from, to) in [(&key2, &live_key), (&cert2, &live_cert)] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged).expect("stage");
        std::fs::rename(&staged, to).expect("rename");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !answers(&second.cert).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate is served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!answers(&first.cert).await, "the old one is not");

    // A broken rotation: half a file. The server keeps the second one,
    // also when told to reload, and stays up.
    std::fs::write(&live_cert, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("break");
    let pid = rustix::process::Pid::from_raw(server.child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    // Give the reload (on the signal and on the change) its chance to go
    // wrong: it is logged; the answers must stay those of the second CA.
    for _ in 0..10 {
        assert!(
            answers(&second.cert).await,
            "still served after a broken rotation"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut server = server;
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "SIGHUP did not stop it"
    );
}

/// PostgreSQL with `ssl=on`: `sslmode=verify-full` with the CA connects,
/// and every connection the server makes is encrypted; a certificate that
/// does not name the host is refused by verify-full (and taken by
/// verify-ca and require); a bad mode is refused by name.
#[tokio::test]
async fn postgres_over_tls_with_verify_full() {
    let Some(pg) = common::postgres::private() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.issue(dir.path(), "db", LOCAL_NAMES);
    pg.enable_ssl(&cert, &key);
    let url = pg.new_database();
    let database = url.rsplit('/').next().expect("name").to_string();
    let verified = format!("{}?sslmode=verify-full&sslrootcert={}", url, text(&ca.cert));
    let server =
        common::ServerProcess::start_on_postgres(&verified, &dir.path().join("cache"), &[]);
    let (status, body) = server
        .post("/api/work-pools", r#"{"name": "p", "type": "process"}"#)
        .await;
    assert_eq!(status, 201, "{body}");
    let counts = pg.psql(
        "postgres",
        &format!(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{database}'"
        ),
    );
    let (encrypted, clear) = counts.split_once('|').expect("two counts");
    assert!(encrypted.parse::<u32>().expect("count") > 0, "{counts}");
    assert_eq!(clear, "0", "no connection in clear text: {counts}");
    drop(server);

    let (elsewhere_cert, elsewhere_key) =
        ca.issue(dir.path(), "elsewhere", "DNS:db.elsewhere.example");
    pg.enable_ssl(&elsewhere_cert, &elsewhere_key);
    let cache = dir.path().join("cache");
    let refused = serve_refused(&verified, &cache);
    assert!(
        refused.contains("certificate"),
        "verify-full names the problem: {refused}"
    );
    let any_name = verified.replace("verify-full", "verify-ca");
    let server = common::ServerProcess::start_on_postgres(&any_name, &cache, &[]);
    let (status, _) = server.get("/api/work-pools").await;
    assert_eq!(status, 200, "verify-ca does not check the name");
    drop(server);
    // `require` encrypts without a root to check against (libpq's meaning).
    let server =
        common::ServerProcess::start_on_postgres(&format!("{url}?sslmode=require"), &cache, &[]);
    let (status, _) = server.get("/api/work-pools").await;
    assert_eq!(status, 200, "sslmode=require connects");
    drop(server);

    let bad = format!("{url}?sslmode=verify");
    let refused = serve_refused(&bad, &cache);
    assert!(refused.contains("sslmode"), "{refused}");
}

/// `host serve` that must fail at start: its stderr.
fn serve_refused(database_url: &str, cache: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["serve", "--port", "0", "--database-url", database_url])
        .env("HOST_CACHE_DIR", cache)
        .env_remove("HOST_API_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run host serve");
    assert!(!out.status.success(), "host serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
