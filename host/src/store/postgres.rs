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
//! - A batch also writes what it changed to `changes` and `NOTIFY`s; every
//!   server listens and feeds other servers' changes into its own events and
//!   long-polls.
//! - One server at a time holds a session-level advisory lock and leads the
//!   once-per-database upkeep; the lock passes on when its connection drops.
//!
//! The store's API is synchronous closures over reads; the driver is async.
//! The driver's connections live on a small runtime of this module's own, so
//! a read can wait for an answer from any thread, also from inside another
//! runtime, without driving the connection itself.

use super::tables::{Def, ReadTxn, WriteTxn};
use super::{Backend, Committed, Completion, Health, Job, RemoteHook, next_batch};
use crate::error::ApiError;
use crate::events::{Change, Events};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

refinery::embed_migrations!("migrations");

/// Advisory lock keys ("host" and one more): one serializes write batches,
/// one marks the leading server, one guards migrations.
const WRITE_LOCK: i64 = 0x686f_7374_0001;
const LEAD_LOCK: i64 = 0x686f_7374_0002;
const MIGRATE_LOCK: i64 = 0x686f_7374_0003;
const CHANNEL: &str = "host_changes";
/// How often the listener looks for changes even without a notification
/// (one can be lost while its connection is re-established).
const CATCH_UP_EVERY: Duration = Duration::from_secs(1);
/// Changes are kept this long for the listeners; far longer than they lag.
const KEEP_CHANGES: &str = "10 minutes";

const GET: &str = "SELECT value FROM kv WHERE tbl = $1 AND key = $2";
const RANGE_ASC: &str = "SELECT key, value FROM kv WHERE tbl = $1 AND key >= $2 AND key < $3 \
                         ORDER BY key LIMIT $4";
const RANGE_DESC: &str = "SELECT key, value FROM kv WHERE tbl = $1 AND key >= $2 AND key < $3 \
                          ORDER BY key DESC LIMIT $4";
const KEYS: &str = "SELECT key FROM kv WHERE tbl = $1 ORDER BY key";
const PUT_MANY: &str = "INSERT INTO kv (tbl, key, value) \
                        SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) \
                        ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value";
const DELETE_MANY: &str = "DELETE FROM kv WHERE (tbl, key) IN \
                           (SELECT * FROM unnest($1::text[], $2::bytea[]))";
/// The notification names the writing replica: a replica's own commits do
/// not send it reading.
const RECORD_CHANGES: &str = "WITH c AS (INSERT INTO changes (replica, payload) VALUES ($1, $2) \
                              RETURNING seq) SELECT pg_notify('host_changes', $3 || seq) FROM c";
/// The newest change after $1, and whether another replica made any.
const LAST_CHANGE: &str = "SELECT max(seq), bool_or(replica <> $2) FROM changes WHERE seq > $1";
/// Other replicas' payloads only: this one's are not even read from disk.
const CHANGES_AFTER: &str = "SELECT seq, CASE WHEN replica <> $2 THEN payload END FROM changes \
                             WHERE seq > $1 ORDER BY seq LIMIT 1000";

pub(super) struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Owns the driver's connections.
    _runtime: DriverRuntime,
    handle: tokio::runtime::Handle,
    pool: Pool,
    config: tokio_postgres::Config,
    /// Tells this server's changes from the others' in `changes`.
    replica: String,
    location: String,
    events: Arc<Events>,
    hooks: Mutex<Vec<RemoteHook>>,
    failed_commit: Mutex<Option<String>>,
    /// The connection holding the lead lock, and whether it holds it.
    leader: tokio::sync::Mutex<Option<(tokio_postgres::Client, bool)>>,
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
fn db_error(e: impl Into<DbError>) -> ApiError {
    match e.into() {
        DbError::Unreachable(why) => ApiError::unavailable(format!(
            "the database is unreachable ({why}); retry shortly"
        )),
        DbError::Other(why) => ApiError::internal(format!("database error: {why}")),
    }
}

