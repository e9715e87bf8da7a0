//! The embedded default [`Store`]: one SQLite file in the data directory.
//! See the crate documentation for the durability design.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::common::{
    INDEX_COLS, JOB_COLS, RECORD_COLS, apply_patch, check_image, check_pack, check_vector, count_u64, decode_cursor,
    encode_cursor, hash_password, new_id, password_matches, reference_taken, to_json, validate_username,
};
use crate::time::now_rfc3339;
use crate::{
    AuditEvent, AuditQuery, EmbeddingRow, EnrolOutcome, ImageSummary, IndexInfo, IndexPatch, IndexType, JobState,
    MAX_LISTED_FAILURES, NewAuditEvent, NewImage, NewIndex, PackSwitch, PendingImage, Record, RecordFields,
    RecordPatch, ReembedFailure, ReembedJob, ReembedStart, Role, Store, StoreError, StoredImage, User,
};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "facesearch.sqlite3";
/// Read-only connections kept open next to the single writer.
const READERS: usize = 4;
/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the post-erasure WAL checkpoint may wait for readers before giving up.
const ERASE_CHECKPOINT_WAIT: Duration = Duration::from_millis(200);

/// Ordered schema migrations; step `i` takes `PRAGMA user_version` from `i` to `i + 1`.
/// Never edit a released step: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
CREATE TABLE indexes (
    id           TEXT PRIMARY KEY NOT NULL,
    index_name   TEXT NOT NULL UNIQUE,
    index_type   TEXT NOT NULL CHECK (index_type IN ('INTERNAL', 'EXTERNAL')),
    title        TEXT NOT NULL,
    description  TEXT NOT NULL,
    pack         TEXT NOT NULL,
    record_count INTEGER NOT NULL DEFAULT 0 CHECK (record_count >= 0),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX indexes_created ON indexes (created_at, id);

CREATE TABLE records (
    id              TEXT PRIMARY KEY NOT NULL,
    index_id        TEXT NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    dob             TEXT NOT NULL,
    nationality     TEXT NOT NULL,
    gender          TEXT NOT NULL,
    id_no           TEXT NOT NULL,
    address         TEXT NOT NULL,
    watch_list      TEXT NOT NULL CHECK (json_valid(watch_list) AND json_type(watch_list) = 'array'),
    additional_info TEXT NOT NULL,
    reference       TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX records_page ON records (index_id, created_at, id);
CREATE UNIQUE INDEX records_reference ON records (index_id, reference) WHERE reference IS NOT NULL;

-- record_count is exact: maintained in the same transaction as every insert/delete
-- (including deletes cascaded from an index).
CREATE TRIGGER records_count_insert AFTER INSERT ON records BEGIN
    UPDATE indexes SET record_count = record_count + 1 WHERE id = NEW.index_id;
END;
CREATE TRIGGER records_count_delete AFTER DELETE ON records BEGIN
    UPDATE indexes SET record_count = record_count - 1 WHERE id = OLD.index_id;
END;
CREATE TRIGGER records_index_fixed BEFORE UPDATE OF index_id ON records
WHEN NEW.index_id IS NOT OLD.index_id BEGIN
    SELECT RAISE(ABORT, 'a record cannot move to another index');
END;

-- Image bytes live in the database so that record, image and embedding commit atomically.
CREATE TABLE images (
    id         TEXT PRIMARY KEY NOT NULL,
    record_id  TEXT NOT NULL REFERENCES records (id) ON DELETE CASCADE,
    mime       TEXT NOT NULL,
    file_name  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    face       TEXT NOT NULL CHECK (json_valid(face)),
    created_at TEXT NOT NULL,
    bytes      BLOB NOT NULL
);
CREATE INDEX images_record ON images (record_id, created_at, id);

-- Little-endian f32 vectors; pack copied from the index at insert.
CREATE TABLE embeddings (
    image_id TEXT PRIMARY KEY NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    pack     TEXT NOT NULL,
    dim      INTEGER NOT NULL CHECK (dim > 0),
    vector   BLOB NOT NULL CHECK (length(vector) = 4 * dim)
);
CREATE INDEX embeddings_pack ON embeddings (pack);

CREATE TABLE users (
    username      TEXT PRIMARY KEY NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'searcher', 'auditor')),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE grants (
    username   TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    index_id   TEXT NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (username, index_id)
) WITHOUT ROWID;
CREATE INDEX grants_index ON grants (index_id);
"#,
    // 2: the audit log. Append-only: rows are never updated; only retention deletes
    // old rows (prune_audit).
    r#"
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    index_ids  TEXT NOT NULL CHECK (json_valid(index_ids)),
    record_ids TEXT NOT NULL CHECK (json_valid(record_ids)),
    details    TEXT NOT NULL CHECK (json_valid(details))
);
CREATE INDEX audit_at ON audit_log (at);
CREATE INDEX audit_actor ON audit_log (actor, id);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
"#,
    // 3: moving an index to another model pack. One job row per index (its latest
    // job); the new pack's vectors are staged per (image, pack) beside the live ones
    // and go with their image (cascade). A staged row has a vector or the code of why
    // the new pack found no usable face, never both.
    r#"
CREATE TABLE reembed_jobs (
    index_id     TEXT PRIMARY KEY NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    id           TEXT NOT NULL UNIQUE,
    pack         TEXT NOT NULL,
    from_pack    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    total        INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    done         INTEGER NOT NULL DEFAULT 0 CHECK (done >= 0),
    failed       INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0),
    failures     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(failures)),
    error        TEXT,
    requested_by TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX reembed_jobs_state ON reembed_jobs (state);

CREATE TABLE staged_embeddings (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    pack     TEXT NOT NULL,
    dim      INTEGER,
    vector   BLOB,
    failure  TEXT,
    PRIMARY KEY (image_id, pack),
    CHECK ((vector IS NULL) <> (failure IS NULL)),
    CHECK (vector IS NULL OR (dim > 0 AND length(vector) = 4 * dim))
) WITHOUT ROWID;
"#,
    // 4: a counter of embedding changes, bumped by triggers in the same transaction as
    // every insert, update and delete of an embedding (cascades included), so a saved
    // copy of the vector index can tell whether it still matches the store.
    r#"
