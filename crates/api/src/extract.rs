//! Extractors that turn a request into validated input, with every rejection mapped
//! to the API's JSON errors (never axum's plain-text ones), in words that name no type
//! of the implementation.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::body::BodyTooLarge;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Path parameters (`{index_id}`, `{username}`, …). A parameter that is not UTF-8 text
/// once percent-decoded (`/face/index/%ff%fe`) is `400 INVALID_PARAMETER` naming it.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(match e.into_kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => ApiError::invalid_parameter(
                    &key,
                    format!("{key} in the URL is not valid UTF-8 text once percent-decoded"),
                ),
                _ => ApiError::new(ErrorCode::InvalidParameter, "the URL path is malformed"),
            }),
            Err(e) => {
                // A route whose handler asks for parameters its path does not have.
                tracing::error!(error = %e, "path parameters missing");
                Err(ApiError::internal())
            }
        }
    }
}

/// Query parameters as a map; parsing and range checks are done per parameter.
pub struct QueryParams(pub HashMap<String, String>);

impl FromRequestParts<AppState> for QueryParams {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::new(ErrorCode::InvalidParameter, "the query string is malformed"))?;
        Ok(Self(map))
    }
}

impl QueryParams {
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.0.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(_) => Err(ApiError::invalid_parameter(name, format!("{name} must be true or false"))),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An optional number in `range`; anything else is `400 INVALID_PARAMETER`.
    pub fn number(&self, name: &str, range: std::ops::RangeInclusive<f64>) -> Result<Option<f64>, ApiError> {
        let Some(text) = self.0.get(name).map(|v| v.trim()) else {
            return Ok(None);
        };
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && range.contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::invalid_parameter(
                name,
                format!("{name} must be a number from {} to {}, not {text:?}", range.start(), range.end()),
            )),
        }
    }
}

/// A JSON object body read into `T`; a body that is not a JSON object, malformed JSON,
/// an unknown field or a wrong type is `400 INVALID_JSON` saying what is wrong in the
/// request's terms (never the name of a type of the implementation).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(BodyTooLarge(limit)) = req.extensions().get::<BodyTooLarge>() {
            return Err(ApiError::too_large(format!("the request body is larger than {limit} bytes"))
                .with(|d| d.limit = Some(*limit as u64)));
        }
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("the request body is too large")
            } else {
                ApiError::new(ErrorCode::InvalidBody, "the request body could not be read")
            }
        })?;
        json_object(&bytes).map(Self)
    }
}

/// `application/json`, or an `application/…+json` type, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a request body that must be one JSON object into `T`.
pub fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidJson, message);
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(invalid("the body is empty; it must be a JSON object".into())),
        // Arrays, strings, numbers… (serde would otherwise fill a struct from an array).
        Some(_) => {
            return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Err(e) => invalid(json_error_message(&e)),
                Ok(_) => invalid("the body must be a JSON object".into()),
            });
        }
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json calls some misfits (a number where one of several words is expected)
        // syntax errors: valid JSON is never reported as invalid.
        if e.is_syntax() && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
            invalid(format!("the body does not fit the request: {}", neutral_words(&e.to_string())))
        } else {
            invalid(json_error_message(&e))
        }
    })
}

/// serde's words for what a body got wrong, with the names of Rust types replaced
/// by JSON's: "expected struct RecordPatchBody" becomes "expected a JSON object",
/// "expected u32" becomes "expected a whole number".
fn json_error_message(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("the body is not valid JSON (line {}, column {})", e.line(), e.column())
        }
        Category::Io => "the request body could not be read".to_string(),
        Category::Data => format!("the body does not fit the request: {}", neutral_words(&e.to_string())),
    }
}

