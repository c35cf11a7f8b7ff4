//! Server, workers and real plugins as separate processes: the seeds' story,
//! the pool swap, exactly-once execution, crashes of workers and the server,
//! cancellation, timeouts and misbehaving plugins.

use crate::common;

use common::{
    ServerProcess, WorkerProcess, create_run, eventually, host_cli, process_alive, run_logs,
    run_states,
};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn ok(url: &str, args: &[&str]) -> String {
    common::host_ok(url, args)
}

async fn final_run(url: &str, id: &str) -> Value {
    common::final_run(url, id, LONG).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test]
async fn the_seed_story_end_to_end_and_the_swap_to_mock_serverless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    // `--type` creates the pool; the first heartbeat makes it READY.
    let _process_worker =
        WorkerProcess::start(url, &cache, &["--pool", "my-pool", "--type", "process"]);
    eventually(url, "/api/work-pools/my-pool", LONG, |p| {
        p["status"] == "READY"
    })
    .await;
    let command = [
        "--",
        "sh",
        "-c",
        "echo hello from $HOST_FLOW_RUN_NAME with $HOST_PARAMETERS",
    ];
    ok(
        url,
        &[
            &[
                "deployment",
                "create",
                "repo-info/default",
                "--pool",
                "my-pool",
                "--param",
                "repo=host",
            ][..],
            &command[..],
        ]
        .concat(),
    );
    let (code, out, err) = host_cli(url, &["deployment", "run", "repo-info/default", "--watch"]);
    assert_eq!(code, 0, "{out}{err}");
    for expected in [
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "hello from",
        "{\"repo\":\"host\"}",
    ] {
        assert!(out.contains(expected), "{expected} in {out}");
    }
    // In the order it happened: the output comes before the final state.
    let at = |text: &str| out.find(text).unwrap_or(usize::MAX);
    let order = [
        at("PENDING"),
        at("RUNNING"),
        at("hello from"),
        at("COMPLETED"),
    ];
    assert!(order.is_sorted(), "{order:?} in\n{out}");

    // The same deployment on a mock-serverless pool: only the pool changes.
    let _mock_worker = WorkerProcess::start(
        url,
        &cache,
        &["--pool", "my-mock-pool", "--type", "mock-serverless"],
    );
    eventually(url, "/api/work-pools/my-mock-pool", LONG, |p| {
        p["status"] == "READY"
    })
    .await;
    ok(
        url,
        &[
            &[
                "deployment",
                "create",
                "repo-info/default",
                "--pool",
                "my-mock-pool",
                "--param",
                "repo=host",
            ][..],
            &command[..],
        ]
        .concat(),
    );
    let (code, out, err) = host_cli(url, &["deployment", "run", "repo-info/default", "--watch"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("COMPLETED") && out.contains("log line 3 of 3"),
        "{out}"
    );

    let (code, out, _) = host_cli(
        url,
        &[
            "deployment",
            "run",
            "repo-info/default",
            "--watch",
            "--job-variable",
            "exit_code=4",
        ],
    );
    assert_eq!(code, 1, "a failed run fails the watch: {out}");
    assert!(out.contains("FAILED"), "{out}");
}

