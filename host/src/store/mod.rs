//! Everything the control plane keeps, in one redb file. The only module that
//! knows redb. Records are JSON values in `&str`-keyed tables; secondary
//! indexes are maintained here, on every write, from the record itself, so a
//! record and its index entries always change in the same transaction.
//!
//! Writes go through one writer thread that groups whatever requests are
//! waiting into one transaction and one fsync (group commit). A request is
//! answered only after its transaction committed: an acknowledged write
//! survives `kill -9`.

mod records;
mod tables;

pub use records::{
    Records, RunFilter, RunPage, deployment_counter, pool_counter, queue_counter, time_key,
};
pub use tables::Raw;

use crate::error::ApiError;
use crate::events::{Change, Events};
use redb::{Database, ReadableDatabase, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::oneshot;

/// Requests grouped into one transaction at most.
const MAX_BATCH: usize = 512;

type Completion = Box<dyn FnOnce(Option<&ApiError>) + Send>;
/// Runs a request in the batch's transaction, or learns that there is none.
type Job = Box<dyn FnOnce(Result<&WriteTransaction, &ApiError>) -> Completion + Send>;

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Replaced by a fresh handle after a failed commit: redb refuses every
    /// call on a handle that saw an I/O error.
    db: RwLock<Option<Arc<Database>>>,
    writer: mpsc::Sender<Job>,
    /// Writes are refused (507) while the disk has less free space than this,
    /// before redb can run into ENOSPC mid-commit.
    min_free_bytes: u64,
    /// Why the last commit failed, until one succeeds.
    failed_commit: Mutex<Option<String>>,
    events: Arc<Events>,
}

/// How the store is doing, for `/api/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Reads work, writes are refused: the reason.
    Degraded(String),
}

/// Free space the store wants before it writes, by default.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 16 << 20;

/// A consistent read view.
pub struct Snapshot {
    txn: redb::ReadTransaction,
}

/// The write side, handed to one request inside the shared transaction. A
/// request must check everything before it changes anything: an error it
/// returns does not undo its own earlier writes in the batch.
pub struct Writer<'a> {
    txn: &'a WriteTransaction,
    /// What this request changed, published once the batch commits.
    changes: Vec<Change>,
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("storage error: {e}"))
}

impl Store {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, ApiError> {
        Self::open_with(path, DEFAULT_MIN_FREE_BYTES)
    }

    /// Opens or creates the database at `path`, refusing writes while its
    /// disk has less than `min_free_bytes` free. A file that is not a sound
    /// database is refused and left untouched.
    pub fn open_with(path: &Path, min_free_bytes: u64) -> Result<Store, ApiError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(storage)?;
        }
        check_existing(path)?;
        let db = Arc::new(open_database(path)?);
        let txn = db.begin_write().map_err(storage)?;
        tables::create_all(&txn)?;
        txn.commit().map_err(storage)?;
        let (writer, jobs) = mpsc::channel::<Job>();
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            writer,
            min_free_bytes,
            failed_commit: Mutex::new(None),
            events: Arc::default(),
        });
        let thread_inner = inner.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&thread_inner, &jobs))
            .map_err(storage)?;
        Ok(Store { inner })
    }

    /// The feed of committed changes.
    pub fn events(&self) -> &Arc<Events> {
        &self.inner.events
    }

    pub fn read<R>(&self, f: impl FnOnce(&Snapshot) -> Result<R, ApiError>) -> Result<R, ApiError> {
        let txn = self.inner.database()?.begin_read().map_err(storage)?;
        f(&Snapshot { txn })
    }

    /// Reads work whenever the file does; writes need disk space and a
    /// commit that went through.
    pub fn health(&self) -> Health {
        if let Err(error) = self.inner.space_for_writes() {
            return Health::Degraded(error.message);
        }
        match self.inner.failed_commit.lock().ok().and_then(|f| f.clone()) {
            Some(reason) => Health::Degraded(reason),
            None => Health::Ok,
        }
    }

    /// Runs `f` in a write transaction and answers once it is durable.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let (tx, rx) = oneshot::channel();
        let events = self.inner.events.clone();
        let job: Job = Box::new(move |txn| {
            let (result, changes) = match txn {
                Ok(txn) => {
                    let mut writer = Writer {
                        txn,
                        changes: Vec::new(),
                    };
                    (f(&mut writer), writer.changes)
                }
                Err(error) => (Err(error.clone()), Vec::new()),
            };
            Box::new(move |commit_error: Option<&ApiError>| {
                let answer = match commit_error {
                    Some(error) => Err(error.clone()),
                    None => {
                        events.publish(changes);
                        result
                    }
                };
                let _ = tx.send(answer);
            })
        });
        self.inner
            .writer
            .send(job)
            .map_err(|_| ApiError::internal("the store's writer has stopped"))?;
        rx.await
            .map_err(|_| ApiError::internal("the store's writer dropped a request"))?
    }
}

impl Inner {
    fn database(&self) -> Result<Arc<Database>, ApiError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                ApiError::unavailable(format!(
                    "{} could not be reopened after a failed write; retrying at the next write",
                    self.path.display()
                ))
            })
    }

    fn space_for_writes(&self) -> Result<(), ApiError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let Some(free) = free_bytes(dir) else {
            return Ok(());
        };
        if free >= self.min_free_bytes {
            return Ok(());
        }
        Err(ApiError::insufficient_storage(format!(
            "the server's disk is full: {} MiB free in {}, writes need {} MiB; reads still work, and writes resume once space is freed",
            free >> 20,
            dir.display(),
            self.min_free_bytes >> 20
        )))
    }

    /// A fresh handle after a failed commit. The old one must be gone first:
    /// redb holds a lock on the file while a handle lives.
    fn reopen(&self) -> Result<(), ApiError> {
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
fn check_existing(path: &Path) -> Result<(), ApiError> {
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

fn damaged(path: &Path, why: &str) -> ApiError {
    ApiError::internal(format!(
        "{} cannot be used: {why}. It was left untouched; restore it from a backup, or move it away to start with a new, empty database",
        path.display()
    ))
}

/// redb asserts (panics) on some damaged files, e.g. a truncated one; that
/// is an error about the file, not a crash of the server.
fn open_database(path: &Path) -> Result<Database, ApiError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| Database::create(path));
    std::panic::set_hook(previous);
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(storage(format!("cannot open {}: {e}", path.display()))),
        Err(_) => Err(damaged(path, "it is damaged (truncated?)")),
    }
}

#[allow(unsafe_code)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: statvfs(3) writes only into `stat`, which is large enough; the
    // path is a valid NUL-terminated string.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion)] // c_ulong is u32 on some targets
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

fn write_loop(inner: &Inner, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
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
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(Ok(&txn))).collect();
        let outcome = txn.commit().map_err(|e| {
            // Most often the disk filled up between the check and the commit.
            match inner.space_for_writes() {
                Err(full) => full,
                Ok(()) if e.to_string().contains("No space left") => {
                    ApiError::insufficient_storage(format!(
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
                    *failed = Some(format!("the last write failed: {}", error.message));
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