enum DbError {
    Unreachable(String),
    Other(String),
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
        jobs: mpsc::Receiver<Job>,
        events: Arc<Events>,
    ) -> Result<Arc<PgStore>, ApiError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            ApiError::bad_request(
                "database_url",
                format!("database_url: not a PostgreSQL URL ({e}); expected postgres://user:password@host:port/database"),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| ApiError::internal(format!("cannot start the database runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let runtime = DriverRuntime(Some(runtime));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
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
            .map_err(|e| ApiError::internal(format!("database pool: {e}")))?;
        let location = redact(url);
        let migrate_config = config.clone();
        let migrate_location = location.clone();
        let last_seq = handle
            .spawn(async move { migrate(&migrate_config, &migrate_location).await })
            .await
            .map_err(|e| ApiError::internal(format!("migration task: {e}")))??;
        let inner = Arc::new(Inner {
            _runtime: runtime,
            handle: handle.clone(),
            pool,
            config,
            replica: uuid::Uuid::new_v4().to_string(),
            location,
            events,
            hooks: Mutex::new(Vec::new()),
            failed_commit: Mutex::new(None),
            leader: tokio::sync::Mutex::new(None),
        });
        // The listener holds only a weak reference: it ends with the store.
        handle.spawn(listen(Arc::downgrade(&inner), last_seq));
        let thread_inner = inner.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&thread_inner, &jobs))
            .map_err(|e| ApiError::internal(format!("cannot start the writer: {e}")))?;
        tracing::info!(database = %inner.location, replica = %inner.replica, "connected to PostgreSQL");
        Ok(Arc::new(PgStore { inner }))
    }
}

