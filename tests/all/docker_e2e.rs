//! The docker plugin against a real daemon, through a real server and worker.
//! Without a reachable daemon each test prints why it skips.

use crate::common;

use common::docker::{self, Cleanup, TEST_IMAGE};
use common::{ServerProcess, WorkerProcess, eventually, host_cli};
use serde_json::{Value, json};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

struct Setup {
    _cleanup: Cleanup,
    label: String,
    dir: tempfile::TempDir,
    server: ServerProcess,
}

impl Setup {
    /// A server, a docker pool, and a deployment whose containers carry a
    /// label unique to this test (so cleanup finds exactly them).
    fn new(deployment: &str, command: &[&str]) -> Setup {
        let label = uuid::Uuid::new_v4().to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProcess::start(dir.path(), &[]);
        let setup = Setup {
            _cleanup: Cleanup(label.clone()),
            label,
            dir,
            server,
        };
        setup.ok(&["work-pool", "create", "--type", "docker", "my-docker-pool"]);
        let labels = format!("labels.host.test={}", setup.label);
        let args = [
            &[
                "deployment",
                "create",
                deployment,
                "--pool",
                "my-docker-pool",
                "--image",
                TEST_IMAGE,
            ][..],
            &[
                "--job-variable",
                "image_pull_policy=Never",
                "--job-variable",
                &labels,
                "--",
            ][..],
            command,
        ]
        .concat();
        setup.ok(&args);
        setup
    }

    fn url(&self) -> &str {
        &self.server.url
    }

    fn ok(&self, args: &[&str]) -> String {
        common::host_ok(&self.server.url, args)
    }

    fn worker(&self, name: &str) -> WorkerProcess {
        WorkerProcess::start(
            self.url(),
            &self.dir.path().join("cache"),
            &[
                "--pool",
                "my-docker-pool",
                "--name",
                name,
                "--stop-grace-seconds",
                "2",
            ],
        )
    }

    async fn run(&self, deployment: &str, body: Value) -> String {
        common::create_run(self.url(), deployment, body).await
    }

    async fn wait_state(&self, id: &str, states: &[&str]) -> Value {
        common::run_in_state(self.url(), id, states, LONG).await
    }

    async fn final_state(&self, id: &str) -> Value {
        common::final_run(self.url(), id, LONG).await
    }

    async fn logs(&self, id: &str) -> Vec<String> {
        common::run_logs(self.url(), id).await
    }

    fn containers(&self) -> Vec<String> {
        docker::containers_with_label("host.test", &self.label)
    }

    /// Clean-up follows the final state report: wait for it.
    async fn all_removed(&self) -> bool {
        common::wait_until(Duration::from_secs(20), || self.containers().is_empty()).await
    }
}

