//! Route handlers, one module per resource. Handlers stay thin: extract validated
//! input, check permission, call the engine or the store, shape the response.

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
use facesearch_store::IndexInfo;
use serde::Serialize;
use serde_json::{Value, json};

/// `200 {"response": value}`.
pub fn ok<T: Serialize>(value: T) -> Response {
    Json(json!({ "response": value })).into_response()
}

/// `201 {"response": value}`.
pub fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(json!({ "response": value }))).into_response()
}

/// The index object of the published API, plus our extra fields.
pub fn index_object(index: &IndexInfo) -> Value {
    json!({
        "id": index.id,
        "index_name": index.index_name,
        "index_type": index.index_type.as_str(),
        "record_count": index.record_count,
        "title": index.title,
        "description": index.description,
        "pack": index.pack,
        "created_at": index.created_at,
        "updated_at": index.updated_at,
    })
}
