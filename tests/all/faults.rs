//! The fault suite: a nemesis (PostgreSQL stopped immediately, `host serve`
//! killed or paused, a worker paused past its heartbeat timeout) against
//! real processes, and a checker over what the flows themselves wrote:
//! every acknowledged creation exists, every run executed exactly once,
//! every final state matches the exit the flow really had, no run stuck,
//! no line a flow wrote missing from its log. Also failover between
//! replicas with the leading one paused or cut off from PostgreSQL
//! (through `common::proxy`). Each scenario prints its counts. A damaged
//! redb file is `no_run_lost`'s.

use crate::common;

use common::ledger::{
    counting_deployment, counting_workers, create_runs, every_run_exactly_once, executions,
    replicas, url_list,
};
use common::postgres;
use common::{ServerProcess, http};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// An answer from the server once it answers at all (not a 5xx, not a
/// refused connection): the database may still be coming back.
async fn settled(
    method: &str,
    url: &str,
    body: Option<&str>,
    timeout: Duration,
) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, answer) = http(method, url, body, None).await;
        if (200..500).contains(&status) || Instant::now() > deadline {
            return (status, answer);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every 201 means the run is on PostgreSQL's disk: a creation followed at
/// once by an immediate stop (no checkpoint, no WAL flush) is there after
/// the restart, 20 times in a row.
#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_creation_survives_an_immediate_postgres_stop() {
    let Some(cluster) = postgres::private() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server =
        ServerProcess::start_on_postgres(&cluster.new_database(), &dir.path().join("cache"), &[]);
    let url = server.url.as_str();
    common::host_ok(url, &["work-pool", "create", "--type", "process", "p"]);
    common::host_ok(url, &["deployment", "create", "f/d", "--pool", "p"]);
    let mut lost = Vec::new();
    for round in 0..20 {
        let creation = format!("{url}/api/deployments/f/d/runs");
        let (status, run) = settled("POST", &creation, Some("{}"), Duration::from_secs(60)).await;
        assert_eq!(status, 201, "round {round}: {run}");
        let id = run["id"].as_str().expect("id").to_string();
        cluster.crash();
        cluster.start_again();
        let read = format!("{url}/api/flow-runs/{id}");
        let (status, body) = settled("GET", &read, None, Duration::from_secs(60)).await;
        match status {
            200 => {}
            404 => lost.push(id),
            other => panic!("round {round}: {other} {body}"),
        }
    }
    println!(
        "immediate stops: 20 acknowledged creations, {} lost",
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
}

/// A burst through two replicas with PostgreSQL stopped immediately in the
/// middle: nothing acknowledged lost, nothing run twice, every run that
/// exited 0 COMPLETED, none stuck.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_with_an_immediate_postgres_restart_loses_nothing() {
    let Some(cluster) = postgres::private() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = replicas(&cluster, dir.path(), 2);
    let ledger: PathBuf = dir.path().join("executed");
    counting_deployment(&url_list(&servers, 0), &ledger);
    let _workers = counting_workers(&servers, dir.path(), 20);
    let mut restarted = false;
    let acknowledged = create_runs(&url_list(&servers, 0), 600, |created| {
        if created >= 300 && !restarted {
            // Mid-load: runs created, taken and running through both replicas.
            let deadline = Instant::now() + Duration::from_secs(60);
            while executions(&ledger).len() < 50 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            restarted = true;
            cluster.crash();
            cluster.start_again();
        }
    })
    .await;
    assert!(restarted);
    let counts = every_run_exactly_once(&servers[0].url, &ledger, &acknowledged).await;
    println!("burst with an immediate PostgreSQL restart: {counts}");
    // Both replicas are back in business, not just the one the checks used.
    for server in &servers {
        let (status, _) = server.get("/api/work-pools").await;
        assert_eq!(status, 200, "{}", server.url);
    }
}

