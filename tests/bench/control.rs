//! Control-plane benchmark: `cargo bench --bench benches -- control [MODE]`.
//!
//! One in-process `host serve` on loopback (real HTTP, real redb file with
//! durable commits) and 16 concurrent clients: flow-run creation and claim
//! throughput, claim latency, `flow-run ls` and the web UI's pages with
//! 100,000 runs stored, and the idle RSS of a real `host serve` process.
//!
//! MODE is how requests are authenticated: none (the default, an open
//! server), `token` (every request with the bootstrap token,
//! `HOST_API_TOKEN`), or `scoped` (named tokens: creations with a
//! deployer's, each claiming client with a worker token of its own, reads
//! and the UI with a viewer's), which the server looks up at every request.

use crate::common;

use common::TestServer;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const RUNS: usize = 4_000;
const STORED: usize = 100_000;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

/// The bootstrap token of the `token` and `scoped` modes.
const BOOTSTRAP: &str = "bench-bootstrap-token";

/// Who sends each kind of request.
struct Callers {
    creator: Option<String>,
    /// One per claiming client, `w0`, `w1`...
    workers: Vec<Option<String>>,
    reader: Option<String>,
}

pub async fn main(args: &[String]) {
    let mode = args.first().map_or("none", String::as_str);
    let token = (mode != "none").then_some(BOOTSTRAP);
    let server = TestServer::start_with(token, Default::default()).await;
    let client = host::client::Client::new(&server.url, token.map(String::from));
    crate::bench_deployment(&client).await;
    let callers = match mode {
        "none" | "token" => Callers {
            creator: token.map(String::from),
            workers: vec![token.map(String::from); CLIENTS],
            reader: token.map(String::from),
        },
        "scoped" => {
            let mut workers = Vec::new();
            for i in 0..CLIENTS {
                workers.push(Some(named_token(&client, &format!("w{i}"), "worker").await));
            }
            Callers {
                creator: Some(named_token(&client, "bench-deployer", "deployer").await),
                workers,
                reader: Some(named_token(&client, "bench-viewer", "viewer").await),
            }
        }
        other => panic!("control: no mode `{other}` (none, token or scoped)"),
    };
    println!("mode: {mode}");
    let client = host::client::Client::new(&server.url, callers.reader.clone());

    // Creation: 16 clients, RUNS in all.
    let started = Instant::now();
    let remaining = Arc::new(AtomicUsize::new(RUNS));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = host::client::Client::new(&server.url, callers.creator.clone());
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            while remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let _: serde_json::Value = client
                    .post("/api/deployments/f/d/runs", &json!({}))
                    .await
                    .expect("create");
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    let create_rate = RUNS as f64 / started.elapsed().as_secs_f64();

    // Claims: 16 workers taking one run per call until none are left.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, token) in callers.workers.iter().enumerate() {
        let client = host::client::Client::new(&server.url, token.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let t = Instant::now();
                let answer: host::control::ClaimResponse = client
                    .post(
                        "/api/work-pools/bench/claim",
                        &json!({"worker": format!("w{i}"), "limit": 1}),
                    )
                    .await
                    .expect("claim");
                if answer.runs.is_empty() {
                    return latencies;
                }
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("join"));
    }
    let claim_rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(latencies.len(), RUNS, "every run claimed once");
    let (p50, p99) = (
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
    );

    println!(
        "flow-run creation: {create_rate:.0}/s ({RUNS} runs, {CLIENTS} clients, durable commits)"
    );
    println!("claim:             {claim_rate:.0}/s; latency p50 {p50:?}, p99 {p99:?}");

    // 100,000 stored runs, then `flow-run ls` (first page of 100, as the CLI asks).
    common::store_runs(&server.control, "f/d", STORED - RUNS).await;
    for (label, query) in [
        ("flow-run ls (newest 100)", "limit=100"),
        (
            "flow-run ls --state COMPLETED (none match)",
            "limit=100&state=COMPLETED",
        ),
        ("flow-run ls --pool bench", "limit=100&pool=bench"),
    ] {
        let mut samples = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let page: serde_json::Value = client
                .get(&format!("/api/flow-runs?{query}"))
                .await
                .expect("ls");
            samples.push(t.elapsed());
            assert!(page["runs"].is_array());
        }
        println!(
            "{label} with {STORED} runs stored: p50 {:?}, p99 {:?}",
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.99)
        );
    }
    // The web UI's pages, rendered from the same 100,000 runs.
    let web = common::web_client();
    let cookie = match &callers.reader {
        Some(token) => login(&server.url, token).await,
        None => String::new(),
    };
    for (label, path) in [
        ("UI Work Pools page", "/"),
        ("UI Flow Runs page (newest 50)", "/runs"),
        ("UI Flow Runs page, state filter", "/runs?state=COMPLETED"),
        ("UI pool page, Runs tab", "/pools/bench?tab=runs"),
        ("UI pool page, Work Queues tab", "/pools/bench?tab=queues"),
    ] {
        let mut samples = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let answer = web
                .get(format!("{}{path}", server.url))
                .header("cookie", &cookie)
                .send()
                .await
                .expect("page");
            assert_eq!(answer.status(), 200, "{path}");
            answer.bytes().await.expect("body");
            samples.push(t.elapsed());
        }
        println!(
            "{label} with {STORED} runs stored: p50 {:?}, p99 {:?}",
            percentile(&mut samples, 0.5),
            percentile(&mut samples, 0.99)
        );
    }
    drop(server);

    // Idle RSS of the real server binary.
    let dir = tempfile::tempdir().expect("tempdir");
    let process = common::ServerProcess::start(dir.path(), &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.child.id()))
        .expect("proc status");
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?");
    println!("idle host serve {rss}");
    println!(
        "targets: creation and claim >= 1000/s; ls p50 < 50ms; UI pages p50 < 20ms; idle server RSS < 40 MB"
    );
}

/// A named token (of pool `bench`, for a deployer or worker), made with the
/// bootstrap token.
async fn named_token(admin: &host::client::Client, name: &str, role: &str) -> String {
    let pools = if role == "viewer" {
        json!([])
    } else {
        json!(["bench"])
    };
    let body = json!({"name": name, "role": role, "pools": pools});
    let created: serde_json::Value = admin.post("/api/tokens", &body).await.expect("token");
    created["secret"].as_str().expect("secret").to_string()
}

/// The UI's session cookie (`name=value`) after logging in with `token`.
async fn login(url: &str, token: &str) -> String {
    let web = crate::common::web_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = web
        .get(format!("{url}/login"))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("page");
    let marker = r#"name="csrf" value=""#;
    let at = page.find(marker).expect("csrf field") + marker.len();
    let csrf = &page[at..at + page[at..].find('"').expect("quote")];
    let answer = web
        .post(format!("{url}/login"))
        .form(&[("token", token), ("next", "/"), ("csrf", csrf)])
        .send()
        .await
        .expect("login");
    assert_eq!(answer.status(), 303, "login");
    let cookie = answer.headers()["set-cookie"].to_str().expect("cookie");
    cookie.split(';').next().expect("pair").to_string()
}
