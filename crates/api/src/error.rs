//! The one place where every failure becomes an HTTP status and a stable error code.
//!
//! Bodies are `{"error": {"code": "SCREAMING_SNAKE_CASE", "message": "...", ...}}`.
//! Messages say what went wrong in the request; internal details are logged, never
//! sent. The codes and their statuses are the table of [`crate::error_codes`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use facesearch_engine::users::{MIN_PASSWORD_CHARS, UserRuleError};
use facesearch_engine::{EngineError, decode_error_code, photo_error_code};
use facesearch_face::{DecodeError, PipelineError};
use facesearch_store::StoreError;
use serde_json::{Map, Value, json};

use crate::responses::ErrorDetails;

pub use crate::error_codes::ErrorCode;
use crate::responses::search::ScoredBox;

#[derive(Debug)]
pub struct ApiError {
    /// The code's status ([`ErrorCode::status`]), but for the few transport answers
    /// that keep their own ([`ApiError::with_status`]).
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Boxed: most errors carry none, and an `Err` stays small.
    pub details: Box<ErrorDetails>,
}

impl ApiError {
    /// An error of `code`, answered with the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into(), details: Box::default() }
    }

    /// The same error answered with another status: a bare status of the transport
    /// (e.g. `502`) that has no code of its own keeps it.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Sets details of the error body (fields of [`ErrorDetails`], the type its
    /// schema is made from): `.with(|d| d.index_id = Some(id.into()))`.
    pub fn with(mut self, set: impl FnOnce(&mut ErrorDetails)) -> Self {
        set(&mut self.details);
        self
    }

    /// The details as a JSON object, only those set (also what the audit trail keeps).
    pub fn details_json(&self) -> Map<String, Value> {
        let mut details = match serde_json::to_value(&*self.details) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        details.retain(|_, v| !v.is_null());
        details
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "valid HTTP Basic credentials are required")
    }
    pub fn forbidden(what: &str) -> Self {
        Self::new(ErrorCode::Forbidden, format!("you are not allowed to {what}"))
    }
    pub fn invalid_parameter(name: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter, message).with(|d| d.parameter = Some(name.into()))
    }
    pub fn missing_field(name: &str) -> Self {
        Self::new(ErrorCode::MissingField, format!("the field {name:?} is required"))
            .with(|d| d.field = Some(name.into()))
    }
    pub fn index_not_found(id: &str) -> Self {
        Self::new(ErrorCode::IndexNotFound, format!("no index with id {id:?}")).with(|d| d.index_id = Some(id.into()))
    }
    pub fn record_not_found(id: &str) -> Self {
        Self::new(ErrorCode::RecordNotFound, format!("no record with id {id:?} in this index"))
            .with(|d| d.record_id = Some(id.into()))
    }
    pub fn file_not_found() -> Self {
        Self::new(ErrorCode::FileNotFound, "no file with this id")
    }
    pub fn internal() -> Self {
        Self::new(ErrorCode::InternalError, "the server failed to handle the request; it has been logged")
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, message)
    }

    /// The JSON body, `{"error": {"code", "message", …details}}` (its keys sorted, as
    /// every body of the service: see [`crate::responses`]).
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), self.code.as_str().into());
        error.insert("message".into(), self.message.clone().into());
        error.extend(self.details_json());
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        // For middleware (the audit trail) that needs the code without parsing the body.
        response.extensions_mut().insert(self.code);
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"facesearch\""));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        // The code is the engine's (`decode_error_code`); the status and details are HTTP's.
        let code = ErrorCode::from_code(decode_error_code(&e)).unwrap_or(ErrorCode::InvalidImage);
        match e {
            DecodeError::TooManyBytes { bytes, limit } => Self::new(code, e.to_string()).with(|d| {
                d.bytes = Some(bytes as u64);
                d.limit = Some(limit as u64);
            }),
            DecodeError::TooManyPixels { width, height, limit } => Self::new(code, e.to_string()).with(|d| {
                d.width = Some(u64::from(width));
                d.height = Some(u64::from(height));
                d.max_pixels = Some(limit);
            }),
            DecodeError::Empty | DecodeError::UnknownFormat | DecodeError::Corrupt { .. } => {
                Self::new(code, e.to_string())
            }
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        // The code is the engine's (`photo_error_code`); the status and details are HTTP's.
        let Some(code) = photo_error_code(&e).and_then(ErrorCode::from_code) else {
            tracing::error!(error = %e, "face pipeline failure");
            return Self::internal();
        };
        let error = Self::new(code, e.to_string());
        match &e {
            PipelineError::Decode(d) => d.clone().into(),
            PipelineError::FaceTooSmall { size, min } => error.with(|d| {
                d.face_size = Some(f64::from(*size));
                d.min_face_size = Some(f64::from(*min));
            }),
            PipelineError::AmbiguousFaces { count, faces } => {
                // The boxes let an operator see what the other face was (a poster, a statuette…).
                error.with(|d| {
                    d.faces = Some(*count as u64);
                    d.boxes = Some(faces.iter().map(ScoredBox::of).collect());
                })
            }
            PipelineError::NotUpright { roll, max } => error.with(|d| {
                d.roll = Some(round(f64::from(*roll), 1));
                d.max_roll = Some(f64::from(*max));
            }),
            PipelineError::LowQuality(f) => {
                let limit = Some(round(f64::from(f.limit), 3));
                error.with(|d| {
                    d.measure = Some(f.measure.to_string());
                    d.value = Some(round(f64::from(f.value), 3));
                    if f.limit_kind == "min" {
                        d.minimum = limit;
                    } else {
                        d.maximum = limit;
                    }
                })
            }
            PipelineError::NoFace
            | PipelineError::Unalignable
            | PipelineError::Models(_)
            | PipelineError::Runtime(_) => error,
        }
    }
}

