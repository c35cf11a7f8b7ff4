//! The writer: batches of requests, one transaction each, under the write lock.
//!
//! A batch commits without waiting for the WAL flush, so the lock every
//! replica waits for is released at once, and its requests are answered
//! only after a synchronous commit behind it ([`FLUSH_WAL`]) has flushed
//! the WAL past it: an acknowledged write survives a crash of PostgreSQL.
//! Every round trip has a deadline, so a database out of reach fails the
//! batch instead of holding this replica's writes; a commit that was sent
//! and never confirmed is an unknown outcome (504), never a "not written".

use super::cache::Cache;
use super::listen::Notice;
use super::prefetch::{self, Asks, Read, Reads};
use super::read::{Conn, GET_MANY, Rows, get_on, keys_on, range_on};
use super::tls::Target;
use super::{DbError, DbErrorText, Inner, WRITE_LOCK, db_error, lost_error};
use crate::events::Change;
use crate::store::StoreError;
use crate::store::tables::{Def, ReadTxn, WriteTxn};
use crate::store::{Committed, Completion, Job, MAX_BATCH, next_batch};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::mpsc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// A transaction that waits until the WAL is on disk up to its own commit,
/// and so up to every commit before it on this connection. PostgreSQL
/// flushes at commit only for a transaction that has an id *and* wrote WAL;
/// one that only took an id (`SELECT txid_current()`) commits as lazily as
/// an asynchronous one, and an immediate stop lost acknowledged batches.
/// A transactional logical message takes an id and writes one small WAL
/// record, touching no table (so no row any replica contends for). It
/// commits synchronously whatever the server's default is.
const FLUSH_WAL: &str = "BEGIN; SET LOCAL synchronous_commit TO on; \
     SELECT pg_logical_emit_message(true, 'host-flush', ''); COMMIT";

/// Set on the writer's connection. A replica paused (or cut off) inside a
/// batch holds the write lock, and every replica's writes wait for it:
/// PostgreSQL ends a transaction left idle this long (a batch's statements
/// follow each other within milliseconds), and with it the lock. The
/// keepalives find a peer that vanished while a statement runs.
const WRITER_SESSION: &str = "SET plan_cache_mode TO force_generic_plan; \
     SET idle_in_transaction_session_timeout = '5s'; SET tcp_keepalives_idle = 5; \
     SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3";
/// How long one round trip of the writer may take, the wait for the write
/// lock included (another replica's batch, or the 5 s above for one that
/// stalled). Past it the connection is dropped and the batch fails: a
/// database out of reach must not hold this replica's writes forever.
const ROUND_TRIP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// Connecting, the handshake included (`connect_timeout` covers only the
/// socket's).
const CONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

const PUT_MANY: &str = "INSERT INTO kv (tbl, key, value) \
                        SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) \
                        ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value";
const DELETE_MANY: &str = "DELETE FROM kv WHERE (tbl, key) IN \
                           (SELECT * FROM unnest($1::text[], $2::bytea[]))";
/// Announced once committed (see `listen::announce`).
const RECORD_CHANGES: &str = "INSERT INTO changes (replica, payload) VALUES ($1, $2) RETURNING seq";
/// The number of the last batch that wrote, of any replica: a writer whose
/// own last batch has that number knows nobody else wrote since, and keeps
/// its cache (see `cache`).
const VERSION: &str = "SELECT version FROM writer_version";
const NEXT_VERSION: &str = "UPDATE writer_version SET version = $1";

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
    /// What this writer read and wrote, still true (see `cache`): with
    /// the batch holding the write lock, it stays true until the commit.
    cache: &'a RefCell<Cache>,
    reads: &'a RefCell<Reads>,
    started: crate::model::Timestamp,
}

impl PgBatch<'_> {
    fn check<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.broken.set(true);
        }
        result
    }
}

