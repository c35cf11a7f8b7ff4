//! A container's output, followed from where it was last read and cut into
//! lines of bounded length while it is read.
//!
//! Docker gives a log only by time (`since`, whole seconds through its API),
//! so where reading stopped is kept as a mark per stream: the timestamp
//! Docker gave the last frame read (nanoseconds) and how many frames of that
//! stream carried the same one. A read starts a second before the oldest
//! mark and skips the frames up to it: neither repeats nor gaps, as long as
//! Docker's timestamps do not go back within a stream. The mark of a line is
//! saved when `read-output` hands the line to the plugin, under the worker's
//! directory, so a restarted worker goes on from there.

use super::ContainerTable;
use crate::capabilities::MAX_LINE_BYTES;
use crate::contract::OutputStream;
use crate::contract::host::infra::container_runtime::OutputBatch;
use crate::lines::LineCutter;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Lines buffered per container before its reader waits for the plugin to
/// drain them.
const BUFFER_LINES: usize = 4096;
/// Lines returned by one `read-output` call at most.
const BATCH_LINES: usize = 1024;
/// Room left in a cut line for its marker, so the log capability's own cut at
/// `MAX_LINE_BYTES` never hides how much was dropped.
const MARKER_ROOM: usize = 64;

/// A line, and where reading resumes once it was handed over.
type Item = (OutputStream, String, Resume);

/// One container's output follow.
#[derive(Clone)]
pub(super) struct Follow {
    scope: String,
    lines: Arc<tokio::sync::Mutex<mpsc::Receiver<Item>>>,
}

/// A frame of one stream: Docker's timestamp for it, and how many frames of
/// that stream up to it carried the same timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    secs: i64,
    nanos: u32,
    n: u32,
}

impl Mark {
    fn at(&self) -> (i64, u32) {
        (self.secs, self.nanos)
    }
}

/// Where reading a container's output resumes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Resume {
    /// The `since` to ask Docker for (Unix seconds).
    since: i64,
    /// The last frame of stdout and of stderr whose lines were all read.
    marks: [Option<Mark>; 2],
}

/// The lines waiting for the plugin (blocking up to `max_wait_ms` for the
/// first), and whether the output has ended.
pub(super) async fn read(
    table: &ContainerTable,
    scope: &str,
    id: &str,
    max_wait_ms: u32,
) -> Result<OutputBatch, String> {
    let follow = table.follow(scope, id)?;
    let mut receiver = follow.lines.lock().await;
    let (items, eof) = next_batch(&mut receiver, max_wait_ms).await;
    if let Some((_, _, resume)) = items.last() {
        table.save_position(scope, id, resume);
    }
    drop(receiver);
    if eof && let Ok(mut follows) = table.follows.lock() {
        follows.remove(id);
    }
    Ok(OutputBatch {
        lines: items.into_iter().map(|(s, l, _)| (s, l)).collect(),
        eof,
    })
}

async fn next_batch(output: &mut mpsc::Receiver<Item>, max_wait_ms: u32) -> (Vec<Item>, bool) {
    let mut items = Vec::new();
    match tokio::time::timeout(Duration::from_millis(max_wait_ms.into()), output.recv()).await {
        Err(_elapsed) => return (items, false),
        Ok(None) => return (items, true),
        Ok(Some(item)) => items.push(item),
    }
    while items.len() < BATCH_LINES {
        match output.try_recv() {
            Ok(item) => items.push(item),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return (items, true),
        }
    }
    (items, false)
}

impl ContainerTable {
    fn follow(&self, scope: &str, id: &str) -> Result<Follow, String> {
        let mut follows = self
            .follows
            .lock()
            .map_err(|_| "output table poisoned".to_string())?;
        if let Some(existing) = follows.get(id) {
            return Ok(existing.clone());
        }
        let docker = self.docker()?.clone();
        let (tx, rx) = mpsc::channel(BUFFER_LINES);
        let reader = Reader::new(self.load_position(scope, id));
        tokio::spawn(reader.run(docker, id.to_string(), tx));
        let follow = Follow {
            scope: scope.to_string(),
            lines: Arc::new(tokio::sync::Mutex::new(rx)),
        };
        follows.insert(id.to_string(), follow.clone());
        Ok(follow)
    }

