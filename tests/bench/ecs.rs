//! ECS benchmark: `cargo bench --bench benches -- ecs` (needs Docker and
//! `ministack` on PATH).
//!
//! Medians of `true` through server, worker and the `ecs` plugin against
//! ministack: flow run created -> its ECS task RUNNING (as the emulator's
//! DescribeTasks says; the run's own RUNNING state means only "submitted")
//! and created -> COMPLETED; beside the same task started with the
//! emulator's own RunTask: RunTask -> RUNNING and -> STOPPED. Both sides are
//! timed from this process, polling every 20 ms.

use crate::common;

use common::docker::TEST_IMAGE;
use common::host_cli;
use common::ministack::Ministack;
use common::{ServerProcess, http};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const RUNS: usize = 10;
const TICK: Duration = Duration::from_millis(20);

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub async fn main(_args: &[String]) {
    let Some(ministack) = Ministack::start("ecs benchmark") else {
        return;
    };
    let (direct_running, direct_done) = direct(&ministack);

    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    for args in [
        &["work-pool", "create", "--type", "ecs", "bench"][..],
        &[
            "deployment",
            "create",
            "bench/true",
            "--pool",
            "bench",
            "--image",
            TEST_IMAGE,
            "--",
            "true",
        ][..],
    ] {
        let (code, out, err) = host_cli(url, args);
        assert_eq!(code, 0, "{out}{err}");
    }
    let _worker = ministack.worker(url, &dir.path().join("cache"), &["--pool", "bench"]);
    common::eventually(url, "/api/work-pools/bench", Duration::from_secs(30), |p| {
        p["status"] == "READY"
    })
    .await;
    let (mut running, mut done) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let created = Instant::now();
        let (_, run) = http(
            "POST",
            &format!("{url}/api/deployments/bench/true/runs"),
            Some("{}"),
            None,
        )
        .await;
        let id = run["id"].as_str().expect("id").to_string();
        let mut seen_running = None;
        loop {
            if seen_running.is_none()
                && task_status(&ministack, &id)
                    .is_some_and(|s| s != "PROVISIONING" && s != "PENDING" && s != "ACTIVATING")
            {
                seen_running = Some(ms(created));
            }
            let (_, run) = http("GET", &format!("{url}/api/flow-runs/{id}"), None, None).await;
            match run["state"]["type"].as_str().unwrap_or_default() {
                "COMPLETED" => break,
                "FAILED" | "CRASHED" | "CANCELLED" => panic!("run {id} ended {run}"),
                _ => {}
            }
            assert!(
                created.elapsed() < Duration::from_secs(60),
                "run {id} took over a minute"
            );
            tokio::time::sleep(TICK).await;
        }
        done.push(ms(created));
        // A run fast enough to skip the poll of RUNNING counts as done then.
        running.push(seen_running.unwrap_or_else(|| *done.last().unwrap_or(&0.0)));
    }
    let (dr, dd) = (
        median(&mut direct_running.clone()),
        median(&mut direct_done.clone()),
    );
    let (hr, hd) = (median(&mut running), median(&mut done));
    println!(
        "ministack RunTask -> task RUNNING (or past it): median {dr:.0} ms; -> STOPPED: median {dd:.0} ms ({RUNS} runs)"
    );
    println!(
        "host, ecs plugin, created -> task RUNNING (or past it): median {hr:.0} ms; -> COMPLETED: median {hd:.0} ms ({RUNS} runs)"
    );
    println!(
        "ratio host/direct: RUNNING {:.2}x, COMPLETED {:.2}x",
        hr / dr,
        hd / dd
    );
}

/// The last status of the task started for flow run `id` (its `startedBy`).
fn task_status(ministack: &Ministack, id: &str) -> Option<String> {
    for desired in ["RUNNING", "STOPPED"] {
        let listed = ministack.ecs(
            "ListTasks",
            &json!({"startedBy": id, "desiredStatus": desired}),
        );
        if let Some(arn) = listed["taskArns"][0].as_str() {
            let described = ministack.ecs("DescribeTasks", &json!({"tasks": [arn]}));
            return described["tasks"][0]["lastStatus"]
                .as_str()
                .map(String::from);
        }
    }
    None
}

/// The same task through the emulator's API alone: one definition, then
/// RunTask and DescribeTasks.
fn direct(ministack: &Ministack) -> (Vec<f64>, Vec<f64>) {
    let definition = ministack.ecs(
        "RegisterTaskDefinition",
        &json!({
            "family": "bench-direct",
            "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "prefect", "image": TEST_IMAGE, "essential": true}],
        }),
    );
    let arn = definition["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("a definition")
        .to_string();
    let (mut running, mut done) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let answer = ministack.ecs(
            "RunTask",
            &json!({"taskDefinition": arn, "launchType": "FARGATE",
                    "overrides": {"containerOverrides": [{"name": "prefect", "command": ["true"]}]}}),
        );
        let task = answer["tasks"][0]["taskArn"]
            .as_str()
            .expect("a task")
            .to_string();
        let mut seen_running = None;
        loop {
            let described = ministack.ecs("DescribeTasks", &json!({"tasks": [task]}));
            let status: &Value = &described["tasks"][0]["lastStatus"];
            // `true` may exit before a poll sees RUNNING: past it counts.
            let past = !matches!(
                status.as_str(),
                Some("PROVISIONING" | "PENDING" | "ACTIVATING")
            );
            if past && seen_running.is_none() {
                seen_running = Some(ms(started));
            }
            if status == "STOPPED" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "task {task} took over a minute"
            );
            std::thread::sleep(TICK);
        }
        done.push(ms(started));
        running.push(seen_running.unwrap_or_else(|| *done.last().unwrap_or(&0.0)));
    }
    (running, done)
}