impl ReadTxn for PgBatch<'_> {
    fn get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.get(&(def.name(), key.to_string())) {
            Some(value) => Ok(value.clone()),
            None => {
                self.reads
                    .borrow_mut()
                    .note(|| Read::Get(def, key.to_string()));
                if let Some(value) = self.cache.borrow().get(def.name(), key) {
                    return Ok(value);
                }
                let value = self.check(get_on(self.conn, def, key))?;
                self.cache
                    .borrow_mut()
                    .keep_get(def.name(), key, value.clone());
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
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
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

    fn keys(&self, def: Def, f: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
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

    fn read_ahead(&self, def: Def, keys: &[String]) -> Result<(), StoreError> {
        let known = |key: &String| {
            self.pending.contains_key(&(def.name(), key.clone()))
                || self.cache.borrow().get(def.name(), key).is_some()
        };
        if keys.first().is_none_or(known) {
            return Ok(());
        }
        let reads: Vec<Read> = keys
            .iter()
            .filter(|key| !known(key))
            .map(|key| Read::Get(def, key.clone()))
            .collect();
        let asks = Asks::of(&reads);
        let rows = self.check(
            self.conn
                .rows(GET_MANY, &[&asks.gets.0, &asks.gets.1])
                .map_err(db_error),
        )?;
        let answers = self.check(prefetch::Answers::of(&rows, &[], &[]).map_err(db_error))?;
        answers.keep(&mut self.cache.borrow_mut(), &reads);
        Ok(())
    }
}

impl PgBatch<'_> {
    /// The first `wanted` stored rows of a range, from the cache when it
    /// holds them.
    fn stored_range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        wanted: usize,
    ) -> Result<Rows, StoreError> {
        let bounds = (start, end);
        // A little more than asked: a claim deletes entries of the range it
        // reads, so the next one asks for one more.
        let asked = wanted.max(64);
        self.reads.borrow_mut().note(|| Read::Range {
            def,
            start: start.to_string(),
            end: end.to_string(),
            descending,
            asked,
        });
        if let Some(rows) = self
            .cache
            .borrow()
            .range(def.name(), bounds, descending, wanted)
        {
            return Ok(rows);
        }
        let rows = self.check(range_on(self.conn, def, start, end, descending, asked))?;
        let answer = rows.iter().take(wanted).cloned().collect();
        self.cache
            .borrow_mut()
            .keep_range(def.name(), bounds, descending, asked, rows);
        Ok(answer)
    }
}

impl WriteTxn for PgBatch<'_> {
    fn put(&mut self, def: Def, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.pending
            .insert((def.name(), key.to_string()), Some(value.to_vec()));
        Ok(())
    }
    fn delete(&mut self, def: Def, key: &str) -> Result<(), StoreError> {
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
    /// Sends the batch's writes and changes and commits; what to announce,
    /// when it changed anything.
    fn commit(self, replica: &str) -> Result<Option<Notice>, StoreError> {
        if self.broken.get() {
            return Err(StoreError::Unavailable(
                "a read in this batch failed, so none of its writes were committed; retry".into(),
            ));
        }
        let Some(version) = self.cache.borrow().version() else {
            return Err(StoreError::internal(
                "the writer began a batch without reading the write version",
            ));
        };
        let version = if self.pending.is_empty() {
            version
        } else {
            version + 1
        };
        let seq = match self.send(replica, version) {
            Ok(seq) => seq,
            Err(Unsent::NotCommitted(error)) => return Err(db_error(error)),
            Err(Unsent::Unknown(why)) => {
                return Err(StoreError::OutcomeUnknown(format!(
                    "the database did not confirm the commit ({why}): the write may or may not have been made; read before retrying"
                )));
            }
        };
        let notice = seq.map(|seq| Notice {
            replica: replica.to_string(),
            kinds: Committed::of(&self.changes),
            seq,
        });
        let mut cache = self.cache.borrow_mut();
        for ((table, key), value) in self.pending {
            cache.apply(table, &key, value);
        }
        cache.at(version);
        Ok(notice)
    }

    /// Sends the batch's writes, its commit and a wait for the WAL flush in
    /// one round trip; PostgreSQL runs them in that order. The batch
    /// commits without waiting for its WAL to reach the disk (`BEGIN` set
    /// that), so the write lock passes to the next replica's batch at once.
    /// The transaction after it ([`FLUSH_WAL`]) commits synchronously,
    /// flushing the WAL up to its own commit record, which comes after the
    /// batch's. Later
    /// batches (of any replica) that read this one's writes come later in
    /// the WAL still, so a crash can only lose a suffix nobody was answered
    /// about. A statement that fails aborts the transaction (its COMMIT
    /// then rolls back) and its error is the answer.
    /// It also numbers the batch `version`, when it wrote, and answers its
    /// row in `changes`, when it changed anything.
    fn send(&self, replica: &str, version: i64) -> Result<Option<i64>, Unsent> {
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
        // Before the pipeline below nothing is sent that could commit.
        let prepared = conn.run(async {
            Ok::<_, tokio_postgres::Error>((
                conn.statement(DELETE_MANY).await?,
                conn.statement(PUT_MANY).await?,
                conn.statement(RECORD_CHANGES).await?,
                conn.statement(NEXT_VERSION).await?,
            ))
        });
        let (delete_many, put_many, record_changes, next_version) =
            prepared.map_err(|e| Unsent::NotCommitted(e.into()))?;
        // Each step's error says whether it came before the commit's answer.
        let before = |e: tokio_postgres::Error| (false, e);
        conn.run(async {
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
                if self.changes.is_empty() {
                    return Ok(None);
                }
                let row = conn
                    .client
                    .query_one(&record_changes, &[&replica, &payload])
                    .await?;
                Ok(Some(row.get::<_, i64>(0)))
            };
            let numbered = async {
                if !self.pending.is_empty() {
                    conn.client.execute(&next_version, &[&version]).await?;
                }
                Ok(())
            };
            let commit = conn.client.batch_execute("COMMIT");
            let flushed = conn.client.batch_execute(FLUSH_WAL);
            tokio::try_join!(
                biased;
                async { deletes.await.map_err(before) },
                async { puts.await.map_err(before) },
                async { changes.await.map_err(before) },
                async { numbered.await.map_err(before) },
                async { commit.await.map_err(before) },
                async { flushed.await.map_err(|e| (true, e)) },
            )
            .map(|((), (), seq, (), (), ())| seq)
        })
        .map_err(|(after_commit, error)| {
            // PostgreSQL's refusal of a statement before the commit aborts
            // the transaction (its COMMIT then rolls back). A broken
            // connection, or a failed flush after the commit, leaves it
            // unknown whether the commit was made.
            if !after_commit && error.as_db_error().is_some() && !error.is_closed() {
                Unsent::NotCommitted(error.into())
            } else {
                Unsent::Unknown(DbErrorText(&error).to_string())
            }
        })
    }
}

