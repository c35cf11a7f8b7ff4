//! The supervisor of one process run: `host __supervise DIR`, the `host`
//! binary re-executed in a session of its own (as Nomad runs an executor per
//! task). It holds the child, writes its output and exit into DIR, and
//! outlives the worker that started it, so a restarted worker re-attaches to a
//! process run as it does to a container.
//!
//! DIR is the whole protocol between the supervisor and the `process`
//! capability ([`RunFiles`] names its files):
//! - `spec.json`: what to run, written by the capability before the start;
//! - `supervisor.pid`, `child.pid`;
//! - `output`: one record per line: `o` or `e`, the line, `\n`;
//! - `exit.json`: the exit, renamed into place after the last output record;
//! - `read`: how far the capability has read `output`, so a restarted worker
//!   neither repeats nor skips lines;
//! - `work/`: the working directory, when the plugin asked for a fresh one.
//!
//! Its stdout tells the capability how the start went, in one line:
//! `started PID` or `failed MESSAGE`.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;

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
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Every file of the protocol (not `work/`, which belongs to the run).
    pub fn state_files(&self) -> [PathBuf; 6] {
        [
            self.spec(),
            self.output(),
            self.exit(),
            self.read_offset(),
            self.child_pid(),
            self.supervisor_pid(),
        ]
    }

    pub fn read_spec(&self) -> std::io::Result<Spec> {
        let text = std::fs::read(self.spec())?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    pub fn read_exit(&self) -> Option<RecordedExit> {
        let text = std::fs::read(self.exit()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn read_pid(path: &Path) -> Option<i32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Written whole or not at all: readers never see half an exit.
    fn write_exit(&self, exit: &RecordedExit) -> std::io::Result<()> {
        let partial = self.dir.join("exit.json.partial");
        std::fs::write(
            &partial,
            serde_json::to_vec(exit).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(partial, self.exit())
    }
}

/// `host __supervise DIR`.
pub fn main(dir: &Path) -> ExitCode {
    leave_session();
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
    println!("started {pid}");
    let _ = std::io::stdout().flush();

    let sink = Mutex::new(OutputFile {
        file: output,
        written: 0,
        limit: spec.max_output_bytes,
        dropped_lines: 0,
    });
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
    std::thread::scope(|scope| {
        for (tag, stream) in streams.into_iter().flatten() {
            let sink = &sink;
            scope.spawn(move || forward(stream, tag, sink, spec.max_line_bytes));
        }
    });
    if let Ok(mut sink) = sink.into_inner() {
        sink.finish();
    }
    let exit = match child.wait() {
        Ok(status) => recorded_exit(status),
        Err(e) => RecordedExit {
            code: None,
            signal: None,
            message: format!("lost track of the process: {e}"),
        },
    };
    match files.write_exit(&exit) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn announce_failure(message: &str) -> ExitCode {
    println!("failed {}", message.replace('\n', " "));
    let _ = std::io::stdout().flush();
    ExitCode::FAILURE
}

/// A session of its own: the worker's terminal, its process group and its
/// death do not reach the supervisor.
#[allow(unsafe_code)]
fn leave_session() {
    // SAFETY: setsid(2) has no memory effects; it fails harmlessly (EPERM)
    // when this process already leads a group.
    unsafe {
        libc::setsid();
    }
}

struct OutputFile {
    file: File,
    written: u64,
    limit: u64,
    dropped_lines: u64,
}

impl OutputFile {
    fn record(&mut self, tag: u8, line: &[u8]) {
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
/// than `max_line` so one endless line cannot take the memory of anyone.
fn forward(stream: impl Read, tag: u8, sink: &Mutex<OutputFile>, max_line: usize) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut line = Vec::new();
    let mut cut = 0usize;
    let emit = |line: &mut Vec<u8>, cut: &mut usize| {
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        if *cut > 0 {
            line.extend_from_slice(format!(" …[line truncated: {cut} more bytes]").as_bytes());
        }
        if let Ok(mut sink) = sink.lock() {
            sink.record(tag, line);
        }
        line.clear();
        *cut = 0;
    };
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if buffer.is_empty() {
            if !line.is_empty() || cut > 0 {
                emit(&mut line, &mut cut);
            }
            break;
        }
        let (chunk, consumed, complete) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (&buffer[..end], end + 1, true),
            None => (buffer, buffer.len(), false),
        };
        let room = max_line.saturating_sub(line.len()).min(chunk.len());
        line.extend_from_slice(&chunk[..room]);
        cut += chunk.len() - room;
        reader.consume(consumed);
        if complete {
            emit(&mut line, &mut cut);
        }
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
