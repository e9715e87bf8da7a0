//! Operations: the OpenAPI document (`/openapi.json`), the interactive documentation
//! (`/docs`), the web console (`/console`) and Prometheus metrics (`/metrics`). None
//! needs credentials by default; `--metrics-auth` makes `/metrics` admin-only (see
//! [`crate::router`]).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::openapi::TAG_OPERATIONS;
use crate::responses::{AuthErrors, ErrorBody, ServerErrors};
use crate::state::AppState;

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = TAG_OPERATIONS,
    operation_id = "openapi",
    summary = "The OpenAPI 3.1 document of this API",
    description = "Generated from the server's code: every endpoint, its parameters, bodies, responses and \
                   error statuses. No credentials needed.",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = serde_json::Value),
        ServerErrors,
    )
)]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], crate::openapi::document_json())
        .into_response()
}

/// `GET /docs`: the interactive documentation page.
#[utoipa::path(
    get,
    path = "/docs",
    tag = TAG_OPERATIONS,
    operation_id = "docs",
    summary = "Interactive documentation",
    description = "A self-contained HTML page (no external scripts) that lists the operations of \
                   `/openapi.json` and can send requests with HTTP Basic credentials typed into the page. \
                   No credentials needed to load it.",
    responses(
        (status = 200, description = "The HTML page", content_type = "text/html", body = String),
        ServerErrors,
    )
)]
pub async fn docs() -> Response {
    crate::openapi::docs_response()
}

/// `GET /`: a browser opening the server's bare address lands on the console.
#[utoipa::path(
    get,
    path = "/",
    tag = TAG_OPERATIONS,
    operation_id = "root",
    summary = "Redirect to the web console",
    description = "Answers `307 Temporary Redirect` to `/console`, so that the server's bare address opens the \
                   web console. No credentials needed.",
    responses(
        (status = 307, description = "Redirect to `/console` (the `Location` header)"),
        ServerErrors,
    )
)]
pub async fn root() -> Response {
    axum::response::Redirect::temporary("/console").into_response()
}

/// `GET /console`: the web console.
#[utoipa::path(
    get,
    path = "/console",
    tag = TAG_OPERATIONS,
    operation_id = "console",
    summary = "Web console",
    description = "A self-contained HTML page (no external scripts, styles or fonts) to sign in, list and \
                   create indexes, enrol people, search with a photo, open records and read the audit log, all \
                   through this API with HTTP Basic credentials typed into the page (kept in the page's memory \
                   only). No credentials needed to load it.",
    responses(
        (status = 200, description = "The HTML page", content_type = "text/html", body = String),
        ServerErrors,
    )
)]
pub async fn console() -> Response {
    crate::openapi::console_response()
}

/// `GET /metrics`: Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = TAG_OPERATIONS,
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Text exposition format 0.0.4: request counts and latencies by route template, face \
                   pipeline stage timings, vector search time, gallery sizes per index, liveness rejections \
                   and the model pack. No credentials needed unless the server runs with `--metrics-auth`, \
                   which makes it admin-only.",
    security((), ("basic_auth" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String),
        (status = 403, description = "`FORBIDDEN`: not an admin (only with `--metrics-auth`)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(&state).await;
    ([(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE))], text).into_response()
}