/// Why a batch's commit did not go through.
enum Unsent {
    /// Nothing was committed.
    NotCommitted(DbError),
    /// The commit may have been made.
    Unknown(String),
}

/// The writer's own connection, driven on the writer thread by a runtime
/// of its own: a batch's reads wait for PostgreSQL only, not for other
/// threads as well (half the time of a pooled connection's round trip).
struct WriterConn {
    runtime: tokio::runtime::Runtime,
    target: Target,
    client: Option<tokio_postgres::Client>,
    /// The task driving `client`'s connection: aborted when a round trip
    /// overstays, which fails every request waiting on it.
    connection: Option<tokio::task::AbortHandle>,
    statements: RefCell<HashMap<&'static str, tokio_postgres::Statement>>,
    cache: RefCell<Cache>,
    reads: RefCell<Reads>,
}

/// A live connection of the writer, for one batch.
struct Session<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client: &'a tokio_postgres::Client,
    connection: Option<&'a tokio::task::AbortHandle>,
    statements: &'a RefCell<HashMap<&'static str, tokio_postgres::Statement>>,
    cache: &'a RefCell<Cache>,
    reads: &'a RefCell<Reads>,
}

impl WriterConn {
    fn new(target: Target) -> std::io::Result<WriterConn> {
        Ok(WriterConn {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            target,
            client: None,
            connection: None,
            statements: RefCell::default(),
            cache: RefCell::default(),
            reads: RefCell::default(),
        })
    }

    /// Drops the connection: the next batch makes a new one.
    fn disconnect(&mut self) {
        self.client = None;
        if let Some(connection) = self.connection.take() {
            connection.abort();
        }
    }

    /// The connection, made again when the last one broke.
    fn session(&mut self) -> Result<Session<'_>, DbError> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                self.statements.borrow_mut().clear();
                // What the last connection saw may have been lost since (a
                // database restart loses commits not yet flushed).
                self.cache.borrow_mut().forget();
                if let Some(old) = self.connection.take() {
                    old.abort();
                }
                let connect = async {
                    let (client, connection) = self.target.connect().await?;
                    let connection = self.runtime.spawn(connection).abort_handle();
                    // The writer's statements are the same few over and
                    // over, and each plan fits every parameter: planning
                    // them once takes that work out of the time the write
                    // lock is held.
                    match client.batch_execute(WRITER_SESSION).await {
                        Ok(()) => Ok((client, connection)),
                        Err(error) => {
                            connection.abort();
                            Err(error)
                        }
                    }
                };
                let connected = self
                    .runtime
                    .block_on(async { tokio::time::timeout(CONNECT_DEADLINE, connect).await });
                let (client, connection) = match connected {
                    Ok(connected) => connected?,
                    Err(_) => return Err(DbError::timed_out(CONNECT_DEADLINE)),
                };
                self.connection = Some(connection);
                client
            }
        };
        Ok(Session {
            runtime: &self.runtime,
            client: self.client.insert(client),
            connection: self.connection.as_ref(),
            statements: &self.statements,
            cache: &self.cache,
            reads: &self.reads,
        })
    }
}

