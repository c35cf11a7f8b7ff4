//! The table of every process this worker spawned.
//!
//! Each process is held by a supervisor (`host __supervise`, see
//! [`crate::supervisor`]) that writes its output and exit into a directory
//! under this worker's root, and outlives the worker. So the table is a cache
//! of what is on disk: a restarted worker finds a process again by its id.
//!
//! The root holds two trees, so a workload's working directory is never
//! under or beside its supervisor's records:
//! - `records/ID.RANDOM/`: the supervisor's files (0700);
//! - `work/ID/`: working directories made for a spawn (the workload's,
//!   owned by the `--run-as` user when there is one).
//!
//! Every call is for one flow run (its scope) and sees only the processes and
//! directories spawned for that run.

use crate::contract::host::infra::process::{OutputBatch, SpawnRequest, Spawned};
use crate::contract::{ExitStatus, OutputStream};
use crate::secret;
use crate::supervisor::{RecordedExit, RunAs, RunFiles, Spec};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

/// Bytes of output one `read-output` returns at most.
const BATCH_BYTES: usize = 256 << 10;
/// How long a supervisor may take to say it started the process.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a re-attached `wait` looks for the exit.
const ADOPTED_POLL: Duration = Duration::from_millis(50);

/// Limits on what a process may leave in its output.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    pub max_line_bytes: usize,
    pub max_output_bytes: u64,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            max_line_bytes: 16 << 10,
            max_output_bytes: 64 << 20,
        }
    }
}

struct Proc {
    id: u64,
    scope: String,
    files: RunFiles,
    child_pid: i32,
    supervisor_pid: i32,
    cwd: PathBuf,
    made_cwd: bool,
    /// Authenticates the supervisor's exit record.
    key: [u8; 32],
    /// Set when this worker started the supervisor: turns true once it exited.
    /// After a restart the supervisor is someone else's child: see
    /// `supervisor_alive`.
    supervisor_exited: Option<watch::Receiver<bool>>,
    /// Bytes of `output` read so far.
    read: tokio::sync::Mutex<u64>,
}

impl Proc {
    fn exit(&self) -> Option<RecordedExit> {
        self.files.read_exit(&self.key)
    }

    fn supervisor_alive(&self) -> bool {
        match &self.supervisor_exited {
            Some(exited) => !*exited.borrow(),
            None => process_runs(self.supervisor_pid, &self.files.dir),
        }
    }

    fn lost(&self) -> String {
        // Nothing may run on unowned: kill what the supervisor held.
        let _ = signal_group(self.child_pid, libc::SIGKILL);
        if self.files.has_unsigned_exit(&self.key) {
            return format!(
                "the exit record of process {} (pid {}) was not written by its supervisor; its outcome is unknown",
                self.id, self.child_pid
            );
        }
        format!(
            "the supervisor of process {} (pid {}) was killed before it ended; its outcome is unknown",
            self.id, self.child_pid
        )
    }

    /// The exit once recorded; `Err` when it never will be.
    fn try_exit(&self) -> Result<Option<RecordedExit>, String> {
        if let Some(exit) = self.exit() {
            return Ok(Some(exit));
        }
        if self.supervisor_alive() {
            return Ok(None);
        }
        // It may have written the exit just before it ended.
        match self.exit() {
            Some(exit) => Ok(Some(exit)),
            None => Err(self.lost()),
        }
    }

