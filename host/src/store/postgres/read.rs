//! Reads outside a batch, and the statements a batch's reads share.

use super::{DbError, Inner, db_error};
use crate::store::StoreError;
use crate::store::tables::{Def, ReadTxn};
use std::sync::Arc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub(super) type Rows = Vec<(String, Vec<u8>)>;

const GET: &str = "SELECT value FROM kv WHERE tbl = $1 AND key = $2";
const RANGE_ASC: &str = "SELECT key, value FROM kv WHERE tbl = $1 AND key >= $2 AND key < $3 \
                         ORDER BY key LIMIT $4";
const RANGE_DESC: &str = "SELECT key, value FROM kv WHERE tbl = $1 AND key >= $2 AND key < $3 \
                          ORDER BY key DESC LIMIT $4";
/// Every key of `$2` in table `$1` that has a row, by its place in the
/// list (counted from 1). The `LIMIT` keeps the lookup a subquery, one
/// index probe per key: as a join, a generic plan may scan all of `kv`.
pub(super) const GET_MANY: &str = "SELECT g.i, v.value \
     FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS g(tbl, key, i) \
     CROSS JOIN LATERAL (SELECT value FROM kv WHERE kv.tbl = g.tbl AND kv.key = g.key LIMIT 1) v";
const KEYS: &str = "SELECT key FROM kv WHERE tbl = $1 ORDER BY key";

/// A read view: one pooled connection, each statement on its own (reads
/// see what was committed when they ran).
pub(super) struct PgRead {
    pub(super) inner: Arc<Inner>,
    pub(super) client: deadpool_postgres::Object,
}

/// How long a read outside a batch may wait for its rows: a database cut
/// off (its packets dropped) must not hold a request, or the scheduler's
/// upkeep, forever. These reads take milliseconds.
const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection that runs one statement and waits for its rows.
pub(super) trait Conn {
    fn rows(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, DbError>;
}

impl Conn for PgRead {
    fn rows(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, DbError> {
        // The timer is made inside `block`, on the store's runtime.
        let rows = self.inner.block(async {
            tokio::time::timeout(READ_DEADLINE, async {
                let statement = self.client.prepare_cached(sql).await?;
                self.client.query(&statement, params).await
            })
            .await
        });
        match rows {
            Ok(rows) => Ok(rows?),
            Err(_) => Err(DbError::timed_out(READ_DEADLINE)),
        }
    }
}

pub(super) fn get_on(conn: &dyn Conn, def: Def, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let rows = conn
        .rows(GET, &[&def.name(), &key.as_bytes()])
        .map_err(db_error)?;
    Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
}

pub(super) fn range_on(
    conn: &dyn Conn,
    def: Def,
    start: &str,
    end: &str,
    descending: bool,
    limit: usize,
) -> Result<Rows, StoreError> {
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

fn key_text(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::internal("database error: a key is not UTF-8"))
}

pub(super) fn keys_on(
    conn: &dyn Conn,
    def: Def,
    f: &mut dyn FnMut(&str),
) -> Result<(), StoreError> {
    let rows = conn.rows(KEYS, &[&def.name()]).map_err(db_error)?;
    for row in &rows {
        f(&key_text(row.get(0))?);
    }
    Ok(())
}

impl ReadTxn for PgRead {
    fn get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get_on(self, def, key)
    }
    fn range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        range_on(self, def, start, end, descending, limit)
    }
    fn keys(&self, def: Def, f: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        keys_on(self, def, f)
    }
}