#[test]
fn the_docker_plugin_passes_the_conformance_suite() {
    let Some(()) = docker::ready("the_docker_plugin_passes_the_conformance_suite") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["plugin", "test", "docker"])
        .env("HOST_CACHE_DIR", cache.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn runs_in_containers_end_as_their_exit_code_says() {
    let Some(()) = docker::ready("runs_in_containers_end_as_their_exit_code_says") else {
        return;
    };
    let setup = Setup::new(
        "repo-info/default",
        &[
            "sh",
            "-c",
            "echo hello from a container: $HOST_FLOW_RUN_NAME; echo to stderr >&2",
        ],
    );
    let _worker = setup.worker("docker-worker");
    eventually(setup.url(), "/api/work-pools/my-docker-pool", LONG, |p| {
        p["status"] == "READY"
    })
    .await;

    let (code, out, err) = host_cli(
        setup.url(),
        &["deployment", "run", "repo-info/default", "--watch"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hello from a container")
            && out.contains("to stderr")
            && out.contains("COMPLETED"),
        "{out}"
    );

    let id = setup
        .run(
            "repo-info/default",
            json!({"job_variables": {"command": "sh -c 'echo failing; exit 3'"}}),
        )
        .await;
    let run = setup.final_state(&id).await;
    assert_eq!(
        (run["state"]["type"].as_str(), run["exit_code"].as_i64()),
        (Some("FAILED"), Some(3)),
        "{run}"
    );
    assert!(setup.logs(&id).await.contains(&"failing".to_string()));

    let id = setup
        .run(
            "repo-info/default",
            json!({"job_variables": {"image": "host-test-missing:never"}}),
        )
        .await;
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "CRASHED", "{run}");
    assert!(
        run["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("image_pull_policy is Never")),
        "{run}"
    );

    assert!(
        setup.all_removed().await,
        "destroy removed every container: {:?}",
        setup.containers()
    );
}

#[tokio::test]
async fn a_container_killed_from_outside_or_cancelled_is_reported() {
    let Some(()) = docker::ready("a_container_killed_from_outside_or_cancelled_is_reported") else {
        return;
    };
    let setup = Setup::new("slow/job", &["sleep", "60"]);
    let _worker = setup.worker("docker-worker");

    let id = setup.run("slow/job", json!({})).await;
    setup.wait_state(&id, &["RUNNING"]).await;
    let container = docker::containers_with_label("host.flow-run-id", &id)
        .pop()
        .expect("the run's container");
    docker::kill(&container).expect("docker kill");
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "FAILED", "{run}");
    assert_eq!(run["exit_code"], 137);
    assert!(
        run["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("killed by signal 9")),
        "{run}"
    );

    let id = setup.run("slow/job", json!({})).await;
    setup.wait_state(&id, &["RUNNING"]).await;
    setup.ok(&["flow-run", "cancel", &id]);
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    // The worker reports the state first and removes the container after.
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            docker::containers_with_label("host.flow-run-id", &id).is_empty()
        })
        .await,
        "stopped and removed"
    );
}

#[tokio::test]
async fn a_restarted_worker_reattaches_to_its_container() {
    let Some(()) = docker::ready("a_restarted_worker_reattaches_to_its_container") else {
        return;
    };
    // Twenty lines within the same second or two, so Docker's whole-second
    // `since` alone could not tell the shipped ones from the rest.
    let setup = Setup::new(
        "slow/job",
        &[
            "sh",
            "-c",
            "for i in $(echo 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20); do echo line $i; done; sleep 4; echo finished",
        ],
    );
    let mut worker = setup.worker("stable-name");
    let id = setup.run("slow/job", json!({})).await;
    setup.wait_state(&id, &["RUNNING"]).await;
    // The first worker shipped the first lines.
    let logs = format!("/api/flow-runs/{id}/logs?limit=1000");
    eventually(setup.url(), &logs, LONG, |page| {
        page["lines"]
            .as_array()
            .is_some_and(|lines| lines.iter().any(|l| l["message"] == "line 20"))
    })
    .await;
    worker.kill();
    let _worker = setup.worker("stable-name");
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let logs = setup.logs(&id).await;
    assert!(logs.iter().any(|l| l.contains("re-attached")), "{logs:?}");
    // Each line once: the restarted worker went on where the first stopped.
    for line in (1..=20)
        .map(|i| format!("line {i}"))
        .chain(["finished".into()])
    {
        let times = logs.iter().filter(|l| **l == line).count();
        assert_eq!(times, 1, "{line:?} in {logs:?}");
    }
    assert!(setup.all_removed().await, "{:?}", setup.containers());
}

