//! Durable storage for facesearch: face indexes (databases), records (enrolled people),
//! their images and embeddings, and users.
//!
//! # Why this crate exists
//!
//! The HTTP layer must not know how data is kept. Everything it needs is behind the
//! narrow async [`Store`] trait, expressed in domain types ([`IndexInfo`], [`Record`],
//! [`User`], ...) rather than SQL rows. Two implementations:
//!
//! * [`SqliteStore`], the embedded default: no separate server, one file,
//!   `facesearch.sqlite3`, in the data directory. The engine keeps the vectors in
//!   memory; that in-memory index is *derived* state, rebuilt from
//!   [`Store::embeddings`] (or a snapshot checked against [`Store::vectors_version`]).
//! * [`PostgresStore`], for several stateless nodes sharing one PostgreSQL with
//!   pgvector: it searches its own vectors ([`Store::nearest_faces`]), so no node holds
//!   them. [`copy`] moves an embedded store into it (`facesearch migrate`).
//!
//! Either way the store is the single source of truth.
//!
//! # Durability design (SQLite)
//!
//! * **An acknowledged write is on disk.** The database runs in WAL mode with
//!   `synchronous=FULL`, so every commit fsyncs the write-ahead log before returning.
//!   The API answers an enrolment only after [`Store::enrol`] returns, i.e. after the
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
//!   delete, so it can never drift. [`Store::integrity_check`] runs
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

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod common;
pub mod copy;
mod postgres;
mod sqlite;
mod time;

pub use postgres::{PostgresConfig, PostgresStore, redact_url};
pub use sqlite::{DB_FILE as SQLITE_FILE, SqliteStore};
pub use time::{format_rfc3339, now_rfc3339};

/// Everything that can go wrong in the store. "Not found" is not an error: it is
/// reported as `None` / `false` by the [`Store`] methods.
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
    /// A PostgreSQL call failed.
    #[error("postgres error while {context}: {source}")]
    Postgres {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A schema migration of the PostgreSQL store failed.
    #[error("postgres migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// An SQLite call failed.
    #[error("sqlite error while {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
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
            StoreError::Postgres { source: sqlx::Error::Database(d), .. } => {
                d.code().is_some_and(|c| matches!(c.as_ref(), "40001" | "40P01" | "55P03"))
            }
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod transient_tests {
    use super::StoreError;

    fn sqlite(code: std::ffi::c_int) -> StoreError {
        let source = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        StoreError::Sqlite { context: "testing", source }
    }

    #[test]
    fn outages_and_lost_races_are_transient_faults_are_not() {
        assert!(StoreError::Unavailable { context: "testing", detail: "down".into() }.is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_LOCKED).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_transient());
        assert!(!StoreError::Corrupt("a row".into()).is_transient());
        assert!(!StoreError::UnsupportedSchema { found: 9, supported: 8 }.is_transient());
        let sql = StoreError::Postgres { context: "testing", source: sqlx::Error::RowNotFound };
        assert!(!sql.is_transient());
    }
}

/// Error of the `FromStr` impls of [`IndexType`] and [`Role`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {value:?}")]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub value: String,
}

/// Where an index's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum IndexType {
    /// Enrolled by operators of this service.
    Internal,
    /// Imported from an outside source (e.g. a published watch list); read-only to
    /// non-admins.
    External,
}

impl IndexType {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexType::Internal => "INTERNAL",
            IndexType::External => "EXTERNAL",
        }
    }
}

impl fmt::Display for IndexType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IndexType {
    type Err = ParseEnumError;
    /// Accepts `INTERNAL` / `EXTERNAL`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("INTERNAL") {
            Ok(IndexType::Internal)
        } else if s.eq_ignore_ascii_case("EXTERNAL") {
            Ok(IndexType::External)
        } else {
            Err(ParseEnumError { kind: "index type", value: s.to_owned() })
        }
    }
}

