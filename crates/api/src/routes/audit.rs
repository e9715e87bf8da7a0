//! `GET /audit`: the audit log, for admins and auditors, newest first, with filters and
//! paging. Nothing in the API can edit or delete an entry; only the configured
//! retention removes old ones.

use axum::extract::State;
use axum::response::Response;
use facesearch_store::{AuditQuery, Role};

use super::ok;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::openapi::TAG_AUDIT;
use crate::responses::{AuditPage, AuditPageResponse, AuthErrors, ErrorBody, ServerErrors};
use crate::state::AppState;
use crate::validate::is_date;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// A date (`YYYY-MM-DD`) or RFC 3339 time, as stored (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
fn time_bound(query: &QueryParams, name: &str) -> Result<Option<String>, ApiError> {
    let Some(v) = query.get(name).map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let date_ok = v.get(..10).is_some_and(is_date);
    let rest_ok = v.len() == 10 || (v.as_bytes().get(10) == Some(&b'T') && v.ends_with('Z') && v.len() <= 30);
    if !date_ok || !rest_ok {
        return Err(ApiError::invalid_parameter(
            name,
            format!("{name} must be a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MM:SSZ)"),
        ));
    }
    Ok(Some(v.to_string()))
}

#[utoipa::path(
    get,
    path = "/audit",
    tag = TAG_AUDIT,
    operation_id = "audit",
    summary = "The audit log, newest first (admins and auditors)",
    params(
        ("actor" = Option<String>, Query, description = "Only entries by this user"),
        ("action" = Option<String>, Query, description = "Only this action, e.g. `face.search`"),
        ("index_id" = Option<String>, Query, description = "Only entries about this index"),
        ("record_id" = Option<String>, Query, description = "Only entries about this record"),
        ("since" = Option<String>, Query, description = "`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), inclusive"),
        ("until" = Option<String>, Query, description = "`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), exclusive"),
        ("limit" = Option<u32>, Query, description = "1–1000, default 100", minimum = 1, maximum = 1000),
        ("before_id" = Option<i64>, Query, description = "Entries older than this id (the previous page's `next_before_id`)"),
    ),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "A page of audit events", body = AuditPageResponse),
        (status = 400, description = "`INVALID_PARAMETER`: bad `limit`, `before_id`, `since` or `until`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: neither admin nor auditor", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller, query: QueryParams) -> Result<Response, ApiError> {
    if !matches!(caller.user.role, Role::Admin | Role::Auditor) {
        return Err(ApiError::forbidden("read the audit log"));
    }
    let limit = match query.get("limit").map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(s) => s.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            ApiError::invalid_parameter("limit", format!("limit must be a whole number from 1 to {MAX_LIMIT}"))
        })?,
    };
    let before_id = match query.get("before_id").map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::invalid_parameter("before_id", "before_id must be a whole number"))?,
        ),
    };
    let text = |name: &str| query.get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let events = state
        .store()
        .query_audit(AuditQuery {
            actor: text("actor"),
            action: text("action"),
            index_id: text("index_id"),
            record_id: text("record_id"),
            since: time_bound(&query, "since")?,
            until: time_bound(&query, "until")?,
            before_id,
            limit,
        })
        .await?;
    let next = if events.len() == limit { events.last().map(|e| e.id) } else { None };
    let events = events.into_iter().map(Into::into).collect();
    Ok(ok(AuditPage { events, next_before_id: next }))
}
