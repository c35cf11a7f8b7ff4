//! No run lost or mis-reported: bursts, silent runs, cancels on a full worker,
//! process runs that outlive their worker, refused reports, bad names.

use crate::common;

use common::{
    ServerProcess, WorkerProcess, create_run, eventually, process_alive, process_deployment,
    run_logs, run_states,
};
use serde_json::{Value, json};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn ok(url: &str, args: &[&str]) -> String {
    common::host_ok(url, args)
}

async fn final_run(url: &str, id: &str) -> Value {
    common::final_run(url, id, LONG).await
}

async fn running(url: &str, id: &str) -> Value {
    common::run_in_state(url, id, &["RUNNING"], LONG).await
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|ppid| ppid.parse().ok())
        .expect("ppid")
}

fn handle_pid(run: &Value) -> i32 {
    let handle: Value =
        serde_json::from_str(run["infrastructure_handle"].as_str().expect("handle")).expect("json");
    handle["pid"].as_i64().expect("pid") as i32
}

/// Waits until run `id` has logged the line `message`.
async fn logged(url: &str, id: &str, message: &str) {
    eventually(url, &format!("/api/flow-runs/{id}/logs"), LONG, |page| {
        page["lines"]
            .as_array()
            .is_some_and(|lines| lines.iter().any(|l| l["message"] == message))
    })
    .await;
}

#[tokio::test]
async fn a_cancel_reaches_a_worker_whose_slots_are_all_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_deployment(url, "full", "f/sleep", "sleep 120");
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "full", "--limit", "1"],
    );
    let id = create_run(url, "f/sleep", json!({})).await;
    let pid = handle_pid(&running(url, &id).await);
    ok(url, &["flow-run", "cancel", &id]);
    // Well inside the 120 s the run would otherwise take.
    let run = common::final_run(url, &id, Duration::from_secs(15)).await;
    assert_eq!(run["state"]["type"], "CANCELLED", "{run}");
    assert!(
        common::wait_until(Duration::from_secs(5), || !process_alive(pid)).await,
        "the process is gone"
    );
}

#[tokio::test]
async fn a_silent_run_is_not_taken_for_a_spinning_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_deployment(url, "quiet", "f/quiet", "sleep 4");
    // 30 ms without a host call is "spinning"; the run is silent for 4 s.
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "quiet", "--plugin-cpu-seconds", "0.03"],
    );
    let id = create_run(url, "f/quiet", json!({})).await;
    let run = final_run(url, &id).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
}

