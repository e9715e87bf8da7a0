//! Extractors that turn a request into validated input, with every rejection mapped
//! to the API's JSON errors (never axum's plain-text ones).

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::body::BodyTooLarge;
use crate::error::ApiError;
use crate::state::AppState;

/// Query parameters as a map; parsing and range checks are done per parameter.
pub struct QueryParams(pub HashMap<String, String>);

impl FromRequestParts<AppState> for QueryParams {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state).await.map_err(|e| {
            ApiError::bad_request("INVALID_PARAMETER", format!("malformed query string: {}", e.body_text()))
        })?;
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
}

/// A JSON body of type `T`; unknown fields and wrong types are a 400 naming the problem.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(BodyTooLarge(limit)) = req.extensions().get::<BodyTooLarge>() {
            return Err(
                ApiError::too_large(format!("the request body is larger than {limit} bytes")).with("limit", *limit)
            );
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::too_large("the request body is too large"))
            }
            Err(e) => Err(ApiError::bad_request("INVALID_JSON", e.body_text())),
        }
    }
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
                StatusCode::PAYLOAD_TOO_LARGE,
                "IMAGE_TOO_LARGE",
                format!(
                    "the request is larger than {limit} bytes; the image limit is {} bytes",
                    state.config().max_image_bytes
                ),
            )
            .with("limit", state.config().max_image_bytes));
        }
        let mut multipart = Multipart::from_request(req, state).await.map_err(|_| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be multipart/form-data with a boundary",
            )
        })?;
        let max_file = state.config().max_image_bytes;
        let mut form = Form::default();
        let mut parts = 0;
        let broken = |e: axum::extract::multipart::MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!("the request body is larger than allowed ({max_file} bytes of image)"))
            } else {
                ApiError::bad_request(
                    "INVALID_MULTIPART",
                    format!("the multipart body is malformed: {}", e.body_text()),
                )
            }
        };
        while let Some(mut field) = multipart.next_field().await.map_err(broken)? {
            parts += 1;
            if parts > MAX_PARTS {
                return Err(ApiError::bad_request(
                    "INVALID_MULTIPART",
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
                        ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "IMAGE_TOO_LARGE",
                            format!("the image is larger than {limit} bytes"),
                        )
                        .with("limit", limit)
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
                return Err(
                    ApiError::bad_request("INVALID_IMAGE", format!("the file {name:?} is empty")).with("field", name)
                );
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