/// A port nothing listens on now, for a server that must come back on it.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `host serve` on its redb file killed (SIGKILL) in the middle of a burst
/// and started again on the same file and port: nothing acknowledged lost,
/// nothing run twice, every run that exited 0 COMPLETED, none stuck, no
/// line a flow wrote missing from its log.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_with_the_server_killed_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let args = ["--port", port.as_str()];
    let mut servers = vec![ServerProcess::start(dir.path(), &args)];
    let url = servers[0].url.clone();
    let ledger: PathBuf = dir.path().join("executed");
    counting_deployment(&url, &ledger);
    let _workers = counting_workers(&servers, dir.path(), 20);
    let mut killed = false;
    let acknowledged = create_runs(&url, 600, |created| {
        if created >= 300 && !killed {
            let deadline = Instant::now() + Duration::from_secs(60);
            while executions(&ledger).len() < 50 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            killed = true;
            servers[0].kill();
            servers[0] = ServerProcess::start(dir.path(), &args);
        }
    })
    .await;
    assert!(killed);
    assert_eq!(servers[0].url, url, "back on the same address");
    let counts = every_run_exactly_once(&url, &ledger, &acknowledged).await;
    println!("burst with the server killed and restarted: {counts}");
}

/// Sends `signal` to a process the test started.
#[allow(unsafe_code)]
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child this test started.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// A process pool whose flows wait for the file `go`, then append their
/// run id to `ledger` and exit 0; `count` runs of it RUNNING on one worker
/// (heartbeat every second). Answers the worker and the run ids.
async fn runs_waiting_for_go(
    url: &str,
    dir: &std::path::Path,
    count: usize,
) -> (common::WorkerProcess, Vec<String>) {
    let (go, ledger) = (dir.join("go"), dir.join("ledger"));
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; echo \"$HOST_FLOW_RUN_ID\" >> {ledger}",
        go = go.display(),
        ledger = ledger.display()
    );
    common::host_ok(url, &["work-pool", "create", "--type", "process", "p"]);
    common::host_ok(
        url,
        &[
            "deployment",
            "create",
            "f/go",
            "--pool",
            "p",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let worker = common::WorkerProcess::start(
        url,
        &dir.join("worker/cache"),
        &["--pool", "p", "--name", "w1", "--limit", &count.to_string()],
    );
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(common::create_run(url, "f/go", json!({})).await);
    }
    for id in &ids {
        common::run_in_state(url, id, &["RUNNING"], Duration::from_secs(60)).await;
    }
    (worker, ids)
}

/// Lets the flows of [`runs_waiting_for_go`] finish; checks that each run
/// executed once and ended COMPLETED. Answers how many did not.
async fn all_complete(url: &str, dir: &std::path::Path, ids: &[String]) -> usize {
    std::fs::write(dir.join("go"), "").expect("go");
    let mut wrong = 0;
    for id in ids {
        let run = common::final_run(url, id, Duration::from_secs(60)).await;
        if run["state"]["type"] != "COMPLETED" {
            eprintln!("not COMPLETED: {run}");
            wrong += 1;
        }
    }
    let executed = executions(&dir.join("ledger"));
    assert!(
        ids.iter().all(|id| executed.get(id) == Some(&1)),
        "each run executed once: {executed:?}"
    );
    wrong
}

/// `host serve` paused (SIGSTOP) far past every heartbeat timeout and its
/// grace, then resumed: the worker was not silent, the server was absent.
/// No run is touched; all complete with the exit they really had.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_server_declares_nobody_crashed_when_it_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &["--worker-lost-after", "1"]);
    let url = server.url.as_str();
    let (_worker, ids) = runs_waiting_for_go(url, dir.path(), 5).await;
    signal(server.child.id(), libc::SIGSTOP);
    // Three missed 1 s heartbeats and the 1 s grace, three times over.
    std::thread::sleep(Duration::from_secs(12));
    signal(server.child.id(), libc::SIGCONT);
    // The sweep runs every second: give it a few before the flows finish.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut touched = 0;
    while Instant::now() < deadline {
        touched = 0;
        for id in &ids {
            let (_, run) = http("GET", &format!("{url}/api/flow-runs/{id}"), None, None).await;
            if run["state"]["name"] != "Running" {
                touched += 1;
            }
        }
        assert_eq!(touched, 0, "no run changed after the server's pause");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wrong = all_complete(url, dir.path(), &ids).await;
    println!(
        "server paused 12 s: {} runs, {touched} changed on resume, {wrong} not COMPLETED",
        ids.len()
    );
    assert_eq!(wrong, 0);
}

