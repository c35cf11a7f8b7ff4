//! Plugin containment: every call bounded, every value bounded, every resource
//! scoped to its run, and a conformance suite that catches broken promises.
//! The attackers are the project's own guests under tests/guests/.

use crate::common;

use common::{ServerProcess, WorkerProcess, create_run, guests, job, run_logs};
use host::capabilities::CollectOutput;
use host::plugins::{self, Registry};
use host::runtime::{CallError, Capability, Grants, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn quick_runtime(cache: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        memory_limit_bytes: 256 << 20,
        quick_call: Duration::from_secs(1),
        slow_call: Duration::from_secs(2),
        supervisor: Some(env!("CARGO_BIN_EXE_host").into()),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn hostile_grants() -> Grants {
    Grants::new([Capability::Process, Capability::ContainerRuntime])
}

/// A plugin directory holding `guest` as `name.wasm`, with `grants` lines.
fn plugin_dir(root: &Path, name: &str, guest: &str, grants: &str) -> std::path::PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::copy(guest, dir.join(format!("{name}.wasm"))).expect("copy guest");
    std::fs::write(dir.join("grants.toml"), grants).expect("grants");
    dir
}

#[tokio::test]
async fn a_plugin_calling_the_host_forever_in_describe_is_skipped_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = plugin_dir(dir.path(), "chatty", guests::DESCRIBE_FLOOD, "");
    let started = Instant::now();
    let registry = Registry::load(&quick_runtime(&dir.path().join("cache")), Some(&plugins))
        .await
        .expect("the built-ins still load");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(registry.get("process").is_some());
    let failures: Vec<String> = registry.failures().iter().map(|f| f.to_string()).collect();
    assert!(
        failures
            .iter()
            .any(|f| f.contains("chatty.wasm") && f.contains("describe")),
        "{failures:?}"
    );

    // The server and the CLI stay usable with that file in the directory.
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--plugin-dir",
            plugins.to_str().expect("utf-8"),
            "--plugin-quick-call-seconds",
            "1",
        ],
    );
    let (status, _) = server.get("/api/health").await;
    assert_eq!(status, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "plugin",
            "ls",
            "--plugin-quick-call-seconds",
            "1",
            "--plugin-dir",
        ])
        .arg(&plugins)
        .env("HOST_CACHE_DIR", dir.path().join("cache"))
        .output()
        .expect("host plugin ls");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("process"), "{stdout}{stderr}");
    assert!(stderr.contains("chatty.wasm"), "{stdout}{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes off a terminal: {stderr:?}"
    );

    // The same warning as JSON lines, for log shippers.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "plugin",
            "ls",
            "--log-format",
            "json",
            "--plugin-quick-call-seconds",
            "1",
        ])
        .arg("--plugin-dir")
        .arg(&plugins)
        .env("HOST_CACHE_DIR", dir.path().join("cache"))
        .output()
        .expect("host plugin ls");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        json.iter()
            .any(|l| l["level"] == "WARN" && l.to_string().contains("chatty.wasm")),
        "{stderr}"
    );
}

/// A server that knows the hostile plugin's pool type.
fn hostile_server(root: &Path) -> ServerProcess {
    let plugins = plugin_dir(
        root,
        "hostile",
        guests::HOSTILE,
        "[hostile]\ncapabilities = [\"process\", \"container-runtime\"]\n",
    );
    ServerProcess::start(root, &["--plugin-dir", plugins.to_str().expect("utf-8")])
}

/// A pool, a deployment and a worker for the hostile plugin.
fn hostile_setup(url: &str, root: &Path, extra: &[&str]) -> WorkerProcess {
    hostile_worker(url, root, extra, None)
}

