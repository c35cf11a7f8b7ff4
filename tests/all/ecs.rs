//! The built-in `ecs` pool type against a real ECS-compatible endpoint:
//! `ministack` (PyPI), which runs each task as a container on the local
//! Docker daemon and ships `awslogs` output to its CloudWatch Logs. Each
//! test starts its own emulator on a free port and removes its containers.
//! The worker finds the emulator the way the AWS SDKs would
//! (`AWS_REGION`, `AWS_ENDPOINT_URL`), and the host signs with SigV4.

use crate::common;

use common::docker::TEST_IMAGE;
use common::ministack::{Front, Ministack};
use common::{ServerProcess, WorkerProcess, eventually, host_cli};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(90);
const POOL: &str = "my-ecs-pool";

struct Setup {
    // Dropped first: the server and workers go before the emulator.
    server: ServerProcess,
    dir: tempfile::TempDir,
    ministack: Ministack,
}

impl Setup {
    /// An emulator, a server, an `ecs` pool and a deployment running
    /// `command` in the test image.
    fn new(test: &str, deployment: &str, command: &[&str]) -> Option<Setup> {
        let ministack = Ministack::start(test)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProcess::start(dir.path(), &[]);
        let setup = Setup {
            server,
            dir,
            ministack,
        };
        setup.ok(&["work-pool", "create", "--type", "ecs", POOL]);
        let args = [
            &[
                "deployment",
                "create",
                deployment,
                "--pool",
                POOL,
                "--image",
                TEST_IMAGE,
                "--",
            ][..],
            command,
        ]
        .concat();
        setup.ok(&args);
        Some(setup)
    }

    fn url(&self) -> &str {
        &self.server.url
    }

    fn ok(&self, args: &[&str]) -> String {
        common::host_ok(&self.server.url, args)
    }

    fn worker(&self, name: &str) -> WorkerProcess {
        self.ministack.worker(
            self.url(),
            &self.dir.path().join("cache"),
            &["--pool", POOL, "--name", name, "--stop-grace-seconds", "2"],
        )
    }

    async fn run(&self, deployment: &str, body: Value) -> String {
        common::create_run(self.url(), deployment, body).await
    }

    async fn final_state(&self, id: &str) -> Value {
        common::final_run(self.url(), id, LONG).await
    }

    async fn logs(&self, id: &str) -> Vec<String> {
        common::run_logs(self.url(), id).await
    }