    async fn supervisor_ended(&self) {
        match &self.supervisor_exited {
            Some(exited) => {
                let _ = exited.clone().wait_for(|e| *e).await;
            }
            None => {
                while process_runs(self.supervisor_pid, &self.files.dir) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("process {} (pid {})", self.id, self.child_pid)
    }

    /// Sends `signal` to everything of the run: the supervisor's whole tree
    /// while it lives (every process the run started, in any group), the
    /// first process's group otherwise.
    fn signal_all(&self, signal: i32) -> Result<(), String> {
        if self.supervisor_alive() {
            crate::supervisor::signal_tree(self.supervisor_pid, signal);
            return Ok(());
        }
        signal_group(self.child_pid, signal)
    }

    /// SIGKILLs the whole tree if it still runs and waits (briefly) for
    /// the supervisor to record the end; true when it was running.
    async fn kill_if_running(&self) -> bool {
        if !matches!(self.try_exit(), Ok(None)) {
            return false;
        }
        let _ = self.signal_all(libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.supervisor_ended()).await;
        true
    }
}

/// Is `pid` alive and the supervisor of `dir` (not a reused pid)?
fn process_runs(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let dir = dir.as_os_str().as_encoded_bytes();
    cmdline.windows(dir.len()).any(|w| w == dir)
}

/// Every process spawned through the capability by this worker, past and present.
pub struct ProcessTable {
    /// This worker's own directory: one subdirectory per process.
    root: PathBuf,
    /// The program re-executed as the supervisor (the `host` binary).
    supervisor: PathBuf,
    limits: OutputLimits,
    run_as: Option<RunAs>,
    procs: Mutex<HashMap<u64, Arc<Proc>>>,
    last_id: Mutex<u64>,
}

impl ProcessTable {
    pub fn new(
        root: PathBuf,
        supervisor: PathBuf,
        limits: OutputLimits,
        run_as: Option<RunAs>,
    ) -> Self {
        ProcessTable {
            root,
            supervisor,
            limits,
            run_as,
            procs: Mutex::new(HashMap::new()),
            last_id: Mutex::new(0),
        }
    }

    fn records(&self) -> PathBuf {
        self.root.join("records")
    }

    fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Makes the root's two trees. With `--run-as`, the workload's user
    /// must reach `work/` (search permission on every directory above it)
    /// and nothing else: an error names the directory it cannot pass.
    pub fn prepare(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let shared = if self.run_as.is_some() { 0o711 } else { 0o700 };
        let made = make_dir(&self.root, shared)
            .and_then(|()| make_dir(&self.records(), 0o700))
            .and_then(|()| make_dir(&self.work(), shared));
        made.map_err(|e| format!("cannot prepare {}: {e}", self.root.display()))?;
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        for dir in self.work().ancestors() {
            let mode = std::fs::metadata(dir).map_or(0, |m| m.permissions().mode());
            if mode & 0o001 == 0 {
                return Err(format!(
                    "--run-as {}: the user cannot reach {} (mode {:o}): give others search permission (chmod o+x) or choose another --work-dir",
                    user.user,
                    dir.display(),
                    mode & 0o7777
                ));
            }
        }
        Ok(())
    }

    /// Nanoseconds since the epoch, strictly increasing: unique in this
    /// worker's root across restarts too.
    fn next_id(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut last = self.last_id.lock().unwrap_or_else(|p| p.into_inner());
        *last = now.max(*last + 1);
        *last
    }

    /// A process of `scope`, from memory or, after a restart, from disk.
    fn get(&self, scope: &str, id: u64) -> Result<Arc<Proc>, String> {
        let missing = || format!("no process {id} was spawned for this flow run");
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| "process table poisoned".to_string())?;
        if let Some(proc) = procs.get(&id) {
            return if proc.scope == scope {
                Ok(proc.clone())
            } else {
                Err(missing())
            };
        }
        let files = self.records_of(id).ok_or_else(missing)?;
        let spec = files.read_spec().map_err(|_| missing())?;
        if spec.scope != scope {
            return Err(missing());
        }
        let key = std::fs::read_to_string(files.key())
            .ok()
            .and_then(|text| secret::from_hex(&text))
            .ok_or_else(missing)?;
        let (Some(child_pid), Some(supervisor_pid)) = (
            RunFiles::read_pid(&files.child_pid()),
            RunFiles::read_pid(&files.supervisor_pid()),
        ) else {
            return Err(missing());
        };
        let read = std::fs::read_to_string(files.read_offset())
            .ok()
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or(0);
        let proc = Arc::new(Proc {
            id,
            scope: spec.scope,
            files,
            child_pid,
            supervisor_pid,
            cwd: spec.cwd,
            made_cwd: spec.made_cwd,
            key,
            supervisor_exited: None,
            read: tokio::sync::Mutex::new(read),
        });
        procs.insert(id, proc.clone());
        Ok(proc)
    }

    /// The processes of `scope` this worker knows, in memory or on disk.
    /// A `spawn` whose future was dropped (a cancel during `start`) left a
    /// directory but no table entry: it is found here too. One whose
    /// supervisor has not yet said which process it started is marked
    /// released, and the supervisor kills what it started (see
    /// `crate::supervisor`).
    fn of_scope(&self, scope: &str) -> Vec<Arc<Proc>> {
        for (id, files, spec) in self.on_disk() {
            if spec.scope == scope && self.get(scope, id).is_err() {
                let _ = std::fs::write(files.released(), "");
                // It may have said "started" meanwhile: then `get` loads it.
                let _ = self.get(scope, id);
            }
        }
        self.procs
            .lock()
            .map(|procs| {
                procs
                    .values()
                    .filter(|p| p.scope == scope)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every flow run that has processes in this worker's directory, from
    /// before a restart too: for reconciling them with the server.
    pub fn scopes_on_disk(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .on_disk()
            .into_iter()
            .map(|(_, _, spec)| spec.scope)
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// The supervisors' directories, with what each was spawned as.
    fn on_disk(&self) -> Vec<(u64, RunFiles, Spec)> {
        self.record_dirs()
            .into_iter()
            .filter_map(|(id, files)| Some((id, files.clone(), files.read_spec().ok()?)))
            .collect()
    }

    /// The directories under `records/`, named `ID.RANDOM`.
    fn record_dirs(&self) -> Vec<(u64, RunFiles)> {
        let Ok(entries) = std::fs::read_dir(self.records()) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                let id = name.to_str()?.split_once('.')?.0.parse().ok()?;
                Some((id, RunFiles::new(self.records().join(name))))
            })
            .collect()
    }

    fn records_of(&self, id: u64) -> Option<RunFiles> {
        self.record_dirs()
            .into_iter()
            .find_map(|(found, files)| (found == id).then_some(files))
    }

    pub(super) async fn spawn(
        &self,
        scope: &str,
        request: SpawnRequest,
    ) -> Result<Spawned, String> {
        if request.argv.is_empty() {
            return Err("spawn: empty argv".into());
        }
        self.prepare()?;
        let id = self.next_id();
        let key = secret::random_key();
        let files = RunFiles::new(self.records().join(format!(
            "{id}.{}",
            &secret::to_hex(&secret::random_key())[..16]
        )));
        let (cwd, made_cwd) = match request.cwd {
            Some(dir) => (PathBuf::from(dir), false),
            None => (self.work().join(id.to_string()), true),
        };
        let spec = Spec {
            scope: scope.to_string(),
            argv: request.argv,
            env: request.env,
            cwd: cwd.clone(),
            made_cwd,
            max_line_bytes: self.limits.max_line_bytes,
            max_output_bytes: self.limits.max_output_bytes,
            run_as: self.run_as.clone(),
        };
        let prepared = make_dir(&files.dir, 0o700)
            .and_then(|()| {
                if made_cwd {
                    self.make_work_dir(&cwd)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| write_private(&files.key(), secret::to_hex(&key).as_bytes()))
            .and_then(|()| {
                let text = serde_json::to_vec(&spec).map_err(std::io::Error::other)?;
                std::fs::write(files.spec(), text)
            });
        let forget = || {
            let _ = std::fs::remove_dir_all(&files.dir);
            if made_cwd {
                let _ = std::fs::remove_dir_all(&cwd);
            }
        };
        if let Err(e) = prepared {
            forget();
            return Err(format!("cannot prepare {}: {e}", files.dir.display()));
        }
        let started = self.start_supervisor(&files, &key).await;
        let (child_pid, supervisor_pid, exited) = match started {
            Ok(started) => started,
            Err(e) => {
                forget();
                return Err(e);
            }
        };
        let proc = Arc::new(Proc {
            id,
            scope: scope.to_string(),
            files,
            child_pid,
            supervisor_pid,
            cwd: cwd.clone(),
            made_cwd,
            key,
            supervisor_exited: Some(exited),
            read: tokio::sync::Mutex::new(0),
        });
        self.procs
            .lock()
            .map_err(|_| "process table poisoned".to_string())?
            .insert(id, proc);
        Ok(Spawned {
            id,
            pid: child_pid as u32,
            cwd: cwd.display().to_string(),
        })
    }

    /// A fresh working directory, the workload's user's own.
    fn make_work_dir(&self, dir: &Path) -> std::io::Result<()> {
        make_dir(dir, 0o700)?;
        match &self.run_as {
            Some(user) => std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)),
            None => Ok(()),
        }
    }

    /// Starts `host __supervise DIR`, hands it the run's key and reads how
    /// the start went.
    async fn start_supervisor(
        &self,
        files: &RunFiles,
        key: &[u8; 32],
    ) -> Result<(i32, i32, watch::Receiver<bool>), String> {
        use tokio::io::AsyncWriteExt;
        let mut supervisor = tokio::process::Command::new(&self.supervisor)
            .arg(crate::supervisor::SUBCOMMAND)
            .arg(&files.dir)
            // The worker's credentials are not the run's (the supervisor's
            // environment is readable by the workload's user).
            .env_remove("HOST_API_TOKEN")
            .env_remove("HOST_API_TOKEN_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start the process supervisor {}: {e}",
                    self.supervisor.display()
                )
            })?;
        let supervisor_pid = supervisor.id().map_or(0, |p| p as i32);
        if let Some(mut stdin) = supervisor.stdin.take() {
            // Closed when dropped: the supervisor reads one line.
            let line = format!("{}\n", secret::to_hex(key));
            let _ = stdin.write_all(line.as_bytes()).await;
        }
        let mut first = String::new();
        if let Some(stdout) = supervisor.stdout.take() {
            let mut stdout = tokio::io::BufReader::new(stdout);
            let _ = tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut first)).await;
        }
        let (exited_tx, exited) = watch::channel(false);
        // Reaped here, so it never lingers as a zombie.
        tokio::spawn(async move {
            let _ = supervisor.wait().await;
            let _ = exited_tx.send(true);
        });
        let first = first.trim();
        if let Some(pid) = first.strip_prefix("started ") {
            let child_pid = pid
                .parse()
                .map_err(|_| format!("the process supervisor said {first:?}"))?;
            return Ok((child_pid, supervisor_pid, exited));
        }
        if let Some(message) = first.strip_prefix("failed ") {
            return Err(message.to_string());
        }
        Err(format!(
            "the process supervisor did not start the process (it said {first:?})"
        ))
    }

    pub(super) async fn read_output(
        &self,
        scope: &str,
        id: u64,
        max_wait_ms: u32,
    ) -> Result<OutputBatch, String> {
        let proc = self.get(scope, id)?;
        let mut read = proc.read.lock().await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms.into());
        let mut pause = Duration::from_millis(1);
        loop {
            // Looked at before reading: every record is written before the exit.
            let exited = proc.exit().is_some();
            let lines = read_records(&proc.files.output(), &mut read)
                .map_err(|e| format!("cannot read the output of process {id}: {e}"))?;
            if !lines.is_empty() {
                let _ = std::fs::write(proc.files.read_offset(), read.to_string());
                return Ok(OutputBatch { lines, eof: false });
            }
            if exited {
                return Ok(OutputBatch { lines, eof: true });
            }
            if !proc.supervisor_alive() && proc.exit().is_none() {
                return Err(proc.lost());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(OutputBatch { lines, eof: false });
            }
            let nap = pause.min(deadline - now);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = proc.supervisor_ended() => {}
            }
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    pub(super) async fn wait(&self, scope: &str, id: u64) -> Result<ExitStatus, String> {
        let proc = self.get(scope, id)?;
        loop {
            if let Some(exit) = proc.try_exit()? {
                return Ok(exit_status(exit));
            }
            tokio::select! {
                _ = proc.supervisor_ended() => {}
                _ = tokio::time::sleep(ADOPTED_POLL) => {}
            }
        }
    }

    pub(super) fn try_wait(&self, scope: &str, id: u64) -> Result<Option<ExitStatus>, String> {
        Ok(self.get(scope, id)?.try_exit()?.map(exit_status))
    }

    pub(super) fn signal(&self, scope: &str, id: u64, signal: i32) -> Result<(), String> {
        let proc = self.get(scope, id)?;
        // Once the exit is written the supervisor has ended the whole tree.
        if proc.exit().is_some() {
            return Ok(());
        }
        proc.signal_all(signal)
    }

    pub(super) fn remove_dir(&self, scope: &str, path: &str) -> Result<(), String> {
        let refuse = || {
            format!("refusing to remove {path}: not a working directory spawned for this flow run")
        };
        // A directory made by spawn is ROOT/work/ID.
        let path = Path::new(path);
        let id = path
            .strip_prefix(self.work())
            .ok()
            .and_then(|rest| rest.components().next())
            .and_then(|first| first.as_os_str().to_str()?.parse::<u64>().ok())
            .ok_or_else(refuse)?;
        let proc = self.get(scope, id).map_err(|_| refuse())?;
        if !proc.made_cwd || proc.cwd != path {
            return Err(refuse());
        }
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    /// What of `scope` still runs.
    pub fn running(&self, scope: &str) -> Vec<String> {
        self.of_scope(scope)
            .iter()
            .filter(|p| matches!(p.try_exit(), Ok(None)))
            .map(|p| p.describe())
            .collect()
    }

    /// Kills what of `scope` still runs (the plugin's `stop` left it), and
    /// says what that was. The records stay, for `destroy` and `release`.
    pub async fn kill(&self, scope: &str) -> Vec<String> {
        let mut killed = Vec::new();
        for proc in self.of_scope(scope) {
            if proc.kill_if_running().await {
                killed.push(format!("{} killed", proc.describe()));
            }
        }
        killed
    }

    /// Forgets `scope`, after its `destroy`: kills what still runs, removes the
    /// supervisors' files, and says what the plugin had left behind.
    pub async fn release(&self, scope: &str) -> Vec<String> {
        let mut left = Vec::new();
        for proc in self.of_scope(scope) {
            if proc.kill_if_running().await {
                left.push(format!("{} was still running: killed", proc.describe()));
            }
            if proc.made_cwd && proc.cwd.exists() {
                let removed = match std::fs::remove_dir_all(&proc.cwd) {
                    Ok(()) => "removed".to_string(),
                    Err(e) => format!("cannot remove it: {e}"),
                };
                left.push(format!(
                    "working directory {} was left behind: {removed}",
                    proc.cwd.display()
                ));
            }
            let _ = std::fs::remove_dir_all(&proc.files.dir);
            if let Ok(mut procs) = self.procs.lock() {
                procs.remove(&proc.id);
            }
        }
        left
    }
}

