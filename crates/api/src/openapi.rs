//! The OpenAPI 3.1 document of the service, generated from the handlers'
//! `#[utoipa::path]` annotations and the schemas below, served at `GET /openapi.json`;
//! and the interactive documentation page served at `GET /docs`.
//!
//! The schemas here describe the JSON the handlers send. Most bodies are built with
//! `serde_json::json!` or are store types, so these structs are documentation only;
//! the tests at the bottom serialise the real objects and check that their fields are
//! exactly the documented ones, so the two cannot drift apart. `tests/openapi.rs`
//! checks that every route of [`crate::route_table`] is in the document.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::routes;

/// Tags: the groups of operations in the document and on `/docs`.
pub const TAG_SEARCH: &str = "Face search";
pub const TAG_INDEXES: &str = "Indexes";
pub const TAG_RECORDS: &str = "Records";
pub const TAG_USERS: &str = "Users";
pub const TAG_AUDIT: &str = "Audit";
pub const TAG_OPERATIONS: &str = "Operations";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "facesearch",
        description = "Self-hosted face search (1:N). Part 1 (tag \"Face search\") is the published Face Search \
                       (1:N) API, matched field for field; the rest manages the face databases, users and the audit \
                       log. Success bodies are `{\"response\": …}`; errors are `{\"error\": {\"code\": …, \
                       \"message\": …, …}}`, every one of them (a request that is not valid HTTP is \
                       `400 MALFORMED_REQUEST`). See docs/API.md for the full reference.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::ops::openapi_json,
        routes::ops::docs,
        routes::ops::root,
        routes::ops::console,
        routes::ops::metrics,
        routes::search::index_details,
        routes::search::search,
        routes::search::download,
        routes::indexes::create,
        routes::indexes::get,
        routes::indexes::patch,
        routes::indexes::delete,
        routes::records::enrol,
        routes::records::list,
        routes::records::get,
        routes::records::patch,
        routes::records::delete,
        routes::records::add_image,
        routes::reembed::start,
        routes::reembed::get,
        routes::duplicates::start,
        routes::duplicates::get,
        routes::users::me,
        routes::users::create,
        routes::users::list,
        routes::users::get,
        routes::users::patch,
        routes::users::delete,
        routes::users::grant,
        routes::users::revoke,
        routes::audit::list,
    ),
    components(schemas(ErrorBody, ErrorObject, ErrorCode)),
    modifiers(&BasicAuth, &RequestHeadErrors),
    tags(
        (name = TAG_SEARCH, description = "Part 1: the published Face Search (1:N) API."),
        (name = TAG_INDEXES, description = "Face databases (indexes)."),
        (name = TAG_RECORDS, description = "Enrolled people (records) of an index and their images."),
        (name = TAG_USERS, description = "Users, roles and per-index grants."),
        (name = TAG_AUDIT, description = "The append-only audit log."),
        (name = TAG_OPERATIONS, description = "Health, readiness, metrics and this documentation."),
    )
)]
pub struct ApiDoc;

/// Adds the `basic_auth` security scheme that the operations name.
struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic_auth", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// Adds to every operation the answers to a request head over the limits, which any
/// endpoint may give before its handler runs: `414 URI_TOO_LONG` and
/// `431 HEADERS_TOO_LARGE` (a request that is not HTTP at all is `400 MALFORMED_REQUEST`,
/// said in the document's description).
struct RequestHeadErrors;

impl Modify for RequestHeadErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let uri = format!(
            "`URI_TOO_LONG`: the URL (path and query string) is longer than {} KiB.",
            crate::limits::MAX_URI_BYTES / 1024
        );
        let head = format!(
            "`HEADERS_TOO_LARGE`: more than {} request headers, or more than {} KiB of them.",
            crate::limits::MAX_HEADERS,
            crate::limits::MAX_HEADER_BYTES / 1024
        );
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.entry("414".into()).or_insert_with(|| error_response(&uri, &[]));
                responses.entry("431".into()).or_insert_with(|| error_response(&head, &[]));
            }
        }
    }
}

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        doc.to_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not serialise the OpenAPI document");
            "{}".to_string()
        })
    })
}

/// The interactive documentation page: plain HTML and JavaScript, no external resources.
pub const DOCS_HTML: &str = include_str!("docs.html");

/// The `/docs` page's own Content-Security-Policy: its inline script and style, and
/// requests to this server only (the global policy is `default-src 'none'`).
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                            connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn docs_response() -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], DOCS_HTML).into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
    response
}

