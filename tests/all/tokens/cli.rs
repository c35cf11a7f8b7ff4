//! `host token` against a real server: exit codes and messages, admins
//! only; named tokens need the bootstrap token; `host worker start` with a
//! worker token works as the token.

use super::{BOOT, Fixture};
use crate::common::{ServerProcess, WorkerProcess};
use serde_json::{Value, json};
use std::time::Duration;

/// `host` with a token of its own (the helpers run it without one).
fn host(url: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_host"));
    command
        .args(args)
        .env("HOST_API_URL", url)
        .env_remove("HOST_API_TOKEN");
    if let Some(token) = token {
        command.env("HOST_API_TOKEN", token);
    }
    let out = command.output().expect("run host");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[tokio::test]
async fn host_token_makes_lists_and_revokes_for_admins_only() {
    let fixture = Fixture::new().await;
    let url = &fixture.server.url;
    let args = [
        "token", "create", "ci", "--role", "worker", "--pool", "p1", "--pool", "p2",
    ];
    let (code, out, err) = host(url, Some(BOOT), &args);
    assert_eq!(code, 0, "{out}{err}");
    let secret = out.trim();
    assert!(
        secret.starts_with("host_ci_") && secret.len() == "host_ci_".len() + 64,
        "{out}"
    );
    assert!(err.contains("shown only now"), "{err}");

    let (code, out, err) = host(url, Some(fixture.secret("adm")), &["token", "ls"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("ci "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("worker") && row.contains("p1,p2"), "{row}");
    assert!(
        !out.contains(secret) && !out.contains("host_"),
        "no secret listed: {out}"
    );

    // A worker token is no admin: a clear refusal and a failing exit.
    let (code, _, err) = host(url, Some(secret), &["token", "ls"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("needs an admin token") && err.contains("`ci` is a worker"),
        "{err}"
    );
    let (code, _, err) = host(url, Some(fixture.secret("dep")), &["token", "revoke", "ci"]);
    assert_ne!(code, 0);
    assert!(err.contains("role:"), "{err}");
    let (code, _, err) = host(
        url,
        Some(BOOT),
        &["token", "create", "x", "--role", "worker"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("pools:"), "{err}");
    let (code, _, err) = host(
        url,
        Some(BOOT),
        &["token", "create", "ci", "--role", "viewer"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");

    let (code, out, err) = host(url, Some(BOOT), &["token", "revoke", "ci"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Revoked token `ci`"), "{out}");
    let (code, _, err) = host(url, Some(secret), &["work-pool", "ls"]);
    assert_ne!(code, 0);
    assert!(err.contains("revoked"), "{err}");
    let (code, _, err) = host(url, Some(BOOT), &["token", "revoke", "ci"]);
    assert_ne!(code, 0);
    assert!(err.contains("no token `ci`"), "{err}");
}

#[tokio::test]
async fn named_tokens_need_the_bootstrap_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        let open = ServerProcess::start(&data, &[]);
        let (code, _, err) = host(
            &open.url,
            None,
            &["token", "create", "v", "--role", "viewer"],
        );
        assert_ne!(code, 0);
        assert!(err.contains("HOST_API_TOKEN"), "{err}");
    }
    {
        let closed = ServerProcess::start(&data, &["--api-token", BOOT]);
        let (code, _, err) = host(
            &closed.url,
            Some(BOOT),
            &["token", "create", "v", "--role", "viewer"],
        );
        assert_eq!(code, 0, "{err}");
    }
    // Open beside them, the server would let anybody in: it will not start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "serve",
            "--port",
            "0",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ])
        .env("HOST_CACHE_DIR", dir.path().join("cache"))
        .env_remove("HOST_API_TOKEN")
        .output()
        .expect("host serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("named API tokens") && err.contains("HOST_API_TOKEN"),
        "{err}"
    );
}

#[tokio::test]
async fn a_worker_started_with_its_token_works_as_the_token() {
    let fixture = Fixture::new().await;
    let url = &fixture.server.url;
    let cache = fixture.dir.path().join("worker-cache");
    let w1 = fixture.secret("w1");
    // Another name, or a pool the token does not cover: refused at start.
    for (args, said) in [
        (&["--pool", "p1", "--name", "w9"][..], "--name w9"),
        (&["--pool", "p2"][..], "--pool p2"),
    ] {
        let mut all = vec!["worker", "start"];
        all.extend_from_slice(args);
        let (code, _, err) = host(url, Some(w1), &all);
        assert_ne!(code, 0);
        assert!(err.contains(said) && err.contains("`w1`"), "{err}");
    }
    let run = fixture
        .admin("POST", "/api/deployments/f/d/runs", json!({}))
        .await;
    let id = run["id"].as_str().expect("id");
    let _worker = WorkerProcess::start(url, &cache, &["--pool", "p1", "--api-token", w1]);
    let done = wait_final(&fixture, id).await;
    assert_eq!(done["state"]["type"], "COMPLETED", "{done}");
    assert_eq!(done["worker"], "w1", "{done}");
}

async fn wait_final(fixture: &Fixture, id: &str) -> Value {
    let path = format!("/api/flow-runs/{id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, run) = fixture.call("GET", &path, None, Some(BOOT)).await;
        let state = run["state"]["type"].as_str().unwrap_or("");
        if ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"].contains(&state) {
            return run;
        }
        assert!(std::time::Instant::now() < deadline, "not final: {run}");
        // Waits on the server for the run's next change, not a fixed time.
        let changed = run["updated"].as_str().unwrap_or("");
        let wait = format!(
            "{path}?wait_ms=5000&changed_after={}",
            changed.replace('+', "%2B")
        );
        fixture.call("GET", &wait, None, Some(BOOT)).await;
    }
}
