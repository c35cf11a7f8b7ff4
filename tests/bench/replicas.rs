//! Store benchmark: `cargo bench --bench benches -- replicas`.
//!
//! Real `host serve` processes on loopback: one on redb, one on PostgreSQL,
//! three on one PostgreSQL database, all started first. In each round every
//! setup in turn has 16 clients (spread over its replicas) create runs,
//! then take them with claims of one run; this shared machine's speed
//! drifts by a third within a minute, so setups measured one after the
//! other would compare the drift, while rounds taken in turn see the same
//! machine (the 3-replica over 1-replica figure is given round by round).
//! Then, per setup, a worker polling one replica runs flows created through
//! another, one at a time: created → COMPLETED, from the run's own
//! timestamps. Medians of 5 rounds. PostgreSQL is started by the benchmark
//! (Debian's binaries). `cargo bench --bench benches -- replicas pg1 pg3` measures
//! only those setups; `pg3-plain` is three replicas driven by plain HTTP
//! clients, each kept to its own replica (as behind a load balancer): their
//! writes are relayed by that replica to the leading one, where the crate's
//! client (`pg3`) sends them itself once told. `redb-tls` is `redb` served
//! over https (a certificate from a CA the benchmark makes), its clients
//! and worker trusting that CA: `replicas redb redb-tls` prices TLS, round
//! by round.

use crate::common;

use common::{ServerProcess, WorkerProcess};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const RUNS: usize = 4_000;
const ROUNDS: usize = 5;
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

/// One setup under test: its servers, its clients and its figures so far.
struct Setup {
    /// As named on the command line: `redb`, `redb-tls`, `pg1`, `pg3`, `pg3-plain`.
    name: &'static str,
    label: String,
    servers: Vec<ServerProcess>,
    clients: Vec<Caller>,
    /// The crate's client for the first server (the setup's CA trusted).
    first: host::client::Client,
    /// The CA the worker must trust, for a setup over TLS.
    ca: Option<std::path::PathBuf>,
    dir: std::path::PathBuf,
    creates: Vec<f64>,
    claims: Vec<f64>,
    claim_latencies: Vec<Duration>,
}

impl Setup {
    /// Clients for `servers`, and the pool and deployment the rounds use.
    async fn new(
        name: &'static str,
        label: String,
        servers: Vec<ServerProcess>,
        dir: &std::path::Path,
        plain: bool,
        ca: Option<std::path::PathBuf>,
    ) -> Setup {
        settled(&servers).await;
        let tls = host::tls::ClientTls::load(ca.as_deref(), None, None).expect("CA");
        let clients: Vec<_> = servers
            .iter()
            .map(|s| match plain {
                true => Caller::Plain(common::web_client(), s.url.clone()),
                false => Caller::Host(host::client::Client::with_tls(&s.url, None, &tls)),
            })
            .collect();
        let first = host::client::Client::with_tls(&servers[0].url, None, &tls);
        crate::bench_deployment(&first).await;
        Setup {
            name,
            label,
            servers,
            clients,
            first,
            ca,
            dir: dir.to_path_buf(),
            creates: Vec::new(),
            claims: Vec::new(),
            claim_latencies: Vec::new(),
        }
    }