/// A worker paused past its heartbeat timeout: its runs are DISCONNECTED
/// (not final) while it is silent, back to RUNNING when it heartbeats
/// again, and end with what really happened.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_workers_runs_are_disconnected_then_report_their_real_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &["--worker-lost-after", "300"]);
    let url = server.url.as_str();
    let (worker, ids) = runs_waiting_for_go(url, dir.path(), 5).await;
    signal(worker.child.id(), libc::SIGSTOP);
    for id in &ids {
        let run = common::eventually(
            url,
            &format!("/api/flow-runs/{id}"),
            Duration::from_secs(30),
            |run| run["state"]["name"] == "Disconnected",
        )
        .await;
        assert_eq!(run["state"]["type"], "RUNNING", "not final: {run}");
    }
    signal(worker.child.id(), libc::SIGCONT);
    for id in &ids {
        common::eventually(
            url,
            &format!("/api/flow-runs/{id}"),
            Duration::from_secs(30),
            |run| run["state"]["name"] == "Running",
        )
        .await;
    }
    let wrong = all_complete(url, dir.path(), &ids).await;
    println!(
        "worker paused past its heartbeat timeout: {} runs disconnected, {wrong} not COMPLETED",
        ids.len()
    );
    assert_eq!(wrong, 0);
}

/// Past the grace, a silent worker's runs are CRASHED, saying why.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_silent_past_the_grace_has_its_runs_crashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), &["--worker-lost-after", "2"]);
    let url = server.url.as_str();
    let (mut worker, ids) = runs_waiting_for_go(url, dir.path(), 2).await;
    signal(worker.child.id(), libc::SIGSTOP);
    for id in &ids {
        let run = common::final_run(url, id, Duration::from_secs(30)).await;
        assert_eq!(run["state"]["type"], "CRASHED", "{run}");
        let message = run["state"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("within 2s"), "{run}");
        let history = run["history"].as_array().expect("history");
        assert!(
            history.iter().any(|s| s["name"] == "Disconnected"),
            "disconnected first: {run}"
        );
    }
    signal(worker.child.id(), libc::SIGCONT);
    worker.kill();
    // The flows outlive their worker (supervised): let them end, and see
    // them end before the temp dir (and `go` with it) is removed, or they
    // would wait for it for ever.
    std::fs::write(dir.path().join("go"), "").expect("go");
    let ledger = dir.path().join("ledger");
    let ended = common::wait_until(Duration::from_secs(30), || {
        executions(&ledger).len() == ids.len()
    })
    .await;
    assert!(
        ended,
        "the flows ended once told to: {:?}",
        executions(&ledger)
    );
}

/// `HOST_API_URL=A,B` with A paused (it accepts connections, answers
/// nothing): a read goes to B once A's deadline passes, instead of hanging;
/// a write that A may have received is not sent again to B, and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_server_in_the_url_list_is_skipped_after_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = ServerProcess::start(&dir.path().join("a"), &[]);
    let b = ServerProcess::start(&dir.path().join("b"), &[]);
    common::host_ok(
        &b.url,
        &["work-pool", "create", "--type", "process", "only-on-b"],
    );
    signal(a.child.id(), libc::SIGSTOP);
    let host = |args: &[&str]| {
        let started = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
            .args(args)
            .env("HOST_API_URL", format!("{},{}", a.url, b.url))
            .env("HOST_API_TIMEOUT", "2")
            .env_remove("HOST_API_TOKEN")
            .output()
            .expect("run host");
        (out, started.elapsed())
    };
    let (listed, took) = host(&["work-pool", "ls"]);
    let (created, _) = host(&["work-pool", "create", "--type", "process", "maybe"]);
    signal(a.child.id(), libc::SIGCONT);
    println!("work-pool ls with the first server paused: answered by the second in {took:?}");
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("only-on-b"),
        "{listed:?}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(!created.status.success(), "{created:?}");
    assert!(
        String::from_utf8_lossy(&created.stderr).contains("no answer within"),
        "{created:?}"
    );
    let (status, _) = b.get("/api/work-pools/maybe").await;
    assert_eq!(status, 404, "not written twice");
}

