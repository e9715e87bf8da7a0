//! Part 1's answers: a search match and a downloaded image.

use base64::Engine as _;
use facesearch_engine::Match;
use facesearch_store::StoredImage;
use serde::Serialize;
use utoipa::ToSchema;

use super::IndexType;
use super::record::PersonFields;
use crate::error::round;

/// One search result. The published fields are `match_score`, `distance`,
/// `match_image_id`, `name`, `dob`, `nationality`, `gender`, `id_no`, `address`,
/// `watch_list`, `additional_info`, `index_name` and `index_type`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MatchResult {
    /// Calibrated similarity 0–100, higher is more similar; 70 means a false-match
    /// rate of at most 1e-5 per comparison.
    pub match_score: f64,
    /// `1 − cosine similarity` of the embeddings, the quantity results are ranked by.
    pub distance: f64,
    /// The matched enrolled image, for `GET /media/file/download/{file_id}`.
    pub match_image_id: String,
    // The record's `name`, `dob`, `nationality`, `gender`, `id_no`, `address`,
    // `watch_list` and `additional_info`.
    #[serde(flatten)]
    pub person: PersonFields,
    /// The index the match came from.
    pub index_name: String,
    // The engine's name of the index type, `INTERNAL` or `EXTERNAL`.
    #[schema(value_type = IndexType)]
    pub index_type: String,
    pub index_id: String,
    pub record_id: String,
    /// The client's own id of the record.
    pub reference: Option<String>,
    /// Cosine similarity of the embeddings, −1 to 1.
    pub similarity: f64,
}

impl From<&Match> for MatchResult {
    fn from(m: &Match) -> Self {
        let r = &m.record;
        Self {
            match_score: round(m.score, 2),
            distance: round(m.distance, 6),
            match_image_id: m.image_id.clone(),
            person: r.fields.clone().into(),
            index_name: m.index_name.clone(),
            index_type: m.index_type.clone(),
            index_id: r.index_id.clone(),
            record_id: r.record_id.clone(),
            reference: r.reference.clone(),
            similarity: round(f64::from(m.similarity), 6),
        }
    }
}

/// A stored image.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileObject {
    /// The bytes exactly as uploaded, base64.
    #[schema(content_encoding = "base64")]
    pub file_base64: String,
    pub file_name: String,
    /// MIME type, e.g. `image/jpeg`.
    pub file_type: String,
    pub file_id: String,
}

impl From<&StoredImage> for FileObject {
    fn from(image: &StoredImage) -> Self {
        Self {
            file_base64: base64::engine::general_purpose::STANDARD.encode(&image.bytes),
            file_name: image.file_name.clone(),
            file_type: image.mime.clone(),
            file_id: image.image_id.clone(),
        }
    }
}
