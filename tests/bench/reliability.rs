//! Reliability benchmark: `cargo bench --bench benches -- reliability`.
//!
//! A real `host serve` and real `host worker start` processes:
//! - a burst: 10,000 runs (process plugin, command `true`) created before a
//!   worker with `--limit 100` starts; wall time from its start to the last
//!   final state, runs/s, and the count of runs by final state (target: all
//!   COMPLETED);
//! - cancel on a full worker: `--limit 1`, the slot busy with `sleep 120`;
//!   time from the cancel request to CANCELLED recorded, from the run's own
//!   state history (CANCELLING -> CANCELLED), over 10 cancels.

use crate::common;

use common::{ServerProcess, WorkerProcess, host_ok, http, run_states};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BURST: usize = 10_000;
const CANCELS: usize = 10;

fn at(run: &Value, state: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut states = run["history"]
        .as_array()?
        .iter()
        .chain(std::iter::once(&run["state"]));
    states.rfind(|s| s["type"] == state)?["timestamp"]
        .as_str()?
        .parse()
        .ok()
}

async fn burst() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    host_ok(url, &["work-pool", "create", "--type", "process", "burst"]);
    host_ok(
        url,
        &[
            "deployment",
            "create",
            "f/burst",
            "--pool",
            "burst",
            "--",
            "true",
        ],
    );
    let client = common::web_client();
    let path = format!("{url}/api/deployments/f/burst/runs");
    for _ in 0..BURST / 100 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..100 {
            batch.spawn(client.post(&path).json(&json!({})).send());
        }
        while let Some(created) = batch.join_next().await {
            assert_eq!(
                created.expect("task").expect("create").status().as_u16(),
                201
            );
        }
    }
    let started = Instant::now();
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "burst", "--limit", "100"],
    );
    let states = loop {
        let states = run_states(url, "f/burst").await;
        let done = states
            .iter()
            .filter(|(_, s)| ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"].contains(&s.as_str()))
            .count();
        if done == BURST {
            break states;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{done} of {BURST} done"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = started.elapsed();
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for (_, state) in states {
        *by_state.entry(state).or_default() += 1;
    }
    println!("burst: {BURST} runs created first, one worker with --limit 100");
    println!(
        "  wall {:.1} s ({:.0} runs/s); final states {by_state:?}",
        wall.as_secs_f64(),
        BURST as f64 / wall.as_secs_f64()
    );
}

async fn cancel_on_a_full_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    host_ok(url, &["work-pool", "create", "--type", "process", "full"]);
    host_ok(
        url,
        &[
            "deployment",
            "create",
            "f/sleep",
            "--pool",
            "full",
            "--",
            "sleep",
            "120",
        ],
    );
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "full", "--limit", "1"],
    );
    let mut millis = Vec::new();
    for _ in 0..CANCELS {
        let id = common::create_run(url, "f/sleep", json!({})).await;
        common::run_in_state(url, &id, &["RUNNING"], Duration::from_secs(60)).await;
        let (status, _) = http(
            "POST",
            &format!("{url}/api/flow-runs/{id}/cancel"),
            Some("{}"),
            None,
        )
        .await;
        assert!(status < 300, "cancel answered {status}");
        let run = common::final_run(url, &id, Duration::from_secs(60)).await;
        assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
        let (Some(asked), Some(done)) = (at(&run, "CANCELLING"), at(&run, "CANCELLED")) else {
            panic!("no CANCELLING/CANCELLED in {run}");
        };
        millis.push((done - asked).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    millis.sort_by(f64::total_cmp);
    println!("cancel on a full worker (--limit 1, sleep 120), {CANCELS} cancels");
    println!(
        "  cancel -> CANCELLED recorded: p50 {:.1} ms, max {:.1} ms",
        millis[millis.len() / 2],
        millis[millis.len() - 1]
    );
}

pub async fn main(_args: &[String]) {
    burst().await;
    cancel_on_a_full_worker().await;
    println!("targets: every burst run COMPLETED; a cancel lands within a second");
}
