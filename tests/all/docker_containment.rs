//! A run's containers are its own, against a real Docker daemon: the hostile
//! guest goes after another run's container by a name it chose, by sharing
//! its network, and through a symlink in an allowed mount source; and the
//! docker plugin's output arrives whole. Without a reachable daemon each test
//! prints why it skips.

use crate::common;

use common::docker::{self, Cleanup, TEST_IMAGE};
use common::job;
use host::capabilities::CollectOutput;
use host::plugins::{self, Registry};
use host::runtime::{Capability, ExitStatus, Grants, LoadedPlugin, Runtime};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

fn new_run() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Removes the containers made for these runs, whatever happened in the test.
struct RunsCleanup(Vec<String>);

impl Drop for RunsCleanup {
    fn drop(&mut self) {
        for run in &self.0 {
            for id in docker::containers_with_label("host.run-scope", run) {
                let _ = docker::run(&["rm", "-f", &id]);
            }
        }
    }
}

/// The hostile guest, granted processes and containers (and `grants.toml`
/// lines for it when given).
/// The built-in docker plugin, loaded in `runtime`.
async fn built_in_docker(runtime: &Runtime) -> Arc<LoadedPlugin> {
    let registry = Registry::load(runtime, None).await.expect("built-ins");
    registry.get("docker").expect("docker")
}

async fn hostile(runtime: &Runtime, root: &Path, grants: Option<&str>) -> Arc<LoadedPlugin> {
    let Some(grants) = grants else {
        let all = Grants::new([Capability::Process, Capability::ContainerRuntime]);
        let plugin = plugins::load_file(runtime, Path::new(common::guests::HOSTILE), all)
            .await
            .expect("hostile loads");
        return Arc::new(plugin);
    };
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::copy(common::guests::HOSTILE, dir.join("hostile.wasm")).expect("copy");
    let text = format!("[hostile]\ncapabilities = [\"process\", \"container-runtime\"]\n{grants}");
    std::fs::write(dir.join("grants.toml"), text).expect("grants");
    let registry = Registry::load(runtime, Some(&dir)).await.expect("loads");
    registry.get("hostile").expect("hostile")
}

async fn attack(hostile: &LoadedPlugin, run: &str, mode: &str, target: &str) -> ExitStatus {
    let handle = hostile
        .start(job(run, json!({"mode": mode, "target": target})))
        .await
        .expect("start");
    hostile
        .wait(run, &handle, host::capabilities::discard_output())
        .await
        .expect("wait")
}

/// Another run's container, made by the built-in docker plugin: its id and name.
async fn victim(docker_plugin: &LoadedPlugin, run: &str, label: &str) -> (String, String) {
    let configuration = json!({
        "image": TEST_IMAGE,
        "image_pull_policy": "Never",
        "command": "sleep 300",
        "name": format!("victim-{label}"),
        "labels": {"host.test": label},
    });
    let handle = docker_plugin
        .start(job(run, configuration))
        .await
        .expect("the victim starts");
    let handle: Value = serde_json::from_str(&handle).expect("json");
    (
        handle["id"].as_str().expect("id").to_string(),
        handle["name"].as_str().expect("name").to_string(),
    )
}

fn running(container: &str) -> bool {
    docker::run(&["inspect", "-f", "{{.State.Running}}", container]).is_ok_and(|r| r == "true")
}

