//! The audit trail: every search, download, enrolment, update and delete is appended
//! to the store's append-only audit log — who, when, what, which indexes and records,
//! and how it ended (including refusals). Handlers fill an [`AuditEntry`] while they
//! work and call [`AuditEntry::finish`] with their result.
//!
//! Every `401`, `403` and `429` of an authenticated route that the handler did not
//! audit itself — wrong or missing credentials, a throttled login, a role refused by
//! the route table, an index the caller may not use — is appended by [`refusals`] as
//! `request.refused`: the actor (the authenticated user; for a `401` or `429` the
//! attempted username if such a user exists, else `unknown:` and a keyed hash of it,
//! since a mistyped password often lands in the username field; `anonymous:` without
//! credentials), the route, the client address and the outcome. Passwords are never
//! recorded. So that a flood of refused requests cannot grow the log without bound,
//! at most [`REFUSALS_PER_ADDRESS`] such entries per client address and
//! [`REFUSALS_IN_ALL`] in all are written per [`REFUSAL_WINDOW`] ([`RefusalLog`]);
//! the refusals left out are counted, and the count is written as one
//! `audit.refusals_left_out` entry once that minute is over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use facesearch_store::NewAuditEvent;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::client::ClientAddr;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

tokio::task_local! {
    /// Set while a request runs under [`refusals`]: whether something on its way
    /// (a handler's [`AuditEntry`], the user-change audit) has written its entry.
    static AUDITED: Arc<AtomicBool>;
}

/// Appends `event` to the audit log and marks the request as audited. A failure to
/// write the log is logged loudly; the request's own answer stands.
async fn append(state: &AppState, event: NewAuditEvent) {
    let _ = AUDITED.try_with(|audited| audited.store(true, Ordering::Relaxed));
    if let Err(e) = state.service().append_audit(event).await {
        tracing::error!(error = %e, "could not append to the audit log");
    }
}

pub struct AuditEntry {
    event: NewAuditEvent,
    details: Map<String, Value>,
}

impl AuditEntry {
    pub fn new(caller: &Caller, action: &str) -> Self {
        Self {
            event: NewAuditEvent {
                actor: caller.user.username.clone(),
                action: action.to_string(),
                outcome: String::new(),
                index_ids: Vec::new(),
                record_ids: Vec::new(),
                details: Value::Null,
            },
            details: Map::new(),
        }
    }

    pub fn index(&mut self, id: &str) -> &mut Self {
        if !self.event.index_ids.iter().any(|i| i == id) {
            self.event.index_ids.push(id.to_string());
        }
        self
    }

    pub fn record(&mut self, id: &str) -> &mut Self {
        if !self.event.record_ids.iter().any(|r| r == id) {
            self.event.record_ids.push(id.to_string());
        }
        self
    }

    pub fn detail(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// Appends the entry with the request's outcome and passes the result through.
    /// A failure to write the log is logged loudly; the request's own answer stands.
    pub async fn finish<T>(mut self, state: &AppState, result: Result<T, ApiError>) -> Result<T, ApiError> {
        self.event.outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(e) => {
                // The error's own fields (e.g. liveness_score, threshold) explain a refusal.
                self.details.insert("error".into(), Value::Object(e.details_json()));
                e.code.to_string()
            }
        };
        self.event.details = Value::Object(self.details);
        append(state, self.event).await;
        result
    }
}

/// The outcome of a response: its error code, `ok`, or the bare status.
fn outcome_of(response: &Response) -> String {
    match response.extensions().get::<ErrorCode>() {
        Some(code) => code.as_str().to_string(),
        None if response.status().is_success() => "ok".to_string(),
        None => response.status().as_u16().to_string(),
    }
}

/// Audits user-management changes (`POST`, `PATCH`, `PUT`, `DELETE` under `/users`):
/// the acting admin, the action, the target user and index, and the outcome. Requests
/// refused before the handler (401, 403, 429) are audited by [`refusals`].
pub async fn user_change(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    let method = request.method().clone();
    let segments: Vec<String> = request.uri().path().trim_matches('/').split('/').map(str::to_string).collect();
    let actor = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::parse_basic)
        .map(|(user, _)| user);
    // The body layer has read the whole body into memory already (within the
    // request's size limit): take all of it, so that the handler sees exactly what
    // was sent, and read the new user's name from it.
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return ApiError::new(ErrorCode::InvalidBody, format!("the request body could not be read: {e}"))
                .into_response();
        }
    };
    let created: Option<String> = (method == Method::POST)
        .then(|| serde_json::from_slice::<Value>(&bytes).ok())
        .flatten()
        .and_then(|v| v.get("username").and_then(Value::as_str).map(str::to_string));
    let response = next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    let status = response.status();
    let Some(actor) = actor.filter(|_| status != StatusCode::UNAUTHORIZED && status != StatusCode::TOO_MANY_REQUESTS)
    else {
        return response;
    };
    let action = match (&method, segments.len()) {
        (&Method::POST, 1) => "user.create",
        (&Method::PATCH, 2) => "user.update",
        (&Method::DELETE, 2) => "user.delete",
        (&Method::PUT, 4) => "user.grant",
        (&Method::DELETE, 4) => "user.revoke",
        _ => "user.change",
    };
    let target = segments.get(1).cloned().or(created).unwrap_or_default();
    let event = NewAuditEvent {
        actor,
        action: action.to_string(),
        outcome: outcome_of(&response),
        index_ids: segments.get(3).cloned().into_iter().collect(),
        record_ids: Vec::new(),
        details: serde_json::json!({ "user": target }),
    };
    append(&state, event).await;
    response
}

