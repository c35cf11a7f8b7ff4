//! The embedded backend: one redb file, one writer thread.
//!
//! A batch is answered once redb's commit returned, with its default
//! durability (the file is synced): an acknowledged write survives a crash
//! of the process or the machine.

use super::tables::{self, Def, ReadTxn, WriteTxn};
use super::{Backend, Health, Job, next_batch, storage};
use crate::store::StoreError;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

fn table(def: Def) -> Table {
    TableDefinition::new(def.name())
}

pub(super) struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Replaced by a fresh handle after a failed commit: redb refuses every
    /// call on a handle that saw an I/O error.
    db: RwLock<Option<Arc<Database>>>,
    /// Writes are refused (507) while the disk has less free space than this,
    /// before redb can run into ENOSPC mid-commit.
    min_free_bytes: u64,
    /// Why the last commit failed, until one succeeds.
    failed_commit: Mutex<Option<String>>,
}

impl RedbStore {
    pub(super) fn open(
        path: &Path,
        min_free_bytes: u64,
        jobs: mpsc::Receiver<Job>,
    ) -> Result<Arc<RedbStore>, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(storage)?;
        }
        check_existing(path)?;
        check_integrity(path)?;
        let db = Arc::new(open_database(path)?);
        let txn = db.begin_write().map_err(storage)?;
        for def in tables::ALL {
            txn.open_table(table(def)).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            min_free_bytes,
            failed_commit: Mutex::new(None),
        });
        let (thread_inner, failed_inner) = (inner.clone(), inner.clone());
        super::spawn_writer(
            move || write_loop(&thread_inner, &jobs),
            // Also makes the next batch reopen the file: redb's handle may
            // be in any state after a panic inside it.
            move |reason| {
                if let Ok(mut failed) = failed_inner.failed_commit.lock() {
                    *failed = Some(reason);
                }
            },
        )
        .map_err(storage)?;
        Ok(Arc::new(RedbStore { inner }))
    }
}

impl Backend for RedbStore {
    fn snapshot(&self) -> Result<Box<dyn ReadTxn>, StoreError> {
        let txn = self.inner.database()?.begin_read().map_err(storage)?;
        Ok(Box::new(txn))
    }

    fn health(&self) -> Health {
        if let Err(error) = self.inner.space_for_writes() {
            return Health::Degraded(error.to_string());
        }
        match self.inner.failed_commit.lock().ok().and_then(|f| f.clone()) {
            Some(reason) => Health::Degraded(reason),
            None => Health::Ok,
        }
    }

    fn lead(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        // One file, one server: it always leads.
        Box::pin(std::future::ready(true))
    }

    fn location(&self) -> String {
        self.inner.path.display().to_string()
    }
}

fn get_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
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
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
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

fn keys_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    f: &mut dyn FnMut(&str),
) -> Result<(), StoreError> {
    for item in table.iter().map_err(storage)? {
        let (key, _) = item.map_err(storage)?;
        f(key.value());
    }
    Ok(())
}

impl ReadTxn for redb::ReadTransaction {
    fn get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get_in(&self.open_table(table(def)).map_err(storage)?, key)
    }
    fn range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let table = self.open_table(table(def)).map_err(storage)?;
        range_in(&table, start, end, descending, limit)
    }
    fn keys(&self, def: Def, f: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        keys_in(&self.open_table(table(def)).map_err(storage)?, f)
    }
}

/// The batch's transaction as one request sees it.
struct BatchTxn<'t>(&'t WriteTransaction, crate::model::Timestamp);

impl ReadTxn for BatchTxn<'_> {
    fn get(&self, def: Def, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get_in(&self.0.open_table(table(def)).map_err(storage)?, key)
    }
    fn range(
        &self,
        def: Def,
        start: &str,
        end: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let table = self.0.open_table(table(def)).map_err(storage)?;
        range_in(&table, start, end, descending, limit)
    }
    fn keys(&self, def: Def, f: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        keys_in(&self.0.open_table(table(def)).map_err(storage)?, f)
    }
}

impl WriteTxn for BatchTxn<'_> {
    fn put(&mut self, def: Def, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.0
            .open_table(table(def))
            .map_err(storage)?
            .insert(key, value)
            .map_err(storage)?;
        Ok(())
    }
    fn delete(&mut self, def: Def, key: &str) -> Result<(), StoreError> {
        self.0
            .open_table(table(def))
            .map_err(storage)?
            .remove(key)
            .map_err(storage)?;
        Ok(())
    }
    fn started(&self) -> crate::model::Timestamp {
        self.1
    }
}

impl Inner {
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "{} could not be reopened after a failed write; retrying at the next write",
                    self.path.display()
                ))
            })
    }

    fn space_for_writes(&self) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let Some(free) = free_bytes(dir) else {
            return Ok(());
        };
        if free >= self.min_free_bytes {
            return Ok(());
        }
        Err(StoreError::DiskFull(format!(
            "the server's disk is full: {} MiB free in {}, writes need {} MiB; reads still work, and writes resume once space is freed",
            free >> 20,
            dir.display(),
            self.min_free_bytes >> 20
        )))
    }

    /// A fresh handle after a failed commit. The old one must be gone first:
    /// redb holds a lock on the file while a handle lives.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Readers hold clones for the length of one read; new ones wait on
        // the lock held here.
        for _ in 0..1000 {
            if slot.as_ref().is_none_or(|db| Arc::strong_count(db) == 1) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        slot.take();
        let db = open_database(&self.path)?;
        *slot = Some(Arc::new(db));
        tracing::info!(path = %self.path.display(), "database reopened after a failed commit");
        Ok(())
    }
}

