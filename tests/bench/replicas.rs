//! Store benchmark: `cargo bench --bench replicas`.
//!
//! Real `host serve` processes on loopback: one on redb, one on PostgreSQL,
//! three on one PostgreSQL database. For each, 16 clients (spread over the
//! replicas) create runs, then take them with claims of one run; then a
//! worker polling one replica runs flows created through another, one at a
//! time: created → COMPLETED, from the run's own timestamps. Medians of 3
//! rounds. PostgreSQL is started by the benchmark (Debian's binaries).
//! `cargo bench --bench replicas -- pg1 pg3` measures only those setups;
//! `pg3-plain` is three replicas driven by plain HTTP clients, each kept to
//! its own replica (as behind a load balancer): their writes are relayed by
//! that replica to the leading one, where the crate's client (`pg3`) sends
//! them itself once told.

#[path = "../common/mod.rs"]
mod common;

use common::{ServerProcess, WorkerProcess};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const RUNS: usize = 4_000;
const ROUNDS: usize = 3;
const END_TO_END: usize = 30;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How a bench client talks to its replica.
#[derive(Clone)]
enum Caller {
    /// The crate's client: writes go where the replicas say they are made.
    Host(host::client::Client),
    /// Plain HTTP, always to the same replica.
    Plain(reqwest::Client, String),
}

impl Caller {
    async fn post(&self, path: &str, body: &Value) -> Value {
        match self {
            Caller::Host(client) => client.post(path, body).await.expect(path),
            Caller::Plain(http, base) => {
                let answer = http
                    .post(format!("{base}{path}"))
                    .json(body)
                    .send()
                    .await
                    .expect(path);
                assert!(answer.status().is_success(), "{path}: {}", answer.status());
                answer.json().await.expect(path)
            }
        }
    }
}

/// Runs `count` calls of `call` over 16 clients, client `i` on replica `i % n`.
async fn spread<F, Fut>(clients: &[Caller], count: usize, call: F) -> Vec<Duration>
where
    F: Fn(Caller, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let remaining = Arc::new(AtomicUsize::new(count));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let client = clients[i % clients.len()].clone();
        let (remaining, call) = (remaining.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                if !call(client.clone(), i).await {
                    break;
                }
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("join"));
    }
    all
}

struct Figures {
    create: f64,
    claim: f64,
    claim_p50: Duration,
    claim_p99: Duration,
    end_to_end_p50: Duration,
}

async fn measure(servers: &[ServerProcess], dir: &std::path::Path, plain: bool) -> Figures {
    let clients: Vec<_> = servers
        .iter()
        .map(|s| match plain {
            true => Caller::Plain(reqwest::Client::new(), s.url.clone()),
            false => Caller::Host(host::client::Client::new(&s.url, None)),
        })
        .collect();
    let first = &host::client::Client::new(&servers[0].url, None);
    let _: Value = first
        .post(
            "/api/work-pools",
            &json!({"name": "bench", "type": "process"}),
        )
        .await
        .expect("pool");
    let _: Value = first
        .put(
            "/api/deployments",
            &json!({"flow": "f", "name": "d", "pool": "bench"}),
        )
        .await
        .expect("deployment");
    let (mut creates, mut claims, mut claim_latencies) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let made = spread(&clients, RUNS, |client, _| async move {
            client.post("/api/deployments/f/d/runs", &json!({})).await;
            true
        })
        .await;
        assert_eq!(made.len(), RUNS);
        creates.push(RUNS as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let mut taken = spread(&clients, usize::MAX, |client, i| async move {
            let answer = client
                .post(
                    "/api/work-pools/bench/claim",
                    &json!({"worker": format!("w{i}"), "limit": 1}),
                )
                .await;
            answer["runs"]
                .as_array()
                .is_some_and(|runs| !runs.is_empty())
        })
        .await;
        claims.push(taken.len() as f64 / started.elapsed().as_secs_f64());
        assert_eq!(taken.len(), RUNS, "every run claimed exactly once");
        claim_latencies.append(&mut taken);
    }

    // created → COMPLETED: a worker on the last replica, runs created on the first.
    let _: Value = first
        .put(
            "/api/deployments",
            &json!({"flow": "f", "name": "e2e", "pool": "bench", "command": ["true"]}),
        )
        .await
        .expect("deployment");
    let worker_url = &servers[servers.len() - 1].url;
    let _worker = WorkerProcess::start(worker_url, &dir.join("worker/cache"), &["--pool", "bench"]);
    let mut end_to_end = Vec::new();
    for _ in 0..END_TO_END {
        let run: Value = first
            .post("/api/deployments/f/e2e/runs", &json!({}))
            .await
            .expect("create");
        let id = run["id"].as_str().expect("id");
        let done = common::final_run(&servers[0].url, id, Duration::from_secs(60)).await;
        assert_eq!(done["state"]["type"], "COMPLETED", "{done}");
        let at = |v: &Value| {
            chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time")).expect("rfc3339")
        };
        let took = at(&done["state"]["timestamp"]) - at(&done["created"]);
        end_to_end.push(took.to_std().unwrap_or_default());
    }
    Figures {
        create: median(creates),
        claim: median(claims),
        claim_p50: percentile(&mut claim_latencies, 0.5),
        claim_p99: percentile(&mut claim_latencies, 0.99),
        end_to_end_p50: percentile(&mut end_to_end, 0.5),
    }
}

