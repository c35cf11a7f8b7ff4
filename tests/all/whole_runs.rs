//! A run ends whole and reaches only itself: every process it started ends
//! with it, and its outcome is the one its own supervisor recorded.

use crate::common;

use common::{
    ServerProcess, WorkerProcess, create_run, pid_in, process_alive, process_deployment, run_logs,
};
use serde_json::{Value, json};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

async fn running(url: &str, id: &str) -> Value {
    common::run_in_state(url, id, &["RUNNING"], LONG).await
}

/// Whether `--run-as` can be tried here; says so when it cannot.
fn can_run_as() -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        eprintln!("skipped: --run-as needs a worker running as root");
    }
    root
}

fn chmod(dir: &std::path::Path, mode: u32) {
    let permissions = std::os::unix::fs::PermissionsExt::from_mode(mode);
    std::fs::set_permissions(dir, permissions).expect("chmod");
}

/// A process the flow left in the background, its output elsewhere, ends
/// with the run, and the run's message says what was killed.
#[tokio::test]
async fn a_background_process_does_not_outlive_its_completed_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    let pid_file = dir.path().join("bg.pid");
    // The flow ends only once the background process wrote its pid, so
    // there is one to look for.
    let script = format!(
        "sh -c 'echo $$ > {f}; exec sleep 3101' >/dev/null 2>&1 & while [ ! -s {f} ]; do sleep 0.01; done; echo bg",
        f = pid_file.display()
    );
    process_deployment(url, "local", "f/bg", &script);
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "local"]);
    let id = create_run(url, "f/bg", json!({})).await;
    let run = common::final_run(url, &id, LONG).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let pid = pid_in(&pid_file, LONG).await;
    assert!(
        common::wait_until(Duration::from_secs(10), || !process_alive(pid)).await,
        "the background sleep ({pid}) ended with the run"
    );
    let message = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("killed what it left running") && message.contains(&format!("pid {pid}")),
        "{run}"
    );
}

/// A cancel ends every process of the run, also one in a session of its
/// own that holds the run's stdout.
#[tokio::test]
async fn a_cancel_ends_the_whole_tree_of_a_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    let pid_file = dir.path().join("escaped.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 3102' & exec sleep 3103",
        pid_file.display()
    );
    process_deployment(url, "local", "f/tree", &script);
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "local"]);
    let id = create_run(url, "f/tree", json!({})).await;
    running(url, &id).await;
    let escaped = pid_in(&pid_file, LONG).await;
    common::host_ok(url, &["flow-run", "cancel", &id]);
    let run = common::final_run(url, &id, LONG).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    assert!(
        common::wait_until(Duration::from_secs(10), || !process_alive(escaped)).await,
        "the process in its own session ({escaped}) ended with the run: {run}"
    );
}

/// A run cancelled (and made final by the sweep) while its worker was
/// dead: the worker that starts again with its name kills what is left.
#[tokio::test]
async fn a_restarted_worker_kills_the_processes_of_runs_it_no_longer_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &["--worker-lost-after", "0"]);
    let url = server.url.as_str();
    let pid_file = dir.path().join("orphan.pid");
    let script = format!("echo $$ > {}; exec sleep 3104", pid_file.display());
    process_deployment(url, "local", "f/orphaned", &script);
    let args = ["--pool", "local", "--name", "again"];
    let mut worker = WorkerProcess::start(url, &cache, &args);
    let id = create_run(url, "f/orphaned", json!({})).await;
    running(url, &id).await;
    let pid = pid_in(&pid_file, LONG).await;
    worker.kill();
    common::host_ok(url, &["flow-run", "cancel", &id]);
    let run = common::final_run(url, &id, LONG).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    assert!(process_alive(pid), "the process outlived its worker");
    let _worker = WorkerProcess::start(url, &cache, &args);
    assert!(
        common::wait_until(Duration::from_secs(30), || !process_alive(pid)).await,
        "the restarted worker killed {pid}"
    );
}

/// Live processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

