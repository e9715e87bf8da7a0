//! Layers every response passes through: limits on the request head, a per-request
//! deadline, security headers, and the guarantee that every error is the API's JSON.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::{ApiError, ErrorCode};

/// The most request headers accepted.
pub const MAX_HEADERS: usize = 100;
/// The most bytes of request headers accepted (names, values and their separators).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The longest request URL (path and query string) accepted, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// `431 HEADERS_TOO_LARGE`: too many request headers, or too many bytes of them.
pub fn headers_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::HeadersTooLarge,
        format!(
            "the request's headers are too large: at most {MAX_HEADERS} headers and {} KiB in all",
            MAX_HEADER_BYTES / 1024
        ),
    )
}

/// `414 URI_TOO_LONG`: the URL (path and query string) is too long.
pub fn uri_too_long() -> ApiError {
    ApiError::new(
        ErrorCode::UriTooLong,
        format!("the request URL is too long: at most {} KiB of path and query string", MAX_URI_BYTES / 1024),
    )
}

/// `400 MALFORMED_REQUEST`: not a request the server can read at all.
pub fn malformed_request() -> ApiError {
    ApiError::new(ErrorCode::MalformedRequest, "the request is not valid HTTP")
}

/// Refuses a request whose head is over the documented limits, before anything else
/// looks at it. (hyper's own limits are set well above these, so that the refusal is
/// this JSON answer; what is beyond hyper's is answered by `crate::conn`.)
async fn request_head(request: Request, next: Next) -> Response {
    let headers = request.headers();
    if headers.len() > MAX_HEADERS {
        return headers_too_large().into_response();
    }
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if bytes > MAX_HEADER_BYTES {
        return headers_too_large().into_response();
    }
    let uri = request.uri();
    let uri_bytes = uri.path_and_query().map_or(uri.path().len(), |pq| pq.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return uri_too_long().into_response();
    }
    next.run(request).await
}

/// The last line of the rule that every error is `{"error": {"code", "message"}}`: an
/// error response not built by [`ApiError`] (a rejection of some extractor or layer
/// that was not mapped) gets the envelope with a code for its status, and its own body,
/// which may name internals, is dropped. It is logged, since it means a missing mapping.
async fn error_envelope(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.extensions().get::<ErrorCode>().is_some() {
        return response;
    }
    tracing::warn!(status = status.as_u16(), "an error response without an error code was given the JSON envelope");
    let mut replaced = envelope_for(status).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = response.headers().get(&name) {
            replaced.headers_mut().insert(name, v.clone());
        }
    }
    replaced
}

/// The JSON error for a bare status (from a layer, or hyper's answer to a request it
/// cannot parse).
pub fn envelope_for(status: StatusCode) -> ApiError {
    let reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    match status.as_u16() {
        400 => malformed_request(),
        401 => ApiError::unauthorized(),
        403 => ApiError::new(ErrorCode::Forbidden, "you are not allowed to do this"),
        404 => ApiError::new(ErrorCode::NotFound, "no such endpoint"),
        405 => ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not accept that method"),
        413 => ApiError::too_large("the request body is too large"),
        414 => uri_too_long(),
        415 => ApiError::new(ErrorCode::UnsupportedMediaType, "the body's Content-Type is not accepted here"),
        431 => headers_too_large(),
        503 => ApiError::unavailable("the server cannot serve the request now; retry shortly"),
        500..=599 => ApiError::internal().with_status(status),
        _ => ApiError::new(ErrorCode::MalformedRequest, format!("the request was refused ({reason})"))
            .with_status(status),
    }
}

/// Answers (in JSON) a request that takes longer than `timeout` and drops its work.
async fn deadline(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(ErrorCode::RequestTimeout, format!("the request took longer than {} s", timeout.as_secs()))
                .into_response()
        }
    }
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Wraps `router` in the request-head limits (outermost), the deadline, the JSON
/// envelope for any error response, and the security headers. (The cap on requests in
/// flight is taken after authentication, in `auth::require`, so that unauthenticated
/// slow clients cannot use up the slots.)
pub fn apply(router: Router, timeout: Duration, https: bool) -> Router {
    let hsts = https.then(|| HeaderValue::from_static("max-age=31536000"));
    router
        .layer(axum::middleware::from_fn(error_envelope))
        .layer(axum::middleware::from_fn(move |req, next| deadline(timeout, req, next)))
        // Responses carry biometric data and personal records: never cached, never
        // sniffed or framed, no referrer leaks.
        .layer(header_layer(header::CACHE_CONTROL, "no-store"))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"))
        .layer(SetResponseHeaderLayer::if_not_present(header::STRICT_TRANSPORT_SECURITY, hsts))
        .layer(axum::middleware::from_fn(request_head))
}
