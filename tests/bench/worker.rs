//! Worker benchmark: `cargo bench --bench benches -- worker`.
//!
//! A real `host serve` and a real `host worker start` process on this machine.
//! For the process plugin (command `true`) and mock-serverless (all durations
//! zero, which shows the platform's own overhead):
//! - dispatch: run created → RUNNING recorded (the plugin's `start` returned),
//!   and created → PENDING (claimed), from the run's own state history;
//! - end to end: created → COMPLETED recorded, one run at a time;
//! - throughput: 1,000 runs through one worker with `--limit 64`;
//! - idle worker RSS.

use crate::common;

use common::{ServerProcess, WorkerProcess, host_cli, http, run_states};
use serde_json::Value;
use std::time::{Duration, Instant};

const SEQUENTIAL: usize = 200;
const BULK: usize = 1_000;

fn millis(run: &Value, state: &str) -> Option<f64> {
    let created: chrono::DateTime<chrono::Utc> = run["created"].as_str()?.parse().ok()?;
    let mut states = run["history"]
        .as_array()?
        .iter()
        .chain(std::iter::once(&run["state"]));
    let at: chrono::DateTime<chrono::Utc> = states.rfind(|s| s["type"] == state)?["timestamp"]
        .as_str()?
        .parse()
        .ok()?;
    Some((at - created).num_microseconds()? as f64 / 1000.0)
}

fn rss(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map_or("?".into(), |l| {
            l.trim_start_matches("VmRSS:").trim().to_string()
        })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn p99(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) * 99 / 100]
}

async fn wait_final(url: &str, id: &str) -> Value {
    loop {
        let (_, run) = http(
            "GET",
            &format!(
                "{url}/api/flow-runs/{id}?wait_ms=5000&changed_after={}",
                chrono::Utc::now().to_rfc3339()
            ),
            None,
            None,
        )
        .await;
        let (_, run) = if run["state"]["type"].is_string() {
            (200, run)
        } else {
            http("GET", &format!("{url}/api/flow-runs/{id}"), None, None).await
        };
        if ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
            .contains(&run["state"]["type"].as_str().unwrap_or(""))
        {
            return run;
        }
    }
}

async fn bench(label: &str, pool_type: &str, deployment_args: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    let ok = |args: &[&str]| {
        let (code, out, err) = host_cli(url, args);
        assert_eq!(code, 0, "{out}{err}");
    };
    ok(&["work-pool", "create", "--type", pool_type, "bench"]);
    ok(&[
        &["deployment", "create", "bench/run", "--pool", "bench"][..],
        deployment_args,
    ]
    .concat());
    let worker = WorkerProcess::start(url, &cache, &["--pool", "bench", "--limit", "64"]);
    common::eventually(url, "/api/work-pools/bench", Duration::from_secs(30), |p| {
        p["status"] == "READY"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss(worker.child.id());

    let (mut pending, mut running, mut completed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SEQUENTIAL {
        let (_, created) = http(
            "POST",
            &format!("{url}/api/deployments/bench/run/runs"),
            Some("{}"),
            None,
        )
        .await;
        let run = wait_final(url, created["id"].as_str().expect("id")).await;
        assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
        pending.extend(millis(&run, "PENDING"));
        running.extend(millis(&run, "RUNNING"));
        completed.extend(millis(&run, "COMPLETED"));
    }

    let started = Instant::now();
    let mut creators = Vec::new();
    for _ in 0..8 {
        let url = url.to_string();
        creators.push(tokio::spawn(async move {
            for _ in 0..BULK / 8 {
                http(
                    "POST",
                    &format!("{url}/api/deployments/bench/run/runs"),
                    Some("{}"),
                    None,
                )
                .await;
            }
        }));
    }
    for c in creators {
        c.await.expect("join");
    }
    loop {
        let states = run_states(url, "bench/run").await;
        if states.len() == SEQUENTIAL + BULK && states.iter().all(|(_, s)| s == "COMPLETED") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "bulk runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bulk = started.elapsed();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_rss = rss(worker.child.id());

    println!("{label}");
    println!(
        "  created -> PENDING (claimed):        p50 {:6.2} ms  p99 {:6.2} ms",
        median(&mut pending),
        p99(&mut pending)
    );
    println!(
        "  created -> RUNNING (start returned): p50 {:6.2} ms  p99 {:6.2} ms",
        median(&mut running),
        p99(&mut running)
    );
    println!(
        "  created -> COMPLETED recorded:       p50 {:6.2} ms  p99 {:6.2} ms",
        median(&mut completed),
        p99(&mut completed)
    );
    println!(
        "  {BULK} runs, one worker, --limit 64:   {:.2} s ({:.0} runs/s)",
        bulk.as_secs_f64(),
        BULK as f64 / bulk.as_secs_f64()
    );
    println!(
        "  idle worker RSS: {idle_rss} before any run, {loaded_rss} idle after the {} runs",
        SEQUENTIAL + BULK
    );
    drop(worker);
    drop(server);
}

pub async fn main(_args: &[String]) {
    bench("process plugin, command `true`", "process", &["--", "true"]).await;
    bench(
        "mock-serverless, all durations 0",
        "mock-serverless",
        &[
            "--job-variable",
            "submit_latency_ms=0",
            "--job-variable",
            "cold_start_ms=0",
            "--job-variable",
            "duration_ms=0",
            "--job-variable",
            "log_lines=0",
        ],
    )
    .await;
    println!(
        "targets: dispatch p50 < 20 ms; end to end p50 < 100 ms; 1,000 runs < 10 s; idle worker RSS < 30 MB"
    );
}
