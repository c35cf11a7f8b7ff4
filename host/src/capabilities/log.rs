//! `host:infra/log`: plugin diagnostics go to tracing; workload output goes to
//! the sink of the call (the flow run's log stream for `wait`).

use super::{CallScope, HostCapability, Setup};
use crate::contract::OutputStream;
use crate::contract::host::infra::log::{self, Host, Level};
use crate::contract::host::infra::types;
use crate::runtime::PluginState;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use wasmtime::component::{HasSelf, Linker};

/// Always granted: a plugin may always say what it is doing.
pub(crate) struct Log;

impl HostCapability for Log {
    const INTERFACE: &'static str = "log";
    type Shared = Arc<MessageBudgets>;
    type Scoped = LogHost;

    fn init(_setup: &Setup<'_>) -> anyhow::Result<Arc<MessageBudgets>> {
        Ok(Arc::default())
    }

    fn link(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
        log::add_to_linker::<_, HasSelf<LogHost>>(linker, |s| &mut s.scopes().log)?;
        // `types` has no functions to serve, but every plugin imports it; it
        // rides on `log` because `log` is linked for every plugin.
        types::add_to_linker::<_, HasSelf<LogHost>>(linker, |s| &mut s.scopes().log)
    }

    fn scope(budgets: &Arc<MessageBudgets>, call: &CallScope<'_>) -> LogHost {
        LogHost::new(
            call.plugin.to_string(),
            call.sink.clone(),
            call.run.map(|run| (run.to_string(), budgets.clone())),
        )
    }

    /// The run's message budget goes with it.
    async fn release(budgets: &Arc<MessageBudgets>, run: &str) -> Vec<String> {
        budgets.forget(run);
        Vec::new()
    }
}

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

/// A plugin's messages go to the worker's own log, which one flooding
/// plugin would fill: past either bound (a call's, or a flow run's across
/// its calls) one notice says so and the rest are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageBound {
    pub messages: u64,
    pub bytes: u64,
}

pub const PER_CALL: MessageBound = MessageBound {
    messages: 1_000,
    bytes: 1 << 20,
};
pub const PER_RUN: MessageBound = MessageBound {
    messages: 10_000,
    bytes: 8 << 20,
};

/// What each flow run's plugin calls have logged, until the run is released.
#[derive(Default)]
pub struct MessageBudgets {
    runs: Mutex<HashMap<String, Spent>>,
}

#[derive(Default, Clone, Copy)]
struct Spent {
    messages: u64,
    bytes: u64,
    over: bool,
}

impl Spent {
    /// Counts one message; `Some(first)` once past `bound` (`first` only
    /// the first time).
    fn take(&mut self, bound: MessageBound, bytes: usize) -> Option<bool> {
        if self.over {
            return Some(false);
        }
        self.messages += 1;
        self.bytes += bytes as u64;
        if self.messages > bound.messages || self.bytes > bound.bytes {
            self.over = true;
            return Some(true);
        }
        None
    }
}

impl MessageBudgets {
    fn take(&self, run: &str, bytes: usize) -> Option<bool> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(run.to_string())
            .or_default()
            .take(PER_RUN, bytes)
    }

    /// The run is over for this worker: its count goes.
    pub fn forget(&self, run: &str) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(run);
        }
    }
}

pub struct LogHost {
    plugin: String,
    sink: Arc<dyn OutputSink>,
    /// The flow run the call is for, and every run's budget.
    run: Option<(String, Arc<MessageBudgets>)>,
    call: Spent,
}

impl LogHost {
    pub fn new(
        plugin: String,
        sink: Arc<dyn OutputSink>,
        run: Option<(String, Arc<MessageBudgets>)>,
    ) -> Self {
        LogHost {
            plugin,
            sink,
            run,
            call: Spent::default(),
        }
    }

    /// Whether the message may go to the log; says once when it may not.
    fn within_bounds(&mut self, bytes: usize) -> bool {
        let plugin = self.plugin.as_str();
        let flow_run_id = self.run.as_ref().map(|(run, _)| run.as_str());
        if let Some(first) = self.call.take(PER_CALL, bytes) {
            if first {
                tracing::warn!(
                    plugin,
                    flow_run_id,
                    "the plugin logged more than {} messages or {} bytes in one call: the rest of this call's are dropped",
                    PER_CALL.messages,
                    PER_CALL.bytes
                );
            }
            return false;
        }
        let Some((run, budgets)) = &self.run else {
            return true;
        };
        match budgets.take(run, bytes) {
            None => true,
            Some(first) => {
                if first {
                    tracing::warn!(
                        plugin,
                        flow_run_id,
                        "the plugin logged more than {} messages or {} bytes for this flow run: the rest are dropped",
                        PER_RUN.messages,
                        PER_RUN.bytes
                    );
                }
                false
            }
        }
    }
}

impl Host for LogHost {
    async fn message(&mut self, level: Level, text: String) {
        let text = truncate(text, MAX_LINE_BYTES);
        if !self.within_bounds(text.len()) {
            return;
        }
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

impl types::Host for LogHost {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_and_a_run_are_bounded_and_say_so_once() {
        let mut call = Spent::default();
        for _ in 0..PER_CALL.messages {
            assert_eq!(call.take(PER_CALL, 10), None);
        }
        assert_eq!(call.take(PER_CALL, 10), Some(true));
        assert_eq!(call.take(PER_CALL, 10), Some(false));

        let budgets = MessageBudgets::default();
        let big = (PER_RUN.bytes / 4) as usize;
        for _ in 0..4 {
            assert_eq!(budgets.take("r", big), None);
        }
        assert_eq!(budgets.take("r", 1), Some(true));
        assert_eq!(budgets.take("r", 1), Some(false));
        assert_eq!(budgets.take("other", 1), None);
        budgets.forget("r");
        assert_eq!(budgets.take("r", 1), None);
    }
}
