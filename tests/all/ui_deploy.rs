//! The deployment page's schedules and Run form, a pool's Details tab and
//! the dashboard, in a real headless Chromium at 1400x900: a schedule
//! turned off and on and its cron edited (a bad one refused beside the
//! field); a run for later, in the browser's time zone, listed under
//! Upcoming; the Run form's refusal summarised at its top, focused and in
//! view; a pool's description and limit edited, a bad template refused and
//! nothing saved; the dashboard's counts matching the runs made.

use crate::common;

use common::browser::Browser;
use common::{TestServer, http};
use fantoccini::Locator;
use serde_json::{Value, json};
use std::time::Duration;

const LIVE: Duration = Duration::from_secs(20);

async fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    http(method, url, body.map(|b| b.to_string()).as_deref(), None).await
}

/// Pool `p` and deployment `f/d` with `schedules`.
async fn pool_and_deployment(url: &str, schedules: Value) {
    let pool = json!({"name": "p", "type": "process"});
    let (status, answer) = api("POST", &format!("{url}/api/work-pools"), Some(pool)).await;
    assert_eq!(status, 201, "{answer}");
    let deployment = json!({"flow": "f", "name": "d", "pool": "p", "schedules": schedules});
    let (status, answer) = api("PUT", &format!("{url}/api/deployments"), Some(deployment)).await;
    assert_eq!(status, 201, "{answer}");
}

async fn js(browser: &Browser, script: &str) -> Value {
    browser
        .client
        .execute(script, vec![])
        .await
        .expect("script")
}

