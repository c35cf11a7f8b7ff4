//! Nobody in where they do not belong: a page of another site (or another
//! port) driving the API or the UI's forms through the user's browser, a
//! name that rebinds to loopback, and workers reaching past their own runs.
//! All against a real `host serve`.

use crate::common;

use common::{ServerProcess, host_ok, http};
use reqwest::header::{CONTENT_TYPE, COOKIE, HOST, ORIGIN};
use serde_json::{Value, json};

fn web() -> reqwest::Client {
    common::web_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn pools(url: &str, token: Option<&str>) -> Value {
    let mut request = web().get(format!("{url}/api/work-pools"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let (status, pools) = answer(request.send().await.expect("list")).await;
    assert_eq!(status, 200, "{pools}");
    pools
}

/// The `csrf` field of the first form on a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').expect("closing quote")].to_string()
}

/// What an `enctype=text/plain` form on any page can send: a JSON body
/// under the wrong content type.
#[tokio::test]
async fn a_page_elsewhere_cannot_post_to_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = &server.url;
    let pool = json!({"name": "p", "type": "process"}).to_string();
    let post = || web().post(format!("{url}/api/work-pools"));

    let form = post()
        .header(CONTENT_TYPE, "text/plain")
        .body(pool.clone())
        .send()
        .await
        .expect("post");
    let (status, error) = answer(form).await;
    assert_eq!(status, 415, "{error}");
    assert_eq!(error["field"], "content-type", "{error}");
    let bare = post().body(pool.clone()).send().await.expect("post");
    assert_eq!(answer(bare).await.0, 415, "a body with no content type");

    // A page on another port is another origin, though the same site.
    for (header, value, field) in [
        ("origin", "http://127.0.0.1:1", "origin"),
        ("origin", "null", "origin"),
        ("sec-fetch-site", "same-site", "sec-fetch-site"),
        ("sec-fetch-site", "cross-site", "sec-fetch-site"),
    ] {
        let sent = post()
            .header(CONTENT_TYPE, "application/json")
            .header(header, value)
            .body(pool.clone())
            .send()
            .await
            .expect("post");
        let (status, error) = answer(sent).await;
        assert_eq!(status, 403, "{header}: {value}: {error}");
        assert_eq!(error["field"], field, "{error}");
    }
    assert_eq!(pools(url, None).await, json!([]), "nothing was created");

    // The CLI's requests, and a page of this server's own.
    let cli = post()
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(pool.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(answer(cli).await.0, 201);
    let own = web()
        .delete(format!("{url}/api/work-pools/p"))
        .header(ORIGIN, url.as_str())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("delete");
    assert_eq!(answer(own).await.0, 204, "a same-origin write goes through");
}

/// Logs in through the UI's form; the `Set-Cookie` it answers.
async fn log_in(url: &str, token: &str) -> String {
    let login_page = web().get(format!("{url}/login")).send().await.expect("get");
    let csrf = csrf_of(&login_page.text().await.expect("page"));
    let login = web()
        .post(format!("{url}/login"))
        .form(&[("token", token), ("next", "/"), ("csrf", &csrf)])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303);
    login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string()
}

/// The UI's session cookie reaches the API only for the UI's own reads:
/// a form elsewhere on the machine gets the cookie sent along too.
#[tokio::test]
async fn the_session_cookie_does_not_write_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &["--api-token", "s3cret"]);
    let url = &server.url;
    let cookie = log_in(url, "s3cret").await;
    let session = cookie.split(';').next().expect("pair").to_string();

    let write = web()
        .post(format!("{url}/api/work-pools"))
        .header(COOKIE, &session)
        .header(CONTENT_TYPE, "application/json")
        .json(&json!({"name": "p", "type": "process"}))
        .send()
        .await
        .expect("post");
    assert_eq!(answer(write).await.0, 401, "the cookie does not write");
    assert_eq!(pools(url, Some("s3cret")).await, json!([]));

    let read = web()
        .get(format!("{url}/api/work-pools"))
        .header(COOKIE, &session)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("get");
    assert_eq!(answer(read).await.0, 200, "the UI's own reads keep working");
    let elsewhere = web()
        .get(format!("{url}/api/work-pools"))
        .header(COOKIE, &session)
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .expect("get");
    assert_eq!(answer(elsewhere).await.0, 401, "nor reads from elsewhere");
}