CREATE TABLE vector_version (
    id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO vector_version (id, version) VALUES (1, 0);
CREATE TRIGGER embeddings_inserted AFTER INSERT ON embeddings BEGIN
    UPDATE vector_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER embeddings_updated AFTER UPDATE ON embeddings BEGIN
    UPDATE vector_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER embeddings_deleted AFTER DELETE ON embeddings BEGIN
    UPDATE vector_version SET version = version + 1 WHERE id = 1;
END;
"#,
    // 5: the face quality measured at enrolment (JSON); NULL for older images.
    r#"
ALTER TABLE images ADD COLUMN quality TEXT CHECK (quality IS NULL OR json_valid(quality));
"#,
];

/// The SQLite implementation of [`Store`]. Cheap to share behind an `Arc`.
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
    move |source| StoreError::Sqlite { context, source }
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

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    loop {
        // IMMEDIATE: another process opening the same file waits instead of racing.
        let tx = immediate(conn, "starting a migration")?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).ctx("reading user_version")?;
        if version > supported {
            return Err(StoreError::UnsupportedSchema { found: version, supported });
        }
        let Some(step) = usize::try_from(version).ok().and_then(|v| MIGRATIONS.get(v)) else {
            return tx.commit().ctx("finishing migrations");
        };
        tx.execute_batch(step).ctx("applying a migration")?;
        tx.pragma_update(None, "user_version", version + 1).ctx("writing user_version")?;
        tx.commit().ctx("committing a migration")?;
        tracing::info!(from = version, to = version + 1, "store schema migrated");
    }
}

// ---------------------------------------------------------------------------------
// Small helpers

trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { context, source })
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
// Indexes

type RawIndex = (String, String, String, i64, String, String, String, String, String);

fn raw_index(r: &Row<'_>) -> rusqlite::Result<RawIndex> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
}

fn index_from_raw(raw: RawIndex) -> Result<IndexInfo, StoreError> {
    let (id, index_name, index_type, count, title, description, pack, created_at, updated_at) = raw;
    let index_type: IndexType = index_type.parse().map_err(|e| StoreError::Corrupt(format!("index {id}: {e}")))?;
    Ok(IndexInfo {
        record_count: count_u64(count, "record_count")?,
        id,
        index_name,
        index_type,
        title,
        description,
        pack,
        created_at,
        updated_at,
    })
}

fn load_index(conn: &Connection, id: &str) -> Result<Option<IndexInfo>, StoreError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {INDEX_COLS} FROM indexes WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], raw_index).optional())
        .ctx("loading an index")?;
    raw.map(index_from_raw).transpose()
}

fn list_indexes(conn: &Connection) -> Result<Vec<IndexInfo>, StoreError> {
    let raws = conn
        .prepare_cached(&format!("SELECT {INDEX_COLS} FROM indexes ORDER BY created_at, rowid"))
        .and_then(|mut s| s.query_map([], raw_index)?.collect::<rusqlite::Result<Vec<_>>>())
        .ctx("listing indexes")?;
    raws.into_iter().map(index_from_raw).collect()
}

// ---------------------------------------------------------------------------------
// Records

struct RawRecord {
    id: String,
    index_id: String,
    name: String,
    dob: String,
    nationality: String,
    gender: String,
    id_no: String,
    address: String,
    watch_list: String,
    additional_info: String,
    reference: Option<String>,
    created_at: String,
    updated_at: String,
}

fn raw_record(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: r.get(0)?,
        index_id: r.get(1)?,
        name: r.get(2)?,
        dob: r.get(3)?,
        nationality: r.get(4)?,
        gender: r.get(5)?,
        id_no: r.get(6)?,
        address: r.get(7)?,
        watch_list: r.get(8)?,
        additional_info: r.get(9)?,
        reference: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

fn record_from_raw(raw: RawRecord, images: Vec<ImageSummary>) -> Result<Record, StoreError> {
    let watch_list: Vec<String> = serde_json::from_str(&raw.watch_list)
        .map_err(|e| StoreError::Corrupt(format!("record {}: watch_list: {e}", raw.id)))?;
    Ok(Record {
        record_id: raw.id,
        index_id: raw.index_id,
        fields: RecordFields {
            name: raw.name,
            dob: raw.dob,
            nationality: raw.nationality,
            gender: raw.gender,
            id_no: raw.id_no,
            address: raw.address,
            watch_list,
            additional_info: raw.additional_info,
        },
        reference: raw.reference,
        image_ids: images.iter().map(|i| i.image_id.clone()).collect(),
        images,
        created_at: raw.created_at,
        updated_at: raw.updated_at,
    })
}

/// Completes raw rows with their images (oldest first; images added within one
/// millisecond in the order they were added), keeping the row order.
fn attach_images(conn: &Connection, raws: Vec<RawRecord>) -> Result<Vec<Record>, StoreError> {
    if raws.is_empty() {
        return Ok(Vec::new());
    }
    let ids = to_json(&raws.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())?;
    let pairs = conn
        .prepare_cached(
            "SELECT record_id, id, quality FROM images
             WHERE record_id IN (SELECT value FROM json_each(?1))
             ORDER BY record_id, created_at, rowid",
        )
        .and_then(|mut s| {
            s.query_map([ids], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .ctx("loading image ids")?;
    let mut by_record: HashMap<String, Vec<ImageSummary>> = HashMap::new();
    for (record_id, image_id, quality) in pairs {
        let quality = quality
            .map(|q| serde_json::from_str(&q))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("image {image_id}: quality: {e}")))?;
        by_record.entry(record_id).or_default().push(ImageSummary { image_id, quality });
    }
    raws.into_iter()
        .map(|raw| {
            let images = by_record.remove(&raw.id).unwrap_or_default();
            record_from_raw(raw, images)
        })
        .collect()
}

fn query_records(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    context: &'static str,
) -> Result<Vec<Record>, StoreError> {
    let raws = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_map(params, raw_record)?.collect::<rusqlite::Result<Vec<_>>>())
        .ctx(context)?;
    attach_images(conn, raws)
}

fn load_record(conn: &Connection, index_id: &str, record_id: &str) -> Result<Option<Record>, StoreError> {
    let sql = format!("SELECT {RECORD_COLS} FROM records r WHERE r.id = ?1 AND r.index_id = ?2");
    Ok(query_records(conn, &sql, params![record_id, index_id], "loading a record")?.pop())
}

fn load_record_by_reference(conn: &Connection, index_id: &str, reference: &str) -> Result<Option<Record>, StoreError> {
    let sql = format!("SELECT {RECORD_COLS} FROM records r WHERE r.index_id = ?1 AND r.reference = ?2");
    Ok(query_records(conn, &sql, params![index_id, reference], "loading a record by reference")?.pop())
}

// ---------------------------------------------------------------------------------
// Images and embeddings

/// An image made ready for insertion outside the write lock (hashing, encoding).
struct PreparedImage {
    id: String,
    /// The pack that computed the vector (checked against the index's).
    pack: String,
    bytes: Vec<u8>,
    mime: String,
    file_name: String,
    sha256: String,
    face: String,
    quality: Option<String>,
    dim: i64,
    vector: Vec<u8>,
}

/// One enrolment inside the caller's write transaction.
fn enrol_in(
    tx: &rusqlite::Transaction<'_>,
    index_id: &str,
    pack: &str,
    fields: RecordFields,
    reference: Option<String>,
    image: PreparedImage,
) -> Result<EnrolOutcome, StoreError> {
    check_pack(index_id, pack, &image.pack)?;
    let reference = reference.filter(|r| !r.is_empty());
    let watch_list = to_json(&fields.watch_list)?;
    if let Some(reference) = &reference
        && let Some(existing) = load_record_by_reference(tx, index_id, reference)?
    {
        return Ok(EnrolOutcome::Existing(existing));
    }
    let record_id = new_id();
    let now = now_rfc3339();
    tx.prepare_cached(
        "INSERT INTO records (id, index_id, name, dob, nationality, gender, id_no, address,
                              watch_list, additional_info, reference, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            record_id,
            index_id,
            fields.name,
            fields.dob,
            fields.nationality,
            fields.gender,
            fields.id_no,
            fields.address,
            watch_list,
            fields.additional_info,
            reference,
            now
        ])
    })
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict("reference already used in this index".into())
        } else {
            StoreError::Sqlite { context: "inserting a record", source: e }
        }
    })?;
    insert_image(tx, &record_id, pack, &image, &now)?;
    Ok(EnrolOutcome::Created(Record {
        record_id,
        index_id: index_id.to_string(),
        fields,
        reference,
        image_ids: vec![image.id.clone()],
        images: vec![ImageSummary {
            image_id: image.id,
            quality: image.quality.as_deref().and_then(|q| serde_json::from_str(q).ok()),
        }],
        created_at: now.clone(),
        updated_at: now,
    }))
}

