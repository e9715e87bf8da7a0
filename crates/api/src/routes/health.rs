//! `/healthz` (the process answers) and `/readyz` (models loaded, store reachable):
//! the two endpoints that need no credentials.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::ok;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn healthz() -> Response {
    ok(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::unavailable("the face models are still loading"));
    }
    state.store().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "store not reachable");
        ApiError::unavailable("the database is not reachable")
    })?;
    Ok(ok(serde_json::json!({ "status": "ready" })).into_response())
}
