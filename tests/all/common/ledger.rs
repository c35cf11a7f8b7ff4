//! Runs that count their own executions: a process pool whose flows append
//! their run id to a ledger file, so a checker can tell how many times each
//! run really executed, whatever the server says. Shared by the replica
//! tests and the fault suite.

use super::postgres::Postgres;
use super::{ServerProcess, WorkerProcess};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

pub const TERMINAL: [&str; 4] = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"];

/// `n` replicas on a new database of `cluster`.
pub fn replicas(cluster: &Postgres, dir: &Path, n: usize) -> Vec<ServerProcess> {
    replicas_with(cluster, dir, n, &[])
}

/// `n` replicas on a new database, each started with `extra` arguments.
pub fn replicas_with(
    cluster: &Postgres,
    dir: &Path,
    n: usize,
    extra: &[&str],
) -> Vec<ServerProcess> {
    let database = cluster.new_database();
    (0..n)
        .map(|i| {
            ServerProcess::start_on_postgres(&database, &dir.join(format!("cache-{i}")), extra)
        })
        .collect()
}

/// Replicas that never forward writes (none advertises an address): every
/// write is made where it arrives, so what crosses replicas goes through
/// the database's notifications alone.
pub const NO_FORWARDING: &[&str] = &["--advertise-url="];

