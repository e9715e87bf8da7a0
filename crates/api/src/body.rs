//! Reads every request body before the handler runs.
//!
//! A server that answers early (401 for bad credentials, 413 for an oversize upload)
//! without reading the rest of the upload closes the connection while the client is
//! still sending; the client then sees a reset instead of the answer. So the body is
//! read here, up to the limit; past the limit the rest is read and discarded (up to a
//! bound) and the request goes on with an empty body marked [`BodyTooLarge`], which the
//! extractors turn into a JSON 413 — after authentication has had its say.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::error::ApiError;

/// Marks a request whose body exceeded the limit; carries the limit in bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyTooLarge(pub usize);

/// How much of an unwanted body is read and thrown away so that its sender still
/// receives the answer (a 401 or 413): four times the limit, and at least 32 MiB, since
/// clients commonly send a few megabytes before they read anything. Beyond it the
/// connection is simply closed. Discarding keeps nothing in memory.
pub fn drain_cap(limit: usize) -> usize {
    limit.saturating_mul(4).max(32 << 20)
}

pub async fn read_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let (mut parts, mut body) = request.into_parts();
    let mut buffer = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                return ApiError::bad_request("INVALID_BODY", format!("the request body could not be read: {e}"))
                    .into_response();
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen <= limit {
            buffer.extend_from_slice(&data);
        } else {
            buffer = Vec::new();
            if seen > drain_cap(limit) {
                break;
            }
        }
    }
    if seen > limit {
        parts.extensions.insert(BodyTooLarge(limit));
    }
    next.run(Request::from_parts(parts, Body::from(buffer))).await
}

/// Reads and throws away up to `limit` bytes of a body that will not be used, so that a
/// client still sending receives the answer instead of a reset. Nothing is kept.
pub async fn discard(mut body: Body, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > limit {
                break;
            }
        }
    }
}

/// The body limit of a server whose largest image is `max_image_bytes`: room for one
/// image plus the form's text fields and multipart framing.
pub fn limit_for(max_image_bytes: usize) -> usize {
    max_image_bytes + 256 * 1024
}
