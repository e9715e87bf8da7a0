//! Part 2: records (enrolled people) of an index and their images.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facesearch_store::{EnrolOutcome, IndexInfo, RecordFields};
use serde_json::json;

use super::indexes::visible_index;
use super::{created, ok};
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Form, JsonBody, QueryParams};
use crate::state::AppState;
use crate::validate::{RecordPatchBody, check_fields, check_reference, split_watch_list};

const DEFAULT_PAGE: usize = 100;

async fn writable_index(state: &AppState, caller: &Caller, id: &str) -> Result<IndexInfo, ApiError> {
    let index = visible_index(state, caller, id).await?;
    if !caller.may_write(&index) {
        return Err(ApiError::forbidden(&format!("change records of index {id:?}")).with("index_id", id));
    }
    Ok(index)
}

async fn readable_index(state: &AppState, caller: &Caller, id: &str) -> Result<IndexInfo, ApiError> {
    let index = visible_index(state, caller, id).await?;
    if !caller.may_read(&index) {
        return Err(ApiError::forbidden(&format!("read records of index {id:?}")).with("index_id", id));
    }
    Ok(index)
}

/// `POST /face/index/{index_id}/records`: enrol a person from a photo. A `reference`
/// already in the index returns the existing record with 200 and stores nothing.
pub async fn enrol(
    State(state): State<AppState>,
    caller: Caller,
    Path(index_id): Path<String>,
    form: Form,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "record.enrol");
    entry.index(&index_id);
    let result = run_enrol(&state, &caller, &mut entry, Path(index_id), form).await;
    entry.finish(&state, result).await
}

async fn run_enrol(
    state: &AppState,
    caller: &Caller,
    entry: &mut AuditEntry,
    Path(index_id): Path<String>,
    mut form: Form,
) -> Result<Response, ApiError> {
    let index = writable_index(state, caller, &index_id).await?;
    let image = form.file("image")?;
    let fields = RecordFields {
        name: form.text("name").unwrap_or_default(),
        dob: form.text("dob").unwrap_or_default().trim().to_string(),
        nationality: form.text("nationality").unwrap_or_default().trim().to_string(),
        gender: form.text("gender").unwrap_or_default(),
        id_no: form.text("id_no").unwrap_or_default(),
        address: form.text("address").unwrap_or_default(),
        watch_list: split_watch_list(&form.text("watch_list").unwrap_or_default()),
        additional_info: form.text("additional_info").unwrap_or_default(),
    };
    check_fields(&fields)?;
    let reference = form.text("reference").map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
    if let Some(r) = &reference {
        check_reference(r)?;
    }
    let engine = state.engine()?;
    let index = engine.usable_index(&index.id).await?;
    match engine.enrol(&index, fields, reference, image.bytes, image.file_name).await? {
        EnrolOutcome::Created(record) => {
            entry.record(&record.record_id).detail("created", true);
            Ok(created(record))
        }
        EnrolOutcome::Existing(record) => {
            entry.record(&record.record_id).detail("created", false);
            Ok(ok(record))
        }
    }
}

/// `GET /face/index/{index_id}/records?limit=&cursor=`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(index_id): Path<String>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let index = readable_index(&state, &caller, &index_id).await?;
    let cap = state.config().max_page_size;
    let limit = match query.get("limit").map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_PAGE.min(cap),
        Some(s) => s.parse::<usize>().ok().filter(|n| (1..=cap).contains(n)).ok_or_else(|| {
            ApiError::invalid_parameter("limit", format!("limit must be a whole number from 1 to {cap}"))
        })?,
    };
    let cursor = query.get("cursor").filter(|c| !c.is_empty());
    let (records, next) = state.store().list_records(&index.id, limit, cursor).await?;
    Ok(ok(json!({ "records": records, "next_cursor": next })))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((index_id, record_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index = readable_index(&state, &caller, &index_id).await?;
    let record =
        state.store().get_record(&index.id, &record_id).await?.ok_or_else(|| ApiError::record_not_found(&record_id))?;
    Ok(ok(record))
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path((index_id, record_id)): Path<(String, String)>,
    body: JsonBody<RecordPatchBody>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "record.update");
    entry.index(&index_id).record(&record_id);
    let result = run_patch(&state, &caller, &mut entry, Path((index_id, record_id)), body).await;
    entry.finish(&state, result).await
}

async fn run_patch(
    state: &AppState,
    caller: &Caller,
    entry: &mut AuditEntry,
    Path((index_id, record_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<RecordPatchBody>,
) -> Result<Response, ApiError> {
    let index = writable_index(state, caller, &index_id).await?;
    let patch = body.validate()?;
    entry.detail("fields", patch.changed_fields());
    let record = state
        .store()
        .update_record(&index.id, &record_id, patch)
        .await?
        .ok_or_else(|| ApiError::record_not_found(&record_id))?;
    Ok(ok(record))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((index_id, record_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "record.delete");
    entry.index(&index_id).record(&record_id);
    let result = run_delete(&state, &caller, Path((index_id, record_id))).await;
    entry.finish(&state, result).await
}

async fn run_delete(
    state: &AppState,
    caller: &Caller,
    Path((index_id, record_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index = writable_index(state, caller, &index_id).await?;
    // Erasure must not wait for the models (see indexes::delete).
    let deleted = match state.engine() {
        Ok(engine) => engine.delete_record(&index.id, &record_id).await?,
        Err(_) => {
            let _guard = state.writes().lock().await;
            state.store().delete_record(&index.id, &record_id).await?.is_some()
        }
    };
    if !deleted {
        return Err(ApiError::record_not_found(&record_id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /face/index/{index_id}/records/{record_id}/images`: another photo of the person.
pub async fn add_image(
    State(state): State<AppState>,
    caller: Caller,
    Path((index_id, record_id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "record.add_image");
    entry.index(&index_id).record(&record_id);
    let result = run_add_image(&state, &caller, &mut entry, Path((index_id, record_id)), form).await;
    entry.finish(&state, result).await
}

async fn run_add_image(
    state: &AppState,
    caller: &Caller,
    entry: &mut AuditEntry,
    Path((index_id, record_id)): Path<(String, String)>,
    mut form: Form,
) -> Result<Response, ApiError> {
    let index = writable_index(state, caller, &index_id).await?;
    let image = form.file("image")?;
    let engine = state.engine()?;
    let index = engine.usable_index(&index.id).await?;
    let record = engine
        .add_image(&index, &record_id, image.bytes, image.file_name)
        .await?
        .ok_or_else(|| ApiError::record_not_found(&record_id))?;
    if let Some(image_id) = record.image_ids.last() {
        entry.detail("image_id", image_id.as_str());
    }
    Ok(created(record))
}
