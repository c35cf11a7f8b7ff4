//! The shared backend: PostgreSQL, which any number of `host serve`
//! replicas use at once.
//!
//! - Every table of `tables` is a key range of one `kv` table.
//! - Each server groups its waiting writes into one transaction, as with
//!   redb, and takes one transaction-scoped advisory lock first: write
//!   batches are serialized across replicas, so every check a request makes
//!   inside its write (a claim's limits, a transition's current state) holds
//!   until it commits, exactly as with one server. Replicas buy availability
//!   and read capacity; writes scale by batching.
//! - A batch also writes what it changed to `changes`; once it commits, the
//!   server `NOTIFY`s (at most once per 10 ms under load); every
//!   server on which somebody waits for changes listens, and feeds other
//!   servers' changes into its own events and long-polls.
//! - One server at a time holds a session-level advisory lock and leads the
//!   once-per-database upkeep; the lock passes on when its connection drops.
//!   The leader also writes where its API is, and when it last said so:
//!   the others forward their API writes there while it says so lately
//!   (`server::forward`), so one writer batches them all.
//! - Nothing waits on the database without a deadline: a replica cut off
//!   from it, or another replica paused holding a lock, costs seconds, and
//!   the replica that lost its database says so (health) and answers 503.
//!
//! The store's API is synchronous closures over reads; the driver is async.
//! The driver's connections live on a small runtime of this module's own, so
//! a read can wait for an answer from any thread, also from inside another
//! runtime, without driving the connection itself.
//!
//! # Layout
//! - `batch`: the writer, its connection and its batches' transactions.
//! - `cache`: what the writer knows of the database between its batches.
//! - `lead`: the lead, the leader row, and whether the database is in reach.
//! - `listen`: announcing this replica's changes, and following the others'.
//! - `prefetch`: what a batch will likely read, read with the write lock.
//! - `read`: reads outside a batch, and the statements all reads share.

mod batch;
mod cache;
mod lead;
mod listen;
mod prefetch;
mod read;
mod tls;

use crate::store::StoreError;
use batch::write_loop;
use lead::keep_lead;
use listen::{Notice, announce, listen};
use read::PgRead;

use super::tables::ReadTxn;
use super::{Backend, Committed, Health, Job, RemoteHook, Replica};
use crate::events::{Change, Events};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tls::Target;

refinery::embed_migrations!("migrations");

/// Advisory lock keys ("host" and one more): one serializes write batches,
/// one marks the leading server, one guards migrations.
const WRITE_LOCK: i64 = 0x686f_7374_0001;
const LEAD_LOCK: i64 = 0x686f_7374_0002;
const MIGRATE_LOCK: i64 = 0x686f_7374_0003;

pub(super) struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Owns the driver's connections.
    _runtime: DriverRuntime,
    handle: tokio::runtime::Handle,
    pool: Pool,
    target: Target,
    /// Tells this server's changes from the others' in `changes`.
    replica: String,
    location: String,
    events: Arc<Events>,
    hooks: Mutex<Vec<RemoteHook>>,
    failed_commit: Mutex<Option<String>>,
    /// Whether this replica holds the lead (see `lead`).
    leading: std::sync::atomic::AtomicBool,
    /// Why the database is out of reach, while it is (see `lead`).
    lost: Mutex<Option<String>>,
    /// Where this replica's API is reached, if it says (see `listen`).
    advertised: Option<String>,
    /// Where the leading replica's API is, while another one leads.
    writer_address: Mutex<Option<String>>,
    /// This replica's committed changes, for `listen::announce` to tell
    /// the others.
    announcements: tokio::sync::mpsc::UnboundedSender<Notice>,
    /// Who on this server waits for changes (see `listen`).
    waiters: Arc<Waiters>,
}

/// The requests waiting for changes on this server: the listener follows
/// the other replicas' commits as they happen only while there are some.
#[derive(Default)]
struct Waiters {
    now: std::sync::atomic::AtomicUsize,
    /// Every wait that ever began: one that began and ended between two
    /// looks still counts as recent.
    began: std::sync::atomic::AtomicU64,
    arrived: tokio::sync::Notify,
}

impl Waiters {
    /// A wait that begins: a listener that stopped listens again at once.
    fn begin(self: &Arc<Self>) -> super::Waiting {
        use std::sync::atomic::Ordering::SeqCst;
        self.now.fetch_add(1, SeqCst);
        self.began.fetch_add(1, SeqCst);
        self.arrived.notify_one();
        let waiters = self.clone();
        super::Waiting::until(move || {
            waiters.now.fetch_sub(1, SeqCst);
        })
    }