#[tokio::test]
async fn three_workers_execute_each_of_600_runs_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let executions = dir.path().join("executions.log");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    ok(url, &["work-pool", "create", "--type", "process", "shared"]);
    let append = format!("echo $HOST_FLOW_RUN_ID >> {}", executions.display());
    ok(
        url,
        &[
            "deployment",
            "create",
            "count/me",
            "--pool",
            "shared",
            "--",
            "sh",
            "-c",
            &append,
        ],
    );
    let _workers: Vec<WorkerProcess> = (0..3)
        .map(|i| {
            WorkerProcess::start(
                url,
                &cache,
                &[
                    "--pool",
                    "shared",
                    "--name",
                    &format!("w{i}"),
                    "--limit",
                    "16",
                ],
            )
        })
        .collect();
    let mut ids = HashSet::new();
    for _ in 0..600 {
        ids.insert(create_run(url, "count/me", json!({})).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let states = run_states(url, "count/me").await;
        if states.iter().all(|(_, s)| s == "COMPLETED") && states.len() == 600 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all completed: {:?}",
            states
                .iter()
                .filter(|(_, s)| s != "COMPLETED")
                .take(5)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lines: Vec<String> = std::fs::read_to_string(&executions)
        .expect("executions")
        .lines()
        .map(String::from)
        .collect();
    let unique: HashSet<String> = lines.iter().cloned().collect();
    assert_eq!(lines.len(), 600, "executions counted, not states");
    assert_eq!(unique, ids, "every run executed once");
}

#[tokio::test]
async fn a_killed_worker_recovers_its_runs_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    ok(
        url,
        &["work-pool", "create", "--type", "mock-serverless", "remote"],
    );
    ok(
        url,
        &[
            "deployment",
            "create",
            "slow/job",
            "--pool",
            "remote",
            "--job-variable",
            "duration_ms=3000",
            "--job-variable",
            "cold_start_ms=0",
        ],
    );
    ok(url, &["work-pool", "create", "--type", "process", "local"]);
    ok(
        url,
        &[
            "deployment",
            "create",
            "local/job",
            "--pool",
            "local",
            "--",
            "sleep",
            "3",
        ],
    );
    let mut remote = WorkerProcess::start(url, &cache, &["--pool", "remote", "--name", "survivor"]);
    let mut local = WorkerProcess::start(
        url,
        &cache,
        &["--pool", "local", "--name", "local-survivor"],
    );
    let mut remote_runs = Vec::new();
    for _ in 0..4 {
        remote_runs.push(create_run(url, "slow/job", json!({})).await);
    }
    let local_run = create_run(url, "local/job", json!({})).await;
    for id in remote_runs.iter().chain([&local_run]) {
        eventually(url, &format!("/api/flow-runs/{id}"), LONG, |r| {
            r["state"]["type"] == "RUNNING"
        })
        .await;
    }
    remote.kill();
    local.kill();
    let _remote = WorkerProcess::start(url, &cache, &["--pool", "remote", "--name", "survivor"]);
    let _local = WorkerProcess::start(
        url,
        &cache,
        &["--pool", "local", "--name", "local-survivor"],
    );
    for id in &remote_runs {
        let run = final_run(url, id).await;
        assert_eq!(run["state"]["type"], "COMPLETED", "re-attached: {run}");
        assert!(
            run_logs(url, id)
                .await
                .iter()
                .any(|l| l.contains("re-attached"))
        );
    }
    // A local process is held by its supervisor: the restarted worker re-attaches too.
    let run = final_run(url, &local_run).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
}

#[tokio::test]
async fn workers_ride_out_a_killed_server_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let port = free_port().to_string();
    let mut server = ServerProcess::start(dir.path(), &["--port", &port]);
    let url = server.url.clone();
    ok(
        &url,
        &["work-pool", "create", "--type", "mock-serverless", "p"],
    );
    ok(
        &url,
        &[
            "deployment",
            "create",
            "f/d",
            "--pool",
            "p",
            "--job-variable",
            "duration_ms=1500",
            "--job-variable",
            "cold_start_ms=0",
        ],
    );
    let _worker = WorkerProcess::start(&url, &cache, &["--pool", "p", "--limit", "20"]);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(create_run(&url, "f/d", json!({})).await);
    }
    eventually(&url, &format!("/api/flow-runs/{}", ids[0]), LONG, |r| {
        r["state"]["type"] == "RUNNING"
    })
    .await;
    server.kill();
    let server = ServerProcess::start(dir.path(), &["--port", &port]);
    assert_eq!(server.url, url);
    for id in &ids {
        let run = final_run(&url, id).await;
        assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    }
}

