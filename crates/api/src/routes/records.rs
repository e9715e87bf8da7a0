//! Part 2: records (enrolled people) of an index and their images.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facesearch_store::{EnrolOutcome, IndexInfo, RecordFields};

use super::indexes::visible_index;
use super::{created, ok};
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Form, JsonBody, Path, QueryParams};
use crate::openapi::{EnrolForm, ImageForm, TAG_RECORDS};
use crate::responses::{
    AuthErrors, ErrorBody, RecordObject, RecordPage, RecordPageResponse, RecordResponse, ServerErrors,
};
use crate::state::AppState;
use crate::validate::{RecordPatchBody, check_fields, check_reference, split_watch_list};

const DEFAULT_PAGE: usize = 100;

async fn writable_index(state: &AppState, caller: &Caller, id: &str) -> Result<IndexInfo, ApiError> {
    let index = visible_index(state, caller, id).await?;
    if !caller.may_write(&index) {
        return Err(
            ApiError::forbidden(&format!("change records of index {id:?}")).with(|d| d.index_id = Some(id.to_string()))
        );
    }
    Ok(index)
}

async fn readable_index(state: &AppState, caller: &Caller, id: &str) -> Result<IndexInfo, ApiError> {
    let index = visible_index(state, caller, id).await?;
    if !caller.may_read(&index) {
        return Err(
            ApiError::forbidden(&format!("read records of index {id:?}")).with(|d| d.index_id = Some(id.to_string()))
        );
    }
    Ok(index)
}

/// `POST /face/index/{index_id}/records`: enrol a person from a photo. A `reference`
/// already in the index returns the existing record with 200 and stores nothing.
#[utoipa::path(
    post,
    path = "/face/index/{index_id}/records",
    tag = TAG_RECORDS,
    operation_id = "enrol",
    summary = "Enrol a person from a photo",
    description = "The photo must show one clear face of sufficient quality (size, sharpness, compression, \
                   exposure, pose, detector confidence; the record's `images[].quality` shows the measures); \
                   nothing is stored otherwise. A `reference` that already exists in the index returns the \
                   existing record with `200` and stores nothing, so retries never duplicate. With \
                   `check_duplicates=true` a face that already matches another record of the index at the \
                   server's duplicate score or above is refused with `409 DUPLICATE_FACE`. Audited.",
    params(
        ("index_id" = String, Path, description = "The index id"),
        ("check_duplicates" = Option<bool>, Query, description = "Refuse a face already enrolled under another \
                                                                  record of the index; default `false`"),
    ),
    request_body(content = EnrolForm, content_type = "multipart/form-data"),
    security(("basic_auth" = [])),
    responses(
        (status = 201, description = "The new record", body = RecordResponse),
        (status = 200, description = "The existing record with that `reference`", body = RecordResponse),
        (status = 400, description = "`MISSING_FIELD` (`image`), `INVALID_PARAMETER` (a field too long or \
                                      malformed, e.g. `dob`, `nationality`, `watch_list`), `INVALID_IMAGE` or \
                                      `INVALID_MULTIPART`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the caller may not change records of this index (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`INDEX_PACK_MISMATCH`, `CONFLICT` or `DUPLICATE_FACE` (`record_id`, \
                                      `image_id`, `match_score` of the existing match)", body = ErrorBody),
        (status = 413, description = "`IMAGE_TOO_LARGE` (byte or pixel limit) or `PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `multipart/form-data`", body = ErrorBody),
        (status = 422, description = "`NO_FACE_DETECTED`, `LOW_QUALITY_FACE` (`measure`, `value`, `minimum` \
                                      or `maximum`), `FACE_TOO_SMALL` (`face_size`, `min_face_size`), \
                                      `FACE_NOT_UPRIGHT` (`roll`, `max_roll`: no quarter turn of the photo \
                                      shows the face upright) or `MULTIPLE_FACES` (`faces`)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn enrol(
    State(state): State<AppState>,
    caller: Caller,
    Path(index_id): Path<String>,
    query: QueryParams,
    form: Form,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "record.enrol");
    entry.index(&index_id);
    let result = run_enrol(&state, &caller, &mut entry, Path(index_id), &query, form).await;
    entry.finish(&state, result).await
}

async fn run_enrol(
    state: &AppState,
    caller: &Caller,
    entry: &mut AuditEntry,
    Path(index_id): Path<String>,
    query: &QueryParams,
    mut form: Form,
) -> Result<Response, ApiError> {
    let check_duplicates = query.bool("check_duplicates", false)?;
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
    engine.check_usable(&index)?;
    if check_duplicates {
        entry.detail("check_duplicates", true);
    }
    match engine.enrol(&index, fields, reference, image.bytes, image.file_name, check_duplicates).await? {
        EnrolOutcome::Created(record) => {
            entry.record(&record.record_id).detail("created", true);
            Ok(created(RecordObject::from(record)))
        }
        EnrolOutcome::Existing(record) => {
            entry.record(&record.record_id).detail("created", false);
            Ok(ok(RecordObject::from(record)))
        }
    }
}