/// The replicas' URLs as `HOST_API_URL` lists them, starting with the `first`th.
pub fn url_list(servers: &[ServerProcess], first: usize) -> String {
    (0..servers.len())
        .map(|i| servers[(first + i) % servers.len()].url.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A process pool whose runs append their own id to `ledger`: how many
/// times each run really executed, counted by the runs themselves. Each
/// also writes `executed ID` to its output, which its log must keep.
pub fn counting_deployment(urls: &str, ledger: &Path) {
    super::host_ok(
        urls,
        &["work-pool", "create", "--type", "process", "shared"],
    );
    let script = format!(
        "echo \"$HOST_FLOW_RUN_ID\" >> {}; echo \"executed $HOST_FLOW_RUN_ID\"",
        ledger.display()
    );
    super::host_ok(
        urls,
        &[
            "deployment",
            "create",
            "f/count",
            "--pool",
            "shared",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
}

/// One worker per replica on the counting pool, each polling a different
/// replica first.
pub fn counting_workers(servers: &[ServerProcess], dir: &Path, limit: u32) -> Vec<WorkerProcess> {
    (0..servers.len())
        .map(|i| {
            WorkerProcess::start(
                &url_list(servers, i),
                &dir.join(format!("worker-{i}/cache")),
                &[
                    "--pool",
                    "shared",
                    "--limit",
                    &limit.to_string(),
                    "--name",
                    &format!("w{i}"),
                ],
            )
        })
        .collect()
}

pub fn executions(ledger: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in std::fs::read_to_string(ledger).unwrap_or_default().lines() {
        *counts.entry(id.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Creates `count` runs through a client that fails over between the
/// replicas, retrying what the servers refuse while the database is away.
/// Answers the ids acknowledged (201).
pub async fn create_runs(urls: &str, count: usize, mut midway: impl FnMut(usize)) -> Vec<String> {
    let client = host::client::Client::new(urls, None);
    let mut acknowledged = Vec::with_capacity(count);
    while acknowledged.len() < count {
        midway(acknowledged.len());
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..50.min(count - acknowledged.len()) {
            let client = client.clone();
            batch.spawn(async move {
                client
                    .post::<_, Value>("/api/deployments/f/count/runs", &json!({}))
                    .await
            });
        }
        let mut refused = 0;
        while let Some(answer) = batch.join_next().await {
            match answer.expect("task") {
                Ok(run) => acknowledged.push(run["id"].as_str().expect("id").to_string()),
                Err(error) if error.status().is_none_or(|s| s >= 500) => refused += 1,
                Err(error) => panic!("creation refused: {error}"),
            }
        }
        if refused > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    acknowledged
}

/// What the checker found: every count but `acknowledged` should be 0.
#[derive(Debug, Default)]
pub struct Counts {
    pub acknowledged: usize,
    /// Acknowledged (201), then not stored.
    pub lost: usize,
    /// Executed more than once, by the ledger.
    pub run_twice: usize,
    /// Final, but not COMPLETED, though every flow exits 0 (or COMPLETED
    /// without having executed).
    pub misreported: usize,
    /// Not final within the bound.
    pub stuck: usize,
    /// Executions of runs the server does not know.
    pub unknown: usize,
    /// COMPLETED runs whose log misses the line the flow wrote.
    pub lines_lost: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged, {} lost, {} run twice, {} mis-reported, {} stuck, {} unknown executed, {} log lines lost",
            self.acknowledged,
            self.lost,
            self.run_twice,
            self.misreported,
            self.stuck,
            self.unknown,
            self.lines_lost
        )
    }
}

/// Waits (up to 10 minutes) until every run of `f/count` is terminal, then
/// checks that each completed, ran exactly once, and that every
/// acknowledged run is there; panics with the counts (and an example of
/// each) otherwise. Answers the counts.
pub async fn every_run_exactly_once(url: &str, ledger: &Path, acknowledged: &[String]) -> Counts {
    let deadline = Instant::now() + Duration::from_secs(600);
    let states = loop {
        let states = super::run_states(url, "f/count").await;
        let open = states
            .iter()
            .filter(|(_, s)| !TERMINAL.contains(&s.as_str()))
            .count();
        if (!states.is_empty() && open == 0) || Instant::now() > deadline {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let stored: HashSet<&str> = states.iter().map(|(id, _)| id.as_str()).collect();
    let executed = executions(ledger);
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    let stuck: Vec<_> = states
        .iter()
        .filter(|(_, s)| !TERMINAL.contains(&s.as_str()))
        .collect();
    let misreported: Vec<_> = states
        .iter()
        .filter(|(id, s)| {
            TERMINAL.contains(&s.as_str()) && (s != "COMPLETED" || !executed.contains_key(id))
        })
        .collect();
    let run_twice: Vec<_> = executed.iter().filter(|(_, n)| **n > 1).collect();
    let unknown = executed
        .keys()
        .filter(|id| !stored.contains(id.as_str()))
        .count();
    // A run's log is shipped before its final state is reported.
    let mut lines_lost = Vec::new();
    for (id, state) in &states {
        let line = format!("executed {id}");
        if state == "COMPLETED" && !super::run_logs(url, id).await.contains(&line) {
            lines_lost.push(id);
        }
    }
    let counts = Counts {
        acknowledged: acknowledged.len(),
        lost: lost.len(),
        run_twice: run_twice.len(),
        misreported: misreported.len(),
        stuck: stuck.len(),
        unknown,
        lines_lost: lines_lost.len(),
    };
    assert!(
        lost.is_empty()
            && run_twice.is_empty()
            && misreported.is_empty()
            && stuck.is_empty()
            && unknown == 0
            && lines_lost.is_empty(),
        "{counts}; e.g. lost {:?}, run twice {:?}, mis-reported {:?}, stuck {:?}, line lost {:?}",
        lost.first(),
        run_twice.first(),
        misreported.first(),
        stuck.first(),
        lines_lost.first()
    );
    // The list found the runs through their summaries, written with each
    // run; filtered by state, it must see each one's last state too (a
    // summary left behind by the fault would list it as it was).
    let (_, completed) = super::http(
        "GET",
        &format!("{url}/api/flow-runs?limit=1&deployment=f/count&state=COMPLETED"),
        None,
        None,
    )
    .await;
    assert_eq!(
        completed["total"].as_u64(),
        Some(states.len() as u64),
        "COMPLETED as listed by summary vs as stored: {counts}"
    );
    counts
}
