//! Table definitions and raw access shared by read snapshots and writers.

use super::{Snapshot, Writer, storage};
use crate::error::ApiError;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

pub type Def = TableDefinition<'static, &'static str, &'static [u8]>;

pub const POOLS: Def = TableDefinition::new("pools");
pub const QUEUES: Def = TableDefinition::new("queues");
pub const WORKERS: Def = TableDefinition::new("workers");
pub const DEPLOYMENTS: Def = TableDefinition::new("deployments");
pub const RUNS: Def = TableDefinition::new("runs");
pub const LOGS: Def = TableDefinition::new("logs");
/// Active-run counts per pool, queue and deployment (u64, little endian).
pub const COUNTERS: Def = TableDefinition::new("counters");
/// SCHEDULED runs by pool, queue, scheduled time: what a claim takes from.
pub const IDX_DUE: Def = TableDefinition::new("idx_due");
/// SCHEDULED runs not yet marked Late, by scheduled time.
pub const IDX_LATE: Def = TableDefinition::new("idx_late");
pub const IDX_CREATED: Def = TableDefinition::new("idx_created");
pub const IDX_STATE: Def = TableDefinition::new("idx_state");
pub const IDX_POOL: Def = TableDefinition::new("idx_pool");
pub const IDX_DEPLOYMENT: Def = TableDefinition::new("idx_deployment");
/// Active runs by the worker holding them.
pub const IDX_WORKER: Def = TableDefinition::new("idx_worker");
/// CANCELLING runs by the worker holding them: what a claim reports back.
pub const IDX_CANCELLING: Def = TableDefinition::new("idx_cancelling");
/// SCHEDULED runs the scheduler made, by deployment id and time.
pub const IDX_AUTO: Def = TableDefinition::new("idx_auto");

const ALL: [Def; 16] = [
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
];

pub fn create_all(txn: &WriteTransaction) -> Result<(), ApiError> {
    for def in ALL {
        txn.open_table(def).map_err(storage)?;
    }
    Ok(())
}

/// Byte-level access that both snapshots and writers offer.
pub trait Raw {
    fn raw_get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, ApiError>;
    /// Entries with keys in `[start, end)`, ascending or descending, at most `limit`.
    fn raw_range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ApiError>;
}

fn get_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, ApiError> {
    Ok(table
        .get(key)
        .map_err(storage)?
        .map(|guard| guard.value().to_vec()))
}

fn range_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    start: &str,
    end: &str,
    descending: bool,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    if start >= end {
        return Ok(Vec::new());
    }
    let range = table.range::<&str>(start..end).map_err(storage)?;
    let entry =
        |item: Result<(redb::AccessGuard<&str>, redb::AccessGuard<&[u8]>), redb::StorageError>| {
            item.map(|(k, v)| (k.value().to_string(), v.value().to_vec()))
                .map_err(storage)
        };
    if descending {
        range.rev().take(limit).map(entry).collect()
    } else {
        range.take(limit).map(entry).collect()
    }
}

impl Raw for Snapshot {
    fn raw_get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        get_in(&self.txn.open_table(def).map_err(storage)?, key)
    }
    fn raw_range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        range_in(
            &self.txn.open_table(def).map_err(storage)?,
            start,
            end,
            descending,
            limit,
        )
    }
}

impl Raw for Writer<'_> {
    fn raw_get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        get_in(&self.txn.open_table(def).map_err(storage)?, key)
    }
    fn raw_range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        range_in(
            &self.txn.open_table(def).map_err(storage)?,
            start,
            end,
            descending,
            limit,
        )
    }
}

impl Writer<'_> {
    pub(super) fn raw_put(&mut self, def: Def, key: &str, value: &[u8]) -> Result<(), ApiError> {
        self.txn
            .open_table(def)
            .map_err(storage)?
            .insert(key, value)
            .map_err(storage)?;
        Ok(())
    }

    pub(super) fn raw_delete(&mut self, def: Def, key: &str) -> Result<(), ApiError> {
        self.txn
            .open_table(def)
            .map_err(storage)?
            .remove(key)
            .map_err(storage)?;
        Ok(())
    }
}

/// The end of a prefix range: every key starting with `prefix` sorts below it.
pub fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl Snapshot {
    /// Calls `f` with every key of `def`, in order, without copying values.
    pub(super) fn for_each_key(&self, def: Def, mut f: impl FnMut(&str)) -> Result<(), ApiError> {
        let table = self.txn.open_table(def).map_err(storage)?;
        for item in table.iter().map_err(storage)? {
            let (key, _) = item.map_err(storage)?;
            f(key.value());
        }
        Ok(())
    }

    /// How many runs each pool has in each state, from the keys of two
    /// indexes (no run is decoded): `(pool, state) → count`.
    pub fn run_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<(String, String), u64>, ApiError> {
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