/// The UI's actions carry a token only its own pages hold, bound to the
/// session: a form on another port knows neither.
#[tokio::test]
async fn ui_forms_need_the_token_of_their_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = &server.url;
    let create = |csrf: Option<&str>| {
        let mut fields = vec![("name", "p"), ("type", "process")];
        fields.extend(csrf.map(|c| ("csrf", c)));
        web().post(format!("{url}/ui/pools")).form(&fields).send()
    };

    let (status, page) = answer(create(None).await.expect("post")).await;
    assert_eq!(status, 403, "{page}");
    let (status, _) = answer(create(Some("0123abcd")).await.expect("post")).await;
    assert_eq!(status, 403, "a made-up token");
    assert_eq!(pools(url, None).await, json!([]), "nothing was created");

    let home = web().get(format!("{url}/")).send().await.expect("get");
    let csrf = csrf_of(&home.text().await.expect("page"));
    let created = create(Some(&csrf)).await.expect("post");
    assert_eq!(created.status(), 303);
    assert_eq!(pools(url, None).await[0]["name"], "p");

    // Somewhere else to go afterwards is refused before the action is taken.
    for back in [
        "//evil.example/",
        "/\tevil",
        "/\nx",
        "/\\evil",
        "https://evil.example/",
    ] {
        let fields = [
            ("name", "q"),
            ("type", "process"),
            ("csrf", &csrf),
            ("back", back),
        ];
        let refused = web()
            .post(format!("{url}/ui/pools"))
            .form(&fields)
            .send()
            .await
            .expect("post");
        assert_eq!(refused.status(), 400, "{back}");
    }
    assert_eq!(pools(url, None).await.as_array().map(Vec::len), Some(1));
}

/// DNS rebinding: a name the attacker controls resolves to 127.0.0.1, and
/// the browser then calls the page's own origin. Bound to loopback, the
/// server answers only loopback names.
#[tokio::test]
async fn bound_to_loopback_it_answers_only_loopback_hosts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = &server.url;
    let port = url.rsplit(':').next().expect("port");
    for path in ["/api/work-pools", "/", "/api/health"] {
        let rebound = web()
            .get(format!("{url}{path}"))
            .header(HOST, format!("rebind.attacker.example:{port}"))
            .send()
            .await
            .expect("get");
        let (status, error) = answer(rebound).await;
        assert_eq!(status, 403, "{path}: {error}");
        if path.starts_with("/api/") {
            assert_eq!(error["field"], "host", "{error}");
        }
    }
    for host in ["localhost", "127.0.0.1", "[::1]", "app.localhost"] {
        let local = web()
            .get(format!("{url}/api/work-pools"))
            .header(HOST, format!("{host}:{port}"))
            .send()
            .await
            .expect("get");
        assert_eq!(local.status(), 200, "{host}");
    }
}

/// Where the UI sends the browser after a login or an action is a path of
/// this site: a tab the browser drops (`/\t/evil.example/` is
/// `//evil.example/` to it) or a newline or NUL (no header can hold them;
/// they answered 500) lead home instead.
#[tokio::test]
async fn redirects_stay_on_this_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    for next in [
        "/%09/evil.example/",
        "/%0A/x",
        "/%00",
        "//evil.example/",
        "/%5Cevil",
    ] {
        let response = web()
            .get(format!("{}/login?next={next}", server.url))
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(String::from);
        assert!((300..400).contains(&status), "{next}: {status}");
        assert_eq!(location.as_deref(), Some("/"), "{next}");
    }
    let response = web()
        .get(format!("{}/login?next=/work-pools", server.url))
        .send()
        .await
        .expect("get");
    let location = response.headers().get("location").cloned();
    assert_eq!(
        location.as_ref().and_then(|l| l.to_str().ok()),
        Some("/work-pools")
    );
}

