//! Docker benchmark: `cargo bench --bench benches -- docker` (needs a Docker daemon).
//!
//! Median of 20 runs of `true` in a container: created → COMPLETED recorded
//! through server, worker and the docker plugin, against a bare
//! `docker run --rm IMAGE true` on the same machine.

use crate::common;

use common::docker::{self, TEST_IMAGE};
use common::{ServerProcess, WorkerProcess, host_cli, http};
use std::time::{Duration, Instant};

const RUNS: usize = 20;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub async fn main(_args: &[String]) {
    if docker::ready("docker benchmark").is_none() {
        return;
    }
    let mut bare = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let status = std::process::Command::new("docker")
            .args(["run", "--rm", "--network", "host", TEST_IMAGE, "true"])
            .status()
            .expect("docker run");
        assert!(status.success());
        bare.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    for args in [
        &["work-pool", "create", "--type", "docker", "bench"][..],
        &[
            "deployment",
            "create",
            "bench/true",
            "--pool",
            "bench",
            "--image",
            TEST_IMAGE,
            "--job-variable",
            "image_pull_policy=Never",
            "--",
            "true",
        ][..],
    ] {
        let (code, out, err) = host_cli(url, args);
        assert_eq!(code, 0, "{out}{err}");
    }
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "bench"]);
    common::eventually(url, "/api/work-pools/bench", Duration::from_secs(30), |p| {
        p["status"] == "READY"
    })
    .await;
    let mut through_host = Vec::new();
    for _ in 0..RUNS {
        let (_, run) = http(
            "POST",
            &format!("{url}/api/deployments/bench/true/runs"),
            Some("{}"),
            None,
        )
        .await;
        let id = run["id"].as_str().expect("id").to_string();
        let run = common::eventually(
            url,
            &format!("/api/flow-runs/{id}"),
            Duration::from_secs(60),
            |r| r["state"]["type"] == "COMPLETED",
        )
        .await;
        let created: chrono::DateTime<chrono::Utc> = run["created"]
            .as_str()
            .expect("created")
            .parse()
            .expect("time");
        let done: chrono::DateTime<chrono::Utc> = run["state"]["timestamp"]
            .as_str()
            .expect("time")
            .parse()
            .expect("time");
        through_host.push((done - created).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    let (bare, host) = (median(&mut bare), median(&mut through_host));
    println!("docker run --rm {TEST_IMAGE} true: median {bare:.0} ms ({RUNS} runs)");
    println!("host, docker plugin, created -> COMPLETED: median {host:.0} ms ({RUNS} runs)");
    println!(
        "overhead: {:+.0}% (target < 20%)",
        (host / bare - 1.0) * 100.0
    );
}
