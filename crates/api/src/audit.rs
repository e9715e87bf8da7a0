//! The audit trail: every search, download, enrolment, update and delete is appended
//! to the store's append-only audit log — who, when, what, which indexes and records,
//! and how it ended (including refusals). Handlers fill an [`AuditEntry`] while they
//! work and call [`AuditEntry::finish`] with their result.

use facesearch_store::NewAuditEvent;
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

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
                self.details.insert("error".into(), Value::Object(e.details.clone()));
                e.code.to_string()
            }
        };
        self.event.details = Value::Object(self.details);
        if let Err(e) = state.store().append_audit(self.event).await {
            tracing::error!(error = %e, "could not append to the audit log");
        }
        result
    }
}

/// Audits user-management changes (`POST`, `PATCH`, `PUT`, `DELETE` under `/users`):
/// the acting admin, the action, the target user and index, and the outcome. Requests
/// refused before authentication (401, 429) have no actor and are not logged here.
pub async fn user_change(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode};
    let method = request.method().clone();
    let segments: Vec<String> = request.uri().path().trim_matches('/').split('/').map(str::to_string).collect();
    let actor = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::parse_basic)
        .map(|(user, _)| user);
    // The body was buffered by the body layer: the new user's name is read from it.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let created: Option<String> = serde_json::from_slice::<Value>(&bytes)
        .ok()
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
    let outcome = match response.extensions().get::<crate::error::ErrorCode>() {
        Some(code) => code.0.to_string(),
        None if status.is_success() => "ok".to_string(),
        None => status.as_u16().to_string(),
    };
    let event = NewAuditEvent {
        actor,
        action: action.to_string(),
        outcome,
        index_ids: segments.get(3).cloned().into_iter().collect(),
        record_ids: Vec::new(),
        details: serde_json::json!({ "user": target }),
    };
    if let Err(e) = state.store().append_audit(event).await {
        tracing::error!(error = %e, "could not append to the audit log");
    }
    response
}