impl Session<'_> {
    /// Waits for `f`, a round trip on this session's connection; past
    /// [`ROUND_TRIP_DEADLINE`] the connection is dropped, so `f` fails as
    /// on a broken connection (and the next batch connects afresh).
    fn run<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(async {
            let mut f = std::pin::pin!(f);
            tokio::select! {
                biased;
                out = &mut f => out,
                () = tokio::time::sleep(ROUND_TRIP_DEADLINE) => {
                    tracing::warn!(deadline = ?ROUND_TRIP_DEADLINE, "the database did not answer the writer in time; dropping the connection");
                    if let Some(connection) = self.connection {
                        connection.abort();
                    }
                    f.await
                }
            }
        })
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

impl Session<'_> {
    /// Opens the batch's transaction, waits for the write lock, learns
    /// whether another replica wrote since this writer's last batch (then
    /// the cache starts empty) and reads what the batch will likely read
    /// (see `prefetch`), in one round trip. The batch commits without
    /// waiting for its WAL to reach the disk, so the lock passes on at
    /// once; the flush is awaited after the lock is released (see
    /// `PgBatch::send`).
    fn begin(&self) -> Result<(), DbError> {
        let begin = format!(
            "BEGIN; SET LOCAL synchronous_commit TO off; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        );
        let likely = self.reads.borrow().likely();
        let asks = Asks::of(&likely);
        let (newest, gets, ascending, descending) = self.run(async {
            let version = self.statement(VERSION).await?;
            let get_many = self.statement(GET_MANY).await?;
            let ranges_asc = self.statement(prefetch::RANGES_ASC).await?;
            let ranges_desc = self.statement(prefetch::RANGES_DESC).await?;
            let lock = self.client.batch_execute(&begin);
            let newest = self.client.query_one(&version, &[]);
            let gets = async {
                if asks.gets.0.is_empty() {
                    return Ok(Vec::new());
                }
                let params: [&(dyn ToSql + Sync); 2] = [&asks.gets.0, &asks.gets.1];
                self.client.query(&get_many, &params).await
            };
            let ascending = query_ranges(self.client, &ranges_asc, &asks.ascending);
            let descending = query_ranges(self.client, &ranges_desc, &asks.descending);
            tokio::try_join!(biased; lock, newest, gets, ascending, descending)
                .map(|((), row, gets, asc, desc)| (row.get::<_, i64>(0), gets, asc, desc))
        })?;
        let mut cache = self.cache.borrow_mut();
        let cold = cache.version() != Some(newest);
        if cold {
            cache.empty();
            cache.at(newest);
        }
        self.reads.borrow_mut().begun(cold);
        prefetch::Answers::of(&gets, &ascending, &descending)?.keep(&mut cache, &likely);
        Ok(())
    }
}

async fn query_ranges(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    ranges: &prefetch::Ranges<'_>,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let params: [&(dyn ToSql + Sync); 4] =
        [&ranges.tables, &ranges.starts, &ranges.ends, &ranges.limits];
    client.query(statement, &params).await
}

impl Conn for Session<'_> {
    fn rows(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, DbError> {
        Ok(self.run(async {
            let statement = self.statement(sql).await?;
            self.client.query(&statement, params).await
        })?)
    }
}

pub(super) fn write_loop(inner: &Inner, jobs: &mpsc::Receiver<Job>) {
    let mut conn = match WriterConn::new(inner.target.clone()) {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(%error, "cannot start the writer's runtime");
            return;
        }
    };
    while let Some(mut batch) = next_batch(jobs) {
        // A replica that knows it lost its database says so at once, rather
        // than after a round trip's deadline, and connects afresh once it
        // is back (the old connection may be black-holed).
        if let Some(reason) = inner.lost() {
            conn.disconnect();
            let error = lost_error(&reason);
            for job in batch {
                job(Err(&error))(None);
            }
            continue;
        }
        let session = conn.session().map_err(db_error).and_then(|session| {
            if let Err(error) = session.begin() {
                session.cache.borrow_mut().forget();
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
        while batch.len() < MAX_BATCH {
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
            cache: session.cache,
            reads: session.reads,
            started: chrono::Utc::now(),
        };
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(Ok(&mut txn))).collect();
        let outcome = txn.commit(&inner.replica);
        session.reads.borrow_mut().finish();
        let outcome = match outcome {
            Ok(notice) => {
                if let Ok(mut failed) = inner.failed_commit.lock() {
                    failed.take();
                }
                if let Some(notice) = notice {
                    inner.announce(notice);
                }
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "commit failed; every request in the batch gets the error");
                inner.failed(&error);
                session.cache.borrow_mut().forget();
                let _ = session.run(session.client.batch_execute("ROLLBACK"));
                Err(error)
            }
        };
        for completion in completions {
            completion(outcome.as_ref().err());
        }
    }
}
