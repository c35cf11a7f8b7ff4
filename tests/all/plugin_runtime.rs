//! The plugin plane in-process: real components in wasmtime, good and bad.

use crate::common;

use common::{guests, runtime, runtime_with};
use host::capabilities::CollectOutput;
use host::plugins::{self, Registry};
use host::runtime::{
    CacheOutcome, CallError, Capability, ErrorKind, Grants, Job, LoadError, RunStatus,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The flow run every job here is for: the capabilities' scope.
const RUN: &str = "11111111-2222-4333-8444-555555555555";

fn job(configuration: serde_json::Value, command: &[&str]) -> Job {
    Job {
        flow_run_id: RUN.into(),
        flow_run_name: "test-run".into(),
        configuration: configuration.to_string(),
        env: vec![("GREETING".into(), "hi there".into())],
        command: command.iter().map(|s| s.to_string()).collect(),
        labels: vec![],
    }
}

async fn load_guest(path: &str, grants: Grants) -> Result<host::runtime::LoadedPlugin, LoadError> {
    let cache = tempfile::tempdir().expect("tempdir");
    plugins::load_file(&runtime(cache.path()), Path::new(path), grants).await
}

#[tokio::test]
async fn builtins_load_and_pass_the_conformance_suite() {
    let cache = tempfile::tempdir().expect("tempdir");
    let registry = Registry::load(&runtime(cache.path()), None)
        .await
        .expect("built-ins load");
    assert_eq!(
        registry.names(),
        vec![
            "docker".to_string(),
            "ecs".to_string(),
            "mock-serverless".to_string(),
            "process".to_string()
        ]
    );
    // docker needs a daemon and an image: tests/docker_e2e.rs runs its
    // suite; ecs an endpoint: tests/ecs.rs runs its against ministack.
    for plugin in registry
        .plugins()
        .filter(|p| p.name() != "docker" && p.name() != "ecs")
    {
        let checks = host::conformance::run(plugin).await;
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| (c.name, &c.outcome))
            .collect();
        assert!(failed.is_empty(), "{} failed: {failed:?}", plugin.name());
        assert!(checks.len() >= 8);
    }
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let cache = tempfile::tempdir().expect("tempdir");
    let path = Path::new(guests::HELLO_EXAMPLE);
    let first = plugins::load_file(&runtime(cache.path()), path, Grants::log_only())
        .await
        .expect("load");
    assert_eq!(first.cache_outcome(), CacheOutcome::Compiled);
    let second = plugins::load_file(&runtime(cache.path()), path, Grants::log_only())
        .await
        .expect("load");
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(second.describe().await.expect("describe").name, "hello");
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().expect("tempdir");
    let path = Path::new(guests::HELLO_EXAMPLE);
    plugins::load_file(&runtime(cache.path()), path, Grants::log_only())
        .await
        .expect("load");
    for entry in std::fs::read_dir(cache.path()).expect("cache dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("corrupt");
    }
    let again = plugins::load_file(&runtime(cache.path()), path, Grants::log_only())
        .await
        .expect("load");
    assert_eq!(again.cache_outcome(), CacheOutcome::Compiled);
}

#[tokio::test]
async fn a_file_that_is_not_wasm_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "just some text").expect("write");
    let error = load_guest(path.to_str().expect("utf-8"), Grants::log_only())
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, LoadError::NotWasm { .. }), "{error}");
    assert!(
        error.to_string().ends_with("not a WebAssembly file"),
        "{error}"
    );
}

#[tokio::test]
async fn a_core_module_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("core.wasm");
    // The smallest valid core module: magic and version 1.
    std::fs::write(&path, b"\0asm\x01\0\0\0").expect("write");
    let error = load_guest(path.to_str().expect("utf-8"), Grants::log_only())
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, LoadError::CoreModule { .. }), "{error}");
    assert!(error.to_string().contains("wasm32-wasip2"), "{error}");
}

#[tokio::test]
async fn a_component_of_another_world_is_refused() {
    let error = load_guest(guests::OTHER_WORLD, Grants::log_only())
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, LoadError::WrongWorld { .. }), "{error}");
    assert!(
        error.to_string().contains("wasi:cli/run"),
        "names what it exports: {error}"
    );
}

#[tokio::test]
async fn an_incompatible_contract_version_is_refused() {
    let error = load_guest(guests::CONTRACT_V2, Grants::log_only())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(error, LoadError::IncompatibleContract { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("host:infra@0.2.0"), "{error}");
}

#[tokio::test]
async fn a_trap_in_describe_is_an_error_with_the_plugins_message() {
    let error = load_guest(guests::TRAP_DESCRIBE, Grants::log_only())
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(text.contains("trapped"), "{text}");
    assert!(
        text.contains("deliberate trap in describe"),
        "the guest's panic message is kept: {text}"
    );
    assert_eq!(text.lines().count(), 1, "one line: {text}");
}

#[tokio::test]
async fn a_spinning_plugin_is_interrupted_and_the_host_carries_on() {
    let cache = tempfile::tempdir().expect("tempdir");
    let rt = runtime_with(cache.path(), Duration::from_millis(200));
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        plugins::load_file(&rt, Path::new(guests::LOOP_FOREVER), Grants::log_only()),
    )
    .await
    .expect("the budget interrupts the loop")
    .err()
    .expect("refused");
    assert!(error.to_string().contains("CPU budget"), "{error}");
    // The same runtime still serves other plugins.
    let hello = plugins::load_file(&rt, Path::new(guests::HELLO_EXAMPLE), Grants::log_only())
        .await
        .expect("load");
    assert_eq!(hello.describe().await.expect("describe").name, "hello");
}