/// A hostile pool's worker, its log in `log` when given.
fn hostile_worker(url: &str, root: &Path, extra: &[&str], log: Option<&Path>) -> WorkerProcess {
    let plugins = root.join("plugins");
    common::host_ok(
        url,
        &["work-pool", "create", "--type", "hostile", "hostile"],
    );
    common::host_ok(
        url,
        &["deployment", "create", "f/attack", "--pool", "hostile"],
    );
    let mut args = vec![
        "--pool",
        "hostile",
        "--plugin-dir",
        plugins.to_str().expect("utf-8"),
        "--stop-grace-seconds",
        "1",
        "--shutdown-grace-seconds",
        "1",
    ];
    args.extend_from_slice(extra);
    match log {
        Some(log) => WorkerProcess::start_logging_to(url, &root.join("cache"), &args, log),
        None => WorkerProcess::start(url, &root.join("cache"), &args),
    }
}

async fn attack(url: &str, variables: Value) -> (String, Value) {
    let id = create_run(url, "f/attack", json!({"job_variables": variables})).await;
    let run = common::final_run(url, &id, LONG).await;
    (id, run)
}

fn message(run: &Value) -> String {
    run["state"]["message"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn calls_that_never_return_and_values_that_never_end_each_crash_one_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = hostile_server(dir.path());
    let url = server.url.as_str();
    let _worker = hostile_setup(
        url,
        dir.path(),
        &[
            "--plugin-quick-call-seconds",
            "1",
            "--plugin-slow-call-seconds",
            "2",
        ],
    );
    for (mode, call) in [("validate-flood", "validate"), ("start-flood", "start")] {
        let (_, run) = attack(url, json!({"mode": mode})).await;
        assert_eq!(run["state"]["type"], "CRASHED", "{mode}: {run}");
        assert!(
            message(&run).contains(&format!("`{call}`")),
            "{mode}: {run}"
        );
    }
    let (_, run) = attack(url, json!({"mode": "big-handle"})).await;
    assert_eq!(run["state"]["type"], "CRASHED", "{run}");
    assert!(message(&run).contains("handle"), "{run}");
    for (mode, state) in [("big-error", "CRASHED"), ("big-exit", "FAILED")] {
        let (id, run) = attack(url, json!({"mode": mode})).await;
        assert_eq!(run["state"]["type"], state, "{mode}: {run}");
        assert!(
            message(&run).len() < 4096,
            "{mode}: {} bytes",
            message(&run).len()
        );
        assert!(message(&run).contains("truncated"), "{mode}");
        assert!(run_logs(url, &id).await.iter().all(|l| l.len() < 20_000));
    }
    // And the worker carries on.
    let (_, run) = attack(url, json!({"mode": "ok"})).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
}

/// 20,000 warnings of 64 KiB from one call reach the worker's log as one
/// call's worth and one notice, and the run goes on.
#[tokio::test]
async fn a_plugins_messages_are_bounded_per_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = hostile_server(dir.path());
    let url = server.url.as_str();
    let log = dir.path().join("worker.log");
    let _worker = hostile_worker(url, dir.path(), &[], Some(&log));
    let (_, run) = attack(url, json!({"mode": "warn-flood"})).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let size = std::fs::metadata(&log).expect("log").len();
    assert!(size < 2 << 20, "the worker logged {size} bytes");
    let text = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        text.matches("the rest of this call's are dropped").count(),
        1,
        "one notice"
    );
}

/// A run whose plugin is in a `start` that floods the log and never returns.
async fn flooding_start(url: &str) -> String {
    let variables = json!({"job_variables": {"mode": "start-flood"}});
    let id = create_run(url, "f/attack", variables).await;
    common::run_in_state(url, &id, &["PENDING"], LONG).await;
    id
}

