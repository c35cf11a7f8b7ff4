//! Everything the control plane keeps. The only module that knows a
//! database. Records are JSON values in `&str`-keyed tables; secondary
//! indexes are maintained here (`records`), on every write, from the record
//! itself, so a record and its index entries always change in the same
//! transaction.
//!
//! Two backends implement the same byte-level tables (`tables::ReadTxn`,
//! `tables::WriteTxn`): an embedded redb file (the default) and PostgreSQL,
//! which several `host serve` replicas can share. Above this module nothing
//! knows which one it talks to.
//!
//! Writes go through one writer thread per server that groups whatever
//! requests are waiting into one transaction and one commit (group commit).
//! A request is answered only after its transaction committed: an
//! acknowledged write survives `kill -9`.
//!
//! Requests of a batch share its transaction, and a request that fails is
//! not rolled back alone: what it wrote before its error commits with the
//! others. So an operation checks everything before it writes anything.
//!
//! Failures are [`StoreError`]s, which say what became of a write
//! (nothing written, outcome unknown, disk full...); this module knows
//! nothing of HTTP. Active-run counters, like index entries, are kept by
//! [`Writer::put_run`] and read by [`Slots`]; no caller builds their keys.

mod dashboard;
mod embedded;
mod error;
mod find;
mod postgres;
mod records;
mod tables;

pub use dashboard::{Dashboard, RunCounts};
pub use error::StoreError;
pub use find::{FindRuns, RunSort};
pub use records::{Records, RunFilter, RunPage, Slots, time_key};
pub use tables::Raw;

use crate::events::{Change, Events};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use tables::{ReadTxn, WriteTxn};
use tokio::sync::oneshot;

/// Requests grouped into one transaction at most.
const MAX_BATCH: usize = 512;

type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// Runs a request in the batch's transaction, or learns that there is none.
type Job = Box<dyn FnOnce(Result<&mut dyn WriteTxn, &StoreError>) -> Completion + Send>;

/// Called when another server committed changes to a shared database.
pub type RemoteHook = Box<dyn Fn(Committed) + Send + Sync>;

/// The kinds of change a batch committed: what wakes long-polls (claims and
/// run watches on records, log follows on logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub records: bool,
    pub logs: bool,
}

impl Committed {
    pub fn of(changes: &[Change]) -> Committed {
        let logs = changes.iter().filter(|c| matches!(c, Change::Log { .. }));
        let log_count = logs.count();
        Committed {
            records: log_count < changes.len(),
            logs: log_count > 0,
        }
    }

    /// The kinds of either.
    pub fn union(self, other: Committed) -> Committed {
        Committed {
            records: self.records || other.records,
            logs: self.logs || other.logs,
        }
    }

    /// Both kinds: what to assume when it is not known which.
    pub const ANY: Committed = Committed {
        records: true,
        logs: true,
    };
}

/// What differs between the backends, behind one interface.
trait Backend: Send + Sync {
    fn snapshot(&self) -> Result<Box<dyn ReadTxn>, StoreError>;
    fn health(&self) -> Health;
    /// Whether this server should do the upkeep that must run once per
    /// database, not once per server (scheduling, sweeps).
    fn lead(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    fn on_remote_changes(&self, _hook: RemoteHook) {}
    /// Held by a request while it waits for news (see [`Waiting`]).
    fn waiting(&self) -> Waiting {
        Waiting(None)
    }
    /// Where the server that batches the database's writes is, when it is
    /// not this one.
    fn writer_address(&self) -> Option<String> {
        None
    }
    /// This server as one replica of a shared database; `None` for redb.
    fn replica(&self) -> Option<Replica> {
        None
    }
    /// Where the data is, for people.
    fn location(&self) -> String;
}

#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    writer: mpsc::Sender<Job>,
    events: Arc<Events>,
}

/// A request waiting for changes, until dropped (see [`Store::waiting`]).
#[must_use = "the wait ends when this is dropped"]
pub struct Waiting(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Waiting {
    /// A wait that runs `done` when it ends.
    fn until(done: impl FnOnce() + Send + Sync + 'static) -> Waiting {
        Waiting(Some(Box::new(done)))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done();
        }
    }
}

/// A replica of a shared database as it sees itself, for `/api/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Holds the lead (upkeep, and the others' writes when it advertises).
    pub leading: bool,
    /// Why the database is out of reach, while it is.
    pub database_lost: Option<String>,
    /// Where this replica says its API is.
    pub advertised: Option<String>,
}

/// How the store is doing, for `/api/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Reads work, writes are refused: the reason.
    Degraded(String),
}

/// Free space the redb store wants before it writes, by default.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 16 << 20;

/// A consistent read view.
pub struct Snapshot {
    txn: Box<dyn ReadTxn>,
}

/// The write side, handed to one request inside the shared transaction. A
/// request must check everything before it changes anything: an error it
/// returns does not undo its own earlier writes in the batch.
pub struct Writer<'a> {
    txn: &'a mut dyn WriteTxn,
    /// What this request changed, published once the batch commits.
    changes: Vec<Change>,
}

fn storage(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::internal(e)
}

