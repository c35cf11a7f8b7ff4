//! `host:infra/process`: local processes for the `process` plugin.
//!
//! Processes belong to the worker process, not to a plugin instance (each call
//! is a fresh instance), so they live in a [`ProcessTable`] shared by all calls.
//! Each runs in its own process group so a stop reaches its children too.

use crate::runtime::bindings::host::infra::process::{Host, OutputBatch, SpawnRequest, Spawned};
use crate::runtime::{ExitStatus, OutputStream};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::OUTPUT_BUFFER_LINES;
/// Finished processes whose exit stays answerable (`try-wait`, `inspect`).
/// Beyond this, the finished ones are forgotten when a new one starts.
const KEPT_FINISHED: usize = 1024;

struct Child {
    output: tokio::sync::Mutex<mpsc::Receiver<(OutputStream, String)>>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

/// Every process spawned through the capability in this host process.
pub struct ProcessTable {
    children: Mutex<HashMap<u32, Arc<Child>>>,
    /// Fresh working directories are made under here; `remove-dir` refuses
    /// anything outside it.
    temp_root: PathBuf,
    counter: AtomicU64,
}

impl ProcessTable {
    pub fn new() -> std::io::Result<Self> {
        Self::with_temp_root(std::env::temp_dir().join("host-runs"))
    }

    pub fn with_temp_root(temp_root: PathBuf) -> std::io::Result<Self> {
        Ok(ProcessTable {
            children: Mutex::new(HashMap::new()),
            temp_root,
            counter: AtomicU64::new(0),
        })
    }

    fn child(&self, pid: u32) -> Result<Arc<Child>, String> {
        self.children
            .lock()
            .map_err(|_| "process table poisoned".to_string())?
            .get(&pid)
            .cloned()
            .ok_or_else(|| format!("no process {pid} was started by this worker"))
    }

    fn fresh_dir(&self) -> std::io::Result<PathBuf> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .temp_root
            .join(format!("run-{}-{nanos:x}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, String> {
        let Some((program, args)) = request.argv.split_first() else {
            return Err("spawn: empty argv".into());
        };
        let cwd = match request.cwd {
            Some(dir) => PathBuf::from(dir),
            None => self
                .fresh_dir()
                .map_err(|e| format!("cannot create a working directory: {e}"))?,
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if !request.env.iter().any(|(k, _)| k == "PATH")
            && let Some(path) = std::env::var_os("PATH")
        {
            command.env("PATH", path);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {program:?} in {}: {e}", cwd.display()))?;
        let pid = child.id().ok_or("process exited before its pid was read")?;
        let (lines_tx, lines_rx) = mpsc::channel(OUTPUT_BUFFER_LINES);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward_lines(
                stdout,
                OutputStream::Stdout,
                lines_tx.clone(),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_lines(stderr, OutputStream::Stderr, lines_tx));
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => exit_status(status),
                Err(e) => ExitStatus {
                    code: None,
                    signal: None,
                    oom_killed: false,
                    message: format!("lost track of the process: {e}"),
                },
            };
            let _ = exit_tx.send(Some(status));
        });
        let entry = Arc::new(Child {
            output: tokio::sync::Mutex::new(lines_rx),
            exit: exit_rx,
        });
        let mut children = self
            .children
            .lock()
            .map_err(|_| "process table poisoned".to_string())?;
        if children.len() >= KEPT_FINISHED {
            children.retain(|_, child| child.exit.borrow().is_none());
        }
        children.insert(pid, entry);
        Ok(Spawned {
            pid,
            cwd: cwd.display().to_string(),
        })
    }

    async fn read_output(&self, pid: u32, max_wait_ms: u32) -> Result<OutputBatch, String> {
        let child = self.child(pid)?;
        let (lines, eof) = super::next_batch(&mut *child.output.lock().await, max_wait_ms).await;
        Ok(OutputBatch { lines, eof })
    }

    async fn wait(&self, pid: u32) -> Result<ExitStatus, String> {
        let mut exit = self.child(pid)?.exit.clone();
        let status = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| format!("lost track of process {pid}"))?;
        Ok(status.clone().unwrap_or_else(|| unreachable_exit(pid)))
    }

    fn try_wait(&self, pid: u32) -> Result<Option<ExitStatus>, String> {
        Ok(self.child(pid)?.exit.borrow().clone())
    }

    fn signal(&self, pid: u32, signal: i32) -> Result<(), String> {
        // Only our own children: a plugin must not signal arbitrary processes.
        let child = self.child(pid)?;
        if child.exit.borrow().is_some() {
            return Ok(());
        }
        signal_group(pid, signal)
    }

    fn remove_dir(&self, path: &str) -> Result<(), String> {
        let path = Path::new(path);
        let inside = path
            .canonicalize()
            .ok()
            .zip(self.temp_root.canonicalize().ok())
            .is_some_and(|(path, root)| path.starts_with(&root) && path != root);
        if !path.exists() {
            return Ok(());
        }
        if !inside {
            return Err(format!(
                "refusing to remove {}: not a directory made by spawn",
                path.display()
            ));
        }
        std::fs::remove_dir_all(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
    }
}

fn unreachable_exit(pid: u32) -> ExitStatus {
    ExitStatus {
        code: None,
        signal: None,
        oom_killed: false,
        message: format!("process {pid} status unknown"),
    }
}

#[allow(unsafe_code)]
fn signal_group(pid: u32, signal: i32) -> Result<(), String> {
    let pgid = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
    // SAFETY: kill(2) has no memory effects; a negative pid targets the group
    // the child leads (it was spawned with process_group(0)).
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(format!("cannot signal process group {pid}: {error}"))
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus {
            code: Some(code),
            signal: None,
            oom_killed: false,
            message: format!("exited with code {code}"),
        },
        (None, Some(signal)) => ExitStatus {
            code: None,
            signal: Some(signal),
            oom_killed: false,
            message: format!("killed by signal {signal}"),
        },
        (None, None) => ExitStatus {
            code: None,
            signal: None,
            oom_killed: false,
            message: "ended".into(),
        },
    }
}

async fn forward_lines(
    reader: impl AsyncRead + Unpin,
    stream: OutputStream,
    tx: mpsc::Sender<(OutputStream, String)>,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if tx.send((stream, line)).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Per-call view of the table, as the generated bindings want a `&mut` host.
pub struct ProcessHost {
    table: Arc<ProcessTable>,
}

impl ProcessHost {
    pub fn new(table: Arc<ProcessTable>) -> Self {
        ProcessHost { table }
    }
}

impl Host for ProcessHost {
    async fn spawn(&mut self, request: SpawnRequest) -> Result<Spawned, String> {
        self.table.spawn(request).await
    }
    async fn read_output(&mut self, pid: u32, max_wait_ms: u32) -> Result<OutputBatch, String> {
        self.table.read_output(pid, max_wait_ms).await
    }
    async fn wait(&mut self, pid: u32) -> Result<ExitStatus, String> {
        self.table.wait(pid).await
    }
    async fn try_wait(&mut self, pid: u32) -> Result<Option<ExitStatus>, String> {
        self.table.try_wait(pid)
    }
    async fn signal(&mut self, pid: u32, signal: i32) -> Result<(), String> {
        self.table.signal(pid, signal)
    }
    async fn remove_dir(&mut self, path: String) -> Result<(), String> {
        self.table.remove_dir(&path)
    }
}
