//! Host interfaces that plugins import, one file each. A plugin reaches the
//! outside world only through these, and only through those it was granted.

pub mod build_context;
mod container_runtime;
mod log;
mod process;

pub use container_runtime::{ContainerHost, ContainerPolicy, ContainerTable, SCOPE_LABEL};
pub use log::{
    CollectOutput, DiscardOutput, LogHost, MAX_LINE_BYTES, MessageBudgets, OutputSink,
    discard_output, truncate,
};
pub use process::{OutputLimits, ProcessHost, ProcessTable};

use crate::contract::OutputStream;
use std::time::Duration;
use tokio::sync::mpsc;

/// Lines buffered per container before its reader waits for the plugin to
/// drain them.
const OUTPUT_BUFFER_LINES: usize = 4096;
/// Lines returned by one `read-output` call at most.
const BATCH_LINES: usize = 1024;

type OutputLine = (OutputStream, String);

/// The lines waiting in `output` (blocking up to `max_wait_ms` for the first),
/// and whether the stream has ended: what a container's `read-output` answers.
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
