//! Background tasks that must not die quietly. A task that panics is
//! logged, named in `/api/health` (degraded) and started again after a
//! second; it is healthy again once it reports a good round
//! ([`Tasks::healthy`]).
//!
//! Why: the scheduler's loop does the sweeps and the scheduling; if it died
//! quietly, runs would stop being scheduled and silent workers' runs would
//! never end, while the server looked healthy.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RESTART_AFTER: Duration = Duration::from_secs(1);

/// The troubles of the server's background tasks, by task.
#[derive(Default)]
pub struct Tasks {
    failing: Mutex<BTreeMap<&'static str, String>>,
}

impl Tasks {
    /// A task did its work: whatever it failed with before is over.
    pub fn healthy(&self, task: &'static str) {
        self.lock().remove(task);
    }

    /// What is wrong, for health: `None` when every task is well.
    pub fn trouble(&self) -> Option<String> {
        let failing = self.lock();
        (!failing.is_empty()).then(|| {
            failing
                .iter()
                .map(|(task, why)| format!("background task `{task}` {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn failed(&self, task: &'static str, why: String) {
        self.lock().insert(task, why);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A task aborted when this is dropped or aborted: the supervising loop
/// (whose own `Supervised` then ends the task it runs), or that task.
pub struct Supervised {
    handle: tokio::task::JoinHandle<()>,
}

impl Supervised {
    pub fn abort(&self) {
        self.handle.abort();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Runs `make()` as a task, again after each panic, until it returns.
pub fn supervise<F, Fut>(tasks: Arc<Tasks>, name: &'static str, make: F) -> Supervised
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(async move {
        loop {
            // Dropped with this loop (abort), so the inner task ends with it.
            let mut inner = Supervised {
                handle: tokio::spawn(make()),
            };
            match (&mut inner.handle).await {
                Err(error) if error.is_panic() => {
                    let message = crate::error::panic_message(&*error.into_panic());
                    tracing::error!(task = name, panic = %message, "background task panicked; restarting it");
                    tasks.failed(
                        name,
                        format!(
                            "panicked at {}: {message}; restarted",
                            chrono::Utc::now().to_rfc3339()
                        ),
                    );
                    tokio::time::sleep(RESTART_AFTER).await;
                }
                _ => return,
            }
        }
    });
    Supervised { handle }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_restarted() {
        let tasks = Arc::new(Tasks::default());
        let rounds = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let (t, r) = (tasks.clone(), rounds.clone());
        let _supervised = supervise(tasks.clone(), "test", move || {
            let (t, r, done_tx) = (t.clone(), r.clone(), done_tx.clone());
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first round fails");
                }
                let trouble = t.trouble();
                t.healthy("test");
                if let Some(tx) = done_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(trouble);
                }
            }
        });
        let seen = tokio::time::timeout(Duration::from_secs(10), done_rx)
            .await
            .expect("restarted within 10 s")
            .expect("answer");
        assert!(
            seen.as_deref()
                .is_some_and(|t| t.contains("`test` panicked") && t.contains("first round fails")),
            "{seen:?}"
        );
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        assert_eq!(tasks.trouble(), None, "healthy after a good round");
    }
}