/// Brings the schema up to date under a lock (replicas may start together)
/// and answers the last change's sequence number, where listening starts.
async fn migrate(config: &tokio_postgres::Config, location: &str) -> Result<i64, ApiError> {
    let (mut client, connection) = config.connect(NoTls).await.map_err(|e| {
        ApiError::unavailable(format!(
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
            refinery::error::Kind::MissingVersion(newer) => ApiError::internal(format!(
                "the database at {location} has schema migration {newer} applied, which this build of host does not know: a newer host migrated it. Run that version (or newer), or point --database-url at another database"
            )),
            refinery::error::Kind::DivergentVersion(applied, ours) => ApiError::internal(format!(
                "the database at {location} has schema migration {applied} applied where this build has {ours}: it was migrated by a different build of host"
            )),
            other => ApiError::internal(format!(
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

    fn connection(&self) -> Result<deadpool_postgres::Object, ApiError> {
        self.block(self.pool.get()).map_err(db_error)
    }

    fn publish_remote(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.wake(Committed::of(&changes));
        self.events.publish(changes);
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
    fn snapshot(&self) -> Result<Box<dyn ReadTxn>, ApiError> {
        Ok(Box::new(PgRead {
            inner: self.inner.clone(),
            client: self.inner.connection()?,
        }))
    }

    fn health(&self) -> Health {
        match self.inner.failed_commit.lock().ok().and_then(|f| f.clone()) {
            Some(reason) => Health::Degraded(reason),
            None => Health::Ok,
        }
    }

    fn lead(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let handle = inner.handle.clone();
            handle
                .spawn(async move { try_lead(&inner).await })
                .await
                .unwrap_or(false)
        })
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

/// Holds (or takes) the session-level lead lock on a connection of its own.
async fn try_lead(inner: &Inner) -> bool {
    let mut slot = inner.leader.lock().await;
    if slot.as_ref().is_some_and(|(client, _)| client.is_closed()) {
        tracing::warn!(replica = %inner.replica, "lost the connection holding the lead");
        *slot = None;
    }
    if slot.is_none() {
        match inner.config.connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                *slot = Some((client, false));
            }
            Err(error) => {
                tracing::debug!(error = %DbErrorText(&error), "cannot connect to take the lead");
                return false;
            }
        }
    }
    let Some((client, held)) = slot.as_mut() else {
        return false;
    };
    if !*held {
        *held = match client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEAD_LOCK])
            .await
        {
            Ok(row) => row.get(0),
            Err(_) => false,
        };
        if *held {
            tracing::info!(replica = %inner.replica, "leading the database's upkeep");
        }
    }
    if *held {
        // The leader also trims the change log the listeners have read.
        let prune = format!("DELETE FROM changes WHERE at < now() - interval '{KEEP_CHANGES}'");
        let _ = client.execute(prune.as_str(), &[]).await;
    }
    *held
}

/// Feeds other servers' committed changes into this one, from `last` on,
/// reconnecting as long as the store lives.
async fn listen(inner: std::sync::Weak<Inner>, mut last: i64) {
    loop {
        let Some(config) = inner.upgrade().map(|i| i.config.clone()) else {
            return;
        };
        match listen_once(&inner, &config, &mut last).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "change listener lost its connection; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// What a batch's notification says: who committed, what kinds of change,
/// and its row in `changes`.
struct Notice {
    replica: String,
    kinds: Committed,
    seq: i64,
}

impl Notice {
    /// `{replica} {kinds} `: the notification's text before the sequence
    /// number, which the database appends.
    fn prefix(replica: &str, kinds: Committed) -> String {
        let records = if kinds.records { "r" } else { "" };
        let logs = if kinds.logs { "l" } else { "" };
        format!("{replica} {records}{logs}- ")
    }

    fn parse(text: &str) -> Option<Notice> {
        let mut parts = text.split(' ');
        let (replica, kinds, seq) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Notice {
            replica: replica.to_string(),
            kinds: Committed {
                records: kinds.contains('r'),
                logs: kinds.contains('l'),
            },
            seq: seq.parse().ok()?,
        })
    }
}

/// Answers `Ok` once the store is gone, an error when the connection is.
///
/// While somebody reads this server's event stream, the listener reads
/// the other servers' changes and publishes them. While nobody does, the
/// notifications alone wake the long-polls, and the changes themselves are
/// not read (most of the listener's work, and of the database's for it).
async fn listen_once(
    inner: &std::sync::Weak<Inner>,
    config: &tokio_postgres::Config,
    last: &mut i64,
) -> Result<(), String> {
    let text = |e: tokio_postgres::Error| DbErrorText(&e).to_string();
    let (client, mut connection) = config.connect(NoTls).await.map_err(text)?;
    let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(news)) => {
                    let _ = notified.send(news.payload().to_string());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(text)?;
    let changes_after = client.prepare(CHANGES_AFTER).await.map_err(text)?;
    let last_change = client.prepare(LAST_CHANGE).await.map_err(text)?;
    let Some(me) = inner.upgrade().map(|i| i.replica.clone()) else {
        return Ok(());
    };
    // Listening first, then reading: nothing committed in between is missed.
    let mut catching_up = true;
    let mut news: Option<Notice> = None;
    loop {
        if catching_up || news.is_some() {
            let Some(inner) = inner.upgrade() else {
                return Ok(());
            };
            if !inner.events.skip_if_unwatched() {
                read_changes(&client, &changes_after, &me, last, &inner)
                    .await
                    .map_err(text)?;
            } else if let Some(notice) = news.take() {
                inner.wake(notice.kinds);
                *last = (*last).max(notice.seq);
            } else {
                // The visible rows of `changes` are a prefix of `seq` (batches
                // commit in lock order), so all up to the last one are seen.
                let row = client
                    .query_one(&last_change, &[&*last, &me])
                    .await
                    .map_err(text)?;
                if let Some(newest) = row.get::<_, Option<i64>>(0) {
                    *last = newest;
                    if row.get::<_, Option<bool>>(1) == Some(true) {
                        inner.wake(Committed::ANY);
                    }
                }
            }
        }
        (catching_up, news) = (false, None);
        let catch_up = tokio::time::sleep(CATCH_UP_EVERY);
        tokio::pin!(catch_up);
        while news.is_none() && !catching_up {
            tokio::select! {
                text = notifications.recv() => {
                    let text = text.ok_or("the connection closed")?;
                    news = merge(news, Notice::parse(&text), &me);
                    while let Ok(text) = notifications.try_recv() {
                        news = merge(news, Notice::parse(&text), &me);
                    }
                }
                () = &mut catch_up => {
                    if client.is_closed() {
                        return Err("the connection closed".into());
                    }
                    catching_up = true;
                }
            }
        }
    }
}

/// Other servers' news, taken together; this server's own is not news.
fn merge(news: Option<Notice>, notice: Option<Notice>, me: &str) -> Option<Notice> {
    match (news, notice) {
        (news, Some(notice)) if notice.replica != me => Some(match news {
            Some(earlier) => Notice {
                kinds: Committed {
                    records: earlier.kinds.records || notice.kinds.records,
                    logs: earlier.kinds.logs || notice.kinds.logs,
                },
                seq: earlier.seq.max(notice.seq),
                ..notice
            },
            None => notice,
        }),
        (news, _) => news,
    }
}

/// Publishes the other servers' changes after `last`, and moves it on.
async fn read_changes(
    client: &tokio_postgres::Client,
    changes_after: &tokio_postgres::Statement,
    me: &str,
    last: &mut i64,
    inner: &Inner,
) -> Result<(), tokio_postgres::Error> {
    loop {
        let rows = client.query(changes_after, &[&*last, &me]).await?;
        for row in &rows {
            *last = row.get(0);
            let Some(payload) = row.get::<_, Option<&str>>(1) else {
                continue;
            };
            match serde_json::from_str::<Vec<Change>>(payload) {
                Ok(changes) => inner.publish_remote(changes),
                Err(error) => tracing::warn!(%error, seq = *last, "unreadable change record"),
            }
        }
        if rows.len() < 1000 {
            return Ok(());
        }
    }
}

/// A read view: one pooled connection, each statement on its own (reads
/// see what was committed when they ran).
struct PgRead {
    inner: Arc<Inner>,
    client: deadpool_postgres::Object,
}

/// A connection that runs one statement and waits for its rows.
trait Conn {
    fn rows(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error>;
}

impl Conn for PgRead {
    fn rows(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.inner.block(async {
            let statement = self.client.prepare_cached(sql).await?;
            self.client.query(&statement, params).await
        })
    }
}

fn get_on(conn: &dyn Conn, def: Def, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let rows = conn
        .rows(GET, &[&def.name(), &key.as_bytes()])
        .map_err(db_error)?;
    Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
}

fn range_on(
    conn: &dyn Conn,
    def: Def,
    start: &str,
    end: &str,
    descending: bool,
    limit: usize,
) -> Result<Rows, ApiError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = if descending { RANGE_DESC } else { RANGE_ASC };
    let rows = conn
        .rows(
            sql,
            &[&def.name(), &start.as_bytes(), &end.as_bytes(), &limit],
        )
        .map_err(db_error)?;
    rows.iter()
        .map(|row| Ok((key_text(row.get(0))?, row.get::<_, Vec<u8>>(1))))
        .collect()
}

fn key_text(bytes: Vec<u8>) -> Result<String, ApiError> {
    String::from_utf8(bytes).map_err(|_| ApiError::internal("database error: a key is not UTF-8"))
}

fn keys_on(conn: &dyn Conn, def: Def, f: &mut dyn FnMut(&str)) -> Result<(), ApiError> {
    let rows = conn.rows(KEYS, &[&def.name()]).map_err(db_error)?;
    for row in &rows {
        f(&key_text(row.get(0))?);
    }
    Ok(())
}

impl ReadTxn for PgRead {
    fn get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        get_on(self, def, key)
    }
    fn range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        range_on(self, def, start, end, descending, limit)
    }
    fn keys(&self, def: Def, f: &mut dyn FnMut(&str)) -> Result<(), ApiError> {
        keys_on(self, def, f)
    }
}

/// A batch's transaction: reads go to the database (which no other server
/// writes while the batch holds the write lock) through what the batch has
/// written so far; writes are kept here and sent at commit in two statements.
struct PgBatch<'a> {
    conn: &'a Session<'a>,
    /// Key → new value, or `None` for deleted.
    pending: BTreeMap<(&'static str, String), Option<Vec<u8>>>,
    changes: Vec<Change>,
    /// A statement failed: PostgreSQL has aborted the transaction, and a
    /// COMMIT would roll back while answering success.
    broken: std::cell::Cell<bool>,
    /// What the database answered so far in this batch. Nothing else writes
    /// while the batch holds the write lock, and the batch's own writes are
    /// in `pending`, so the answers stay true until the commit: the requests
    /// of a batch (claims of one pool, say) read their pool, queues and
    /// counters once, not once each.
    read_gets: RefCell<HashMap<TableKey, Option<Vec<u8>>>>,
    /// Range answers by (table, start, end, descending): the limit asked and
    /// the rows (all of them when fewer than that limit came back).
    read_ranges: RefCell<HashMap<RangeKey, (usize, Rows)>>,
    started: crate::model::Timestamp,
}

type Rows = Vec<(String, Vec<u8>)>;
type TableKey = (&'static str, String);
type RangeKey = (&'static str, String, String, bool);

impl PgBatch<'_> {
    fn check<T>(&self, result: Result<T, ApiError>) -> Result<T, ApiError> {
        if result.is_err() {
            self.broken.set(true);
        }
        result
    }
}

impl ReadTxn for PgBatch<'_> {
    fn get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        match self.pending.get(&(def.name(), key.to_string())) {
            Some(value) => Ok(value.clone()),
            None => {
                let cache_key = (def.name(), key.to_string());
                if let Some(value) = self.read_gets.borrow().get(&cache_key) {
                    return Ok(value.clone());
                }
                let value = self.check(get_on(self.conn, def, key))?;
                self.read_gets.borrow_mut().insert(cache_key, value.clone());
                Ok(value)
            }
        }
    }

    fn range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        let pending: Vec<_> = self
            .pending
            .range((def.name(), start.to_string())..(def.name(), end.to_string()))
            .collect();
        // Each pending entry can hide at most one stored row: asking for that
        // many more keeps the first `limit` of the merged view complete.
        let wanted = limit.saturating_add(pending.len());
        let stored = self.stored_range(def, start, end, descending, wanted)?;
        if pending.is_empty() {
            return Ok(stored);
        }
        let mut merged: BTreeMap<String, Vec<u8>> = stored.into_iter().collect();
        for ((_, key), value) in pending {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(if descending {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        })
    }

    fn keys(&self, def: Def, f: &mut dyn FnMut(&str)) -> Result<(), ApiError> {
        let mut keys = Vec::new();
        self.check(keys_on(self.conn, def, &mut |key| {
            keys.push(key.to_string())
        }))?;
        let mut all: std::collections::BTreeSet<String> = keys.into_iter().collect();
        for ((table, key), value) in &self.pending {
            if *table == def.name() {
                if value.is_some() {
                    all.insert(key.clone());
                } else {
                    all.remove(key);
                }
            }
        }
        all.iter().for_each(|key| f(key));
        Ok(())
    }
}

impl PgBatch<'_> {
    /// The first `wanted` stored rows of a range, from this batch's earlier
    /// answers when they hold enough.
    fn stored_range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        wanted: usize,
    ) -> Result<Rows, ApiError> {
        let key = (def.name(), start.to_string(), end.to_string(), descending);
        if let Some((asked, rows)) = self.read_ranges.borrow().get(&key)
            && (*asked >= wanted || rows.len() < *asked)
        {
            return Ok(rows.iter().take(wanted).cloned().collect());
        }
        // A range read whole before (fewer rows than asked) that holds this
        // one answers it too: a pool's entries answer one worker's.
        for ((table, from, to, order), (asked, rows)) in self.read_ranges.borrow().iter() {
            if *table == def.name()
                && *order == descending
                && rows.len() < *asked
                && from.as_str() <= start
                && end <= to.as_str()
            {
                return Ok(rows
                    .iter()
                    .filter(|(k, _)| k.as_str() >= start && k.as_str() < end)
                    .take(wanted)
                    .cloned()
                    .collect());
            }
        }
        // A little more than asked: a claim deletes entries of the range it
        // reads, so the next one in the batch asks for one more.
        let asked = wanted.max(64);
        let rows = self.check(range_on(self.conn, def, start, end, descending, asked))?;
        let answer = rows.iter().take(wanted).cloned().collect();
        self.read_ranges.borrow_mut().insert(key, (asked, rows));
        Ok(answer)
    }
}

