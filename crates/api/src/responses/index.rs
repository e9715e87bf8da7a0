//! Face databases ("indexes"): the published index object and the Part 2 one with what
//! a minimum score means at the index's size.

use facesearch_store::IndexInfo;
use serde::Serialize;
use utoipa::ToSchema;

/// `INTERNAL` (filled by the service's users) or `EXTERNAL` (imported from an outside
/// source; read-only to non-admins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum IndexType {
    Internal,
    External,
}

impl From<facesearch_store::IndexType> for IndexType {
    fn from(t: facesearch_store::IndexType) -> Self {
        match t {
            facesearch_store::IndexType::Internal => IndexType::Internal,
            facesearch_store::IndexType::External => IndexType::External,
        }
    }
}

/// A face database (index). `id`, `index_name`, `index_type`, `record_count`, `title`
/// and `description` are the published fields.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IndexObject {
    /// The index id, used as `target_index_ids`.
    pub id: String,
    /// Unique, human-readable name (at most 128 characters).
    pub index_name: String,
    pub index_type: IndexType,
    /// Face records in the index now.
    pub record_count: u64,
    /// Display title (defaults to the name).
    pub title: String,
    /// What the database contains.
    pub description: String,
    /// The model pack whose vectors the index holds (`open` or `insightface`).
    pub pack: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

impl From<&IndexInfo> for IndexObject {
    fn from(index: &IndexInfo) -> Self {
        Self {
            id: index.id.clone(),
            index_name: index.index_name.clone(),
            index_type: index.index_type.into(),
            record_count: index.record_count,
            title: index.title.clone(),
            description: index.description.clone(),
            pack: index.pack.name().to_owned(),
            created_at: index.created_at.clone(),
            updated_at: index.updated_at.clone(),
        }
    }
}

/// A face database (index) as the Part 2 endpoints return it (`POST /face/index`,
/// `GET`/`PATCH /face/index/{index_id}`): the fields of [`IndexObject`] plus what a
/// minimum score means at the index's current size. The Part 1 details list does not
/// carry these.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ManagedIndexObject {
    #[serde(flatten)]
    pub index: IndexObject,
    /// Faces a search of this index compares the probe with: the enrolled images
    /// (vectors) held in memory; on a server that searches in PostgreSQL, the record
    /// count. `null` while the server is still loading its models.
    pub faces: Option<u64>,
    /// The lowest `min_match_score` at which a search of a person not enrolled, in this
    /// index alone, returns anyone with probability at most 1e-3 (FPIR 1e-3) at its
    /// current size, rounded up to two decimals. `null` when that needs a false-match
    /// rate below the lowest the pack's calibration measured (above score 84 on the
    /// shipped tables: galleries of more than about 1,000 faces), or while the models
    /// are loading. See docs/API.md, Scores.
    #[schema(example = 84.0)]
    pub min_score_fpir_1e3: Option<f64>,
    /// Only with `?min_match_score=` on `GET /face/index/{index_id}` (absent otherwise):
    /// the expected number of this index's faces at or above that score in one search
    /// of a person not enrolled; `null` while the models are loading.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ExpectedFalseMatches>)]
    pub expected_false_matches: Option<Option<ExpectedFalseMatches>>,
}

/// Expected false matches at a score (see docs/API.md, Scores).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct ExpectedFalseMatches {
    /// The score asked about.
    pub min_match_score: f64,
    /// Faces × the false-match rate per comparison at that score.
    pub value: f64,
    /// `true` when the score lies above the lowest false-match rate the calibration
    /// measured: the true value is then at most `value`.
    pub upper_bound: bool,
}