// ---------------------------------------------------------------------------------
// Refused requests

/// Most `request.refused` entries per client address (an IPv4 address or an IPv6
/// /64) per [`REFUSAL_WINDOW`].
pub const REFUSALS_PER_ADDRESS: u32 = 10;
/// Most `request.refused` entries in all per [`REFUSAL_WINDOW`].
pub const REFUSALS_IN_ALL: u32 = 60;
/// The window of the two limits above; each window left with refusals not written
/// adds one `audit.refusals_left_out` entry.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// The actor of a refusal without credentials.
pub const ANONYMOUS: &str = "anonymous:";
/// The actor of the entry that counts the refusals left out.
pub const SYSTEM: &str = "system:audit";

/// Counts refused requests per fixed window and says which get an audit entry.
pub struct RefusalLog {
    /// Keys the hash of unknown usernames (random per process).
    key: [u8; 32],
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    total: u32,
    /// Only addresses with an entry written this window (so at most
    /// [`REFUSALS_IN_ALL`] of them).
    per_address: HashMap<IpAddr, u32>,
    left_out: u64,
}

impl Window {
    /// Starts a new window if the current one has ended by `now`; returns how many
    /// refusals the ended one left out, if any.
    fn roll(&mut self, now: Instant) -> Option<u64> {
        let start = *self.start.get_or_insert(now);
        if now.saturating_duration_since(start) < REFUSAL_WINDOW {
            return None;
        }
        let left_out = std::mem::take(&mut self.left_out);
        *self = Window { start: Some(now), ..Window::default() };
        (left_out > 0).then_some(left_out)
    }
}

/// Whether a refusal gets an entry of its own, and the count of refusals that the
/// window which has just ended left out (to be written as one entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub record: bool,
    pub left_out: Option<u64>,
}

impl RefusalLog {
    pub fn new() -> Self {
        Self { key: rand::random(), window: Mutex::new(Window::default()) }
    }

    /// Counts a refusal of a request from `address` at `now`.
    pub fn admit(&self, address: IpAddr, now: Instant) -> Admission {
        let address = crate::auth::address_key(Some(address));
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let left_out = w.roll(now);
        let from_address = w.per_address.get(&address).copied().unwrap_or(0);
        let record = from_address < REFUSALS_PER_ADDRESS && w.total < REFUSALS_IN_ALL;
        if record {
            w.total += 1;
            *w.per_address.entry(address).or_default() += 1;
        } else {
            w.left_out += 1;
        }
        Admission { record, left_out }
    }

    /// The count of refusals left out by a window that has ended by `now`, if any.
    pub fn take_left_out(&self, now: Instant) -> Option<u64> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner).roll(now)
    }

    /// The actor recorded for an attempted username that is no user: `unknown:` and
    /// 16 hex digits of a keyed SHA-256 of it — the same for the same name while this
    /// server runs, and useless for recovering what was typed (often a password).
    pub fn unknown_actor(&self, username: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(username.as_bytes());
        let digest = h.finalize();
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("unknown:{hex}")
    }
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new()
    }
}

fn left_out_event(count: u64) -> NewAuditEvent {
    NewAuditEvent {
        actor: SYSTEM.to_string(),
        action: "audit.refusals_left_out".to_string(),
        outcome: "ok".to_string(),
        index_ids: Vec::new(),
        record_ids: Vec::new(),
        details: json!({
            "refusals": count,
            "window_seconds": REFUSAL_WINDOW.as_secs(),
            "per_address_limit": REFUSALS_PER_ADDRESS,
            "limit": REFUSALS_IN_ALL,
        }),
    }
}

/// Writes the count of refusals left out once their window has ended (the server
/// calls this every [`REFUSAL_WINDOW`]; a refusal in a later window writes it too).
pub async fn flush_left_out(state: &AppState) {
    if let Some(count) = state.refusals().take_left_out(Instant::now()) {
        append(state, left_out_event(count)).await;
    }
}

/// The longest path parameter value kept in an entry.
const MAX_PARAM_CHARS: usize = 128;

