//! The actions a person takes on runs and deployments, over real HTTP and
//! the CLI: retry (a new attempt that a worker claims and reports on with
//! the same keys as before), delete (refused while a worker holds the run),
//! deployment pause/resume (no runs made, none handed out) and delete (its
//! SCHEDULED runs go, started ones stay), and `host work-queue update`.

use crate::common;

use common::{Backend, ServerProcess, TestServer, host_cli, host_ok};
use host::control::ControlConfig;
use serde_json::{Value, json};

async fn setup(s: &TestServer, pool_limit: Option<u32>) {
    let (status, answer) = s
        .post(
            "/api/work-pools",
            json!({"name": "p", "type": "process", "concurrency_limit": pool_limit}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = s
        .put(
            "/api/deployments",
            json!({"flow": "f", "name": "d", "pool": "p"}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
}

async fn new_run(s: &TestServer, deployment: &str, body: Value) -> String {
    let (status, run) = s
        .post(&format!("/api/deployments/{deployment}/runs"), body)
        .await;
    assert_eq!(status, 201, "{run}");
    run["id"].as_str().expect("id").to_string()
}

async fn claim(s: &TestServer, worker: &str) -> Vec<String> {
    let (status, answer) = s
        .post(
            "/api/work-pools/p/claim",
            json!({"worker": worker, "limit": 10}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["flow_run"]["id"].as_str().expect("id").to_string())
        .collect()
}

/// A POST without a body: the actions take none.
async fn act(s: &TestServer, path: impl AsRef<str>) -> (u16, Value) {
    s.request("POST", path.as_ref(), None).await
}

/// Reports a state as the worker does, with its idempotency key.
async fn report(s: &TestServer, id: &str, state: &str, key: &str) -> Value {
    let (status, answer) = s
        .post(
            &format!("/api/flow-runs/{id}/state"),
            json!({"type": state, "worker": "w1", "idempotency_key": format!("{id}:{key}")}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn states(run: &Value) -> Vec<String> {
    run["history"]
        .as_array()
        .expect("history")
        .iter()
        .chain([&run["state"]])
        .map(|s| s["type"].as_str().expect("type").to_string())
        .collect()
}

async fn retry_is_a_new_attempt_claimed_and_reported_like_the_first(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    setup(&s, None).await;
    let id = new_run(&s, "f/d", json!({})).await;
    let (status, answer) = act(&s, &format!("/api/flow-runs/{id}/retry")).await;
    assert_eq!(status, 409, "a SCHEDULED run is not retried: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("SCHEDULED")
    );

    assert_eq!(claim(&s, "w1").await, std::slice::from_ref(&id));
    report(&s, &id, "RUNNING", "running").await;
    let lines = json!([{"message": "first attempt"}]);
    assert_eq!(
        s.post(&format!("/api/flow-runs/{id}/logs"), lines).await.0,
        200
    );
    let failed = s
        .post(
            &format!("/api/flow-runs/{id}/state"),
            json!({"type": "FAILED", "worker": "w1", "exit_code": 3, "idempotency_key": format!("{id}:final")}),
        )
        .await;
    assert_eq!(failed.0, 200, "{}", failed.1);

    let (status, retried) = act(&s, &format!("/api/flow-runs/{id}/retry")).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["state"]["type"], "SCHEDULED");
    assert!(retried["worker"].is_null() && retried["exit_code"].is_null());
    let (status, again) = act(&s, &format!("/api/flow-runs/{id}/retry")).await;
    assert_eq!(status, 409, "retried once: {again}");
    // Stored, not only answered.
    let stored = s.control.run(&id).expect("run");
    assert_eq!(stored.state.state_type, host::model::StateType::Scheduled);

    // Claimed again, and the worker's usual keys apply to the new attempt.
    assert_eq!(
        claim(&s, "w1").await,
        std::slice::from_ref(&id),
        "due at once"
    );
    let running = report(&s, &id, "RUNNING", "running").await;
    assert_eq!(running["applied"], true, "not a replay of attempt 1");
    let done = report(&s, &id, "COMPLETED", "final").await;
    assert_eq!(done["applied"], true);
    assert_eq!(
        states(&done["flow_run"]),
        [
            "SCHEDULED",
            "PENDING",
            "RUNNING",
            "FAILED",
            "SCHEDULED",
            "PENDING",
            "RUNNING",
            "COMPLETED"
        ],
        "the history keeps both attempts"
    );
    let logs = s.get(&format!("/api/flow-runs/{id}/logs")).await.1;
    assert_eq!(logs["lines"][0]["message"], "first attempt", "logs kept");
    let (status, _) = act(&s, &format!("/api/flow-runs/{id}/retry")).await;
    assert_eq!(status, 409, "a COMPLETED run is not retried");
    assert_eq!(act(&s, "/api/flow-runs/nope/retry").await.0, 404);

    // A run whose deployment is gone would never be claimed: refused.
    let other = new_run(&s, "f/d", json!({})).await;
    let (status, _) = act(&s, &format!("/api/flow-runs/{other}/cancel")).await;
    assert_eq!(status, 200);
    assert_eq!(s.delete("/api/deployments/f/d").await.0, 204);
    let (status, answer) = act(&s, &format!("/api/flow-runs/{other}/retry")).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().expect("error").contains("deleted"));
    let kept = s.control.run(&other).expect("run");
    assert_eq!(kept.state.state_type, host::model::StateType::Cancelled);
}

async fn delete_is_refused_while_a_worker_holds_the_run(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    setup(&s, Some(1)).await;
    let id = new_run(&s, "f/d", json!({})).await;
    assert_eq!(claim(&s, "w1").await, std::slice::from_ref(&id));
    report(&s, &id, "RUNNING", "running").await;
    let lines = json!([{"message": "a line"}]);
    assert_eq!(
        s.post(&format!("/api/flow-runs/{id}/logs"), lines).await.0,
        200
    );
    let (status, answer) = s.delete(&format!("/api/flow-runs/{id}")).await;
    assert_eq!(status, 409, "{answer}");
    let error = answer["error"].as_str().expect("error");
    assert!(error.contains("RUNNING") && error.contains("w1"), "{error}");
    act(&s, &format!("/api/flow-runs/{id}/cancel")).await;
    assert_eq!(
        s.delete(&format!("/api/flow-runs/{id}")).await.0,
        409,
        "CANCELLING"
    );
    report(&s, &id, "CANCELLED", "final").await;

    assert_eq!(s.delete(&format!("/api/flow-runs/{id}")).await.0, 204);
    assert_eq!(s.get(&format!("/api/flow-runs/{id}")).await.0, 404);
    assert_eq!(s.get(&format!("/api/flow-runs/{id}/logs")).await.0, 404);
    assert_eq!(s.delete(&format!("/api/flow-runs/{id}")).await.0, 404);
    let listed = s.get("/api/flow-runs").await.1;
    assert_eq!(listed["runs"], json!([]));

    // The pool's one slot is free: the deleted run holds none.
    let waiting = new_run(&s, "f/d", json!({})).await;
    let next = new_run(&s, "f/d", json!({})).await;
    assert_eq!(
        s.delete(&format!("/api/flow-runs/{waiting}")).await.0,
        204,
        "SCHEDULED"
    );
    assert_eq!(
        claim(&s, "w1").await,
        [next],
        "the deleted run is never handed out"
    );
}

async fn a_paused_deployment_makes_and_hands_out_no_runs(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    setup(&s, None).await;
    s.put(
        "/api/deployments",
        json!({"flow": "f", "name": "d", "pool": "p", "schedules": [{"interval_seconds": 600}]}),
    )
    .await;
    s.control.upkeep().await.expect("upkeep");
    let by_hand = new_run(&s, "f/d", json!({})).await;
    let count = |page: &Value| page["runs"].as_array().map_or(0, Vec::len);
    let before = count(&s.get("/api/flow-runs?deployment=f/d").await.1);
    assert!(
        before > 2,
        "the schedule's runs and the one by hand: {before}"
    );

    let (status, paused) = act(&s, "/api/deployments/f/d/pause").await;
    assert_eq!((status, &paused["paused"]), (200, &json!(true)), "{paused}");
    let left = s.get("/api/flow-runs?deployment=f/d").await.1;
    assert_eq!(left["runs"][0]["id"], by_hand.as_str());
    assert_eq!(count(&left), 1, "the schedule's future runs are dropped");
    s.control.upkeep().await.expect("upkeep");
    assert_eq!(
        count(&s.get("/api/flow-runs?deployment=f/d").await.1),
        1,
        "none made"
    );
    assert!(claim(&s, "w1").await.is_empty(), "none handed out");
    assert_eq!(
        act(&s, "/api/deployments/f/d/pause").await.0,
        200,
        "again: no change"
    );
    assert_eq!(s.get("/api/deployments/f/d").await.1["paused"], true);

    let (status, resumed) = act(&s, "/api/deployments/f/d/resume").await;
    assert_eq!((status, &resumed["paused"]), (200, &json!(false)));
    assert_eq!(claim(&s, "w1").await, [by_hand], "handed out once resumed");
    s.control.upkeep().await.expect("upkeep");
    assert!(
        count(&s.get("/api/flow-runs?deployment=f/d").await.1) > 2,
        "scheduled again"
    );
    assert_eq!(act(&s, "/api/deployments/f/nope/pause").await.0, 404);
}

async fn deleting_a_deployment_takes_its_scheduled_runs_and_keeps_started_ones(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    setup(&s, None).await;
    let started = new_run(&s, "f/d", json!({})).await;
    assert_eq!(claim(&s, "w1").await, std::slice::from_ref(&started));
    report(&s, &started, "RUNNING", "running").await;
    let due = new_run(&s, "f/d", json!({})).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let future = new_run(&s, "f/d", json!({"scheduled_at": later})).await;

    let (status, answer) = s.delete("/api/work-pools/p").await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().expect("error").contains("f/d"));

    assert_eq!(s.delete("/api/deployments/f/d").await.0, 204);
    assert_eq!(s.get(&format!("/api/flow-runs/{due}")).await.0, 404);
    assert_eq!(s.get(&format!("/api/flow-runs/{future}")).await.0, 404);
    let kept = report(&s, &started, "COMPLETED", "final").await;
    assert_eq!(
        kept["flow_run"]["state"]["type"], "COMPLETED",
        "it still reports"
    );
    assert_eq!(
        s.delete("/api/work-pools/p").await.0,
        204,
        "the pool goes now"
    );
}

crate::on_both_stores!(
    retry_is_a_new_attempt_claimed_and_reported_like_the_first,
    delete_is_refused_while_a_worker_holds_the_run,
    a_paused_deployment_makes_and_hands_out_no_runs,
    deleting_a_deployment_takes_its_scheduled_runs_and_keeps_started_ones,
);

/// The CLI's commands for these actions: what they print, and a non-zero
/// exit with the server's reason when refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_retries_deletes_pauses_and_updates_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    host_ok(url, &["work-pool", "create", "--type", "process", "p"]);
    host_ok(url, &["deployment", "create", "f/d", "--pool", "p"]);
    let id = common::create_run(url, "f/d", json!({})).await;

    let (code, _, stderr) = host_cli(url, &["flow-run", "retry", &id]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("only a FAILED, CRASHED or CANCELLED run"),
        "{stderr}"
    );
    host_ok(url, &["flow-run", "cancel", &id]);
    let out = host_ok(url, &["flow-run", "retry", &id]);
    assert!(out.contains("SCHEDULED again (attempt 1)"), "{out}");
    let out = host_ok(url, &["flow-run", "delete", &id]);
    assert!(out.contains(&id), "{out}");
    let (code, _, stderr) = host_cli(url, &["flow-run", "delete", &id]);
    assert!(code != 0 && stderr.contains("does not exist"), "{stderr}");

    assert!(host_ok(url, &["deployment", "pause", "f/d"]).contains("Paused"));
    let shown = host_ok(url, &["deployment", "inspect", "f/d", "--output", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&shown).expect("json")["paused"],
        true
    );
    assert!(host_ok(url, &["deployment", "resume", "f/d"]).contains("Resumed"));
    let (code, _, stderr) = host_cli(url, &["deployment", "pause", "f/none"]);
    assert!(code != 0 && stderr.contains("does not exist"), "{stderr}");

    host_ok(url, &["work-queue", "create", "q", "--pool", "p"]);
    let out = host_ok(
        url,
        &[
            "work-queue",
            "update",
            "q",
            "--pool",
            "p",
            "--priority",
            "1",
            "--concurrency-limit",
            "4",
        ],
    );
    assert!(out.contains("priority 1, concurrency limit 4"), "{out}");
    // Pausing leaves the limit alone (a PATCH that sent `null` cleared it).
    host_ok(url, &["work-queue", "pause", "q", "--pool", "p"]);
    let queue: Value = serde_json::from_str(&host_ok(
        url,
        &[
            "work-queue",
            "inspect",
            "q",
            "--pool",
            "p",
            "--output",
            "json",
        ],
    ))
    .expect("json");
    assert_eq!(
        (queue["concurrency_limit"].clone(), queue["paused"].clone()),
        (json!(4), json!(true))
    );
    let out = host_ok(
        url,
        &[
            "work-queue",
            "update",
            "q",
            "--pool",
            "p",
            "--no-concurrency-limit",
        ],
    );
    assert!(out.contains("concurrency limit none"), "{out}");
    let (code, _, stderr) = host_cli(url, &["work-queue", "update", "q", "--pool", "p"]);
    assert!(
        code != 0 && stderr.contains("nothing to change"),
        "{stderr}"
    );
    let (code, _, stderr) = host_cli(
        url,
        &[
            "work-queue",
            "update",
            "q",
            "--pool",
            "p",
            "--priority",
            "0",
        ],
    );
    assert!(code != 0 && stderr.contains("priority"), "{stderr}");
}