#[tokio::test]
async fn misbehaving_plugins_crash_only_their_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    std::fs::copy(common::guests::MISBEHAVE, plugins.join("misbehave.wasm")).expect("copy");
    let plugin_dir = plugins.to_str().expect("utf-8");
    let server = ServerProcess::start(dir.path(), &["--plugin-dir", plugin_dir]);
    let url = server.url.as_str();
    ok(url, &["work-pool", "create", "--type", "misbehave", "bad"]);
    ok(url, &["deployment", "create", "m/run", "--pool", "bad"]);
    let _worker = WorkerProcess::start(
        url,
        &cache,
        &[
            "--pool",
            "bad",
            "--plugin-dir",
            plugin_dir,
            "--plugin-cpu-seconds",
            "0.3",
            "--plugin-memory-mib",
            "64",
        ],
    );
    let cases = [
        ("trap", "deliberate trap in wait"),
        ("loop", "CPU budget"),
        ("alloc", "memory limit of 64 MiB"),
    ];
    for (mode, message) in cases {
        let id = create_run(url, "m/run", json!({"job_variables": {"mode": mode}})).await;
        let run = final_run(url, &id).await;
        assert_eq!(run["state"]["type"], "CRASHED", "{mode}: {run}");
        assert!(
            run["state"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{mode}: {run}"
        );
    }
    let id = create_run(url, "m/run", json!({"job_variables": {"mode": "ok"}})).await;
    assert_eq!(
        final_run(url, &id).await["state"]["type"],
        "COMPLETED",
        "the worker carried on"
    );
}

#[tokio::test]
async fn cancel_timeout_and_throttling_end_runs_as_they_should() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    ok(url, &["work-pool", "create", "--type", "process", "p"]);
    ok(
        url,
        &[
            "deployment",
            "create",
            "f/sleepy",
            "--pool",
            "p",
            "--",
            "sh",
            "-c",
            "echo started; sleep 60",
        ],
    );
    let _worker = WorkerProcess::start(url, &cache, &["--pool", "p", "--stop-grace-seconds", "2"]);

    let id = create_run(url, "f/sleepy", json!({})).await;
    let running = eventually(url, &format!("/api/flow-runs/{id}"), LONG, |r| {
        r["state"]["type"] == "RUNNING"
    })
    .await;
    let handle: Value =
        serde_json::from_str(running["infrastructure_handle"].as_str().expect("handle"))
            .expect("json");
    let pid = handle["pid"].as_i64().expect("pid") as i32;
    ok(url, &["flow-run", "cancel", &id]);
    let run = final_run(url, &id).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    assert!(!process_alive(pid), "the process was stopped");

    let id = create_run(
        url,
        "f/sleepy",
        json!({"job_variables": {"timeout_seconds": 1}}),
    )
    .await;
    let run = final_run(url, &id).await;
    assert_eq!(run["state"]["type"], "FAILED", "{run}");
    assert!(
        run["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{run}"
    );

    ok(
        url,
        &[
            "work-pool",
            "create",
            "--type",
            "mock-serverless",
            "throttled",
        ],
    );
    ok(
        url,
        &[
            "deployment",
            "create",
            "f/throttled",
            "--pool",
            "throttled",
            "--job-variable",
            "throttle_rate=1",
        ],
    );
    let _mock = WorkerProcess::start(url, &cache, &["--pool", "throttled"]);
    let id = create_run(url, "f/throttled", json!({})).await;
    let run = final_run(url, &id).await;
    assert_eq!(run["state"]["type"], "CRASHED", "{run}");
    assert!(
        run["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Throttling")),
        "{run}"
    );
}