    /// Whether somebody waits now.
    fn any(&self) -> bool {
        self.now.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

/// The driver's runtime, shut down without waiting when dropped: a drop
/// may happen inside another runtime, where waiting is not allowed.
struct DriverRuntime(Option<tokio::runtime::Runtime>);

impl Drop for DriverRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A driver error as the API tells it: the database being away is a 503
/// (clients retry), anything else a 500.
fn db_error(e: impl Into<DbError>) -> StoreError {
    match e.into() {
        DbError::Unreachable(why) => StoreError::Unavailable(format!(
            "the database is unreachable ({why}); retry shortly"
        )),
        DbError::Other(why) => StoreError::internal(format!("database error: {why}")),
    }
}

enum DbError {
    Unreachable(String),
    Other(String),
}

impl DbError {
    /// No answer within `deadline`: as good as unreachable.
    fn timed_out(deadline: Duration) -> DbError {
        DbError::Unreachable(format!("no answer within {deadline:?}"))
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> DbError {
        let text = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => format!("{e}: {}", DbErrorText(&e)),
        };
        // Connection-level trouble, or the server going down (57P01 admin
        // shutdown and friends, 08xxx connection exceptions).
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        if e.is_closed()
            || e.as_db_error().is_none()
            || code.starts_with("57P")
            || code.starts_with("08")
        {
            DbError::Unreachable(text)
        } else {
            DbError::Other(text)
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> DbError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => DbError::Unreachable(other.to_string()),
        }
    }
}

/// What a replica that lost its database answers: nothing was done here,
/// so another replica may do it.
fn lost_error(reason: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "this replica cannot reach its database ({reason}); nothing was done: retry, or ask another replica"
    ))
}

/// The URL without its password, for logs and messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_info = &url[scheme + 3..at];
            match user_info.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl PgStore {
    pub(super) async fn connect(
        url: &str,
        advertised: Option<String>,
        jobs: mpsc::Receiver<Job>,
        events: Arc<Events>,
    ) -> Result<Arc<PgStore>, StoreError> {
        let mut target = Target::parse(url)?;
        let config = &mut target.config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A database host that vanished mid-statement is noticed in seconds,
        // not the kernel's two hours.
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::internal(format!("cannot start the database runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let runtime = DriverRuntime(Some(runtime));
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::internal(format!("database pool: {e}")))?;
        let location = redact(url);
        let migrate_target = target.clone();
        let migrate_location = location.clone();
        let last_seq = handle
            .spawn(async move { migrate(&migrate_target, &migrate_location).await })
            .await
            .map_err(|e| StoreError::internal(format!("migration task: {e}")))??;
        let (announcements, committed) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            _runtime: runtime,
            handle: handle.clone(),
            pool,
            target,
            replica: uuid::Uuid::new_v4().to_string(),
            location,
            events,
            hooks: Mutex::new(Vec::new()),
            failed_commit: Mutex::new(None),
            leading: std::sync::atomic::AtomicBool::new(false),
            lost: Mutex::new(None),
            advertised,
            writer_address: Mutex::new(None),
            announcements,
            waiters: Arc::default(),
        });
        // The listener and the announcer hold only weak references: they
        // end with the store.
        handle.spawn(listen(
            Arc::downgrade(&inner),
            inner.waiters.clone(),
            last_seq,
        ));
        handle.spawn(announce(Arc::downgrade(&inner), committed));
        handle.spawn(keep_lead(Arc::downgrade(&inner)));
        let (thread_inner, failed_inner) = (inner.clone(), inner.clone());
        super::spawn_writer(
            move || write_loop(&thread_inner, &jobs),
            move |reason| {
                if let Ok(mut failed) = failed_inner.failed_commit.lock() {
                    *failed = Some(reason);
                }
            },
        )
        .map_err(|e| StoreError::internal(format!("cannot start the writer: {e}")))?;
        tracing::info!(database = %inner.location, replica = %inner.replica, "connected to PostgreSQL");
        Ok(Arc::new(PgStore { inner }))
    }
}

