//! Part 2: duplicate-identity jobs. A job compares every face of an index (and of any
//! further indexes named) with every other and reports groups of *different* records
//! whose faces match: one face enrolled under several names. Jobs run in the
//! background and are polled; see [`crate::jobs`] for their lifetime.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use facesearch_store::IndexInfo;
use serde_json::json;

use super::indexes::visible_index;
use super::{accepted, ok};
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Path, QueryParams};
use crate::openapi::TAG_RECORDS;
use crate::responses::{AuthErrors, DuplicateJobResponse, ErrorBody, ServerErrors};
use crate::state::AppState;

/// Longest long poll of a job, seconds.
const MAX_WAIT_SECONDS: u64 = 30;

/// Most indexes one job covers.
const MAX_JOB_INDEXES: usize = 20;

fn job_not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::JobNotFound, format!("no duplicate job with id {id:?} for this index"))
        .with(|d| d.job_id = Some(id.to_string()))
}

/// The `wait` parameter: seconds, 0 to [`MAX_WAIT_SECONDS`].
fn wait_seconds(query: &QueryParams) -> Result<u64, ApiError> {
    match query.get("wait").map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(s) => s.parse::<u64>().ok().filter(|w| *w <= MAX_WAIT_SECONDS).ok_or_else(|| {
            ApiError::invalid_parameter("wait", format!("wait must be a whole number from 0 to {MAX_WAIT_SECONDS}"))
        }),
    }
}

/// Waits until the job ends or `seconds` pass (a long poll; no busy waiting).
async fn wait_for(state: &AppState, job_id: &str, seconds: u64) {
    if seconds == 0 {
        return;
    }
    if let Some(mut finished) = state.jobs().finished(job_id) {
        // Ending early (timeout, or the job forgotten) just answers the state as it is.
        let _ = tokio::time::timeout(Duration::from_secs(seconds), finished.wait_for(|done| *done)).await;
    }
}

/// The index, if the caller may look for duplicates in it (404 before 403).
async fn reviewable_index(state: &AppState, caller: &Caller, id: &str) -> Result<IndexInfo, ApiError> {
    let index = visible_index(state, caller, id).await?;
    if !caller.may_review(&index) {
        return Err(ApiError::forbidden(&format!("look for duplicates in index {id:?}"))
            .with(|d| d.index_id = Some(id.to_string())));
    }
    Ok(index)
}

#[utoipa::path(
    post,
    path = "/face/index/{index_id}/duplicates",
    tag = TAG_RECORDS,
    operation_id = "start_duplicates",
    summary = "Start a duplicate-identity search (admin, operator)",
    description = "Starts a background job that compares every face of the index (and of the indexes in \
                   `index_ids`) with every other one and groups the records whose faces match at `min_score` or \
                   above while the records differ (different `id_no`, or different `name` when an `id_no` is \
                   missing). Poll the job with `GET /face/index/{index_id}/duplicates/{job_id}`. Jobs are kept \
                   in memory: a restart loses them. Audited.",
    params(
        ("index_id" = String, Path, description = "The index id"),
        ("min_score" = Option<f64>, Query, description = "Calibrated match score 0–100 (the scale of search); \
                                                          default the server's duplicate score (80)"),
        ("index_ids" = Option<String>, Query, description = "Further index ids to include, comma-separated"),
        ("wait" = Option<u32>, Query, description = "Wait up to this many seconds (at most 30) for the job to \
                                                   end before answering (still `202`, with the job as it is \
                                                   then); default 0", maximum = 30),
    ),
    security(("basic_auth" = [])),
    responses(
        (status = 202, description = "The job, running", body = DuplicateJobResponse,
         headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`INVALID_PARAMETER` (`min_score` outside 0–100, too many `index_ids`, \
                                      `wait` outside 0–30)", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin or an operator granted every index (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`INDEX_PACK_MISMATCH`", body = ErrorBody),
        (status = 429, description = "`TOO_MANY_JOBS`: two jobs are running already; retry later", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(index_id): Path<String>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "duplicates.start");
    entry.index(&index_id);
    let result = run_start(&state, &caller, &mut entry, &index_id, &query).await;
    entry.finish(&state, result).await
}

