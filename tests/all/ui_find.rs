//! Finding runs and reading one in a real headless Chromium whose time zone
//! is India's (UTC+5:30): the run list filtered by name, by two states and
//! by days (the reader's days), with its count; times shown in the
//! reader's zone with UTC on hover; a state message's code and time; the
//! log filtered by stream and text, live lines included.

use crate::common;
use crate::run_find::five_runs;
use crate::ui_actions::click;

use common::browser::Browser;
use common::{TestServer, http};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const ZONE: &str = "Asia/Kolkata";

async fn js(browser: &Browser, script: &str) -> Value {
    browser
        .client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// The names in the list, top to bottom.
async fn rows(browser: &Browser) -> Value {
    js(
        browser,
        "return [...document.querySelectorAll('#runs tr[data-run] td:first-child a')].map(a => a.textContent);",
    )
    .await
}

async fn submit_filters(browser: &Browser) {
    browser.click("#run-filters button[type=submit]").await;
}

async fn url_of(browser: &Browser) -> String {
    browser.client.current_url().await.expect("url").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_are_found_by_name_states_and_the_readers_days() {
    let s = TestServer::start().await;
    five_runs(&s.url).await;
    let Some(browser) = Browser::start_in_zone("ui_find", Some(ZONE)).await else {
        return;
    };
    browser.goto(&format!("{}/runs", s.url)).await;
    browser
        .wait_text("#run-count", WAIT, |t| t == "5 runs")
        .await;

    // By name, ignoring case.
    browser.fill("#run-filters input[name=name]", "alpha").await;
    submit_filters(&browser).await;
    browser
        .wait_text("#run-count", WAIT, |t| t == "2 runs")
        .await;
    assert_eq!(rows(&browser).await, json!(["Alpha-done", "alpha-failed"]));
    assert!(
        url_of(&browser).await.contains("name=alpha"),
        "the filter is in the URL"
    );

    // By two states at once.
    browser.goto(&format!("{}/runs", s.url)).await;
    browser.click("#run-filters input[value=FAILED]").await;
    browser.click("#run-filters input[value=CRASHED]").await;
    submit_filters(&browser).await;
    browser
        .wait_text("#run-count", WAIT, |t| t == "2 runs")
        .await;
    assert_eq!(
        rows(&browser).await,
        json!(["beta-crashed", "alpha-failed"])
    );
    let url = url_of(&browser).await;
    assert!(url.contains("state=FAILED&state=CRASHED"), "{url}");
    // A bookmark of the filtered list is the same list.
    browser.goto(&url).await;
    browser
        .wait_text("#run-count", WAIT, |t| t == "2 runs")
        .await;

    // By days, which are the reader's: Alpha-done (20:00 UTC on the 12th)
    // is on the 13th in India, so the 11th to the 12th holds only beta.
    browser.goto(&format!("{}/runs", s.url)).await;
    js(
        &browser,
        "document.querySelector('#run-filters input[name=since]').value = '2026-01-11';
         document.querySelector('#run-filters input[name=until]').value = '2026-01-12';",
    )
    .await;
    submit_filters(&browser).await;
    browser
        .wait_text("#run-count", WAIT, |t| t == "1 run")
        .await;
    assert_eq!(rows(&browser).await, json!(["beta-crashed"]));
    let url = url_of(&browser).await;
    assert!(
        url.contains("tz=330"),
        "the browser's offset goes along: {url}"
    );

    // The expected start in India's time, UTC on hover.
    let start = "#runs tr[data-run] time[data-local]";
    let shown = browser
        .wait_text(start, WAIT, |t| !t.ends_with("UTC"))
        .await;
    assert!(shown.starts_with("2026-01-11 15:30:00"), "{shown}");
    let title = js(
        &browser,
        &format!("return document.querySelector('{start}').title;"),
    )
    .await;
    assert_eq!(title, json!("2026-01-11 10:00:00.000 UTC"));

    // The run's page: how long it ran, and its crash message readable.
    // The list is a live region: clicked again if swapped meanwhile.
    click(&browser, "#runs tr[data-run] td:first-child a").await;
    browser
        .wait_text("#duration", WAIT, |t| {
            t.ends_with(" ms") || t.ends_with(" s")
        })
        .await;
    let message = "#timeline li[data-state=CRASHED] p.message";
    let text = browser
        .wait_text(message, WAIT, |t| !t.contains("UTC") && !t.contains('Z'))
        .await;
    assert!(
        text.starts_with("worker w1 saw exit code 3 at 2026-01-10 15:30:05"),
        "no backticks, a local time: {text}"
    );
    assert!(!text.contains('`'), "{text}");
    let code = js(
        &browser,
        &format!(
            "return [...document.querySelectorAll('{message} code')].map(c => c.textContent);"
        ),
    )
    .await;
    assert_eq!(code, json!(["w1", "3"]));
}

async fn api(method: &str, url: &str, body: Value) -> Value {
    let (status, answer) = http(method, url, Some(&body.to_string()), None).await;
    assert!(status < 300, "{method} {url}: {status} {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runs_log_is_filtered_by_stream_and_text_live_lines_too() {
    let s = TestServer::start().await;
    let url = s.url.as_str();
    api(
        "POST",
        &format!("{url}/api/work-pools"),
        json!({"name": "p", "type": "process"}),
    )
    .await;
    api(
        "PUT",
        &format!("{url}/api/deployments"),
        json!({"flow": "f", "name": "d", "pool": "p"}),
    )
    .await;
    let id = common::create_run(url, "f/d", json!({})).await;
    api(
        "POST",
        &format!("{url}/api/work-pools/p/claim"),
        json!({"worker": "w1", "limit": 1}),
    )
    .await;
    api(
        "POST",
        &format!("{url}/api/flow-runs/{id}/state"),
        json!({"type": "RUNNING", "worker": "w1"}),
    )
    .await;
    let logs = format!("{url}/api/flow-runs/{id}/logs");
    api(
        "POST",
        &logs,
        json!([
            {"stream": "stdout", "message": "out one"},
            {"stream": "stderr", "message": "err one"},
            {"stream": "stderr", "message": "err TWO"},
            {"stream": "worker", "message": "worker note"},
        ]),
    )
    .await;
    let Some(browser) = Browser::start_in_zone("ui_find_logs", Some(ZONE)).await else {
        return;
    };
    let messages = "return [...document.querySelectorAll('#logs .msg')].map(m => m.textContent);";
    browser.goto(&format!("{url}/runs/{id}")).await;
    browser
        .wait_text("#duration", WAIT, |t| t.starts_with("running for "))
        .await;

    // By stream, from the form: the URL keeps it.
    browser
        .client
        .find(fantoccini::Locator::Css("#log-filters select[name=stream]"))
        .await
        .expect("stream select")
        .select_by_value("stderr")
        .await
        .expect("select stderr");
    browser.click("#log-filters button[type=submit]").await;
    browser
        .wait_text("#log-shown", WAIT, |t| t.starts_with("2 of 4"))
        .await;
    assert_eq!(js(&browser, messages).await, json!(["err one", "err TWO"]));
    assert!(url_of(&browser).await.contains("stream=stderr"));

    // Live lines go through the same filter.
    browser
        .wait_text("#live-indicator", WAIT, |t| t.contains("live"))
        .await;
    api(
        "POST",
        &logs,
        json!([
            {"stream": "stdout", "message": "out two"},
            {"stream": "stderr", "message": "err three"},
        ]),
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    while js(&browser, messages).await != json!(["err one", "err TWO", "err three"]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the live stderr line came, the stdout one not: {}",
            js(&browser, messages).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A log line's time is the reader's clock time, UTC on hover.
    let clock = js(
        &browser,
        "const t = document.querySelector('#logs time'); return [t.textContent, t.title];",
    )
    .await;
    let (text, title) = (
        clock[0].as_str().expect("text"),
        clock[1].as_str().expect("title"),
    );
    let utc = chrono::DateTime::parse_from_rfc3339(
        js(
            &browser,
            "return document.querySelector('#logs time').dateTime;",
        )
        .await
        .as_str()
        .expect("datetime"),
    )
    .expect("an RFC 3339 datetime");
    let india = utc.with_timezone(&chrono::FixedOffset::east_opt(330 * 60).expect("offset"));
    assert_eq!(text, india.format("%H:%M:%S%.3f").to_string());
    assert!(title.ends_with("UTC"), "{title}");

    // By text within the page, case aside, with the stream.
    browser.fill("#log-filters input[name=q]", "two").await;
    browser.click("#log-filters button[type=submit]").await;
    browser
        .wait_text("#log-shown", WAIT, |t| t.starts_with("1 of 6"))
        .await;
    assert_eq!(js(&browser, messages).await, json!(["err TWO"]));
    let here = url_of(&browser).await;
    assert!(
        here.contains("q=two") && here.contains("stream=stderr"),
        "{here}"
    );
}