/// Brings the schema up to date under a lock (replicas may start together)
/// and answers the last change's sequence number, where listening starts.
async fn migrate(target: &Target, location: &str) -> Result<i64, StoreError> {
    let (mut client, connection) = target.connect().await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to the database at {location}: {}",
            DbErrorText(&e)
        ))
    })?;
    let driver = tokio::spawn(connection);
    client
        .query("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(db_error)?;
    let report = migrations::runner()
        .set_abort_missing(true)
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await;
    let outcome = match report {
        Ok(report) => {
            for applied in report.applied_migrations() {
                tracing::info!(migration = %applied, database = %location, "schema migrated");
            }
            Ok(())
        }
        Err(e) => Err(match e.kind() {
            refinery::error::Kind::MissingVersion(newer) => StoreError::internal(format!(
                "the database at {location} has schema migration {newer} applied, which this build of host does not know: a newer host migrated it. Run that version (or newer), or point --database-url at another database"
            )),
            refinery::error::Kind::DivergentVersion(applied, ours) => {
                StoreError::internal(format!(
                    "the database at {location} has schema migration {applied} applied where this build has {ours}: it was migrated by a different build of host"
                ))
            }
            other => StoreError::internal(format!(
                "cannot migrate the database at {location}: {other}"
            )),
        }),
    };
    let last = client
        .query_one("SELECT coalesce(max(seq), 0) FROM changes", &[])
        .await;
    drop(client);
    let _ = driver.await;
    outcome?;
    last.map(|row| row.get::<_, i64>(0)).map_err(db_error)
}

struct DbErrorText<'a>(&'a tokio_postgres::Error);

impl std::fmt::Display for DbErrorText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut cause: &dyn std::error::Error = self.0;
        while let Some(next) = cause.source() {
            cause = next;
        }
        write!(f, "{cause}")
    }
}

impl Inner {
    /// Waits for `f` on this thread while the driver runs on the store's
    /// runtime (entered, so a connection the pool opens is spawned there).
    fn block<F: Future>(&self, f: F) -> F::Output {
        let _entered = self.handle.enter();
        block_on(f)
    }

    fn connection(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if let Some(reason) = self.lost() {
            return Err(lost_error(&reason));
        }
        self.block(self.pool.get()).map_err(db_error)
    }

    /// Why the database is out of reach, while it is.
    fn lost(&self) -> Option<String> {
        self.lost.lock().ok()?.clone()
    }

    fn publish_remote(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.wake(Committed::of(&changes));
        self.events.publish(changes);
    }

    /// Has the other replicas told of a batch this one committed.
    fn announce(&self, notice: Notice) {
        let _ = self.announcements.send(notice);
    }

    /// Tells this server's long-polls that another one committed.
    fn wake(&self, kinds: Committed) {
        if let Ok(hooks) = self.hooks.lock() {
            for hook in hooks.iter() {
                hook(kinds);
            }
        }
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` to completion on the calling thread, parking between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = f.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::park();
    }
}

impl Backend for PgStore {
    fn snapshot(&self) -> Result<Box<dyn ReadTxn>, StoreError> {
        Ok(Box::new(PgRead {
            inner: self.inner.clone(),
            client: self.inner.connection()?,
        }))
    }

    fn health(&self) -> Health {
        if let Some(reason) = self.inner.lost() {
            return Health::Degraded(format!(
                "the database is unreachable ({reason}); not leading, and answering 503 until it is back"
            ));
        }
        match self.inner.failed_commit.lock().ok().and_then(|f| f.clone()) {
            Some(reason) => Health::Degraded(reason),
            None => Health::Ok,
        }
    }

    fn lead(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        let leading = self.inner.leading.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(std::future::ready(leading))
    }

    fn replica(&self) -> Option<Replica> {
        Some(Replica {
            leading: self.inner.leading.load(std::sync::atomic::Ordering::SeqCst),
            database_lost: self.inner.lost(),
            advertised: self.inner.advertised.clone(),
        })
    }

    fn writer_address(&self) -> Option<String> {
        self.inner.writer_address.lock().ok()?.clone()
    }

    fn waiting(&self) -> super::Waiting {
        self.inner.waiters.begin()
    }

    fn on_remote_changes(&self, hook: RemoteHook) {
        if let Ok(mut hooks) = self.inner.hooks.lock() {
            hooks.push(hook);
        }
    }

    fn location(&self) -> String {
        self.inner.location.clone()
    }
}

impl Inner {
    fn failed(&self, error: &StoreError) {
        if let Ok(mut failed) = self.failed_commit.lock() {
            *failed = Some(format!("the last write failed: {}", error));
        }
    }
}