/// Makes `dir` (and what is missing above it) and gives it `mode`, also
/// when it was there already.
fn make_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// A file only its owner may read.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents)
}

/// Complete records of `output` after `offset` (moved past them), up to
/// [`BATCH_BYTES`].
fn read_records(path: &Path, offset: &mut u64) -> std::io::Result<Vec<(OutputStream, String)>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(*offset))?;
    let mut buffer = Vec::new();
    file.take(BATCH_BYTES as u64).read_to_end(&mut buffer)?;
    let mut lines = Vec::new();
    let mut consumed = 0;
    while let Some(end) = buffer[consumed..].iter().position(|b| *b == b'\n') {
        let record = &buffer[consumed..consumed + end];
        consumed += end + 1;
        let Some((tag, line)) = record.split_first() else {
            continue;
        };
        let stream = if *tag == b'e' {
            OutputStream::Stderr
        } else {
            OutputStream::Stdout
        };
        lines.push((stream, String::from_utf8_lossy(line).into_owned()));
    }
    *offset += consumed as u64;
    Ok(lines)
}

/// Signals the group the child leads (the supervisor starts it with
/// `process_group(0)`); a group already gone is no error.
fn signal_group(pid: i32, signal: i32) -> Result<(), String> {
    let group = rustix::process::Pid::from_raw(pid)
        .filter(|_| pid > 1)
        .ok_or_else(|| format!("refusing to signal pid {pid}"))?;
    let signal = rustix::process::Signal::from_named_raw(signal)
        .ok_or_else(|| format!("cannot signal process group {pid}: unknown signal {signal}"))?;
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(error) => Err(format!("cannot signal process group {pid}: {error}")),
    }
}

fn exit_status(exit: RecordedExit) -> ExitStatus {
    ExitStatus {
        code: exit.code,
        signal: exit.signal,
        oom_killed: false,
        message: exit.message,
    }
}