/// 200 runs cancelled as they are created, many of them while the worker
/// is in their `start`: once every run is final, none of their processes
/// runs.
#[tokio::test(flavor = "multi_thread")]
async fn runs_cancelled_while_starting_leave_nothing_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_deployment(url, "local", "f/slow", "exec sleep 3107");
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "local", "--limit", "200"],
    );
    // All created at once, then all cancelled at once: the worker is in
    // the middle of starting many of them.
    let mut creations = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let url = url.to_string();
        creations.spawn(async move { create_run(&url, "f/slow", json!({})).await });
    }
    let ids = creations.join_all().await;
    let mut cancels = tokio::task::JoinSet::new();
    for id in &ids {
        let cancel = format!("{url}/api/flow-runs/{id}/cancel");
        cancels.spawn(async move { common::http("POST", &cancel, Some("{}"), None).await });
    }
    for (status, body) in cancels.join_all().await {
        assert!(status < 300, "{status} {body}");
    }
    let mut while_starting = 0;
    for id in &ids {
        let run = common::final_run(url, id, LONG).await;
        assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
        let message = run["state"]["message"].as_str().unwrap_or_default();
        while_starting += usize::from(message.contains("while starting"));
    }
    let mut left = Vec::new();
    let ended = common::wait_until(Duration::from_secs(30), || {
        left = processes_with("sleep 3107");
        left.is_empty()
    })
    .await;
    println!(
        "200 runs cancelled at once: {while_starting} while starting, {} processes left",
        left.len()
    );
    assert!(ended, "still running: {left:?}");
}

/// A record valid in form for how a process ended, plain or signed, with a
/// MAC nobody computed.
const FORGED_EXIT: &str = concat!(
    r#"{"code":0,"signal":null,"message":"exited with code 0","#,
    r#""exit":{"code":0,"signal":null,"message":"exited with code 0"},"#,
    r#""mac":"0000000000000000000000000000000000000000000000000000000000000000"}"#
);

/// A flow writes that its process exited 0, beside its working directory
/// and in every directory of the worker's root it can reach, then fails.
/// Neither it nor the other run it wrote for is believed: its own run
/// ends with the exit it really had, the other runs on until cancelled.
#[tokio::test]
async fn a_workload_cannot_write_its_own_or_another_runs_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    let victim_pid = dir.path().join("victim.pid");
    process_deployment(
        url,
        "local",
        "f/victim",
        &format!("echo $$ > {}; exec sleep 3105", victim_pid.display()),
    );
    // The worker reads an exit within 50 ms: the 2 s after the forgery
    // give it every chance to believe it.
    let forger = format!(
        "for d in . .. $(find ../.. -type d 2>/dev/null); do printf '%s' '{FORGED_EXIT}' > \"$d/exit.json\" 2>/dev/null; done; echo forged; sleep 2; exit 3"
    );
    common::host_ok(
        url,
        &[
            "deployment",
            "create",
            "f/forger",
            "--pool",
            "local",
            "--",
            "sh",
            "-c",
            &forger,
        ],
    );
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "local"]);
    let victim = create_run(url, "f/victim", json!({})).await;
    running(url, &victim).await;
    let pid = pid_in(&victim_pid, LONG).await;

    let forger = create_run(url, "f/forger", json!({})).await;
    let run = common::final_run(url, &forger, LONG).await;
    assert_eq!(run["state"]["type"], "FAILED", "{run}");
    assert!(
        run["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exited with code 3")),
        "{run}"
    );
    assert!(run_logs(url, &forger).await.contains(&"forged".to_string()));

    let victim_run = running(url, &victim).await;
    assert!(
        process_alive(pid),
        "the victim's process runs: {victim_run}"
    );
    common::host_ok(url, &["flow-run", "cancel", &victim]);
    let victim_run = common::final_run(url, &victim, LONG).await;
    assert_eq!(victim_run["state"]["type"], "CANCELLED", "{victim_run}");
}

/// `--run-as nobody`: the workload runs with nobody's ids and its own
/// working directory, and the supervisor's records are closed to it.
#[tokio::test]
async fn a_workload_run_as_another_user_cannot_reach_the_records() {
    if !can_run_as() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // nobody must pass through the test's directory to its work dir.
    chmod(dir.path(), 0o711);
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_deployment(
        url,
        "local",
        "f/nobody",
        "id -u; echo $USER; touch mine && echo wrote-cwd; \
         ls ../../records >/dev/null 2>&1 && echo reachable || echo unreachable",
    );
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "local", "--run-as", "nobody"],
    );
    let id = create_run(url, "f/nobody", json!({})).await;
    let run = common::final_run(url, &id, LONG).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    // The first line is the worker's own ("started on worker ...").
    let logs = run_logs(url, &id).await;
    assert_eq!(
        logs[1..],
        ["65534", "nobody", "wrote-cwd", "unreachable"],
        "{run}"
    );
}