#[tokio::test]
async fn a_container_named_after_another_runs_id_cannot_stop_it() {
    let Some(()) = docker::ready("a_container_named_after_another_runs_id_cannot_stop_it") else {
        return;
    };
    let label = new_run();
    let _cleanup = Cleanup(label.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = common::runtime(&dir.path().join("cache"));
    let docker_plugin = built_in_docker(&runtime).await;
    let (victim_run, attacker) = (new_run(), new_run());
    let _runs = RunsCleanup(vec![victim_run.clone(), attacker.clone()]);
    let (id, _) = victim(&docker_plugin, &victim_run, &label).await;
    let hostile = hostile(&runtime, dir.path(), None).await;
    for target in [id.as_str(), &id[..12]] {
        let exit = attack(&hostile, &attacker, "name-as", target).await;
        assert!(
            running(&id),
            "the victim still runs after {target}: {exit:?}"
        );
        assert_eq!(exit.code, Some(0), "refused: {}", exit.message);
        assert!(
            exit.message.contains("looks like a container id"),
            "{exit:?}"
        );
    }
    assert!(hostile.release(&attacker).await.is_empty());
    docker_plugin.release(&victim_run).await;
}

#[tokio::test]
async fn a_name_given_up_is_not_the_runs_once_another_container_has_it() {
    let Some(()) = docker::ready("a_name_given_up_is_not_the_runs_once_another_container_has_it")
    else {
        return;
    };
    let label = new_run();
    let _cleanup = Cleanup(label.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = common::runtime(&dir.path().join("cache"));
    let hostile = hostile(&runtime, dir.path(), None).await;
    let attacker = new_run();
    let _runs = RunsCleanup(vec![attacker.clone()]);
    let name = format!("taken-{label}");
    let exit = attack(&hostile, &attacker, "create-remove", &name).await;
    assert_eq!(exit.code, Some(0), "{}", exit.message);
    // Another run's container gets the name the attacker gave up.
    docker::run(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("host.test={label}"),
        "--label",
        &format!("host.run-scope={}", new_run()),
        "--network",
        "none",
        TEST_IMAGE,
        "sleep",
        "300",
    ])
    .expect("the other run's container");
    let exit = attack(&hostile, &attacker, "stop-container", &name).await;
    assert!(
        running(&name),
        "the other run's container still runs: {exit:?}"
    );
    assert_eq!(exit.code, Some(0), "refused: {}", exit.message);
    assert!(hostile.release(&attacker).await.is_empty());
}

#[tokio::test]
async fn network_modes_reach_only_the_runs_own_containers_and_host_is_a_grant() {
    let Some(()) = docker::ready("network_modes_reach_only_the_runs_own_containers") else {
        return;
    };
    let label = new_run();
    let _cleanup = Cleanup(label.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = common::runtime(&dir.path().join("cache"));
    let docker_plugin = built_in_docker(&runtime).await;
    let (victim_run, attacker, run) = (new_run(), new_run(), new_run());
    let _runs = RunsCleanup(vec![victim_run.clone(), attacker.clone(), run.clone()]);
    let (id, name) = victim(&docker_plugin, &victim_run, &label).await;
    let hostile = hostile(&runtime, dir.path(), None).await;
    for mode in [
        format!("container:{name}"),
        format!("container:{id}"),
        "host".into(),
    ] {
        let exit = attack(&hostile, &attacker, "create-network", &mode).await;
        assert_eq!(exit.code, Some(0), "{mode} was refused: {}", exit.message);
    }
    // Its own containers' networks are the run's to share.
    let exit = attack(
        &hostile,
        &attacker,
        "share-own-network",
        &format!("own-{label}"),
    )
    .await;
    assert_eq!(exit.code, Some(0), "{}", exit.message);
    assert!(
        !hostile.release(&attacker).await.is_empty(),
        "two containers were made"
    );
    docker_plugin.release(&victim_run).await;

    // `host` is granted by network_modes, and the built-in docker plugin has
    // it by default (it reaches an API on the worker's localhost through it).
    let granted = tempfile::tempdir().expect("tempdir");
    let hostile = self::hostile(
        &runtime,
        granted.path(),
        Some("[hostile.container]\nnetwork_modes = [\"host\"]\n"),
    )
    .await;
    let exit = attack(&hostile, &attacker, "create-network", "host").await;
    assert!(exit.message.contains("Ok("), "granted: {exit:?}");
    hostile.release(&attacker).await;
    let configuration = json!({
        "image": TEST_IMAGE, "image_pull_policy": "Never", "command": "true",
        "network_mode": "host", "labels": {"host.test": label},
    });
    docker_plugin
        .start(job(&run, configuration))
        .await
        .expect("the docker plugin may use the host's network");
    docker_plugin.release(&run).await;
}

#[tokio::test]
async fn mount_sources_are_resolved_so_a_symlink_in_them_leads_nowhere_else() {
    let Some(()) =
        docker::ready("mount_sources_are_resolved_so_a_symlink_in_them_leads_nowhere_else")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed = dir.path().join("allowed");
    std::fs::create_dir_all(allowed.join("data")).expect("dirs");
    // What an earlier run could have left in the allowed directory.
    std::os::unix::fs::symlink("/", allowed.join("root")).expect("symlink");
    let runtime = common::runtime(&dir.path().join("cache"));
    let grants = format!(
        "[hostile.container]\nmount_sources = [\"{}\"]\n",
        allowed.display()
    );
    let hostile = hostile(&runtime, dir.path(), Some(&grants)).await;
    let run = new_run();
    let _runs = RunsCleanup(vec![run.clone()]);
    let at = |p: &str| allowed.join(p).display().to_string();
    for source in [at("root/etc"), at("missing")] {
        let exit = attack(&hostile, &run, "create-mount", &source).await;
        assert_eq!(exit.code, Some(0), "{source} was refused: {}", exit.message);
    }
    assert!(!allowed.join("missing").exists(), "nothing made it");
    let exit = attack(&hostile, &run, "create-mount", &at("data")).await;
    let id = exit
        .message
        .split("Ok(\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("allowed: {exit:?}"))
        .to_string();
    let binds =
        docker::run(&["inspect", "-f", "{{json .HostConfig.Binds}}", &id]).expect("inspect");
    let real = std::fs::canonicalize(allowed.join("data")).expect("canonical");
    assert_eq!(binds, format!("[\"{}:/host-etc\"]", real.display()));
    assert!(
        !hostile.release(&run).await.is_empty(),
        "the allowed one was made"
    );
}

#[tokio::test]
async fn a_last_line_without_a_newline_is_never_dropped() {
    let Some(()) = docker::ready("a_last_line_without_a_newline_is_never_dropped") else {
        return;
    };
    let label = new_run();
    let _cleanup = Cleanup(label.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = common::runtime(&dir.path().join("cache"));
    let docker_plugin = built_in_docker(&runtime).await;
    // The follow is open while the container runs: Docker often ended it
    // before the last, unterminated line was written.
    for attempt in 0..6 {
        let run = new_run();
        let _runs = RunsCleanup(vec![run.clone()]);
        let configuration = json!({
            "image": TEST_IMAGE, "image_pull_policy": "Never",
            "command": "sh -c 'echo first; sleep 0.2; printf x'",
            "labels": {"host.test": label},
        });
        let handle = docker_plugin
            .start(job(&run, configuration))
            .await
            .expect("start");
        let output = Arc::new(CollectOutput::default());
        let exit = docker_plugin
            .wait(&run, &handle, output.clone())
            .await
            .expect("wait");
        let lines: Vec<String> = output.lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(exit.code, Some(0), "{exit:?}");
        assert_eq!(lines, ["first", "x"], "attempt {attempt}");
        docker_plugin.release(&run).await;
    }
}
