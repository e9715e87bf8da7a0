//! Durable storage for facesearch: face indexes (databases), records (enrolled people),
//! their images and embeddings, and users.
//!
//! # Why this crate exists
//!
//! The HTTP layer must not know how data is kept. Everything it needs is behind the
//! async [`Store`] trait (one role trait per concern, see [`traits`]), expressed in domain types ([`IndexInfo`], [`Record`],
//! [`User`], ...) rather than SQL rows. Two implementations:
//!
//! * [`SqliteStore`], the embedded default: no separate server, one file,
//!   `facesearch.sqlite3`, in the data directory. The engine keeps the vectors in
//!   memory; that in-memory index is *derived* state, rebuilt from
//!   [`RecordStore::embeddings`] (or a snapshot checked against [`RecordStore::vectors_version`]).
//! * [`PostgresStore`], for several stateless nodes sharing one PostgreSQL with
//!   pgvector: it searches its own vectors ([`VectorStore`]), so no node holds
//!   them. [`copy`] moves an embedded store into it (`facesearch migrate`).
//!
//! Either way the store is the single source of truth.
//!
//! # Durability design (SQLite)
//!
//! * **An acknowledged write is on disk.** The database runs in WAL mode with
//!   `synchronous=FULL`, so every commit fsyncs the write-ahead log before returning.
//!   The API answers an enrolment only after [`RecordStore::enrol`] returns, i.e. after the
//!   commit; a `kill -9` (or power loss) right after the response cannot lose it.
//! * **One atomic commit per enrolment.** The record, its image bytes (a BLOB) and
//!   its embedding are written in one transaction. Image bytes live *inside* the
//!   database rather than as files next to it, because a file write and a database
//!   commit cannot be made atomic together: a crash between them leaves either an
//!   orphan file (biometric data nobody can find or delete) or a record pointing at a
//!   missing image. With one transaction there is nothing to reconcile after a crash,
//!   and a backup of the database (e.g. `VACUUM INTO`) is a complete backup.
//! * **Deletion really deletes biometric data.** Images and embeddings hang off their
//!   record, and records off their index, with `ON DELETE CASCADE`; deleting a record
//!   or an index removes all of it in the same transaction. `PRAGMA secure_delete=ON`
//!   makes SQLite overwrite the freed content with zeros instead of leaving it in
//!   free pages, and after such a delete the WAL is checkpointed and truncated
//!   (best effort: a concurrent long reader may postpone it to a later checkpoint),
//!   so old page images in the log do not linger either.
//! * **Referential integrity is enforced by the database** (`foreign_keys=ON`), and
//!   `record_count` is kept exact by triggers in the same transaction as the insert or
//!   delete, so it can never drift. [`BackendStore::integrity_check`] runs
//!   `PRAGMA integrity_check`, `PRAGMA foreign_key_check` and verifies the counters.
//! * **Versioned schema.** The schema version lives in `PRAGMA user_version`; an
//!   ordered list of SQL migration steps is applied at open, each in its own
//!   transaction together with the version bump, so an interrupted upgrade leaves the
//!   database at a well-defined version. A database newer than the running build is
//!   refused rather than misread.
//! * **Concurrency.** One writer connection behind a mutex (SQLite allows one writer
//!   at a time anyway) plus a small pool of read-only connections; WAL lets readers run
//!   while a write is in progress. All blocking work runs in
//!   `tokio::task::spawn_blocking`, and password hashing (deliberately slow) runs
//!   outside any database lock.
//! * **Passwords** are Argon2id hashes (PHC strings) with a random salt. Verifying an
//!   unknown user still runs a full Argon2 verification against a dummy hash, so the
//!   response time does not reveal which usernames exist.
//!
//! Not-found outcomes are `Option`/`bool` return values; [`StoreError`] is reserved for
//! real failures and constraint violations the caller must report.

use std::path::PathBuf;
use std::sync::Arc;

mod common;
pub mod copy;
mod error;
mod postgres;
mod sqlite;
mod time;
pub mod traits;
mod types;

pub use error::{BackendError, StoreError};
/// The model pack, re-exported so that callers of the store need not name the models crate.
pub use facesearch_models::Pack;
pub use postgres::{PostgresConfig, PostgresStore, redact_url};
pub use sqlite::{DB_FILE as SQLITE_FILE, SqliteStore};
pub use time::{format_rfc3339, now_rfc3339};
pub use traits::{
    AuditStore, BackendStore, IndexStore, RecordStore, ReembedStore, Store, UserStore, VectorStore, prelude,
};
pub use types::*;

/// Which database holds the data.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded SQLite store in this data directory (created if missing).
    Sqlite { data_dir: PathBuf },
    /// PostgreSQL with pgvector.
    Postgres(PostgresConfig),
}

impl StoreConfig {
    /// Where the data is, for messages: the data directory, or the database URL
    /// without its password.
    pub fn location(&self) -> String {
        match self {
            StoreConfig::Sqlite { data_dir } => data_dir.display().to_string(),
            StoreConfig::Postgres(pg) => redact_url(&pg.url),
        }
    }
}

/// Opens the configured store, applying pending schema migrations: the one way every
/// command opens its database.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        // Creating the file and migrating it are blocking work: off the async threads.
        StoreConfig::Sqlite { data_dir } => {
            let dir = data_dir.clone();
            Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(&dir)).await??)
        }
        StoreConfig::Postgres(pg) => Arc::new(PostgresStore::connect(pg).await?),
    })
}
