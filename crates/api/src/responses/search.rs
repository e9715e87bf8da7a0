//! Part 1's answers: a search match and a downloaded image; the face boxes of a
//! search's opt-in details and of a `MULTIPLE_FACES` refusal.

use base64::Engine as _;
use facesearch_engine::Match;
use facesearch_face::Detection;
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

/// A face box in pixels of the uploaded photo as decoded (after its EXIF orientation):
/// left, top, right, bottom.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct FaceBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

impl FaceBox {
    pub fn of(d: &Detection) -> Self {
        let px = |v: f32| round(f64::from(v), 2);
        FaceBox { x1: px(d.bbox.x1), y1: px(d.bbox.y1), x2: px(d.bbox.x2), y2: px(d.bbox.y2) }
    }

    /// `x1,y1,x2,y2` in whole pixels: the `X-Face-Box` header.
    pub fn header(&self) -> String {
        format!("{},{},{},{}", self.x1.round(), self.y1.round(), self.x2.round(), self.y2.round())
    }
}

/// One of the faces of a `MULTIPLE_FACES` refusal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct ScoredBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    /// Detector confidence, 0–1.
    pub detection_score: f64,
}

impl ScoredBox {
    pub fn of(d: &Detection) -> Self {
        let b = FaceBox::of(d);
        ScoredBox { x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2, detection_score: detection_score(d) }
    }
}

/// A detector confidence as sent, 0–1 to four decimals.
pub fn detection_score(d: &Detection) -> f64 {
    round(f64::from(d.score), 4)
}