fn prepare_image(image: NewImage) -> Result<PreparedImage, StoreError> {
    check_image(&image)?;
    let dim =
        i64::try_from(image.embedding.len()).map_err(|_| StoreError::InvalidInput("embedding too long".into()))?;
    let vector = image.embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
    Ok(PreparedImage {
        id: new_id(),
        sha256: hex::encode(Sha256::digest(&image.bytes)),
        face: to_json(&image.face)?,
        quality: image.quality.as_ref().map(to_json).transpose()?,
        bytes: image.bytes,
        mime: image.mime,
        file_name: image.file_name,
        pack: image.pack,
        dim,
        vector,
    })
}

fn insert_image(
    conn: &Connection,
    record_id: &str,
    pack: &str,
    image: &PreparedImage,
    now: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO images (id, record_id, mime, file_name, sha256, face, created_at, bytes, quality)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            image.id,
            record_id,
            image.mime,
            image.file_name,
            image.sha256,
            image.face,
            now,
            image.bytes,
            image.quality
        ])
    })
    .ctx("inserting an image")?;
    conn.prepare_cached("INSERT INTO embeddings (image_id, pack, dim, vector) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| s.execute(params![image.id, pack, image.dim, image.vector]))
        .ctx("inserting an embedding")?;
    Ok(())
}

fn index_pack(conn: &Connection, index_id: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT pack FROM indexes WHERE id = ?1")
        .and_then(|mut s| s.query_row([index_id], |r| r.get(0)).optional())
        .ctx("loading the index pack")
}