/// Route middleware of every authenticated route (outside [`crate::auth::require`]):
/// audits a `401`, `403` or `429` answer that nothing on the way audited, within the
/// limits of [`RefusalLog`]. It reads no body and changes nothing of the request or
/// the response.
pub async fn refusals(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let template = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
    let route = format!("{} {template}", request.method());
    let client = request.extensions().get::<ClientAddr>().copied();
    let attempted = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::parse_basic)
        .map(|(user, _)| user);
    let (mut parts, body) = request.into_parts();
    let params: Vec<(String, String)> = match RawPathParams::from_request_parts(&mut parts, &state).await {
        Ok(params) => params.iter().map(|(k, v)| (k.to_string(), v.chars().take(MAX_PARAM_CHARS).collect())).collect(),
        Err(_) => Vec::new(),
    };
    let audited = Arc::new(AtomicBool::new(false));
    let response = AUDITED.scope(audited.clone(), next.run(Request::from_parts(parts, body))).await;
    let status = response.status();
    let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS);
    if !refused || audited.load(Ordering::Relaxed) {
        return response;
    }
    let address = client.map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.ip);
    let admission = state.refusals().admit(address, Instant::now());
    if let Some(count) = admission.left_out {
        append(&state, left_out_event(count)).await;
    }
    if !admission.record {
        return response;
    }
    let actor = match attempted {
        None => ANONYMOUS.to_string(),
        // Past authentication: the caller.
        Some(name) if status == StatusCode::FORBIDDEN => name,
        Some(name) => match state.store().get_user(&name).await {
            Ok(Some(_)) => name,
            _ => state.refusals().unknown_actor(&name),
        },
    };
    let mut details = Map::new();
    details.insert("route".into(), route.into());
    details.insert("client".into(), client.map(|c| c.ip.to_string()).into());
    if let Some(via) = client.and_then(|c| c.via) {
        details.insert("via".into(), via.to_string().into());
    }
    let (mut index_ids, mut record_ids) = (Vec::new(), Vec::new());
    for (name, value) in params {
        match name.as_str() {
            "index_id" => index_ids.push(value),
            "record_id" => record_ids.push(value),
            "username" => {
                details.insert("user".into(), value.into());
            }
            _ => {
                details.insert(name, value.into());
            }
        }
    }
    let event = NewAuditEvent {
        actor,
        action: "request.refused".to_string(),
        outcome: outcome_of(&response),
        index_ids,
        record_ids,
        details: Value::Object(details),
    };
    append(&state, event).await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    #[test]
    fn refusal_entries_are_limited_per_address_and_in_all() {
        let log = RefusalLog::new();
        let t0 = Instant::now();
        let admitted =
            |address: &str, n: usize, at: Instant| (0..n).filter(|_| log.admit(ip(address), at).record).count() as u32;
        assert_eq!(admitted("192.0.2.1", 25, t0), REFUSALS_PER_ADDRESS);
        // An IPv6 client counts by its /64.
        assert_eq!(admitted("2001:db8::1", 5, t0) + admitted("2001:db8::2", 10, t0), REFUSALS_PER_ADDRESS);
        let mut others = 0;
        for i in 0..100 {
            others += admitted(&format!("198.51.100.{i}"), 1, t0);
        }
        assert_eq!(others, REFUSALS_IN_ALL - 2 * REFUSALS_PER_ADDRESS, "the limit in all");
        // A new window: the count left out comes out once, and entries are written again.
        let next = t0 + REFUSAL_WINDOW;
        let a = log.admit(ip("192.0.2.1"), next);
        assert_eq!(a, Admission { record: true, left_out: Some(15 + 5 + (100 - 40)) });
        assert_eq!(log.admit(ip("192.0.2.1"), next).left_out, None);
        assert_eq!(log.take_left_out(next + REFUSAL_WINDOW), None, "nothing left out in that window");
        // The periodic flush takes it when no refusal comes.
        assert_eq!(admitted("192.0.2.9", 11, next + REFUSAL_WINDOW * 2), REFUSALS_PER_ADDRESS);
        assert_eq!(log.take_left_out(next + REFUSAL_WINDOW * 2), None, "the window has not ended");
        assert_eq!(log.take_left_out(next + REFUSAL_WINDOW * 3), Some(1));
    }

    #[test]
    fn unknown_usernames_are_recorded_as_a_keyed_hash() {
        let log = RefusalLog::new();
        let a = log.unknown_actor("correct horse battery staple");
        assert_eq!(a, log.unknown_actor("correct horse battery staple"), "stable while the server runs");
        assert!(a.starts_with("unknown:") && a.len() == "unknown:".len() + 16, "{a}");
        assert!(!a.contains("horse"));
        assert_ne!(a, log.unknown_actor("correct horse battery stapler"));
        assert_ne!(a, RefusalLog::new().unknown_actor("correct horse battery staple"), "keyed per server");
    }
}
