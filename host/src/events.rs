//! The change feed: every committed change to a run, its logs, a worker or a
//! pool becomes one [`Event`], in commit order, for `/api/events` (the web
//! UI, `--watch`, `--follow`).
//!
//! The store publishes after a batch commits, so an event is never seen
//! before its change can be read. Recent events stay in a ring buffer so a
//! client that reconnects resumes from the last id it saw; one that fell
//! further behind (or comes from before a restart) is told to reload.

use crate::model::{FlowRun, LogLine, WorkPool, Worker};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for resuming: at most this many, and at most [`KEPT_BYTES`]
/// of them (as JSON), so big runs (parameters of megabytes, say) cannot
/// make the ring hold gigabytes. A reader resuming from before the oldest
/// kept is told to reload.
const KEPT: usize = 10_000;
const KEPT_BYTES: usize = 32 << 20;

/// What changed, as the store wrote it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    Run {
        flow_run: Box<FlowRun>,
    },
    /// A run and its logs were deleted (by a person, or the scheduler
    /// dropping its own future runs).
    RunDeleted {
        flow_run_id: String,
        pool: String,
    },
    Log {
        flow_run_id: String,
        line: LogLine,
    },
    Worker {
        worker: Worker,
    },
    Pool {
        pool: WorkPool,
    },
    PoolDeleted {
        name: String,
    },
}

impl Change {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Run { .. } => "run",
            Change::RunDeleted { .. } => "run_deleted",
            Change::Log { .. } => "log",
            Change::Worker { .. } => "worker",
            Change::Pool { .. } => "pool",
            Change::PoolDeleted { .. } => "pool_deleted",
        }
    }

    pub fn flow_run_id(&self) -> Option<&str> {
        match self {
            Change::Run { flow_run } => Some(&flow_run.id),
            Change::RunDeleted { flow_run_id, .. } => Some(flow_run_id),
            Change::Log { flow_run_id, .. } => Some(flow_run_id),
            _ => None,
        }
    }

    pub fn pool(&self) -> Option<&str> {
        match self {
            Change::Run { flow_run } => Some(&flow_run.pool),
            Change::RunDeleted { pool, .. } => Some(pool),
            Change::Worker { worker } => Some(&worker.pool),
            Change::Pool { pool } => Some(&pool.name),
            Change::PoolDeleted { name } => Some(name),
            Change::Log { .. } => None,
        }
    }
}

#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    pub change: Change,
    /// The event as an SSE frame, written once as it is published and
    /// shared by every stream; its length is what the ring counts.
    frame: bytes::Bytes,
}

impl Event {
    /// `id`, `event` and one `data` line (serde_json writes no newlines).
    fn new(epoch: &str, seq: u64, change: Change) -> Event {
        let json = serde_json::to_string(&change).unwrap_or_else(|_| "{}".into());
        let name = change.name();
        let frame = format!("id: {epoch}-{seq}\nevent: {name}\ndata: {json}\n\n").into();
        Event { seq, change, frame }
    }

    pub fn sse_frame(&self) -> bytes::Bytes {
        self.frame.clone()
    }
}

/// Where a reader starts.
pub enum Start {
    /// Only what happens from now on.
    Now,
    /// After this event id (`Last-Event-ID`).
    After(String),
}

/// What a new reader gets: the events it missed, then live ones.
pub struct Subscription {
    pub missed: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The id it asked to resume from is gone (too old, or from before a
    /// restart): what it holds may be stale, and it should reload.
    pub reset: bool,
}

pub struct Events {
    /// Ids are `{epoch}-{seq}`: an id from an earlier server process never
    /// matches, so its reader is told to reload instead of missing changes.
    epoch: String,
    recent: Mutex<Recent>,
    live: broadcast::Sender<Arc<Event>>,
}

struct Recent {
    next_seq: u64,
    events: VecDeque<Arc<Event>>,
    /// The sum of the kept events' frame lengths.
    bytes: usize,
    /// Changes went by unpublished since the last event.
    after_gap: bool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            epoch: format!("{:x}", chrono::Utc::now().timestamp_micros()),
            recent: Mutex::new(Recent {
                next_seq: 1,
                events: VecDeque::with_capacity(KEPT),
                bytes: 0,
                after_gap: false,
            }),
            live: broadcast::channel(KEPT).0,
        }
    }
}

impl Events {
    pub fn id(&self, event: &Event) -> String {
        format!("{}-{}", self.epoch, event.seq)
    }