/// A face index (database) as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct IndexInfo {
    pub id: String,
    pub index_name: String,
    pub index_type: IndexType,
    /// Records in the index now (exact: maintained in the same transaction as every
    /// insert and delete).
    pub record_count: u64,
    pub title: String,
    pub description: String,
    /// The model pack whose embeddings this index holds.
    pub pack: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct NewIndex {
    pub index_name: String,
    pub title: String,
    pub description: String,
    pub index_type: IndexType,
    pub pack: String,
}

impl NewIndex {
    /// The index as stored under `id` at `now`, with no records yet.
    pub(crate) fn created(self, id: String, now: String) -> IndexInfo {
        IndexInfo {
            id,
            index_name: self.index_name,
            index_type: self.index_type,
            record_count: 0,
            title: self.title,
            description: self.description,
            pack: self.pack,
            created_at: now.clone(),
            updated_at: now,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IndexPatch {
    pub title: Option<String>,
    pub description: Option<String>,
}

/// The person data of a record (the fields of a search match).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordFields {
    pub name: String,
    pub dob: String,
    pub nationality: String,
    pub gender: String,
    pub id_no: String,
    pub address: String,
    pub watch_list: Vec<String>,
    pub additional_info: String,
}

/// A partial update of a record; `None` leaves a field as it is.
/// `reference: Some("")` removes the record's reference.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecordPatch {
    pub name: Option<String>,
    pub dob: Option<String>,
    pub nationality: Option<String>,
    pub gender: Option<String>,
    pub id_no: Option<String>,
    pub address: Option<String>,
    pub watch_list: Option<Vec<String>>,
    pub additional_info: Option<String>,
    pub reference: Option<String>,
}

impl RecordPatch {
    /// Names of the fields this patch changes (for the audit log; values are not logged).
    pub fn changed_fields(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        let mut add = |set: bool, name| {
            if set {
                f.push(name)
            }
        };
        add(self.name.is_some(), "name");
        add(self.dob.is_some(), "dob");
        add(self.nationality.is_some(), "nationality");
        add(self.gender.is_some(), "gender");
        add(self.id_no.is_some(), "id_no");
        add(self.address.is_some(), "address");
        add(self.watch_list.is_some(), "watch_list");
        add(self.additional_info.is_some(), "additional_info");
        add(self.reference.is_some(), "reference");
        f
    }
}

impl RecordPatch {
    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.dob.is_none()
            && self.nationality.is_none()
            && self.gender.is_none()
            && self.id_no.is_none()
            && self.address.is_none()
            && self.watch_list.is_none()
            && self.additional_info.is_none()
            && self.reference.is_none()
    }
}

/// An enrolled person.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub record_id: String,
    pub index_id: String,
    #[serde(flatten)]
    pub fields: RecordFields,
    /// The client's own id for the record, unique within the index.
    pub reference: Option<String>,
    /// Ids of the record's images, oldest first.
    pub image_ids: Vec<String>,
    /// The record's images (in the order of `image_ids`) with their face quality.
    pub images: Vec<ImageSummary>,
    pub created_at: String,
    pub updated_at: String,
}

/// One image of a record as the record shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ImageSummary {
    pub image_id: String,
    /// The face quality measured at enrolment; `null` for images stored before
    /// quality was measured.
    pub quality: Option<serde_json::Value>,
}

/// An image to store, with the embedding computed from it.
#[derive(Clone, Debug, Serialize)]
pub struct NewImage {
    pub bytes: Vec<u8>,
    pub mime: String,
    pub file_name: String,
    /// The face embedding; must be non-empty and finite.
    pub embedding: Vec<f32>,
    /// The model pack that computed `embedding`; the store refuses it
    /// ([`StoreError::PackMismatch`]) unless the index holds that pack's vectors.
    pub pack: String,
    /// Detection details (box, landmarks, score) as JSON, stored for explainability.
    pub face: serde_json::Value,
    /// The face quality measures as JSON (`None`: not measured).
    pub quality: Option<serde_json::Value>,
}