/// The web console: one self-contained page of plain HTML, CSS and JavaScript that
/// uses the JSON API with credentials typed into the page.
pub const CONSOLE_HTML: &str = include_str!("console.html");

/// The console's own Content-Security-Policy: its inline script and style, images from
/// `data:` and `blob:` URLs (enrolled images and the probe photo), requests to this
/// server only.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                               img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                               frame-ancestors 'none'";

pub fn console_response() -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], CONSOLE_HTML).into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONSOLE_CSP));
    response
}

// ---------------------------------------------------------------------------------
// Shared error responses
// ---------------------------------------------------------------------------------

fn error_response(description: &str, headers: &[(&str, &str)]) -> RefOr<utoipa::openapi::Response> {
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

// ---------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------

/// The body of every error response.
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
    pub boxes: Option<Vec<crate::routes::search_details::ScoredBox>>,
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

/// Every error code (stable; see the error table of docs/API.md).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidParameter,
    MissingField,
    InvalidImage,
    InvalidJson,
    InvalidMultipart,
    InvalidBody,
    WeakPassword,
    RoleChangeNotSupported,
    Unauthorized,
    Forbidden,
    IndexNotFound,
    RecordNotFound,
    FileNotFound,
    UserNotFound,
    JobNotFound,
    NotFound,
    MethodNotAllowed,
    IndexNameTaken,
    Conflict,
    UserExists,
    IndexPackMismatch,
    ImageTooLarge,
    PayloadTooLarge,
    UnsupportedMediaType,
    NoFaceDetected,
    LowQualityFace,
    DuplicateFace,
    TooManyJobs,
    FaceTooSmall,
    FaceNotUpright,
    MultipleFaces,
    LivenessCheckFailed,
    LivenessCannotJudge,
    LivenessRequired,
    MalformedRequest,
    UriTooLong,
    HeadersTooLarge,
    TooManyAttempts,
    InternalError,
    ServiceUnavailable,
    RequestTimeout,
}

/// `INTERNAL` (filled by the service's users) or `EXTERNAL` (imported from an outside
/// source; read-only to non-admins).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum IndexType {
    Internal,
    External,
}

/// A user's role.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Searcher,
    Auditor,
}

/// A face database (index). `id`, `index_name`, `index_type`, `record_count`, `title`
/// and `description` are the published fields.
#[derive(Debug, Serialize, ToSchema)]
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

/// A face database (index) as the Part 2 endpoints return it (`POST /face/index`,
/// `GET`/`PATCH /face/index/{index_id}`): the fields of [`IndexObject`] plus what a
/// minimum score means at the index's current size. The Part 1 details list does not
/// carry these.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManagedIndexObject {
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
    /// Only with `?min_match_score=` on `GET /face/index/{index_id}`: the expected
    /// number of this index's faces at or above that score in one search of a person
    /// not enrolled.
    pub expected_false_matches: Option<ExpectedFalseMatches>,
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

/// One search result. The published fields are `match_score`, `distance`,
/// `match_image_id`, `name`, `dob`, `nationality`, `gender`, `id_no`, `address`,
/// `watch_list`, `additional_info`, `index_name` and `index_type`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MatchResult {
    /// Calibrated similarity 0–100, higher is more similar; 70 means a false-match
    /// rate of at most 1e-5 per comparison.
    pub match_score: f64,
    /// `1 − cosine similarity` of the embeddings, the quantity results are ranked by.
    pub distance: f64,
    /// The matched enrolled image, for `GET /media/file/download/{file_id}`.
    pub match_image_id: String,
    pub name: String,
    /// `YYYY-MM-DD` or empty.
    pub dob: String,
    /// ISO 3166-1 alpha-2 or empty.
    pub nationality: String,
    pub gender: String,
    pub id_no: String,
    pub address: String,
    /// Watch-list categories of the record, possibly empty.
    pub watch_list: Vec<String>,
    pub additional_info: String,
    /// The index the match came from.
    pub index_name: String,
    pub index_type: IndexType,
    pub index_id: String,
    pub record_id: String,
    /// The client's own id of the record.
    pub reference: Option<String>,
    /// Cosine similarity of the embeddings, −1 to 1.
    pub similarity: f64,
}

/// An enrolled person.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordObject {
    pub record_id: String,
    pub index_id: String,
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
    /// At most 64 categories of at most 64 characters.
    pub watch_list: Vec<String>,
    /// At most 8192 characters.
    pub additional_info: String,
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