    /// Numbers and sends the changes of one committed batch, in order.
    pub fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.after_gap = false;
        for change in changes {
            let event = Arc::new(Event::new(&self.epoch, recent.next_seq, change));
            recent.next_seq += 1;
            recent.bytes += event.frame.len();
            recent.events.push_back(event.clone());
            while recent.events.len() > KEPT
                || (recent.bytes > KEPT_BYTES && recent.events.len() > 1)
            {
                if let Some(oldest) = recent.events.pop_front() {
                    recent.bytes -= oldest.frame.len();
                }
            }
            // Sent under the lock, so live order is commit order.
            let _ = self.live.send(event);
        }
    }

    /// When nobody reads events as they come, lets changes go by
    /// unpublished (answers true): reading them would be work for nobody.
    /// A reader resuming from before them is then told to reload rather
    /// than miss them. Under the lock `subscribe` takes, so no reader
    /// arrives between the look and the gap.
    pub fn skip_if_unwatched(&self) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if self.live.receiver_count() > 0 {
            return false;
        }
        if !recent.after_gap {
            recent.events.clear();
            recent.bytes = 0;
            // An id no event has: every id issued before the gap is now older
            // than the oldest kept.
            recent.next_seq += 1;
            recent.after_gap = true;
        }
        true
    }

    pub fn subscribe(&self, start: Start) -> Subscription {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live.subscribe();
        let after = match start {
            Start::Now => {
                return Subscription {
                    missed: Vec::new(),
                    live,
                    reset: false,
                };
            }
            Start::After(id) => self.seq_of(&id),
        };
        let oldest_kept = recent.events.front().map_or(recent.next_seq, |e| e.seq);
        match after {
            Some(after) if after + 1 >= oldest_kept && after < recent.next_seq => Subscription {
                missed: recent
                    .events
                    .iter()
                    .filter(|e| e.seq > after)
                    .cloned()
                    .collect(),
                live,
                reset: false,
            },
            _ => Subscription {
                missed: Vec::new(),
                live,
                reset: true,
            },
        }
    }

    fn seq_of(&self, id: &str) -> Option<u64> {
        let (epoch, seq) = id.split_once('-')?;
        (epoch == self.epoch).then(|| seq.parse().ok())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleted(name: &str) -> Change {
        Change::PoolDeleted { name: name.into() }
    }

    fn names(events: &[Arc<Event>]) -> Vec<String> {
        events
            .iter()
            .map(|e| e.change.pool().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn a_reader_resumes_after_the_last_id_it_saw() {
        let events = Events::default();
        let mut now = events.subscribe(Start::Now);
        events.publish(vec![deleted("a"), deleted("b"), deleted("c")]);
        let first = now.live.try_recv().expect("live");
        assert_eq!(first.change.pool(), Some("a"));
        let resumed = events.subscribe(Start::After(events.id(&first)));
        assert!(!resumed.reset);
        assert_eq!(names(&resumed.missed), ["b", "c"]);
    }

    #[test]
    fn an_unknown_or_forgotten_id_asks_the_reader_to_reload() {
        let events = Events::default();
        events.publish((0..KEPT + 5).map(|i| deleted(&i.to_string())).collect());
        let too_old = format!("{}-1", events.epoch);
        assert!(events.subscribe(Start::After(too_old)).reset);
        assert!(
            events.subscribe(Start::After("0-1".into())).reset,
            "another epoch"
        );
        assert!(events.subscribe(Start::After("junk".into())).reset);
        let last = format!("{}-{}", events.epoch, KEPT + 5);
        let up_to_date = events.subscribe(Start::After(last));
        assert!(!up_to_date.reset);
        assert!(up_to_date.missed.is_empty());
    }

    #[test]
    fn the_ring_keeps_a_bounded_number_of_bytes() {
        let events = Events::default();
        let big = "x".repeat(1 << 20);
        events.publish((0..100).map(|_| deleted(&big)).collect());
        let recent = events.recent.lock().expect("lock");
        assert!(recent.bytes <= KEPT_BYTES, "{} bytes kept", recent.bytes);
        assert!(recent.events.len() < 100 && !recent.events.is_empty());
        assert_eq!(
            recent.bytes,
            recent.events.iter().map(|e| e.frame.len()).sum::<usize>()
        );
        let newest = recent.events.back().expect("newest");
        assert_eq!(newest.seq, 100, "the newest are the ones kept");
    }

    #[test]
    fn changes_skipped_while_nobody_watched_make_a_resuming_reader_reload() {
        let events = Events::default();
        let mut reader = events.subscribe(Start::Now);
        events.publish(vec![deleted("a")]);
        let last_seen = events.id(&reader.live.try_recv().expect("live"));
        assert!(!events.skip_if_unwatched(), "someone is watching");
        drop(reader);
        assert!(events.skip_if_unwatched());
        assert!(events.skip_if_unwatched());
        assert!(events.subscribe(Start::After(last_seen)).reset);
        // After the gap, resuming works as before.
        let mut reader = events.subscribe(Start::Now);
        events.publish(vec![deleted("b")]);
        let b = events.id(&reader.live.try_recv().expect("live"));
        events.publish(vec![deleted("c")]);
        let resumed = events.subscribe(Start::After(b));
        assert!(!resumed.reset);
        assert_eq!(names(&resumed.missed), ["c"]);
    }
}