/// `GET /face/index/{index_id}/records?limit=&cursor=`.
#[utoipa::path(
    get,
    path = "/face/index/{index_id}/records",
    tag = TAG_RECORDS,
    operation_id = "list_records",
    summary = "A page of an index's records",
    params(
        ("index_id" = String, Path, description = "The index id"),
        ("limit" = Option<u32>, Query, description = "Records per page, 1–1000, default 100", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "A page of records and the next cursor", body = RecordPageResponse),
        (status = 400, description = "`INVALID_PARAMETER`: bad `limit` or a `cursor` this server did not return", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the index is not granted to the caller (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
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
    let records = records.into_iter().map(RecordObject::from).collect();
    Ok(ok(RecordPage { records, next_cursor: next }))
}

#[utoipa::path(
    get,
    path = "/face/index/{index_id}/records/{record_id}",
    tag = TAG_RECORDS,
    operation_id = "get_record",
    summary = "A record",
    params(("index_id" = String, Path, description = "The index id"), ("record_id" = String, Path, description = "The record id")),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The record", body = RecordResponse),
        (status = 403, description = "`FORBIDDEN`: the index is not granted to the caller (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND` or `RECORD_NOT_FOUND`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((index_id, record_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index = readable_index(&state, &caller, &index_id).await?;
    let record =
        state.store().get_record(&index.id, &record_id).await?.ok_or_else(|| ApiError::record_not_found(&record_id))?;
    Ok(ok(RecordObject::from(record)))
}

#[utoipa::path(
    patch,
    path = "/face/index/{index_id}/records/{record_id}",
    tag = TAG_RECORDS,
    operation_id = "patch_record",
    summary = "Change a record's fields",
    description = "Audited (the names of the changed fields, not their values).",
    params(("index_id" = String, Path, description = "The index id"), ("record_id" = String, Path, description = "The record id")),
    request_body(content = RecordPatchBody, content_type = "application/json"),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The changed record", body = RecordResponse),
        (status = 400, description = "`INVALID_JSON` (malformed, wrong type, unknown field) or `INVALID_PARAMETER`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the caller may not change records of this index (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND` or `RECORD_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: the `reference` belongs to another record of the index", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: not `application/json`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
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
        .service()
        .update_record(&index.id, &record_id, patch)
        .await?
        .ok_or_else(|| ApiError::record_not_found(&record_id))?;
    Ok(ok(RecordObject::from(record)))
}

#[utoipa::path(
    delete,
    path = "/face/index/{index_id}/records/{record_id}",
    tag = TAG_RECORDS,
    operation_id = "delete_record",
    summary = "Delete a record with its images and vectors",
    description = "Audited.",
    params(("index_id" = String, Path, description = "The index id"), ("record_id" = String, Path, description = "The record id")),
    security(("basic_auth" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`FORBIDDEN`: the caller may not change records of this index (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND` or `RECORD_NOT_FOUND`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
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
    // Served before the models are loaded too: erasure must not wait for them.
    if !state.service().delete_record(&index.id, &record_id).await? {
        return Err(ApiError::record_not_found(&record_id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /face/index/{index_id}/records/{record_id}/images`: another photo of the person.
#[utoipa::path(
    post,
    path = "/face/index/{index_id}/records/{record_id}/images",
    tag = TAG_RECORDS,
    operation_id = "add_image",
    summary = "Add another photo to a record",
    description = "The photo must show one clear face of sufficient quality (as for enrolment). With \
                   `check_duplicates=true` a face that matches *another* record of the index at the server's \
                   duplicate score or above is refused with `409 DUPLICATE_FACE`. Audited.",
    params(
        ("index_id" = String, Path, description = "The index id"),
        ("record_id" = String, Path, description = "The record id"),
        ("check_duplicates" = Option<bool>, Query, description = "Refuse a face already enrolled under another \
                                                                  record of the index; default `false`"),
    ),
    request_body(content = ImageForm, content_type = "multipart/form-data"),
    security(("basic_auth" = [])),
    responses(
        (status = 201, description = "The record with the new image", body = RecordResponse),
        (status = 400, description = "`MISSING_FIELD` (`image`), `INVALID_IMAGE` or `INVALID_MULTIPART`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the caller may not change records of this index (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND` or `RECORD_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`INDEX_PACK_MISMATCH` or `DUPLICATE_FACE` (`record_id`, `image_id`, \
                                      `match_score`)", body = ErrorBody),
        (status = 413, description = "`IMAGE_TOO_LARGE` (byte or pixel limit) or `PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `multipart/form-data`", body = ErrorBody),
        (status = 422, description = "`NO_FACE_DETECTED`, `LOW_QUALITY_FACE`, `FACE_TOO_SMALL`, \
                                      `FACE_NOT_UPRIGHT` (`roll`, `max_roll`) or `MULTIPLE_FACES`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn add_image(
    State(state): State<AppState>,
    caller: Caller,
    Path((index_id, record_id)): Path<(String, String)>,
    query: QueryParams,
    form: Form,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "record.add_image");
    entry.index(&index_id).record(&record_id);
    let result = run_add_image(&state, &caller, &mut entry, Path((index_id, record_id)), &query, form).await;
    entry.finish(&state, result).await
}

async fn run_add_image(
    state: &AppState,
    caller: &Caller,
    entry: &mut AuditEntry,
    Path((index_id, record_id)): Path<(String, String)>,
    query: &QueryParams,
    mut form: Form,
) -> Result<Response, ApiError> {
    let check_duplicates = query.bool("check_duplicates", false)?;
    let index = writable_index(state, caller, &index_id).await?;
    let image = form.file("image")?;
    let engine = state.engine()?;
    engine.check_usable(&index)?;
    if check_duplicates {
        entry.detail("check_duplicates", true);
    }
    let record = engine
        .add_image(&index, &record_id, image.bytes, image.file_name, check_duplicates)
        .await?
        .ok_or_else(|| ApiError::record_not_found(&record_id))?;
    if let Some(image_id) = record.image_ids.last() {
        entry.detail("image_id", image_id.as_str());
    }
    Ok(created(RecordObject::from(record)))
}
