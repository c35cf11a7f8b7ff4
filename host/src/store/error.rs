//! What can go wrong in the store, as it happens. Each variant says what
//! became of the write: callers (and, through `control`, clients) decide
//! from it whether to retry here, elsewhere, or not at all.

use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Nothing was written: the database cannot be reached or cannot be
    /// used just now. Another replica may do it.
    #[error("{0}")]
    Unavailable(String),
    /// The commit was sent and no answer came: the write may or may not
    /// have been made, so it must not be made again elsewhere unread.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The disk is too full to write; reads still work.
    #[error("{0}")]
    DiskFull(String),
    /// A record, or the database file, that cannot be decoded or used.
    #[error("{0}")]
    Corrupt(String),
    /// A listing cursor that is not one the store handed out.
    #[error("cursor: not a next_cursor (pairs of hex digits)")]
    BadCursor,
    /// A database URL that cannot be parsed.
    #[error(
        "database_url: not a PostgreSQL URL ({0}); expected postgres://user:password@host:port/database"
    )]
    BadUrl(String),
    /// Anything else from the database library, the file system or the
    /// writer thread.
    #[error("{0}")]
    Internal(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// An internal error from whatever the layer below said.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Internal(Arc::from(e.into()))
    }
}