#[tokio::test]
async fn run_once_works_off_one_claim_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    ok(
        url,
        &["work-pool", "create", "--type", "mock-serverless", "p"],
    );
    ok(
        url,
        &[
            "deployment",
            "create",
            "f/d",
            "--pool",
            "p",
            "--job-variable",
            "duration_ms=10",
        ],
    );
    let first = create_run(url, "f/d", json!({})).await;
    let second = create_run(url, "f/d", json!({})).await;
    let mut worker = WorkerProcess::start(url, &cache, &["--pool", "p", "--run-once"]);
    let status = worker.child.wait().expect("wait");
    assert!(status.success(), "{status}");
    for id in [first, second] {
        assert_eq!(final_run(url, &id).await["state"]["type"], "COMPLETED");
    }

    // A long-lived worker with a health check stops cleanly on SIGTERM.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut worker = WorkerProcess::start(
        url,
        &cache,
        &[
            "--pool",
            "p",
            "--with-healthcheck",
            "--healthcheck-address",
            &address,
        ],
    );
    eventually(&format!("http://{address}"), "/health", LONG, |h| {
        h["pool"] == "p"
    })
    .await;
    assert!(worker.terminate().success());
    let _ = Path::new(url);
}

/// The value of the first sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn scrape(url: &str) -> String {
    let answer = reqwest::get(url).await.expect("scrape");
    assert_eq!(answer.status(), 200);
    let content_type = answer.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = answer.text().await.expect("text");
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF: {text}"
    );
    text
}

#[tokio::test]
async fn server_and_worker_expose_prometheus_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    ok(
        url,
        &["work-pool", "create", "--type", "process", "metered"],
    );
    ok(
        url,
        &[
            "deployment",
            "create",
            "m/ok",
            "--pool",
            "metered",
            "--",
            "true",
        ],
    );
    let address = format!("127.0.0.1:{}", free_port());
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &[
            "--pool",
            "metered",
            "--with-healthcheck",
            "--healthcheck-address",
            &address,
        ],
    );
    for _ in 0..3 {
        let id = create_run(url, "m/ok", json!({})).await;
        assert_eq!(final_run(url, &id).await["state"]["type"], "COMPLETED");
    }
    // A configuration the process plugin refuses: one plugin error value.
    let bad = create_run(
        url,
        "m/ok",
        json!({"job_variables": {"working_dir": "relative"}}),
    )
    .await;
    assert_eq!(final_run(url, &bad).await["state"]["type"], "CRASHED");

    let text = scrape(&format!("{url}/metrics")).await;
    let completed = r#"host_flow_runs{pool="metered",state="COMPLETED"}"#;
    assert_eq!(sample(&text, completed), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, r#"host_flow_runs{pool="metered",state="CRASHED"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"host_workers_online{pool="metered"}"#),
        Some(1.0)
    );
    assert!(sample(&text, r#"host_claims_total{pool="metered",outcome="runs"}"#) >= Some(1.0));
    assert_eq!(
        sample(&text, r#"host_claimed_runs_total{pool="metered"}"#),
        Some(4.0)
    );
    assert!(
        text.contains(r#"host_claim_duration_seconds_bucket{le="#),
        "{text}"
    );
    let claims = r#"host_http_requests_total{method="POST",route="/api/work-pools/{pool}/claim",status="200"}"#;
    assert!(sample(&text, claims) >= Some(1.0), "{text}");
    assert!(!text.contains(&bad), "no series per run id");

    let text = scrape(&format!("http://{address}/metrics")).await;
    assert_eq!(
        sample(&text, "host_worker_runs_in_flight"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "host_worker_runs_started_total"),
        Some(4.0),
        "{text}"
    );
    let starts = r#"host_worker_plugin_call_duration_seconds_count{plugin="process",call="start"}"#;
    assert_eq!(sample(&text, starts), Some(3.0), "{text}");
    let refused =
        r#"host_worker_plugin_call_errors_total{plugin="process",call="validate",kind="error"}"#;
    assert_eq!(sample(&text, refused), Some(1.0), "{text}");
}