/// Two process pools, `p1` and `other`, a deployment in each, and a run of
/// `p1` claimed and started by its worker `w1`; returns that run's id.
async fn a_held_run(url: &str) -> String {
    for (pool, deployment) in [("p1", "d1"), ("other", "d2")] {
        let body = json!({"name": pool, "type": "process"}).to_string();
        let (status, answer) =
            http("POST", &format!("{url}/api/work-pools"), Some(&body), None).await;
        assert_eq!(status, 201, "{answer}");
        let body = json!({"flow": "f", "name": deployment, "pool": pool}).to_string();
        let (status, answer) =
            http("PUT", &format!("{url}/api/deployments"), Some(&body), None).await;
        assert!(status == 200 || status == 201, "{answer}");
    }
    let id = common::create_run(url, "f/d1", json!({})).await;
    let claimed = claim(url, "p1", "w1", 1).await;
    assert_eq!(
        claimed["runs"][0]["flow_run"]["id"],
        id.as_str(),
        "{claimed}"
    );
    let (status, answer) = set_state(url, &id, json!({"type": "RUNNING", "worker": "w1"})).await;
    assert_eq!(status, 200, "{answer}");
    id
}

async fn claim(url: &str, pool: &str, worker: &str, limit: u32) -> Value {
    let body = json!({"worker": worker, "limit": limit}).to_string();
    let path = format!("{url}/api/work-pools/{pool}/claim");
    let (status, answer) = http("POST", &path, Some(&body), None).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn set_state(url: &str, id: &str, body: Value) -> (u16, Value) {
    let path = format!("{url}/api/flow-runs/{id}/state");
    http("POST", &path, Some(&body.to_string()), None).await
}

async fn state_of(url: &str, id: &str) -> String {
    let (_, run) = http("GET", &format!("{url}/api/flow-runs/{id}"), None, None).await;
    run["state"]["type"].as_str().expect("state").to_string()
}

/// A held run's process runs on whatever the server records: only the
/// worker holding it reports its states; an operator overrides with
/// `force`, and cancels by asking the holder.
#[tokio::test]
async fn only_the_holder_moves_a_held_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = &server.url;
    let id = a_held_run(url).await;

    for body in [
        json!({"type": "FAILED"}),
        json!({"type": "COMPLETED", "worker": "w2"}),
        json!({"type": "FAILED", "worker": "w1", "force": "yes"}),
    ] {
        let (status, error) = set_state(url, &id, body.clone()).await;
        assert!(status == 409 || status == 400, "{body}: {status} {error}");
        let field = if status == 409 { "worker" } else { "force" };
        assert_eq!(error["field"], field, "{body}: {error}");
        assert_eq!(state_of(url, &id).await, "RUNNING", "{body}");
    }

    // Cancel asks the holder (CANCELLING), which then reports the outcome.
    let out = host_ok(url, &["flow-run", "cancel", &id]);
    assert!(out.contains("CANCELLING"), "{out}");
    let (status, answer) = set_state(url, &id, json!({"type": "FAILED"})).await;
    assert_eq!(status, 409, "still the holder's to finish: {answer}");

    let (status, answer) = set_state(
        url,
        &id,
        json!({"type": "CRASHED", "force": true, "message": "gone"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["flow_run"]["state"]["type"], "CRASHED");
}

/// Workers are per pool (`w1` of `p1` and `w1` of `other` are two): a
/// claim through a pool hands out that pool's runs only, and a heartbeat
/// under a live worker's name cannot change how long it is trusted.
#[tokio::test]
async fn claims_and_heartbeats_stay_in_their_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = &server.url;
    let held = a_held_run(url).await;
    let waiting = common::create_run(url, "f/d1", json!({})).await;
    host_ok(url, &["flow-run", "cancel", &held]);

    let through_other = claim(url, "other", "w1", 10).await;
    assert_eq!(through_other["runs"], json!([]), "{through_other}");
    assert_eq!(through_other["cancelling"], json!([]), "{through_other}");
    assert_eq!(state_of(url, &waiting).await, "SCHEDULED");

    let beat = |pool: &'static str, interval: u32| async move {
        let body = json!({"name": "w1", "heartbeat_interval_seconds": interval}).to_string();
        let path = format!("{url}/api/work-pools/{pool}/workers/heartbeat");
        http("POST", &path, Some(&body), None).await
    };
    assert_eq!(beat("p1", 10).await.0, 200);
    let (status, error) = beat("p1", 3600).await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["field"], "heartbeat_interval_seconds", "{error}");
    assert_eq!(beat("p1", 10).await.0, 200, "the worker itself beats on");
    assert_eq!(beat("other", 3600).await.0, 200, "another pool's w1");
    let (_, workers) = http(
        "GET",
        &format!("{url}/api/work-pools/p1/workers"),
        None,
        None,
    )
    .await;
    assert_eq!(workers[0]["heartbeat_interval_seconds"], 10, "{workers}");
}