/// A stored image, for the download endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct StoredImage {
    pub image_id: String,
    pub record_id: String,
    pub index_id: String,
    pub bytes: Vec<u8>,
    pub mime: String,
    pub file_name: String,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// One stored embedding, for loading the in-memory index.
#[derive(Clone, Debug, Serialize)]
pub struct EmbeddingRow {
    pub image_id: String,
    pub record_id: String,
    pub index_id: String,
    pub vector: Vec<f32>,
}

/// A nearest-face query run by a store that searches vectors itself
/// ([`Store::searches_vectors`]).
#[derive(Clone, Debug)]
pub struct VectorQuery {
    /// The pack that embedded `vector`: every index searched must hold that pack's
    /// vectors, else [`StoreError::PackMismatch`].
    pub pack: String,
    pub index_ids: Vec<String>,
    pub vector: Vec<f32>,
    /// Faces less similar than this (cosine) are not returned.
    pub min_similarity: f32,
    /// At most this many records, each with its best image.
    pub limit: usize,
}

/// One record found by [`Store::nearest_faces`], with its most similar image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NearestFace {
    pub index_id: String,
    pub record_id: String,
    pub image_id: String,
    /// Cosine similarity, −1 to 1, computed exactly on the stored vector.
    pub similarity: f32,
}

/// Where a re-embedding job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Images are being embedded with the new pack; searches use the old vectors.
    Running,
    /// The index was switched to the new pack.
    Done,
    /// Stopped by an error (`error`); what was staged is kept, and starting the job
    /// again continues from there.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

/// A stored image in which the new pack found no usable face.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReembedFailure {
    pub image_id: String,
    pub record_id: String,
    /// The error code, e.g. `NO_FACE_DETECTED` or `FACE_TOO_SMALL`.
    pub code: String,
}

/// A job moving an index to another model pack (see [`Store::start_reembed`]).
/// While it runs, `done` and `failed` are counted live from the staged vectors; once
/// it is done they are the figures of the switch.
#[derive(Clone, Debug, Serialize)]
pub struct ReembedJob {
    pub job_id: String,
    pub index_id: String,
    /// The pack the index moves to.
    pub pack: String,
    /// The pack the index held when the job started.
    pub from_pack: String,
    pub state: JobState,
    /// Images of the index.
    pub total: u64,
    /// Images processed (embedded, or found to have no usable face).
    pub done: u64,
    /// Images in which the new pack found no usable face (at most
    /// [`MAX_LISTED_FAILURES`] are listed in `failures`).
    pub failed: u64,
    pub failures: Vec<ReembedFailure>,
    /// Why the job stopped, when it failed.
    pub error: Option<String>,
    pub requested_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

/// At most this many failed images are listed in a job (all are counted).
pub const MAX_LISTED_FAILURES: usize = 1000;

/// A stored image still to be embedded by a re-embedding job.
#[derive(Clone, Debug)]
pub struct PendingImage {
    pub image_id: String,
    pub record_id: String,
    pub bytes: Vec<u8>,
    /// The detection stored at enrolment (box, landmarks), to find the same face again.
    pub face: serde_json::Value,
}

/// Result of [`Store::start_reembed`].
#[derive(Clone, Debug)]
pub enum ReembedStart {
    /// A new job (staged vectors of an earlier job to the same pack are kept).
    Started(ReembedJob),
    /// A job to the same pack was already running; it is returned unchanged.
    Running(ReembedJob),
}

/// Result of [`Store::switch_pack`].
#[derive(Clone, Debug)]
pub enum PackSwitch {
    /// This many images of the index have no staged vector yet (e.g. enrolled since
    /// the job's last batch); nothing was changed.
    Pending(u64),
    /// No such running job (the index was deleted, or the job ended).
    NoJob,
    /// The index now holds the new pack's vectors: the finished job and every vector
    /// of the index, read in the switching transaction.
    Switched { job: Box<ReembedJob>, vectors: Vec<EmbeddingRow> },
}

/// Result of [`Store::enrol`].
#[derive(Clone, Debug, Serialize)]
pub enum EnrolOutcome {
    /// A new record was stored.
    Created(Record),
    /// A record with the given reference already existed; nothing was stored.
    Existing(Record),
}

impl EnrolOutcome {
    pub fn record(&self) -> &Record {
        match self {
            EnrolOutcome::Created(r) | EnrolOutcome::Existing(r) => r,
        }
    }

