//! Route handlers, one module per resource. Handlers stay thin: extract validated
//! input, check permission, call the engine or the store, answer with a type of
//! [`crate::responses`].

pub mod audit;
pub mod duplicates;
pub mod false_matches;
pub mod health;
pub mod indexes;
pub mod ops;
pub mod records;
pub mod reembed;
pub mod search;
pub mod search_details;
pub mod users;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// `200 {"response": value}`. Through `serde_json::Value`: the keys of every object of
/// the body are sorted, as they always have been (see [`crate::responses`]).
pub fn ok<T: Serialize>(value: T) -> Response {
    Json(json!({ "response": value })).into_response()
}

/// `201 {"response": value}`, like [`ok`].
pub fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(json!({ "response": value }))).into_response()
}

/// `202 {"response": value}` (a job that goes on), like [`ok`].
pub fn accepted<T: Serialize>(value: T) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "response": value }))).into_response()
}