/// The token read from a file serves the server, the CLI and the worker;
/// a worker given the token in its environment does not hand it on: the
/// run's supervisor (whose environment the workload's user can read) and
/// the run itself never have it.
#[tokio::test]
async fn the_token_stays_out_of_the_runs_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "file-secret\n").expect("token file");
    let file_arg = token_file.to_str().expect("utf-8 path");
    let server = ServerProcess::start(dir.path(), &["--api-token-file", file_arg]);
    let url = server.url.as_str();
    let (status, _) = http("GET", &format!("{url}/api/work-pools"), None, None).await;
    assert_eq!(status, 401, "the file's token is required");
    let with_file = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_host"))
            .args(args)
            .env("HOST_API_URL", url)
            .env("HOST_API_TOKEN_FILE", &token_file)
            .env_remove("HOST_API_TOKEN")
            .output()
            .expect("run host")
    };
    let created = with_file(&["work-pool", "create", "--type", "process", "p"]);
    assert!(created.status.success(), "{created:?}");
    let script = "tr '\\0' '\\n' < /proc/$PPID/environ | grep -c HOST_API_TOKEN; echo run-has:${HOST_API_TOKEN:-nothing}";
    let deployed = with_file(&[
        "deployment",
        "create",
        "f/env",
        "--pool",
        "p",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(deployed.status.success(), "{deployed:?}");
    // The legacy way: the token in the worker's own environment.
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "worker",
            "start",
            "--pool",
            "p",
            "--heartbeat-interval-seconds",
            "1",
        ])
        .env("HOST_API_URL", url)
        .env("HOST_API_TOKEN", "file-secret")
        .env("HOST_CACHE_DIR", dir.path().join("cache"))
        .env("HOST_WORK_DIR", dir.path().join("work"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("worker");
    let run = with_file(&["deployment", "run", "f/env", "--watch"]);
    let _ = worker.kill();
    let _ = worker.wait();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{run:?}");
    assert!(
        out.contains("| 0"),
        "the supervisor's environment has no token: {out}"
    );
    assert!(out.contains("run-has:nothing"), "{out}");
}

/// A session is the server's own, one per login: random (it was a hash of
/// the token, the same for everyone and forever), and over at logout.
#[tokio::test]
async fn each_login_is_its_own_session_and_logout_ends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &["--api-token", "s3cret"]);
    let url = &server.url;
    let first = log_in(url, "s3cret").await;
    let second = log_in(url, "s3cret").await;
    let pair = |cookie: &str| cookie.split(';').next().expect("pair").trim().to_string();
    let (one, two) = (pair(&first), pair(&second));
    assert_ne!(one, two, "each login gets a session of its own");
    let attributes: Vec<&str> = first.split(';').map(str::trim).collect();
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&wanted), "{wanted}: {first}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "plain HTTP: a Secure cookie would never come back: {first}"
    );
    let id = one.split_once('=').expect("name=value").1;
    assert!(id.len() >= 32, "at least 128 bits: {id}");

    let page = |session: String| {
        web()
            .get(format!("{url}/runs"))
            .header(COOKIE, session)
            .send()
    };
    let api = |session: String| {
        web()
            .get(format!("{url}/api/work-pools"))
            .header(COOKIE, session)
            .header("sec-fetch-site", "same-origin")
            .send()
    };
    let home = page(one.clone()).await.expect("page");
    assert_eq!(home.status(), 200);
    let csrf = csrf_of(&home.text().await.expect("page"));
    let logout = web()
        .post(format!("{url}/logout"))
        .header(COOKIE, &one)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 303);

    let after = page(one.clone()).await.expect("page");
    assert_eq!(after.status(), 303, "the page asks for a login again");
    let location = after.headers().get("location").map(|l| l.to_str().ok());
    assert!(
        location.flatten().is_some_and(|l| l.starts_with("/login")),
        "{location:?}"
    );
    assert_eq!(api(one).await.expect("api").status(), 401, "the API too");
    assert_eq!(page(two.clone()).await.expect("page").status(), 200);
    assert_eq!(
        api(two).await.expect("api").status(),
        200,
        "another login lives on"
    );
}

