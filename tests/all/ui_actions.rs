//! The web UI's actions in a real headless Chromium: Retry, Delete and Copy
//! id on a run's page; Pause, Resume and Delete on a deployment's; a pool
//! its deployments still use, deleted from the page that says so; and the
//! LATE badge and per-queue late count (over HTTP).

use crate::common;

use common::browser::Browser;
use common::{TestServer, http};
use host::control::ControlConfig;
use serde_json::{Value, json};
use std::time::Duration;

const LIVE: Duration = Duration::from_secs(20);

/// Waits until the page's live stream is open and the refresh it starts
/// with is done: from then on its regions are swapped only on news, so an
/// element found is the one clicked.
pub(crate) async fn settled(browser: &Browser) {
    browser
        .wait_text("#live-indicator", LIVE, |t| t.contains("live"))
        .await;
    let deadline = std::time::Instant::now() + LIVE;
    while js(browser, "return document.body.dataset.refreshed || '';").await == json!("") {
        assert!(
            std::time::Instant::now() < deadline,
            "the first refresh never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clicks, again while the element was swapped by a live refresh between
/// finding and clicking it (a click on a stale element does nothing).
pub(crate) async fn click(browser: &Browser, css: &str) {
    let deadline = std::time::Instant::now() + LIVE;
    loop {
        let clicked = match browser.client.find(fantoccini::Locator::Css(css)).await {
            Ok(element) => element.click().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > deadline => panic!("click {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A pool `p` and a deployment `f/d`, through HTTP (the in-process server
/// shares this test's runtime).
async fn pool_and_deployment(url: &str) {
    let pool = json!({"name": "p", "type": "process"}).to_string();
    let (status, answer) = http("POST", &format!("{url}/api/work-pools"), Some(&pool), None).await;
    assert_eq!(status, 201, "{answer}");
    let deployment = json!({"flow": "f", "name": "d", "pool": "p"}).to_string();
    let (status, answer) = http(
        "PUT",
        &format!("{url}/api/deployments"),
        Some(&deployment),
        None,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
}

async fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    http(method, url, body.map(|b| b.to_string()).as_deref(), None).await
}

/// A run that a worker `w1` claimed and reported FAILED.
async fn failed_run(url: &str) -> String {
    let id = common::create_run(url, "f/d", json!({})).await;
    let claim = json!({"worker": "w1", "limit": 1});
    let (status, answer) = api(
        "POST",
        &format!("{url}/api/work-pools/p/claim"),
        Some(claim),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for state in ["RUNNING", "FAILED"] {
        let body = json!({"type": state, "worker": "w1"});
        let (status, answer) = api(
            "POST",
            &format!("{url}/api/flow-runs/{id}/state"),
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    id
}

#[tokio::test]
async fn a_failed_run_is_retried_copied_and_deleted_from_its_page() {
    let Some(browser) =
        Browser::start("a_failed_run_is_retried_copied_and_deleted_from_its_page").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url).await;
    let id = failed_run(url).await;

    browser.goto(&format!("{url}/runs/{id}")).await;
    settled(&browser).await;
    assert!(browser.text("#run-head").await.contains("FAILED"));
    assert_eq!(browser.text("#attempts").await, "1");
    click(&browser, "#run-head button[data-copy]").await;
    browser
        .wait_text("#run-head button[data-copy]", LIVE, |t| t == "Copied")
        .await;
    let copied = browser
        .client
        .execute(
            "return document.querySelector('#run-head button[data-copy]').dataset.copy;",
            vec![],
        )
        .await
        .expect("data-copy");
    assert_eq!(copied, json!(id));

    click(&browser, "#run-head form[action$='/retry'] button").await;
    browser.wait_text("#attempts", LIVE, |t| t == "1").await;
    browser
        .wait_text("#run-head", LIVE, |t| t.contains("SCHEDULED"))
        .await;
    let (_, run) = api("GET", &format!("{url}/api/flow-runs/{id}"), None).await;
    assert_eq!(run["state"]["type"], "SCHEDULED", "{run}");
    let timeline = browser.text("#timeline").await;
    assert!(timeline.contains("retried by request"), "{timeline}");
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css("#run-head form[action$='/retry']"))
            .await
            .is_err(),
        "no Retry for a SCHEDULED run"
    );

    click(&browser, "#run-head form[action$='/delete'] button").await;
    browser.client.accept_alert().await.expect("confirm");
    browser.wait_text("h1", LIVE, |t| t == "Flow Runs").await;
    let (status, _) = api("GET", &format!("{url}/api/flow-runs/{id}"), None).await;
    assert_eq!(status, 404, "deleted");
}

#[tokio::test]
async fn a_deployment_is_paused_resumed_and_deleted_from_its_page() {
    let Some(browser) =
        Browser::start("a_deployment_is_paused_resumed_and_deleted_from_its_page").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url).await;
    let waiting = common::create_run(url, "f/d", json!({})).await;

    browser.goto(&format!("{url}/deployments/f/d")).await;
    settled(&browser).await;
    assert_eq!(browser.text("#deployment-status").await, "ACTIVE");
    click(&browser, "#deployment-head form[action$='/pause'] button").await;
    browser
        .wait_text("#deployment-status", LIVE, |t| t == "PAUSED")
        .await;
    assert!(browser.text("#paused-note").await.contains("Paused"));
    let (_, deployment) = api("GET", &format!("{url}/api/deployments/f/d"), None).await;
    assert_eq!(deployment["paused"], true);
    click(&browser, "#deployment-head form[action$='/resume'] button").await;
    browser
        .wait_text("#deployment-status", LIVE, |t| t == "ACTIVE")
        .await;
    let (_, deployment) = api("GET", &format!("{url}/api/deployments/f/d"), None).await;
    assert_eq!(deployment["paused"], false);

    click(&browser, "#deployment-head form[action$='/delete'] button").await;
    browser.client.accept_alert().await.expect("confirm");
    browser.wait_text("h1", LIVE, |t| t == "Deployments").await;
    let (status, _) = api("GET", &format!("{url}/api/deployments/f/d"), None).await;
    assert_eq!(status, 404);
    let (status, _) = api("GET", &format!("{url}/api/flow-runs/{waiting}"), None).await;
    assert_eq!(status, 404, "its SCHEDULED run went with it");
}

#[tokio::test]
async fn a_pool_in_use_offers_to_delete_its_deployments_first() {
    let Some(browser) =
        Browser::start("a_pool_in_use_offers_to_delete_its_deployments_first").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url).await;

    browser.goto(url).await;
    settled(&browser).await;
    let delete_pool = "tr[data-pool='p'] form[action$='/delete'] button";
    click(&browser, delete_pool).await;
    browser.client.accept_alert().await.expect("confirm");
    browser
        .wait_text("h1", LIVE, |t| t == "Delete work pool p")
        .await;
    assert!(browser.text("p.error").await.contains("f/d"));
    click(
        &browser,
        "#pool-deployments tr[data-deployment='f/d'] form button",
    )
    .await;
    browser.client.accept_alert().await.expect("confirm");
    browser.wait_text("h1", LIVE, |t| t == "p").await;
    let (status, _) = api("GET", &format!("{url}/api/deployments/f/d"), None).await;
    assert_eq!(status, 404);

    browser.goto(url).await;
    click(&browser, delete_pool).await;
    browser.client.accept_alert().await.expect("confirm");
    common::eventually(url, "/api/work-pools", LIVE, |pools| pools == &json!([])).await;
}

/// A SCHEDULED run past its time shows LATE (a word, not only a colour) in
/// lists and on its page, and its queue counts it.
#[tokio::test]
async fn late_runs_are_marked_and_counted_per_queue() {
    let config = ControlConfig {
        late_after: Duration::from_millis(1),
        ..ControlConfig::default()
    };
    let server = TestServer::start_with(None, config).await;
    let url = &server.url;
    pool_and_deployment(url).await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let late = common::create_run(url, "f/d", json!({"scheduled_at": past})).await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    common::create_run(url, "f/d", json!({"scheduled_at": future})).await;
    server.control.upkeep().await.expect("upkeep");

    let page = |path: String| async move {
        let answer = common::web_client()
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(answer.status(), 200, "{path}");
        answer.text().await.expect("page")
    };
    let list = page("/runs".into()).await;
    assert_eq!(list.matches(r#"data-state="LATE""#).count(), 1, "{list}");
    assert_eq!(list.matches(r#"data-state="SCHEDULED""#).count(), 1);
    let run = page(format!("/runs/{late}")).await;
    assert!(run.contains(r#"data-state="LATE""#));
    let only_late = page("/runs?state=LATE".into()).await;
    assert_eq!(only_late.matches("data-run=").count(), 1, "{only_late}");
    assert!(only_late.contains(&format!(r#"data-run="{late}""#)));
    let (status, listed) = api("GET", &format!("{url}/api/flow-runs?late=true"), None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["runs"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["runs"][0]["id"], late.as_str());
    let (status, refused) = api("GET", &format!("{url}/api/flow-runs?late=maybe"), None).await;
    assert_eq!(
        (status, &refused["field"]),
        (400, &json!("late")),
        "{refused}"
    );
    let queues = page("/pools/p?tab=queues".into()).await;
    let row = &queues[queues.find(r#"data-queue="default""#).expect("row")..];
    let late_cell = &row[row.find(r#"class="late""#).expect("late column")..];
    assert!(late_cell.starts_with(r#"class="late">1<"#), "{late_cell}");
}

async fn js(browser: &Browser, script: &str) -> Value {
    browser
        .client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// The Work Queues tab: a queue created from its form, a bad limit refused
/// with the server's error next to its queue, a good one saved, Pause.
#[tokio::test]
async fn queues_are_created_edited_and_paused_on_the_pool_page() {
    let Some(browser) =
        Browser::start("queues_are_created_edited_and_paused_on_the_pool_page").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url).await;
    let queue = |name: &str| format!("{url}/api/work-pools/p/queues/{name}");

    browser.goto(&format!("{url}/pools/p?tab=queues")).await;
    settled(&browser).await;
    browser.fill("#queue-name", "fast").await;
    browser.fill("#queue-priority", "1").await;
    browser.fill("#queue-limit", "2").await;
    click(&browser, "#create-queue button[type=submit]").await;
    browser
        .wait_text("tr[data-queue='fast']", LIVE, |t| t.contains("fast"))
        .await;
    settled(&browser).await;
    let (_, fast) = api("GET", &queue("fast"), None).await;
    assert_eq!(
        (&fast["priority"], &fast["concurrency_limit"]),
        (&json!(1), &json!(2))
    );
    let (_, default) = api("GET", &queue("default"), None).await;
    assert_eq!(default["priority"], 2, "moved down");

    let row = "tr[data-queue='default']";
    browser
        .fill(&format!("{row} input[name=concurrency_limit]"), "many")
        .await;
    click(&browser, &format!("{row} form[action$='/update'] button")).await;
    let error = browser
        .wait_text(&format!("{row} .field-error"), LIVE, |t| !t.is_empty())
        .await;
    assert!(error.contains("concurrency_limit"), "{error}");
    let (_, default) = api("GET", &queue("default"), None).await;
    assert!(default["concurrency_limit"].is_null(), "nothing changed");
    browser
        .fill(&format!("{row} input[name=concurrency_limit]"), "3")
        .await;
    click(&browser, &format!("{row} form[action$='/update'] button")).await;
    common::eventually(url, "/api/work-pools/p/queues/default", LIVE, |q| {
        q["concurrency_limit"] == 3
    })
    .await;

    click(
        &browser,
        "tr[data-queue='fast'] form[action$='/pause'] button",
    )
    .await;
    browser
        .wait_text("tr[data-queue='fast']", LIVE, |t| t.contains("PAUSED"))
        .await;
    let (_, fast) = api("GET", &queue("fast"), None).await;
    assert_eq!(fast["paused"], true);
    assert_eq!(fast["concurrency_limit"], 2, "pausing keeps the limit");
}

/// A focused button keeps the focus when its region is swapped by a live
/// refresh (it is a new element; the focus moves to it).
#[tokio::test]
async fn focus_stays_on_a_button_across_a_live_refresh() {
    let Some(browser) = Browser::start("focus_stays_on_a_button_across_a_live_refresh").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url).await;
    browser.goto(url).await;
    settled(&browser).await;
    let pause = "tr[data-pool='p'] form[action='/ui/pools/p/pause'] button";
    js(
        &browser,
        &format!(
            "const b = document.querySelector(\"{pause}\"); b.focus(); b.dataset.old = '1'; \
             document.body.dataset.refreshed = 'before';"
        ),
    )
    .await;
    // A worker's first heartbeat changes the pool's row.
    let beat = json!({"name": "w1"});
    let (status, answer) = api(
        "POST",
        &format!("{url}/api/work-pools/p/workers/heartbeat"),
        Some(beat),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    browser
        .wait_text("tr[data-pool='p'] .status", LIVE, |t| t == "READY")
        .await;
    let focused = js(
        &browser,
        "const a = document.activeElement; \
         return [a.closest('form') && a.closest('form').getAttribute('action'), a.dataset.old || null];",
    )
    .await;
    assert_eq!(
        focused,
        json!(["/ui/pools/p/pause", null]),
        "the fresh row's Pause button has the focus"
    );
}

/// At 390 px wide no main page scrolls sideways (wide tables scroll inside
/// themselves).
#[tokio::test]
async fn the_main_pages_fit_a_390px_screen() {
    let Some(browser) = Browser::start("the_main_pages_fit_a_390px_screen").await else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url).await;
    let id = failed_run(url).await;
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("window size");
    for path in [
        "/".to_string(),
        "/pools/p".into(),
        "/pools/p?tab=queues".into(),
        "/pools/p?tab=runs".into(),
        "/deployments".into(),
        "/deployments/f/d".into(),
        "/runs".into(),
        format!("/runs/{id}"),
        "/plugins".into(),
    ] {
        browser.goto(&format!("{url}{path}")).await;
        browser.wait_text("h1", LIVE, |t| !t.is_empty()).await;
        let widths = js(
            &browser,
            "return [window.innerWidth, document.documentElement.scrollWidth];",
        )
        .await;
        let (inner, scroll) = (
            widths[0].as_u64().expect("w"),
            widths[1].as_u64().expect("w"),
        );
        assert!(inner <= 400, "the window is phone-sized: {inner}");
        assert!(
            scroll <= inner,
            "{path}: {scroll} px wide in a {inner} px window"
        );
    }
}

/// A long log pages through on the run's page (newest by default, from the
/// first line on), each line with its time, and downloads whole.
#[tokio::test]
async fn a_long_log_pages_from_either_end_and_downloads_whole() {
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url).await;
    let id = common::create_run(url, "f/d", json!({})).await;
    let lines: Vec<Value> = (0..2500)
        .map(|i| json!({"message": format!("line {i}"), "stream": if i % 2 == 0 { "stdout" } else { "stderr" }}))
        .collect();
    let (status, answer) = api(
        "POST",
        &format!("{url}/api/flow-runs/{id}/logs"),
        Some(Value::Array(lines)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let web = common::web_client();
    let page = |query: &'static str| {
        let web = web.clone();
        let address = format!("{url}/runs/{id}{query}");
        async move {
            let answer = web.get(address).send().await.expect("get");
            (answer.status().as_u16(), answer.text().await.expect("page"))
        }
    };

    let (_, newest) = page("").await;
    assert!(newest.contains("Lines 1501–2500 of 2500"), "{newest}");
    assert!(newest.contains(r#"data-seq="1500""#) && !newest.contains(r#"data-seq="1499""#));
    assert!(
        newest.contains("data-follow"),
        "the newest page follows live lines"
    );
    assert!(newest.contains(r#"class="ts""#), "lines have their time");
    assert!(newest.contains(r#"id="log-first""#) && !newest.contains(r#"id="log-later""#));

    let (_, first) = page("?log_from=0").await;
    assert!(first.contains("Lines 1–1000 of 2500"), "{first}");
    assert!(first.contains(">line 0<") && !first.contains(">line 1000<"));
    assert!(!first.contains("data-follow"), "an older page keeps still");
    assert!(
        first.contains("log_from=1000"),
        "Later goes on from line 1001"
    );
    let (_, last) = page("?log_from=2000").await;
    assert!(last.contains("Lines 2001–2500 of 2500"), "{last}");
    let (status, bad) = page("?log_from=soon").await;
    assert_eq!(status, 400, "{bad}");

    let download = web
        .get(format!("{url}/api/flow-runs/{id}/logs/download"))
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), 200);
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .expect("header")
        .to_string();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    let text = download.text().await.expect("text");
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2500, "every line, once");
    assert!(rows[0].ends_with(" stdout line 0"), "{}", rows[0]);
    assert!(rows[1].ends_with(" stderr line 1"), "{}", rows[1]);
    assert!(rows[2499].ends_with(" line 2499"));
    let time = rows[0].split(' ').next().expect("time");
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    let (status, _) = api(
        "GET",
        &format!("{url}/api/flow-runs/nope/logs/download"),
        None,
    )
    .await;
    assert_eq!(status, 404);
}