/// Where a re-embedding job stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Images are being embedded; searches use the old vectors.
    Running,
    /// The index holds the new pack's vectors.
    Done,
    /// Stopped by an error (`error`); starting it again continues where it was.
    Failed,
}

/// A stored image in which the new pack found no usable face: its record is kept, it
/// has no vector under the new pack.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReembedFailure {
    pub image_id: String,
    pub record_id: String,
    /// `NO_FACE_DETECTED`, `FACE_TOO_SMALL`, `FACE_NOT_UPRIGHT`, `INVALID_IMAGE` or `IMAGE_TOO_LARGE`.
    pub code: String,
}

/// A job moving an index to another model pack.
#[derive(Debug, Serialize, ToSchema)]
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

/// One image of a record.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordImage {
    pub image_id: String,
    /// Measured at enrolment; `null` for images enrolled before quality was measured.
    pub quality: Option<FaceQualityObject>,
}

/// The quality measures of a face (docs/API.md, "Face quality").
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

/// `running`, `done` or `failed`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Running,
    Done,
    Failed,
}

/// Faces compared so far, out of all.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobProgress {
    pub done: u64,
    pub total: u64,
}

/// A record of a duplicate group.
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicateRecordObject {
    pub record_id: String,
    pub index_id: String,
    pub name: String,
    pub id_no: String,
    pub reference: Option<String>,
}

/// Two records of a group whose faces match, with their best-matching images.
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicateGroupObject {
    pub records: Vec<DuplicateRecordObject>,
    /// Best first.
    pub pairs: Vec<DuplicatePairObject>,
}

/// A duplicate-identity job.
#[derive(Debug, Serialize, ToSchema)]
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

/// A page of records.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPage {
    pub records: Vec<RecordObject>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A stored image.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileObject {
    /// The bytes exactly as uploaded, base64.
    #[schema(content_encoding = "base64")]
    pub file_base64: String,
    pub file_name: String,
    /// MIME type, e.g. `image/jpeg`.
    pub file_type: String,
    pub file_id: String,
}

/// A user account (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserObject {
    pub username: String,
    pub role: Role,
    /// Ids of the indexes granted to the user, sorted.
    pub grants: Vec<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// One entry of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Increasing sequence number.
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// The user who acted.
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

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `before_id` for the next page; `null` on the last page.
    pub next_before_id: Option<i64>,
}

/// Health and readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusObject {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: String,
}

macro_rules! envelope {
    ($($name:ident($ty:ty): $doc:literal;)*) => {$(
        #[doc = $doc]
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $name {
            pub response: $ty,
        }
    )*};
}

envelope! {
    IndexListResponse(Vec<IndexObject>): "`{\"response\": [index, …]}`";
    ManagedIndexResponse(ManagedIndexObject): "`{\"response\": index}` (Part 2: with `faces` and `min_score_fpir_1e3`)";
    MatchListResponse(Vec<MatchResult>): "`{\"response\": [match, …]}`, best first; `[]` when nothing matches";
    FileResponse(FileObject): "`{\"response\": file}`";
    RecordResponse(RecordObject): "`{\"response\": record}`";
    ReembedJobResponse(ReembedJobObject): "`{\"response\": job}`";
    DuplicateJobResponse(DuplicateJob): "`{\"response\": job}`";
    RecordPageResponse(RecordPage): "`{\"response\": {\"records\": […], \"next_cursor\": …}}`";
    UserResponse(UserObject): "`{\"response\": user}`";
    UserListResponse(Vec<UserObject>): "`{\"response\": [user, …]}`, by username";
    AuditPageResponse(AuditPage): "`{\"response\": {\"events\": […], \"next_before_id\": …}}`";
    StatusResponse(StatusObject): "`{\"response\": {\"status\": …}}`";
}

// ---------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------

/// `multipart/form-data` of `POST /face/search`.
#[derive(Debug, ToSchema)]
pub struct SearchForm {
    /// The photo (JPEG, PNG, WebP, BMP, GIF, TIFF, ICO, PGM/PPM); the largest face is searched.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub source_image: Vec<u8>,
    /// Comma-separated index ids (at most 100).
    pub target_index_ids: String,
    /// 0–100, default 70.
    #[schema(minimum = 0, maximum = 100, default = 70)]
    pub min_match_score: Option<f64>,
    /// 1 to the server's cap (`--max-results-cap`, default 100), default 5.
    #[schema(minimum = 1, default = 5)]
    pub max_results: Option<u32>,
}

