//! The store's errors. Driver errors (`rusqlite`, `sqlx`) are wrapped in an opaque
//! [`BackendError`] where they happen, so nothing above the store depends on a driver,
//! and whether a retry may help is decided by the backend that knows its codes.

use std::error::Error as StdError;

/// Everything that can go wrong in the store. "Not found" is not an error: it is
/// reported as `None` / `false` by the [`Store`](crate::Store) methods.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An index with this `index_name` already exists.
    #[error("an index named {0:?} already exists")]
    DuplicateIndexName(String),
    /// A user with this username already exists.
    #[error("a user named {0:?} already exists")]
    DuplicateUser(String),
    /// Deleting this user would leave no admin: refused, in the same transaction that
    /// would have deleted them (so concurrent deletes on any number of nodes cannot
    /// remove the last admin between them).
    #[error("{0:?} is the last admin and cannot be deleted")]
    LastAdmin(String),
    /// The change would violate a uniqueness rule (e.g. a record `reference` already
    /// used by another record of the same index).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A list cursor that this store did not produce (or that was tampered with).
    #[error("invalid cursor")]
    InvalidCursor,
    /// The caller passed a value the store cannot keep (e.g. an empty embedding).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The stored data is not what this build expects (failed integrity check,
    /// undecodable row, ...).
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer build with a schema this one does not know.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    UnsupportedSchema { found: i64, supported: i64 },
    /// Password hashing failed (should not happen with valid parameters).
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    /// A vector computed by one model pack was handed to an index that holds another
    /// pack's vectors (it moved to another pack meanwhile): embed again with its pack.
    #[error("index {index_id} holds {index_pack:?} vectors, not {vector_pack:?}")]
    PackMismatch { index_id: String, index_pack: String, vector_pack: String },
    /// The database cannot be reached (down, restarting, or every pooled connection
    /// busy past the timeout). Retrying later may succeed.
    #[error("the database is unavailable while {context}: {detail}")]
    Unavailable { context: &'static str, detail: String },
    /// The database driver failed (an SQL error, a lost race, a failed migration, ...).
    /// The driver's own error type stays behind [`BackendError`].
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A filesystem operation failed (creating the data directory).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task running the operation panicked or was cancelled.
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Whether the same request may succeed if retried shortly: the database cannot be
    /// reached, is busy, or the transaction lost a race with another (serialisation
    /// failure, deadlock, lock not available), or the index moved to another pack
    /// meanwhile. Everything else — damaged data, an unknown schema, a failed
    /// migration, an SQL error — is a fault of this server, not an outage.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } | StoreError::PackMismatch { .. } => true,
            StoreError::Backend(b) => b.is_transient(),
            _ => false,
        }
    }
}

/// A failure of the database driver. Its message names the backend and what the store
/// was doing; the driver's error is the [`source`](std::error::Error::source), for logs.
#[derive(Debug, thiserror::Error)]
#[error("{backend} error while {context}: {source}")]
pub struct BackendError {
    backend: &'static str,
    context: &'static str,
    transient: bool,
    #[source]
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl BackendError {
    /// `transient`: the backend judged that the same call may succeed shortly (busy,
    /// locked, a serialisation failure or deadlock).
    pub(crate) fn new(
        backend: &'static str,
        context: &'static str,
        transient: bool,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        BackendError { backend, context, transient, source: Box::new(source) }
    }

    /// Whether retrying shortly may succeed.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}
