//! The embedded default [`Store`](crate::Store): one SQLite file in the data directory.
//! See the crate documentation for the durability design.

//!
//! One file per concern: [`indexes`], [`records`] (with [`images`]), [`users`],
//! [`audit`], [`jobs`] (re-embedding); [`schema`] holds the migrations. This file opens
//! the database and runs work on the blocking pool.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::Pack;
use crate::common::{
    INDEX_COLS, IndexColumns, JOB_COLS, JobRow, RECORD_COLS, RecordRow, USER_COLS, UserColumns, check_image,
    check_pack, check_vector, count_u64, decode_cursor, encode_cursor, hash_password, index_from_columns, live_figures,
    new_id, patch_record, reference_in_use, reference_taken, to_json, user_from_columns, users_with_grants,
    validate_username, verified, with_images,
};
use crate::error::BackendError;
use crate::time::now_rfc3339;
use crate::traits::{AuditStore, BackendStore, IndexStore, RecordStore, ReembedStore, UserStore};
use crate::{
    AuditEvent, AuditQuery, EmbeddingRow, EnrolOutcome, ImageSummary, IndexInfo, IndexPatch, JobState,
    MAX_LISTED_FAILURES, NewAuditEvent, NewImage, NewIndex, PackSwitch, PendingImage, Record, RecordFields,
    RecordPatch, ReembedFailure, ReembedJob, ReembedStart, Role, StoreError, StoredImage, User,
};

mod audit;
mod images;
mod indexes;
mod jobs;
mod records;
mod schema;
mod users;

use self::{images::*, records::*, schema::*};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "facesearch.sqlite3";
/// Read-only connections kept open next to the single writer.
const READERS: usize = 4;
/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the post-erasure WAL checkpoint may wait for readers before giving up.
const ERASE_CHECKPOINT_WAIT: Duration = Duration::from_millis(200);

/// The SQLite implementation of [`Store`](crate::Store). Cheap to share behind an `Arc`.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Verified instead of a real hash for unknown users (timing equalisation).
    dummy_hash: String,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

