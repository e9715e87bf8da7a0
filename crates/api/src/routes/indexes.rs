//! Part 2: face databases (indexes). Creating, changing and deleting them is for admins.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facesearch_store::{IndexInfo, IndexPatch, IndexType, NewIndex};
use serde::Deserialize;

use super::false_matches::managed_index_object;
use super::{created, ok};
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{JsonBody, Path, QueryParams};
use crate::openapi::TAG_INDEXES;
use crate::responses::{AuthErrors, ErrorBody, ManagedIndexResponse, ServerErrors};
use crate::state::AppState;

/// The JSON body of `POST /face/index`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIndexBody {
    /// Unique name, 1–128 characters.
    index_name: String,
    /// Display title (at most 256 characters); defaults to the name.
    title: Option<String>,
    /// What the database contains (at most 4096 characters).
    description: Option<String>,
    /// `INTERNAL` (the default) or `EXTERNAL`.
    #[schema(example = "INTERNAL")]
    index_type: Option<String>,
}

/// The JSON body of `PATCH /face/index/{index_id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchIndexBody {
    /// At most 256 characters.
    title: Option<String>,
    /// At most 4096 characters.
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
        return Err(ApiError::forbidden(&format!("access index {id:?}")).with(|d| d.index_id = Some(id.to_string())));
    }
    Ok(index)
}

#[utoipa::path(
    post,
    path = "/face/index",
    tag = TAG_INDEXES,
    operation_id = "create_index",
    summary = "Create an index (admin)",
    description = "Creates an empty face database for the model pack this server runs. Audited.",
    request_body(content = CreateIndexBody, content_type = "application/json"),
    security(("basic_auth" = [])),
    responses(
        (status = 201, description = "The new index", body = ManagedIndexResponse),
        (status = 400, description = "`INVALID_JSON` (malformed, wrong type, unknown field) or `INVALID_PARAMETER` \
                                      (empty or too long name, bad `index_type`, control characters)", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 409, description = "`INDEX_NAME_TAKEN`: another index has that name", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body exceeds the limit", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: not `application/json`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody<CreateIndexBody>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "index.create");
    let result = run_create(&state, &mut entry, body).await;
    entry.finish(&state, result).await
}

async fn run_create(
    state: &AppState,
    entry: &mut AuditEntry,
    JsonBody(body): JsonBody<CreateIndexBody>,
) -> Result<Response, ApiError> {
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
    let pack = state.config().pack;
    let new = NewIndex { index_name: name, title, description, index_type, pack };
    let index = state.service().create_index(new).await?;
    entry.index(&index.id).detail("index_name", index.index_name.as_str());
    Ok(created(managed_index_object(state, &index, None)?))
}

#[utoipa::path(
    get,
    path = "/face/index/{index_id}",
    tag = TAG_INDEXES,
    operation_id = "get_index",
    summary = "An index",
    description = "The index object with `faces` and `min_score_fpir_1e3`; with `min_match_score`, also the \
                   expected false matches at that score for this index's size (what the console shows beside \
                   its minimum-score field).",
    params(
        ("index_id" = String, Path, description = "The index id"),
        ("min_match_score" = Option<f64>, Query,
         description = "0–100: add `expected_false_matches` at this score (see docs/API.md, Scores)"),
    ),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The index", body = ManagedIndexResponse),
        (status = 400, description = "`INVALID_PARAMETER`: `min_match_score` not a number from 0 to 100", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the index is not granted to the caller (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let min_score = query.number("min_match_score", 0.0..=100.0)?;
    let index = visible_index(&state, &caller, &id).await?;
    Ok(ok(managed_index_object(&state, &index, min_score)?))
}

#[utoipa::path(
    patch,
    path = "/face/index/{index_id}",
    tag = TAG_INDEXES,
    operation_id = "patch_index",
    summary = "Change an index's title or description (admin)",
    description = "Audited.",
    params(("index_id" = String, Path, description = "The index id")),
    request_body(content = PatchIndexBody, content_type = "application/json"),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The changed index", body = ManagedIndexResponse),
        (status = 400, description = "`INVALID_JSON` or `INVALID_PARAMETER` (too long, control characters)", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: not `application/json`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<PatchIndexBody>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "index.update");
    entry.index(&id);
    let result = run_patch(&state, Path(id), body).await;
    entry.finish(&state, result).await
}

async fn run_patch(
    state: &AppState,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchIndexBody>,
) -> Result<Response, ApiError> {
    if let Some(t) = &body.title {
        check_text("title", t, 256)?;
    }
    if let Some(d) = &body.description {
        check_text("description", d, 4096)?;
    }
    let index = state
        .service()
        .update_index(&id, IndexPatch { title: body.title, description: body.description })
        .await?
        .ok_or_else(|| ApiError::index_not_found(&id))?;
    Ok(ok(managed_index_object(state, &index, None)?))
}

#[utoipa::path(
    delete,
    path = "/face/index/{index_id}",
    tag = TAG_INDEXES,
    operation_id = "delete_index",
    summary = "Delete an index with all its records, images and vectors (admin)",
    description = "Also removes the index's grants. Audited.",
    params(("index_id" = String, Path, description = "The index id")),
    security(("basic_auth" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "index.delete");
    entry.index(&id);
    let result = run_delete(&state, Path(id)).await;
    entry.finish(&state, result).await
}

async fn run_delete(state: &AppState, Path(id): Path<String>) -> Result<Response, ApiError> {
    // Served before the models are loaded too: erasure must not wait for them.
    if !state.service().delete_index(&id).await? {
        return Err(ApiError::index_not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