    /// Drops `scope`'s follows (their readers end at their next line) and
    /// the positions kept for it.
    pub(super) fn forget_output(&self, scope: &str, ids: &[String]) {
        if let Ok(mut follows) = self.follows.lock() {
            follows.retain(|id, follow| follow.scope != scope && !ids.contains(id));
        }
        if let Some(dir) = self.scope_positions(scope) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "cannot remove the output positions")
                }
            }
        }
    }

    fn scope_positions(&self, scope: &str) -> Option<PathBuf> {
        // A run's id is the plugin's word: hashed, it is a plain file name.
        let digest = Sha256::digest(scope.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Some(self.positions.as_ref()?.join(name))
    }

    fn position_file(&self, scope: &str, id: &str) -> Option<PathBuf> {
        // Ids only: a name is no file name.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.scope_positions(scope)?.join(format!("{id}.json")))
    }

    fn load_position(&self, scope: &str, id: &str) -> Resume {
        let Some(file) = self.position_file(scope, id) else {
            return Resume::default();
        };
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %file.display(), %error, "unreadable output position: reading from the start");
                Resume::default()
            }),
            Err(_) => Resume::default(),
        }
    }

    fn save_position(&self, scope: &str, id: &str, resume: &Resume) {
        let Some(file) = self.position_file(scope, id) else {
            return;
        };
        let written = (|| {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let next = file.with_extension("json.next");
            std::fs::write(&next, serde_json::to_vec(resume)?)?;
            std::fs::rename(&next, &file)
        })();
        if let Err(error) = written {
            tracing::warn!(file = %file.display(), %error, "cannot keep the output position");
        }
    }
}

/// What has been read of one stream.
struct StreamState {
    cutter: LineCutter,
    /// The last frame fed into the cutter.
    seen: Option<Mark>,
    /// The last frame whose lines were all sent.
    sent: Option<Mark>,
    /// The second of the first frame of the line in progress.
    pending_since: Option<i64>,
}

/// Reads one container's output into its channel.
struct Reader {
    streams: [StreamState; 2],
    /// The second of the last frame read, of either stream.
    latest: Option<i64>,
    /// Where the saved position said to start.
    base_since: i64,
}

impl Reader {
    fn new(resume: Resume) -> Self {
        let stream = |mark: Option<Mark>| StreamState {
            cutter: LineCutter::new(MAX_LINE_BYTES - MARKER_ROOM),
            seen: mark,
            sent: mark,
            pending_since: None,
        };
        Reader {
            streams: [stream(resume.marks[0]), stream(resume.marks[1])],
            latest: None,
            base_since: resume.since,
        }
    }

    /// A second before the oldest frame `of` a stream may still need (a
    /// stream with nothing read yet needs what follows the last frame of
    /// either, give or take the order the two were written in).
    fn since(&self, of: impl Fn(&StreamState) -> Option<i64>) -> i64 {
        let oldest = self
            .streams
            .iter()
            .map(|s| of(s).or(self.latest).unwrap_or(self.base_since))
            .min()
            .unwrap_or(0);
        (oldest - 1).max(0)
    }

    fn resume(&self) -> Resume {
        Resume {
            since: self.since(|s| s.pending_since.or(s.sent.map(|m| m.secs))),
            marks: [self.streams[0].sent, self.streams[1].sent],
        }
    }

