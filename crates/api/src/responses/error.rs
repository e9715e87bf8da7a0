//! The error body and the error answers every operation shares. The codes, their
//! statuses and meanings are the table of [`crate::error_codes`] (the `ErrorCode`
//! schema's description lists it).

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};

use crate::error::ErrorCode;
use crate::responses::search::ScoredBox;

/// The body of every error response.
// Built by `crate::ApiError::body`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "INDEX_NOT_FOUND", "message": "no index with id \"x\"", "index_id": "x"}}))]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// What went wrong: a stable code, a sentence, and fields that depend on the code.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    pub code: ErrorCode,
    /// A human-readable sentence; not stable, do not parse it.
    pub message: String,
    #[serde(flatten)]
    pub details: ErrorDetails,
}

/// The fields of an error beyond its code and message, each set where the error is
/// made ([`crate::ApiError::with`]) and only those that apply to its code; a field
/// left `None` is not sent.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ErrorDetails {
    /// The parameter or field with a wrong value (`INVALID_PARAMETER`), or the one the
    /// server does not let the caller set so (`LIVENESS_REQUIRED`).
    pub parameter: Option<String>,
    /// The missing or empty form field (`MISSING_FIELD`, `INVALID_IMAGE`).
    pub field: Option<String>,
    /// The index concerned (`INDEX_NOT_FOUND`, `FORBIDDEN`, `JOB_NOT_FOUND`).
    pub index_id: Option<String>,
    /// The record concerned (`RECORD_NOT_FOUND`).
    pub record_id: Option<String>,
    /// The user concerned (`USER_NOT_FOUND`, `CONFLICT`).
    pub username: Option<String>,
    /// The probe's live probability, 0–1 (`LIVENESS_CHECK_FAILED`).
    pub liveness_score: Option<f64>,
    /// The live probability needed (`LIVENESS_CHECK_FAILED`).
    pub threshold: Option<f64>,
    /// Context around the face, crop side / face side (`LIVENESS_CANNOT_JUDGE`).
    pub context: Option<f64>,
    /// The context needed to judge liveness (`LIVENESS_CANNOT_JUDGE`).
    pub min_context: Option<f64>,
    /// The byte limit exceeded (`IMAGE_TOO_LARGE`, `PAYLOAD_TOO_LARGE`).
    pub limit: Option<u64>,
    /// The image's size in bytes (`IMAGE_TOO_LARGE`).
    pub bytes: Option<u64>,
    /// The image's width in pixels (`IMAGE_TOO_LARGE`).
    pub width: Option<u64>,
    /// The image's height in pixels (`IMAGE_TOO_LARGE`).
    pub height: Option<u64>,
    /// The pixel limit exceeded (`IMAGE_TOO_LARGE`).
    pub max_pixels: Option<u64>,
    /// Faces of similar size in the photo (`MULTIPLE_FACES`).
    pub faces: Option<u64>,
    /// Those faces, largest first, in pixels of the photo as decoded (`MULTIPLE_FACES`).
    pub boxes: Option<Vec<ScoredBox>>,
    /// The tilt of the face's eye line from level in the photo as sent, degrees
    /// (`FACE_NOT_UPRIGHT`).
    pub roll: Option<f64>,
    /// The largest tilt counted as upright after a quarter turn, degrees (`FACE_NOT_UPRIGHT`).
    pub max_roll: Option<f64>,
    /// The face's size in pixels (`FACE_TOO_SMALL`).
    pub face_size: Option<f64>,
    /// The smallest face embedded (`FACE_TOO_SMALL`).
    pub min_face_size: Option<f64>,
    /// The shortest accepted password (`WEAK_PASSWORD`).
    pub min_length: Option<u64>,
    /// Seconds until a login may be tried again (`TOO_MANY_ATTEMPTS`).
    pub retry_after: Option<u64>,
    /// The quality measure that failed (`LOW_QUALITY_FACE`): `face_size`, `eye_distance`,
    /// `detector_score`, `brightness`, `exposure`, `compression`, `sharpness`, `yaw` or `pitch`.
    pub measure: Option<String>,
    /// The face's value of that measure (`LOW_QUALITY_FACE`).
    pub value: Option<f64>,
    /// The least value accepted (`LOW_QUALITY_FACE`, measures with a minimum).
    pub minimum: Option<f64>,
    /// The largest value accepted (`LOW_QUALITY_FACE`: `exposure`, `compression`, `yaw`,
    /// `pitch`, too bright a `brightness`).
    pub maximum: Option<f64>,
    /// The existing match's score (`DUPLICATE_FACE`).
    pub match_score: Option<f64>,
    /// The existing matching image (`DUPLICATE_FACE`).
    pub image_id: Option<String>,
    /// The job concerned (`JOB_NOT_FOUND`).
    pub job_id: Option<String>,
}

/// An error answer of the document: the `ErrorBody` schema, `description`, and the
/// response headers named.
pub fn error_response(description: &str, headers: &[(&str, &str)]) -> RefOr<utoipa::openapi::Response> {
    let mut builder = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))).build(),
    );
    for (name, text) in headers {
        let schema = utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String).build();
        builder = builder.header(*name, HeaderBuilder::new().schema(Some(schema)).description(Some(*text)).build());
    }
    RefOr::T(builder.build())
}

/// `401` and `429`: the answers of every endpoint that needs credentials.
pub struct AuthErrors;

impl IntoResponses for AuthErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            (
                "401".to_string(),
                error_response(
                    "`UNAUTHORIZED`: no or wrong HTTP Basic credentials.",
                    &[("WWW-Authenticate", "`Basic realm=\"facesearch\"`")],
                ),
            ),
            (
                "429".to_string(),
                error_response(
                    "`TOO_MANY_ATTEMPTS`: too many failed logins for this user from this address, or \
                     from this address (`retry_after`).",
                    &[("Retry-After", "seconds until a login may be tried again")],
                ),
            ),
        ])
    }
}

/// `500` and `503`: what any endpoint may answer when the server cannot serve it.
pub struct ServerErrors;

impl IntoResponses for ServerErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            (
                "500".to_string(),
                error_response("`INTERNAL_ERROR`: a server fault; details are in the server log only.", &[]),
            ),
            (
                "503".to_string(),
                error_response(
                    "`SERVICE_UNAVAILABLE` (models still loading, database unreachable, too many requests in \
                     flight, analysis queue full, too many logins being checked) or `REQUEST_TIMEOUT` (the \
                     request took longer than `--request-timeout`).",
                    &[("Retry-After", "seconds after which to retry")],
                ),
            ),
        ])
    }
}