/// Replaces, after each "expected ", a Rust type's name by what it means in JSON.
fn neutral_words(message: &str) -> String {
    const EXPECTED: &str = "expected ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(EXPECTED) {
        let (before, after) = rest.split_at(at + EXPECTED.len());
        out.push_str(before);
        let (word, tail) = split_word(after);
        let (replacement, tail) = match word {
            "struct" | "enum" | "tuple" | "unit" => {
                // `struct Name`, `enum Name`, `tuple struct Name`, `unit struct Name`.
                let (next, mut tail) = split_word(tail.trim_start());
                if matches!(next, "struct" | "variant") {
                    tail = split_word(tail.trim_start()).1;
                }
                let meaning = match word {
                    "struct" => "a JSON object",
                    "enum" => "one of the allowed values",
                    "tuple" => "a JSON array",
                    _ => "null",
                };
                (meaning, tail)
            }
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => {
                ("a whole number", tail)
            }
            "f32" | "f64" => ("a number", tail),
            "char" => ("a single character", tail),
            _ => ("", after),
        };
        out.push_str(replacement);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The leading identifier of `text` and what follows it.
fn split_word(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    text.split_at(end)
}

/// An uploaded file.
pub struct Upload {
    pub bytes: Vec<u8>,
    pub file_name: Option<String>,
}

/// A `multipart/form-data` body: files and text fields, read within limits.
#[derive(Default)]
pub struct Form {
    files: HashMap<String, Upload>,
    texts: HashMap<String, String>,
}

const MAX_PARTS: usize = 32;
/// Text fields: room for the longest field (8192 characters of up to 4 bytes each).
const MAX_TEXT_FIELD: usize = 40 * 1024;
/// Fields that are files even when a client sends them without a file name.
const FILE_FIELDS: [&str; 2] = ["source_image", "image"];

impl FromRequest<AppState> for Form {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(BodyTooLarge(limit)) = req.extensions().get::<BodyTooLarge>() {
            return Err(ApiError::new(
                ErrorCode::ImageTooLarge,
                format!(
                    "the request is larger than {limit} bytes; the image limit is {} bytes",
                    state.config().max_image_bytes
                ),
            )
            .with(|d| d.limit = Some(state.config().max_image_bytes as u64)));
        }
        let mut multipart = Multipart::from_request(req, state).await.map_err(|_| {
            ApiError::new(ErrorCode::UnsupportedMediaType, "the body must be multipart/form-data with a boundary")
        })?;
        let max_file = state.config().max_image_bytes;
        let mut form = Form::default();
        let mut parts = 0;
        let broken = |e: axum::extract::multipart::MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!("the request body is larger than allowed ({max_file} bytes of image)"))
            } else {
                ApiError::new(
                    ErrorCode::InvalidMultipart,
                    format!("the multipart body is malformed: {}", e.body_text()),
                )
            }
        };
        while let Some(mut field) = multipart.next_field().await.map_err(broken)? {
            parts += 1;
            if parts > MAX_PARTS {
                return Err(ApiError::new(
                    ErrorCode::InvalidMultipart,
                    format!("at most {MAX_PARTS} form fields are accepted"),
                ));
            }
            let name = field.name().unwrap_or_default().to_string();
            if form.files.contains_key(&name) || form.texts.contains_key(&name) {
                return Err(ApiError::invalid_parameter(&name, format!("the field {name:?} is given more than once")));
            }
            let file_name = field.file_name().map(str::to_string);
            let is_file = file_name.is_some() || FILE_FIELDS.contains(&name.as_str());
            let limit = if is_file { max_file } else { MAX_TEXT_FIELD };
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(broken)? {
                if bytes.len() + chunk.len() > limit {
                    return Err(if is_file {
                        ApiError::new(ErrorCode::ImageTooLarge, format!("the image is larger than {limit} bytes"))
                            .with(|d| d.limit = Some(limit as u64))
                    } else {
                        ApiError::invalid_parameter(&name, format!("the field {name:?} is longer than {limit} bytes"))
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            if is_file {
                form.files.insert(name, Upload { bytes, file_name });
            } else {
                let text = String::from_utf8(bytes)
                    .map_err(|_| ApiError::invalid_parameter(&name, format!("the field {name:?} is not UTF-8 text")))?;
                form.texts.insert(name, text);
            }
        }
        Ok(form)
    }
}

impl Form {
    /// A required file field (a text field of that name is refused as not a file).
    pub fn file(&mut self, name: &str) -> Result<Upload, ApiError> {
        if let Some(f) = self.files.remove(name) {
            if f.bytes.is_empty() {
                return Err(ApiError::new(ErrorCode::InvalidImage, format!("the file {name:?} is empty"))
                    .with(|d| d.field = Some(name.to_string())));
            }
            return Ok(f);
        }
        if self.texts.contains_key(name) {
            return Err(ApiError::invalid_parameter(name, format!("{name:?} must be a file upload")));
        }
        Err(ApiError::missing_field(name))
    }

    pub fn text(&mut self, name: &str) -> Option<String> {
        self.texts.remove(name)
    }

    /// A number field within `range`, or `default` when absent or empty.
    pub fn number(&mut self, name: &str, default: f64, range: std::ops::RangeInclusive<f64>) -> Result<f64, ApiError> {
        match self.text(name).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) => match s.parse::<f64>() {
                Ok(v) if v.is_finite() && range.contains(&v) => Ok(v),
                _ => Err(ApiError::invalid_parameter(
                    name,
                    format!("{name} must be a number from {} to {}, not {s:?}", range.start(), range.end()),
                )),
            },
        }
    }

    /// An integer field within `range`, or `default` when absent or empty.
    pub fn integer(
        &mut self,
        name: &str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ApiError> {
        match self.text(name).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(v) if range.contains(&v) => Ok(v),
                _ => Err(ApiError::invalid_parameter(
                    name,
                    format!("{name} must be a whole number from {} to {}, not {s:?}", range.start(), range.end()),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::routes::indexes::{CreateIndexBody, PatchIndexBody};
    use crate::routes::reembed::ReembedBody;
    use crate::routes::users::{CreateUserBody, PatchUserBody};
    use crate::validate::RecordPatchBody;

    /// Words of the implementation that an error message must not show.
    const INTERNAL: &[&str] = &["Body", "struct", "enum", "u32", "u64", "usize", "i64", "f64", "Option", "Vec"];

    #[track_caller]
    fn refused<T: DeserializeOwned>(body: &str) -> String {
        let Err(e) = json_object::<T>(body.as_bytes()) else { panic!("{body:?} was accepted") };
        assert_eq!(e.code, "INVALID_JSON", "{body:?}");
        for word in INTERNAL {
            assert!(!e.message.contains(word), "{body:?}: the message {:?} says {word:?}", e.message);
        }
        e.message
    }

    #[test]
    fn json_errors_name_no_rust_type() {
        let bad = ["[]", "[\"a\"]", "1", "\"text\"", "null", "true", "", "  ", "{", "{\"a\":}", "[1,", "{} {}"];
        for body in bad {
            refused::<RecordPatchBody>(body);
            refused::<CreateUserBody>(body);
            refused::<PatchUserBody>(body);
            refused::<CreateIndexBody>(body);
            refused::<PatchIndexBody>(body);
            refused::<ReembedBody>(body);
        }
        assert_eq!(refused::<RecordPatchBody>("[]"), "the body must be a JSON object");
        assert!(refused::<RecordPatchBody>("{\"name\": 5}").contains("expected a string"));
        assert!(refused::<RecordPatchBody>("{\"watch_list\": \"x\"}").contains("expected a sequence"));
        assert!(refused::<RecordPatchBody>("{\"nickname\": \"x\"}").contains("unknown field `nickname`"));
        assert!(refused::<CreateUserBody>("{\"username\": \"x\"}").contains("missing field `password`"));
        assert!(refused::<CreateUserBody>("{").starts_with("the body is not valid JSON"));
        assert!(json_object::<RecordPatchBody>(b" {\"name\": \"Ada\"} ").is_ok());
    }

    #[test]
    fn rust_type_names_become_json_words() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum Choice {
            A,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            count: Option<u32>,
            ratio: Option<f64>,
            inner: Option<Inner>,
            choice: Option<Choice>,
            pair: Option<(u8, u8)>,
        }
        assert!(refused::<Outer>("{\"count\": \"x\"}").contains("expected a whole number"));
        assert!(refused::<Outer>("{\"count\": -1}").contains("expected a whole number"));
        assert!(refused::<Outer>("{\"ratio\": \"x\"}").contains("expected a number"));
        assert!(refused::<Outer>("{\"inner\": 1}").contains("expected a JSON object"));
        let choice = refused::<Outer>("{\"choice\": 1}");
        assert!(choice.starts_with("the body does not fit the request"), "{choice}");
        let choice = refused::<Outer>("{\"choice\": \"B\"}");
        assert!(choice.contains("unknown variant `B`, expected `A`"), "{choice}");
        assert!(!refused::<Outer>("{\"choice\": 1}").contains("Choice"));
        assert!(!refused::<Outer>("{\"inner\": 1}").contains("Inner"));
        assert_eq!(neutral_words("expected tuple struct Point"), "expected a JSON array");
        assert_eq!(
            neutral_words("invalid type: string, expected enum Choice"),
            "invalid type: string, expected one of the allowed values"
        );
        assert_eq!(neutral_words("invalid type: map, expected a string"), "invalid type: map, expected a string");
    }
}
