//! Shared helpers for the end-to-end tests.

pub mod browser;
pub mod certs;
pub mod docker;
pub mod ledger;
pub mod ministack;
pub mod postgres;
pub mod proxy;

use host::runtime::{Runtime, RuntimeConfig};
use std::path::Path;
use std::time::{Duration, Instant};

/// Paths of the test guests and the SDK's examples (`tests/artifacts`).
pub use test_artifacts as guests;

/// A runtime with its own cache directory, so tests never share artifacts.
pub fn runtime(cache: &Path) -> Runtime {
    runtime_with(cache, RuntimeConfig::default().cpu_budget)
}

pub fn runtime_with(cache: &Path, cpu_budget: Duration) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        cpu_budget,
        memory_limit_bytes: 64 << 20,
        // Tests run in the test harness: process runs need the real binary.
        supervisor: Some(env!("CARGO_BIN_EXE_host").into()),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Which store a test server keeps its data in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redb,
    Postgres,
}

/// Defines each named `async fn name(backend: Backend)` as two tests, one
/// per store: `redb::name` and `postgres::name`. One body, two stores.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Redb).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::common::postgres::shared().is_none() {
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A control plane served in-process on a free loopback port.
pub struct TestServer {
    pub url: String,
    pub control: host::control::Control,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(None, host::control::ControlConfig::default()).await
    }

    pub async fn start_with(
        token: Option<&str>,
        config: host::control::ControlConfig,
    ) -> TestServer {
        Self::start_on(Backend::Redb, token, config).await
    }

    /// On PostgreSQL, each server gets a new database of the shared cluster.
    pub async fn start_on(
        backend: Backend,
        token: Option<&str>,
        config: host::control::ControlConfig,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime(&dir.path().join("cache"));
        let registry = host::plugins::Registry::load(&rt, None)
            .await
            .expect("built-ins");
        let store = match backend {
            Backend::Redb => {
                host::store::Store::open(&dir.path().join("host.redb")).expect("store")
            }
            Backend::Postgres => {
                let cluster = postgres::shared().expect("PostgreSQL installed");
                host::store::Store::connect(&cluster.new_database(), None)
                    .await
                    .expect("store")
            }
        };
        let control = host::control::Control::new(
            store,
            host::control::Catalog::from_registry(&registry),
            config,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let app = host::server::router(
            host::server::AppState::new(control.clone(), token.map(String::from))
                .bound_to(listener.local_addr().expect("addr")),
        );
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(host::server::serve(
            listener,
            app,
            host::server::Limits::default(),
            None,
            std::future::pending(),
        ));
        TestServer {
            url,
            control,
            dir,
            task,
        }
    }

    pub fn client(&self) -> host::client::Client {
        host::client::Client::new(&self.url, None)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests by path to a server's API, without a token: `server.get("/api/health")`.
/// Bodies are JSON text (a `json!` value or a raw string); the answer is the
/// status and the body parsed as JSON (or as a string when it is not JSON).
macro_rules! api_requests {
    ($server:ty) => {
        // Both server kinds get every verb; not every kind's tests use all.
        #[allow(dead_code)]
        impl $server {
            pub async fn request(
                &self,
                method: &str,
                path: &str,
                body: Option<&str>,
            ) -> (u16, serde_json::Value) {
                http(method, &format!("{}{path}", self.url), body, None).await
            }
            pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
                self.request("GET", path, None).await
            }
            pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
                self.request("DELETE", path, None).await
            }
            pub async fn post(
                &self,
                path: &str,
                body: impl std::fmt::Display,
            ) -> (u16, serde_json::Value) {
                self.request("POST", path, Some(&body.to_string())).await
            }
            pub async fn put(
                &self,
                path: &str,
                body: impl std::fmt::Display,
            ) -> (u16, serde_json::Value) {
                self.request("PUT", path, Some(&body.to_string())).await
            }
            pub async fn patch(
                &self,
                path: &str,
                body: impl std::fmt::Display,
            ) -> (u16, serde_json::Value) {
                self.request("PATCH", path, Some(&body.to_string())).await
            }
        }
    };
}
api_requests!(TestServer);
api_requests!(ServerProcess);