/// Refuses what redb would silently overwrite (an empty file, another
/// format) with a message naming the file and what to do.
fn check_existing(path: &Path) -> Result<(), StoreError> {
    const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(storage(format!("cannot read {}: {e}", path.display()))),
    };
    let mut head = [0u8; 9];
    let read = std::io::Read::read(&mut file, &mut head).map_err(storage)?;
    if read == 0 {
        return Err(damaged(path, "it is empty"));
    }
    if read < MAGIC.len() || head != MAGIC {
        return Err(damaged(path, "it is not a host database (redb)"));
    }
    Ok(())
}

fn damaged(path: &Path, why: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{} cannot be used: {why}. It was left untouched; restore it from a backup, or move it away to start with a new, empty database",
        path.display()
    ))
}

/// redb asserts (panics) on some damaged files, e.g. a truncated one; that
/// is an error about the file, not a crash of the server.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    match quietly(|| Database::create(path)) {
        Some(Ok(db)) => Ok(db),
        Some(Err(e)) => Err(storage(format!("cannot open {}: {e}", path.display()))),
        None => Err(damaged(path, "it is damaged (truncated?)")),
    }
}

/// Verifies every page of the file against its checksum before it is
/// used, so damage in the middle is found at start rather than by a read
/// that panics later. redb's check repairs what it can in place, so it
/// runs on a copy beside the file (a reflink where the filesystem has
/// them): a damaged file is refused as it is. Recovery from an unclean
/// stop (a kill, a power cut) happens on the copy's open and is not
/// damage.
fn check_integrity(path: &Path) -> Result<(), StoreError> {
    if !path.exists() {
        return Ok(());
    }
    let copy = path.with_extension("redb.checking");
    let _ = std::fs::remove_file(&copy);
    if let Err(error) = std::fs::copy(path, &copy) {
        let _ = std::fs::remove_file(&copy);
        tracing::warn!(path = %path.display(), %error, "cannot copy the database to check it; opening it unchecked");
        return Ok(());
    }
    let checked = quietly(|| {
        let mut db = Database::create(&copy)?;
        db.check_integrity()
    });
    let _ = std::fs::remove_file(&copy);
    match checked {
        Some(Ok(true)) => Ok(()),
        Some(Ok(false)) => Err(damaged(
            path,
            "pages of it fail their checksums (what they held would be lost)",
        )),
        Some(Err(e)) => Err(damaged(
            path,
            &format!("it fails its integrity check ({e})"),
        )),
        None => Err(damaged(path, "it is damaged (its check stopped on it)")),
    }
}

/// Runs `f`, a panic inside it becoming `None` and printing nothing.
fn quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Option<T> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(f).ok();
    std::panic::set_hook(previous);
    result
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn write_loop(inner: &Inner, jobs: &mpsc::Receiver<Job>) {
    while let Some(batch) = next_batch(jobs) {
        let ready = inner.space_for_writes().and_then(|()| {
            let failed = inner
                .failed_commit
                .lock()
                .map(|f| f.is_some())
                .unwrap_or(false);
            if failed { inner.reopen() } else { Ok(()) }
        });
        let db = ready.and_then(|()| inner.database());
        let txn = db
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|db| db.begin_write().map_err(storage));
        let txn = match txn {
            Ok(txn) => txn,
            Err(error) => {
                tracing::error!(%error, "cannot write");
                for job in batch {
                    job(Err(&error))(None);
                }
                continue;
            }
        };
        let started = chrono::Utc::now();
        let completions: Vec<super::Completion> = batch
            .into_iter()
            .map(|job| job(Ok(&mut BatchTxn(&txn, started))))
            .collect();
        let outcome = txn.commit().map_err(|e| {
            // Most often the disk filled up between the check and the commit.
            match inner.space_for_writes() {
                Err(full) => full,
                Ok(()) if e.to_string().contains("No space left") => {
                    StoreError::DiskFull(format!(
                        "the server's disk is full ({e}); reads still work, and writes resume once space is freed"
                    ))
                }
                Ok(()) => storage(e),
            }
        });
        drop(db);
        match &outcome {
            Ok(()) => {
                if let Ok(mut failed) = inner.failed_commit.lock() {
                    failed.take();
                }
            }
            Err(error) => {
                tracing::error!(%error, "commit failed; the batch is lost and every request in it gets the error");
                if let Ok(mut failed) = inner.failed_commit.lock() {
                    *failed = Some(format!("the last write failed: {}", error));
                }
                // The old handle refuses even reads after an I/O error.
                if let Err(error) = inner.reopen() {
                    tracing::error!(%error, "cannot reopen the database yet; retrying at the next write");
                }
            }
        }
        for completion in completions {
            completion(outcome.as_ref().err());
        }
    }
}
