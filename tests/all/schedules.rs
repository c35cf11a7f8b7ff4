//! A deployment's schedules turned on and off and edited over the API (on
//! redb and PostgreSQL) and the CLI: an inactive schedule makes no runs and
//! its future runs go; an edited one replaces them; a bad cron is refused
//! naming the field, and nothing changes. And the home page's dashboard
//! counts, read from the state index on both stores.

use crate::common;

use common::{Backend, ServerProcess, TestServer, host_cli, host_ok};
use host::control::ControlConfig;
use host::model::StateType;
use serde_json::{Value, json};

/// Pool `p` and deployment `f/d` with the given schedules.
async fn setup(s: &TestServer, schedules: Value) {
    let (status, answer) = s
        .post("/api/work-pools", json!({"name": "p", "type": "process"}))
        .await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = s
        .put(
            "/api/deployments",
            json!({"flow": "f", "name": "d", "pool": "p", "schedules": schedules}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
}

/// The deployment's SCHEDULED runs' times, soonest first.
async fn scheduled_times(s: &TestServer) -> Vec<String> {
    let (status, page) = s
        .get("/api/flow-runs?deployment=f/d&state=SCHEDULED&limit=1000")
        .await;
    assert_eq!(status, 200, "{page}");
    let mut times: Vec<String> = page["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["scheduled_at"].as_str().expect("time").to_string())
        .collect();
    times.sort();
    times
}

async fn patch_schedule(s: &TestServer, index: usize, body: Value) -> (u16, Value) {
    s.patch(&format!("/api/deployments/f/d/schedules/{index}"), body)
        .await
}

async fn a_schedule_turned_off_makes_no_runs_and_on_again_makes_them(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    // Hourly and every ten minutes: each schedule's runs can be told apart.
    setup(
        &s,
        json!([{"cron": "0 * * * *"}, {"interval_seconds": 600, "anchor": "2026-01-01T00:00:05Z"}]),
    )
    .await;
    s.control.upkeep().await.expect("upkeep");
    let both = scheduled_times(&s).await;
    assert!(
        both.iter().any(|t| t.ends_with(":05Z")),
        "the interval's runs: {both:?}"
    );
    let by_hand = common::create_run(
        &s.url,
        "f/d",
        json!({"scheduled_at": "2099-01-01T00:00:00Z"}),
    )
    .await;

    let (status, answer) = patch_schedule(&s, 1, json!({"active": false})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["schedules"][1]["active"], false);
    assert_eq!(answer["schedules"][0]["active"], true, "the other stays on");
    s.control.upkeep().await.expect("upkeep");
    let hourly = scheduled_times(&s).await;
    assert!(
        !hourly.iter().any(|t| t.ends_with(":05Z")),
        "no run of the inactive schedule: {hourly:?}"
    );
    assert!(
        hourly.iter().filter(|t| !t.starts_with("2099")).count() >= 3,
        "the active schedule still makes runs: {hourly:?}"
    );
    assert_eq!(
        s.get(&format!("/api/flow-runs/{by_hand}")).await.0,
        200,
        "a run made by hand is not the schedule's to drop"
    );

    assert_eq!(patch_schedule(&s, 0, json!({"active": false})).await.0, 200);
    s.control.upkeep().await.expect("upkeep");
    assert_eq!(
        scheduled_times(&s).await,
        ["2099-01-01T00:00:00Z"],
        "both off: only the run by hand is left"
    );

    let (status, answer) = patch_schedule(&s, 1, json!({"active": true})).await;
    assert_eq!(
        (status, &answer["schedules"][1]["active"]),
        (200, &json!(true))
    );
    s.control.upkeep().await.expect("upkeep");
    assert!(
        scheduled_times(&s)
            .await
            .iter()
            .any(|t| t.ends_with(":05Z")),
        "on again: its runs are made again"
    );
    let (status, answer) = patch_schedule(&s, 2, json!({"active": true})).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["field"], "index", "{answer}");
    let (status, answer) = s
        .patch("/api/deployments/f/d/schedules/x", json!({"active": true}))
        .await;
    assert_eq!(
        (status, &answer["field"]),
        (400, &json!("index")),
        "a JSON error naming the field: {answer}"
    );
    assert_eq!(
        s.patch(
            "/api/deployments/f/none/schedules/0",
            json!({"active": true})
        )
        .await
        .0,
        404
    );
}

async fn an_edited_schedule_replaces_its_runs_and_a_bad_cron_changes_nothing(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    setup(&s, json!([{"cron": "0 9 * * *", "timezone": "UTC"}])).await;
    s.control.upkeep().await.expect("upkeep");
    assert!(
        scheduled_times(&s)
            .await
            .iter()
            .all(|t| t.contains("T09:00:00")),
        "daily at nine"
    );

    let (status, answer) = patch_schedule(&s, 0, json!({"cron": "30 17 * * *"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["schedules"][0]["cron"], "30 17 * * *");
    s.control.upkeep().await.expect("upkeep");
    let times = scheduled_times(&s).await;
    assert!(!times.is_empty());
    assert!(
        times.iter().all(|t| t.contains("T17:30:00")),
        "the old times went, the new ones came: {times:?}"
    );

    for (body, field) in [
        (json!({"cron": "not a cron"}), "cron"),
        (json!({"cron": "61 * * * *"}), "cron"),
        (json!({"timezone": "Mars/Olympus"}), "timezone"),
        (json!({"interval_seconds": 0}), "interval_seconds"),
        (json!({"cron": "* * * * *", "interval_seconds": 60}), "cron"),
    ] {
        let (status, answer) = patch_schedule(&s, 0, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (status, answer) = patch_schedule(&s, 0, json!({"bogus": 1})).await;
    assert_eq!(status, 400, "unknown fields are refused: {answer}");
    let (_, deployment) = s.get("/api/deployments/f/d").await;
    assert_eq!(
        deployment["schedules"][0]["cron"], "30 17 * * *",
        "unchanged"
    );
    assert_eq!(scheduled_times(&s).await, times, "its runs untouched");

    // An interval replaces the cron.
    let (status, answer) = patch_schedule(&s, 0, json!({"interval_seconds": 3600})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["schedules"][0]["interval_seconds"], 3600);
    assert!(answer["schedules"][0]["cron"].is_null(), "{answer}");
}

/// Runs made, claimed and reported in known numbers show in the
/// dashboard's counts, and the failing deployment in its list.
async fn the_dashboard_counts_runs_by_state_from_the_index(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    setup(&s, json!([])).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(common::create_run(&s.url, "f/d", json!({})).await);
    }
    let (status, claim) = s
        .post(
            "/api/work-pools/p/claim",
            json!({"worker": "w1", "limit": 3}),
        )
        .await;
    assert_eq!(status, 200, "{claim}");
    let claimed: Vec<String> = claim["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["flow_run"]["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(claimed.len(), 3);
    for (id, end) in claimed.iter().zip(["COMPLETED", "COMPLETED", "FAILED"]) {
        for state in ["RUNNING", end] {
            let (status, answer) = s
                .post(
                    &format!("/api/flow-runs/{id}/state"),
                    json!({"type": state, "worker": "w1"}),
                )
                .await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    let dashboard = s.control.dashboard().expect("dashboard");
    assert_eq!(dashboard.counts.total(StateType::Completed), 2);
    assert_eq!(dashboard.counts.total(StateType::Failed), 1);
    assert_eq!(dashboard.counts.total(StateType::Scheduled), 2);
    assert_eq!(dashboard.counts.total(StateType::Running), 0);
    // The last two hours: the hour may turn while the test runs.
    let recent: u64 = dashboard
        .counts
        .buckets
        .iter()
        .map(|(_, counts)| counts[counts.len() - 2..].iter().sum::<u64>())
        .sum();
    assert_eq!(recent, 5, "all made in the last hour or two");
    assert_eq!(dashboard.late, 0);
    assert_eq!(dashboard.troubled["f/d"].failed, 1);
}

crate::on_both_stores!(
    a_schedule_turned_off_makes_no_runs_and_on_again_makes_them,
    an_edited_schedule_replaces_its_runs_and_a_bad_cron_changes_nothing,
    the_dashboard_counts_runs_by_state_from_the_index,
);

/// `host deployment schedule ls | pause | resume | set`.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_lists_pauses_resumes_and_sets_a_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    host_ok(url, &["work-pool", "create", "--type", "process", "p"]);
    host_ok(
        url,
        &[
            "deployment",
            "create",
            "f/d",
            "--pool",
            "p",
            "--cron",
            "0 9 * * 1",
        ],
    );
    let listed = host_ok(url, &["deployment", "schedule", "ls", "f/d"]);
    assert!(listed.contains("At 09:00 on Monday (UTC)"), "{listed}");
    assert!(listed.contains("yes"), "{listed}");

    let out = host_ok(url, &["deployment", "schedule", "pause", "f/d", "0"]);
    assert!(out.contains("inactive"), "{out}");
    let listed = host_ok(
        url,
        &["deployment", "schedule", "ls", "f/d", "--output", "json"],
    );
    let schedules: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(schedules[0]["active"], false, "{schedules}");
    let out = host_ok(url, &["deployment", "schedule", "resume", "f/d", "0"]);
    assert!(out.contains("(active)"), "{out}");

    let out = host_ok(
        url,
        &[
            "deployment",
            "schedule",
            "set",
            "f/d",
            "0",
            "--cron",
            "*/15 * * * *",
        ],
    );
    assert!(out.contains("Every 15 minutes"), "{out}");
    let (code, _, stderr) = host_cli(
        url,
        &[
            "deployment",
            "schedule",
            "set",
            "f/d",
            "0",
            "--cron",
            "nope",
        ],
    );
    assert!(code != 0 && stderr.contains("cron"), "{stderr}");
    let (code, _, stderr) = host_cli(url, &["deployment", "schedule", "pause", "f/d", "3"]);
    assert!(code != 0 && stderr.contains("no schedule 3"), "{stderr}");
}
