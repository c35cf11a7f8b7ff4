//! A real `ministack` (PyPI), the ECS-compatible AWS emulator that runs each
//! ECS task as a container on the local Docker daemon, started per test on a
//! free port in a temp dir and stopped (its containers removed) after.
//! Without it, or without Docker, the caller prints why it skips.

use super::WorkerProcess;
use super::docker;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
            eprintln!("SKIPPED {test}: no `ministack` on PATH; .ci/run installs it (pip install ministack)");
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
            .args(["-sf", "-o", "/dev/null", &format!("{}/_ministack/health", self.url)])
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
            .map(|out| out.lines().map(String::from).filter(|l| !l.is_empty()).collect())
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
        let child = Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["worker", "start", "--heartbeat-interval-seconds", "1", "--poll-seconds", "1"])
            .args(args)
            .env("HOST_API_URL", api)
            .env("HOST_CACHE_DIR", cache)
            .env("HOST_WORK_DIR", cache.with_file_name("work"))
            .env("HOST_LOG", "warn")
            .env_remove("HOST_API_TOKEN")
            .env_remove("AWS_PROFILE")
            .envs(self.env())
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
