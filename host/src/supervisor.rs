//! The supervisor of one process run: `host __supervise DIR`, the `host`
//! binary re-executed in a session of its own (as Nomad runs an executor per
//! task). It holds the child, writes its output and exit into DIR, and
//! outlives the worker that started it, so a restarted worker re-attaches to a
//! process run as it does to a container.
//!
//! DIR and the supervisor's stdin and stdout are the whole protocol between
//! the supervisor and the `process` capability ([`RunFiles`] names the files):
//! - `spec.json`: what to run, written by the capability before the start;
//! - `key`: the run's key, kept by the capability for after a restart;
//! - `supervisor.pid`, `child.pid`;
//! - `output`: one record per line: `o` or `e`, the line, `\n`;
//! - `exit.json`: the exit and its MAC under the run's key, renamed into
//!   place after the last output record;
//! - `read`: how far the capability has read `output`, so a restarted worker
//!   neither repeats nor skips lines;
//! - `released`: made by the capability when it let go of the run before
//!   the supervisor said it started (a cancel during `start`): the
//!   supervisor then kills what it started instead of running it.
//!
//! The capability writes the run's key in hex on the supervisor's stdin,
//! which the workload never inherits (its stdin is /dev/null). The
//! supervisor's stdout tells the capability how the start went, in one
//! line: `started PID` or `failed MESSAGE`.
//!
//! DIR is not the workload's working directory nor beside it, and its name
//! holds a random part: a workload finds no record by walking up from where
//! it runs. One running as the worker's own user can still search for them
//! and read the key; `host worker start --run-as USER` runs it as another
//! user, to whom DIR is closed ([`RunAs`]).
//!
//! The whole tree is the run's, not only the first process: the supervisor
//! is a child subreaper (as tini and systemd are), so every orphaned
//! descendant, in whatever group or session, becomes its child. When the
//! main process exits it kills every descendant left and says so in the
//! exit's message; the capability signals the whole tree
//! ([`descendants`]) for a stop. A run is over only when nothing of it runs.
//!
//! Of its worker the supervisor keeps only stdin and stdout: descriptors
//! the worker inherited (a lock, a socket) are closed first thing, so
//! neither the supervisor nor the workload holds them past the worker.

use crate::secret;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};

/// The hidden subcommand that runs [`main`].
pub const SUBCOMMAND: &str = "__supervise";

/// What to run, and for which flow run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The flow run the process belongs to: only calls for it may touch it.
    pub scope: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// True when `cwd` was made for this process (so it may be removed).
    pub made_cwd: bool,
    /// Longer lines are cut there, with a marker saying how much was cut.
    pub max_line_bytes: usize,
    /// Output kept at most; past it one notice is written and the rest dropped.
    pub max_output_bytes: u64,
    /// The user the workload runs as; the supervisor's own when `None`.
    #[serde(default)]
    pub run_as: Option<RunAs>,
}

/// Another user for workloads (`host worker start --run-as USER`): the
/// supervisor, as the worker's user, keeps its records where that user
/// cannot reach them and starts the workload with that user's ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl RunAs {
    /// The user named `user` in the password database.
    #[allow(unsafe_code)]
    pub fn lookup(user: &str) -> Result<RunAs, String> {
        let name =
            std::ffi::CString::new(user).map_err(|_| format!("{user:?}: not a user name"))?;
        // SAFETY: passwd is plain data (integers and pointers): all zeros
        // is a valid value, overwritten by getpwnam_r.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buffer = vec![0 as libc::c_char; 16 << 10];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r writes only into `entry`, `buffer` (whose
        // length it is given) and `found`; the strings it points `entry`
        // at live in `buffer`, read below while it is alive.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if rc != 0 || found.is_null() {
            return Err(format!("{user:?}: no such user"));
        }
        // SAFETY: pw_dir points into `buffer`, NUL-terminated by getpwnam_r.
        let home = unsafe { std::ffi::CStr::from_ptr(entry.pw_dir) };
        Ok(RunAs {
            user: user.to_string(),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home: PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(home.to_bytes()),
            ),
        })
    }
}