#[tokio::test]
async fn a_burst_of_ten_thousand_runs_all_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_deployment(url, "burst", "f/burst", "true");
    let client = common::web_client();
    let runs = 10_000;
    // Created before the worker starts: the worst burst it can meet.
    let path = format!("{url}/api/deployments/f/burst/runs");
    let mut created = 0;
    while created < runs {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..100 {
            batch.spawn(client.post(&path).json(&json!({})).send());
        }
        while let Some(response) = batch.join_next().await {
            let response = response.expect("task").expect("create");
            assert_eq!(response.status().as_u16(), 201);
            created += 1;
        }
    }
    let _worker = WorkerProcess::start(
        url,
        &dir.path().join("cache"),
        &["--pool", "burst", "--limit", "100"],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        let states = run_states(url, "f/burst").await;
        assert_eq!(states.len(), runs);
        let done = states
            .iter()
            .filter(|(_, s)| ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"].contains(&s.as_str()))
            .count();
        if done == runs {
            let not_completed: Vec<_> = states.iter().filter(|(_, s)| s != "COMPLETED").collect();
            assert!(
                not_completed.is_empty(),
                "{} of {runs} not COMPLETED, e.g. {:?}",
                not_completed.len(),
                not_completed.first()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {runs} done"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_process_run_survives_its_worker_and_completes_with_all_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_deployment(
        url,
        "local",
        "f/outlive",
        "echo before; sleep 3; echo after; exit 0",
    );
    ok(
        url,
        &[
            "deployment",
            "create",
            "f/fails-later",
            "--pool",
            "local",
            "--",
            "sh",
            "-c",
            "echo before; sleep 3; exit 3",
        ],
    );
    let args = ["--pool", "local", "--name", "outliver"];
    let mut worker = WorkerProcess::start(url, &cache, &args);
    let id = create_run(url, "f/outlive", json!({})).await;
    let failing = create_run(url, "f/fails-later", json!({})).await;
    let pid = handle_pid(&running(url, &id).await);
    running(url, &failing).await;
    for run in [&id, &failing] {
        logged(url, run, "before").await;
    }
    worker.kill();
    assert!(process_alive(pid), "the run outlives its worker");
    let _worker = WorkerProcess::start(url, &cache, &args);
    let run = final_run(url, &id).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let logs = run_logs(url, &id).await;
    for line in ["before", "after"] {
        assert_eq!(
            logs.iter().filter(|l| *l == line).count(),
            1,
            "{line} once in {logs:?}"
        );
    }
    // The real exit, not an invented one.
    let run = final_run(url, &failing).await;
    assert_eq!(run["state"]["type"], "FAILED", "{run}");
    assert_eq!(run["exit_code"], 3, "{run}");
}

/// A run that ends while its worker is dead: the worker that comes back
/// reports the real exit and ships every line written meanwhile, once.
#[tokio::test]
async fn output_written_while_the_worker_was_away_is_shipped_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    // The flow goes on only once the test says so, after the worker died.
    let go = dir.path().join("go");
    let script = format!(
        "echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo away-1; echo away-2",
        go = go.display()
    );
    process_deployment(url, "local", "f/away", &script);
    let args = ["--pool", "local", "--name", "returner"];
    let mut worker = WorkerProcess::start(url, &cache, &args);
    let id = create_run(url, "f/away", json!({})).await;
    let pid = handle_pid(&running(url, &id).await);
    logged(url, &id, "before").await;
    worker.kill();
    std::fs::write(&go, "").expect("go");
    assert!(
        common::wait_until(LONG, || !process_alive(pid)).await,
        "the run ends while its worker is away"
    );
    let _worker = WorkerProcess::start(url, &cache, &args);
    let run = final_run(url, &id).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let logs = run_logs(url, &id).await;
    for line in ["before", "away-1", "away-2"] {
        assert_eq!(
            logs.iter().filter(|l| *l == line).count(),
            1,
            "{line} once in {logs:?}"
        );
    }
}

#[tokio::test]
async fn a_killed_supervisor_ends_the_run_crashed_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    process_deployment(url, "local", "f/orphan", "sleep 120");
    let _worker = WorkerProcess::start(url, &cache, &["--pool", "local"]);
    let id = create_run(url, "f/orphan", json!({})).await;
    let pid = handle_pid(&running(url, &id).await);
    let supervisor = parent_of(pid);
    assert_ne!(supervisor, std::process::id() as i32);
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on a process this test started (through the worker).
    unsafe {
        libc::kill(supervisor, libc::SIGKILL);
    }
    let run = common::final_run(url, &id, Duration::from_secs(30)).await;
    assert_eq!(run["state"]["type"], "CRASHED", "{run}");
    assert!(
        run["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("supervisor")),
        "{run}"
    );
    assert!(
        common::wait_until(Duration::from_secs(5), || !process_alive(pid)).await,
        "nothing is left running"
    );
}

#[tokio::test]
async fn long_lines_and_long_messages_never_strand_a_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    // 3,000 lines of 3,000 bytes, then one line of 1 MiB.
    process_deployment(
        url,
        "chatty",
        "f/chatty",
        "line=$(head -c 3000 /dev/zero | tr '\\0' x); \
         for i in $(seq 1 3000); do echo \"$i $line\"; done; \
         head -c 1048576 /dev/zero | tr '\\0' y; echo; echo done",
    );
    let _worker = WorkerProcess::start(url, &dir.path().join("cache"), &["--pool", "chatty"]);
    let id = create_run(url, "f/chatty", json!({})).await;
    let run = final_run(url, &id).await;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}");
    let lines = common::all_log_lines(url, &id).await;
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        texts.iter().any(|l| l.starts_with("3000 xxx")),
        "every ordinary line arrives"
    );
    assert!(texts.contains(&"done"));
    let long = texts
        .iter()
        .find(|l| l.starts_with("yyy"))
        .expect("the long line, truncated");
    assert!(
        long.len() < 100_000 && long.contains("truncated"),
        "{}",
        long.len()
    );
}

