//! `host:infra/log`: plugin diagnostics go to tracing; workload output goes to
//! the sink of the call (the flow run's log stream for `wait`).

use crate::contract::OutputStream;
use crate::contract::host::infra::log::{Host, Level};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Receives a workload's output lines during `wait`.
pub trait OutputSink: Send + Sync {
    fn line(&self, stream: OutputStream, line: String);

    /// Resolves when the sink can take more lines: how a flood of output
    /// slows the plugin down instead of filling memory.
    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

/// For calls that should not produce output.
pub struct DiscardOutput;

impl OutputSink for DiscardOutput {
    fn line(&self, _stream: OutputStream, _line: String) {}
}

pub fn discard_output() -> Arc<dyn OutputSink> {
    Arc::new(DiscardOutput)
}

/// Keeps the first [`CollectOutput::KEPT`] lines and counts the rest, for
/// `host plugin test` and tests.
#[derive(Default)]
pub struct CollectOutput {
    lines: Mutex<Vec<(OutputStream, String)>>,
    beyond: std::sync::atomic::AtomicU64,
}

impl CollectOutput {
    /// Enough for any check; 1,000 lines of at most 16 KiB stay small.
    pub const KEPT: usize = 1_000;

    pub fn lines(&self) -> Vec<(OutputStream, String)> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Lines received past the ones kept.
    pub fn beyond(&self) -> u64 {
        self.beyond.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl OutputSink for CollectOutput {
    fn line(&self, stream: OutputStream, line: String) {
        if let Ok(mut lines) = self.lines.lock()
            && lines.len() < Self::KEPT
        {
            lines.push((stream, line));
            return;
        }
        self.beyond
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A log line or message longer than this is cut, with a marker: a plugin
/// cannot make the worker hold or ship megabytes per line.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// `text` cut to at most `max` bytes (on a character boundary), saying how
/// much was cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" …[truncated {cut} bytes]"));
    text
}

pub struct LogHost {
    plugin: String,
    sink: Arc<dyn OutputSink>,
}

impl LogHost {
    pub fn new(plugin: String, sink: Arc<dyn OutputSink>) -> Self {
        LogHost { plugin, sink }
    }
}

impl Host for LogHost {
    async fn message(&mut self, level: Level, text: String) {
        let text = truncate(text, MAX_LINE_BYTES);
        let plugin = self.plugin.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, "{text}"),
            Level::Debug => tracing::debug!(plugin, "{text}"),
            Level::Info => tracing::info!(plugin, "{text}"),
            Level::Warn => tracing::warn!(plugin, "{text}"),
            Level::Error => tracing::error!(plugin, "{text}"),
        }
    }

    async fn output(&mut self, channel: OutputStream, line: String) {
        self.sink.ready().await;
        self.sink.line(channel, truncate(line, MAX_LINE_BYTES));
    }
}

impl crate::contract::host::infra::types::Host for LogHost {}