/// `multipart/form-data` of `POST /face/index/{index_id}/records`.
#[derive(Debug, ToSchema)]
pub struct EnrolForm {
    /// The photo; it must show one clear face.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub image: Vec<u8>,
    pub name: Option<String>,
    /// `YYYY-MM-DD`.
    pub dob: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub nationality: Option<String>,
    pub gender: Option<String>,
    pub id_no: Option<String>,
    pub address: Option<String>,
    /// Comma-separated categories.
    pub watch_list: Option<String>,
    pub additional_info: Option<String>,
    /// The client's own id, unique per index: enrolling it again returns the existing record.
    pub reference: Option<String>,
}

/// `multipart/form-data` of `POST /face/index/{index_id}/records/{record_id}/images`.
#[derive(Debug, ToSchema)]
pub struct ImageForm {
    /// Another photo of the person; it must show one clear face.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub image: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use facesearch_store::{IndexInfo, Record, RecordFields, Role as StoreRole, User};
    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(document_json()).expect("the document is JSON")
    }

    fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {schema} has no properties"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    }

    fn sample_record() -> Record {
        Record {
            record_id: "r".into(),
            index_id: "i".into(),
            fields: RecordFields::default(),
            reference: Some("ref".into()),
            image_ids: vec!["img".into()],
            images: vec![facesearch_store::ImageSummary { image_id: "img".into(), quality: None }],
            created_at: "t".into(),
            updated_at: "t".into(),
        }
    }

    #[test]
    fn document_is_openapi_3_1() {
        let doc = doc();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        assert_eq!(doc["components"]["securitySchemes"]["basic_auth"]["scheme"], "basic");
    }

    #[test]
    fn schemas_match_what_the_handlers_send() {
        let doc = doc();
        let index = IndexInfo {
            id: "i".into(),
            index_name: "n".into(),
            index_type: facesearch_store::IndexType::Internal,
            record_count: 0,
            title: "t".into(),
            description: "d".into(),
            pack: "open".into(),
            created_at: "t".into(),
            updated_at: "t".into(),
        };
        assert_eq!(keys(&serde_json::to_value(routes::index_object(&index)).unwrap()), properties(&doc, "IndexObject"));
        let hints = routes::false_matches::IndexHints {
            faces: Some(1),
            min_score_fpir_1e3: Some(42.0),
            expected: Some((70.0, facesearch_face::false_matches::Estimate::ZERO)),
        };
        let managed = routes::false_matches::managed_fields(&index, hints, true);
        assert_eq!(keys(&managed), properties(&doc, "ManagedIndexObject"));
        assert_eq!(keys(&managed["expected_false_matches"]), properties(&doc, "ExpectedFalseMatches"));
        assert_eq!(keys(&serde_json::to_value(sample_record()).unwrap()), properties(&doc, "RecordObject"));
        let image = serde_json::to_value(&sample_record().images[0]).unwrap();
        assert_eq!(keys(&image), properties(&doc, "RecordImage"));
        let quality = facesearch_face::FaceQuality {
            face_size: 1.0,
            eye_distance: 1.0,
            sharpness: 1.0,
            compression: 1.0,
            brightness: 1.0,
            dark_fraction: 0.0,
            bright_fraction: 0.0,
            yaw: 0.0,
            pitch: 0.0,
            roll: 0.0,
            detector_score: 0.9,
            rotation: 0,
        };
        assert_eq!(keys(&serde_json::to_value(quality).unwrap()), properties(&doc, "FaceQualityObject"));
        let jobs = crate::jobs::DuplicateJobs::default();
        let job = jobs.start(vec!["i".into()], 80.0, "admin").expect("a job");
        let record = sample_record();
        let pair = facesearch_engine::DuplicatePair {
            record_a: "a".into(),
            record_b: "b".into(),
            match_score: 90.0,
            similarity: 0.7,
            image_a: "x".into(),
            image_b: "y".into(),
        };
        let group = facesearch_engine::DuplicateGroup {
            records: vec![facesearch_engine::DuplicateRecord {
                record_id: record.record_id.clone(),
                index_id: record.index_id.clone(),
                name: String::new(),
                id_no: String::new(),
                reference: None,
            }],
            pairs: vec![pair],
        };
        let report = facesearch_engine::DuplicateReport {
            faces: 2,
            min_score: 80.0,
            groups: vec![group],
            truncated: false,
            same_identity_skipped: 0,
        };
        jobs.finish(&job.id, Ok(report));
        let view = jobs.view(&job.id).expect("the job");
        assert_eq!(keys(&view), properties(&doc, "DuplicateJob"));
        assert_eq!(keys(&view["groups"][0]), properties(&doc, "DuplicateGroupObject"));
        assert_eq!(keys(&view["groups"][0]["records"][0]), properties(&doc, "DuplicateRecordObject"));
        assert_eq!(keys(&view["groups"][0]["pairs"][0]), properties(&doc, "DuplicatePairObject"));
        assert_eq!(keys(&view["progress"]), properties(&doc, "JobProgress"));
        let user = User {
            username: "u".into(),
            role: StoreRole::Searcher,
            password_hash: String::new(),
            grants: vec![],
            created_at: "t".into(),
        };
        assert_eq!(keys(&routes::users::user_object(&user)), properties(&doc, "UserObject"));
        let event = facesearch_store::AuditEvent {
            id: 1,
            at: "t".into(),
            actor: "a".into(),
            action: "x".into(),
            outcome: "ok".into(),
            index_ids: vec![],
            record_ids: vec![],
            details: Value::Null,
        };
        assert_eq!(keys(&serde_json::to_value(event).unwrap()), properties(&doc, "AuditEvent"));
        let m = facesearch_engine::Match {
            record: sample_record(),
            index_name: "n".into(),
            index_type: "INTERNAL".into(),
            image_id: "img".into(),
            similarity: 0.5,
            score: 70.0,
            distance: 0.5,
        };
        assert_eq!(keys(&routes::search::match_object(&m)), properties(&doc, "MatchResult"));
        let job = facesearch_store::ReembedJob {
            job_id: "j".into(),
            index_id: "i".into(),
            pack: "insightface".into(),
            from_pack: "open".into(),
            state: facesearch_store::JobState::Done,
            total: 2,
            done: 2,
            failed: 1,
            failures: vec![facesearch_store::ReembedFailure {
                image_id: "img".into(),
                record_id: "r".into(),
                code: "NO_FACE_DETECTED".into(),
            }],
            error: None,
            requested_by: "admin".into(),
            created_at: "t".into(),
            updated_at: "t".into(),
            finished_at: Some("t".into()),
        };
        let job = serde_json::to_value(&job).unwrap();
        assert_eq!(keys(&job), properties(&doc, "ReembedJobObject"));
        assert_eq!(keys(&job["failures"][0]), properties(&doc, "ReembedFailure"));
    }

    #[test]
    fn published_fields_are_documented() {
        let doc = doc();
        let index = properties(&doc, "IndexObject");
        for f in ["id", "index_name", "index_type", "record_count", "title", "description"] {
            assert!(index.contains(f), "IndexObject lacks {f}");
        }
        let m = properties(&doc, "MatchResult");
        for f in [
            "match_score",
            "distance",
            "match_image_id",
            "name",
            "dob",
            "nationality",
            "gender",
            "id_no",
            "address",
            "watch_list",
            "additional_info",
            "index_name",
            "index_type",
        ] {
            assert!(m.contains(f), "MatchResult lacks {f}");
        }
        let file = properties(&doc, "FileObject");
        for f in ["file_base64", "file_name", "file_type", "file_id"] {
            assert!(file.contains(f), "FileObject lacks {f}");
        }
    }

    /// The error codes of the schema are exactly those of the error table in docs/API.md.
    #[test]
    fn error_codes_match_the_reference() {
        let api_md = include_str!("../../../docs/API.md");
        let table = api_md.split("## Error codes").nth(1).expect("an error-code section");
        let documented: BTreeSet<String> = table
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| l.split('|').nth(2))
            .map(|c| c.trim().trim_matches('`').to_string())
            .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
            .collect();
        let doc = doc();
        let in_schema: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode is an enum")
            .iter()
            .map(|v| v.as_str().expect("a string").to_string())
            .collect();
        assert_eq!(documented, in_schema);
    }

    #[test]
    fn docs_page_is_self_contained() {
        let lower = DOCS_HTML.to_ascii_lowercase();
        for external in ["http://", "https://", "//cdn", "src=\"/", "<link"] {
            assert!(!lower.contains(external), "the docs page refers to {external}");
        }
        assert!(DOCS_HTML.contains("/openapi.json"));
    }

    #[test]
    fn console_page_is_self_contained() {
        let lower = CONSOLE_HTML.to_ascii_lowercase();
        for external in ["http://", "https://", "//cdn", "src=\"/", "<link"] {
            assert!(!lower.contains(external), "the console page refers to {external}");
        }
        assert!(CONSOLE_HTML.contains("/face/search"));
    }
}