#[tokio::test]
async fn cancel_and_shutdown_win_over_a_call_that_does_not_return() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = hostile_server(dir.path());
    let url = server.url.as_str();
    // `start` may take a minute: only the cancel can end it sooner.
    let mut worker = hostile_setup(url, dir.path(), &["--plugin-slow-call-seconds", "60"]);
    let id = flooding_start(url).await;
    common::host_ok(url, &["flow-run", "cancel", &id]);
    let run = common::final_run(url, &id, Duration::from_secs(20)).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    assert!(message(&run).contains("starting"), "{run}");

    let id = flooding_start(url).await;
    let (exited, status) = {
        worker.sigterm();
        let child = &mut worker.child;
        let exited = common::wait_until(Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
        .await;
        (exited, child.try_wait())
    };
    assert!(
        exited,
        "SIGTERM ends the worker within its grace: {status:?}"
    );
    let run = common::final_run(url, &id, Duration::from_secs(10)).await;
    assert_eq!(run["state"]["type"], "CRASHED", "{run}");
    assert!(message(&run).contains("shut down"), "{run}");
}

#[tokio::test]
async fn an_output_flood_keeps_the_run_limits_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = hostile_server(dir.path());
    let url = server.url.as_str();
    let _worker = hostile_setup(url, dir.path(), &["--max-log-lines-per-run", "2000"]);
    let (id, run) = attack(url, json!({"mode": "flood", "seconds": 3})).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let lines = common::all_log_lines(url, &id).await;
    let output = lines.iter().filter(|l| l["stream"] == "stdout").count();
    assert_eq!(output, 2000, "the limit, exactly");
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("not kept"))),
        "one notice says what was dropped"
    );
}

#[tokio::test]
async fn a_run_cannot_touch_another_runs_processes_or_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = quick_runtime(&dir.path().join("cache"));
    let registry = Registry::load(&runtime, None).await.expect("built-ins");
    let process = registry.get("process").expect("process");
    let hostile = plugins::load_file(&runtime, Path::new(guests::HOSTILE), hostile_grants())
        .await
        .expect("hostile loads");

    let victim = "aaaaaaaa-0000-4000-8000-000000000001";
    let handle = process
        .start(job(victim, json!({"command": "sleep 30"})))
        .await
        .expect("victim starts");
    let handle: Value = serde_json::from_str(&handle).expect("json");
    let (id, cwd) = (
        handle["id"].as_u64().expect("id").to_string(),
        handle["cwd"].as_str().expect("cwd").to_string(),
    );
    let attacker = "bbbbbbbb-0000-4000-8000-000000000002";
    for (mode, target) in [("signal", &id), ("remove-dir", &cwd)] {
        let h = hostile
            .start(job(attacker, json!({"mode": mode, "target": target})))
            .await
            .expect("start");
        let exit = hostile
            .wait(attacker, &h, Arc::new(CollectOutput::default()))
            .await
            .expect("wait");
        assert_eq!(exit.code, Some(0), "{mode} was refused: {}", exit.message);
    }
    assert!(Path::new(&cwd).is_dir(), "the victim's directory is there");
    assert!(
        process.still_running(victim).await.len() == 1,
        "the victim still runs"
    );
    // The host's records: stopping and releasing the victim leaves nothing.
    let left = process.release(victim).await;
    assert!(left.iter().any(|l| l.contains("killed")), "{left:?}");
    assert!(process.still_running(victim).await.is_empty());
}

#[tokio::test]
async fn the_conformance_suite_fails_each_broken_promise_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = quick_runtime(&dir.path().join("cache"));
    let process_only = Grants::new([Capability::Process]);
    for (guest, broken) in [
        (guests::BROKEN_STOP, "stop"),
        (guests::BROKEN_DESTROY, "destroy"),
        (guests::BROKEN_OUTPUT, "output"),
        (guests::BROKEN_DESCRIBE, "capabilities"),
    ] {
        let plugin = plugins::load_file(&runtime, Path::new(guest), process_only.clone())
            .await
            .expect("loads");
        let checks = host::conformance::run(&plugin).await;
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, vec![broken], "{}: {checks:?}", plugin.name());
    }
}

#[tokio::test]
async fn a_handle_beyond_the_limit_is_refused_at_the_boundary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = quick_runtime(&dir.path().join("cache"));
    let hostile = plugins::load_file(&runtime, Path::new(guests::HOSTILE), hostile_grants())
        .await
        .expect("hostile loads");
    let error = hostile
        .start(job(
            "cccccccc-0000-4000-8000-000000000003",
            json!({"mode": "big-handle"}),
        ))
        .await
        .expect_err("refused");
    assert!(matches!(error, CallError::Contract { .. }), "{error}");
    assert!(error.to_string().len() < 400, "{error}");
}