#[tokio::test]
async fn names_made_of_dots_are_refused() {
    let server = common::TestServer::start().await;
    for name in [".", "..", "..."] {
        let body = json!({"name": name, "type": "process"}).to_string();
        let (status, error) = server.request("POST", "/api/work-pools", Some(&body)).await;
        assert_eq!(status, 400, "{name}: {error}");
        assert_eq!(error["field"], "name", "{error}");
    }
}

#[tokio::test]
async fn a_schedule_that_outruns_its_workers_stops_at_a_bound() {
    let server = common::TestServer::start().await;
    let url = server.url.as_str();
    let (status, _) = common::http(
        "POST",
        &format!("{url}/api/work-pools"),
        Some(&json!({"name": "idle", "type": "process"}).to_string()),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let body = json!({"flow": "f", "name": "secondly", "pool": "idle", "command": ["true"],
        "schedules": [{"interval_seconds": 1}]});
    let (status, body) = common::http(
        "PUT",
        &format!("{url}/api/deployments"),
        Some(&body.to_string()),
        None,
    )
    .await;
    assert!(status == 200 || status == 201, "{body}");
    server.control.upkeep().await.expect("upkeep");
    let first = run_states(url, "f/secondly").await.len();
    assert_eq!(first, 100, "a count ahead");
    // Some of them become due, with no worker to take them.
    let started = std::time::Instant::now();
    common::wait_until(Duration::from_secs(10), || {
        started.elapsed() > Duration::from_secs(3)
    })
    .await;
    server.control.upkeep().await.expect("upkeep");
    assert_eq!(
        run_states(url, "f/secondly").await.len(),
        100,
        "waiting runs, Late ones included, stay bounded"
    );
}

/// `host serve` on `data_dir`, expected to refuse to start: (code, stderr).
fn serve_refused(data_dir: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .env("HOST_CACHE_DIR", data_dir.join("cache"))
        .output()
        .expect("run host serve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_damaged_or_empty_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(dir.path(), &[]);
    ok(
        &server.url,
        &["work-pool", "create", "--type", "process", "kept"],
    );
    server.kill();
    let db = dir.path().join("host.redb");
    let whole = std::fs::read(&db).expect("db");
    for (what, bytes) in [("truncated", &whole[..whole.len() / 2]), ("empty", &[][..])] {
        std::fs::write(&db, bytes).expect("damage");
        let (code, stderr) = serve_refused(dir.path());
        assert_eq!(code, Some(1), "{what}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{what}: one line: {stderr}"
        );
        assert!(
            stderr.contains("host.redb") && stderr.contains("untouched"),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(
            std::fs::read(&db).expect("db"),
            bytes,
            "{what}: the file is untouched"
        );
    }
}

/// 64 KiB flipped in the middle of a database full of records: refused at
/// start, naming the file, which is left as it was; a clean copy of the
/// same file starts.
#[tokio::test]
async fn a_database_damaged_in_the_middle_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(dir.path(), &[]);
    let description = "d".repeat(30 << 10);
    for i in 0..200 {
        let body =
            json!({"name": format!("pool-{i}"), "type": "process", "description": description});
        let (status, answer) = server.post("/api/work-pools", &body).await;
        assert_eq!(status, 201, "{answer}");
    }
    server.kill();
    let db = dir.path().join("host.redb");
    let clean = std::fs::read(&db).expect("db");
    let mut damaged = clean.clone();
    let middle = damaged.len() / 2;
    for byte in &mut damaged[middle..middle + (64 << 10)] {
        *byte = !*byte;
    }
    std::fs::write(&db, &damaged).expect("damage");
    let (code, stderr) = serve_refused(dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("host.redb") && stderr.contains("untouched"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        std::fs::read(&db).expect("db") == damaged,
        "the damaged file is left as it was"
    );
    assert!(
        !dir.path().join("host.redb.checking").exists(),
        "the checked copy is gone"
    );

    std::fs::write(&db, &clean).expect("restore");
    let server = ServerProcess::start(dir.path(), &[]);
    let pools = ok(&server.url, &["work-pool", "ls", "--output", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&pools)
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(200)
    );
}

/// A small tmpfs for the data dir, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED the disk-full test: cannot mount a tmpfs ({}); it needs root",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk refuses more.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount(64) else {
        return;
    };
    // 0: no reserve, so the database itself runs into ENOSPC mid-commit.
    for reserve in ["0", "8"] {
        let data = disk.path().join(format!("data-{reserve}"));
        let server = ServerProcess::start(&data, &["--min-free-disk-mb", reserve]);
        let url = server.url.as_str();
        ok(url, &["work-pool", "create", "--type", "process", "before"]);
        let filler = disk.fill();
        let mut refused = None;
        // A few writes may still fit in pages the database already has.
        for n in 0..200 {
            let body = json!({"name": format!("during-{n}"), "type": "process"}).to_string();
            let (status, error) =
                common::http("POST", &format!("{url}/api/work-pools"), Some(&body), None).await;
            if status != 201 {
                refused = Some((status, error));
                break;
            }
        }
        let (status, error) = refused.expect("writes are refused once the disk is full");
        assert_eq!(status, 507, "reserve {reserve}: {error}");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("disk is full")),
            "{error}"
        );
        let (status, pools) =
            common::http("GET", &format!("{url}/api/work-pools"), None, None).await;
        assert_eq!(status, 200, "reads still work: {pools}");
        assert!(pools.to_string().contains("before"));
        let (_, health) = common::http("GET", &format!("{url}/api/health"), None, None).await;
        assert_eq!(health["status"], "degraded", "{health}");

        std::fs::remove_file(filler).expect("free the space");
        ok(url, &["work-pool", "create", "--type", "process", "after"]);
        let (_, health) = common::http("GET", &format!("{url}/api/health"), None, None).await;
        assert_eq!(health["status"], "ok", "{health}");
        let (_, pools) = common::http("GET", &format!("{url}/api/work-pools"), None, None).await;
        assert!(pools.to_string().contains("after"));
    }
}