/// Waits (up to 15 s) until all replicas but the leading one say where
/// writes go, as they do a moment after they start.
async fn settled(servers: &[ServerProcess]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let mut forwarding = 0;
        for server in servers {
            let (_, health) =
                common::http("GET", &format!("{}/api/health", server.url), None, None).await;
            forwarding += usize::from(health["writes_forwarded_to"].is_string());
        }
        if forwarding + 1 >= servers.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("(the replicas did not settle on a leader within 15 s)");
}

fn report(label: &str, f: &Figures) {
    println!(
        "{label:<38} create {:>6.0}/s   claim {:>6.0}/s   claim p50 {:>8.2?} p99 {:>8.2?}   created→COMPLETED p50 {:>8.2?}",
        f.create, f.claim, f.claim_p50, f.claim_p99, f.end_to_end_p50
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench --bench replicas -- pg3` measures only that setup
    // (`redb`, `pg1`, `pg3`); without one, all three.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs = |setup: &str| wanted.is_empty() || wanted.iter().any(|w| w == setup);
    let dir = tempfile::tempdir().expect("tempdir");
    if runs("redb") {
        let redb = {
            let server = ServerProcess::start(&dir.path().join("redb"), &[]);
            measure(
                std::slice::from_ref(&server),
                &dir.path().join("redb"),
                false,
            )
            .await
        };
        report("redb, 1 server", &redb);
    }
    let Some(cluster) = common::postgres::shared() else {
        println!("PostgreSQL is not installed: only redb measured");
        return;
    };
    let setups = [("pg1", 1, false), ("pg3", 3, false), ("pg3-plain", 3, true)];
    for (setup, replicas, plain) in setups.into_iter().filter(|(setup, ..)| runs(setup)) {
        let database = cluster.new_database();
        let base = dir.path().join(setup);
        let servers: Vec<_> = (0..replicas)
            .map(|i| {
                ServerProcess::start_on_postgres(&database, &base.join(format!("cache-{i}")), &[])
            })
            .collect();
        settled(&servers).await;
        let figures = measure(&servers, &base, plain).await;
        let clients = if plain { ", plain HTTP" } else { "" };
        report(
            &format!("PostgreSQL, {replicas} replica(s){clients}"),
            &figures,
        );
    }
    println!(
        "({RUNS} runs per round, {CLIENTS} clients spread over the replicas, claims of 1 run, medians of {ROUNDS} rounds; \
         created→COMPLETED over {END_TO_END} runs created through the first replica and run by a worker polling the last)"
    );
}