    async fn run(mut self, docker: Docker, id: String, tx: mpsc::Sender<Item>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.pass(&docker, &id, true, &tx).await.is_err() {
                return;
            }
            let running = match docker.inspect_container(&id, None).await {
                Ok(details) => details.state.and_then(|s| s.running).unwrap_or(false),
                Err(_) => false,
            };
            if !running {
                break;
            }
            // The follow broke off while the container runs: follow again
            // from where it stopped.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        // Docker's follow can end before the daemon has written a last line
        // without a newline (`printf x`, about one time in three): once the
        // container has stopped, what is still missing is in its log.
        if self.pass(&docker, &id, false, &tx).await.is_err() {
            return;
        }
        for (index, kind) in [(0, OutputStream::Stdout), (1, OutputStream::Stderr)] {
            let state = &mut self.streams[index];
            if let Some(line) = state.cutter.finish() {
                state.sent = state.seen;
                state.pending_since = None;
                let resume = self.resume();
                let line = String::from_utf8_lossy(&line).into_owned();
                if tx.send((kind, line, resume)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Reads the log once (following it, or what is there), skipping what was
    /// read before. Err: nobody reads the lines any more.
    async fn pass(
        &mut self,
        docker: &Docker,
        id: &str,
        follow: bool,
        tx: &mpsc::Sender<Item>,
    ) -> Result<(), ()> {
        let since = self.since(|s| s.seen.map(|m| m.secs));
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            since: i32::try_from(since).unwrap_or(0),
            tail: "all".into(),
            ..Default::default()
        };
        // Per stream: the last frame read before, and how many frames with
        // its timestamp this pass has met.
        let mut skip = [
            self.streams[0].seen.map(|m| (m, 0)),
            self.streams[1].seen.map(|m| (m, 0)),
        ];
        let mut frames = docker.logs(id, Some(options));
        while let Some(Ok(frame)) = frames.next().await {
            let (index, bytes) = match frame {
                LogOutput::StdOut { message } | LogOutput::Console { message } => (0, message),
                LogOutput::StdErr { message } => (1, message),
                LogOutput::StdIn { .. } => continue,
            };
            let (stamp, content) = split_stamp(&bytes);
            if let (Some(at), Some((mark, met))) = (stamp, &mut skip[index]) {
                if at < mark.at() {
                    continue;
                }
                if at == mark.at() {
                    *met += 1;
                    if *met <= mark.n {
                        continue;
                    }
                }
            }
            skip[index] = None;
            self.consume(index, stamp, content, tx).await?;
        }
        Ok(())
    }

    async fn consume(
        &mut self,
        index: usize,
        stamp: Option<(i64, u32)>,
        content: &[u8],
        tx: &mpsc::Sender<Item>,
    ) -> Result<(), ()> {
        let before = self.resume();
        if let Some((secs, _)) = stamp {
            self.latest = Some(secs);
        }
        let state = &mut self.streams[index];
        if let Some((secs, nanos)) = stamp {
            state.seen = Some(match state.seen {
                Some(mark) if mark.at() == (secs, nanos) => Mark {
                    n: mark.n + 1,
                    ..mark
                },
                _ => Mark { secs, nanos, n: 1 },
            });
        }
        let was_pending = state.cutter.has_pending();
        let mut lines = Vec::new();
        state.cutter.push(content, |line| lines.push(line));
        if !state.cutter.has_pending() {
            state.sent = state.seen;
            state.pending_since = None;
        } else if !was_pending || !lines.is_empty() {
            state.pending_since = stamp.map(|(secs, _)| secs).or(self.latest);
        }
        let after = self.resume();
        let kind = if index == 0 {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.into_iter().enumerate() {
            // Only the frame's last line completes it.
            let resume = if i == last { after } else { before };
            let line = String::from_utf8_lossy(&line).into_owned();
            tx.send((kind, line, resume)).await.map_err(|_| ())?;
        }
        Ok(())
    }
}

/// A frame asked `timestamps`: Docker's RFC 3339 time, a space, the output.
fn split_stamp(frame: &[u8]) -> (Option<(i64, u32)>, &[u8]) {
    let Some(space) = frame.iter().take(64).position(|b| *b == b' ') else {
        return (None, frame);
    };
    let stamp = std::str::from_utf8(&frame[..space])
        .ok()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    match stamp {
        Some(at) => (
            Some((at.timestamp(), at.timestamp_subsec_nanos())),
            &frame[space + 1..],
        ),
        None => (None, frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_timestamp_is_split_from_its_output() {
        let (at, rest) = split_stamp(b"2026-12-06T07:17:08.020322929Z x");
        assert_eq!(at, Some((1_796_541_428, 20_322_929)));
        assert_eq!(rest, b"x");
        assert_eq!(split_stamp(b"no stamp here"), (None, &b"no stamp here"[..]));
    }
}
