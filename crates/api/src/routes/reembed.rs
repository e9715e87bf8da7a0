//! Part 2: moving an index to another model pack (admin). The stored images are
//! re-embedded in the background (see `facesearch_engine::reembed`); searches keep
//! using the old vectors until the switch, which is atomic.

use axum::extract::State;
use axum::response::Response;
use facesearch_face::Pack;
use serde::Deserialize;

use super::{accepted, ok};
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{JsonBody, Path};
use crate::openapi::TAG_INDEXES;
use crate::responses::{AuthErrors, ErrorBody, ReembedJobObject, ReembedJobResponse, ServerErrors};
use crate::state::AppState;

/// The JSON body of `POST /face/index/{index_id}/reembed`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReembedBody {
    /// The model pack to move the index to: `open` or `insightface`.
    #[schema(example = "insightface")]
    pack: String,
}

#[utoipa::path(
    post,
    path = "/face/index/{index_id}/reembed",
    tag = TAG_INDEXES,
    operation_id = "start_reembed",
    summary = "Move an index to another model pack (admin)",
    description = "Re-embeds every stored image of the index with the pack's models in the background. Searches \
                   keep using the old vectors until every image is done; then the index switches to the new \
                   vectors in one step. Enrolments during the job are picked up before the switch. Images in \
                   which the new pack finds no usable face keep their record but have no vector afterwards; they \
                   are listed in the job. A job interrupted (restart, crash) resumes where it was; asking again \
                   while a job to the same pack runs returns that job. Poll `GET …/reembed` for progress. Audited \
                   (`index.reembed`, and `index.reembed.finish` when it ends).",
    params(("index_id" = String, Path, description = "The index id")),
    request_body(content = ReembedBody, content_type = "application/json"),
    security(("basic_auth" = [])),
    responses(
        (status = 202, description = "The job (new, or the one already running to that pack)", body = ReembedJobResponse),
        (status = 400, description = "`INVALID_JSON` or `INVALID_PARAMETER` (`pack` is not a known pack)", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: a job to another pack is running for this index", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: not `application/json`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<ReembedBody>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "index.reembed");
    entry.index(&id);
    let result = run_start(&state, &caller, &mut entry, &id, body).await;
    entry.finish(&state, result).await
}

async fn run_start(
    state: &AppState,
    caller: &Caller,
    entry: &mut AuditEntry,
    id: &str,
    JsonBody(body): JsonBody<ReembedBody>,
) -> Result<Response, ApiError> {
    let pack: Pack = body.pack.parse().map_err(|e: String| ApiError::invalid_parameter("pack", e))?;
    entry.detail("pack", pack.name());
    let job = state.engine()?.start_reembed(id, pack, &caller.user.username).await?;
    entry.detail("job_id", job.job_id.as_str()).detail("from_pack", job.from_pack.name());
    Ok(accepted(ReembedJobObject::from(job)))
}

#[utoipa::path(
    get,
    path = "/face/index/{index_id}/reembed",
    tag = TAG_INDEXES,
    operation_id = "get_reembed",
    summary = "The index's latest re-embedding job and its progress (admin)",
    params(("index_id" = String, Path, description = "The index id")),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The job", body = ReembedJobResponse),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`, or `JOB_NOT_FOUND` (the index was never re-embedded)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    // Read from the store directly: progress is visible while the models load too.
    let store = state.store();
    store.get_index(&id).await?.ok_or_else(|| ApiError::index_not_found(&id))?;
    let job = store.reembed_job(&id).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::JobNotFound, format!("index {id:?} has no re-embedding job"))
            .with(|d| d.index_id = Some(id.clone()))
    })?;
    Ok(ok(ReembedJobObject::from(job)))
}