    pub fn into_record(self) -> Record {
        match self {
            EnrolOutcome::Created(r) | EnrolOutcome::Existing(r) => r,
        }
    }

    pub fn is_created(&self) -> bool {
        matches!(self, EnrolOutcome::Created(_))
    }
}

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Searcher,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Searcher => "searcher",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseEnumError;
    /// Accepts `admin`, `operator`, `searcher`, `auditor`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Role::Admin, Role::Operator, Role::Searcher, Role::Auditor]
            .into_iter()
            .find(|r| s.eq_ignore_ascii_case(r.as_str()))
            .ok_or_else(|| ParseEnumError { kind: "role", value: s.to_owned() })
    }
}

/// One entry of the audit log: who did what, when, to which indexes and records, and
/// how it ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Increasing sequence number.
    pub id: i64,
    pub at: String,
    pub actor: String,
    /// e.g. `face.search`, `record.enrol`, `image.download`, `user.create`.
    pub action: String,
    /// `ok`, or the error code the request ended with.
    pub outcome: String,
    pub index_ids: Vec<String>,
    pub record_ids: Vec<String>,
    /// Parameters and results (for a search: the parameters, liveness, scores).
    pub details: serde_json::Value,
}

/// An audit entry to append; the store stamps its id and time.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub index_ids: Vec<String>,
    pub record_ids: Vec<String>,
    pub details: serde_json::Value,
}