impl WriteTxn for PgBatch<'_> {
    fn put(&mut self, def: Def, key: &str, value: &[u8]) -> Result<(), ApiError> {
        self.pending
            .insert((def.name(), key.to_string()), Some(value.to_vec()));
        Ok(())
    }
    fn delete(&mut self, def: Def, key: &str) -> Result<(), ApiError> {
        self.pending.insert((def.name(), key.to_string()), None);
        Ok(())
    }
    fn record(&mut self, changes: &[Change]) {
        self.changes.extend_from_slice(changes);
    }
    fn started(&self) -> crate::model::Timestamp {
        self.started
    }
}

impl PgBatch<'_> {
    /// Sends the batch's writes and changes and commits.
    fn commit(self, replica: &str) -> Result<(), ApiError> {
        if self.broken.get() {
            return Err(ApiError::unavailable(
                "a read in this batch failed, so none of its writes were committed; retry",
            ));
        }
        self.send(replica).map_err(db_error)
    }

    /// Sends the batch's writes, its commit and a wait for the WAL flush in
    /// one round trip; PostgreSQL runs them in that order. The batch
    /// commits without waiting for its WAL to reach the disk (`BEGIN` set
    /// that), so the write lock passes to the next replica's batch at once.
    /// The transaction after it commits synchronously, flushing the WAL up
    /// to its own commit record, which comes after the batch's. Later
    /// batches (of any replica) that read this one's writes come later in
    /// the WAL still, so a crash can only lose a suffix nobody was answered
    /// about. A statement that fails aborts the transaction (its COMMIT
    /// then rolls back) and its error is the answer.
    fn send(&self, replica: &str) -> Result<(), tokio_postgres::Error> {
        let (mut put_tables, mut put_keys, mut put_values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut delete_tables, mut delete_keys) = (Vec::new(), Vec::new());
        for ((table, key), value) in &self.pending {
            match value {
                Some(value) => {
                    put_tables.push(*table);
                    put_keys.push(key.as_bytes());
                    put_values.push(value.as_slice());
                }
                None => {
                    delete_tables.push(*table);
                    delete_keys.push(key.as_bytes());
                }
            }
        }
        let payload = serde_json::to_string(&self.changes).unwrap_or_else(|_| "[]".into());
        let conn = self.conn;
        conn.run(async {
            let delete_many = conn.statement(DELETE_MANY).await?;
            let put_many = conn.statement(PUT_MANY).await?;
            let record_changes = conn.statement(RECORD_CHANGES).await?;
            // A request goes out when its future is first polled: `biased`
            // polls them in the order written.
            let deletes = async {
                if !delete_keys.is_empty() {
                    let params: [&(dyn ToSql + Sync); 2] = [&delete_tables, &delete_keys];
                    conn.client.execute(&delete_many, &params).await?;
                }
                Ok(())
            };
            let puts = async {
                if !put_keys.is_empty() {
                    let params: [&(dyn ToSql + Sync); 3] = [&put_tables, &put_keys, &put_values];
                    conn.client.execute(&put_many, &params).await?;
                }
                Ok(())
            };
            let changes = async {
                if !self.changes.is_empty() {
                    let notice = Notice::prefix(replica, Committed::of(&self.changes));
                    conn.client
                        .query(&record_changes, &[&replica, &payload, &notice])
                        .await?;
                }
                Ok(())
            };
            let commit = conn.client.batch_execute("COMMIT");
            let flushed = conn
                .client
                .batch_execute("BEGIN; SELECT txid_current(); COMMIT");
            tokio::try_join!(biased; deletes, puts, changes, commit, flushed).map(|_| ())
        })
    }
}