/// How the process ended, as written to `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub message: String,
}

/// The files of one supervised process.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunFiles { dir: dir.into() }
    }
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    pub fn output(&self) -> PathBuf {
        self.dir.join("output")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn read_offset(&self) -> PathBuf {
        self.dir.join("read")
    }
    pub fn child_pid(&self) -> PathBuf {
        self.dir.join("child.pid")
    }
    pub fn supervisor_pid(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key")
    }
    pub fn released(&self) -> PathBuf {
        self.dir.join("released")
    }

    pub fn read_spec(&self) -> std::io::Result<Spec> {
        let text = std::fs::read(self.spec())?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// The exit, if its supervisor wrote it: a record without the MAC of
    /// the run's `key` is not believed, whoever wrote it.
    pub fn read_exit(&self, key: &[u8; 32]) -> Option<RecordedExit> {
        let text = std::fs::read(self.exit()).ok()?;
        let signed: SignedExit = serde_json::from_slice(&text).ok()?;
        let mac = secret::from_hex(&signed.mac)?;
        secret::same(&mac, &exit_mac(key, &signed.exit)).then_some(signed.exit)
    }

    /// Whether something is at `exit.json` that [`RunFiles::read_exit`]
    /// does not believe.
    pub fn has_unsigned_exit(&self, key: &[u8; 32]) -> bool {
        self.exit().exists() && self.read_exit(key).is_none()
    }

    pub fn read_pid(path: &Path) -> Option<i32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Written whole or not at all: readers never see half an exit.
    fn write_exit(&self, exit: &RecordedExit, key: &[u8; 32]) -> std::io::Result<()> {
        let signed = SignedExit {
            exit: exit.clone(),
            mac: secret::to_hex(&exit_mac(key, exit)),
        };
        let partial = self.dir.join("exit.json.partial");
        std::fs::write(
            &partial,
            serde_json::to_vec(&signed).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(partial, self.exit())
    }
}

/// `exit.json`: the exit and its MAC under the run's key.
#[derive(Serialize, Deserialize)]
struct SignedExit {
    exit: RecordedExit,
    mac: String,
}

fn exit_mac(key: &[u8; 32], exit: &RecordedExit) -> [u8; 32] {
    let text = serde_json::to_vec(exit).unwrap_or_default();
    secret::hmac_sha256(key, &text)
}

/// The run's key, the first line of the supervisor's stdin.
fn read_key() -> Option<[u8; 32]> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).ok()?;
    secret::from_hex(&line)
}