/// Filters of an audit-log read; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub index_id: Option<String>,
    pub record_id: Option<String>,
    /// RFC 3339 lower bound (inclusive) and upper bound (exclusive) of `at`.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only entries with an id below this (paging backwards).
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// A user account. `password_hash` is never serialized and is redacted in `Debug`.
#[derive(Clone, Serialize)]
pub struct User {
    pub username: String,
    pub role: Role,
    /// Argon2id PHC string.
    #[serde(skip_serializing)]
    pub password_hash: String,
    /// Ids of the indexes this user was granted, sorted.
    pub grants: Vec<String>,
    pub created_at: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .field("grants", &self.grants)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Durable storage behind the HTTP layer. Implementations must make every successful
/// write durable before returning.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an index. [`StoreError::DuplicateIndexName`] if `index_name` is taken.
    async fn create_index(&self, new: NewIndex) -> Result<IndexInfo, StoreError>;
    async fn get_index(&self, id: &str) -> Result<Option<IndexInfo>, StoreError>;
    /// All indexes in creation order (ties within a millisecond broken by insertion order).
    async fn list_indexes(&self) -> Result<Vec<IndexInfo>, StoreError>;
    /// `None` if there is no such index.
    async fn update_index(&self, id: &str, patch: IndexPatch) -> Result<Option<IndexInfo>, StoreError>;
    /// Deletes the index with all its records, images, embeddings and grants.
    /// `false` if there was no such index.
    async fn delete_index(&self, id: &str) -> Result<bool, StoreError>;
    /// Creates a record with its first image in ONE transaction. If `reference` is
    /// `Some` and a record with that reference exists in the index, returns
    /// `Existing(that record)` and stores nothing. An empty reference counts as none.
    /// `None` = index not found.
    async fn enrol(
        &self,
        index_id: &str,
        fields: RecordFields,
        reference: Option<String>,
        image: NewImage,
    ) -> Result<Option<EnrolOutcome>, StoreError>;
    /// Enrols many records in one transaction, all or nothing (bulk loading); `None`
    /// when the index does not exist. Each item is (fields, reference, image).
    async fn enrol_batch(
        &self,
        index_id: &str,
        batch: Vec<(RecordFields, Option<String>, NewImage)>,
    ) -> Result<Option<Vec<EnrolOutcome>>, StoreError>;
    async fn find_by_reference(&self, index_id: &str, reference: &str) -> Result<Option<Record>, StoreError>;
    /// `None` also when the record exists but in another index.
    async fn get_record(&self, index_id: &str, record_id: &str) -> Result<Option<Record>, StoreError>;
    /// The records with these ids, from any index (for search results); unknown ids
    /// are skipped; order not guaranteed.
    async fn get_records(&self, record_ids: &[String]) -> Result<Vec<Record>, StoreError>;
    /// A page of at most `limit` records (at least 1) of the index, ordered by
    /// (`created_at`, `record_id`), and the cursor of the next page (`None` on the last
    /// page). The cursor is opaque; a malformed one is [`StoreError::InvalidCursor`].
    /// An unknown index gives an empty page.
    async fn list_records(
        &self,
        index_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), StoreError>;
    /// `None` if no such record in the index; a `reference` already used by another
    /// record of the index is [`StoreError::Conflict`].
    async fn update_record(
        &self,
        index_id: &str,
        record_id: &str,
        patch: RecordPatch,
    ) -> Result<Option<Record>, StoreError>;
    /// Returns the image ids that were deleted (so the caller can drop their vectors),
    /// `None` if no such record.
    async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<Option<Vec<String>>, StoreError>;
    /// Adds an image (and its embedding) to a record; returns the updated record and the
    /// new image id, `None` if no such record in the index.
    async fn add_image(
        &self,
        index_id: &str,
        record_id: &str,
        image: NewImage,
    ) -> Result<Option<(Record, String)>, StoreError>;
    async fn get_image(&self, image_id: &str) -> Result<Option<StoredImage>, StoreError>;
    /// Every embedding of the given pack, for loading the in-memory index at start.
    async fn embeddings(&self, pack: &str) -> Result<Vec<EmbeddingRow>, StoreError>;
    /// The embeddings of the given pack in these indexes only (duplicate jobs on a store
    /// that searches its own vectors). The default filters [`Store::embeddings`].
    async fn embeddings_in(&self, pack: &str, index_ids: &[String]) -> Result<Vec<EmbeddingRow>, StoreError> {
        let mut rows = self.embeddings(pack).await?;
        rows.retain(|r| index_ids.contains(&r.index_id));
        Ok(rows)
    }
    /// A counter that changes whenever any embedding is added, changed or removed (in
    /// the same transaction), so a saved copy of the vector index can be checked
    /// against the store at start.
    async fn vectors_version(&self) -> Result<u64, StoreError>;
    /// Argon2id hash with a random salt; [`StoreError::DuplicateUser`] if taken.
    /// Usernames are case-sensitive, non-empty and may not contain `:`.
    async fn create_user(&self, username: &str, password: &str, role: Role) -> Result<User, StoreError>;
    /// `Some(user)` only if the password matches. Unknown users take about as long
    /// as a wrong password (a dummy hash is verified), so timing does not reveal
    /// which usernames exist.
    async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>, StoreError>;
    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// All users, ordered by username.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// `false` if no such user.
    async fn set_password(&self, username: &str, password: &str) -> Result<bool, StoreError>;
    /// Grants access to an index; idempotent. `false` if the user or index is unknown.
    async fn grant(&self, username: &str, index_id: &str) -> Result<bool, StoreError>;
    /// `true` if a grant was removed.
    async fn revoke(&self, username: &str, index_id: &str) -> Result<bool, StoreError>;
    /// Deletes the user and their grants; `false` if no such user;
    /// [`StoreError::LastAdmin`] (nothing deleted) if they are the only admin. The check
    /// and the delete are one transaction: concurrent deletes, from this process or
    /// another sharing the database, never leave the store without an admin.
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError>;
    async fn user_count(&self) -> Result<u64, StoreError>;
    /// Full consistency check (database integrity, foreign keys, record counts, every
    /// live vector of its index's pack); [`StoreError::Corrupt`] describing the first
    /// problems.
    async fn integrity_check(&self) -> Result<(), StoreError>;
    /// Cheap liveness check of the storage backend.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Appends to the audit log (append-only; nothing updates an entry).
    async fn append_audit(&self, event: NewAuditEvent) -> Result<(), StoreError>;
    /// Reads the audit log, newest first.
    async fn query_audit(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Retention: deletes entries older than `before` (RFC 3339); returns how many.
    async fn prune_audit(&self, before: &str) -> Result<u64, StoreError>;

    // Re-embedding (moving an index to another model pack). The new pack's vectors are
    // staged beside the live ones, keyed by (image, pack), so that the job can stop
    // anywhere and continue, and searches keep using the live vectors until
    // [`Store::switch_pack`] replaces them in one transaction.

    /// Starts a job moving `index_id` to `pack`, or returns the one already running to
    /// the same pack. A job to another pack running is [`StoreError::Conflict`].
    /// Staged vectors of other packs for the index (left by an abandoned job) are
    /// deleted. `None` if there is no such index.
    async fn start_reembed(
        &self,
        index_id: &str,
        pack: &str,
        requested_by: &str,
    ) -> Result<Option<ReembedStart>, StoreError>;
    /// The index's latest job, with live progress while it runs.
    async fn reembed_job(&self, index_id: &str) -> Result<Option<ReembedJob>, StoreError>;
    /// Every running job (to resume them at start).
    async fn running_reembeds(&self) -> Result<Vec<ReembedJob>, StoreError>;
    /// Up to `limit` images of the index without a staged vector of `pack`, oldest first.
    async fn pending_images(&self, index_id: &str, pack: &str, limit: usize) -> Result<Vec<PendingImage>, StoreError>;
    /// Stages the image's vector of `pack`, or the code of why it has none. `false` if
    /// the image no longer exists (deleted meanwhile).
    async fn stage_vector(
        &self,
        image_id: &str,
        pack: &str,
        vector: Result<Vec<f32>, String>,
    ) -> Result<bool, StoreError>;
    /// In one transaction: if every image of the index has a staged vector of the
    /// job's pack, replaces the index's vectors with them (images with no usable face
    /// keep none), sets the index's pack, clears its staging and marks the job done.
    async fn switch_pack(&self, index_id: &str, job_id: &str) -> Result<PackSwitch, StoreError>;
    /// Marks a running job failed with `error`; staged vectors are kept.
    async fn fail_reembed(&self, index_id: &str, job_id: &str, error: &str) -> Result<(), StoreError>;

    // Vector search inside the store (PostgreSQL with pgvector). A store that searches
    // its own vectors lets several stateless nodes share one database: none of them
    // holds the vectors in memory, and each sees the others' writes at once.

    /// Whether [`Store::nearest_faces`] is available; when it is, the engine keeps no
    /// vectors in memory and sends every search here.
    fn searches_vectors(&self) -> bool {
        false
    }
    /// The best `query.limit` records of `query.index_ids` with similarity at least
    /// `query.min_similarity`, best first, each once with its best image.
    async fn nearest_faces(&self, query: VectorQuery) -> Result<Vec<NearestFace>, StoreError> {
        let _ = query;
        Err(StoreError::InvalidInput("this store does not search vectors; the engine does".into()))
    }
}