fn address_of(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Everything the server sends on `socket` until it closes it; `None` if it
/// is still open after `within`.
async fn closed_within(
    socket: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

/// Slowloris: a client that sends part of a header and then nothing, or
/// nothing at all, held a connection (and its memory) for as long as it
/// liked. Each is closed once the header timeout passes; an event stream,
/// whose headers came in long ago, goes on.
#[tokio::test]
async fn a_slow_or_silent_connection_is_closed() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &["--header-timeout-seconds", "1"]);
    let url = &server.url;
    let address = address_of(url);
    let mut events = web()
        .get(format!("{url}/api/events"))
        .send()
        .await
        .expect("event stream");
    assert_eq!(events.status(), 200);

    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    slow.write_all(format!("GET /api/health HTTP/1.1\r\nHost: {address}\r\nX-Slow: ").as_bytes())
        .await
        .expect("a partial header");
    let mut silent = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let bound = std::time::Duration::from_secs(10);
    for (name, socket) in [("slow", &mut slow), ("silent", &mut silent)] {
        let answer = closed_within(socket, bound).await;
        assert!(answer.is_some(), "{name}: still open after {bound:?}");
    }

    let body = json!({"name": "after", "type": "process"}).to_string();
    let (status, created) = http("POST", &format!("{url}/api/work-pools"), Some(&body), None).await;
    assert_eq!(status, 201, "{created}");
    let news = tokio::time::timeout(bound, async {
        let mut seen = String::new();
        while let Some(chunk) = events.chunk().await.expect("stream") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("\"after\"") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(news, Ok(true), "the event stream outlived the timeout");
}

/// Past the connection cap a new connection is turned away at once instead
/// of waiting (and holding memory) for a slot; when one frees, the next
/// gets in.
#[tokio::test]
async fn connections_past_the_cap_are_turned_away_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &["--max-connections", "4"]);
    let address = address_of(&server.url);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut socket = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        // An answer shows the server took the connection.
        let request = format!("GET /api/health HTTP/1.1\r\nHost: {address}\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut answer = [0u8; 1024];
        let n = socket.read(&mut answer).await.expect("answer");
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer[..n])
        );
        held.push(socket);
    }
    let mut fifth = tokio::net::TcpStream::connect(&address)
        .await
        .expect("the kernel still accepts");
    let turned_away = closed_within(&mut fifth, std::time::Duration::from_secs(5)).await;
    let answer = turned_away.expect("the fifth connection was left waiting");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );

    drop(held.pop());
    let healthy = || {
        use std::io::{Read, Write};
        let Ok(mut socket) = std::net::TcpStream::connect(&address) else {
            return false;
        };
        let request = format!("GET /api/health HTTP/1.1\r\nHost: {address}\r\n\r\n");
        let _ = socket.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut answer = [0u8; 12];
        socket.write_all(request.as_bytes()).is_ok()
            && socket.read_exact(&mut answer).is_ok()
            && answer == *b"HTTP/1.1 200"
    };
    let back = common::wait_until(std::time::Duration::from_secs(10), healthy).await;
    assert!(back, "a freed slot takes the next connection");
}

