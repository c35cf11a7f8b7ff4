//! Host interfaces that plugins import, one file each. A plugin reaches the
//! outside world only through these, and only through those it was granted.

mod container_runtime;
mod log;
mod process;

pub use container_runtime::{ContainerHost, ContainerTable};
pub use log::{CollectOutput, DiscardOutput, LogHost, OutputSink, discard_output};
pub use process::{ProcessHost, ProcessTable};

use crate::runtime::OutputStream;
use std::time::Duration;
use tokio::sync::mpsc;

/// Lines buffered per process or container before its reader waits for the
/// plugin to drain them.
const OUTPUT_BUFFER_LINES: usize = 4096;
/// Lines returned by one `read-output` call at most.
const BATCH_LINES: usize = 1024;

type OutputLine = (OutputStream, String);

/// The lines waiting in `output` (blocking up to `max_wait_ms` for the first),
/// and whether the stream has ended: what `read-output` answers for a process
/// and for a container alike.
async fn next_batch(
    output: &mut mpsc::Receiver<OutputLine>,
    max_wait_ms: u32,
) -> (Vec<OutputLine>, bool) {
    let mut lines = Vec::new();
    match tokio::time::timeout(Duration::from_millis(max_wait_ms.into()), output.recv()).await {
        Err(_elapsed) => return (lines, false),
        Ok(None) => return (lines, true),
        Ok(Some(line)) => lines.push(line),
    }
    while lines.len() < BATCH_LINES {
        match output.try_recv() {
            Ok(line) => lines.push(line),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return (lines, true),
        }
    }
    (lines, false)
}
