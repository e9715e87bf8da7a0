//! Reads every request body before the handler runs.
//!
//! A server that answers early (401 for bad credentials, 413 for an oversize upload)
//! without reading the rest of the upload closes the connection while the client is
//! still sending; the client then sees a reset instead of the answer. So the body is
//! read here, up to the limit; past the limit the rest is read and discarded (up to a
//! bound) and the request goes on with an empty body marked [`BodyTooLarge`], which the
//! extractors turn into a JSON 413 — after authentication has had its say.
//!
//! The bytes kept come from the upload budget ([`crate::admission::UploadBudget`]): a
//! body declared larger than the limit is not buffered at all, and a request that finds
//! no room in the budget within a few seconds gets `503`.

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::admission::BudgetExhausted;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

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

pub async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = limit_for(state.config().max_image_bytes);
    let (mut parts, mut body) = request.into_parts();
    // Routes open to anyone take no body: an anonymous client's body is read away,
    // never kept.
    let Some(admin) = parts.extensions.get::<Caller>().map(Caller::is_admin) else {
        discard(body, drain_cap(limit)).await;
        return next.run(Request::from_parts(parts, Body::empty())).await;
    };
    // The declared length (`Content-Length`), when the body has one.
    let declared = body.size_hint().exact().and_then(|n| usize::try_from(n).ok());
    if declared.is_some_and(|n| n > limit) {
        // Too large before a byte is read: nothing is buffered, the body is read away
        // so that the client receives its 413.
        discard(body, drain_cap(limit)).await;
        parts.extensions.insert(BodyTooLarge(limit));
        return next.run(Request::from_parts(parts, Body::empty())).await;
    }
    // The bytes this body will hold, from the upload budget (see `crate::admission`):
    // all of a declared length at once; step by step for a body of unknown length.
    let mut reservation = match state.uploads().reserve(declared.unwrap_or(0), admin).await {
        Ok(r) => r,
        Err(exhausted) => return refuse(body, limit, exhausted),
    };
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                return ApiError::new(ErrorCode::InvalidBody, format!("the request body could not be read: {e}"))
                    .into_response();
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen <= limit {
            if seen > reservation.allows() {
                // Unknown length: twice as much as so far, within the limit.
                if let Err(exhausted) = reservation.grow(seen.saturating_mul(2).min(limit)).await {
                    drop(buffer);
                    return refuse(body, limit, exhausted);
                }
            }
            buffer.extend_from_slice(&data);
        } else {
            buffer = Vec::new();
            reservation.release();
            if seen > drain_cap(limit) {
                break;
            }
        }
    }
    if seen > limit {
        parts.extensions.insert(BodyTooLarge(limit));
    }
    let response = next.run(Request::from_parts(parts, Body::from(buffer))).await;
    // The handler is done with the body (and whatever it parsed from it): its bytes go
    // back to the budget.
    drop(reservation);
    response
}

/// `503` at once for a body that got no room in the upload budget; the body is read
/// away in the background (see [`discard_later`]).
fn refuse(body: Body, limit: usize, exhausted: BudgetExhausted) -> Response {
    discard_later(body, limit);
    exhausted.into_error().into_response()
}

/// How long the body of a request refused for load (no slot, no upload budget) is
/// read away after the answer was sent.
pub const REFUSED_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// For a request refused for load before its body was read: the answer goes out at
/// once (a slow client learns at once that it was refused), while the body is read
/// away in the background — up to [`drain_cap`]`(limit)` bytes, for at most
/// [`REFUSED_DRAIN_TIME`], keeping nothing — so that a client still sending receives
/// the answer rather than a reset.
pub fn discard_later(body: Body, limit: usize) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSED_DRAIN_TIME, discard(body, drain_cap(limit))).await;
    });
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
