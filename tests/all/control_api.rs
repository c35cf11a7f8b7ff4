//! The control plane over real HTTP, served in-process with a real redb file.

use crate::common;

use common::{Backend, TestServer, http};
use host::control::ControlConfig;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

async fn create_pool(s: &TestServer, body: Value) -> (u16, Value) {
    s.post("/api/work-pools", &body).await
}

async fn deployment(s: &TestServer, body: Value) -> (u16, Value) {
    s.put("/api/deployments", &body).await
}

async fn run(s: &TestServer, name: &str, body: Value) -> (u16, Value) {
    s.post(&format!("/api/deployments/{name}/runs"), &body)
        .await
}

async fn claim(s: &TestServer, pool: &str, body: Value) -> Value {
    let (status, answer) = s
        .post(&format!("/api/work-pools/{pool}/claim"), &body)
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn pool_count(s: &TestServer) -> usize {
    s.get("/api/work-pools")
        .await
        .1
        .as_array()
        .map_or(0, Vec::len)
}

fn claimed_ids(answer: &Value) -> Vec<String> {
    answer["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["flow_run"]["id"].as_str().expect("id").to_string())
        .collect()
}

async fn pools_validate_their_input_and_store_nothing_when_it_is_bad(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    let (status, pool) = create_pool(&s, json!({"name": "p1", "type": "process"})).await;
    assert_eq!(status, 201, "{pool}");
    assert_eq!(pool["status"], "NOT_READY");
    assert_eq!(
        pool["base_job_template"]["job_configuration"]["command"], "{{ command }}",
        "default template from the plugin"
    );

    let cases = [
        (json!({"name": "p1", "type": "process"}), 409, "name"),
        (json!({"name": "p2", "type": "kubernetes"}), 400, "type"),
        (json!({"name": "bad name!", "type": "process"}), 400, "name"),
        (
            json!({"name": "host-internal", "type": "process"}),
            400,
            "name",
        ),
        (
            json!({"name": "p3", "type": "process", "concurrency_limit": -1}),
            400,
            "concurrency_limit",
        ),
        (
            json!({"name": "p4", "type": "process", "colour": "red"}),
            400,
            "body",
        ),
        (
            json!({"name": "p5", "type": "process", "base_job_template": {"job_configuration": {"x": "{{ y }}"}, "variables": {"properties": {}}}}),
            400,
            "base_job_template",
        ),
    ];
    for (body, status, field) in cases {
        let (got, answer) = create_pool(&s, body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
        if field != "body" {
            assert_eq!(answer["field"], field, "{body} -> {answer}");
        }
    }
    let (status, answer) = s.post("/api/work-pools", "{not json").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        pool_count(&s).await,
        1,
        "nothing stored by the bad requests"
    );

    let (status, queues) = s.get("/api/work-pools/p1/queues").await;
    assert_eq!(status, 200);
    assert_eq!(queues[0]["name"], "default");

    let (status, _) = s
        .post(
            "/api/work-pools/p1/workers/heartbeat",
            r#"{"name": "w1", "heartbeat_interval_seconds": 5}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.get("/api/work-pools/p1").await.1["status"], "READY");
    s.patch("/api/work-pools/p1", r#"{"paused": true}"#).await;
    assert_eq!(s.get("/api/work-pools/p1").await.1["status"], "PAUSED");
    let (status, _) = s.delete("/api/work-pools/p1").await;
    assert_eq!(status, 204);
    assert_eq!(s.get("/api/work-pools/p1").await.0, 404);
}

async fn queue_priorities_stay_unique_by_shifting_the_others(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    create_pool(&s, json!({"name": "p", "type": "process"})).await;
    let url = format!("{}/api/work-pools/p/queues", s.url);
    assert_eq!(
        http("POST", &url, Some(r#"{"name": "low"}"#), None).await.1["priority"],
        2
    );
    assert_eq!(
        http(
            "POST",
            &url,
            Some(r#"{"name": "urgent", "priority": 1}"#),
            None
        )
        .await
        .1["priority"],
        1
    );
    let queues = http("GET", &url, None, None).await.1;
    let order: Vec<(&str, u64)> = queues
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| {
            (
                q["name"].as_str().expect("name"),
                q["priority"].as_u64().expect("priority"),
            )
        })
        .collect();
    assert_eq!(order, [("urgent", 1), ("default", 2), ("low", 3)]);
    let (status, answer) = http("DELETE", &format!("{url}/default"), None, None).await;
    assert_eq!(status, 409, "{answer}");
}

async fn deployments_are_idempotent_and_validate_job_variables(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    create_pool(&s, json!({"name": "mock", "type": "mock-serverless"})).await;
    let spec = json!({"flow": "etl", "name": "daily", "pool": "mock", "command": ["echo", "hi"], "job_variables": {"duration_ms": 5}});
    let (status, first) = deployment(&s, spec.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = deployment(&s, spec).await;
    assert_eq!(status, 200);
    assert_eq!(first["deployment"]["id"], second["deployment"]["id"]);
    assert_eq!(second["created"], false);

    // Malformed input is a 400; a pool that is not there a 404; job
    // variables that do not fit the pool's template a 409 (as in Prefect:
    // whether they fit depends on the template at the time).
    let bad = [
        (
            json!({"flow": "etl", "name": "x", "pool": "mock", "job_variables": {"duration_ms": "long"}}),
            409,
            "job_variables.duration_ms",
        ),
        (
            json!({"flow": "etl", "name": "x", "pool": "mock", "job_variables": {"gpu": true}}),
            409,
            "job_variables.gpu",
        ),
        (
            json!({"flow": "etl", "name": "x", "pool": "nowhere"}),
            404,
            "pool",
        ),
        (
            json!({"flow": "etl", "name": "x", "pool": "mock", "schedules": [{"cron": "every day"}]}),
            400,
            "schedules[0].cron",
        ),
        (
            json!({"flow": "etl", "name": "x", "pool": "mock", "schedules": [{"interval_seconds": 60, "timezone": "Nowhere/Land"}]}),
            400,
            "schedules[0].timezone",
        ),
    ];
    for (body, expected, field) in bad {
        let (status, answer) = deployment(&s, body.clone()).await;
        assert_eq!(status, expected, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    assert_eq!(
        s.get("/api/deployments").await.1.as_array().map(Vec::len),
        Some(1)
    );

    let (status, answer) = run(
        &s,
        "etl/daily",
        json!({"job_variables": {"exit_code": "three"}}),
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (409, Some("job_variables.exit_code"))
    );
    let listed = s.get("/api/flow-runs").await.1;
    assert_eq!(
        listed["runs"].as_array().map(Vec::len),
        Some(0),
        "the refused run was not stored"
    );

    let (status, created) = run(&s, "etl/daily", json!({"parameters": {"day": "monday"}, "job_variables": {"exit_code": 3, "env": {"B": "run"}}})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"]["type"], "SCHEDULED");
    let answer = claim(&s, "mock", json!({"worker": "w1", "limit": 1})).await;
    let claimed = &answer["runs"][0];
    assert_eq!(claimed["flow_run"]["state"]["type"], "PENDING");
    assert_eq!(
        claimed["job_variables"]["duration_ms"], 5,
        "deployment level"
    );
    assert_eq!(claimed["job_variables"]["exit_code"], 3, "run level wins");
    assert_eq!(
        claimed["job_variables"]["cold_start_ms"], 100,
        "pool default"
    );
    assert_eq!(claimed["job_configuration"]["exit_code"], 3, "rendered");
    assert_eq!(claimed["flow_run"]["parameters"]["day"], "monday");
}

async fn claims_follow_priority_then_time_within_limits(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    create_pool(
        &s,
        json!({"name": "p", "type": "process", "concurrency_limit": 2}),
    )
    .await;
    s.post(
        "/api/work-pools/p/queues",
        r#"{"name": "urgent", "priority": 1}"#,
    )
    .await;
    deployment(&s, json!({"flow": "f", "name": "normal", "pool": "p"})).await;
    deployment(
        &s,
        json!({"flow": "f", "name": "urgent", "pool": "p", "queue": "urgent"}),
    )
    .await;
    let past =
        |minutes: i64| (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339();
    let old_normal = run(&s, "f/normal", json!({"scheduled_at": past(10)}))
        .await
        .1["id"]
        .clone();
    let new_urgent = run(&s, "f/urgent", json!({"scheduled_at": past(1)}))
        .await
        .1["id"]
        .clone();
    let newer_normal = run(&s, "f/normal", json!({"scheduled_at": past(5)}))
        .await
        .1["id"]
        .clone();
    let future = run(
        &s,
        "f/normal",
        json!({"scheduled_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}),
    )
    .await
    .1["id"]
        .clone();

    let answer = claim(&s, "p", json!({"worker": "w1", "limit": 10})).await;
    assert_eq!(
        claimed_ids(&answer),
        [
            new_urgent.as_str().expect("id"),
            old_normal.as_str().expect("id")
        ],
        "priority, then time, pool limit 2"
    );
    let answer = claim(&s, "p", json!({"worker": "w1", "limit": 10})).await;
    assert!(claimed_ids(&answer).is_empty(), "the pool is full");

    // Finishing one frees a slot; the future run is not due.
    let id = new_urgent.as_str().expect("id");
    let url = format!("{}/api/flow-runs/{id}/state", s.url);
    for state in ["RUNNING", "COMPLETED"] {
        let (status, answer) = http(
            "POST",
            &url,
            Some(&json!({"type": state, "worker": "w1"}).to_string()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let answer = claim(&s, "p", json!({"worker": "w1", "limit": 10})).await;
    assert_eq!(claimed_ids(&answer), [newer_normal.as_str().expect("id")]);
    assert_ne!(future, Value::Null);
}

async fn a_long_poll_answers_as_soon_as_a_run_is_created(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    create_pool(&s, json!({"name": "p", "type": "process"})).await;
    deployment(&s, json!({"flow": "f", "name": "d", "pool": "p"})).await;
    let poller = {
        let url = s.url.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let body = json!({"worker": "w1", "limit": 1, "wait_ms": 30_000}).to_string();
            let answer = http(
                "POST",
                &format!("{url}/api/work-pools/p/claim"),
                Some(&body),
                None,
            )
            .await
            .1;
            (answer, started.elapsed())
        })
    };
    // Create the run only once the poll is waiting (its claim marked the queue polled).
    let polled = common::wait_until(Duration::from_secs(10), || {
        s.control
            .queue("p", "default")
            .is_ok_and(|q| q.queue.last_polled.is_some())
    })
    .await;
    assert!(polled);
    let (_, created) = run(&s, "f/d", json!({})).await;
    let (answer, elapsed) = poller.await.expect("join");
    assert_eq!(claimed_ids(&answer), [created["id"].as_str().expect("id")]);
    assert!(
        elapsed < Duration::from_secs(30),
        "answered by the event, not the timeout"
    );
}

async fn transitions_follow_the_rules_and_replays_are_harmless(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    create_pool(&s, json!({"name": "p", "type": "process"})).await;
    deployment(&s, json!({"flow": "f", "name": "d", "pool": "p"})).await;
    let id = run(&s, "f/d", json!({})).await.1["id"]
        .as_str()
        .expect("id")
        .to_string();
    let url = format!("{}/api/flow-runs/{id}/state", s.url);
    let (status, answer) = http("POST", &url, Some(r#"{"type": "PENDING"}"#), None).await;
    assert_eq!(status, 409, "only a claim: {answer}");
    claim(&s, "p", json!({"worker": "w1", "limit": 1})).await;
    let (status, _) = http(
        "POST",
        &url,
        Some(r#"{"type": "RUNNING", "worker": "intruder"}"#),
        None,
    )
    .await;
    assert_eq!(status, 409);
    let running = json!({"type": "RUNNING", "worker": "w1", "idempotency_key": "k-1"}).to_string();
    let (status, first) = http("POST", &url, Some(&running), None).await;
    assert_eq!((status, first["applied"].as_bool()), (200, Some(true)));
    let (status, replay) = http("POST", &url, Some(&running), None).await;
    assert_eq!(
        (status, replay["applied"].as_bool()),
        (200, Some(false)),
        "{replay}"
    );
    let done = json!({"type": "FAILED", "worker": "w1", "exit_code": 3}).to_string();
    assert_eq!(http("POST", &url, Some(&done), None).await.0, 200);
    let (status, answer) = http(
        "POST",
        &url,
        Some(r#"{"type": "RUNNING", "worker": "w1"}"#),
        None,
    )
    .await;
    assert_eq!(status, 409, "terminal is final: {answer}");
    let (_, answer) = http("POST", &url, Some(r#"{"type": "BOGUS"}"#), None).await;
    assert_eq!(answer["field"], "type");
    let stored = s.control.run(&id).expect("run");
    assert_eq!(stored.exit_code, Some(3));
    let states: Vec<String> = stored
        .history
        .iter()
        .chain([&stored.state])
        .map(|st| st.state_type.to_string())
        .collect();
    assert_eq!(states, ["SCHEDULED", "PENDING", "RUNNING", "FAILED"]);
}

async fn cancel_is_immediate_for_scheduled_and_reaches_the_worker_otherwise(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    create_pool(&s, json!({"name": "p", "type": "process"})).await;
    deployment(&s, json!({"flow": "f", "name": "d", "pool": "p"})).await;
    let waiting = run(
        &s,
        "f/d",
        json!({"scheduled_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}),
    )
    .await
    .1;
    let (status, cancelled) = http(
        "POST",
        &format!(
            "{}/api/flow-runs/{}/cancel",
            s.url,
            waiting["id"].as_str().expect("id")
        ),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, cancelled["state"]["type"].as_str()),
        (200, Some("CANCELLED"))
    );

    let id = run(&s, "f/d", json!({})).await.1["id"]
        .as_str()
        .expect("id")
        .to_string();
    claim(&s, "p", json!({"worker": "w1", "limit": 1})).await;
    let (_, cancelling) = s
        .request("POST", &format!("/api/flow-runs/{id}/cancel"), None)
        .await;
    assert_eq!(cancelling["state"]["type"], "CANCELLING");
    let answer = claim(
        &s,
        "p",
        json!({"worker": "w1", "limit": 1, "wait_ms": 5000}),
    )
    .await;
    assert_eq!(
        answer["cancelling"],
        json!([id]),
        "the worker hears of it on its next poll"
    );
}

async fn an_api_token_guards_everything_but_health(backend: Backend) {
    let s = TestServer::start_on(backend, Some("s3cret"), ControlConfig::default()).await;
    assert_eq!(s.get("/api/health").await.0, 200);
    let (status, answer) = s.get("/api/work-pools").await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        http(
            "GET",
            &format!("{}/api/work-pools", s.url),
            None,
            Some("wrong")
        )
        .await
        .0,
        401
    );
    assert_eq!(s.get("/api/openapi.json").await.0, 401);
    assert_eq!(
        http(
            "GET",
            &format!("{}/api/work-pools", s.url),
            None,
            Some("s3cret")
        )
        .await
        .0,
        200
    );
    let (status, doc) = http(
        "GET",
        &format!("{}/api/openapi.json", s.url),
        None,
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/work-pools/{pool}/claim"]["post"].is_object());
}

/// What schemathesis found where the server and its document disagreed.
async fn numbers_cursors_and_references_are_read_as_the_document_says(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    // JSON's `4.0` is the integer 4 in the API's own fields...
    let (status, pool) = create_pool(
        &s,
        json!({"name": "p1", "type": "process", "concurrency_limit": 4.0}),
    )
    .await;
    assert_eq!(status, 201, "{pool}");
    assert_eq!(pool["concurrency_limit"], json!(4));
    let answer = claim(
        &s,
        "p1",
        json!({"worker": "w1", "limit": 2.0, "wait_ms": 0.0}),
    )
    .await;
    assert_eq!(answer["runs"], json!([]));
    let (status, answer) = create_pool(
        &s,
        json!({"name": "p2", "type": "process", "concurrency_limit": 4.5}),
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("concurrency_limit"))
    );
    // ...while a flow's own parameters keep the type they were given.
    let spec = json!({"flow": "f", "name": "d", "pool": "p1", "command": ["true"], "parameters": {"ratio": 1.0}});
    let (status, created) = deployment(&s, spec).await;
    assert_eq!(status, 201, "{created}");
    assert!(
        created["deployment"]["parameters"]["ratio"].is_f64(),
        "{created}"
    );

    // Missing references are 404s naming the field.
    let (status, answer) = s
        .post(
            "/api/work-pools/p1/claim",
            r#"{"worker": "w1", "limit": 1, "queues": ["nope"]}"#,
        )
        .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (404, Some("queues")),
        "{answer}"
    );

    // A cursor is a position: any pairs of hex digits, clamped to the listing.
    for _ in 0..3 {
        let (status, run) = run(&s, "f/d", json!({})).await;
        assert_eq!(status, 201, "{run}");
    }
    let list = |query: &'static str| {
        let url = format!("{}/api/flow-runs?{query}", s.url);
        async move { http("GET", &url, None, None).await }
    };
    let (status, first) = list("limit=2").await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, everything) = list("limit=10").await;
    assert_eq!(everything["runs"].as_array().map(Vec::len), Some(3));
    let (_, empty_cursor) = list("limit=10&cursor=").await;
    assert_eq!(
        empty_cursor["runs"], everything["runs"],
        "empty is the first page"
    );
    let (status, beyond) = list("limit=10&cursor=ffff").await;
    assert_eq!(status, 200, "{beyond}");
    assert_eq!(
        beyond["runs"], everything["runs"],
        "past the end is the start"
    );
    let (_, before) = list("limit=10&cursor=00").await;
    assert_eq!(before["runs"], json!([]));
    assert_eq!(before["next_cursor"], Value::Null);
    let url = format!("{}/api/flow-runs?limit=10&cursor={cursor}", s.url);
    let (_, rest) = http("GET", &url, None, None).await;
    assert_eq!(rest["runs"].as_array().map(Vec::len), Some(1), "{rest}");
    let (_, exact) = list("limit=3").await;
    assert_eq!(exact["runs"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        exact["next_cursor"],
        Value::Null,
        "no cursor to an empty page"
    );
    for bad in ["0", "zz", "+1"] {
        let url = format!("{}/api/flow-runs?cursor={bad}", s.url);
        let (status, answer) = http("GET", &url, None, None).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some("cursor")),
            "{bad}"
        );
    }
}

async fn bad_query_parameters_are_4xx_naming_the_field(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    for (query, field) in [
        ("limit=lots", "limit"),
        ("state=DONE", "state"),
        ("limit=0", "limit"),
        ("colour=red", ""),
    ] {
        let (status, answer) = s.get(&format!("/api/flow-runs?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        if !field.is_empty() {
            assert_eq!(answer["field"], field, "{query}: {answer}");
        }
    }
    assert_eq!(s.get("/api/flow-runs/nope").await.0, 404);
    assert_eq!(s.get("/api/nothing-here").await.0, 404);
}

async fn the_scheduler_keeps_runs_ahead_and_marks_late_ones(backend: Backend) {
    let config = ControlConfig {
        late_after: Duration::from_millis(1),
        ..ControlConfig::default()
    };
    let s = TestServer::start_on(backend, None, config).await;
    create_pool(&s, json!({"name": "p", "type": "process"})).await;
    deployment(&s, json!({"flow": "f", "name": "every-10-min", "pool": "p", "schedules": [{"interval_seconds": 600}]})).await;
    s.control.upkeep().await.expect("upkeep");
    let upcoming = s.get("/api/work-pools/p/upcoming?limit=100").await.1;
    let times: Vec<chrono::DateTime<chrono::Utc>> = upcoming
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            r["scheduled_at"]
                .as_str()
                .expect("time")
                .parse()
                .expect("time")
        })
        .collect();
    assert!(
        times.len() >= 6,
        "an hour of 10-minute runs: {}",
        times.len()
    );
    assert!(*times.last().expect("last") >= chrono::Utc::now() + chrono::Duration::minutes(50));
    s.control.upkeep().await.expect("upkeep again");
    let again = s.get("/api/work-pools/p/upcoming?limit=100").await.1;
    assert_eq!(
        again.as_array().map(Vec::len),
        Some(times.len()),
        "no duplicates"
    );

    deployment(&s, json!({"flow": "f", "name": "manual", "pool": "p"})).await;
    let id = run(
        &s,
        "f/manual",
        json!({"scheduled_at": (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339()}),
    )
    .await
    .1["id"]
        .as_str()
        .expect("id")
        .to_string();
    s.control.upkeep().await.expect("upkeep");
    let late = s.control.run(&id).expect("run");
    assert_eq!(
        (late.state.state_type.as_str(), late.state.name.as_str()),
        ("SCHEDULED", "Late")
    );
    let answer = claim(&s, "p", json!({"worker": "w1", "limit": 1})).await;
    assert_eq!(claimed_ids(&answer), [id], "Late runs are still claimable");
}

async fn concurrent_claimers_each_take_every_run_exactly_once(backend: Backend) {
    const RUNS: usize = 2_000;
    const CLAIMERS: usize = 8;
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    create_pool(&s, json!({"name": "p", "type": "process"})).await;
    deployment(&s, json!({"flow": "f", "name": "d", "pool": "p"})).await;
    let mut creators = Vec::new();
    for _ in 0..8 {
        let control = s.control.clone();
        creators.push(tokio::spawn(async move {
            for _ in 0..RUNS / 8 {
                control
                    .create_run("f/d", Default::default())
                    .await
                    .expect("create");
            }
        }));
    }
    for c in creators {
        c.await.expect("join");
    }
    let mut claimers = Vec::new();
    for i in 0..CLAIMERS {
        let client = s.client();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let request = json!({"worker": format!("w{i}"), "limit": 7});
                let answer: host::control::ClaimResponse = client
                    .post("/api/work-pools/p/claim", &request)
                    .await
                    .expect("claim");
                if answer.runs.is_empty() {
                    return mine;
                }
                mine.extend(answer.runs.into_iter().map(|r| r.flow_run.id));
            }
        }));
    }
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.expect("join"));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), RUNS, "every run claimed");
    assert_eq!(unique.len(), RUNS, "none twice");
}

async fn runs_of_a_worker_that_stays_offline_are_crashed_with_the_reason(backend: Backend) {
    let config = ControlConfig {
        worker_lost_after: Duration::ZERO,
        ..ControlConfig::default()
    };
    let s = TestServer::start_on(backend, None, config).await;
    create_pool(&s, json!({"name": "p", "type": "process"})).await;
    deployment(&s, json!({"flow": "f", "name": "d", "pool": "p"})).await;
    let id = run(&s, "f/d", json!({})).await.1["id"]
        .as_str()
        .expect("id")
        .to_string();
    let beat = json!({"name": "w1", "heartbeat_interval_seconds": 1}).to_string();
    s.request("POST", "/api/work-pools/p/workers/heartbeat", Some(&beat))
        .await;
    claim(&s, "p", json!({"worker": "w1", "limit": 1})).await;
    let url = format!("{}/api/flow-runs/{id}/state", s.url);
    http(
        "POST",
        &url,
        Some(r#"{"type": "RUNNING", "worker": "w1"}"#),
        None,
    )
    .await;
    s.control.upkeep().await.expect("upkeep");
    assert_eq!(
        s.control.run(&id).expect("run").state.state_type.as_str(),
        "RUNNING",
        "still online"
    );
    // Three missed 1-second heartbeats make the worker OFFLINE.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        s.control.upkeep().await.expect("upkeep");
        let stored = s.control.run(&id).expect("run");
        if stored.state.state_type.is_terminal() {
            assert_eq!(stored.state.state_type.as_str(), "CRASHED");
            assert!(
                stored
                    .state
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("`w1` stopped heartbeating")),
                "{:?}",
                stored.state
            );
            break;
        }
        assert!(Instant::now() < deadline, "never crashed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let workers = s.get("/api/work-pools/p/workers").await.1;
    assert_eq!(workers[0]["status"], "OFFLINE");
    assert_eq!(s.get("/api/work-pools/p").await.1["status"], "NOT_READY");
}

/// Values the server could store but never act on are refused at once,
/// naming the field, and nothing is stored: an interval past what time
/// arithmetic holds (it panicked the scheduler), parameters too big for a
/// flow's environment (every process run CRASHED with "Argument list too
/// long").
#[tokio::test]
async fn values_no_run_could_use_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    create_pool(&s, json!({"name": "p", "type": "process"})).await;
    let huge = json!({"flow": "f", "name": "huge", "pool": "p",
        "schedules": [{"interval_seconds": 9_223_372_036_854_775_807_u64}]});
    let (status, error) = deployment(&s, huge).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["field"], "schedules[0].interval_seconds", "{error}");
    let big = "x".repeat(200 << 10);
    let (status, error) = deployment(
        &s,
        json!({"flow": "f", "name": "big", "pool": "p", "parameters": {"blob": big}}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["field"], "parameters", "{error}");
    let (status, _) = deployment(&s, json!({"flow": "f", "name": "d", "pool": "p"})).await;
    assert_eq!(status, 201);
    let (status, error) = run(&s, "f/d", json!({"parameters": {"blob": big}})).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["field"], "parameters", "{error}");
    let (_, runs) = s.get("/api/flow-runs").await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
    let (_, deployments) = s.get("/api/deployments").await;
    assert_eq!(
        deployments.as_array().map(Vec::len),
        Some(1),
        "{deployments}"
    );
    s.control.upkeep().await.expect("the scheduler goes on");
    let (_, health) = s.get("/api/health").await;
    assert_eq!(health["status"], "ok", "{health}");
}

/// The points a schemathesis run found in the hand-written document, checked
/// on the generated one.
#[tokio::test]
async fn the_api_document_describes_bodies_parameters_answers_and_auth() {
    let s = TestServer::start_with(Some("s3cret"), ControlConfig::default()).await;
    let (status, doc) = http(
        "GET",
        &format!("{}/api/openapi.json", s.url),
        None,
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    let mut operation_ids = HashSet::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(
                operation_ids.insert(id.to_string()),
                "{method} {path}: duplicate {id}"
            );
        }
    }
    let schemas = &doc["components"]["schemas"];
    let pool_spec = &schemas["PoolSpec"];
    assert_eq!(pool_spec["additionalProperties"], false, "{pool_spec}");
    assert!(
        pool_spec["properties"]["name"]["pattern"].is_string(),
        "{pool_spec}"
    );
    assert!(
        pool_spec["properties"]["name"]["pattern"]
            .as_str()
            .is_some_and(|p| p.contains("(?!host-)")),
        "reserved prefix: {pool_spec}"
    );
    assert_eq!(
        schemas["QueueSpec"]["properties"]["priority"]["maximum"],
        json!(u32::MAX),
        "a u32 is not an int32"
    );
    assert_eq!(
        schemas["Schedule"]["oneOf"].as_array().map(Vec::len),
        Some(2),
        "interval or cron"
    );
    let types = pool_spec["properties"]["type"]["enum"]
        .as_array()
        .expect("installed types");
    assert!(types.contains(&json!("process")), "{types:?}");
    let create = &doc["paths"]["/api/work-pools"]["post"];
    assert!(create["responses"]["201"].is_object(), "{create}");
    assert!(create["responses"]["400"].is_object(), "{create}");
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/PoolSpec"
    );
    assert!(doc["paths"]["/api/work-pools/{pool}"]["delete"]["responses"]["204"].is_object());
    let logs = &doc["paths"]["/api/flow-runs/{id}/logs"]["post"]["requestBody"];
    assert_eq!(
        logs["content"]["application/json"]["schema"]["type"], "array",
        "{logs}"
    );
    let list = doc["paths"]["/api/flow-runs"]["get"]["parameters"]
        .as_array()
        .expect("params");
    let names: HashSet<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    for name in ["pool", "deployment", "state", "limit", "cursor"] {
        assert!(names.contains(name), "{name} undeclared: {names:?}");
    }
    assert_eq!(
        doc["paths"]["/api/health"]["get"]["security"],
        json!([{}]),
        "health needs no token"
    );
    assert_eq!(doc["security"], json!([{"token": []}]));

    // An array where an object belongs is refused, naming the body.
    let (status, answer) = create_pool(&s, json!({})).await;
    assert_eq!(status, 401, "the token guards writes: {answer}");
    let (status, answer) = http(
        "PATCH",
        &format!("{}/api/work-pools/p1", s.url),
        Some("[null, null]"),
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["field"], "body", "{answer}");
}

/// schemathesis (from PyPI; `.ci/run` installs it) against a live server
/// with every default check: no 5xx; every status, content type, header and
/// body as documented; created resources really there; what the document
/// allows accepted and what it forbids refused. Skipped, saying why, where it is missing.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_the_api_as_documented() {
    if std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let s = TestServer::start_with(Some("s3cret"), ControlConfig::default()).await;
    let url = format!("{}/api/openapi.json", s.url);
    let run = || {
        tokio::process::Command::new("schemathesis")
            .args(["run", &url, "-H", "Authorization: Bearer s3cret"])
            // An event stream never ends: it has its own tests (events.rs).
            .args(["--exclude-path", "/api/events"])
            .args([
                "--max-examples",
                "20",
                "--request-timeout",
                "65",
                // One worker: CPython 3.11 before 3.11.8 (gh-106905) builds
                // ASTs unsafely across threads, and hypothesis parses one
                // per strategy it describes.
                "--workers",
                "1",
            ])
            .current_dir(s.dir.path())
            .output()
    };
    // CPython 3.11 before 3.11.8 (gh-106905) can fail inside hypothesis
    // while it describes a strategy: schemathesis's own error, not a finding
    // about the API. Only then, and only with no check failing, run again
    // (a few times: with 29 operations one run in two can hit it).
    let mut output = run().await.expect("run schemathesis");
    for _ in 0..3 {
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        let summary = report.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        let only_the_bug = report.contains("AST constructor recursion depth mismatch")
            && !summary.contains("failure");
        if output.status.success() || !only_the_bug {
            break;
        }
        println!("schemathesis hit the CPython 3.11 AST bug; running it again:\n{report}");
        output = run().await.expect("run schemathesis");
    }
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

crate::on_both_stores!(
    pools_validate_their_input_and_store_nothing_when_it_is_bad,
    queue_priorities_stay_unique_by_shifting_the_others,
    deployments_are_idempotent_and_validate_job_variables,
    claims_follow_priority_then_time_within_limits,
    a_long_poll_answers_as_soon_as_a_run_is_created,
    transitions_follow_the_rules_and_replays_are_harmless,
    cancel_is_immediate_for_scheduled_and_reaches_the_worker_otherwise,
    an_api_token_guards_everything_but_health,
    numbers_cursors_and_references_are_read_as_the_document_says,
    bad_query_parameters_are_4xx_naming_the_field,
    the_scheduler_keeps_runs_ahead_and_marks_late_ones,
    concurrent_claimers_each_take_every_run_exactly_once,
    runs_of_a_worker_that_stays_offline_are_crashed_with_the_reason,
);
