//! Layers every response passes through: a per-request deadline, a cap on requests in
//! flight (503 at once beyond it, never an unbounded queue) and security headers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ApiError;

/// Answers (in JSON) a request that takes longer than `timeout` and drops its work.
async fn deadline(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "REQUEST_TIMEOUT",
            format!("the request took longer than {} s", timeout.as_secs()),
        )
        .into_response(),
    }
}

/// Refuses a request at once when `slots` are all taken; `/healthz` always answers.
async fn in_flight(slots: Arc<Semaphore>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    match slots.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::unavailable("too many requests in flight; retry shortly").into_response(),
    }
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Wraps `router` in the deadline, the in-flight cap and the security headers.
pub fn apply(router: Router, timeout: Duration, max_in_flight: usize, https: bool) -> Router {
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let hsts = https.then(|| HeaderValue::from_static("max-age=31536000"));
    router
        .layer(axum::middleware::from_fn(move |req, next| deadline(timeout, req, next)))
        .layer(axum::middleware::from_fn(move |req, next| in_flight(slots.clone(), req, next)))
        // Responses carry biometric data and personal records: never cached, never
        // sniffed or framed, no referrer leaks.
        .layer(header_layer(header::CACHE_CONTROL, "no-store"))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"))
        .layer(SetResponseHeaderLayer::if_not_present(header::STRICT_TRANSPORT_SECURITY, hsts))
}
