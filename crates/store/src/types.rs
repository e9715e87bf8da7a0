//! The domain types the store takes and returns: indexes, records and their images,
//! embeddings, users, audit entries and re-embedding jobs. No SQL row type appears
//! here; each backend maps its rows to these.

use std::fmt;
use std::str::FromStr;

use facesearch_models::Pack;
use serde::{Deserialize, Serialize};

/// Error of the `FromStr` impls of [`IndexType`], [`Role`] and [`JobState`].
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

/// A model pack as a stored row names it: a pack this build runs, or a name it does not
/// know (a row written by another build, e.g. a newer node sharing the database). An
/// unknown name is kept rather than refused, so that one such index never fails a
/// listing or the engine's start; the engine refuses to search or write into it
/// (`UnknownPack`, answered `409 INDEX_PACK_MISMATCH`). Writes always name a [`Pack`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PackName {
    Known(Pack),
    Unknown(String),
}

impl PackName {
    /// The pack a stored name means; never fails (see [`PackName::Unknown`]).
    pub fn parse(name: &str) -> Self {
        name.parse().map_or_else(|_| PackName::Unknown(name.to_owned()), PackName::Known)
    }

    /// The name as stored (`open`, `insightface`, or the unknown name).
    pub fn name(&self) -> &str {
        match self {
            PackName::Known(pack) => pack.name(),
            PackName::Unknown(name) => name,
        }
    }

    /// The pack, when this build runs it.
    pub fn known(&self) -> Option<Pack> {
        match self {
            PackName::Known(pack) => Some(*pack),
            PackName::Unknown(_) => None,
        }
    }
}

impl From<Pack> for PackName {
    fn from(pack: Pack) -> Self {
        PackName::Known(pack)
    }
}

impl PartialEq<Pack> for PackName {
    fn eq(&self, other: &Pack) -> bool {
        self.known() == Some(*other)
    }
}

impl fmt::Display for PackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Serialised as its name, as the `String` it replaced was.
impl Serialize for PackName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
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
    /// The model pack whose embeddings this index holds (as its row names it).
    pub pack: PackName,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct NewIndex {
    pub index_name: String,
    pub title: String,
    pub description: String,
    pub index_type: IndexType,
    pub pack: Pack,
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
            pack: self.pack.into(),
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
    /// ([`StoreError::PackMismatch`](crate::StoreError::PackMismatch)) unless the index holds that pack's vectors.
    pub pack: Pack,
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
/// ([`BackendStore::vector_search`](crate::BackendStore::vector_search)).
#[derive(Clone, Debug)]
pub struct VectorQuery {
    /// The pack that embedded `vector`: every index searched must hold that pack's
    /// vectors, else [`StoreError::PackMismatch`](crate::StoreError::PackMismatch).
    pub pack: Pack,
    pub index_ids: Vec<String>,
    pub vector: Vec<f32>,
    /// Faces less similar than this (cosine) are not returned.
    pub min_similarity: f32,
    /// At most this many records, each with its best image.
    pub limit: usize,
}

/// One record found by [`VectorStore::nearest_faces`](crate::VectorStore::nearest_faces), with its most similar image.
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

impl FromStr for JobState {
    type Err = ParseEnumError;
    /// Accepts the stored forms `running`, `done` and `failed` exactly.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [JobState::Running, JobState::Done, JobState::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseEnumError { kind: "job state", value: s.to_owned() })
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

/// A job moving an index to another model pack (see [`ReembedStore::start_reembed`](crate::ReembedStore::start_reembed)).
/// While it runs, `done` and `failed` are counted live from the staged vectors; once
/// it is done they are the figures of the switch.
#[derive(Clone, Debug, Serialize)]
pub struct ReembedJob {
    pub job_id: String,
    pub index_id: String,
    /// The pack the index moves to (as the job's row names it).
    pub pack: PackName,
    /// The pack the index held when the job started.
    pub from_pack: PackName,
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

/// Result of [`ReembedStore::start_reembed`](crate::ReembedStore::start_reembed).
#[derive(Clone, Debug)]
pub enum ReembedStart {
    /// A new job (staged vectors of an earlier job to the same pack are kept).
    Started(ReembedJob),
    /// A job to the same pack was already running; it is returned unchanged.
    Running(ReembedJob),
}

/// Result of [`ReembedStore::switch_pack`](crate::ReembedStore::switch_pack).
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

/// Result of [`RecordStore::enrol`](crate::RecordStore::enrol).
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