/// `host __supervise DIR`.
pub fn main(dir: &Path) -> ExitCode {
    close_inherited_descriptors();
    leave_session();
    become_subreaper();
    let Some(key) = read_key() else {
        return announce_failure("no key on stdin");
    };
    let files = RunFiles::new(dir);
    let spec = match files.read_spec() {
        Ok(spec) => spec,
        Err(e) => return announce_failure(&format!("cannot read {}: {e}", files.spec().display())),
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return announce_failure("spawn: empty argv");
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    if let Some(user) = &spec.run_as {
        // Its supplementary groups go too: std drops them when root sets a uid.
        std::os::unix::process::CommandExt::uid(&mut command, user.uid);
        std::os::unix::process::CommandExt::gid(&mut command, user.gid);
        let home = user.home.to_string_lossy();
        for (name, value) in [
            ("USER", user.user.as_str()),
            ("LOGNAME", user.user.as_str()),
            ("HOME", home.as_ref()),
        ] {
            if !spec.env.iter().any(|(k, _)| k == name) {
                command.env(name, value);
            }
        }
    }
    if !spec.env.iter().any(|(k, _)| k == "PATH")
        && let Some(path) = std::env::var_os("PATH")
    {
        command.env("PATH", path);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return announce_failure(&format!(
                "cannot start {program:?} in {}: {e}",
                spec.cwd.display()
            ));
        }
    };
    let pid = child.id();
    let written = std::fs::write(files.child_pid(), pid.to_string())
        .and_then(|()| std::fs::write(files.supervisor_pid(), std::process::id().to_string()));
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.output());
    let output = match (written, output) {
        (Ok(()), Ok(output)) => output,
        (Err(e), _) | (_, Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            return announce_failure(&format!("cannot write to {}: {e}", dir.display()));
        }
    };
    if files.released().exists() {
        // Let go of before it started: nothing of it may run.
        let _ = child.kill();
        let _ = child.wait();
        end_tree();
        return announce_failure("the run was released before its process started");
    }
    println!("started {pid}");
    let _ = std::io::stdout().flush();
    std::thread::spawn(move || reap_orphans(pid as i32));

    let sink = Arc::new(Mutex::new(OutputFile {
        file: output,
        written: 0,
        limit: spec.max_output_bytes,
        dropped_lines: 0,
        closed: false,
    }));
    let streams = [
        child
            .stdout
            .take()
            .map(|s| (b'o', Box::new(s) as Box<dyn Read + Send>)),
        child
            .stderr
            .take()
            .map(|s| (b'e', Box::new(s) as Box<dyn Read + Send>)),
    ];
    let forwarders: Vec<_> = streams
        .into_iter()
        .flatten()
        .map(|(tag, stream)| {
            let sink = sink.clone();
            let max_line = spec.max_line_bytes;
            std::thread::spawn(move || forward(stream, tag, &sink, max_line))
        })
        .collect();
    let mut exit = match child.wait() {
        Ok(status) => recorded_exit(status),
        Err(e) => RecordedExit {
            code: None,
            signal: None,
            message: format!("lost track of the process: {e}"),
        },
    };
    let killed = end_tree();
    if !killed.is_empty() {
        exit.message = format!(
            "{}; killed what it left running: {}",
            exit.message,
            killed.join(", ")
        );
    }
    // Every writer of the pipes is gone now, so the forwarders reach their
    // end; one that does not within the bound is cut off, so no record
    // lands after the exit.
    let deadline = std::time::Instant::now() + FORWARDERS_BOUND;
    for forwarder in forwarders {
        while !forwarder.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    if let Ok(mut sink) = sink.lock() {
        sink.finish();
        sink.closed = true;
    }
    match files.write_exit(&exit, &key) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn announce_failure(message: &str) -> ExitCode {
    println!("failed {}", message.replace('\n', " "));
    let _ = std::io::stdout().flush();
    ExitCode::FAILURE
}

/// Descriptors past stdio are whatever the worker inherited without
/// close-on-exec (a build tool's `flock` lock, a socket of whoever started
/// it), never the run's: a supervisor outlives its worker, and holding them
/// kept that lock for as long as the run went on, and passed it to the
/// workload.
#[allow(unsafe_code)]
fn close_inherited_descriptors() {
    // SAFETY: called first in `main`, before this process opens anything
    // (no runtime, no logging): every descriptor past 2 is inherited and
    // unused here, so closing them invalidates nothing it holds. A kernel
    // without close_range (before 5.9) leaves them, as before.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

/// A session of its own: the worker's terminal, its process group and its
/// death do not reach the supervisor.
fn leave_session() {
    // Fails harmlessly (EPERM) when this process already leads a group.
    let _ = rustix::process::setsid();
}

/// How long the output forwarders may take to drain after the tree ended.
const FORWARDERS_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Orphans re-parented here while the main process runs are reaped as they
/// end (the main process itself is `Child::wait`'s), so a flow that leaves
/// many short-lived orphans does not fill the process table with zombies.
fn reap_orphans(main: i32) {
    let me = std::process::id() as i32;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        for (pid, parent, zombie) in processes() {
            if parent == me && zombie && pid != main {
                reap(pid);
            }
        }
    }
}

fn reap(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
    }
}

/// Every process: (pid, parent pid, whether it is a zombie), from /proc.
fn processes() -> Vec<(i32, i32, bool)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command name, which may itself hold spaces and ')'.
            let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
            let state = rest.next()?;
            let parent = rest.next()?.parse().ok()?;
            Some((pid, parent, state == "Z"))
        })
        .collect()
}