/// A plain reqwest client builder: reqwest takes its TLS provider from the
/// process, so this installs it first.
pub fn web_builder() -> reqwest::ClientBuilder {
    host::tls::install_default_provider();
    reqwest::Client::builder()
}

pub fn web_client() -> reqwest::Client {
    web_builder().build().expect("reqwest client")
}

/// Raw HTTP for status codes and bodies the typed client hides.
pub async fn http(
    method: &str,
    url: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let client = web_client();
    let mut request = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
        url,
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    // Status 0: nothing answered (the server is down or not up yet).
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return (0, serde_json::Value::String(error.to_string())),
    };
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// A real `host serve` process on a free port.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl ServerProcess {
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["--data-dir", data_dir.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Self::spawn(&args, &data_dir.join("cache"))
    }

    /// A replica on a shared PostgreSQL database.
    pub fn start_on_postgres(database_url: &str, cache: &Path, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["--database-url", database_url];
        args.extend_from_slice(extra);
        Self::spawn(&args, cache)
    }

    /// A server whose open-file limit (soft and hard) is `open_files`.
    pub fn start_with_open_files(data_dir: &Path, open_files: u64) -> ServerProcess {
        let mut command = std::process::Command::new("prlimit");
        command
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg(env!("CARGO_BIN_EXE_host"));
        let args = ["--data-dir", data_dir.to_str().expect("utf-8 path")];
        Self::launch(command, &args, &data_dir.join("cache"))
    }

    fn spawn(args: &[&str], cache: &Path) -> ServerProcess {
        Self::launch(
            std::process::Command::new(env!("CARGO_BIN_EXE_host")),
            args,
            cache,
        )
    }

    /// `command` (the host binary, or a wrapper of it) with `serve ARGS`.
    fn launch(mut command: std::process::Command, args: &[&str], cache: &Path) -> ServerProcess {
        use std::io::BufRead;
        let mut child = command
            .arg("serve")
            .args(if args.contains(&"--port") {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
            .args(args)
            .env("HOST_CACHE_DIR", cache)
            .env_remove("HOST_API_TOKEN")
            .env_remove("HOST_DATABASE_URL")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start host serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        ServerProcess { child, url }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the `host` binary against a server and returns (exit code, stdout, stderr).
pub fn host_cli(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .env("HOST_API_URL", url)
        .env_remove("HOST_API_TOKEN")
        .output()
        .expect("run host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A real `host worker start` process.
pub struct WorkerProcess {
    pub child: std::process::Child,
}

impl WorkerProcess {
    pub fn start(url: &str, cache: &Path, args: &[&str]) -> WorkerProcess {
        Self::start_logging(url, cache, args, std::process::Stdio::inherit())
    }

    /// A worker whose log (stderr) goes to `log`.
    pub fn start_logging_to(url: &str, cache: &Path, args: &[&str], log: &Path) -> WorkerProcess {
        let file = std::fs::File::create(log).expect("worker log");
        Self::start_logging(url, cache, args, file.into())
    }

    fn start_logging(
        url: &str,
        cache: &Path,
        args: &[&str],
        stderr: std::process::Stdio,
    ) -> WorkerProcess {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
            .args([
                "worker",
                "start",
                "--heartbeat-interval-seconds",
                "1",
                "--poll-seconds",
                "5",
            ])
            .args(args)
            .env("HOST_API_URL", url)
            .env("HOST_CACHE_DIR", cache)
            // Process runs live beside the cache, inside the test's temp dir.
            .env("HOST_WORK_DIR", cache.with_file_name("work"))
            .env("HOST_LOG", "warn")
            .env_remove("HOST_API_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start host worker");
        WorkerProcess { child }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    #[allow(unsafe_code)]
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.child.wait().expect("wait")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls the API until `check` holds for the JSON at `path`, or panics after `timeout`.
pub async fn eventually(
    url: &str,
    path: &str,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, value) = http("GET", &format!("{url}{path}"), None, None).await;
        if status == 200 && check(&value) {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting on {path}: last answer {status} {value}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// States of all runs of a deployment, by id.
pub async fn run_states(url: &str, deployment: &str) -> Vec<(String, String)> {
    let mut states = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("{url}/api/flow-runs?limit=1000&deployment={deployment}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", c.replace('\0', "%00")));
        }
        let (_, page) = http("GET", &path, None, None).await;
        for run in page["runs"].as_array().into_iter().flatten() {
            states.push((
                run["id"].as_str().unwrap_or("").to_string(),
                run["state"]["type"].as_str().unwrap_or("").to_string(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) if page["runs"].as_array().is_some_and(|r| r.len() == 1000) => {
                cursor = Some(next.to_string())
            }
            _ => return states,
        }
    }
}

/// Runs the `host` binary and returns its stdout, failing the test on a non-zero exit.
pub fn host_ok(url: &str, args: &[&str]) -> String {
    let (code, out, err) = host_cli(url, args);
    assert_eq!(code, 0, "host {args:?} failed: {out}{err}");
    out
}

/// Creates a run of `deployment` (FLOW/NAME) through the API; returns its id.
pub async fn create_run(url: &str, deployment: &str, body: serde_json::Value) -> String {
    let path = format!("{url}/api/deployments/{deployment}/runs");
    let (status, run) = http("POST", &path, Some(&body.to_string()), None).await;
    assert_eq!(status, 201, "{run}");
    run["id"].as_str().expect("id").to_string()
}

/// The run once it is in one of `states`; panics after `timeout`.
pub async fn run_in_state(
    url: &str,
    id: &str,
    states: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    eventually(url, &format!("/api/flow-runs/{id}"), timeout, |r| {
        states.contains(&r["state"]["type"].as_str().unwrap_or(""))
    })
    .await
}

/// The run once it reached a terminal state; panics after `timeout`.
pub async fn final_run(url: &str, id: &str, timeout: Duration) -> serde_json::Value {
    run_in_state(
        url,
        id,
        &["COMPLETED", "FAILED", "CRASHED", "CANCELLED"],
        timeout,
    )
    .await
}

/// Every log line of a run (as JSON), read page by page.
pub async fn all_log_lines(url: &str, id: &str) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let from = after.map_or(String::new(), |seq| format!("&after={seq}"));
        let (_, page) = http(
            "GET",
            &format!("{url}/api/flow-runs/{id}/logs?limit=1000{from}"),
            None,
            None,
        )
        .await;
        let batch = page["lines"].as_array().cloned().unwrap_or_default();
        let Some(last) = batch.last() else {
            return lines;
        };
        after = last["seq"].as_u64();
        lines.extend(batch);
    }
}

/// The messages of a run's log lines.
pub async fn run_logs(url: &str, id: &str) -> Vec<String> {
    all_log_lines(url, id)
        .await
        .iter()
        .filter_map(|l| l["message"].as_str().map(String::from))
        .collect()
}

/// Whether a process still runs (a zombie does not).
pub fn process_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

/// Stores `count` SCHEDULED runs of `deployment` straight through the
/// control plane, 64 at a time (commits are grouped).
pub async fn store_runs(control: &host::control::Control, deployment: &str, count: usize) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let remaining = Arc::new(AtomicUsize::new(count));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (control, remaining) = (control.clone(), remaining.clone());
        let deployment = deployment.to_string();
        tasks.push(tokio::spawn(async move {
            while remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                control
                    .create_run(&deployment, Default::default())
                    .await
                    .expect("create");
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
}

/// A `process` pool `pool` and a deployment `name` on it running `sh -c script`.
pub fn process_deployment(url: &str, pool: &str, name: &str, script: &str) {
    host_ok(url, &["work-pool", "create", "--type", "process", pool]);
    host_ok(
        url,
        &[
            "deployment",
            "create",
            name,
            "--pool",
            pool,
            "--",
            "sh",
            "-c",
            script,
        ],
    );
}

/// The pid a flow wrote into `file`, once it did.
pub async fn pid_in(file: &Path, timeout: Duration) -> i32 {
    let mut pid = None;
    wait_until(timeout, || {
        pid = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap_or_else(|| panic!("no pid in {}", file.display()))
}

/// A job for run `run` of a plugin, with only its `configuration`.
pub fn job(run: &str, configuration: serde_json::Value) -> host::runtime::Job {
    host::runtime::Job {
        flow_run_id: run.into(),
        flow_run_name: "attack".into(),
        configuration: configuration.to_string(),
        env: vec![],
        command: vec![],
        labels: vec![],
    }
}
