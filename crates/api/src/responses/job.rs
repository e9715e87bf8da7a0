//! Background jobs: moving an index to another model pack (in the store) and finding
//! duplicate identities (in memory, `crate::jobs`).

use facesearch_engine::{DuplicateGroup, DuplicatePair, DuplicateRecord};
use serde::Serialize;
use utoipa::ToSchema;

/// Where a re-embedding job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Images are being embedded; searches use the old vectors.
    Running,
    /// The index holds the new pack's vectors.
    Done,
    /// Stopped by an error (`error`); starting it again continues where it was.
    Failed,
}

impl From<facesearch_store::JobState> for JobState {
    fn from(state: facesearch_store::JobState) -> Self {
        match state {
            facesearch_store::JobState::Running => JobState::Running,
            facesearch_store::JobState::Done => JobState::Done,
            facesearch_store::JobState::Failed => JobState::Failed,
        }
    }
}

/// A stored image in which the new pack found no usable face: its record is kept, it
/// has no vector under the new pack.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReembedFailure {
    pub image_id: String,
    pub record_id: String,
    /// `NO_FACE_DETECTED`, `FACE_TOO_SMALL`, `FACE_NOT_UPRIGHT`, `INVALID_IMAGE` or `IMAGE_TOO_LARGE`.
    pub code: String,
}

/// A job moving an index to another model pack.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReembedJobObject {
    pub job_id: String,
    pub index_id: String,
    /// The pack the index moves to.
    pub pack: String,
    /// The pack the index held when the job started.
    pub from_pack: String,
    pub state: JobState,
    /// Images of the index (now, while it runs).
    pub total: u64,
    /// Images processed so far (embedded, or found to have no usable face).
    pub done: u64,
    /// Images in which the new pack found no usable face.
    pub failed: u64,
    /// Those images (at most 1000 listed).
    pub failures: Vec<ReembedFailure>,
    /// Why the job stopped, when `failed`.
    pub error: Option<String>,
    /// The admin who started it.
    pub requested_by: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// RFC 3339, UTC; `null` while running.
    pub finished_at: Option<String>,
}

impl From<facesearch_store::ReembedJob> for ReembedJobObject {
    fn from(job: facesearch_store::ReembedJob) -> Self {
        let failures = job
            .failures
            .into_iter()
            .map(|f| ReembedFailure { image_id: f.image_id, record_id: f.record_id, code: f.code })
            .collect();
        Self {
            job_id: job.job_id,
            index_id: job.index_id,
            pack: job.pack.name().to_owned(),
            from_pack: job.from_pack.name().to_owned(),
            state: job.state.into(),
            total: job.total,
            done: job.done,
            failed: job.failed,
            failures,
            error: job.error,
            requested_by: job.requested_by,
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
        }
    }
}

/// `running`, `done` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Running,
    Done,
    Failed,
}

/// Faces compared so far, out of all.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct JobProgress {
    pub done: u64,
    pub total: u64,
}

/// A record of a duplicate group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DuplicateRecordObject {
    pub record_id: String,
    pub index_id: String,
    pub name: String,
    pub id_no: String,
    pub reference: Option<String>,
}

/// Two records of a group whose faces match, with their best-matching images.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DuplicatePairObject {
    pub record_a: String,
    pub record_b: String,
    /// Calibrated score 0–100, as in search.
    pub match_score: f64,
    /// Cosine similarity of the two faces.
    pub similarity: f64,
    /// The image of `record_a` that matched.
    pub image_a: String,
    /// The image of `record_b` that matched.
    pub image_b: String,
}

/// Records joined by matching faces (a connected group).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DuplicateGroupObject {
    pub records: Vec<DuplicateRecordObject>,
    /// Best first.
    pub pairs: Vec<DuplicatePairObject>,
}

impl From<&DuplicateGroup> for DuplicateGroupObject {
    fn from(group: &DuplicateGroup) -> Self {
        let record = |r: &DuplicateRecord| DuplicateRecordObject {
            record_id: r.record_id.clone(),
            index_id: r.index_id.clone(),
            name: r.name.clone(),
            id_no: r.id_no.clone(),
            reference: r.reference.clone(),
        };
        let pair = |p: &DuplicatePair| DuplicatePairObject {
            record_a: p.record_a.clone(),
            record_b: p.record_b.clone(),
            match_score: p.match_score,
            similarity: p.similarity,
            image_a: p.image_a.clone(),
            image_b: p.image_b.clone(),
        };
        Self { records: group.records.iter().map(record).collect(), pairs: group.pairs.iter().map(pair).collect() }
    }
}

/// A duplicate-identity job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DuplicateJob {
    pub job_id: String,
    pub status: JobStatus,
    /// The indexes searched; the first is the one in the path.
    pub index_ids: Vec<String>,
    pub min_score: f64,
    pub progress: JobProgress,
    pub started_by: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC; `null` while running.
    pub finished_at: Option<String>,
    /// Why it failed (`failed`).
    pub error: Option<String>,
    /// Faces compared (`done`).
    pub faces: Option<u64>,
    /// More than 1,000,000 face pairs matched and some were left out (`done`).
    pub truncated: Option<bool>,
    /// Matching record pairs left out because both records name the same person (`done`).
    pub same_identity_skipped: Option<u64>,
    /// Best group first (`done`; `null` before).
    pub groups: Option<Vec<DuplicateGroupObject>>,
}