/// Waits for the page's live stream and its first refresh (see
/// `ui_actions::settled`): after it, regions swap only on news.
async fn settled(browser: &Browser) {
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

/// Clicks, again if a live refresh swapped the element in between.
async fn click(browser: &Browser, css: &str) {
    let deadline = std::time::Instant::now() + LIVE;
    loop {
        let clicked = match browser.client.find(Locator::Css(css)).await {
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

async fn start(test: &str) -> Option<Browser> {
    let browser = Browser::start(test).await?;
    browser
        .client
        .set_window_size(1400, 900)
        .await
        .expect("resize");
    Some(browser)
}

#[tokio::test]
async fn a_schedule_is_turned_off_and_on_and_its_cron_edited() {
    let Some(browser) = start("a_schedule_is_turned_off_and_on_and_its_cron_edited").await else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url, json!([{"cron": "0 9 * * 1"}])).await;
    let schedule = |d: &Value| d["schedules"][0].clone();

    browser.goto(&format!("{url}/deployments/f/d")).await;
    settled(&browser).await;
    let words = browser.text("#schedule-0 .schedule-words").await;
    assert_eq!(words, "At 09:00 on Monday (UTC)");
    let next = browser.text("#schedule-0 ul.next-runs").await;
    assert_eq!(next.lines().count(), 5, "{next}");
    assert!(
        next.lines()
            .all(|l| l.starts_with("Mon ") && l.contains("09:00")),
        "{next}"
    );

    click(&browser, "#schedule-0 button[role=switch]").await;
    browser
        .wait_text("#schedule-0 .schedule-active", LIVE, |t| t == "INACTIVE")
        .await;
    let (_, d) = api("GET", &format!("{url}/api/deployments/f/d"), None).await;
    assert_eq!(schedule(&d)["active"], false);
    settled(&browser).await;
    click(&browser, "#schedule-0 button[role=switch]").await;
    browser
        .wait_text("#schedule-0 .schedule-active", LIVE, |t| t == "ACTIVE")
        .await;
    let (_, d) = api("GET", &format!("{url}/api/deployments/f/d"), None).await;
    assert_eq!(schedule(&d)["active"], true);

    settled(&browser).await;
    click(&browser, "#schedule-0 details.edit-schedule summary").await;
    browser.fill("#schedule-0-cron", "99 9 * * 1").await;
    click(
        &browser,
        "#schedule-0 details.edit-schedule button[type=submit]",
    )
    .await;
    let error = browser
        .wait_text("#schedule-0-cron-error", LIVE, |t| !t.is_empty())
        .await;
    assert!(error.contains("is not a cron expression"), "{error}");
    let (_, d) = api("GET", &format!("{url}/api/deployments/f/d"), None).await;
    assert_eq!(schedule(&d)["cron"], "0 9 * * 1", "nothing saved");

    browser.fill("#schedule-0-cron", "30 17 * * 1-5").await;
    click(
        &browser,
        "#schedule-0 details.edit-schedule button[type=submit]",
    )
    .await;
    browser
        .wait_text("#schedule-0 .schedule-words", LIVE, |t| {
            t == "At 17:30 on Monday through Friday (UTC)"
        })
        .await;
    let (_, d) = api("GET", &format!("{url}/api/deployments/f/d"), None).await;
    assert_eq!(schedule(&d)["cron"], "30 17 * * 1-5");
}

#[tokio::test]
async fn a_run_for_later_is_upcoming_and_a_refused_run_form_is_summarised_in_view() {
    let Some(browser) =
        start("a_run_for_later_is_upcoming_and_a_refused_run_form_is_summarised_in_view").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url, json!([])).await;

    browser.goto(&format!("{url}/deployments/f/d")).await;
    settled(&browser).await;
    // "Later" with no time: refused, and the refusal is where the eye is.
    click(&browser, "#run input[name=start][value=later]").await;
    click(&browser, "#run form button[type=submit]").await;
    browser
        .wait_text("#run-errors", LIVE, |t| {
            t.contains("The run was not created")
        })
        .await;
    let focused = js(
        &browser,
        "return document.activeElement && document.activeElement.id;",
    )
    .await;
    assert_eq!(focused, "run-errors", "the summary has the focus");
    let in_view = js(
        &browser,
        "const r = document.getElementById('run-errors').getBoundingClientRect();
         return r.top >= 0 && r.bottom <= window.innerHeight;",
    )
    .await;
    assert_eq!(in_view, true, "the summary is in view at 1400x900");
    let link = js(
        &browser,
        "return document.querySelector('#run-errors a').getAttribute('href');",
    )
    .await;
    assert_eq!(link, "#scheduled_at", "it links to the field");
    let beside = browser.text("#scheduled_at-error").await;
    assert!(beside.contains("scheduled_at"), "{beside}");

    // A time in the browser's zone arrives as that instant in UTC.
    let local = "2031-03-04T05:06";
    js(
        &browser,
        &format!("document.getElementById('scheduled_at').value = '{local}';"),
    )
    .await;
    let expected = js(
        &browser,
        &format!("return new Date('{local}').toISOString();"),
    )
    .await;
    click(&browser, "#run input[name=start][value=later]").await;
    click(&browser, "#run form button[type=submit]").await;
    let deadline = std::time::Instant::now() + LIVE;
    let id = loop {
        let at = browser.client.current_url().await.expect("url");
        if let Some(id) = at.path().strip_prefix("/runs/") {
            break id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "still at {at}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, run) = api("GET", &format!("{url}/api/flow-runs/{id}"), None).await;
    let scheduled = chrono::DateTime::parse_from_rfc3339(run["scheduled_at"].as_str().expect("at"))
        .expect("time");
    let wanted =
        chrono::DateTime::parse_from_rfc3339(expected.as_str().expect("iso")).expect("iso");
    assert_eq!(scheduled, wanted, "{run}");

    browser.goto(&format!("{url}/deployments/f/d")).await;
    let upcoming = browser
        .wait_text("#upcoming", LIVE, |t| !t.is_empty())
        .await;
    assert!(!upcoming.contains("No flow runs"), "{upcoming}");
    assert!(
        browser
            .client
            .find(Locator::Css(&format!("#upcoming tr[data-run='{id}']")))
            .await
            .is_ok(),
        "the run for later is upcoming"
    );
}

#[tokio::test]
async fn a_pool_is_edited_and_a_bad_template_refused_with_nothing_saved() {
    let Some(browser) =
        start("a_pool_is_edited_and_a_bad_template_refused_with_nothing_saved").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    pool_and_deployment(url, json!([])).await;
    let (_, before) = api("GET", &format!("{url}/api/work-pools/p"), None).await;

    browser.goto(&format!("{url}/pools/p?tab=details")).await;
    settled(&browser).await;
    // The variables schema is a readable table.
    assert!(browser.text("table.variables").await.contains("command"));
    click(&browser, "#edit-pool summary").await;
    browser
        .fill("#pool-description", "The team's laptops")
        .await;
    browser.fill("#pool-concurrency_limit", "7").await;
    click(&browser, "#edit-pool button[type=submit]").await;
    browser
        .wait_text("dl.details", LIVE, |t| t.contains("The team's laptops"))
        .await;
    let (_, pool) = api("GET", &format!("{url}/api/work-pools/p"), None).await;
    assert_eq!(
        (&pool["description"], &pool["concurrency_limit"]),
        (&json!("The team's laptops"), &json!(7))
    );

    settled(&browser).await;
    click(&browser, "#edit-pool summary").await;
    browser.fill("#pool-description", "not saved").await;
    let bad =
        r#"{"job_configuration": {"command": "{{ nope }}"}, "variables": {"properties": {}}}"#;
    browser.fill("#pool-base_job_template", bad).await;
    click(&browser, "#edit-pool button[type=submit]").await;
    let error = browser
        .wait_text("#pool-base_job_template-error", LIVE, |t| !t.is_empty())
        .await;
    assert!(error.contains("not declared"), "{error}");
    let kept = js(
        &browser,
        "return document.getElementById('pool-base_job_template').value;",
    )
    .await;
    assert_eq!(kept, bad, "the refused text is kept to fix");
    let (_, pool) = api("GET", &format!("{url}/api/work-pools/p"), None).await;
    assert_eq!(pool["description"], "The team's laptops", "nothing saved");
    assert_eq!(pool["base_job_template"], before["base_job_template"]);
}

#[tokio::test]
async fn the_dashboard_counts_the_runs_made() {
    let Some(browser) = start("the_dashboard_counts_the_runs_made").await else {
        return;
    };
    let config = host::control::ControlConfig {
        late_after: Duration::from_millis(1),
        ..host::control::ControlConfig::default()
    };
    let server = TestServer::start_with(None, config).await;
    let url = &server.url;
    pool_and_deployment(url, json!([])).await;
    for _ in 0..3 {
        common::create_run(url, "f/d", json!({})).await;
    }
    let claim = json!({"worker": "w1", "limit": 3});
    let (status, claimed) = api(
        "POST",
        &format!("{url}/api/work-pools/p/claim"),
        Some(claim),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    let ids: Vec<&str> = claimed["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["flow_run"]["id"].as_str().expect("id"))
        .collect();
    for (id, end) in ids.iter().zip(["COMPLETED", "COMPLETED", "FAILED"]) {
        for state in ["RUNNING", end] {
            let body = json!({"type": state, "worker": "w1"});
            let (status, answer) = api(
                "POST",
                &format!("{url}/api/flow-runs/{id}/state"),
                Some(body),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    let past = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    common::create_run(url, "f/d", json!({"scheduled_at": past})).await;
    server.control.upkeep().await.expect("upkeep");
    let beat = json!({"name": "w1", "heartbeat_interval_seconds": 30});
    let (status, answer) = api(
        "POST",
        &format!("{url}/api/work-pools/p/workers/heartbeat"),
        Some(beat),
    )
    .await;
    assert!((200..300).contains(&status), "{answer}");

    browser.goto(url).await;
    settled(&browser).await;
    assert_eq!(browser.text("h1").await, "Dashboard");
    browser
        .wait_text("[data-count=COMPLETED]", LIVE, |t| t == "COMPLETED 2")
        .await;
    assert_eq!(browser.text("[data-count=FAILED]").await, "FAILED 1");
    assert_eq!(browser.text("[data-count=SCHEDULED]").await, "SCHEDULED 1");
    assert_eq!(browser.text("#late-runs p.big").await, "1");
    let row = "#troubled tr[data-deployment='f/d']";
    assert_eq!(browser.text(&format!("{row} td.late")).await, "1");
    assert_eq!(browser.text(&format!("{row} td.failed")).await, "1");
    let bars: u64 = js(
        &browser,
        "return [...document.querySelectorAll('svg.hours g')].reduce((n, g) => n + Number(g.dataset.total), 0);",
    )
    .await
    .as_u64()
    .expect("a number");
    assert_eq!(
        bars, 3,
        "the chart's bars: the runs that started (not the waiting one)"
    );
    assert_eq!(
        browser
            .text("#pool-health tr[data-pool='p'] td.online")
            .await,
        "1",
        "w1 heartbeats"
    );
    // The pools list is still below.
    assert!(browser.text("h2#work-pools").await.contains("Work Pools"));
}
