//! Enrolled people (records) and their images.

use facesearch_store::{Record, RecordFields};
use serde::Serialize;
use utoipa::ToSchema;

/// The person data of a record, as a record and a search match show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PersonFields {
    /// At most 256 characters.
    pub name: String,
    /// `YYYY-MM-DD` (a real date) or empty.
    pub dob: String,
    /// ISO 3166-1 alpha-2 such as `IN`, or empty.
    pub nationality: String,
    /// At most 32 characters.
    pub gender: String,
    /// At most 128 characters.
    pub id_no: String,
    /// At most 1024 characters.
    pub address: String,
    /// At most 64 categories of at most 64 characters; possibly empty.
    pub watch_list: Vec<String>,
    /// At most 8192 characters.
    pub additional_info: String,
}

impl From<RecordFields> for PersonFields {
    fn from(f: RecordFields) -> Self {
        Self {
            name: f.name,
            dob: f.dob,
            nationality: f.nationality,
            gender: f.gender,
            id_no: f.id_no,
            address: f.address,
            watch_list: f.watch_list,
            additional_info: f.additional_info,
        }
    }
}

/// An enrolled person.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordObject {
    pub record_id: String,
    pub index_id: String,
    #[serde(flatten)]
    pub person: PersonFields,
    /// The client's own id, unique per index.
    pub reference: Option<String>,
    /// The record's images, oldest first; each usable with the download endpoint.
    pub image_ids: Vec<String>,
    /// The same images with their face quality.
    pub images: Vec<RecordImage>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

impl From<Record> for RecordObject {
    fn from(r: Record) -> Self {
        Self {
            record_id: r.record_id,
            index_id: r.index_id,
            person: r.fields.into(),
            reference: r.reference,
            image_ids: r.image_ids,
            images: r.images.into_iter().map(|i| RecordImage { image_id: i.image_id, quality: i.quality }).collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One image of a record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordImage {
    pub image_id: String,
    /// Measured at enrolment; `null` for images enrolled before quality was measured.
    // Sent as stored: `facesearch_face::FaceQuality` as it was serialised at enrolment.
    #[schema(value_type = Option<FaceQualityObject>)]
    pub quality: Option<serde_json::Value>,
}

/// The quality measures of a face (docs/API.md, "Face quality").
// The schema of `facesearch_face::FaceQuality`'s serialisation, which the API sends as it
// is (a record's stored images, a search's `probe` and `faces`); the tests of
// `crate::openapi` hold the two to the same fields and types.
#[derive(Debug, Serialize, ToSchema)]
pub struct FaceQualityObject {
    /// Shorter side of the face box, pixels of the original image.
    pub face_size: f64,
    /// Distance between the eye centres, pixels.
    pub eye_distance: f64,
    /// Variance of the Laplacian of the aligned 112×112 grey face.
    pub sharpness: f64,
    /// JPEG blockiness over the face (about 1: none; above 2: heavy compression).
    pub compression: f64,
    /// Mean grey level of the face, 0–255.
    pub brightness: f64,
    /// Fraction of the face clipped dark.
    pub dark_fraction: f64,
    /// Fraction of the face clipped bright.
    pub bright_fraction: f64,
    /// Head turn, degrees; positive: the nose lies right of the face's midline in the image.
    pub yaw: f64,
    /// Head tilt, degrees; positive: looking up.
    pub pitch: f64,
    /// In-plane rotation of the eye line, degrees.
    pub roll: f64,
    /// Detector confidence, 0–1.
    pub detector_score: f64,
    /// Degrees clockwise the photo was turned to make a sideways or upside-down face
    /// upright before it was measured and embedded: 0 (not turned), 90, 180 or 270.
    pub rotation: u16,
}

/// A page of records.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPage {
    pub records: Vec<RecordObject>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}