/// Makes the database file readable by its owner only; SQLite gives its -wal and -shm
/// files the same permissions.
fn restrict_to_owner(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = path;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/facesearch.sqlite3`, creating `data_dir`
    /// (mode 0700 on Unix) if it does not exist, and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        warn_if_shared(data_dir);
        let path = data_dir.join(DB_FILE);
        create_private_file(&path)?;

        let mut writer = Connection::open(&path).ctx("opening the database")?;
        restrict_to_owner(&path)?;
        configure(&writer, false)?;
        migrate(&mut writer)?;

        let readers = (0..READERS)
            .map(|_| {
                let conn = Connection::open(&path).ctx("opening a reader connection")?;
                configure(&conn, true)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let dummy_hash = hash_password("facesearch timing-equalisation dummy")?;
        tracing::info!(path = %path.display(), "store opened");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                dummy_hash,
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the blocking pool. The task runs to completion even if the calling
    /// future is dropped, so a started write is either fully committed or rolled back.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }

    /// Runs a read on one of the read-only connections, on the blocking pool (for
    /// [`crate::copy`], which reads tables the trait does not expose).
    pub(crate) async fn read_raw<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |inner| inner.read(f)).await
    }
}

/// Maps an SQLite error with its context (for [`crate::copy`]).
pub(crate) fn sqlite_err(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| backend_error(context, source)
}

/// Wraps an SQLite error; busy and locked databases are transient (another writer,
/// possibly another process, holds the lock).
pub(crate) fn backend_error(context: &'static str, source: rusqlite::Error) -> StoreError {
    let transient = matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    StoreError::Backend(BackendError::new("sqlite", context, transient, source))
}

/// A poisoned lock only means a panic happened while it was held; the connection is
/// still consistent because an unfinished `Transaction` rolls back when dropped.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = lock(&self.writer);
        f(&mut conn)
    }

    fn read<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            match self.readers[(start + k) % n].try_lock() {
                Ok(mut conn) => return f(&mut conn),
                Err(TryLockError::Poisoned(p)) => return f(&mut p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let mut conn = lock(&self.readers[start % n]);
        f(&mut conn)
    }

    /// A consistent read: one transaction on a read-only connection.
    fn read_tx<T>(&self, f: impl FnOnce(&rusqlite::Transaction) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.read(|conn| {
            let tx = conn.transaction().ctx("starting a read")?;
            f(&tx)
        })
    }
}

// ---------------------------------------------------------------------------------
// Setup

/// Creates the database file mode 0600 before SQLite opens it (SQLite would create it
/// with the umask's mode until [`restrict_to_owner`] runs); an existing file is left
/// as it is.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    let _ = path;
    Ok(())
}

/// Warns when the data directory (which the administrator may have made beforehand)
/// can be read or entered by other users: everything facesearch creates in it is
/// owner-only, but the directory's own mode is the administrator's to choose.
fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %dir.display(),
                    mode = %format!("{mode:04o}"),
                    "the data directory is accessible to group or other users; the files facesearch creates in it \
                     are owner-only (0600, directories 0700), but the directory should be 0700 too (chmod 700)"
                );
            }
        }
    }
    let _ = dir;
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    Ok(())
}

fn configure(conn: &Connection, reader: bool) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).ctx("setting busy_timeout")?;
    if !reader {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).ctx("enabling WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "SQLite refused WAL mode; continuing with a rollback journal");
        }
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )
    .ctx("configuring the connection")?;
    if reader {
        conn.execute_batch("PRAGMA query_only = ON;").ctx("configuring a reader")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Small helpers

trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| backend_error(context, source))
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn immediate<'c>(conn: &'c mut Connection, context: &'static str) -> Result<Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).ctx(context)
}

/// After deleting biometric data: fold the WAL into the main file and truncate it, so
/// the pre-delete page images do not linger in the log (`secure_delete` already zeroed
/// the freed content in the main file). Best effort: if a reader still holds an old
/// snapshot the checkpoint is partial and a later one completes it.
fn checkpoint_after_erase(conn: &Connection) {
    if let Err(e) = conn.busy_timeout(ERASE_CHECKPOINT_WAIT) {
        tracing::warn!(error = %e, "could not shorten busy_timeout for checkpoint");
    }
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    }) {
        Ok((0, _, _)) => {}
        Ok((busy, log, done)) => {
            tracing::debug!(busy, log, done, "post-erasure WAL checkpoint incomplete; a later one will finish it");
        }
        Err(e) => tracing::warn!(error = %e, "post-erasure WAL checkpoint failed"),
    }
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "could not restore busy_timeout");
    }
}

// ---------------------------------------------------------------------------------
// The backend

#[async_trait::async_trait]
impl BackendStore for SqliteStore {
    async fn integrity_check(&self) -> Result<(), StoreError> {
        self.run(|inner| {
            inner.read_tx(|tx| {
                let problems = tx
                    .prepare("PRAGMA integrity_check")
                    .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>())
                    .ctx("running integrity_check")?;
                if problems.len() != 1 || problems[0] != "ok" {
                    let shown: Vec<_> = problems.into_iter().take(10).collect();
                    return Err(StoreError::Corrupt(format!("integrity_check: {}", shown.join("; "))));
                }
                let fk = tx
                    .prepare("PRAGMA foreign_key_check")
                    .and_then(|mut s| {
                        s.query_map([], |r| {
                            Ok(format!(
                                "{} row {:?} -> {}",
                                r.get::<_, String>(0)?,
                                r.get::<_, Option<i64>>(1)?,
                                r.get::<_, String>(2)?
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .ctx("running foreign_key_check")?;
                if !fk.is_empty() {
                    let shown: Vec<_> = fk.into_iter().take(10).collect();
                    return Err(StoreError::Corrupt(format!("foreign_key_check: {}", shown.join("; "))));
                }
                let drift = tx
                    .prepare(
                        "SELECT i.id FROM indexes i
                         WHERE i.record_count != (SELECT COUNT(*) FROM records r WHERE r.index_id = i.id)",
                    )
                    .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>())
                    .ctx("checking record counts")?;
                if !drift.is_empty() {
                    return Err(StoreError::Corrupt(format!("record_count wrong for index(es) {}", drift.join(", "))));
                }
                // An index's live vectors are all of its pack: packs never mix.
                let mixed = tx
                    .prepare(
                        "SELECT DISTINCT x.id FROM embeddings e JOIN images i ON i.id = e.image_id
                         JOIN records r ON r.id = i.record_id JOIN indexes x ON x.id = r.index_id
                         WHERE e.pack <> x.pack",
                    )
                    .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>())
                    .ctx("checking embedding packs")?;
                if !mixed.is_empty() {
                    return Err(StoreError::Corrupt(format!(
                        "vectors of another pack than the index's in index(es) {}",
                        mixed.join(", ")
                    )));
                }
                Ok(())
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|inner| {
            inner.read(|conn| {
                conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).ctx("pinging")?;
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> StoreError {
        backend_error("testing", rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None))
    }

    #[test]
    fn outages_and_lost_races_are_transient_faults_are_not() {
        assert!(StoreError::Unavailable { context: "testing", detail: "down".into() }.is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_LOCKED).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_transient());
        assert!(!StoreError::Corrupt("a row".into()).is_transient());
        assert!(!StoreError::UnsupportedSchema { found: 9, supported: 8 }.is_transient());
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_BUSY).to_string().split(" while ").next(), Some("sqlite error"));
    }
}
