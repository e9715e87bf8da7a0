//! Layers every response passes through: a per-request deadline and security headers.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Wraps `router` in the deadline and the security headers. (The cap on requests in
/// flight is taken after authentication, in `auth::require`, so that unauthenticated
/// slow clients cannot use up the slots.)
pub fn apply(router: Router, timeout: Duration, https: bool) -> Router {
    let hsts = https.then(|| HeaderValue::from_static("max-age=31536000"));
    router
        .layer(axum::middleware::from_fn(move |req, next| deadline(timeout, req, next)))
        // Responses carry biometric data and personal records: never cached, never
        // sniffed or framed, no referrer leaks.
        .layer(header_layer(header::CACHE_CONTROL, "no-store"))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"))
        .layer(SetResponseHeaderLayer::if_not_present(header::STRICT_TRANSPORT_SECURITY, hsts))
}
