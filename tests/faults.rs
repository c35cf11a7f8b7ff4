//! The fault suite: a nemesis (PostgreSQL stopped immediately, `host serve`
//! killed or paused, a worker paused past its heartbeat timeout) against
//! real processes, and a checker over what the flows themselves wrote:
//! every acknowledged creation exists, every run executed exactly once,
//! every final state matches the exit the flow really had, no run stuck.
//! Each scenario prints its counts.

mod common;

use common::ledger::{
    counting_deployment, counting_workers, create_runs, every_run_exactly_once, executions,
    replicas, url_list,
};
use common::postgres;
use common::{ServerProcess, http};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// An answer from the server once it answers at all (not a 5xx, not a
/// refused connection): the database may still be coming back.
async fn settled_get(url: &str, timeout: Duration) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = http("GET", url, None, None).await;
        if (200..500).contains(&status) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every 201 means the run is on PostgreSQL's disk: a creation followed at
/// once by an immediate stop (no checkpoint, no WAL flush) is there after
/// the restart, 20 times in a row.
#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_creation_survives_an_immediate_postgres_stop() {
    let Some(cluster) = postgres::private() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server =
        ServerProcess::start_on_postgres(&cluster.new_database(), &dir.path().join("cache"), &[]);
    let url = server.url.as_str();
    common::host_ok(url, &["work-pool", "create", "--type", "process", "p"]);
    common::host_ok(url, &["deployment", "create", "f/d", "--pool", "p"]);
    let mut lost = Vec::new();
    for round in 0..20 {
        let (status, run) = settled_post(&format!("{url}/api/deployments/f/d/runs")).await;
        assert_eq!(status, 201, "round {round}: {run}");
        let id = run["id"].as_str().expect("id").to_string();
        cluster.crash();
        cluster.start_again();
        let (status, body) =
            settled_get(&format!("{url}/api/flow-runs/{id}"), Duration::from_secs(60)).await;
        match status {
            200 => {}
            404 => lost.push(id),
            other => panic!("round {round}: {other} {body}"),
        }
    }
    println!("immediate stops: 20 acknowledged creations, {} lost", lost.len());
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
}

/// A creation once the server can write again (after a restart it may
/// answer 503 for a moment).
async fn settled_post(url: &str) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http("POST", url, Some(&json!({}).to_string()), None).await;
        if (200..500).contains(&status) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A burst through two replicas with PostgreSQL stopped immediately in the
/// middle: nothing acknowledged lost, nothing run twice, every run that
/// exited 0 COMPLETED, none stuck.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_with_an_immediate_postgres_restart_loses_nothing() {
    let Some(cluster) = postgres::private() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = replicas(&cluster, dir.path(), 2);
    let ledger: PathBuf = dir.path().join("executed");
    counting_deployment(&url_list(&servers, 0), &ledger);
    let _workers = counting_workers(&servers, dir.path(), 20);
    let mut restarted = false;
    let acknowledged = create_runs(&url_list(&servers, 0), 600, |created| {
        if created >= 300 && !restarted {
            // Mid-load: runs created, taken and running through both replicas.
            let deadline = Instant::now() + Duration::from_secs(60);
            while executions(&ledger).len() < 50 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            restarted = true;
            cluster.crash();
            cluster.start_again();
        }
    })
    .await;
    assert!(restarted);
    let counts = every_run_exactly_once(&servers[0].url, &ledger, &acknowledged).await;
    println!("burst with an immediate PostgreSQL restart: {counts}");
    // Both replicas are back in business, not just the one the checks used.
    for server in &servers {
        let (status, _) = http("GET", &format!("{}/api/work-pools", server.url), None, None).await;
        assert_eq!(status, 200, "{}", server.url);
    }
}