/// A body past the limit is 413 naming the limit (it was 400, as if the
/// request were malformed).
#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let big = json!({"name": "p", "type": "process", "padding": "x".repeat(3 << 20)}).to_string();
    let (status, error) = server.request("POST", "/api/work-pools", Some(&big)).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["field"], "body", "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("2 MiB")),
        "{error}"
    );
}

/// The document says what the server asks: a bearer token when it has
/// one, nothing when it has none (schemathesis' auth checks failed).
#[tokio::test]
async fn the_api_document_asks_for_a_token_only_when_the_server_has_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = ServerProcess::start(&dir.path().join("open"), &[]);
    let (status, doc) = open.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc.get("security").is_none_or(|s| s == &json!([])),
        "{}",
        doc["security"]
    );
    assert!(
        doc["components"]["securitySchemes"].is_null(),
        "{}",
        doc["components"]["securitySchemes"]
    );

    let closed = ServerProcess::start(&dir.path().join("closed"), &["--api-token", "s3cret"]);
    let url = format!("{}/api/openapi.json", closed.url);
    let (status, doc) = http("GET", &url, None, Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(doc["security"], json!([{"token": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
}

/// A state's name fits its type: a CANCELLED run named `Completed` (or
/// anything) told a lie in every list. The type's own name and the names
/// the server itself gives (`Late`) are taken; `Disconnected` is the
/// server's to give.
#[tokio::test]
async fn a_state_is_named_as_its_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = &server.url;
    let id = a_held_run(url).await;
    for body in [
        json!({"type": "CANCELLED", "name": "Completed", "worker": "w1"}),
        json!({"type": "FAILED", "name": "anything at all", "worker": "w1"}),
        json!({"type": "RUNNING", "name": "Disconnected", "worker": "w1"}),
        json!({"type": "COMPLETED", "name": "completed", "worker": "w1"}),
    ] {
        let (status, error) = set_state(url, &id, body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["field"], "name", "{body}: {error}");
    }
    assert_eq!(state_of(url, &id).await, "RUNNING");
    let (status, answer) = set_state(
        url,
        &id,
        json!({"type": "COMPLETED", "name": "Completed", "worker": "w1"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["flow_run"]["state"]["name"], "Completed");
}

/// A page of this server shown in another site's frame would take the
/// user's clicks as their own (their session, the form's token): no page
/// may be framed.
#[tokio::test]
async fn no_page_may_be_framed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    for path in ["/", "/login", "/api/work-pools"] {
        let page = web()
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .expect("get");
        let headers = page.headers();
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(
            headers["content-security-policy"], "frame-ancestors 'none'",
            "{path}"
        );
    }
}

/// A UI form is not waited for outside a session (it goes to the login
/// form unread), and within one it has a bound of time to arrive: a body
/// promised and never sent holds no connection.
#[tokio::test]
async fn a_form_promised_and_never_sent_is_not_waited_for() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let guarded = ServerProcess::start(&dir.path().join("guarded"), &["--api-token", "s3cret"]);
    let cookie = log_in(&guarded.url, "s3cret").await;
    let session = cookie.split(';').next().expect("cookie").to_string();
    for (url, cookie, bound, expect) in [
        (&guarded.url, None, 5, "303"),
        (&server.url, None, 20, "408"),
        (&guarded.url, Some(session.as_str()), 20, "408"),
    ] {
        let address = address_of(url);
        let mut socket = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        let head = format!(
            "POST /ui/pools HTTP/1.1\r\nHost: {address}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncsrf="
        );
        socket.write_all(head.as_bytes()).await.expect("send");
        let answer = closed_within(&mut socket, std::time::Duration::from_secs(bound)).await;
        let answer = answer.unwrap_or_else(|| panic!("{url} {cookie}: no answer within {bound} s"));
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expect}")),
            "{url} {cookie}: {answer}"
        );
    }
}