/// Which of two replicas leads: the one the other forwards its writes to.
async fn leader_of(servers: &[ServerProcess]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, server) in servers.iter().enumerate() {
            let health = format!("{}/api/health", servers[1 - i].url);
            let (_, health) = http("GET", &health, None, None).await;
            if health["writes_forwarded_to"].as_str() == Some(server.url.as_str()) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no replica leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A run acknowledged through the healthy replica, and when it was first
/// asked for.
struct Asked {
    id: String,
    at: Instant,
}

/// Asks for `count` runs of `f/count` through `url` alone, one after
/// another; an error (a 504: the outcome is unknown; a 503) is answered by
/// asking again, as a user would. Each run must be acknowledged within
/// `bound` of its first asking. Answers the runs and how many answers
/// were errors (their runs may or may not exist).
async fn ask_for_runs(url: &str, count: usize, bound: Duration) -> (Vec<Asked>, usize) {
    let mut asked = Vec::new();
    let mut errors = 0;
    for i in 0..count {
        let at = Instant::now();
        loop {
            let left = bound.saturating_sub(at.elapsed());
            assert!(
                !left.is_zero(),
                "run {i} through {url} not acknowledged within {bound:?} ({errors} errors so far)"
            );
            let client = host::client::Client::new(url, None).with_deadline(left);
            match client
                .post::<_, serde_json::Value>("/api/deployments/f/count/runs", &json!({}))
                .await
            {
                Ok(run) => {
                    let id = run["id"].as_str().expect("id").to_string();
                    asked.push(Asked { id, at });
                    break;
                }
                Err(error) => {
                    eprintln!("run {i}: {error}");
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    (asked, errors)
}

/// Waits for each run to be COMPLETED within `bound` of its first asking;
/// answers the longest it took.
async fn all_completed_within(url: &str, asked: &[Asked], bound: Duration) -> Duration {
    let mut longest = Duration::ZERO;
    for run in asked {
        let left = bound.saturating_sub(run.at.elapsed());
        let done = common::final_run(url, &run.id, left).await;
        assert_eq!(done["state"]["type"], "COMPLETED", "{done}");
        longest = longest.max(run.at.elapsed());
    }
    longest
}

/// Two replicas, `f/count` made through the follower, a worker polling the
/// follower only, and one run COMPLETED through it (so everybody learned
/// where writes go). Answers the worker.
async fn two_replicas_with_a_worker(
    servers: &[ServerProcess],
    leader: usize,
    dir: &std::path::Path,
) -> common::WorkerProcess {
    let follower = &servers[1 - leader].url;
    counting_deployment(follower, &dir.join("executed"));
    let worker = common::WorkerProcess::start(
        follower,
        &dir.join("worker/cache"),
        &["--pool", "shared", "--limit", "20", "--name", "w"],
    );
    let (first, _) = ask_for_runs(follower, 1, Duration::from_secs(10)).await;
    all_completed_within(follower, &first, Duration::from_secs(30)).await;
    worker
}

/// The CLI given both replicas, the sick one first, still answers: a read
/// goes on to the follower once the first one's deadline passed.
fn cli_lists_through_both(sick: &str, healthy: &str) -> Duration {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["work-pool", "ls"])
        .env("HOST_API_URL", format!("{sick},{healthy}"))
        .env("HOST_API_TIMEOUT", "2")
        .env_remove("HOST_API_TOKEN")
        .output()
        .expect("run host");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("shared"),
        "{out:?}"
    );
    started.elapsed()
}

/// Leader forwarding with the leader paused (SIGSTOP): the follower gives
/// up on it within seconds (its lead in the database goes stale, and a
/// relayed write has a deadline) and writes itself. Runs asked for through
/// the follower are acknowledged and COMPLETED within 10 s; once the
/// leader resumes, nothing acknowledged is lost and nothing ran twice.
#[tokio::test(flavor = "multi_thread")]
async fn writes_through_a_follower_go_on_while_the_leader_is_paused() {
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = replicas(cluster, dir.path(), 2);
    let leader = leader_of(&servers).await;
    let (a, b) = (&servers[leader], &servers[1 - leader]);
    let _worker = two_replicas_with_a_worker(&servers, leader, dir.path()).await;
    signal(a.child.id(), libc::SIGSTOP);
    let (asked, errors) = ask_for_runs(&b.url, 10, Duration::from_secs(10)).await;
    let longest = all_completed_within(&b.url, &asked, Duration::from_secs(10)).await;
    let (_, health) = b.get("/api/health").await;
    let listed = cli_lists_through_both(&a.url, &b.url);
    signal(a.child.id(), libc::SIGCONT);
    assert_eq!(health["writes"], "here", "{health}");
    let ids: Vec<String> = asked.iter().map(|run| run.id.clone()).collect();
    let counts = every_run_exactly_once(&b.url, &dir.path().join("executed"), &ids).await;
    println!(
        "leader paused: {} created through the follower ({errors} answers with an unknown outcome), all COMPLETED within {longest:?}; CLI read with the leader first in {listed:?}; after the resume: {counts}",
        asked.len()
    );
}

/// The leader cut off from PostgreSQL (a proxy black-holes its
/// connections): it gives up the lead and says so; the follower stops
/// forwarding to it and writes itself. Runs asked for through the follower
/// are acknowledged and COMPLETED within 10 s; the CLI given both replicas
/// (the cut one first) writes through the follower.
#[tokio::test(flavor = "multi_thread")]
async fn writes_through_a_follower_go_on_when_the_leader_loses_its_database() {
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = cluster.new_database();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], cluster.port));
    let proxy = common::proxy::Proxy::start(target).await;
    let a = ServerProcess::start_on_postgres(
        &proxy.url(&database, cluster.port),
        &dir.path().join("cache-a"),
        &[],
    );
    // A leads before B starts (`leading` is said by builds that know it).
    common::eventually(&a.url, "/api/health", Duration::from_secs(30), |h| {
        h.get("leading").is_none_or(|leading| leading == true)
    })
    .await;
    let b = ServerProcess::start_on_postgres(&database, &dir.path().join("cache-b"), &[]);
    let servers = [a, b];
    assert_eq!(leader_of(&servers).await, 0, "the proxied replica leads");
    let (a, b) = (&servers[0], &servers[1]);
    let _worker = two_replicas_with_a_worker(&servers, 0, dir.path()).await;
    proxy.cut();
    let (asked, errors) = ask_for_runs(&b.url, 10, Duration::from_secs(10)).await;
    let longest = all_completed_within(&b.url, &asked, Duration::from_secs(10)).await;
    let writes_here = common::eventually(&b.url, "/api/health", Duration::from_secs(10), |h| {
        h["writes"] == "here"
    })
    .await;
    let lost = common::eventually(&a.url, "/api/health", Duration::from_secs(10), |h| {
        h["database"] == "unreachable"
            && h["leading"] == false
            && h["status"] == "degraded"
            && h["writes"] == "refused"
    })
    .await;
    let listed = cli_lists_through_both(&a.url, &b.url);
    // A write through both, the cut one first: it says it wrote nothing,
    // and the follower makes it.
    let started = Instant::now();
    let created = common::host_ok(
        &format!("{},{}", a.url, b.url),
        &["deployment", "run", "f/count"],
    );
    let through_both = started.elapsed();
    let id = created
        .split(['(', ')'])
        .nth(1)
        .expect("run id")
        .to_string();
    let mut ids: Vec<String> = asked.iter().map(|run| run.id.clone()).collect();
    ids.push(id);
    let counts = every_run_exactly_once(&b.url, &dir.path().join("executed"), &ids).await;
    proxy.close_all();
    println!(
        "leader cut from PostgreSQL: {} created through the follower ({errors} answers with an unknown outcome), all COMPLETED within {longest:?}; follower: {writes_here}; cut replica: {lost}; CLI read with the cut replica first in {listed:?}, a write in {through_both:?}; {counts}",
        asked.len()
    );
}
