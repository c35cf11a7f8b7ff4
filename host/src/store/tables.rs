//! Table names and the byte-level access both backends offer.

use super::{Snapshot, Writer};
use crate::events::Change;
use crate::store::StoreError;

/// A table: ordered `&str` keys to byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Def(&'static str);

impl Def {
    pub const fn name(self) -> &'static str {
        self.0
    }
}

pub const POOLS: Def = Def("pools");
pub const QUEUES: Def = Def("queues");
pub const WORKERS: Def = Def("workers");
pub const DEPLOYMENTS: Def = Def("deployments");
pub const RUNS: Def = Def("runs");
pub const LOGS: Def = Def("logs");
/// Active-run counts per pool, queue and deployment (u64, little endian).
pub const COUNTERS: Def = Def("counters");
/// SCHEDULED runs by pool, queue, scheduled time: what a claim takes from.
pub const IDX_DUE: Def = Def("idx_due");
/// SCHEDULED runs not yet marked Late, by scheduled time.
pub const IDX_LATE: Def = Def("idx_late");
pub const IDX_CREATED: Def = Def("idx_created");
pub const IDX_STATE: Def = Def("idx_state");
pub const IDX_POOL: Def = Def("idx_pool");
pub const IDX_DEPLOYMENT: Def = Def("idx_deployment");
/// Active runs by the worker holding them.
pub const IDX_WORKER: Def = Def("idx_worker");
/// CANCELLING runs by the worker holding them: what a claim reports back.
pub const IDX_CANCELLING: Def = Def("idx_cancelling");
/// SCHEDULED runs the scheduler made, by deployment id and time.
pub const IDX_AUTO: Def = Def("idx_auto");
/// Every run by expected start (scheduled time), with the summary the run
/// list filters on as the value (`find`).
pub const IDX_EXPECTED: Def = Def("idx_expected");
/// Named API tokens by name (their keyed hashes, never the secrets).
pub const TOKENS: Def = Def("tokens");
/// Keys the server makes once and every replica shares (the tokens' HMAC key).
pub const KEYS: Def = Def("keys");

pub const ALL: [Def; 19] = [
    POOLS,
    QUEUES,
    WORKERS,
    DEPLOYMENTS,
    RUNS,
    LOGS,
    COUNTERS,
    IDX_DUE,
    IDX_LATE,
    IDX_CREATED,
    IDX_STATE,
    IDX_POOL,
    IDX_DEPLOYMENT,
    IDX_WORKER,
    IDX_CANCELLING,
    IDX_AUTO,
    IDX_EXPECTED,
    TOKENS,
    KEYS,
];

/// Byte-level reads that both snapshots and writers offer: what `records`
/// builds everything on.
pub trait Raw {
    fn raw_get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with keys in `[start, end)`, ascending or descending, at most `limit`.
    fn raw_range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// What a backend implements for a read view. Keys order byte-wise, as
/// Rust's `str` does.
pub(super) trait ReadTxn {
    fn get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Every key of a table, in order, without the values.
    fn keys(&self, def: Def, f: &mut dyn FnMut(&str)) -> Result<(), StoreError>;
    /// Keys the caller will likely get next, in that order: a backend whose
    /// every read is a round trip may fetch them together when the first is
    /// not at hand. Reads stay reads; this only makes them cheaper.
    fn read_ahead(&self, _def: Def, _keys: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What a backend implements for the transaction a batch of writes shares.
pub(super) trait WriteTxn: ReadTxn {
    fn put(&mut self, def: Def, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn delete(&mut self, def: Def, key: &str) -> Result<(), StoreError>;
    /// The changes one request made, committed with the batch (a backend
    /// shared by several servers tells the others through them).
    fn record(&mut self, _changes: &[Change]) {}
    /// When the batch started: the `now` every request in it shares.
    fn started(&self) -> crate::model::Timestamp;
}

/// Snapshots and writers read alike, through their backend's `ReadTxn`.
trait ReadsThrough {
    fn reader(&self) -> &dyn ReadTxn;
}

impl ReadsThrough for Snapshot {
    fn reader(&self) -> &dyn ReadTxn {
        &*self.txn
    }
}

impl ReadsThrough for Writer<'_> {
    fn reader(&self) -> &dyn ReadTxn {
        &*self.txn
    }
}

impl<T: ReadsThrough> Raw for T {
    fn raw_get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.reader().get(def, key)
    }
    fn raw_range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.reader().range(def, start, end, descending, limit)
    }
}

impl Writer<'_> {
    /// The batch's time, the same for every request in it (so their reads
    /// of "due by now" are the same reads, which a backend can share).
    pub fn now(&self) -> crate::model::Timestamp {
        self.txn.started()
    }

    /// The runs a request will likely read next, in that order (a claim's
    /// due runs): see `ReadTxn::read_ahead`.
    pub fn read_ahead_runs(&self, ids: &[String]) -> Result<(), StoreError> {
        self.txn.read_ahead(RUNS, ids)
    }

    pub(super) fn raw_put(&mut self, def: Def, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.txn.put(def, key, value)
    }

    pub(super) fn raw_delete(&mut self, def: Def, key: &str) -> Result<(), StoreError> {
        self.txn.delete(def, key)
    }
}

/// The end of a prefix range: every key starting with `prefix` sorts below it.
pub fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl Snapshot {
    /// Calls `f` with every key of `def`, in order, without copying values.
    pub(super) fn for_each_key(&self, def: Def, mut f: impl FnMut(&str)) -> Result<(), StoreError> {
        self.txn.keys(def, &mut f)
    }

    /// How many runs each pool has in each state, from the keys of two
    /// indexes (no run is decoded): `(pool, state) → count`.
    pub fn run_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<(String, String), u64>, StoreError> {
        // Both index keys end in `\0{id}`; the pool or state is their first part.
        fn split(key: &str) -> Option<(&str, &str)> {
            Some((key.split('\0').next()?, key.rsplit('\0').next()?))
        }
        let mut pool_of = std::collections::HashMap::new();
        self.for_each_key(IDX_POOL, |key| {
            if let Some((pool, id)) = split(key) {
                pool_of.insert(id.to_string(), pool.to_string());
            }
        })?;
        let mut counts = std::collections::BTreeMap::new();
        self.for_each_key(IDX_STATE, |key| {
            if let Some((state, id)) = split(key)
                && let Some(pool) = pool_of.get(id)
            {
                *counts.entry((pool.clone(), state.to_string())).or_insert(0) += 1;
            }
        })?;
        Ok(counts)
    }
}