#[tokio::test]
async fn host_deploy_builds_the_example_image_and_its_run_completes() {
    let Some(()) = docker::ready("host_deploy_builds_the_example_image_and_its_run_completes")
    else {
        return;
    };
    let label = uuid::Uuid::new_v4().to_string();
    let _cleanup = Cleanup(label.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    let (code, out, err) = host_cli(
        url,
        &["work-pool", "create", "--type", "docker", "my-docker-pool"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/repo-info/host.yaml"
    );
    let (code, out, err) = host_cli(url, &["deploy", "--file", file, "--no-prompt"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Built image repo-info:latest")
            && out.contains("Created deployment `repo-info/default`"),
        "{out}"
    );
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "my-docker-pool"],
    );
    let labels = format!("labels.host.test={label}");
    let (code, out, err) = host_cli(
        url,
        &[
            "deployment",
            "run",
            "repo-info/default",
            "--watch",
            "--job-variable",
            &labels,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Repository: bytecodealliance/wasmtime") && out.contains("Stars: 16800"),
        "{out}"
    );
    let (code, out, _) = host_cli(url, &["deploy", "--file", file, "--no-prompt"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Updated deployment `repo-info/default`"),
        "idempotent: {out}"
    );
}

#[tokio::test]
async fn a_plugin_cannot_stop_or_remove_a_container_it_did_not_create() {
    let Some(()) = docker::ready("a_plugin_cannot_stop_or_remove_a_container_it_did_not_create")
    else {
        return;
    };
    let label = uuid::Uuid::new_v4().to_string();
    let _cleanup = Cleanup(label.clone());
    let decoy = format!("decoy-{label}");
    docker::run(&[
        "run",
        "-d",
        "--name",
        &decoy,
        "--label",
        &format!("host.test={label}"),
        "--network",
        "none",
        TEST_IMAGE,
        "sleep",
        "300",
    ])
    .expect("decoy");
    let cache = tempfile::tempdir().expect("tempdir");
    let runtime = common::runtime(cache.path());
    let hostile = host::plugins::load_file(
        &runtime,
        std::path::Path::new(common::guests::HOSTILE),
        host::runtime::Grants::new([
            host::runtime::Capability::Process,
            host::runtime::Capability::ContainerRuntime,
        ]),
    )
    .await
    .expect("hostile loads");
    let run = uuid::Uuid::new_v4().to_string();
    for mode in ["stop-container", "remove-container"] {
        let job = host::runtime::Job {
            flow_run_id: run.clone(),
            flow_run_name: "attack".into(),
            configuration: json!({"mode": mode, "target": decoy}).to_string(),
            env: vec![],
            command: vec![],
            labels: vec![],
        };
        let handle = hostile.start(job).await.expect("start");
        let exit = hostile
            .wait(&run, &handle, host::capabilities::discard_output())
            .await
            .expect("wait");
        assert_eq!(exit.code, Some(0), "{mode} was refused: {}", exit.message);
    }
    let running = docker::run(&["inspect", "-f", "{{.State.Running}}", &decoy]).expect("inspect");
    assert_eq!(running, "true", "the decoy still runs");
    assert!(
        hostile.release(&run).await.is_empty(),
        "the attacker made nothing"
    );
}

/// The worker's peak resident memory, from /proc.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM");
    kib / 1024
}

#[tokio::test]
async fn a_huge_output_line_is_cut_while_it_is_read() {
    let Some(()) = docker::ready("a_huge_output_line_is_cut_while_it_is_read") else {
        return;
    };
    // 8 bytes doubled 24 times: one line of 128 MiB, then a short one.
    let setup = Setup::new(
        "big/line",
        &[
            "sh",
            "-c",
            "s=aaaaaaaa; for i in $(echo 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24); do s=$s$s; done; echo $s; echo after",
        ],
    );
    let worker = setup.worker("docker-worker");
    let id = setup.run("big/line", json!({})).await;
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let peak = peak_rss_mib(worker.child.id());
    eprintln!("the worker peaked at {peak} MiB");
    assert!(peak < 100, "the worker peaked at {peak} MiB");
    let logs = setup.logs(&id).await;
    let cut = logs
        .iter()
        .find(|l| l.starts_with("aaaa"))
        .unwrap_or_else(|| panic!("{logs:?}"));
    assert!(cut.len() <= 16 << 10, "{} bytes", cut.len());
    assert!(
        cut.contains("line truncated"),
        "says so: {}",
        &cut[cut.len() - 60..]
    );
    assert!(logs.contains(&"after".to_string()), "{logs:?}");
}