impl From<UserRuleError> for ApiError {
    fn from(e: UserRuleError) -> Self {
        if e.is_weak_password() {
            Self::new(ErrorCode::WeakPassword, e.to_string()).with(|d| d.min_length = Some(MIN_PASSWORD_CHARS as u64))
        } else {
            Self::invalid_parameter(e.parameter(), e.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::DuplicateIndexName(name) => {
                Self::new(ErrorCode::IndexNameTaken, format!("an index named {name:?} already exists"))
            }
            StoreError::DuplicateUser(name) => {
                Self::new(ErrorCode::UserExists, format!("a user named {name:?} already exists"))
            }
            StoreError::Conflict(detail) => Self::new(ErrorCode::Conflict, detail.clone()),
            StoreError::LastAdmin(name) => Self::new(ErrorCode::Conflict, "the last admin cannot be deleted")
                .with(|d| d.username = Some(name.clone())),
            StoreError::InvalidCursor => {
                Self::invalid_parameter("cursor", "the cursor is not one this server returned")
            }
            StoreError::InvalidInput(detail) => Self::new(ErrorCode::InvalidParameter, detail.clone()),
            // A shared database that is down or restarting: the node itself is fine.
            StoreError::Unavailable { .. } => {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable("the database is not available; retry shortly")
            }
            // The index moved to another model pack on another node mid-request.
            StoreError::PackMismatch { index_id, .. } => {
                Self::unavailable(format!("index {index_id} moved to another model pack during the request; retry"))
            }
            // Busy, or a transaction that lost a race: retrying may succeed.
            _ if e.is_transient() => {
                tracing::warn!(error = %e, "database busy");
                Self::unavailable("the database is busy; retry shortly")
            }
            // Damaged data, an unknown schema, a failed migration, an SQL error: a fault
            // of this server, not an outage (answering "retry" would hide it).
            _ => {
                tracing::error!(error = %e, "store failure");
                Self::internal()
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Face(f) => f.into(),
            EngineError::Store(s) => s.into(),
            EngineError::LivenessFailed { score, threshold } => {
                Self::new(ErrorCode::LivenessCheckFailed, e.to_string()).with(|d| {
                    d.liveness_score = Some(round(f64::from(score), 4));
                    d.threshold = Some(round(f64::from(threshold), 4));
                })
            }
            EngineError::LivenessCannotJudge { context, min_context } => {
                Self::new(ErrorCode::LivenessCannotJudge, e.to_string()).with(|d| {
                    d.context = Some(round(f64::from(context), 2));
                    d.min_context = Some(round(f64::from(min_context), 2));
                })
            }
            EngineError::IndexNotFound(id) => Self::index_not_found(&id),
            EngineError::UnknownPack { .. } => Self::new(ErrorCode::IndexPackMismatch, e.to_string()),
            EngineError::PackMoved(_) => Self::unavailable(e.to_string()),
            EngineError::MixedPacks(_) => Self::new(ErrorCode::IndexPackMismatch, e.to_string()),
            EngineError::DuplicateFace { ref record_id, ref image_id, score } => {
                Self::new(ErrorCode::DuplicateFace, e.to_string()).with(|d| {
                    d.record_id = Some(record_id.clone());
                    d.image_id = Some(image_id.clone());
                    d.match_score = Some(score);
                })
            }
            EngineError::UserRule(rule) => rule.into(),
            EngineError::UserNotFound(name) => crate::routes::users::user_not_found(&name),
            EngineError::RoleChange { .. } => {
                Self::new(ErrorCode::RoleChangeNotSupported, e.to_string()).with(|d| d.parameter = Some("role".into()))
            }
            EngineError::OwnAccount(name) => Self::new(ErrorCode::Conflict, "you cannot delete your own account")
                .with(|d| d.username = Some(name.clone())),
            EngineError::NotReady => Self::unavailable(e.to_string()),
            EngineError::Busy => Self::unavailable("the server is too busy; retry shortly"),
            EngineError::Vectors(_)
            | EngineError::Calibration(_)
            | EngineError::Task(_)
            | EngineError::Setting { .. } => {
                tracing::error!(error = %e, "engine failure");
                Self::internal()
            }
        }
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_faults_are_internal_errors_and_outages_are_503() {
        let corrupt = ApiError::from(StoreError::Corrupt("an undecodable row".into()));
        assert_eq!((corrupt.status, corrupt.code), (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError));
        let schema = ApiError::from(StoreError::UnsupportedSchema { found: 9, supported: 8 });
        assert_eq!(schema.status, StatusCode::INTERNAL_SERVER_ERROR);
        let down = ApiError::from(StoreError::Unavailable { context: "testing", detail: "refused".into() });
        assert_eq!((down.status, down.code), (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable));
    }

    #[test]
    fn every_photo_problem_code_of_the_engine_is_in_the_table() {
        let problems = [
            PipelineError::NoFace,
            PipelineError::Unalignable,
            PipelineError::FaceTooSmall { size: 10.0, min: 32.0 },
            PipelineError::NotUpright { roll: 90.0, max: 45.0 },
            PipelineError::AmbiguousFaces { count: 2, faces: Vec::new() },
            PipelineError::Decode(DecodeError::Empty),
            PipelineError::Decode(DecodeError::TooManyBytes { bytes: 2, limit: 1 }),
            PipelineError::Decode(DecodeError::TooManyPixels { width: 2, height: 2, limit: 1 }),
            PipelineError::LowQuality(facesearch_face::QualityFailure {
                measure: "yaw",
                value: 40.0,
                limit: 30.0,
                limit_kind: "max",
            }),
        ];
        for problem in problems {
            let code = photo_error_code(&problem).expect("a problem of the photo");
            assert_eq!(ErrorCode::from_code(code).map(ErrorCode::as_str), Some(code));
            assert_eq!(ApiError::from(problem).code.as_str(), code);
        }
    }

    #[test]
    fn account_rule_errors_keep_their_published_codes() {
        use facesearch_engine::users::{check_password, check_username, parse_role};
        let short = ApiError::from(check_password("short-pass1").unwrap_err());
        assert_eq!((short.status, short.code), (StatusCode::BAD_REQUEST, ErrorCode::WeakPassword));
        assert_eq!(short.details.min_length, Some(MIN_PASSWORD_CHARS as u64));
        let blank = ApiError::from(check_password(&" ".repeat(12)).unwrap_err());
        assert_eq!(blank.code, ErrorCode::WeakPassword);
        let long = ApiError::from(check_password(&"x".repeat(1025)).unwrap_err());
        assert_eq!((long.code, long.details.parameter.as_deref()), (ErrorCode::InvalidParameter, Some("password")));
        let name = ApiError::from(check_username("me").unwrap_err());
        assert_eq!((name.code, name.details.parameter.as_deref()), (ErrorCode::InvalidParameter, Some("username")));
        let role = ApiError::from(parse_role("root").unwrap_err());
        assert_eq!(role.details.parameter.as_deref(), Some("role"));
    }
}