/// A worker that could not give its workloads another user says why at
/// start, before it claims anything.
#[tokio::test]
async fn run_as_refuses_a_user_it_cannot_use_or_a_work_dir_the_user_cannot_reach() {
    if !can_run_as() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    chmod(dir.path(), 0o700);
    let start = |user: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["worker", "start", "--pool", "p", "--run-as", user])
            .env("HOST_API_URL", "http://127.0.0.1:9")
            .env("HOST_WORK_DIR", dir.path().join("work"))
            .env("HOST_CACHE_DIR", dir.path().join("cache"))
            .output()
            .expect("run host")
    };
    let out = start("no-such-user-here");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--run-as") && stderr.contains("no such user"),
        "{stderr}"
    );

    // nobody cannot pass the 0700 temp dir.
    let out = start("nobody");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&dir.path().display().to_string()) && stderr.contains("chmod o+x"),
        "{stderr}"
    );
}

/// A job's `env` cannot replace the run's identity: the workload is told
/// which run it is and where the API is by the host.
#[tokio::test]
async fn a_jobs_env_cannot_change_which_run_the_workload_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    common::host_ok(url, &["work-pool", "create", "--type", "process", "local"]);
    common::host_ok(
        url,
        &[
            "deployment",
            "create",
            "f/who",
            "--pool",
            "local",
            "--job-variable",
            "env.HOST_FLOW_RUN_ID=someone-else",
            "--job-variable",
            "env.HOST_API_URL=http://attacker.example",
            "--job-variable",
            "env.GREETING=hello",
            "--",
            "sh",
            "-c",
            "echo $HOST_FLOW_RUN_ID; echo $HOST_API_URL; echo $GREETING",
        ],
    );
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "local"]);
    let id = create_run(url, "f/who", json!({})).await;
    let run = common::final_run(url, &id, LONG).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let logs = run_logs(url, &id).await;
    assert_eq!(logs[1..], [id.as_str(), url, "hello"]);
}

/// A descriptor the worker inherited without close-on-exec (a build
/// tool's lock, a socket of whoever started it) is not passed on to the
/// supervisors, which outlive the worker, nor to the workloads: a
/// supervisor holding a `flock` lock kept it for as long as its run went.
#[tokio::test]
async fn supervisors_and_workloads_do_not_inherit_the_workers_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    let marker = dir.path().join("inherited-marker");
    let held = std::fs::File::create(&marker).expect("marker");
    // Open without close-on-exec, as `flock FILE cmd` leaves its lock.
    rustix::io::fcntl_setfd(&held, rustix::io::FdFlags::empty()).expect("clear CLOEXEC");
    let (supervisor, listing, go) = (
        dir.path().join("supervisor.pid"),
        dir.path().join("fds"),
        dir.path().join("go"),
    );
    let script = format!(
        "ls -l /proc/$$/fd/ > {listing}; echo $PPID > {supervisor}; while [ ! -e {go} ]; do sleep 0.05; done",
        listing = listing.display(),
        supervisor = supervisor.display(),
        go = go.display(),
    );
    process_deployment(url, "local", "f/fds", &script);
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "local"]);
    drop(held);
    let id = create_run(url, "f/fds", json!({})).await;
    let supervisor = pid_in(&supervisor, LONG).await;
    let held_by_supervisor: Vec<String> = std::fs::read_dir(format!("/proc/{supervisor}/fd"))
        .expect("the supervisor's descriptors")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    std::fs::write(&go, "").expect("go");
    let run = common::final_run(url, &id, LONG).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let marker = marker.display().to_string();
    assert!(
        !held_by_supervisor.iter().any(|t| t == &marker),
        "the supervisor holds the worker's inherited descriptor: {held_by_supervisor:?}"
    );
    let workload = std::fs::read_to_string(&listing).expect("the workload's descriptors");
    assert!(
        !workload.contains(&marker),
        "the workload holds it: {workload}"
    );
}
