//! `host:infra/log`: plugin diagnostics go to tracing; workload output goes to
//! the sink of the call (the flow run's log stream for `wait`).

use crate::runtime::OutputStream;
use crate::runtime::bindings::host::infra::log::{Host, Level};
use std::sync::{Arc, Mutex};

/// Receives a workload's output lines during `wait`.
pub trait OutputSink: Send + Sync {
    fn line(&self, stream: OutputStream, line: String);
}

/// For calls that should not produce output.
pub struct DiscardOutput;

impl OutputSink for DiscardOutput {
    fn line(&self, _stream: OutputStream, _line: String) {}
}

pub fn discard_output() -> Arc<dyn OutputSink> {
    Arc::new(DiscardOutput)
}

/// Keeps every line, for `host plugin test` and tests.
#[derive(Default)]
pub struct CollectOutput {
    lines: Mutex<Vec<(OutputStream, String)>>,
}

impl CollectOutput {
    pub fn lines(&self) -> Vec<(OutputStream, String)> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl OutputSink for CollectOutput {
    fn line(&self, stream: OutputStream, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push((stream, line));
        }
    }
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
        self.sink.line(channel, line);
    }
}

impl crate::runtime::bindings::host::infra::types::Host for LogHost {}