impl Store {
    /// Opens or creates the redb database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, DEFAULT_MIN_FREE_BYTES)
    }

    /// Opens or creates the redb database at `path`, refusing writes while
    /// its disk has less than `min_free_bytes` free. A file that is not a
    /// sound database is refused and left untouched.
    pub fn open_with(path: &Path, min_free_bytes: u64) -> Result<Store, StoreError> {
        let events = Arc::<Events>::default();
        let (writer, jobs) = mpsc::channel::<Job>();
        let backend = embedded::RedbStore::open(path, min_free_bytes, jobs)?;
        Ok(Store {
            backend,
            writer,
            events,
        })
    }

    /// Connects to PostgreSQL at `url` (`postgres://user@host:port/db`),
    /// bringing its schema up to date first. Refuses a database whose
    /// schema is newer than this build knows. `advertised` is where the
    /// other servers on the database reach this one's API (`None`: they do
    /// not forward their writes here).
    pub async fn connect(url: &str, advertised: Option<String>) -> Result<Store, StoreError> {
        let events = Arc::<Events>::default();
        let (writer, jobs) = mpsc::channel::<Job>();
        let backend = postgres::PgStore::connect(url, advertised, jobs, events.clone()).await?;
        Ok(Store {
            backend,
            writer,
            events,
        })
    }

    /// The feed of committed changes, from this server and, on a shared
    /// database, from the others.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Where the data is, for people (a path, or the database URL without
    /// its password).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Registers what to do when another server commits changes to a
    /// shared database (never called for redb).
    pub fn on_remote_changes(&self, hook: RemoteHook) {
        self.backend.on_remote_changes(hook);
    }

    /// Held by a request for as long as it waits for changes (a long-poll,
    /// an event stream): on a shared database a server follows the others'
    /// changes as they commit only while somebody on it waits for them.
    pub fn waiting(&self) -> Waiting {
        self.backend.waiting()
    }

    /// The leading server's API, when another server leads a shared
    /// database: writes made there are batched with everyone's. `None`:
    /// write here (redb, this server leads, or nobody says where).
    pub fn writer_address(&self) -> Option<String> {
        self.backend.writer_address()
    }

    /// This server as a replica of a shared database; `None` for redb.
    pub fn replica(&self) -> Option<Replica> {
        self.backend.replica()
    }

    /// Gives the runs an older build wrote the index entries this one
    /// added (once per database; later calls find nothing to do). Returns
    /// how many runs it indexed.
    pub async fn upgrade_indexes(&self) -> Result<u64, StoreError> {
        self.write(|w| w.index_run_summaries()).await
    }

    /// Whether this server leads the once-per-database upkeep; always true
    /// for redb, one server at a time on PostgreSQL.
    pub async fn lead(&self) -> bool {
        self.backend.lead().await
    }

    /// Runs `f` on a consistent snapshot. `f`'s error type is the
    /// caller's: a reader above the store decides its own refusals.
    pub fn read<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Snapshot) -> Result<R, E>,
    ) -> Result<R, E> {
        let txn = self.backend.snapshot()?;
        f(&Snapshot { txn })
    }

    /// Reads work whenever the database does; writes need a commit that
    /// went through (and, for redb, disk space).
    pub fn health(&self) -> Health {
        self.backend.health()
    }

    /// Runs `f` in a write transaction and answers once it is durable. As
    /// with [`Store::read`], `f` returns the caller's error type; the
    /// store's own failures (no transaction, a failed commit) arrive as it.
    pub async fn write<R: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E> {
        let (tx, rx) = oneshot::channel();
        let events = self.events.clone();
        let job: Job = Box::new(move |txn| {
            let (result, changes) = match txn {
                Ok(txn) => {
                    let mut writer = Writer {
                        txn,
                        changes: Vec::new(),
                    };
                    let result = f(&mut writer);
                    writer.txn.record(&writer.changes);
                    (result, writer.changes)
                }
                Err(error) => (Err(E::from(error.clone())), Vec::new()),
            };
            Box::new(move |commit_error: Option<&StoreError>| {
                let answer = match commit_error {
                    Some(error) => Err(E::from(error.clone())),
                    None => {
                        events.publish(changes);
                        result
                    }
                };
                let _ = tx.send(answer);
            })
        });
        self.writer
            .send(job)
            .map_err(|_| E::from(StoreError::internal("the store's writer has stopped")))?;
        rx.await
            .map_err(|_| E::from(StoreError::internal("the store's writer dropped a request")))?
    }
}

/// Starts a backend's writer thread. A panic in a batch (a request's own
/// code, or the database library on a damaged file) fails that batch: its
/// requests are answered with an error as their jobs are dropped; `failed`
/// gets the panic's message (the backend reports it in health and starts
/// the next batch afresh) and the loop goes on. Before, the thread died and
/// every later write was a 500 while health said ok.
pub(crate) fn spawn_writer(
    write_loop: impl Fn() + Send + 'static,
    failed: impl Fn(String) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            loop {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&write_loop)) {
                    // The channel closed: the store is gone.
                    Ok(()) => return,
                    Err(panic) => {
                        let message = crate::error::panic_message(&*panic);
                        tracing::error!(panic = %message, "a write batch panicked; its requests failed, the writer goes on");
                        failed(format!("a write panicked: {message}"));
                    }
                }
            }
        })
        .map(|_| ())
}

/// Waits for up to [`MAX_BATCH`] jobs: the first blocking, the rest already queued.
fn next_batch(jobs: &mpsc::Receiver<Job>) -> Option<Vec<Job>> {
    let first = jobs.recv().ok()?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_a_batch_fails_that_batch_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("host.redb")).expect("store");
        let failed = store
            .write(|_: &mut Writer<'_>| -> Result<(), StoreError> { panic!("boom") })
            .await;
        assert!(failed.is_err(), "the panicking request gets an error");
        // The request learns of the failure as the batch unwinds, a moment
        // before the writer records it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let reason = loop {
            match store.health() {
                Health::Degraded(reason) => break reason,
                Health::Ok if std::time::Instant::now() > deadline => {
                    panic!("health says what happened")
                }
                Health::Ok => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        };
        assert!(reason.contains("boom"), "{reason}");
        store
            .write(|_: &mut Writer<'_>| Ok::<_, StoreError>(()))
            .await
            .expect("the next write works");
        assert!(matches!(store.health(), Health::Ok), "healthy again");
    }
}
