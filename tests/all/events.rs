//! `/api/events`: every committed change, in order, resumable, over real
//! HTTP from an in-process server with a real redb file.

use crate::common;

use common::{TestServer, http};
use host::client::{EventStream, StreamEvent};
use serde_json::{Value, json};
use std::time::Duration;

async fn post(s: &TestServer, path: &str, body: Value) -> Value {
    let (status, answer) = http(
        "POST",
        &format!("{}{path}", s.url),
        Some(&body.to_string()),
        None,
    )
    .await;
    assert!(status < 300, "{path}: {status} {answer}");
    answer
}

async fn next(stream: &mut EventStream) -> StreamEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream reads")
        .expect("the stream stays open")
}

fn data(event: &StreamEvent) -> Value {
    serde_json::from_str(&event.data).expect("JSON data")
}

/// A pool with a deployment and one run of it; the run's id.
async fn one_run(s: &TestServer) -> String {
    post(
        s,
        "/api/work-pools",
        json!({"name": "p1", "type": "process"}),
    )
    .await;
    let (status, answer) = s
        .put(
            "/api/deployments",
            json!({"flow": "f", "name": "d", "pool": "p1", "command": ["true"]}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    post(s, "/api/deployments/f/d/runs", json!({})).await["id"]
        .as_str()
        .expect("id")
        .to_string()
}

#[tokio::test]
async fn a_runs_states_and_log_lines_arrive_in_commit_order() {
    let s = TestServer::start().await;
    let id = one_run(&s).await;
    let client = s.client();
    let mut stream = client
        .events(&format!("flow_run={id}"), None)
        .await
        .expect("stream");
    let claimed = post(
        &s,
        "/api/work-pools/p1/claim",
        json!({"worker": "w1", "limit": 1}),
    )
    .await;
    assert_eq!(claimed["runs"].as_array().map(Vec::len), Some(1));
    let state = |to: &str| json!({"type": to, "worker": "w1"});
    post(&s, &format!("/api/flow-runs/{id}/state"), state("RUNNING")).await;
    let line = |message: &str| json!({"timestamp": "2026-01-01T00:00:00Z", "message": message});
    post(
        &s,
        &format!("/api/flow-runs/{id}/logs"),
        json!([line("one"), line("two")]),
    )
    .await;
    post(
        &s,
        &format!("/api/flow-runs/{id}/state"),
        state("COMPLETED"),
    )
    .await;

    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = next(&mut stream).await;
        let body = data(&event);
        seen.push(match event.event.as_str() {
            "run" => body["flow_run"]["state"]["type"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
            "log" => body["line"]["message"].as_str().unwrap_or("?").to_string(),
            other => panic!("unexpected {other}: {body}"),
        });
        assert!(event.id.is_some(), "every event has an id");
    }
    assert_eq!(seen, ["PENDING", "RUNNING", "one", "two", "COMPLETED"]);
}

#[tokio::test]
async fn a_reader_resumes_after_its_last_event_or_is_told_to_reload() {
    let s = TestServer::start().await;
    let client = s.client();
    let mut stream = client.events("pool=p1", None).await.expect("stream");
    let id = one_run(&s).await;
    let first = next(&mut stream).await;
    assert_eq!(first.event, "pool");
    drop(stream);
    post(&s, &format!("/api/flow-runs/{id}/cancel"), json!({})).await;

    // What happened while it was away, then live again.
    let last = first.id.as_deref();
    let mut resumed = client.events("pool=p1", last).await.expect("stream");
    let scheduled = next(&mut resumed).await;
    assert_eq!(data(&scheduled)["flow_run"]["state"]["type"], "SCHEDULED");
    let cancelled = next(&mut resumed).await;
    assert_eq!(data(&cancelled)["flow_run"]["state"]["type"], "CANCELLED");
    post(
        &s,
        "/api/work-pools/p1/workers/heartbeat",
        json!({"name": "w1"}),
    )
    .await;
    assert_eq!(next(&mut resumed).await.event, "worker");

    // An id this server never gave (another process's): reload first.
    let mut stale = client.events("pool=p1", Some("1-1")).await.expect("stream");
    assert_eq!(next(&mut stale).await.event, "reset");
}

#[tokio::test]
async fn other_pools_and_runs_are_filtered_out() {
    let s = TestServer::start().await;
    let client = s.client();
    let mut p2_only = client.events("pool=p2", None).await.expect("stream");
    one_run(&s).await; // all in p1
    post(
        &s,
        "/api/work-pools",
        json!({"name": "p2", "type": "process"}),
    )
    .await;
    let event = next(&mut p2_only).await;
    assert_eq!(
        (event.event.as_str(), &data(&event)["pool"]["name"]),
        ("pool", &json!("p2"))
    );
}

/// Past a quarter of the server's open-file limit, a new event stream is
/// refused with a 503 that says why, and the server keeps answering; a
/// stream given back makes room for the next.
#[tokio::test]
async fn event_streams_past_the_cap_are_refused_with_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::ServerProcess::start_with_open_files(dir.path(), 256);
    let events = format!("{}/api/events", server.url);
    let client = common::web_client();
    let mut open = Vec::new();
    for i in 0..64 {
        let stream = client.get(&events).send().await.expect("stream");
        assert_eq!(stream.status(), 200, "stream {i}");
        open.push(stream);
    }
    let refused = client.get(&events).send().await.expect("answer");
    assert_eq!(refused.status(), 503);
    let body = refused.text().await.expect("body");
    assert!(body.contains("too many event streams"), "{body}");
    let (status, _) = server.get("/api/work-pools").await;
    assert_eq!(status, 200, "the server answers the rest");
    drop(open.pop());
    // The server lets go of the slot once it sees the connection closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.get(&events).send().await.expect("answer");
        if answer.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a closed stream made room: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
