//! The HTTP API of facesearch: Part 1 is the published Face Search (1:N) API, matched
//! to the letter; Part 2 manages the face databases. See `docs/API.md`.
//!
//! This crate only speaks HTTP: extractors validate input ([`extract`], [`validate`]),
//! [`auth`] decides who may do what, handlers in [`routes`] call the engine or the
//! store, and [`error`] is the one place where failures become status codes and
//! error codes.

pub mod auth;
pub mod body;
pub mod error;
pub mod extract;
pub mod routes;
pub mod server;
pub mod state;
pub mod validate;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};

pub use error::ApiError;
pub use server::{ServerConfig, run};
pub use state::{ApiConfig, AppState};

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    use routes::{health, indexes, records, search};
    // Room for one image plus the form's text fields and multipart framing.
    let body_limit = state.config().max_image_bytes + 256 * 1024;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/face/index/details", get(search::index_details))
        .route("/face/search", post(search::search))
        .route("/media/file/download/{file_id}", get(search::download))
        .route("/face/index", post(indexes::create))
        .route("/face/index/{index_id}", get(indexes::get).patch(indexes::patch).delete(indexes::delete))
        .route("/face/index/{index_id}/records", post(records::enrol).get(records::list))
        .route(
            "/face/index/{index_id}/records/{record_id}",
            get(records::get).patch(records::patch).delete(records::delete),
        )
        .route("/face/index/{index_id}/records/{record_id}/images", post(records::add_image))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this endpoint does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(body_limit, body::read_body))
        .with_state(state)
}