#[tokio::test]
async fn the_server_keeps_a_bounded_log_per_run_whatever_workers_send() {
    let server = common::TestServer::start_with(
        None,
        host::control::ControlConfig {
            max_log_lines_per_run: 10,
            ..host::control::ControlConfig::default()
        },
    )
    .await;
    let url = server.url.as_str();
    let pool = json!({"name": "p", "type": "process"}).to_string();
    assert_eq!(
        common::http("POST", &format!("{url}/api/work-pools"), Some(&pool), None)
            .await
            .0,
        201
    );
    let deployment =
        json!({"flow": "f", "name": "d", "pool": "p", "command": ["true"]}).to_string();
    let (status, _) = common::http(
        "PUT",
        &format!("{url}/api/deployments"),
        Some(&deployment),
        None,
    )
    .await;
    assert!(status < 300);
    let id = create_run(url, "f/d", json!({})).await;
    for batch in 0..3 {
        let lines: Vec<Value> = (0..7)
            .map(|n| json!({"message": format!("line {batch}.{n}")}))
            .collect();
        let (status, body) = common::http(
            "POST",
            &format!("{url}/api/flow-runs/{id}/logs"),
            Some(&Value::from(lines).to_string()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let logs = run_logs(url, &id).await;
    assert_eq!(logs.len(), 11, "10 lines and one notice: {logs:?}");
    assert!(logs[10].contains("keeps 10 log lines"), "{logs:?}");
}