fn decode_vector(image_id: &str, dim: i64, blob: &[u8]) -> Result<Vec<f32>, StoreError> {
    let expected = usize::try_from(dim).ok().and_then(|d| d.checked_mul(4));
    if expected != Some(blob.len()) {
        return Err(StoreError::Corrupt(format!("embedding of image {image_id}: {} bytes for dim {dim}", blob.len())));
    }
    Ok(blob.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The live vectors matching `filter` (an SQL condition on `e`, `i`, `r` with one
/// parameter `?1`). One statement = one consistent snapshot; rows are decoded as they
/// are stepped, so only the decoded vectors are held in memory.
fn scan_embeddings(conn: &Connection, filter: &str, param: &str) -> Result<Vec<EmbeddingRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT e.image_id, i.record_id, r.index_id, e.dim, e.vector
             FROM embeddings e
             JOIN images i ON i.id = e.image_id
             JOIN records r ON r.id = i.record_id
             WHERE {filter} ORDER BY e.rowid"
        ))
        .ctx("preparing the embedding scan")?;
    let mut rows = stmt.query([param]).ctx("scanning embeddings")?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx("scanning embeddings")? {
        let image_id: String = row.get(0).ctx("reading an embedding")?;
        let dim: i64 = row.get(3).ctx("reading an embedding")?;
        let blob = row
            .get_ref(4)
            .ctx("reading an embedding")?
            .as_blob()
            .map_err(|e| StoreError::Corrupt(format!("embedding of image {image_id}: {e}")))?;
        let vector = decode_vector(&image_id, dim, blob)?;
        out.push(EmbeddingRow {
            record_id: row.get(1).ctx("reading an embedding")?,
            index_id: row.get(2).ctx("reading an embedding")?,
            image_id,
            vector,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Re-embedding jobs

/// The ids of an index's images, as a subquery on parameter `?1`.
const INDEX_IMAGES: &str = "SELECT i.id FROM images i JOIN records r ON r.id = i.record_id WHERE r.index_id = ?1";

struct RawJob {
    id: String,
    index_id: String,
    pack: String,
    from_pack: String,
    state: String,
    counts: (i64, i64, i64),
    failures: String,
    error: Option<String>,
    requested_by: String,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

fn raw_job(r: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: r.get(0)?,
        index_id: r.get(1)?,
        pack: r.get(2)?,
        from_pack: r.get(3)?,
        state: r.get(4)?,
        counts: (r.get(5)?, r.get(6)?, r.get(7)?),
        failures: r.get(8)?,
        error: r.get(9)?,
        requested_by: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        finished_at: r.get(13)?,
    })
}

/// (images, images with a staged row of `pack`, of which failures) of an index.
fn staging_progress(conn: &Connection, index_id: &str, pack: &str) -> Result<(u64, u64, u64), StoreError> {
    let (total, done, failed): (i64, i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COUNT(s.image_id), COUNT(s.failure)
             FROM images i JOIN records r ON r.id = i.record_id
             LEFT JOIN staged_embeddings s ON s.image_id = i.id AND s.pack = ?2
             WHERE r.index_id = ?1",
        )
        .and_then(|mut s| s.query_row([index_id, pack], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .ctx("counting staged vectors")?;
    Ok((count_u64(total, "image count")?, count_u64(done, "staged count")?, count_u64(failed, "failure count")?))
}

/// The images of an index in which `pack` found no usable face (staged failures).
fn staged_failures(conn: &Connection, index_id: &str, pack: &str) -> Result<Vec<ReembedFailure>, StoreError> {
    let limit = i64::try_from(MAX_LISTED_FAILURES).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "SELECT s.image_id, i.record_id, s.failure
         FROM staged_embeddings s JOIN images i ON i.id = s.image_id JOIN records r ON r.id = i.record_id
         WHERE r.index_id = ?1 AND s.pack = ?2 AND s.failure IS NOT NULL
         ORDER BY i.created_at, i.rowid LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![index_id, pack, limit], |r| {
            Ok(ReembedFailure { image_id: r.get(0)?, record_id: r.get(1)?, code: r.get(2)? })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .ctx("listing staged failures")
}

/// The index's job; the counts of a running one are read live from the staging.
fn load_job(conn: &Connection, index_id: &str) -> Result<Option<ReembedJob>, StoreError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {JOB_COLS} FROM reembed_jobs WHERE index_id = ?1"))
        .and_then(|mut s| s.query_row([index_id], raw_job).optional())
        .ctx("loading a re-embedding job")?;
    raw.map(|raw| job_from_raw(conn, raw)).transpose()
}

fn job_from_raw(conn: &Connection, raw: RawJob) -> Result<ReembedJob, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("re-embedding job {}: {what}", raw.id));
    let state = match raw.state.as_str() {
        "running" => JobState::Running,
        "done" => JobState::Done,
        "failed" => JobState::Failed,
        other => return Err(corrupt(format!("state {other:?}"))),
    };
    let (total, done, failed, failures) = if state == JobState::Done {
        let failures: Vec<ReembedFailure> =
            serde_json::from_str(&raw.failures).map_err(|e| corrupt(format!("failures: {e}")))?;
        let (t, d, f) = raw.counts;
        (count_u64(t, "total")?, count_u64(d, "done")?, count_u64(f, "failed")?, failures)
    } else {
        let (t, d, f) = staging_progress(conn, &raw.index_id, &raw.pack)?;
        (t, d, f, staged_failures(conn, &raw.index_id, &raw.pack)?)
    };
    Ok(ReembedJob {
        job_id: raw.id,
        index_id: raw.index_id,
        pack: raw.pack,
        from_pack: raw.from_pack,
        state,
        total,
        done,
        failed,
        failures,
        error: raw.error,
        requested_by: raw.requested_by,
        created_at: raw.created_at,
        updated_at: raw.updated_at,
        finished_at: raw.finished_at,
    })
}

fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

// ---------------------------------------------------------------------------------
// Users

type RawUser = (String, String, String, String);

fn raw_user(r: &Row<'_>) -> rusqlite::Result<RawUser> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn user_from_raw(raw: RawUser, grants: Vec<String>) -> Result<User, StoreError> {
    let (username, role, password_hash, created_at) = raw;
    let role: Role = role.parse().map_err(|e| StoreError::Corrupt(format!("user {username:?}: {e}")))?;
    Ok(User { username, role, password_hash, grants, created_at })
}

fn load_user(conn: &Connection, username: &str) -> Result<Option<User>, StoreError> {
    let Some(raw) = conn
        .prepare_cached("SELECT username, role, password_hash, created_at FROM users WHERE username = ?1")
        .and_then(|mut s| s.query_row([username], raw_user).optional())
        .ctx("loading a user")?
    else {
        return Ok(None);
    };
    let grants = conn
        .prepare_cached("SELECT index_id FROM grants WHERE username = ?1 ORDER BY index_id")
        .and_then(|mut s| s.query_map([username], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>())
        .ctx("loading grants")?;
    user_from_raw(raw, grants).map(Some)
}

// ---------------------------------------------------------------------------------
// The trait

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_index(&self, new: NewIndex) -> Result<IndexInfo, StoreError> {
        if new.index_name.trim().is_empty() {
            return Err(StoreError::InvalidInput("index_name must not be empty".into()));
        }
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "creating an index")?;
                let taken = tx
                    .prepare_cached("SELECT 1 FROM indexes WHERE index_name = ?1")
                    .and_then(|mut s| s.exists([&new.index_name]))
                    .ctx("checking the index name")?;
                if taken {
                    return Err(StoreError::DuplicateIndexName(new.index_name));
                }
                let id = new_id();
                let now = now_rfc3339();
                tx.prepare_cached(
                    "INSERT INTO indexes (id, index_name, index_type, title, description, pack, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        new.index_name,
                        new.index_type.as_str(),
                        new.title,
                        new.description,
                        new.pack,
                        now
                    ])
                })
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::DuplicateIndexName(new.index_name.clone())
                    } else {
                        StoreError::Sqlite { context: "creating an index", source: e }
                    }
                })?;
                tx.commit().ctx("committing a new index")?;
                Ok(new.created(id, now))
            })
        })
        .await
    }

    async fn get_index(&self, id: &str) -> Result<Option<IndexInfo>, StoreError> {
        let id = id.to_owned();
        self.run(move |inner| inner.read(|conn| load_index(conn, &id))).await
    }

    async fn list_indexes(&self) -> Result<Vec<IndexInfo>, StoreError> {
        self.run(|inner| inner.read(|conn| list_indexes(conn))).await
    }

    async fn update_index(&self, id: &str, patch: IndexPatch) -> Result<Option<IndexInfo>, StoreError> {
        let id = id.to_owned();
        if patch.title.is_none() && patch.description.is_none() {
            return self.get_index(&id).await;
        }
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "updating an index")?;
                let changed = tx
                    .prepare_cached(
                        "UPDATE indexes SET title = COALESCE(?2, title),
                                            description = COALESCE(?3, description),
                                            updated_at = ?4
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, patch.title, patch.description, now_rfc3339()]))
                    .ctx("updating an index")?;
                if changed == 0 {
                    return Ok(None);
                }
                let info = load_index(&tx, &id)?;
                tx.commit().ctx("committing an index update")?;
                Ok(info)
            })
        })
        .await
    }

    async fn delete_index(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "deleting an index")?;
                let changed = tx.execute("DELETE FROM indexes WHERE id = ?1", [&id]).ctx("deleting an index")?;
                tx.commit().ctx("committing an index deletion")?;
                if changed > 0 {
                    checkpoint_after_erase(conn);
                }
                Ok(changed > 0)
            })
        })
        .await
    }

    async fn enrol(
        &self,
        index_id: &str,
        fields: RecordFields,
        reference: Option<String>,
        image: NewImage,
    ) -> Result<Option<EnrolOutcome>, StoreError> {
        let index_id = index_id.to_owned();
        self.run(move |inner| {
            let image = prepare_image(image)?;
            inner.write(|conn| {
                let tx = immediate(conn, "enrolling")?;
                let Some(pack) = index_pack(&tx, &index_id)? else {
                    return Ok(None);
                };
                let outcome = enrol_in(&tx, &index_id, &pack, fields, reference, image)?;
                tx.commit().ctx("committing an enrolment")?;
                Ok(Some(outcome))
            })
        })
        .await
    }

    async fn enrol_batch(
        &self,
        index_id: &str,
        batch: Vec<(RecordFields, Option<String>, NewImage)>,
    ) -> Result<Option<Vec<EnrolOutcome>>, StoreError> {
        let index_id = index_id.to_owned();
        self.run(move |inner| {
            let batch = batch
                .into_iter()
                .map(|(f, r, i)| prepare_image(i).map(|i| (f, r, i)))
                .collect::<Result<Vec<_>, _>>()?;
            inner.write(|conn| {
                let tx = immediate(conn, "enrolling a batch")?;
                let Some(pack) = index_pack(&tx, &index_id)? else {
                    return Ok(None);
                };
                let mut out = Vec::with_capacity(batch.len());
                for (fields, reference, image) in batch {
                    out.push(enrol_in(&tx, &index_id, &pack, fields, reference, image)?);
                }
                tx.commit().ctx("committing an enrolment batch")?;
                Ok(Some(out))
            })
        })
        .await
    }

    async fn find_by_reference(&self, index_id: &str, reference: &str) -> Result<Option<Record>, StoreError> {
        let (index_id, reference) = (index_id.to_owned(), reference.to_owned());
        self.run(move |inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                load_record_by_reference(&tx, &index_id, &reference)
            })
        })
        .await
    }

    async fn get_record(&self, index_id: &str, record_id: &str) -> Result<Option<Record>, StoreError> {
        let (index_id, record_id) = (index_id.to_owned(), record_id.to_owned());
        self.run(move |inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                load_record(&tx, &index_id, &record_id)
            })
        })
        .await
    }

    async fn get_records(&self, record_ids: &[String]) -> Result<Vec<Record>, StoreError> {
        if record_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = to_json(&record_ids)?;
        self.run(move |inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                let sql =
                    format!("SELECT {RECORD_COLS} FROM records r WHERE r.id IN (SELECT value FROM json_each(?1))");
                query_records(&tx, &sql, [ids], "loading records")
            })
        })
        .await
    }

    async fn list_records(
        &self,
        index_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), StoreError> {
        let after = cursor.map(decode_cursor).transpose()?;
        let index_id = index_id.to_owned();
        let limit = limit.max(1);
        // One extra row tells whether another page follows.
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.run(move |inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                let mut records = match &after {
                    None => query_records(
                        &tx,
                        &format!(
                            "SELECT {RECORD_COLS} FROM records r WHERE r.index_id = ?1
                             ORDER BY r.created_at, r.id LIMIT ?2"
                        ),
                        params![index_id, fetch],
                        "listing records",
                    )?,
                    Some((created_at, record_id)) => query_records(
                        &tx,
                        &format!(
                            "SELECT {RECORD_COLS} FROM records r
                             WHERE r.index_id = ?1 AND (r.created_at, r.id) > (?2, ?3)
                             ORDER BY r.created_at, r.id LIMIT ?4"
                        ),
                        params![index_id, created_at, record_id, fetch],
                        "listing records",
                    )?,
                };
                let next = if records.len() > limit {
                    records.truncate(limit);
                    records.last().map(|r| encode_cursor(&r.created_at, &r.record_id))
                } else {
                    None
                };
                Ok((records, next))
            })
        })
        .await
    }

    async fn update_record(
        &self,
        index_id: &str,
        record_id: &str,
        patch: RecordPatch,
    ) -> Result<Option<Record>, StoreError> {
        let (index_id, record_id) = (index_id.to_owned(), record_id.to_owned());
        if patch.is_empty() {
            return self.get_record(&index_id, &record_id).await;
        }
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "updating a record")?;
                let Some(mut record) = load_record(&tx, &index_id, &record_id)? else {
                    return Ok(None);
                };
                if let Some(reference) = apply_patch(&mut record, patch) {
                    if let Some(new_ref) = &reference
                        && load_record_by_reference(&tx, &index_id, new_ref)?.is_some()
                    {
                        return Err(reference_taken(new_ref));
                    }
                    record.reference = reference;
                }
                record.updated_at = now_rfc3339();
                let f = &record.fields;
                let watch_list_json = to_json(&f.watch_list)?;
                tx.prepare_cached(
                    "UPDATE records SET name = ?3, dob = ?4, nationality = ?5, gender = ?6, id_no = ?7,
                                        address = ?8, watch_list = ?9, additional_info = ?10,
                                        reference = ?11, updated_at = ?12
                     WHERE id = ?1 AND index_id = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        record.record_id,
                        record.index_id,
                        f.name,
                        f.dob,
                        f.nationality,
                        f.gender,
                        f.id_no,
                        f.address,
                        watch_list_json,
                        f.additional_info,
                        record.reference,
                        record.updated_at
                    ])
                })
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict("reference already used in this index".into())
                    } else {
                        StoreError::Sqlite { context: "updating a record", source: e }
                    }
                })?;
                tx.commit().ctx("committing a record update")?;
                Ok(Some(record))
            })
        })
        .await
    }

    async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let (index_id, record_id) = (index_id.to_owned(), record_id.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "deleting a record")?;
                let Some(record) = load_record(&tx, &index_id, &record_id)? else {
                    return Ok(None);
                };
                tx.execute("DELETE FROM records WHERE id = ?1 AND index_id = ?2", [&record_id, &index_id])
                    .ctx("deleting a record")?;
                tx.commit().ctx("committing a record deletion")?;
                checkpoint_after_erase(conn);
                Ok(Some(record.image_ids))
            })
        })
        .await
    }

    async fn add_image(
        &self,
        index_id: &str,
        record_id: &str,
        image: NewImage,
    ) -> Result<Option<(Record, String)>, StoreError> {
        let (index_id, record_id) = (index_id.to_owned(), record_id.to_owned());
        self.run(move |inner| {
            let image = prepare_image(image)?;
            inner.write(|conn| {
                let tx = immediate(conn, "adding an image")?;
                let Some(mut record) = load_record(&tx, &index_id, &record_id)? else {
                    return Ok(None);
                };
                let pack = index_pack(&tx, &index_id)?
                    .ok_or_else(|| StoreError::Corrupt(format!("record {record_id} has no index")))?;
                check_pack(&index_id, &pack, &image.pack)?;
                let now = now_rfc3339();
                insert_image(&tx, &record_id, &pack, &image, &now)?;
                tx.execute("UPDATE records SET updated_at = ?2 WHERE id = ?1", [&record_id, &now])
                    .ctx("touching a record")?;
                tx.commit().ctx("committing a new image")?;
                record.image_ids.push(image.id.clone());
                record.updated_at = now;
                Ok(Some((record, image.id)))
            })
        })
        .await
    }

    async fn get_image(&self, image_id: &str) -> Result<Option<StoredImage>, StoreError> {
        let image_id = image_id.to_owned();
        self.run(move |inner| {
            inner.read(|conn| {
                conn.prepare_cached(
                    "SELECT i.id, i.record_id, r.index_id, i.bytes, i.mime, i.file_name, i.sha256
                     FROM images i JOIN records r ON r.id = i.record_id WHERE i.id = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([&image_id], |r| {
                        Ok(StoredImage {
                            image_id: r.get(0)?,
                            record_id: r.get(1)?,
                            index_id: r.get(2)?,
                            bytes: r.get(3)?,
                            mime: r.get(4)?,
                            file_name: r.get(5)?,
                            sha256: r.get(6)?,
                        })
                    })
                    .optional()
                })
                .ctx("loading an image")
            })
        })
        .await
    }

    async fn vectors_version(&self) -> Result<u64, StoreError> {
        self.run(|inner| {
            inner.read(|conn| {
                let v: i64 = conn
                    .query_row("SELECT version FROM vector_version WHERE id = 1", [], |r| r.get(0))
                    .ctx("reading the vector version")?;
                Ok(v as u64)
            })
        })
        .await
    }

    async fn embeddings(&self, pack: &str) -> Result<Vec<EmbeddingRow>, StoreError> {
        let pack = pack.to_owned();
        self.run(move |inner| inner.read(|conn| scan_embeddings(conn, "e.pack = ?1", &pack))).await
    }

    async fn create_user(&self, username: &str, password: &str, role: Role) -> Result<User, StoreError> {
        validate_username(username)?;
        let (username, password) = (username.to_owned(), password.to_owned());
        self.run(move |inner| {
            // Hash before taking the lock: Argon2 is deliberately slow.
            let password_hash = hash_password(&password)?;
            inner.write(|conn| {
                let now = now_rfc3339();
                conn.prepare_cached(
                    "INSERT INTO users (username, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![username, role.as_str(), password_hash, now]))
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::DuplicateUser(username.clone())
                    } else {
                        StoreError::Sqlite { context: "creating a user", source: e }
                    }
                })?;
                Ok(User { username, role, password_hash, grants: Vec::new(), created_at: now })
            })
        })
        .await
    }

    async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>, StoreError> {
        let (username, password) = (username.to_owned(), password.to_owned());
        self.run(move |inner| {
            let user = inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                load_user(&tx, &username)
            })?;
            // Verify outside the lock; unknown users verify against the dummy hash so
            // that both paths cost one Argon2 run.
            match user {
                Some(user) => Ok(password_matches(&password, &user.password_hash)?.then_some(user)),
                None => {
                    password_matches(&password, &inner.dummy_hash)?;
                    Ok(None)
                }
            }
        })
        .await
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let username = username.to_owned();
        self.run(move |inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                load_user(&tx, &username)
            })
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.run(|inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                let raws = tx
                    .prepare_cached("SELECT username, role, password_hash, created_at FROM users ORDER BY username")
                    .and_then(|mut s| s.query_map([], raw_user)?.collect::<rusqlite::Result<Vec<_>>>())
                    .ctx("listing users")?;
                let pairs = tx
                    .prepare_cached("SELECT username, index_id FROM grants ORDER BY username, index_id")
                    .and_then(|mut s| {
                        s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .ctx("listing grants")?;
                let mut grants: HashMap<String, Vec<String>> = HashMap::new();
                for (username, index_id) in pairs {
                    grants.entry(username).or_default().push(index_id);
                }
                raws.into_iter()
                    .map(|raw| {
                        let g = grants.remove(&raw.0).unwrap_or_default();
                        user_from_raw(raw, g)
                    })
                    .collect()
            })
        })
        .await
    }

    async fn set_password(&self, username: &str, password: &str) -> Result<bool, StoreError> {
        let (username, password) = (username.to_owned(), password.to_owned());
        self.run(move |inner| {
            let password_hash = hash_password(&password)?;
            inner.write(|conn| {
                let changed = conn
                    .execute("UPDATE users SET password_hash = ?2 WHERE username = ?1", [&username, &password_hash])
                    .ctx("setting a password")?;
                Ok(changed > 0)
            })
        })
        .await
    }

    async fn grant(&self, username: &str, index_id: &str) -> Result<bool, StoreError> {
        let (username, index_id) = (username.to_owned(), index_id.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "granting")?;
                let user_exists = tx
                    .prepare_cached("SELECT 1 FROM users WHERE username = ?1")
                    .and_then(|mut s| s.exists([&username]))
                    .ctx("checking the user")?;
                let index_exists = tx
                    .prepare_cached("SELECT 1 FROM indexes WHERE id = ?1")
                    .and_then(|mut s| s.exists([&index_id]))
                    .ctx("checking the index")?;
                if !user_exists || !index_exists {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT OR IGNORE INTO grants (username, index_id, created_at) VALUES (?1, ?2, ?3)",
                    params![username, index_id, now_rfc3339()],
                )
                .ctx("granting")?;
                tx.commit().ctx("committing a grant")?;
                Ok(true)
            })
        })
        .await
    }

    async fn revoke(&self, username: &str, index_id: &str) -> Result<bool, StoreError> {
        let (username, index_id) = (username.to_owned(), index_id.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let changed = conn
                    .execute("DELETE FROM grants WHERE username = ?1 AND index_id = ?2", [&username, &index_id])
                    .ctx("revoking")?;
                Ok(changed > 0)
            })
        })
        .await
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.run(move |inner| {
            inner.write(|conn| {
                // BEGIN IMMEDIATE takes the database's write lock first: every other
                // writer, in this process or another (`facesearch user`), waits, so the
                // admins counted here are still the admins when the row goes.
                let tx = immediate(conn, "deleting a user")?;
                let role: Option<String> = tx
                    .prepare_cached("SELECT role FROM users WHERE username = ?1")
                    .and_then(|mut s| s.query_row([&username], |r| r.get(0)).optional())
                    .ctx("reading the user")?;
                let Some(role) = role else { return Ok(false) };
                if role == Role::Admin.as_str() {
                    let admins: i64 = tx
                        .query_row("SELECT COUNT(*) FROM users WHERE role = ?1", [Role::Admin.as_str()], |r| r.get(0))
                        .ctx("counting the admins")?;
                    if admins <= 1 {
                        return Err(StoreError::LastAdmin(username));
                    }
                }
                let changed =
                    tx.execute("DELETE FROM users WHERE username = ?1", [&username]).ctx("deleting a user")?;
                tx.commit().ctx("committing the user deletion")?;
                Ok(changed > 0)
            })
        })
        .await
    }

    async fn user_count(&self) -> Result<u64, StoreError> {
        self.run(|inner| {
            inner.read(|conn| {
                let n: i64 = conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)).ctx("counting users")?;
                count_u64(n, "user count")
            })
        })
        .await
    }

    async fn integrity_check(&self) -> Result<(), StoreError> {
        self.run(|inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
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

    async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let (index_ids, record_ids, details) =
            (list(&event.index_ids), list(&event.record_ids), event.details.to_string());
        self.run(move |inner| {
            inner.write(|conn| {
                conn.execute(
                    "INSERT INTO audit_log (at, actor, action, outcome, index_ids, record_ids, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![now_rfc3339(), event.actor, event.action, event.outcome, index_ids, record_ids, details],
                )
                .ctx("appending to the audit log")?;
                Ok(())
            })
        })
        .await
    }

    async fn query_audit(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.run(move |inner| {
            inner.read(|conn| {
                let mut stmt = conn
                    .prepare(
                        "SELECT id, at, actor, action, outcome, index_ids, record_ids, details FROM audit_log
                         WHERE (?1 IS NULL OR actor = ?1)
                           AND (?2 IS NULL OR action = ?2)
                           AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(index_ids) WHERE value = ?3))
                           AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(record_ids) WHERE value = ?4))
                           AND (?5 IS NULL OR at >= ?5)
                           AND (?6 IS NULL OR at < ?6)
                           AND (?7 IS NULL OR id < ?7)
                         ORDER BY id DESC LIMIT ?8",
                    )
                    .ctx("preparing the audit query")?;
                let limit = i64::try_from(query.limit.clamp(1, 10_000)).unwrap_or(1000);
                let rows = stmt
                    .query_map(
                        rusqlite::params![
                            query.actor,
                            query.action,
                            query.index_id,
                            query.record_id,
                            query.since,
                            query.until,
                            query.before_id,
                            limit
                        ],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, String>(4)?,
                                r.get::<_, String>(5)?,
                                r.get::<_, String>(6)?,
                                r.get::<_, String>(7)?,
                            ))
                        },
                    )
                    .ctx("reading the audit log")?;
                let mut events = Vec::new();
                for row in rows {
                    let (id, at, actor, action, outcome, index_ids, record_ids, details) =
                        row.ctx("reading an audit row")?;
                    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("audit row {id}: {e}"));
                    let list = |t: &str| serde_json::from_str::<Vec<String>>(t).map_err(corrupt);
                    events.push(AuditEvent {
                        id,
                        at,
                        actor,
                        action,
                        outcome,
                        index_ids: list(&index_ids)?,
                        record_ids: list(&record_ids)?,
                        details: serde_json::from_str(&details).map_err(corrupt)?,
                    });
                }
                Ok(events)
            })
        })
        .await
    }

    async fn prune_audit(&self, before: &str) -> Result<u64, StoreError> {
        let before = before.to_string();
        self.run(move |inner| {
            inner.write(|conn| {
                let n = conn.execute("DELETE FROM audit_log WHERE at < ?1", [before]).ctx("pruning the audit log")?;
                Ok(n as u64)
            })
        })
        .await
    }

    async fn start_reembed(
        &self,
        index_id: &str,
        pack: &str,
        requested_by: &str,
    ) -> Result<Option<ReembedStart>, StoreError> {
        let (index_id, pack, requested_by) = (index_id.to_owned(), pack.to_owned(), requested_by.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "starting a re-embedding job")?;
                let Some(from_pack) = index_pack(&tx, &index_id)? else {
                    return Ok(None);
                };
                if let Some(job) = load_job(&tx, &index_id)?.filter(|j| j.state == JobState::Running) {
                    if job.pack == pack {
                        return Ok(Some(ReembedStart::Running(job)));
                    }
                    return Err(StoreError::Conflict(format!(
                        "a re-embedding of this index to the {} pack is running",
                        job.pack
                    )));
                }
                // Vectors staged for another pack by an abandoned job are of no use now.
                tx.execute(
                    &format!("DELETE FROM staged_embeddings WHERE pack <> ?2 AND image_id IN ({INDEX_IMAGES})"),
                    [&index_id, &pack],
                )
                .ctx("clearing stale staged vectors")?;
                let now = now_rfc3339();
                tx.execute(
                    "INSERT OR REPLACE INTO reembed_jobs
                         (index_id, id, pack, from_pack, state, requested_by, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?6)",
                    params![index_id, new_id(), pack, from_pack, requested_by, now],
                )
                .ctx("creating a re-embedding job")?;
                let job = load_job(&tx, &index_id)?
                    .ok_or_else(|| StoreError::Corrupt("the new re-embedding job vanished".into()))?;
                tx.commit().ctx("committing a new re-embedding job")?;
                Ok(Some(ReembedStart::Started(job)))
            })
        })
        .await
    }

    async fn reembed_job(&self, index_id: &str) -> Result<Option<ReembedJob>, StoreError> {
        let index_id = index_id.to_owned();
        self.run(move |inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                load_job(&tx, &index_id)
            })
        })
        .await
    }

    async fn running_reembeds(&self) -> Result<Vec<ReembedJob>, StoreError> {
        self.run(|inner| {
            inner.read(|conn| {
                let tx = conn.transaction().ctx("starting a read")?;
                let raws = tx
                    .prepare_cached(&format!(
                        "SELECT {JOB_COLS} FROM reembed_jobs WHERE state = 'running' ORDER BY created_at"
                    ))
                    .and_then(|mut s| s.query_map([], raw_job)?.collect::<rusqlite::Result<Vec<_>>>())
                    .ctx("listing running re-embedding jobs")?;
                raws.into_iter().map(|raw| job_from_raw(&tx, raw)).collect()
            })
        })
        .await
    }

    async fn pending_images(&self, index_id: &str, pack: &str, limit: usize) -> Result<Vec<PendingImage>, StoreError> {
        let (index_id, pack) = (index_id.to_owned(), pack.to_owned());
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        self.run(move |inner| {
            inner.read(|conn| {
                let raws = conn
                    .prepare_cached(
                        "SELECT i.id, i.record_id, i.face, i.bytes
                         FROM images i JOIN records r ON r.id = i.record_id
                         WHERE r.index_id = ?1
                           AND NOT EXISTS (SELECT 1 FROM staged_embeddings s WHERE s.image_id = i.id AND s.pack = ?2)
                         ORDER BY i.created_at, i.rowid LIMIT ?3",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![index_id, pack, limit], |r| {
                            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .ctx("listing images to re-embed")?;
                raws.into_iter()
                    .map(|(image_id, record_id, face, bytes)| {
                        let face = serde_json::from_str(&face)
                            .map_err(|e| StoreError::Corrupt(format!("image {image_id}: face: {e}")))?;
                        Ok(PendingImage { image_id, record_id, bytes, face })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn stage_vector(
        &self,
        image_id: &str,
        pack: &str,
        vector: Result<Vec<f32>, String>,
    ) -> Result<bool, StoreError> {
        let (image_id, pack) = (image_id.to_owned(), pack.to_owned());
        let (dim, blob, failure) = match vector {
            Ok(v) => {
                check_vector(&v, "a staged vector")?;
                let dim = i64::try_from(v.len()).map_err(|_| StoreError::InvalidInput("vector too long".into()))?;
                (Some(dim), Some(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()), None)
            }
            Err(code) => (None, None, Some(code)),
        };
        self.run(move |inner| {
            inner.write(|conn| {
                let result = conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO staged_embeddings (image_id, pack, dim, vector, failure)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut s| s.execute(params![image_id, pack, dim, blob, failure]));
                match result {
                    Ok(_) => Ok(true),
                    // The image was deleted while it was being embedded.
                    Err(e) if is_foreign_key_violation(&e) => Ok(false),
                    Err(e) => Err(StoreError::Sqlite { context: "staging a vector", source: e }),
                }
            })
        })
        .await
    }

    async fn switch_pack(&self, index_id: &str, job_id: &str) -> Result<PackSwitch, StoreError> {
        let (index_id, job_id) = (index_id.to_owned(), job_id.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "switching an index's pack")?;
                let Some(job) =
                    load_job(&tx, &index_id)?.filter(|j| j.job_id == job_id && j.state == JobState::Running)
                else {
                    return Ok(PackSwitch::NoJob);
                };
                if job.done < job.total {
                    return Ok(PackSwitch::Pending(job.total - job.done));
                }
                tx.execute(&format!("DELETE FROM embeddings WHERE image_id IN ({INDEX_IMAGES})"), [&index_id])
                    .ctx("removing the old vectors")?;
                tx.execute(
                    &format!(
                        "INSERT INTO embeddings (image_id, pack, dim, vector)
                         SELECT image_id, pack, dim, vector FROM staged_embeddings
                         WHERE pack = ?2 AND vector IS NOT NULL AND image_id IN ({INDEX_IMAGES})"
                    ),
                    [&index_id, &job.pack],
                )
                .ctx("installing the new vectors")?;
                tx.execute(&format!("DELETE FROM staged_embeddings WHERE image_id IN ({INDEX_IMAGES})"), [&index_id])
                    .ctx("clearing the staged vectors")?;
                let now = now_rfc3339();
                tx.execute("UPDATE indexes SET pack = ?2, updated_at = ?3 WHERE id = ?1", [&index_id, &job.pack, &now])
                    .ctx("setting the index's pack")?;
                let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                tx.execute(
                    "UPDATE reembed_jobs SET state = 'done', total = ?2, done = ?3, failed = ?4, failures = ?5,
                                             updated_at = ?6, finished_at = ?6
                     WHERE index_id = ?1",
                    params![
                        index_id,
                        as_i64(job.total),
                        as_i64(job.done),
                        as_i64(job.failed),
                        to_json(&job.failures)?,
                        now
                    ],
                )
                .ctx("finishing a re-embedding job")?;
                let job = load_job(&tx, &index_id)?
                    .ok_or_else(|| StoreError::Corrupt("the finished re-embedding job vanished".into()))?;
                let vectors = scan_embeddings(&tx, "r.index_id = ?1", &index_id)?;
                tx.commit().ctx("committing a pack switch")?;
                // The old vectors are biometric data: do not leave them in the log.
                checkpoint_after_erase(conn);
                Ok(PackSwitch::Switched { job: Box::new(job), vectors })
            })
        })
        .await
    }

    async fn fail_reembed(&self, index_id: &str, job_id: &str, error: &str) -> Result<(), StoreError> {
        let (index_id, job_id, error) = (index_id.to_owned(), job_id.to_owned(), error.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                conn.execute(
                    "UPDATE reembed_jobs SET state = 'failed', error = ?3, updated_at = ?4, finished_at = ?4
                     WHERE index_id = ?1 AND id = ?2 AND state = 'running'",
                    params![index_id, job_id, error, now_rfc3339()],
                )
                .ctx("failing a re-embedding job")?;
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
