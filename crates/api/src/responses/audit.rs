//! The audit log as `GET /audit` pages it.

use serde::Serialize;
use utoipa::ToSchema;

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Increasing sequence number.
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// The user who acted.
    pub actor: String,
    /// e.g. `face.search`, `record.enrol`, `image.download`, `user.create`.
    pub action: String,
    /// `ok`, or the error code the request ended with.
    pub outcome: String,
    pub index_ids: Vec<String>,
    pub record_ids: Vec<String>,
    /// Parameters and results (for a search: the parameters, liveness, scores).
    pub details: serde_json::Value,
}

impl From<facesearch_store::AuditEvent> for AuditEvent {
    fn from(e: facesearch_store::AuditEvent) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            outcome: e.outcome,
            index_ids: e.index_ids,
            record_ids: e.record_ids,
            details: e.details,
        }
    }
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `before_id` for the next page; `null` on the last page.
    pub next_before_id: Option<i64>,
}
