//! Finding runs through `GET /api/flow-runs`, on both stores: the name,
//! states and expected-start filters, the two orders, the total, cursor
//! paging under every filter, and a 400 naming the field for bad values.

use crate::common;

use common::{Backend, TestServer};
use host::control::ControlConfig;
use serde_json::{Value, json};

/// Runs with known names, expected starts and states, made in this order
/// (so creation order and expected start order differ; Alpha-done is on
/// the 12th in UTC, the 13th in India):
///
/// | name         | expected start       | state     |
/// |--------------|----------------------|-----------|
/// | gamma-later  | 2099-01-01T00:00:00Z | SCHEDULED |
/// | alpha-failed | 2026-01-10T10:00:00Z | FAILED    |
/// | beta-crashed | 2026-01-11T10:00:00Z | CRASHED   |
/// | Alpha-done   | 2026-01-12T20:00:00Z | COMPLETED |
/// | delta-old    | 2025-06-01T00:00:00Z | SCHEDULED |
pub async fn five_runs(url: &str) {
    let post = |path: String, body: Value| async move {
        let (status, answer) = common::http(
            "POST",
            &format!("{url}{path}"),
            Some(&body.to_string()),
            None,
        )
        .await;
        assert!(status < 300, "{path}: {status} {answer}");
        answer
    };
    let pool = json!({"name": "p", "type": "process"}).to_string();
    let (status, answer) =
        common::http("POST", &format!("{url}/api/work-pools"), Some(&pool), None).await;
    assert_eq!(status, 201, "{answer}");
    let deployment = json!({"flow": "f", "name": "d", "pool": "p"}).to_string();
    let (status, answer) = common::http(
        "PUT",
        &format!("{url}/api/deployments"),
        Some(&deployment),
        None,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let create = |name: &'static str, at: &'static str| {
        post(
            "/api/deployments/f/d/runs".into(),
            json!({"name": name, "scheduled_at": at}),
        )
    };
    create("gamma-later", "2099-01-01T00:00:00Z").await;
    // Each run is the only one due when it is claimed, then finished.
    for (name, at, end) in [
        ("alpha-failed", "2026-01-10T10:00:00Z", "FAILED"),
        ("beta-crashed", "2026-01-11T10:00:00Z", "CRASHED"),
        ("Alpha-done", "2026-01-12T20:00:00Z", "COMPLETED"),
    ] {
        let id = create(name, at).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let claimed = post(
            "/api/work-pools/p/claim".into(),
            json!({"worker": "w1", "limit": 1}),
        )
        .await;
        assert_eq!(claimed["runs"][0]["flow_run"]["id"], json!(id), "{claimed}");
        for (state, message) in [
            ("RUNNING", None),
            (
                end,
                Some("worker `w1` saw exit code `3` at 2026-01-10T10:00:05Z"),
            ),
        ] {
            post(
                format!("/api/flow-runs/{id}/state"),
                json!({"type": state, "worker": "w1", "message": message,
                       "idempotency_key": format!("{id}:{state}")}),
            )
            .await;
        }
    }
    create("delta-old", "2025-06-01T00:00:00Z").await;
}

async fn list(s: &TestServer, query: &str) -> (Vec<String>, u64, Option<String>) {
    let (status, page) = s.get(&format!("/api/flow-runs?{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    let names = page["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect();
    let total = page["total"].as_u64().expect("a total");
    let cursor = page["next_cursor"].as_str().map(String::from);
    (names, total, cursor)
}

async fn names(s: &TestServer, query: &str) -> Vec<String> {
    let (names, total, cursor) = list(s, query).await;
    assert_eq!(
        total,
        names.len() as u64,
        "{query}: one page holds them all"
    );
    assert_eq!(cursor, None, "{query}");
    names
}

/// Every page of a listing, `limit` at a time, checking the total on each.
async fn all_pages(s: &TestServer, query: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let at = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (names, total, next) = list(s, &format!("{query}&limit={limit}{at}")).await;
        let seen: usize = pages.iter().map(Vec::len).sum::<usize>() + names.len();
        pages.push(names);
        match next {
            Some(next) => cursor = Some(next),
            None => {
                assert_eq!(
                    total, seen as u64,
                    "{query}: the total is what the pages hold"
                );
                return pages;
            }
        }
    }
}

async fn filters_orders_and_totals(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    five_runs(&s.url).await;

    assert_eq!(
        names(&s, "").await,
        [
            "gamma-later",
            "Alpha-done",
            "beta-crashed",
            "alpha-failed",
            "delta-old"
        ],
        "by expected start, newest first: the run scheduled for later on top"
    );
    assert_eq!(
        names(&s, "sort=created").await,
        [
            "delta-old",
            "Alpha-done",
            "beta-crashed",
            "alpha-failed",
            "gamma-later"
        ]
    );
    assert_eq!(
        names(&s, "sort=expected&name=ALPHA").await,
        ["Alpha-done", "alpha-failed"]
    );
    assert_eq!(
        names(&s, "name=a-d").await,
        ["Alpha-done"],
        "a substring anywhere"
    );
    assert_eq!(names(&s, "name=nothing").await, Vec::<String>::new());
    for states in [
        "state=FAILED,CRASHED",
        "state=FAILED&state=crashed",
        "state=CRASHED,FAILED",
    ] {
        assert_eq!(
            names(&s, states).await,
            ["beta-crashed", "alpha-failed"],
            "{states}"
        );
    }
    assert_eq!(
        names(&s, "since=2026-01-11T00:00:00Z&until=2026-01-12T20:00:00Z").await,
        ["Alpha-done", "beta-crashed"],
        "both ends inclusive"
    );
    assert_eq!(
        names(&s, "since=2026-01-11T11:00:00%2B01:00").await,
        ["gamma-later", "Alpha-done", "beta-crashed"],
        "any offset"
    );
    assert_eq!(names(&s, "until=2026-01-01T00:00:00Z").await, ["delta-old"]);
    assert_eq!(
        names(
            &s,
            "name=alpha&state=FAILED,COMPLETED,SCHEDULED&since=2026-01-01T00:00:00Z&until=2026-12-31T00:00:00Z&sort=created"
        )
        .await,
        ["Alpha-done", "alpha-failed"],
        "the filters combine"
    );
    assert_eq!(
        names(&s, "state=SCHEDULED&pool=p&deployment=f/d").await,
        ["gamma-later", "delta-old"]
    );

    // Paging keeps the filter and the order, whichever they are.
    assert_eq!(
        all_pages(&s, "", 2).await,
        [
            vec!["gamma-later", "Alpha-done"],
            vec!["beta-crashed", "alpha-failed"],
            vec!["delta-old"]
        ]
    );
    assert_eq!(
        all_pages(&s, "sort=created&state=FAILED,CRASHED,COMPLETED", 2).await,
        [vec!["Alpha-done", "beta-crashed"], vec!["alpha-failed"]]
    );
    assert_eq!(
        all_pages(&s, "name=ALPHA&sort=created", 1).await,
        [vec!["Alpha-done"], vec!["alpha-failed"]]
    );

    // The summaries follow the runs: a deleted run is gone from the count.
    let (status, page) = s.get("/api/flow-runs?name=delta").await;
    assert_eq!(status, 200, "{page}");
    let id = page["runs"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(s.delete(&format!("/api/flow-runs/{id}")).await.0, 204);
    assert_eq!(list(&s, "").await.1, 4);
    assert_eq!(names(&s, "state=SCHEDULED").await, ["gamma-later"]);
}

async fn bad_filters_are_400s_naming_the_field(backend: Backend) {
    let s = TestServer::start_on(backend, None, ControlConfig::default()).await;
    for (query, field) in [
        ("state=FAILED,BOGUS", "state"),
        ("state=FAILED,,CRASHED", "state"),
        ("state=", "state"),
        ("until=", "until"),
        ("since=yesterday", "since"),
        ("until=2026-01-01", "until"),
        ("sort=name", "sort"),
        ("cursor=zz", "cursor"),
    ] {
        let (status, answer) = s.get(&format!("/api/flow-runs?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["field"], json!(field), "{query}: {answer}");
        let message = answer["error"].as_str().expect("error");
        assert!(
            message.starts_with(&format!("{field}:")),
            "{query}: {message}"
        );
    }
    // The page's day filters at the ends of what a date holds, and an offset
    // that overflows: each a 400, not a panic that drops the connection.
    for query in ["until=%2B262142-12-31", "since=2026-12-07&tz=2147483647"] {
        let (status, page) = s.get(&format!("/runs?{query}")).await;
        assert_eq!(status, 400, "{query}: {page}");
    }
}

crate::on_both_stores!(
    filters_orders_and_totals,
    bad_filters_are_400s_naming_the_field
);