#[tokio::test]
async fn a_plugin_allocating_a_gibibyte_hits_the_memory_cap() {
    let error = load_guest(guests::ALLOC_1GIB, Grants::log_only())
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(
        text.contains("exceeded its memory limit of 64 MiB"),
        "{text}"
    );
}

#[tokio::test]
async fn an_ungranted_capability_is_named_and_a_grant_lets_it_load() {
    let error = load_guest(guests::UNGRANTED_CAPABILITY, Grants::log_only())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            error,
            LoadError::Ungranted {
                capability: Capability::Process,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("`process`"), "{error}");
    let granted = load_guest(
        guests::UNGRANTED_CAPABILITY,
        Grants::new([Capability::Process]),
    )
    .await;
    assert!(granted.is_ok(), "{:?}", granted.err());
}

#[tokio::test]
async fn a_plugin_directory_loads_what_it_can_and_reports_the_rest() {
    let cache = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(guests::HELLO_EXAMPLE, dir.path().join("hello.wasm")).expect("copy");
    std::fs::copy(guests::TRAP_DESCRIBE, dir.path().join("trap.wasm")).expect("copy");
    std::fs::copy(
        guests::UNGRANTED_CAPABILITY,
        dir.path().join("needs-process.wasm"),
    )
    .expect("copy");
    std::fs::write(
        dir.path().join("grants.toml"),
        "[needs-process]\ncapabilities = [\"process\"]\n",
    )
    .expect("write");
    let registry = Registry::load(&runtime(cache.path()), Some(dir.path()))
        .await
        .expect("registry");
    assert!(registry.get("hello").is_some());
    assert!(
        registry.get("ungranted-capability").is_some(),
        "granted through grants.toml"
    );
    assert_eq!(registry.failures().len(), 1);
    assert!(registry.failures()[0].to_string().contains("trap.wasm"));
}

#[tokio::test]
async fn process_plugin_streams_output_and_reports_the_exit_code() {
    let cache = tempfile::tempdir().expect("tempdir");
    let registry = Registry::load(&runtime(cache.path()), None)
        .await
        .expect("built-ins");
    let process = registry.get("process").expect("process");
    let handle = process
        .start(job(
            serde_json::json!({}),
            &["sh", "-c", "echo \"$GREETING\"; echo oops >&2; exit 3"],
        ))
        .await
        .expect("start");
    let output = Arc::new(CollectOutput::default());
    let exit = process
        .wait(RUN, &handle, output.clone())
        .await
        .expect("wait");
    assert_eq!(exit.code, Some(3));
    let lines: Vec<String> = output.lines().into_iter().map(|(_, line)| line).collect();
    assert!(lines.contains(&"hi there".to_string()), "{lines:?}");
    assert!(lines.contains(&"oops".to_string()), "{lines:?}");
    let cwd: serde_json::Value = serde_json::from_str(&handle).expect("handle is JSON");
    let cwd = cwd["cwd"].as_str().expect("cwd").to_string();
    assert!(Path::new(&cwd).is_dir());
    process.destroy(RUN, &handle).await.expect("destroy");
    assert!(!Path::new(&cwd).exists(), "destroy removes the temp dir");
}

#[tokio::test]
async fn process_stop_terminates_the_whole_group_then_kills() {
    let cache = tempfile::tempdir().expect("tempdir");
    let registry = Registry::load(&runtime(cache.path()), None)
        .await
        .expect("built-ins");
    let process = registry.get("process").expect("process");
    // Ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    let handle = process
        .start(job(
            serde_json::json!({"command": "trap '' TERM; echo ready; sleep 30 & wait"}),
            &[],
        ))
        .await
        .expect("start");
    let output = Arc::new(CollectOutput::default());
    let waiter = {
        let process = process.clone();
        let handle = handle.clone();
        let output = output.clone();
        tokio::spawn(async move { process.wait(RUN, &handle, output).await })
    };
    assert!(
        common::wait_until(Duration::from_secs(10), || !output.lines().is_empty()).await,
        "started"
    );
    assert_eq!(
        process.inspect(RUN, &handle).await.expect("inspect"),
        RunStatus::Running
    );
    process.stop(RUN, &handle, 1).await.expect("stop");
    let exit = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("ends")
        .expect("join")
        .expect("wait");
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    process.destroy(RUN, &handle).await.expect("destroy");
}

