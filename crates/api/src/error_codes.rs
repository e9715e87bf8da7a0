//! The one table of error codes: each code with its HTTP status and what it means.
//!
//! [`ApiError`](crate::ApiError) takes its status from here, the OpenAPI document its
//! `ErrorCode` schema (the codes, and a table of statuses and meanings in its
//! description), and a test holds the table equal to the error table of docs/API.md,
//! row for row. A new code is one line here (and one row there). In the manner of
//! meilisearch's `make_error_codes!`.

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:ident, $when:literal;)*) => {
        /// Every error code (stable; see the error table of docs/API.md).
        // The serialised name comes from `rename_all` (utoipa's schema follows it);
        // `codes_serialise_as_their_string` holds it to the table's.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as sent, `SCREAMING_SNAKE_CASE`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The code sent as `code`, if the table has it (the engine names photo
            /// problems by these strings: `facesearch_engine::photo_error_code`).
            pub fn from_code(code: &str) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }

            /// The HTTP status an error of this code is answered with (a few answers of the
            /// transport keep their own status: [`crate::limits::envelope_for`]).
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// When the code is given, as docs/API.md says it.
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $when,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidParameter = "INVALID_PARAMETER", BAD_REQUEST,
        "a parameter or field has a wrong value (`parameter` names it)";
    MissingField = "MISSING_FIELD", BAD_REQUEST,
        "a required form field is absent (`field` names it)";
    InvalidImage = "INVALID_IMAGE", BAD_REQUEST,
        "the file is empty, not an image, corrupt or truncated";
    InvalidJson = "INVALID_JSON", BAD_REQUEST,
        "the JSON body is malformed, has a wrong type or an unknown field";
    InvalidMultipart = "INVALID_MULTIPART", BAD_REQUEST,
        "the multipart body is malformed or has more than 32 parts";
    InvalidBody = "INVALID_BODY", BAD_REQUEST,
        "the request body could not be read";
    MalformedRequest = "MALFORMED_REQUEST", BAD_REQUEST,
        "the request is not valid HTTP (e.g. a malformed header line)";
    WeakPassword = "WEAK_PASSWORD", BAD_REQUEST,
        "a new password is shorter than 12 characters, or has no printable character other than a space";
    RoleChangeNotSupported = "ROLE_CHANGE_NOT_SUPPORTED", BAD_REQUEST,
        "a user's role cannot be changed in place (remove and add the user)";
    Unauthorized = "UNAUTHORIZED", UNAUTHORIZED,
        "no or wrong credentials";
    Forbidden = "FORBIDDEN", FORBIDDEN,
        "the user may not do this (to this index)";
    LivenessRequired = "LIVENESS_REQUIRED", FORBIDDEN,
        "the server requires the liveness check (`--require-liveness`) and a caller other than an admin sent `perform_liveness_check=false` (`parameter`)";
    IndexNotFound = "INDEX_NOT_FOUND", NOT_FOUND,
        "no index with that id (`index_id`)";
    RecordNotFound = "RECORD_NOT_FOUND", NOT_FOUND,
        "no record with that id in the index";
    FileNotFound = "FILE_NOT_FOUND", NOT_FOUND,
        "no image with that id, or not one the caller may read";
    UserNotFound = "USER_NOT_FOUND", NOT_FOUND,
        "no user with that name";
    JobNotFound = "JOB_NOT_FOUND", NOT_FOUND,
        "the index has no re-embedding job (`index_id`), or no duplicate job with that id for this index (unknown, forgotten, or lost in a restart; `job_id`)";
    NotFound = "NOT_FOUND", NOT_FOUND,
        "no such endpoint";
    MethodNotAllowed = "METHOD_NOT_ALLOWED", METHOD_NOT_ALLOWED,
        "the endpoint does not take that method";
    IndexNameTaken = "INDEX_NAME_TAKEN", CONFLICT,
        "another index has that name";
    Conflict = "CONFLICT", CONFLICT,
        "e.g. a record update would duplicate a `reference`";
    UserExists = "USER_EXISTS", CONFLICT,
        "a user with that name exists";
    IndexPackMismatch = "INDEX_PACK_MISMATCH", CONFLICT,
        "the index holds vectors of a model pack this server cannot run, or a duplicate job spans indexes of different packs";
    DuplicateFace = "DUPLICATE_FACE", CONFLICT,
        "`check_duplicates=true` and the face matches another record of the index (`record_id`, `image_id`, `match_score`)";
    ImageTooLarge = "IMAGE_TOO_LARGE", PAYLOAD_TOO_LARGE,
        "the image exceeds the byte or pixel limit (`limit`, `max_pixels`)";
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", PAYLOAD_TOO_LARGE,
        "the request body exceeds the limit";
    UriTooLong = "URI_TOO_LONG", URI_TOO_LONG,
        "the URL (path and query string) is longer than 8 KiB";
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE", UNSUPPORTED_MEDIA_TYPE,
        "not `multipart/form-data` (or not JSON where JSON is expected)";
    NoFaceDetected = "NO_FACE_DETECTED", UNPROCESSABLE_ENTITY,
        "no face in the photo";
    LowQualityFace = "LOW_QUALITY_FACE", UNPROCESSABLE_ENTITY,
        "enrolment photo below a quality minimum (`measure`, `value`, `minimum` or `maximum`)";
    FaceTooSmall = "FACE_TOO_SMALL", UNPROCESSABLE_ENTITY,
        "the face is too small to embed reliably (`face_size`, `min_face_size`)";
    MultipleFaces = "MULTIPLE_FACES", UNPROCESSABLE_ENTITY,
        "enrolment photo with several faces of similar size (`faces`, `boxes`)";
    FaceNotUpright = "FACE_NOT_UPRIGHT", UNPROCESSABLE_ENTITY,
        "enrolment photo whose face no quarter turn shows clearly upright (`roll`, `max_roll`; see Sideways photos)";
    LivenessCheckFailed = "LIVENESS_CHECK_FAILED", UNPROCESSABLE_ENTITY,
        "the probe was judged a spoof (`liveness_score`, `threshold`)";
    LivenessCannotJudge = "LIVENESS_CANNOT_JUDGE", UNPROCESSABLE_ENTITY,
        "the face has less context around it than `--liveness-min-context` (default 1.0: the face is larger than the photo); liveness cannot be judged (`context`, `min_context`)";
    HeadersTooLarge = "HEADERS_TOO_LARGE", REQUEST_HEADER_FIELDS_TOO_LARGE,
        "more than 100 request headers, or more than 64 KiB of them";
    TooManyJobs = "TOO_MANY_JOBS", TOO_MANY_REQUESTS,
        "two duplicate jobs are running already";
    TooManyAttempts = "TOO_MANY_ATTEMPTS", TOO_MANY_REQUESTS,
        "too many failed logins for this user from this address, or from this address (`Retry-After`; see Failed logins)";
    InternalError = "INTERNAL_ERROR", INTERNAL_SERVER_ERROR,
        "a server fault (including damaged stored data, a database schema newer than this build, a failed migration or an SQL error); details are in the server log only";
    ServiceUnavailable = "SERVICE_UNAVAILABLE", SERVICE_UNAVAILABLE,
        "models still loading, database unreachable (PostgreSQL: within `--db-timeout`) or busy (SQLite locked, a PostgreSQL transaction that lost a race: retry), an index moved to another model pack on another node mid-request (retry), too many requests in flight (`--max-in-flight`, per user `--max-in-flight-per-user`, for non-admins all but `--admin-reserved-slots`; the error's `limit` is the limit reached), too many uploads held in memory (`--upload-budget-bytes`, after waiting up to 5 s), analysis queue full for 10 s, or too many logins being checked (`Retry-After`)";
    RequestTimeout = "REQUEST_TIMEOUT", SERVICE_UNAVAILABLE,
        "the request took longer than `--request-timeout`";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So that a test may say `assert_eq!(error.code, "INVALID_JSON")`.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The table as Markdown, for the description of the `ErrorCode` schema.
pub fn markdown_table() -> String {
    let mut table = String::from("Every error code (stable):\n\n| status | code | when |\n|---|---|---|\n");
    for code in ErrorCode::ALL {
        table.push_str(&format!("| {} | `{}` | {} |\n", code.status().as_u16(), code.as_str(), code.description()));
    }
    table
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The table is docs/API.md's error table, row for row: status, code and meaning.
    #[test]
    fn the_table_is_the_reference_table() {
        let api_md = include_str!("../../../docs/API.md");
        let section = api_md.split("## Error codes").nth(1).expect("an error-code section");
        let documented: BTreeMap<String, (u16, String)> = section
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let status = cells.get(1)?.parse::<u16>().ok()?;
                let code = cells.get(2)?.trim_matches('`').to_string();
                // A description may itself hold `|`: everything up to the row's end.
                let when = cells[3..cells.len() - 1].join(" | ");
                Some((code, (status, when)))
            })
            .collect();
        let table: BTreeMap<String, (u16, String)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), (c.status().as_u16(), c.description().to_string())))
            .collect();
        assert_eq!(table, documented);
    }

    #[test]
    fn codes_serialise_as_their_string() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(code.as_str().chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{code}");
        }
    }
}