async fn run_start(
    state: &AppState,
    caller: &Caller,
    entry: &mut AuditEntry,
    index_id: &str,
    query: &QueryParams,
) -> Result<Response, ApiError> {
    let wait = wait_seconds(query)?;
    let mut ids = vec![index_id.to_string()];
    for id in query.get("index_ids").unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }
    if ids.len() > MAX_JOB_INDEXES {
        return Err(ApiError::invalid_parameter("index_ids", format!("at most {MAX_JOB_INDEXES} indexes per job")));
    }
    let engine = state.engine()?.clone();
    let min_score = match query.get("min_score").map(str::trim).filter(|s| !s.is_empty()) {
        None => engine.config().duplicate_score,
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|v| (0.0..=100.0).contains(v))
            .ok_or_else(|| ApiError::invalid_parameter("min_score", "min_score must be a number from 0 to 100"))?,
    };
    let mut indexes = Vec::with_capacity(ids.len());
    for id in &ids {
        entry.index(id);
        let index = reviewable_index(state, caller, id).await?;
        engine.check_usable(&index)?;
        indexes.push(index);
    }
    entry.detail("min_score", min_score);
    let Some(job) = state.jobs().start(ids, min_score, &caller.user.username) else {
        return Err(ApiError::new(
            ErrorCode::TooManyJobs,
            "duplicate searches are running already; retry when one has finished",
        ));
    };
    entry.detail("job_id", job.id.as_str());
    let jobs_state = state.clone();
    let job_id = job.id.clone();
    tokio::spawn(async move {
        let result = engine.find_duplicates(&indexes, min_score, job.progress).await.map_err(|e| {
            tracing::error!(error = %e, job = %job_id, "duplicate search failed");
            "the duplicate search failed; see the server log".to_string()
        });
        if let Ok(report) = &result {
            tracing::info!(job = %job_id, faces = report.faces, groups = report.groups.len(), "duplicate search done");
        }
        jobs_state.jobs().finish(&job_id, result);
    });
    wait_for(state, &job.id, wait).await;
    let mut response = match state.jobs().view(&job.id) {
        Some(view) => accepted(view),
        // Forgotten already (many jobs finished meanwhile): its id at least.
        None => accepted(json!({ "job_id": job.id })),
    };
    if let Ok(location) = HeaderValue::from_str(&format!("/face/index/{index_id}/duplicates/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/face/index/{index_id}/duplicates/{job_id}",
    tag = TAG_RECORDS,
    operation_id = "get_duplicates",
    summary = "A duplicate-identity job: progress and groups (admin, operator)",
    description = "`status` is `running`, `done` or `failed`; `progress` counts the faces compared. When done, \
                   `groups` lists the connected groups of records whose faces match: the records (id, index, \
                   name, `id_no`, reference) and every matching pair with its score and best-matching images, \
                   best group first.",
    params(
        ("index_id" = String, Path, description = "The index id"),
        ("job_id" = String, Path, description = "The job id"),
        ("wait" = Option<u32>, Query, description = "Long poll: wait up to this many seconds (at most 30) for a \
                                                   running job to end before answering; default 0", maximum = 30),
    ),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The job", body = DuplicateJobResponse),
        (status = 400, description = "`INVALID_PARAMETER`: `wait` not a whole number from 0 to 30", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin or an operator granted the index (`index_id`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND` or `JOB_NOT_FOUND` (unknown, forgotten after a restart, \
                                      or started on another index)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((index_id, job_id)): Path<(String, String)>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let wait = wait_seconds(&query)?;
    let index = reviewable_index(&state, &caller, &index_id).await?;
    let ids = state.jobs().index_ids(&job_id).filter(|ids| ids.first() == Some(&index.id));
    let Some(ids) = ids else { return Err(job_not_found(&job_id)) };
    // Grants may have changed since the job started: the caller must still see every index.
    for id in &ids[1..] {
        let may = state.store().get_index(id).await?.is_some_and(|i| caller.may_review(&i));
        if !may {
            return Err(job_not_found(&job_id));
        }
    }
    wait_for(&state, &job_id, wait).await;
    state.jobs().view(&job_id).map(ok).ok_or_else(|| job_not_found(&job_id))
}
