//! `/healthz` (the process answers) and `/readyz` (models loaded, store reachable):
//! the two endpoints that need no credentials.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::ok;
use crate::error::ApiError;
use crate::openapi::TAG_OPERATIONS;
use crate::responses::{ErrorBody, StatusObject, StatusResponse};
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = TAG_OPERATIONS,
    operation_id = "healthz",
    summary = "Liveness of the process",
    description = "`{\"status\": \"ok\"}` while the process runs. No credentials needed.",
    responses((status = 200, description = "The process answers", body = StatusResponse))
)]
pub async fn healthz() -> Response {
    ok(StatusObject { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = TAG_OPERATIONS,
    operation_id = "readyz",
    summary = "Readiness to search",
    description = "`{\"status\": \"ready\"}` once the face models are loaded and the database answers. \
                   No credentials needed.",
    responses(
        (status = 200, description = "Ready", body = StatusResponse),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: models still loading, database unreachable or too \
                                      many requests in flight", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.is_ready() {
        // Expected at every start: logged as information, not as a warning.
        let mut response = ApiError::unavailable("the face models are still loading").into_response();
        response.extensions_mut().insert(crate::telemetry::ExpectedUnavailable);
        return Ok(response);
    }
    state.store().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "store not reachable");
        ApiError::unavailable("the database is not reachable")
    })?;
    Ok(ok(StatusObject { status: "ready" }).into_response())
}