/// The live (not zombie) descendants of `root`, whatever group or session
/// they moved to: under a subreaper, that is everything the run started.
pub fn descendants(root: i32) -> Vec<i32> {
    let all = processes();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, zombie) in &all {
            if ppid == parent && pid != root {
                frontier.push(pid);
                if !zombie {
                    found.push(pid);
                }
            }
        }
    }
    found
}

/// Sends `signal` to every live descendant of `root`.
pub fn signal_tree(root: i32, signal: i32) {
    signal_all(&descendants(root), signal);
}

/// The pids are descendants as /proc listed them a moment ago.
fn signal_all(pids: &[i32], signal: i32) {
    let Some(signal) = rustix::process::Signal::from_named_raw(signal) else {
        return;
    };
    for pid in pids
        .iter()
        .filter_map(|&pid| rustix::process::Pid::from_raw(pid))
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Kills every descendant of this supervisor and reaps them; what was
/// killed (`pid name`). Killing a process hands its children to us, so it
/// goes on until none is left (or, for one that cannot die, 5 seconds).
fn end_tree() -> Vec<String> {
    let me = std::process::id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut killed = Vec::new();
    loop {
        let left = descendants(me);
        for &pid in &left {
            if !killed.iter().any(|(p, _)| *p == pid) {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|n| n.trim().to_string())
                    .unwrap_or_default();
                killed.push((pid, name));
            }
        }
        signal_all(&left, libc::SIGKILL);
        reap_all();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed
        .into_iter()
        .map(|(pid, name)| format!("pid {pid} {name}"))
        .collect()
}

/// Any of our children; the main child was already waited for.
fn reap_all() {
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
}

/// A child subreaper: orphaned descendants are re-parented to this process,
/// not to init, so it can find and end them all.
fn become_subreaper() {
    // rustix passes the pid as prctl's flag: any pid sets it, `None` clears it.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
}

struct OutputFile {
    file: File,
    written: u64,
    limit: u64,
    dropped_lines: u64,
    /// Set once the exit is about to be written: later records are dropped.
    closed: bool,
}

impl OutputFile {
    fn record(&mut self, tag: u8, line: &[u8]) {
        if self.closed {
            return;
        }
        let size = line.len() as u64 + 2;
        if self.written + size > self.limit {
            self.dropped_lines += 1;
            return;
        }
        let mut record = Vec::with_capacity(line.len() + 2);
        record.push(tag);
        record.extend_from_slice(line);
        record.push(b'\n');
        // One write per record: a reader never sees half of one but at the end.
        if self.file.write_all(&record).is_ok() {
            self.written += size;
        }
    }

    fn finish(&mut self) {
        if self.dropped_lines > 0 {
            let notice = format!(
                "[output limit of {} bytes reached: {} more lines were not kept]",
                self.limit, self.dropped_lines
            );
            let mut record = vec![b'e'];
            record.extend_from_slice(notice.as_bytes());
            record.push(b'\n');
            let _ = self.file.write_all(&record);
        }
    }
}

/// Copies one stream into the output file line by line, cutting lines longer
/// than `max_line` while reading, so one endless line cannot take the memory
/// of anyone.
fn forward(mut stream: impl Read, tag: u8, sink: &Mutex<OutputFile>, max_line: usize) {
    let mut cutter = crate::lines::LineCutter::new(max_line);
    let mut buffer = vec![0u8; 64 << 10];
    let record = |line: Vec<u8>| {
        if let Ok(mut sink) = sink.lock() {
            sink.record(tag, &line);
        }
    };
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => cutter.push(&buffer[..read], &record),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if let Some(line) = cutter.finish() {
        record(line);
    }
}

fn recorded_exit(status: std::process::ExitStatus) -> RecordedExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => RecordedExit {
            code: Some(code),
            signal: None,
            message: format!("exited with code {code}"),
        },
        (None, Some(signal)) => RecordedExit {
            code: None,
            signal: Some(signal),
            message: format!("killed by signal {signal}"),
        },
        (None, None) => RecordedExit {
            code: None,
            signal: None,
            message: "ended".into(),
        },
    }
}