#[tokio::test]
async fn process_refuses_a_bad_configuration_cleanly() {
    let cache = tempfile::tempdir().expect("tempdir");
    let registry = Registry::load(&runtime(cache.path()), None)
        .await
        .expect("built-ins");
    let process = registry.get("process").expect("process");
    let error = process
        .validate(r#"{"working_dir": "relative/dir"}"#)
        .await
        .expect_err("refused");
    assert!(matches!(
        error,
        CallError::Plugin {
            kind: ErrorKind::Fatal,
            ..
        }
    ));
    assert!(error.to_string().contains("working_dir"), "{error}");
    let error = process
        .validate(r#"{"colour": "red"}"#)
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("colour"),
        "names the unknown field: {error}"
    );
    let error = process
        .start(job(serde_json::json!({}), &["/definitely/not/here"]))
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("/definitely/not/here"),
        "{error}"
    );
}

#[tokio::test]
async fn mock_serverless_simulates_throttling_failures_and_crashes() {
    let cache = tempfile::tempdir().expect("tempdir");
    let registry = Registry::load(&runtime(cache.path()), None)
        .await
        .expect("built-ins");
    let mock = registry.get("mock-serverless").expect("mock-serverless");
    let fast = serde_json::json!({"submit_latency_ms": 0, "cold_start_ms": 0, "duration_ms": 10, "log_lines": 2});

    let mut throttled = fast.clone();
    throttled["throttle_rate"] = 1.0.into();
    let error = mock
        .start(job(throttled, &[]))
        .await
        .expect_err("throttled");
    assert!(error.is_retryable(), "{error}");

    let mut failing = fast.clone();
    failing["failure_rate"] = 1.0.into();
    let handle = mock.start(job(failing, &[])).await.expect("start");
    let exit = mock
        .wait(RUN, &handle, host::capabilities::discard_output())
        .await
        .expect("wait");
    assert_eq!(exit.code, Some(1));

    let mut exit3 = fast.clone();
    exit3["exit_code"] = 3.into();
    let handle = mock.start(job(exit3, &[])).await.expect("start");
    let output = Arc::new(CollectOutput::default());
    assert_eq!(
        mock.wait(RUN, &handle, output.clone())
            .await
            .expect("wait")
            .code,
        Some(3)
    );
    assert_eq!(output.lines().len(), 2);
    // No state between calls: the same handle answers the same later.
    assert!(
        matches!(mock.recover(RUN, &handle).await.expect("recover"), RunStatus::Exited(e) if e.code == Some(3))
    );

    let mut crashing = fast.clone();
    crashing["duration_ms"] = 1000.into();
    crashing["crash_after_ms"] = 5.into();
    let handle = mock.start(job(crashing, &[])).await.expect("start");
    let error = mock
        .wait(RUN, &handle, host::capabilities::discard_output())
        .await
        .expect_err("crash");
    assert!(error.to_string().contains("crashed"), "{error}");

    let mut slow = fast;
    slow["cold_start_ms"] = 60_000.into();
    let handle = mock.start(job(slow, &[])).await.expect("start");
    assert_eq!(
        mock.inspect(RUN, &handle).await.expect("inspect"),
        RunStatus::Pending
    );
}

/// `LocalProcess::stop` returns only once nothing of the run runs, also when
/// the workload ignores SIGTERM and the SIGKILL after the grace ends it: a
/// caller that checks right after `stop` (the conformance suite, the worker's
/// "nothing of it still runs") must not depend on timing.
#[tokio::test]
async fn sdk_stop_returns_only_when_the_whole_run_is_gone() {
    let nice = Arc::new(
        load_guest(guests::NICE_EXAMPLE, Grants::new([Capability::Process]))
            .await
            .expect("loads"),
    );
    for attempt in 0..3 {
        let run = format!("11111111-2222-4333-8444-00000000000{attempt}");
        let mut job = job(
            serde_json::json!({
                "command": "trap '' TERM; for i in 1 2 3 4 5 6 7 8; do sleep 300 & done; echo ready; wait",
                "niceness": 5
            }),
            &[],
        );
        job.flow_run_id = run.clone();
        let handle = nice.start(job).await.expect("start");
        let output = Arc::new(CollectOutput::default());
        let waiter = {
            let (nice, run, handle, output) =
                (nice.clone(), run.clone(), handle.clone(), output.clone());
            tokio::spawn(async move { nice.wait(&run, &handle, output).await })
        };
        assert!(
            common::wait_until(Duration::from_secs(10), || !output.lines().is_empty()).await,
            "started"
        );
        nice.stop(&run, &handle, 1).await.expect("stop");
        assert_eq!(
            nice.still_running(&run).await,
            Vec::<String>::new(),
            "attempt {attempt}: stop returned while the run was still running"
        );
        let exit = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("wait ends")
            .expect("join")
            .expect("wait");
        assert_eq!(exit.signal, Some(9), "{exit:?}");
        nice.destroy(&run, &handle).await.expect("destroy");
        assert_eq!(nice.release(&run).await, Vec::<String>::new());
    }
}