/// The writer's own connection, driven on the writer thread by a runtime
/// of its own: a batch's reads wait for PostgreSQL only, not for other
/// threads as well (half the time of a pooled connection's round trip).
struct WriterConn {
    runtime: tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    client: Option<tokio_postgres::Client>,
    statements: RefCell<HashMap<&'static str, tokio_postgres::Statement>>,
}

/// A live connection of the writer, for one batch.
struct Session<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client: &'a tokio_postgres::Client,
    statements: &'a RefCell<HashMap<&'static str, tokio_postgres::Statement>>,
}

impl WriterConn {
    fn new(config: tokio_postgres::Config) -> std::io::Result<WriterConn> {
        Ok(WriterConn {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            config,
            client: None,
            statements: RefCell::default(),
        })
    }

    /// The connection, made again when the last one broke.
    fn session(&mut self) -> Result<Session<'_>, tokio_postgres::Error> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                self.statements.borrow_mut().clear();
                let (client, connection) = self.runtime.block_on(self.config.connect(NoTls))?;
                self.runtime.spawn(connection);
                client
            }
        };
        Ok(Session {
            runtime: &self.runtime,
            client: self.client.insert(client),
            statements: &self.statements,
        })
    }
}

impl Session<'_> {
    fn run<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    async fn statement(
        &self,
        sql: &'static str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.borrow_mut().insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Conn for Session<'_> {
    fn rows(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.run(async {
            let statement = self.statement(sql).await?;
            self.client.query(&statement, params).await
        })
    }
}

fn write_loop(inner: &Inner, jobs: &mpsc::Receiver<Job>) {
    let mut conn = match WriterConn::new(inner.config.clone()) {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(%error, "cannot start the writer's runtime");
            return;
        }
    };
    while let Some(mut batch) = next_batch(jobs) {
        let session = conn.session().map_err(db_error).and_then(|session| {
            // The batch commits without waiting for its WAL to reach the disk,
            // so the lock passes to the next replica's batch at once; the
            // flush is awaited after the lock is released (see `PgBatch::send`).
            let begin = format!(
                "BEGIN; SET LOCAL synchronous_commit TO off; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
            );
            if let Err(error) = session.run(session.client.batch_execute(&begin)) {
                let _ = session.run(session.client.batch_execute("ROLLBACK"));
                return Err(db_error(error));
            }
            Ok(session)
        });
        let session = match session {
            Ok(session) => session,
            Err(error) => {
                tracing::error!(%error, "cannot write");
                inner.failed(&error);
                for job in batch {
                    job(Err(&error))(None);
                }
                continue;
            }
        };
        // Whatever arrived while waiting for the lock joins this batch: the
        // busier the other replicas, the bigger the batches.
        while batch.len() < super::MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut txn = PgBatch {
            conn: &session,
            pending: BTreeMap::new(),
            changes: Vec::new(),
            broken: std::cell::Cell::new(false),
            read_gets: RefCell::default(),
            read_ranges: RefCell::default(),
            started: chrono::Utc::now(),
        };
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(Ok(&mut txn))).collect();
        let outcome = txn.commit(&inner.replica);
        match &outcome {
            Ok(()) => {
                if let Ok(mut failed) = inner.failed_commit.lock() {
                    failed.take();
                }
            }
            Err(error) => {
                tracing::error!(%error, "commit failed; every request in the batch gets the error");
                inner.failed(error);
                let _ = session.run(session.client.batch_execute("ROLLBACK"));
            }
        }
        for completion in completions {
            completion(outcome.as_ref().err());
        }
    }
}

impl Inner {
    fn failed(&self, error: &ApiError) {
        if let Ok(mut failed) = self.failed_commit.lock() {
            *failed = Some(format!("the last write failed: {}", error.message));
        }
    }
}