    /// Task definitions of the default family still ACTIVE.
    fn active_definitions(&self) -> Vec<Value> {
        self.ministack.ecs(
            "ListTaskDefinitions",
            &json!({"familyPrefix": "host-ecs", "status": "ACTIVE"}),
        )["taskDefinitionArns"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn the_walkthrough_runs_on_an_ecs_pool() {
    let Some(setup) = Setup::new(
        "the_walkthrough_runs_on_an_ecs_pool",
        "hello/ecs",
        &[
            "sh",
            "-c",
            "echo hello from ecs: $HOST_FLOW_RUN_NAME; echo to stderr >&2",
        ],
    ) else {
        return;
    };
    let _worker = setup.worker("ecs-worker");
    eventually(setup.url(), &format!("/api/work-pools/{POOL}"), LONG, |p| {
        p["status"] == "READY"
    })
    .await;

    // The container's output, from CloudWatch Logs, in the watch.
    let (code, out, err) = host_cli(setup.url(), &["deployment", "run", "hello/ecs", "--watch"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hello from ecs: ") && out.contains("to stderr") && out.contains("COMPLETED"),
        "{out}{err}"
    );

    // Exit 3 in the essential container: FAILED with its code.
    let id = setup
        .run(
            "hello/ecs",
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

    // An image that cannot be pulled: ECS stops the task before it runs
    // (TaskFailedToStart); the run is CRASHED with ECS's reason, not pending.
    let id = setup
        .run(
            "hello/ecs",
            json!({"job_variables": {"image": "host-test-missing:never"}}),
        )
        .await;
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "CRASHED", "{run}");
    let message = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("TaskFailedToStart") && message.contains("pull"),
        "{run}"
    );

    // Bad input the schema lets through: one run CRASHED naming the
    // field, and the worker carries on.
    let id = setup
        .run(
            "hello/ecs",
            json!({"job_variables": {"family": "no spaces allowed"}}),
        )
        .await;
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "CRASHED", "{run}");
    assert!(
        run["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("family")),
        "{run}"
    );
    let id = setup.run("hello/ecs", json!({})).await;
    assert_eq!(setup.final_state(&id).await["state"]["type"], "COMPLETED");

    // Every definition a run registered was deregistered by its destroy.
    assert!(
        common::wait_until(Duration::from_secs(20), || setup
            .active_definitions()
            .is_empty())
        .await,
        "{:?}",
        setup.active_definitions()
    );
}

#[tokio::test]
async fn a_cancelled_run_stops_its_task_within_seconds() {
    let Some(setup) = Setup::new(
        "a_cancelled_run_stops_its_task_within_seconds",
        "slow/ecs",
        &["sleep", "300"],
    ) else {
        return;
    };
    let _worker = setup.worker("ecs-worker");
    let id = setup.run("slow/ecs", json!({})).await;
    common::run_in_state(setup.url(), &id, &["RUNNING"], LONG).await;
    assert!(
        common::wait_until(LONG, || !setup.ministack.containers(true).is_empty()).await,
        "the task's container runs"
    );
    let cancelled = Instant::now();
    setup.ok(&["flow-run", "cancel", &id]);
    assert!(
        common::wait_until(Duration::from_secs(15), || setup
            .ministack
            .containers(true)
            .is_empty())
        .await,
        "StopTask stopped the container: {:?}",
        setup.ministack.containers(true)
    );
    let stopped_after = cancelled.elapsed();
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    eprintln!("the task's container was gone {stopped_after:?} after the cancel");

    // Cancelled as soon as RunTask returned (the task still provisioning,
    // most likely): stopped all the same, never left running (Prefect #21616).
    let id = setup.run("slow/ecs", json!({})).await;
    common::run_in_state(setup.url(), &id, &["RUNNING"], LONG).await;
    setup.ok(&["flow-run", "cancel", &id]);
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    let live = || {
        setup
            .ministack
            .ecs("ListTasks", &json!({"desiredStatus": "RUNNING"}))["taskArns"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(
        common::wait_until(Duration::from_secs(15), || live() == 0
            && setup.ministack.containers(true).is_empty())
        .await,
        "no task left: {} running, containers {:?}",
        live(),
        setup.ministack.containers(true)
    );
}

#[tokio::test]
async fn a_restarted_worker_reattaches_to_its_task() {
    let Some(setup) = Setup::new(
        "a_restarted_worker_reattaches_to_its_task",
        "slow/ecs",
        &["sh", "-c", "echo first; sleep 8; echo finished"],
    ) else {
        return;
    };
    let mut worker = setup.worker("stable-name");
    let id = setup.run("slow/ecs", json!({})).await;
    common::run_in_state(setup.url(), &id, &["RUNNING"], LONG).await;
    let logs = format!("/api/flow-runs/{id}/logs?limit=1000");
    eventually(setup.url(), &logs, LONG, |page| {
        page["lines"]
            .as_array()
            .is_some_and(|lines| lines.iter().any(|l| l["message"] == "first"))
    })
    .await;
    worker.kill();
    assert!(
        !setup.ministack.containers(true).is_empty(),
        "the task outlives its worker"
    );
    let _worker = setup.worker("stable-name");
    let run = setup.final_state(&id).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let logs = setup.logs(&id).await;
    assert!(logs.iter().any(|l| l.contains("re-attached")), "{logs:?}");
    assert!(logs.iter().any(|l| l == "finished"), "{logs:?}");
}

/// Prefect #22077: one blip of the API while polling must not end the run
/// (nor leave it a zombie). The front fails six DescribeTasks in a row: more
/// than the SDK client's four tries of one poll, so `wait` polls on too.
#[tokio::test]
async fn server_errors_while_polling_are_retried() {
    let Some(setup) = Setup::new(
        "server_errors_while_polling_are_retried",
        "flaky/ecs",
        &["sh", "-c", "echo begin; sleep 6; echo end"],
    ) else {
        return;
    };
    let front = Front::start(&setup.ministack.url, "DescribeTasks").await;
    let _worker = setup.ministack.worker_via(
        setup.url(),
        &setup.dir.path().join("cache"),
        &["--pool", POOL, "--name", "ecs-worker"],
        &front.url,
    );
    let id = setup.run("flaky/ecs", json!({})).await;
    common::run_in_state(setup.url(), &id, &["RUNNING"], LONG).await;
    front.fail_next(6);
    let run = setup.final_state(&id).await;
    assert_eq!(front.failed(), 6, "the front answered 503s: {run}");
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    assert!(setup.logs(&id).await.contains(&"end".to_string()));
}

#[test]
fn the_ecs_plugin_passes_the_conformance_suite() {
    let Some(ministack) = Ministack::start("the_ecs_plugin_passes_the_conformance_suite") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["plugin", "test", "ecs"])
        .env("HOST_CACHE_DIR", cache.path())
        .envs(ministack.env())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // RunTask carried the run id as a tag: what a successor recovers it by.
    let tags = stdout
        .lines()
        .find(|line| line.contains("start-tags"))
        .unwrap_or_default();
    assert!(tags.contains("carried the flow run id"), "{stdout}");
}

/// A RunTask whose answer is lost on the way back (ECS ran the task; the
/// plugin saw a 503) fails `start` retryably and the worker starts again:
/// that try takes up the task the first one ran, so the run has one task.
#[tokio::test]
async fn a_lost_run_task_answer_does_not_start_a_second_task() {
    let Some(setup) = Setup::new(
        "a_lost_run_task_answer_does_not_start_a_second_task",
        "lost/ecs",
        &["sh", "-c", "echo begin; sleep 2; echo end"],
    ) else {
        return;
    };
    let front = Front::start(&setup.ministack.url, "RunTask").await;
    front.lose_next(1);
    let _worker = setup.ministack.worker_via(
        setup.url(),
        &setup.dir.path().join("cache"),
        &["--pool", POOL, "--name", "ecs-worker"],
        &front.url,
    );
    let id = setup.run("lost/ecs", json!({})).await;
    let run = setup.final_state(&id).await;
    assert_eq!(front.failed(), 1, "the front lost RunTask's answer: {run}");
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let tasks: Vec<Value> = ["RUNNING", "STOPPED"]
        .iter()
        .flat_map(|desired| {
            setup.ministack.ecs(
                "ListTasks",
                &json!({"startedBy": id, "desiredStatus": desired}),
            )["taskArns"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(tasks.len(), 1, "one task for the run: {tasks:?}");
}
