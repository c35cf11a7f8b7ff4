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
use redb::{Database, ReadableDatabase, WriteTransaction};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Requests grouped into one transaction at most.
const MAX_BATCH: usize = 512;

type Completion = Box<dyn FnOnce(Option<&ApiError>) + Send>;
/// Runs a request in the batch's transaction, or learns that there is none.
type Job = Box<dyn FnOnce(Result<&WriteTransaction, &ApiError>) -> Completion + Send>;

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: mpsc::Sender<Job>,
}

/// A consistent read view.
pub struct Snapshot {
    txn: redb::ReadTransaction,
}

/// The write side, handed to one request inside the shared transaction. A
/// request must check everything before it changes anything: an error it
/// returns does not undo its own earlier writes in the batch.
pub struct Writer<'a> {
    txn: &'a WriteTransaction,
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("storage error: {e}"))
}

impl Store {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, ApiError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(storage)?;
        }
        let db = Arc::new(Database::create(path).map_err(storage)?);
        let txn = db.begin_write().map_err(storage)?;
        tables::create_all(&txn)?;
        txn.commit().map_err(storage)?;
        let (writer, jobs) = mpsc::channel::<Job>();
        let thread_db = db.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&thread_db, &jobs))
            .map_err(storage)?;
        Ok(Store { db, writer })
    }

    pub fn read<R>(&self, f: impl FnOnce(&Snapshot) -> Result<R, ApiError>) -> Result<R, ApiError> {
        let txn = self.db.begin_read().map_err(storage)?;
        f(&Snapshot { txn })
    }

    /// Runs `f` in a write transaction and answers once it is durable.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let result = match txn {
                Ok(txn) => f(&mut Writer { txn }),
                Err(error) => Err(error.clone()),
            };
            Box::new(move |commit_error: Option<&ApiError>| {
                let answer = match commit_error {
                    Some(error) => Err(error.clone()),
                    None => result,
                };
                let _ = tx.send(answer);
            })
        });
        self.writer
            .send(job)
            .map_err(|_| ApiError::internal("the store's writer has stopped"))?;
        rx.await
            .map_err(|_| ApiError::internal("the store's writer dropped a request"))?
    }
}

fn write_loop(db: &Database, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let error = storage(e);
                tracing::error!(%error, "cannot begin a write transaction");
                for job in batch {
                    job(Err(&error))(None);
                }
                continue;
            }
        };
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(Ok(&txn))).collect();
        let outcome = txn.commit().map_err(storage).err();
        if let Some(error) = &outcome {
            tracing::error!(%error, "commit failed; the batch is lost and every request in it gets the error");
        }
        for completion in completions {
            completion(outcome.as_ref());
        }
    }
}
