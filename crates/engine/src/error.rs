//! The engine's one error type, and the stable codes of the photo problems it reports.
//!
//! The codes of [`photo_error_code`] are the API's words for "this photo cannot be
//! used" (`NO_FACE_DETECTED`, …): the HTTP layer answers them, and a re-embedding job
//! records them for each image the new pack cannot embed, so both read them from here.

use facesearch_face::calibration::CalibrationError;
use facesearch_face::{DecodeError, PipelineError};
use facesearch_store::StoreError;
use facesearch_vectors::VectorError;

use crate::users::UserRuleError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Face(#[from] PipelineError),
    #[error("the face was judged a spoof (live probability {score:.3} below the threshold {threshold:.3})")]
    LivenessFailed { score: f32, threshold: f32 },
    #[error(
        "liveness cannot be judged: the face fills the frame (context {context:.2}× the face, at least {min_context:.2}× needed); send a photo showing the head and shoulders"
    )]
    LivenessCannotJudge { context: f32, min_context: f32 },
    #[error("no index with id {0:?}")]
    IndexNotFound(String),
    #[error("index {index} holds vectors of the {pack:?} model pack, which this server cannot run")]
    UnknownPack { index: String, pack: String },
    #[error("index {0} moved to another model pack during the request; retry")]
    PackMoved(String),
    #[error("indexes {0} hold vectors of different model packs, which cannot be compared")]
    MixedPacks(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    #[error("the face is already enrolled in this index as record {record_id} (match score {score:.2})")]
    DuplicateFace { record_id: String, image_id: String, score: f64 },
    /// A username, password or role that the account rules refuse ([`crate::users`]).
    #[error(transparent)]
    UserRule(#[from] UserRuleError),
    #[error("no user named {0:?}")]
    UserNotFound(String),
    /// A role is fixed at creation (see [`crate::Service::update_user`]).
    #[error("the role of a user cannot be changed; delete {username:?} and create the user again as {role}")]
    RoleChange { username: String, role: facesearch_store::Role },
    #[error("you cannot delete your own account")]
    OwnAccount(String),
    /// The face models are not loaded yet: only what needs no model is served.
    #[error("the face models are still loading; retry shortly")]
    NotReady,
    #[error("the server is too busy; retry shortly")]
    Busy,
    #[error("internal task failed: {0}")]
    Task(String),
    /// A setting out of its range ([`crate::EngineConfig::validate`]): the engine is not
    /// started with it.
    #[error("{setting} must be {range}, not {value}")]
    Setting { setting: &'static str, range: &'static str, value: String },
}

pub(crate) fn task_failed(e: tokio::task::JoinError) -> EngineError {
    EngineError::Task(e.to_string())
}

/// The API error code of a photo that cannot be decoded.
pub fn decode_error_code(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::TooManyBytes { .. } | DecodeError::TooManyPixels { .. } => "IMAGE_TOO_LARGE",
        DecodeError::Empty | DecodeError::UnknownFormat | DecodeError::Corrupt { .. } => "INVALID_IMAGE",
    }
}

/// The API error code of a photo the pipeline cannot use; `None` for failures of the
/// models or the runtime (a fault of the server, not of the photo).
pub fn photo_error_code(e: &PipelineError) -> Option<&'static str> {
    match e {
        PipelineError::NoFace | PipelineError::Unalignable => Some("NO_FACE_DETECTED"),
        PipelineError::FaceTooSmall { .. } => Some("FACE_TOO_SMALL"),
        PipelineError::NotUpright { .. } => Some("FACE_NOT_UPRIGHT"),
        PipelineError::AmbiguousFaces { .. } => Some("MULTIPLE_FACES"),
        PipelineError::LowQuality(_) => Some("LOW_QUALITY_FACE"),
        PipelineError::Decode(d) => Some(decode_error_code(d)),
        PipelineError::Models(_) | PipelineError::Runtime(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_problems_have_codes_and_runtime_failures_do_not() {
        assert_eq!(photo_error_code(&PipelineError::NoFace), Some("NO_FACE_DETECTED"));
        assert_eq!(photo_error_code(&PipelineError::FaceTooSmall { size: 10.0, min: 32.0 }), Some("FACE_TOO_SMALL"));
        assert_eq!(photo_error_code(&PipelineError::Decode(DecodeError::Empty)), Some("INVALID_IMAGE"));
        let big = DecodeError::TooManyBytes { bytes: 2, limit: 1 };
        assert_eq!(photo_error_code(&PipelineError::Decode(big)), Some("IMAGE_TOO_LARGE"));
        let runtime = facesearch_face::runtime::RuntimeError::Library {
            path: std::path::PathBuf::from("x"),
            detail: "missing".into(),
        };
        assert_eq!(photo_error_code(&PipelineError::Runtime(runtime)), None);
    }
}
