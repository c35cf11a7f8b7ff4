//! A real `ministack` (PyPI), the ECS-compatible AWS emulator that runs each
//! ECS task as a container on the local Docker daemon, started per test on a
//! free port in a temp dir and stopped (its containers removed) after.
//! Without it, or without Docker, the caller prints why it skips.

use super::WorkerProcess;
use super::docker;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Ministack {
    child: Child,
    pub port: u16,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Ministack {
    /// A fresh emulator, ready to answer; `None` (with the reason printed)
    /// when ministack or Docker is missing.
    pub fn start(test: &str) -> Option<Ministack> {
        docker::ready(test)?;
        let found = Command::new("sh")
            .args(["-c", "command -v ministack"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!(
                "SKIPPED {test}: no `ministack` on PATH; .ci/run installs it (pip install ministack)"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("ministack.log")).expect("log");
        let mut command = Command::new("ministack");
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .env("GATEWAY_PORT", port.to_string())
            .env("TMPDIR", dir.path())
            .env("SERVICES", "ecs,logs")
            // Listeners of their own on fixed ports: two emulators would clash.
            .env("IOT_MTLS_ENABLED", "0")
            .env("SFTP_ENABLED", "0")
            .env("LOG_LEVEL", "WARNING")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ministack");
        let ministack = Ministack {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ministack.healthy() {
            assert!(
                Instant::now() < deadline,
                "ministack did not come up on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(ministack)
    }

    fn healthy(&self) -> bool {
        Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                &format!("{}/_ministack/health", self.url),
            ])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The label ministack puts on the containers of this instance.
    fn instance_label(&self) -> String {
        format!("ministack.instance=vm:{}", self.port)
    }

    /// Ids of this emulator's task containers; `running` only the live ones.
    pub fn containers(&self, running: bool) -> Vec<String> {
        let filter = format!("label={}", self.instance_label());
        let mut args = vec!["ps", "-q", "--filter", &filter];
        if !running {
            args.push("-a");
        }
        docker::run(&args)
            .map(|out| {
                out.lines()
                    .map(String::from)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The environment a worker (or an AWS SDK) needs to use this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ]
    }

    /// `host worker start ARGS` with this emulator's AWS environment.
    pub fn worker(&self, api: &str, cache: &Path, args: &[&str]) -> WorkerProcess {
        self.worker_via(api, cache, args, &self.url)
    }

    /// The same, reaching the emulator through `endpoint` (a [`Front`]).
    pub fn worker_via(
        &self,
        api: &str,
        cache: &Path,
        args: &[&str],
        endpoint: &str,
    ) -> WorkerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_host"))
            .args([
                "worker",
                "start",
                "--heartbeat-interval-seconds",
                "1",
                "--poll-seconds",
                "1",
            ])
            .args(args)
            .env("HOST_API_URL", api)
            .env("HOST_CACHE_DIR", cache)
            .env("HOST_WORK_DIR", cache.with_file_name("work"))
            .env("HOST_LOG", "warn")
            .env_remove("HOST_API_TOKEN")
            .env_remove("AWS_PROFILE")
            .envs(self.env())
            .env("AWS_ENDPOINT_URL", endpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start host worker");
        WorkerProcess { child }
    }

    /// One ECS JSON 1.1 call straight to the emulator (no host in between).
    pub fn ecs(&self, operation: &str, body: &serde_json::Value) -> serde_json::Value {
        let out = Command::new("curl")
            .args([
                "-s",
                "-X",
                "POST",
                "-H",
                "content-type: application/x-amz-json-1.1",
                "-H",
                &format!("x-amz-target: AmazonEC2ContainerServiceV20141113.{operation}"),
                "--data-binary",
                &body.to_string(),
                &format!("{}/", self.url),
            ])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Ministack {
    fn drop(&mut self) {
        // Our own child's process group, by its id.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for id in self.containers(false) {
            let _ = docker::run(&["rm", "-f", &id]);
        }
    }
}

/// An HTTP front to the emulator that answers the next `fail_next(n)` calls
/// of one operation with a 503 (ServiceUnavailableException), as AWS does in
/// a blip, or passes the next `lose_next(n)` on and answers them with a 503
/// all the same (the answer lost on the way back), and passes everything
/// else on.
pub struct Front {
    pub url: String,
    state: Arc<FrontState>,
    server: tokio::task::JoinHandle<()>,
}

struct FrontState {
    target: String,
    operation: String,
    to_fail: AtomicU32,
    to_lose: AtomicU32,
    failed: AtomicU32,
    client: reqwest::Client,
}

impl Front {
    /// On a free loopback port, on the calling test's runtime.
    pub async fn start(target: &str, operation: &str) -> Front {
        let state = Arc::new(FrontState {
            target: format!("{target}/"),
            operation: format!(".{operation}"),
            to_fail: AtomicU32::new(0),
            to_lose: AtomicU32::new(0),
            failed: AtomicU32::new(0),
            client: super::web_client(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Front {
            url: format!("http://127.0.0.1:{port}"),
            state,
            server,
        }
    }

    pub fn fail_next(&self, calls: u32) {
        self.state.to_fail.store(calls, Ordering::SeqCst);
    }

    pub fn lose_next(&self, calls: u32) {
        self.state.to_lose.store(calls, Ordering::SeqCst);
    }

    /// The 503s answered so far.
    pub fn failed(&self) -> u32 {
        self.state.failed.load(Ordering::SeqCst)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(
    axum::extract::State(front): axum::extract::State<Arc<FrontState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let take = |counter: &AtomicU32| {
        target.ends_with(&front.operation)
            && counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    };
    let unavailable = || {
        front.failed.fetch_add(1, Ordering::SeqCst);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "application/x-amz-json-1.1")],
            r#"{"__type":"ServiceUnavailableException","message":"injected by the test's front"}"#,
        )
            .into_response()
    };
    if take(&front.to_fail) {
        return unavailable();
    }
    let lose = take(&front.to_lose);
    let mut request = front.client.post(&front.target).body(body.to_vec());
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let kind = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/x-amz-json-1.1")
                .to_string();
            let bytes = answer.bytes().await.unwrap_or_default();
            if lose {
                return unavailable();
            }
            (status, [("content-type", kind)], bytes).into_response()
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}
