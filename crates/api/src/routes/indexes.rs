//! Part 2: face databases (indexes). Creating, changing and deleting them is for admins.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facesearch_store::{IndexInfo, IndexPatch, IndexType, NewIndex};
use serde::Deserialize;

use super::{created, index_object, ok};
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIndexBody {
    index_name: String,
    title: Option<String>,
    description: Option<String>,
    index_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchIndexBody {
    title: Option<String>,
    description: Option<String>,
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid_parameter(
            field,
            format!("{field} must be at most {max} characters without control characters"),
        ));
    }
    Ok(())
}

/// The index, if it exists and the caller may see it; else 404 (or 403 when it exists
/// but is not granted — the published API reveals that much for searches too).
pub async fn visible_index(state: &AppState, caller: &Caller, id: &str) -> Result<IndexInfo, ApiError> {
    let index = state.store().get_index(id).await?.ok_or_else(|| ApiError::index_not_found(id))?;
    if !caller.may_read(&index) && !caller.may_search(&index) {
        return Err(ApiError::forbidden(&format!("access index {id:?}")).with("index_id", id));
    }
    Ok(index)
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody<CreateIndexBody>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "index.create");
    let result = run_create(&state, &caller, &mut entry, body).await;
    entry.finish(&state, result).await
}

async fn run_create(
    state: &AppState,
    caller: &Caller,
    entry: &mut AuditEntry,
    JsonBody(body): JsonBody<CreateIndexBody>,
) -> Result<Response, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("create indexes"));
    }
    let name = body.index_name.trim().to_string();
    if name.is_empty() {
        return Err(ApiError::invalid_parameter("index_name", "index_name must not be empty"));
    }
    check_text("index_name", &name, 128)?;
    let title = body.title.unwrap_or_else(|| name.clone());
    check_text("title", &title, 256)?;
    let description = body.description.unwrap_or_default();
    check_text("description", &description, 4096)?;
    let index_type = match body.index_type.as_deref().unwrap_or("INTERNAL") {
        "INTERNAL" => IndexType::Internal,
        "EXTERNAL" => IndexType::External,
        other => {
            return Err(ApiError::invalid_parameter(
                "index_type",
                format!("index_type must be INTERNAL or EXTERNAL, not {other:?}"),
            ));
        }
    };
    let pack = state.config().pack.name().to_string();
    let index = state.store().create_index(NewIndex { index_name: name, title, description, index_type, pack }).await?;
    entry.index(&index.id).detail("index_name", index.index_name.as_str());
    Ok(created(index_object(&index)))
}

pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(ok(index_object(&visible_index(&state, &caller, &id).await?)))
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<PatchIndexBody>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "index.update");
    entry.index(&id);
    let result = run_patch(&state, &caller, Path(id), body).await;
    entry.finish(&state, result).await
}

async fn run_patch(
    state: &AppState,
    caller: &Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchIndexBody>,
) -> Result<Response, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("change indexes"));
    }
    if let Some(t) = &body.title {
        check_text("title", t, 256)?;
    }
    if let Some(d) = &body.description {
        check_text("description", d, 4096)?;
    }
    let index = state
        .store()
        .update_index(&id, IndexPatch { title: body.title, description: body.description })
        .await?
        .ok_or_else(|| ApiError::index_not_found(&id))?;
    Ok(ok(index_object(&index)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "index.delete");
    entry.index(&id);
    let result = run_delete(&state, &caller, Path(id)).await;
    entry.finish(&state, result).await
}

async fn run_delete(state: &AppState, caller: &Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden("delete indexes"));
    }
    // Erasure must not wait for the models: without an engine, delete in the store
    // under the write lock (the engine loads its snapshot under the same lock).
    let deleted = match state.engine() {
        Ok(engine) => engine.delete_index(&id).await?,
        Err(_) => {
            let _guard = state.writes().lock().await;
            state.store().delete_index(&id).await?
        }
    };
    if !deleted {
        return Err(ApiError::index_not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
