//! The writer: batches of requests, one transaction each, under the write lock.

use super::listen::Notice;
use super::read::{Conn, Rows, get_on, keys_on, range_on};
use super::{Inner, WRITE_LOCK, db_error};
use crate::error::ApiError;
use crate::events::Change;
use crate::store::tables::{Def, ReadTxn, WriteTxn};
use crate::store::{Committed, Completion, Job, MAX_BATCH, next_batch};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

const PUT_MANY: &str = "INSERT INTO kv (tbl, key, value) \
                        SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) \
                        ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value";
const DELETE_MANY: &str = "DELETE FROM kv WHERE (tbl, key) IN \
                           (SELECT * FROM unnest($1::text[], $2::bytea[]))";
/// The notification names the writing replica: a replica's own commits do
/// not send it reading.
const RECORD_CHANGES: &str = "WITH c AS (INSERT INTO changes (replica, payload) VALUES ($1, $2) \
                              RETURNING seq) SELECT pg_notify('host_changes', $3 || seq) FROM c";

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

pub(super) fn write_loop(inner: &Inner, jobs: &mpsc::Receiver<Job>) {
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