    /// Creates `RUNS` runs, then claims them all, one per claim.
    async fn round(&mut self) {
        let started = Instant::now();
        let made = spread(&self.clients, RUNS, |client, _| async move {
            client.post("/api/deployments/f/d/runs", &json!({})).await;
            true
        })
        .await;
        assert_eq!(made.len(), RUNS);
        self.creates
            .push(RUNS as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let mut taken = spread(&self.clients, usize::MAX, |client, i| async move {
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
        self.claims
            .push(taken.len() as f64 / started.elapsed().as_secs_f64());
        assert_eq!(taken.len(), RUNS, "every run claimed exactly once");
        self.claim_latencies.append(&mut taken);
    }

    /// created → COMPLETED: a worker on the last replica runs flows created
    /// through the first, one at a time; the median.
    async fn end_to_end(&self) -> Duration {
        let first = &self.first;
        let _: Value = first
            .put(
                "/api/deployments",
                &json!({"flow": "f", "name": "e2e", "pool": "bench", "command": ["true"]}),
            )
            .await
            .expect("deployment");
        let worker_url = &self.servers[self.servers.len() - 1].url;
        let mut worker_args = vec!["--pool", "bench"];
        if let Some(ca) = &self.ca {
            worker_args.extend(["--ca-file", ca.to_str().expect("utf-8 path")]);
        }
        let _worker =
            WorkerProcess::start(worker_url, &self.dir.join("worker/cache"), &worker_args);
        let mut end_to_end = Vec::new();
        for _ in 0..END_TO_END {
            let run: Value = first
                .post("/api/deployments/f/e2e/runs", &json!({}))
                .await
                .expect("create");
            let id = run["id"].as_str().expect("id");
            let done = final_run(first, id).await;
            assert_eq!(done["state"]["type"], "COMPLETED", "{done}");
            let at = |v: &Value| {
                chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time")).expect("rfc3339")
            };
            let took = at(&done["state"]["timestamp"]) - at(&done["created"]);
            end_to_end.push(took.to_std().unwrap_or_default());
        }
        percentile(&mut end_to_end, 0.5)
    }

    async fn report(&mut self) {
        let end_to_end = self.end_to_end().await;
        println!(
            "{:<38} create {:>6.0}/s   claim {:>6.0}/s   claim p50 {:>8.2?} p99 {:>8.2?}   created→COMPLETED p50 {:>8.2?}",
            self.label,
            median(self.creates.clone()),
            median(self.claims.clone()),
            percentile(&mut self.claim_latencies, 0.5),
            percentile(&mut self.claim_latencies, 0.99),
            end_to_end
        );
    }
}

/// The run once it is final; panics after a minute.
async fn final_run(client: &host::client::Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run: Value = client
            .get(&format!("/api/flow-runs/{id}"))
            .await
            .expect("read the run");
        if ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
            .contains(&run["state"]["type"].as_str().unwrap_or(""))
        {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} still {}", run["state"]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (up to 15 s) until all replicas but the leading one say where
/// writes go, as they do a moment after they start.
async fn settled(servers: &[ServerProcess]) {
    if servers.len() < 2 {
        return;
    }
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

/// Each round's figure of `a` over the same round's of `b`, in percent:
/// rounds taken one after the other see the same machine.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| 100.0 * a / b).collect()
}

pub async fn main(args: &[String]) {
    // `cargo bench --bench benches -- replicas pg3` measures only that setup
    // (`redb`, `redb-tls`, `pg1`, `pg3`, `pg3-plain`); without one, all.
    let wanted = args;
    let runs = |setup: &str| wanted.is_empty() || wanted.iter().any(|w| w == setup);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setups = Vec::new();
    if runs("redb") {
        let base = dir.path().join("redb");
        let server = ServerProcess::start(&base, &[]);
        setups.push(
            Setup::new(
                "redb",
                "redb, 1 server".into(),
                vec![server],
                &base,
                false,
                None,
            )
            .await,
        );
    }
    if runs("redb-tls") {
        let base = dir.path().join("redb-tls");
        std::fs::create_dir_all(&base).expect("dir");
        let ca = common::certs::Ca::new(&base, "ca");
        let (cert, key) = ca.issue(&base, "server", common::certs::LOCAL_NAMES);
        let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_string();
        let server = ServerProcess::start(
            &base,
            &["--tls-cert", &path(&cert), "--tls-key", &path(&key)],
        );
        let label = "redb, 1 server, TLS".into();
        setups.push(Setup::new("redb-tls", label, vec![server], &base, false, Some(ca.cert)).await);
    }
    let cluster = common::postgres::shared();
    if cluster.is_none() {
        println!("PostgreSQL is not installed: only redb measured");
    }
    let pg = [("pg1", 1, false), ("pg3", 3, false), ("pg3-plain", 3, true)];
    for (setup, replicas, plain) in pg.into_iter().filter(|(setup, ..)| runs(setup)) {
        let Some(cluster) = cluster else { break };
        let database = cluster.new_database();
        let base = dir.path().join(setup);
        let servers: Vec<_> = (0..replicas)
            .map(|i| {
                ServerProcess::start_on_postgres(&database, &base.join(format!("cache-{i}")), &[])
            })
            .collect();
        let clients = if plain { ", plain HTTP" } else { "" };
        let label = format!("PostgreSQL, {replicas} replica(s){clients}");
        setups.push(Setup::new(setup, label, servers, &base, plain, None).await);
    }
    for round in 0..ROUNDS {
        // Every other round backwards: a setup's round is not always the
        // one after the same other's (whose aftermath, such as PostgreSQL
        // vacuuming its runs, it would always meet).
        let order: Vec<usize> = match round % 2 {
            0 => (0..setups.len()).collect(),
            _ => (0..setups.len()).rev().collect(),
        };
        for i in order {
            setups[i].round().await;
        }
    }
    for setup in &mut setups {
        setup.report().await;
    }
    let find = |name: &str| setups.iter().find(|s| s.name == name);
    for (a, b, label) in [
        ("pg3", "pg1", "3 replicas / 1"),
        ("redb-tls", "redb", "TLS / plain"),
    ] {
        let (Some(a), Some(b)) = (find(a), find(b)) else {
            continue;
        };
        let (creates, claims) = (ratios(&a.creates, &b.creates), ratios(&a.claims, &b.claims));
        let shown = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{r:.0}%"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{label}, round by round: creations {} (median {:.0}%), claims {} (median {:.0}%)",
            shown(&creates),
            median(creates.clone()),
            shown(&claims),
            median(claims.clone())
        );
    }
    println!(
        "({RUNS} runs per round, {CLIENTS} clients spread over the replicas, claims of 1 run, medians of {ROUNDS} rounds \
         taken by the setups in turn; created→COMPLETED over {END_TO_END} runs created through the first replica and run by a worker polling the last)"
    );
}
