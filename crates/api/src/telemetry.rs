//! Request ids, one log line per request and the request metrics.
//!
//! Every request gets an `x-request-id` (a new UUID, or the client's own if it is a
//! short plain token), returned on the response and carried by the request's tracing
//! span together with the method and the route template. When the response is ready one
//! line is logged with its status and latency (as JSON with `--log-json`).
//!
//! What is never logged: bodies, images, credentials, query strings or concrete paths
//! (ids are personal data's neighbours) — only the route template, e.g.
//! `/face/index/{index_id}/records/{record_id}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, Response};
use axum::middleware::Next;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::metrics::{Metrics, UNMATCHED};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Marks a 5xx response that is part of normal operation (`/readyz` while the models
/// load), so that it is logged as information rather than as a warning.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedUnavailable;

/// The longest client-supplied request id that is kept.
const MAX_CLIENT_ID: usize = 128;

/// Whether a client's `x-request-id` is kept: 1–128 characters of `A–Z a–z 0–9 . _ : -`.
/// Anything else is replaced by a new UUID, so that logs hold no arbitrary client text.
pub fn acceptable_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CLIENT_ID
        && value.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

async fn drop_unacceptable_request_id(mut request: Request, next: Next) -> axum::response::Response {
    let keep = request.headers().get_all(&REQUEST_ID).iter().count() == 1
        && request.headers().get(&REQUEST_ID).is_some_and(|v| acceptable_request_id(v.as_bytes()));
    if !keep {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

fn request_span(request: &Request<Body>) -> Span {
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str);
    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", method = %request.method(), route, request_id = id)
}

fn log_response(response: &Response<Body>, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
    if response.status().is_server_error() && response.extensions().get::<ExpectedUnavailable>().is_none() {
        tracing::warn!(status, latency_ms, "request answered");
    } else {
        tracing::info!(status, latency_ms, "request answered");
    }
}

/// Adds request ids, the per-request log line and the request metrics to every route.
/// Applied with `Router::layer` after the routes (so the matched route template is
/// known) and outside the limits (so that timeouts and refusals are counted and logged).
pub fn apply(router: Router, metrics: Arc<Metrics>) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::from_fn(drop_unacceptable_request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids() {
        assert!(acceptable_request_id(b"3f1c2d9e-0b7a-4c51-9d1e-2f6a8b0c4d11"));
        assert!(acceptable_request_id(b"req_42.a:b"));
        for bad in [&b""[..], b"has space", b"new\nline", b"{\"json\":1}", &[b'a'; 129]] {
            assert!(!acceptable_request_id(bad), "{bad:?}");
        }
    }
}
