//! Ships a run's output to the server in batches, off the plugin's path: the
//! plugin's `log.output` call only queues the line (and waits while the
//! queue is full, so a flood slows the plugin down instead of the worker's
//! memory growing).
//!
//! Bounded at every step: a line is cut at [`MAX_LINE_BYTES`], a run keeps at
//! most its [`LogLimits`] (then one notice says how much was dropped), a
//! request carries at most [`BATCH_BYTES`], well under the server's body limit.

use super::Shared;
use crate::capabilities::{MAX_LINE_BYTES, OutputSink, truncate};
use crate::client::Client;
use crate::contract::OutputStream;
use crate::control::NewLogLine;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Bytes queued per run before `log.output` waits for the shipper.
const QUEUE_BYTES: u64 = 4 << 20;
/// Lines and bytes per request at most.
const BATCH_LINES: usize = 1_000;
const BATCH_BYTES: usize = 512 << 10;
/// How long a batch gathers lines after the first one arrives.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// What one run may keep in the server's log.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub max_lines: u64,
    pub max_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_lines: 100_000,
            max_bytes: 32 << 20,
        }
    }
}

pub struct LogShipper {
    sender: Mutex<Option<mpsc::UnboundedSender<NewLogLine>>>,
    limits: LogLimits,
    /// Output kept so far (the worker's own lines do not count).
    kept_lines: AtomicU64,
    kept_bytes: AtomicU64,
    /// Output dropped for the limits.
    dropped: AtomicU64,
    queued_bytes: Arc<AtomicU64>,
    drained: Arc<Notify>,
}

impl LogShipper {
    fn start(
        client: Client,
        run_id: String,
        limits: LogLimits,
    ) -> (Arc<LogShipper>, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let drained = Arc::new(Notify::new());
        let shipper = Arc::new(LogShipper {
            sender: Mutex::new(Some(sender)),
            limits,
            kept_lines: AtomicU64::new(0),
            kept_bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            queued_bytes: queued_bytes.clone(),
            drained: drained.clone(),
        });
        let task = tokio::spawn(ship(client, run_id, receiver, queued_bytes, drained));
        (shipper, task)
    }

    fn enqueue(&self, stream: &str, message: String) {
        let message = truncate(message, MAX_LINE_BYTES);
        let size = message.len() as u64;
        if let Ok(sender) = self.sender.lock()
            && let Some(sender) = sender.as_ref()
        {
            self.queued_bytes.fetch_add(size, Ordering::Relaxed);
            let _ = sender.send(NewLogLine {
                timestamp: Some(chrono::Utc::now()),
                stream: Some(stream.into()),
                message,
            });
        }
    }

    /// A line of the workload's output, kept while the run's limits allow.
    fn output(&self, stream: &str, message: String) {
        let size = message.len().min(MAX_LINE_BYTES) as u64;
        let lines = self.kept_lines.fetch_add(1, Ordering::Relaxed);
        let bytes = self.kept_bytes.fetch_add(size, Ordering::Relaxed);
        if lines >= self.limits.max_lines || bytes + size > self.limits.max_bytes {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.enqueue(stream, message);
    }

    /// No more lines: the task sends what is queued and ends.
    fn close(&self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            self.enqueue(
                "worker",
                format!(
                    "[{dropped} output lines were not kept: this run's log limit is {} lines or {} bytes]",
                    self.limits.max_lines, self.limits.max_bytes
                ),
            );
        }
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
    }
}

impl OutputSink for LogShipper {
    fn line(&self, stream: OutputStream, line: String) {
        let stream = match stream {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        };
        self.output(stream, line);
    }

    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            while self.queued_bytes.load(Ordering::Relaxed) > QUEUE_BYTES {
                let drained = self.drained.notified();
                if self.queued_bytes.load(Ordering::Relaxed) <= QUEUE_BYTES {
                    break;
                }
                drained.await;
            }
        })
    }
}

async fn ship(
    client: Client,
    run_id: String,
    mut receiver: mpsc::UnboundedReceiver<NewLogLine>,
    queued_bytes: Arc<AtomicU64>,
    drained: Arc<Notify>,
) {
    let path = format!("/api/flow-runs/{run_id}/logs");
    let mut refused: Option<(usize, String)> = None;
    while let Some(first) = receiver.recv().await {
        let mut bytes = first.message.len();
        let mut batch = vec![first];
        let window = tokio::time::sleep(BATCH_WINDOW);
        tokio::pin!(window);
        while batch.len() < BATCH_LINES && bytes < BATCH_BYTES {
            tokio::select! {
                line = receiver.recv() => match line {
                    Some(line) => {
                        bytes += line.message.len();
                        batch.push(line);
                    }
                    None => break,
                },
                _ = &mut window => break,
            }
        }
        queued_bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
        drained.notify_waiters();
        let sent = super::retry("append logs", &run_id, || async {
            client.post::<_, serde_json::Value>(&path, &batch).await
        })
        .await;
        if let Err(error) = sent {
            let (lines, _) = refused.get_or_insert((0, error.to_string()));
            *lines += batch.len();
        }
    }
    if let Some((lines, error)) = refused {
        let notice = vec![NewLogLine {
            timestamp: Some(chrono::Utc::now()),
            stream: Some("worker".into()),
            message: truncate(
                format!("[{lines} log lines were refused by the server: {error}]"),
                MAX_LINE_BYTES,
            ),
        }];
        let _ = client.post::<_, serde_json::Value>(&path, &notice).await;
    }
}

/// A run's log stream: the sink plugins write into and the task shipping it.
pub struct RunLog {
    shipper: Arc<LogShipper>,
    task: tokio::task::JoinHandle<()>,
}

impl RunLog {
    pub fn start(shared: &Shared, run_id: String) -> RunLog {
        let (shipper, task) =
            LogShipper::start(shared.client.clone(), run_id, shared.config.log_limits);
        RunLog { shipper, task }
    }

    /// What a plugin's `wait` writes the workload's output into.
    pub fn sink(&self) -> Arc<LogShipper> {
        self.shipper.clone()
    }

    /// A line from the worker itself (never held back by the limits).
    pub fn push(&self, stream: &str, message: String) {
        self.shipper.enqueue(stream, message);
    }

    /// Sends what is queued and waits until it is sent.
    pub async fn close(self) {
        self.shipper.close();
        let _ = self.task.await;
    }
}
