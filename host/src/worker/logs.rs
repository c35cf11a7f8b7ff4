//! Ships a run's output to the server in batches, off the plugin's path: the
//! plugin's `log.output` call only queues the line.

use crate::capabilities::OutputSink;
use crate::client::Client;
use crate::control::NewLogLine;
use crate::runtime::OutputStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Lines queued per run before new ones are dropped (and counted).
const QUEUE_LINES: usize = 100_000;
/// Lines per request at most.
const BATCH_LINES: usize = 1_000;
/// How long a batch gathers lines after the first one arrives.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

pub struct LogShipper {
    sender: Mutex<Option<mpsc::Sender<NewLogLine>>>,
    dropped: AtomicU64,
}

impl LogShipper {
    /// Starts the shipping task for one run.
    pub fn start(
        client: Client,
        run_id: String,
    ) -> (std::sync::Arc<LogShipper>, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE_LINES);
        let shipper = std::sync::Arc::new(LogShipper {
            sender: Mutex::new(Some(sender)),
            dropped: AtomicU64::new(0),
        });
        let task = tokio::spawn(ship(client, run_id, receiver));
        (shipper, task)
    }

    pub fn push(&self, stream: &str, message: String) {
        let sent = self.sender.lock().ok().and_then(|s| {
            s.as_ref().map(|s| {
                s.try_send(NewLogLine {
                    timestamp: Some(chrono::Utc::now()),
                    stream: Some(stream.into()),
                    message,
                })
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// No more lines: the task sends what is queued and ends.
    pub fn close(&self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            self.push(
                "worker",
                format!("[{dropped} output lines were dropped: the log queue was full]"),
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
        self.push(stream, line);
    }
}

async fn ship(client: Client, run_id: String, mut receiver: mpsc::Receiver<NewLogLine>) {
    let path = format!("/api/flow-runs/{run_id}/logs");
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let window = tokio::time::sleep(BATCH_WINDOW);
        tokio::pin!(window);
        while batch.len() < BATCH_LINES {
            tokio::select! {
                line = receiver.recv() => match line {
                    Some(line) => batch.push(line),
                    None => break,
                },
                _ = &mut window => break,
            }
        }
        super::retry("append logs", &run_id, || async {
            client.post::<_, serde_json::Value>(&path, &batch).await
        })
        .await;
    }
}

/// A run's log stream: the sink plugins write into and the task shipping it.
pub struct RunLog {
    shipper: std::sync::Arc<LogShipper>,
    task: tokio::task::JoinHandle<()>,
}

impl RunLog {
    pub fn start(client: Client, run_id: String) -> RunLog {
        let (shipper, task) = LogShipper::start(client, run_id);
        RunLog { shipper, task }
    }

    /// What a plugin's `wait` writes the workload's output into.
    pub fn sink(&self) -> std::sync::Arc<LogShipper> {
        self.shipper.clone()
    }

    /// A line from the worker itself.
    pub fn push(&self, stream: &str, message: String) {
        self.shipper.push(stream, message);
    }

    /// Sends what is queued and waits until it is sent.
    pub async fn close(self) {
        self.shipper.close();
        let _ = self.task.await;
    }
}