#[tokio::test]
async fn grants_narrow_the_container_runtime_and_mistakes_are_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = plugin_dir(
        dir.path(),
        "hostile",
        guests::HOSTILE,
        r#"
[hostile]
capabilities = ["process", "container-runtime"]
colour = "red"

[hostile.container]
privileged = false
mount_sources = ["/srv/data"]

[ghost]
capabilities = ["process"]
"#,
    );
    let runtime = quick_runtime(&dir.path().join("cache"));
    let registry = Registry::load(&runtime, Some(&plugins))
        .await
        .expect("loads");
    let warnings = registry.warnings().join("\n");
    assert!(warnings.contains("unknown key `colour`"), "{warnings}");
    assert!(warnings.contains("ghost.wasm"), "{warnings}");
    let hostile = registry.get("hostile").expect("hostile");
    let run = "dddddddd-0000-4000-8000-000000000004";
    for mode in ["create-privileged", "create-mount"] {
        let handle = hostile
            .start(job(run, json!({"mode": mode})))
            .await
            .expect("start");
        let exit = hostile
            .wait(run, &handle, host::capabilities::discard_output())
            .await
            .expect("wait");
        assert_eq!(exit.code, Some(0), "{mode} was refused: {}", exit.message);
    }
}

#[tokio::test]
async fn a_cancel_checks_that_stop_stopped_and_kills_what_it_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = plugin_dir(
        dir.path(),
        "broken-stop",
        guests::BROKEN_STOP,
        "[broken-stop]\ncapabilities = [\"process\"]\n",
    );
    let server = ServerProcess::start(
        dir.path(),
        &["--plugin-dir", plugins.to_str().expect("utf-8")],
    );
    let url = server.url.as_str();
    common::host_ok(
        url,
        &["work-pool", "create", "--type", "broken-stop", "sloppy"],
    );
    common::host_ok(
        url,
        &[
            "deployment",
            "create",
            "f/sleep",
            "--pool",
            "sloppy",
            "--job-variable",
            "command=sleep 120",
        ],
    );
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &[
            "--pool",
            "sloppy",
            "--plugin-dir",
            plugins.to_str().expect("utf-8"),
        ],
    );
    let id = create_run(url, "f/sleep", json!({})).await;
    let running = common::run_in_state(url, &id, &["RUNNING"], LONG).await;
    let handle: Value =
        serde_json::from_str(running["infrastructure_handle"].as_str().expect("handle"))
            .expect("json");
    let cwd = handle["cwd"].as_str().expect("cwd").to_string();
    common::host_ok(url, &["flow-run", "cancel", &id]);
    let run = common::final_run(url, &id, Duration::from_secs(30)).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    assert!(
        message(&run).contains("stop left") && message(&run).contains("killed"),
        "the worker says what it found: {run}"
    );
    // Nothing of the run runs on: no process has the run's directory as cwd.
    let still = common::wait_until(Duration::from_secs(10), || {
        !std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                std::fs::read_link(entry.path().join("cwd"))
                    .is_ok_and(|p| p.to_string_lossy().starts_with(&cwd))
            })
    })
    .await;
    assert!(still, "the process the plugin left was killed");
}

#[test]
fn host_plugin_test_stays_small_under_an_output_flood() {
    let cache = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["plugin", "test", guests::FLOOD_WAIT])
        .env("HOST_CACHE_DIR", cache.path())
        .output()
        .expect("host plugin test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok      output"), "{stdout}");
    // The largest child this test process has waited for (tests in this binary
    // start servers and workers too; all of them are small).
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: getrusage(2) writes only into `usage`, which is large enough.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(peak_mib < 400, "peak RSS of a child: {peak_mib} MiB");
}
