//! The web UI: HTTP-level checks (token, POST-only actions, other sites),
//! then the tutorial's screens in a real headless Chromium against a real
//! `host serve`, worker and process plugin.

mod transfer;

use crate::common;

use common::browser::Browser;
use common::{ServerProcess, TestServer, WorkerProcess, host_ok, http, process_alive};
use serde_json::{Value, json};
use std::time::Duration;

const LIVE: Duration = Duration::from_secs(20);

/// The `csrf` field of the first form on a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').expect("closing quote")].to_string()
}

fn no_redirects() -> reqwest::Client {
    common::web_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn with_a_token_pages_and_the_stream_need_the_login_cookie() {
    let server = TestServer::start_with(Some("s3cret"), Default::default()).await;
    let url = &server.url;
    let web = no_redirects();

    for page in [
        "/",
        "/pools/p",
        "/deployments",
        "/runs",
        "/runs/x",
        "/plugins",
    ] {
        let answer = web.get(format!("{url}{page}")).send().await.expect("get");
        assert_eq!(answer.status(), 303, "{page}");
        let location = answer.headers()["location"].to_str().expect("location");
        assert!(location.starts_with("/login?next="), "{page} → {location}");
    }
    // The login page's CSRF token is for no session: it opens no action.
    let anonymous = csrf_of(
        &web.get(format!("{url}/login"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("page"),
    );
    let action = web
        .post(format!("{url}/ui/pools"))
        .form(&[("name", "p"), ("type", "process"), ("csrf", &anonymous)])
        .send()
        .await
        .expect("post");
    assert_eq!(action.status(), 303, "an action without the cookie");
    assert_eq!(action.headers()["location"], "/login?next=/");
    assert!(
        server.control.pools().expect("pools").is_empty(),
        "nothing created"
    );
    let (status, _) = http("GET", &format!("{url}/api/events"), None, None).await;
    assert_eq!(status, 401, "the stream without the token");
    // The assets reveal no data, and the login form needs them.
    let login = web
        .get(format!("{url}/login"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("page");
    let css = transfer::linked_asset(&login, "css");
    let js = transfer::linked_asset(&login, "js");
    for asset in [css.as_str(), js.as_str(), "/login"] {
        let answer = web.get(format!("{url}{asset}")).send().await.expect("get");
        assert_eq!(answer.status(), 200, "{asset}");
    }

    let wrong = web
        .post(format!("{url}/login"))
        .form(&[("token", "guess"), ("next", "/runs"), ("csrf", &anonymous)])
        .send()
        .await
        .expect("login");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(
        wrong
            .text()
            .await
            .expect("body")
            .contains("not this server's API token")
    );

    let right = web
        .post(format!("{url}/login"))
        .form(&[("token", "s3cret"), ("next", "/runs"), ("csrf", &anonymous)])
        .send()
        .await
        .expect("login");
    assert_eq!(right.status(), 303);
    assert_eq!(right.headers()["location"], "/runs");
    let cookie = right.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("s3cret"),
        "the cookie does not hold the token: {cookie}"
    );
    let session = cookie.split(';').next().expect("pair").to_string();

    let page = web
        .get(format!("{url}/runs"))
        .header("cookie", &session)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let stream = web
        .get(format!("{url}/api/events"))
        .header("cookie", &session)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let api = web
        .get(format!("{url}/api/work-pools"))
        .header("cookie", "host_session=forged")
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 401, "a made-up session is refused");
}

#[tokio::test]
async fn actions_are_posts_from_the_ui_itself() {
    let server = TestServer::start().await;
    let url = &server.url;
    let web = no_redirects();

    let get = web
        .get(format!("{url}/ui/pools"))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 405, "no state change on GET");
    let home = web.get(format!("{url}/")).send().await.expect("get");
    let csrf = csrf_of(&home.text().await.expect("page"));

    let elsewhere = web
        .post(format!("{url}/ui/pools"))
        .header("origin", "http://evil.example")
        .form(&[("name", "p"), ("type", "process"), ("csrf", &csrf)])
        .send()
        .await
        .expect("post");
    assert_eq!(elsewhere.status(), 403);
    let (_, pools) = http("GET", &format!("{url}/api/work-pools"), None, None).await;
    assert_eq!(pools, json!([]), "nothing created from another site");

    let here = web
        .post(format!("{url}/ui/pools"))
        .header("origin", url.as_str())
        .form(&[
            ("name", "p"),
            ("type", "process"),
            ("concurrency_limit", ""),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(here.status(), 303);
    assert_eq!(here.headers()["location"], "/pools/p");

    let bad = web
        .post(format!("{url}/ui/pools"))
        .form(&[
            ("name", "q"),
            ("type", "process"),
            ("concurrency_limit", "many"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    let html = bad.text().await.expect("body");
    assert!(html.contains(r#"data-field="concurrency_limit""#), "{html}");
    assert!(
        html.contains(r#"value="many""#),
        "the form keeps what was typed"
    );

    let taken = web
        .post(format!("{url}/ui/pools"))
        .form(&[("name", "p"), ("type", "process"), ("csrf", &csrf)])
        .send()
        .await
        .expect("post");
    assert_eq!(taken.status(), 409);
    assert!(
        taken
            .text()
            .await
            .expect("body")
            .contains(r#"data-field="name""#)
    );

    // `back` never leads off this server: one that would is refused
    // before the action is taken.
    let pause = |back: &'static str| {
        web.post(format!("{url}/ui/pools/p/pause"))
            .form(&[("back", back), ("csrf", &csrf)])
            .send()
    };
    assert_eq!(pause("//evil.example/").await.expect("pause").status(), 400);
    let (_, pool) = http("GET", &format!("{url}/api/work-pools/p"), None, None).await;
    assert_ne!(pool["status"], "PAUSED");
    let paused = pause("/work-pools/p").await.expect("pause");
    assert_eq!(paused.status(), 303);
    assert_eq!(paused.headers()["location"], "/work-pools/p");
    let (_, pool) = http("GET", &format!("{url}/api/work-pools/p"), None, None).await;
    assert_eq!(pool["status"], "PAUSED");

    let missing = web
        .get(format!("{url}/runs/nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    assert!(
        missing
            .text()
            .await
            .expect("body")
            .contains("does not exist")
    );
}

/// The seeds' story: a pool made in the UI is NOT_READY (red) until a
/// worker polls it, then READY (green) with no reload; its Workers tab
/// lists the worker, polled seconds ago.
#[tokio::test]
async fn a_pool_turns_ready_live_when_its_worker_starts() {
    let Some(browser) = Browser::start("a_pool_turns_ready_live_when_its_worker_starts").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();

    browser.goto(url).await;
    assert!(browser.text("h2#work-pools").await.contains("Work Pools"));
    browser.fill("#name", "my-pool").await;
    browser
        .client
        .find(fantoccini::Locator::Css("#type"))
        .await
        .expect("type")
        .select_by_value("process")
        .await
        .expect("select");
    browser
        .click("form[action='/ui/pools'] button[type=submit]")
        .await;
    // The form page's own heading stays until the browser has moved on.
    let heading = browser.wait_text("h1", LIVE, |t| t == "my-pool").await;
    assert_eq!(heading, "my-pool");
    assert!(browser.text("#pool-status").await.contains("NOT_READY"));

    browser.goto(url).await;
    let row = "tr[data-pool='my-pool']";
    let status = browser.text(&format!("{row} .status")).await;
    assert_eq!(status, "NOT_READY");
    let colour = dot_colour(&browser, row).await;
    browser.mark_document().await;

    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "my-pool"]);
    browser
        .wait_text(&format!("{row} .status"), LIVE, |t| t == "READY")
        .await;
    assert!(
        browser.document_is_marked().await,
        "READY arrived without a reload"
    );
    assert_ne!(
        dot_colour(&browser, row).await,
        colour,
        "the dot changed colour too"
    );

    browser
        .goto(&format!("{url}/pools/my-pool?tab=workers"))
        .await;
    let worker = browser
        .wait_text("#workers tbody tr", LIVE, |t| t.contains("ONLINE"))
        .await;
    assert!(
        worker.contains(" s ago"),
        "last polled seconds ago: {worker}"
    );
}

async fn dot_colour(browser: &Browser, row: &str) -> String {
    let script =
        format!("return getComputedStyle(document.querySelector(\"{row} .dot\")).backgroundColor;");
    browser
        .client
        .execute(&script, vec![])
        .await
        .expect("colour")
        .to_string()
}

fn process_pool_with(url: &str, deployment: &str, script: &str) {
    host_ok(url, &["work-pool", "create", "--type", "process", "p"]);
    host_ok(
        url,
        &[
            "deployment",
            "create",
            deployment,
            "--pool",
            "p",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
}

/// The Run form: a bad job variable comes back with the server's error next
/// to its field; a good run's page shows its states and logs as they happen.
#[tokio::test]
async fn a_run_from_its_form_streams_states_and_logs() {
    let Some(browser) = Browser::start("a_run_from_its_form_streams_states_and_logs").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_pool_with(
        url,
        "f/hello",
        "sleep 1; echo hello-from-ui; echo second-line",
    );
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "p"]);

    browser.goto(&format!("{url}/deployments/f/hello")).await;
    let timeout = "[name='job_variables.timeout_seconds']";
    browser.fill(timeout, "0").await;
    browser.click("#run button[type=submit]").await;
    let error = browser
        .text(".field-error[data-field='job_variables.timeout_seconds']")
        .await;
    assert!(error.contains("job_variables.timeout_seconds"), "{error}");
    assert!(error.contains("minimum"), "{error}");
    let (_, runs) = http("GET", &format!("{url}/api/flow-runs"), None, None).await;
    assert_eq!(runs["runs"], json!([]), "nothing was created");

    browser.fill(timeout, "").await;
    browser.click("#run button[type=submit]").await;
    browser
        .wait_text("h1", LIVE, |t| !t.is_empty() && t != "f/hello")
        .await;
    browser.mark_document().await;
    let timeline = browser
        .wait_text("#timeline", LIVE, |t| t.contains("COMPLETED"))
        .await;
    let order: Vec<usize> = ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]
        .iter()
        .map(|s| {
            timeline
                .find(s)
                .unwrap_or_else(|| panic!("{s} in {timeline}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{timeline}");
    browser
        .wait_text("#logs", LIVE, |t| t.contains("second-line"))
        .await;
    // Each line is its time, then its message.
    let messages = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#logs .line')].map(l => [l.querySelector('.ts').textContent, l.querySelector('.msg').textContent]);",
            vec![],
        )
        .await
        .expect("lines");
    let messages: Vec<(String, String)> = serde_json::from_value(messages).expect("pairs");
    let texts: Vec<&str> = messages.iter().map(|(_, m)| m.as_str()).collect();
    assert!(
        texts.ends_with(&["hello-from-ui", "second-line"]),
        "each line once, in order: {texts:?}"
    );
    assert!(
        messages
            .iter()
            .all(|(time, _)| time.len() == 12 && time.as_bytes()[2] == b':'),
        "HH:MM:SS.mmm: {messages:?}"
    );
    assert!(browser.document_is_marked().await, "all of it arrived live");
    assert!(browser.text("#run-head").await.contains("COMPLETED"));
}

#[tokio::test]
async fn cancel_from_the_run_page_stops_the_process() {
    let Some(browser) = Browser::start("cancel_from_the_run_page_stops_the_process").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_pool_with(url, "f/sleepy", "echo started; sleep 60");
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "p", "--stop-grace-seconds", "2"],
    );

    browser.goto(&format!("{url}/deployments/f/sleepy")).await;
    browser.click("#run button[type=submit]").await;
    browser
        .wait_text("#run-head", LIVE, |t| t.contains("RUNNING"))
        .await;
    browser
        .wait_text("#logs", LIVE, |t| t.contains("started"))
        .await;
    let id = browser
        .client
        .execute(
            "return document.getElementById('logs').dataset.run;",
            vec![],
        )
        .await
        .expect("id");
    let id = id.as_str().expect("run id");
    let (_, run) = http("GET", &format!("{url}/api/flow-runs/{id}"), None, None).await;
    let handle: Value =
        serde_json::from_str(run["infrastructure_handle"].as_str().expect("handle")).expect("json");
    let pid = handle["pid"].as_i64().expect("pid") as i32;
    assert!(process_alive(pid));

    browser.click("#run-head form[data-confirm] button").await;
    browser.client.accept_alert().await.expect("confirm");
    browser
        .wait_text("#run-head", LIVE, |t| t.contains("CANCELLED"))
        .await;
    assert!(!process_alive(pid), "the process is gone");
}

/// With a token: the browser is sent to the login form, and after it every
/// page and the live stream work.
#[tokio::test]
async fn the_browser_logs_in_once_and_the_stream_follows() {
    let Some(browser) = Browser::start("the_browser_logs_in_once_and_the_stream_follows").await
    else {
        return;
    };
    let server = TestServer::start_with(Some("s3cret"), Default::default()).await;
    let url = &server.url;

    browser.goto(&format!("{url}/plugins")).await;
    assert_eq!(browser.text("h1").await, "Log in");
    browser.fill("#token", "wrong").await;
    browser.click("form button[type=submit]").await;
    assert!(
        browser
            .text(".field-error")
            .await
            .contains("not this server's API token")
    );
    browser.fill("#token", "s3cret").await;
    browser.click("form button[type=submit]").await;
    // The login page's own heading stays until the browser has moved on.
    let heading = browser.wait_text("h1", LIVE, |t| t == "Plugins").await;
    assert_eq!(heading, "Plugins");
    assert!(browser.text("#plugin-process").await.contains("process"));

    browser.goto(url).await;
    browser
        .wait_text("#live-indicator", LIVE, |t| t.contains("live"))
        .await;
    let cookie_visible = browser
        .client
        .execute("return document.cookie;", vec![])
        .await
        .expect("cookie");
    assert_eq!(
        cookie_visible,
        json!(""),
        "HttpOnly: scripts cannot read it"
    );
}

/// 10,000 runs, 50 a page: following "Older" visits every run once, newest
/// first, as the API lists them.
#[tokio::test]
async fn the_runs_list_pages_through_ten_thousand_runs() {
    let Some(browser) = Browser::start("the_runs_list_pages_through_ten_thousand_runs").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let url = &server.url;
    // Through HTTP from this runtime: the in-process server shares its thread.
    let pool = json!({"name": "p", "type": "process"}).to_string();
    assert_eq!(
        http("POST", &format!("{url}/api/work-pools"), Some(&pool), None)
            .await
            .0,
        201
    );
    let deployment = json!({"flow": "f", "name": "d", "pool": "p"}).to_string();
    let (status, _) = http(
        "PUT",
        &format!("{url}/api/deployments"),
        Some(&deployment),
        None,
    )
    .await;
    assert!(status == 200 || status == 201, "{status}");
    common::store_runs(&server.control, "f/d", 10_000).await;

    browser.goto(&format!("{url}/runs")).await;
    let mut seen: Vec<String> = Vec::new();
    loop {
        // The next page, once the click's navigation has replaced the rows.
        let deadline = std::time::Instant::now() + LIVE;
        let ids = loop {
            let ids = browser
                .client
                .execute(
                    "return [...document.querySelectorAll('#runs tr[data-run]')].map(r => r.dataset.run);",
                    vec![],
                )
                .await
                .expect("ids");
            let ids: Vec<String> = serde_json::from_value(ids).expect("strings");
            if ids.first() != seen.last() && !ids.first().is_some_and(|id| seen.contains(id)) {
                break ids;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the next page never came"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!ids.is_empty() && ids.len() <= 50, "{} rows", ids.len());
        seen.extend(ids);
        if browser
            .client
            .find(fantoccini::Locator::Css("#next-page"))
            .await
            .is_err()
        {
            break;
        }
        browser.click("#next-page").await;
    }
    let listed = common::run_states(url, "f/d").await;
    let listed: Vec<String> = listed.into_iter().map(|(id, _)| id).collect();
    assert_eq!(seen.len(), 10_000);
    assert_eq!(seen, listed, "every run once, in the API's order");

    browser.click("#first-page").await;
    let first = browser.text("#runs tbody tr").await;
    assert!(first.contains("SCHEDULED"), "{first}");
}

/// The screenshots in `docs/ui/`, of a server in the state the tutorial
/// leaves it: `cargo test --release --test ui -- --ignored screenshots`.
#[tokio::test]
#[ignore = "writes docs/ui/*.png; run on purpose"]
async fn screenshots() {
    let Some(browser) = Browser::start("screenshots").await else {
        panic!("screenshots need chromium and chromium-driver");
    };
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ui");
    std::fs::create_dir_all(&out).expect("docs/ui");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    host_ok(
        url,
        &["work-pool", "create", "--type", "process", "my-pool"],
    );
    host_ok(
        url,
        &[
            "work-pool",
            "create",
            "--type",
            "mock-serverless",
            "staging",
        ],
    );
    host_ok(
        url,
        &[
            "deployment",
            "create",
            "hello/my-deployment",
            "--pool",
            "my-pool",
            "--cron",
            "0 9 * * 1-5",
            "--",
            "sh",
            "-c",
            "echo Hello from host; sleep 1; echo working; sleep 1; echo done",
        ],
    );
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "my-pool"]);
    let mut last = String::new();
    for _ in 0..3 {
        last = common::create_run(url, "hello/my-deployment", json!({})).await;
    }
    common::final_run(url, &last, LIVE).await;

    let shots = [
        ("work-pools", String::new()),
        ("pool-details", "/pools/my-pool".into()),
        ("pool-work-queues", "/pools/my-pool?tab=queues".into()),
        ("pool-workers", "/pools/my-pool?tab=workers".into()),
        ("deployments", "/deployments".into()),
        (
            "deployment-run-form",
            "/deployments/hello/my-deployment".into(),
        ),
        ("flow-runs", "/runs".into()),
        ("flow-run", format!("/runs/{last}")),
        ("plugins", "/plugins".into()),
    ];
    for (name, path) in shots {
        browser.goto(&format!("{url}{path}")).await;
        browser.wait_text("h1", LIVE, |t| !t.is_empty()).await;
        if name != "plugins" {
            browser
                .wait_text("#live-indicator", LIVE, |t| t.contains("live"))
                .await;
        }
        browser.screenshot(&out.join(format!("{name}.png"))).await;
    }
}
