//! Part 1 of the API: the published Face Search (1:N) endpoints, to the letter.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use facesearch_engine::{Match, SearchQuery};
use facesearch_face::{FaceQuality, Liveness};
use serde_json::{Value, json};

use super::search_details::{self, FaceBox, SearchBody, SearchOptions};
use super::{false_matches, ok};
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Form, Path, QueryParams};
use crate::openapi::{SearchForm, TAG_SEARCH};
use crate::responses::{
    AuthErrors, ErrorBody, FileObject, FileResponse, IndexListResponse, IndexObject, MatchResult, ServerErrors,
};
use crate::state::AppState;

/// Defaults of the published API.
pub const DEFAULT_MIN_MATCH_SCORE: f64 = 70.0;
pub const DEFAULT_MAX_RESULTS: usize = 5;
const MAX_TARGET_INDEXES: usize = 100;

/// `GET /face/index/details?action_type=FACE_SEARCH`: the indexes the caller may search.
#[utoipa::path(
    get,
    path = "/face/index/details",
    tag = TAG_SEARCH,
    operation_id = "index_details",
    summary = "The indexes the caller may search",
    description = "The face databases available to the caller for searching (all of them for admins, the \
                   granted ones for searchers, none for other roles).",
    params(
        ("action_type" = Option<String>, Query, description = "Only `FACE_SEARCH` (the default)", example = "FACE_SEARCH"),
    ),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The indexes", body = IndexListResponse),
        (status = 400, description = "`INVALID_PARAMETER`: an `action_type` other than `FACE_SEARCH`, or a \
                                      malformed query string", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn index_details(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> Result<Response, ApiError> {
    let action = query.get("action_type").unwrap_or("FACE_SEARCH");
    if action != "FACE_SEARCH" {
        return Err(ApiError::invalid_parameter(
            "action_type",
            format!("unknown action_type {action:?}; the only one is FACE_SEARCH"),
        ));
    }
    let indexes = state.store().list_indexes().await?;
    let visible: Vec<IndexObject> = indexes.iter().filter(|i| caller.may_search(i)).map(IndexObject::from).collect();
    Ok(ok(visible))
}

/// `POST /face/search?perform_liveness_check=true`; audited.
#[utoipa::path(
    post,
    path = "/face/search",
    tag = TAG_SEARCH,
    operation_id = "search",
    summary = "Search a face in one or more indexes (1:N)",
    description = "The largest face of `source_image` is searched in every named index; matches are merged \
                   best first, each record at most once (with its best image), each with \
                   `match_score >= min_match_score`, at most `max_results`. No match is `{\"response\": []}`. \
                   Indexes of different model packs are each searched with their own pack's embedding of the \
                   probe; matches are merged by `match_score`. \
                   Order of checks: credentials → form → parameters → each index exists (404) → may search it \
                   (403) → image (400/413) → face (422) → liveness (422) → search. Audited. \
                   Opt-in (the default body is exactly the published one): `include=probe` adds `probe`, what was \
                   searched; `faces=all` adds `faces`, every face of the photo with its own matches.",
    params(
        ("perform_liveness_check" = Option<bool>, Query,
         description = "Run a passive liveness (presentation-attack) check on the probe face first; default `true`. \
                        A server started with `--require-liveness` refuses `false` from anyone but an admin \
                        (`403 LIVENESS_REQUIRED`)."),
        ("include" = Option<String>, Query,
         description = "`probe`: the body also carries, beside `response`, `probe`: the faces found, the box, \
                        landmarks and detection score of the face searched, the rule that chose it (`largest`), \
                        its quality measures and the minimums it misses, the liveness status, score and \
                        threshold, and the model packs used. Any other value is `400 INVALID_PARAMETER`.",
         example = "probe"),
        ("faces" = Option<String>, Query,
         description = "`largest` (the default) or `all`: the body also carries `faces`, every face found \
                        (at most `--max-search-faces`, default 10), largest first, each with its box, landmarks, \
                        quality and its own `matches` (or `refused`: `FACE_TOO_SMALL`) — for screening a group \
                        photo or a CCTV still. `response` stays the largest face's matches. Liveness is not \
                        judged in this mode (the model judges one face in its frame, and such a photo is not a \
                        live selfie); a `--require-liveness` server refuses it from anyone but an admin \
                        (`403 LIVENESS_REQUIRED`).",
         example = "all"),
    ),
    request_body(content = SearchForm, content_type = "multipart/form-data"),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The matches, best first; with `include=probe` or `faces=all` also \
                                      `probe` or `faces` beside `response`", body = SearchBody,
         headers(
             ("X-Faces-Found" = String, description = "How many faces the detector found in the photo"),
             ("X-Face-Box" = String, description = "The searched face's box, `x1,y1,x2,y2` in whole pixels of the \
                                                    photo as decoded (after its EXIF orientation)"),
             ("X-Liveness-Score" = String, description = "The probe's live probability (0–1), when liveness was judged"),
             ("X-Face-Quality" = String, description = "The probe face's quality measures, `name=value` pairs \
                                                        separated by `; ` (see docs/API.md, Face quality)"),
             ("X-Expected-False-Matches" = String, description = "Expected number of strangers at or above \
                                                       `min_match_score` in one search of a person not enrolled: \
                                                       the faces of the indexes searched times the calibrated \
                                                       false-match rate at that score (summed per model pack). \
                                                       Three significant digits (`0.00998`, `9.82e-7`); a `<=` \
                                                       prefix when the score lies above the lowest rate the \
                                                       calibration measured, so only a bound is known. See \
                                                       docs/API.md, Scores."),
             ("X-Low-Quality" = String, description = "Only when the probe misses the enrolment quality \
                                                       minimums: the measures it misses, comma-separated. The \
                                                       search is still done; ask the user for a better photo."),
         )),
        (status = 400, description = "`MISSING_FIELD` (`source_image`, `target_index_ids`), `INVALID_PARAMETER` \
                                      (empty or over 100 `target_index_ids`, `min_match_score` outside 0–100, \
                                      `max_results` outside 1–cap, `perform_liveness_check` not a boolean, \
                                      `include` other than `probe`, `faces` other than `largest`/`all`), \
                                      `INVALID_IMAGE` (empty, not an image, corrupt or truncated) or \
                                      `INVALID_MULTIPART`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the caller may not search one of the indexes (`index_id`); \
                                      `LIVENESS_REQUIRED`: the server requires the liveness check \
                                      (`--require-liveness`) and the caller, not an admin, asked to skip it \
                                      (`parameter`: `perform_liveness_check`, or `faces` for `faces=all`)", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`: no index with one of the ids (`index_id`)", body = ErrorBody),
        (status = 409, description = "`INDEX_PACK_MISMATCH`: an index holds vectors of a model pack this server cannot run", body = ErrorBody),
        (status = 413, description = "`IMAGE_TOO_LARGE` (byte or pixel limit) or `PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `multipart/form-data`", body = ErrorBody),
        (status = 422, description = "`NO_FACE_DETECTED`, `FACE_TOO_SMALL`, `LIVENESS_CHECK_FAILED` (judged a \
                                      spoof; `liveness_score`, `threshold`) or `LIVENESS_CANNOT_JUDGE` (the face \
                                      fills the frame; `context`, `min_context`)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
    form: Form,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "face.search");
    let result = run_search(&state, &caller, query, form, &mut entry).await;
    entry.finish(&state, result).await
}

async fn run_search(
    state: &AppState,
    caller: &Caller,
    query: QueryParams,
    mut form: Form,
    entry: &mut AuditEntry,
) -> Result<Response, ApiError> {
    let asked_liveness = query.bool("perform_liveness_check", true)?;
    let options = SearchOptions::from_query(&query)?;
    // `faces=all` screens a group photo or a still: liveness, a verdict on one face in
    // its frame, does not apply (docs/API.md), so it is not run whatever was asked.
    let liveness = asked_liveness && !options.every_face;
    let image = form.file("source_image")?;
    let ids_text = form.text("target_index_ids").ok_or_else(|| ApiError::missing_field("target_index_ids"))?;
    let mut ids: Vec<String> =
        ids_text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        return Err(ApiError::invalid_parameter("target_index_ids", "target_index_ids must name at least one index"));
    }
    if ids.len() > MAX_TARGET_INDEXES {
        return Err(ApiError::invalid_parameter(
            "target_index_ids",
            format!("at most {MAX_TARGET_INDEXES} indexes per search"),
        ));
    }
    let min_score = form.number("min_match_score", DEFAULT_MIN_MATCH_SCORE, 0.0..=100.0)?;
    let max_results = form.integer("max_results", DEFAULT_MAX_RESULTS, 1..=state.config().max_results_cap)?;
    for id in &ids {
        entry.index(id);
    }
    entry
        .detail("min_match_score", min_score)
        .detail("max_results", max_results)
        .detail("perform_liveness_check", asked_liveness);
    if options.every_face {
        entry.detail("faces", "all");
    }
    // A deployment that makes liveness mandatory (`--require-liveness`) lets only admins
    // skip it, and `faces=all` skips it; refused before any index is looked up or any
    // photo analysed.
    if !liveness && state.config().require_liveness && !caller.is_admin() {
        let (parameter, message) = if options.every_face {
            (
                "faces",
                "this server requires the liveness check, which faces=all does not run: faces=all is for admins only",
            )
        } else {
            (
                "perform_liveness_check",
                "this server requires the liveness check: perform_liveness_check=false is for admins only",
            )
        };
        return Err(
            ApiError::new(ErrorCode::LivenessRequired, message).with(|d| d.parameter = Some(parameter.to_string()))
        );
    }

    // Every named index must exist (404) before permissions are looked at (403).
    let mut found = Vec::with_capacity(ids.len());
    for id in &ids {
        found.push(state.store().get_index(id).await?.ok_or_else(|| ApiError::index_not_found(id))?);
    }
    if let Some(denied) = found.iter().find(|index| !caller.may_search(index)) {
        return Err(ApiError::forbidden(&format!("search index {:?}", denied.id))
            .with(|d| d.index_id = Some(denied.id.clone())));
    }
    let engine = state.engine()?;
    // Read once: the engine checks each index's pack itself.
    let indexes = found;
    let expected = engine.expected_false_matches(&indexes, min_score)?;
    // What the operator was told the threshold means, kept with the answer.
    entry.detail("expected_false_matches", expected.header_value());
    let every_face = options.every_face.then_some(state.config().max_search_faces);
    let query = SearchQuery { indexes, min_score, max_results, liveness, every_face };
    let outcome = engine.search(image.bytes, &query).await?;
    if let Some(verdict) = &outcome.probe.liveness {
        entry.detail("liveness", serde_json::to_value(verdict).unwrap_or(Value::Null));
    } else if options.every_face {
        entry.detail("liveness", json!({ "status": "not_checked", "reason": "faces=all" }));
    }
    let mut scores = Vec::new();
    for m in &outcome.matches {
        entry.record(&m.record.record_id);
        scores.push(json!({ "record_id": m.record.record_id, "index_id": m.record.index_id, "match_score": m.score }));
    }
    entry.detail("results", scores);
    if options.every_face {
        let faces = audit_faces(&outcome, entry);
        entry.detail("face_results", faces);
    }
    let results: Vec<Value> = outcome.matches.iter().map(match_object).collect();
    let mut response = if options.is_default() {
        ok(results)
    } else {
        let probe = options.probe.then(|| {
            let expected = false_matches::at_score(min_score, expected);
            let liveness_threshold = engine.config().liveness_threshold;
            search_details::probe_details(&outcome, liveness_threshold, options.every_face, expected)
        });
        let faces = options.every_face.then(|| outcome.faces.iter().map(search_details::searched_face).collect());
        axum::Json(SearchBody { response: results, probe, faces }).into_response()
    };
    false_matches::set_header(&mut response, expected);
    let quality = &outcome.probe.quality;
    // The engine's verdict: the measures below the enrolment minimums.
    let low = &outcome.low_quality;
    entry.detail("quality", serde_json::to_value(quality).unwrap_or(Value::Null));
    if !low.is_empty() {
        entry.detail("low_quality", low.clone());
    }
    let headers = response.headers_mut();
    headers.insert("x-faces-found", HeaderValue::from(outcome.probe.faces_in_image));
    if let Ok(v) = HeaderValue::from_str(&FaceBox::of(&outcome.probe.detection).header()) {
        headers.insert("x-face-box", v);
    }
    if let Ok(v) = HeaderValue::from_str(&quality_header(quality)) {
        headers.insert("x-face-quality", v);
    }
    if !low.is_empty()
        && let Ok(v) = HeaderValue::from_str(&low.join(","))
    {
        headers.insert("x-low-quality", v);
    }
    if let Some(Liveness::Judged { live_probability }) = outcome.probe.liveness
        && let Ok(v) = HeaderValue::from_str(&format!("{live_probability:.4}"))
    {
        headers.insert("x-liveness-score", v);
    }
    Ok(response)
}

/// The audit's account of a `faces=all` search: each face's box and results (or why it
/// was not searched); every matched record is named in the entry.
fn audit_faces(outcome: &facesearch_engine::SearchOutcome, entry: &mut AuditEntry) -> Vec<Value> {
    outcome
        .faces
        .iter()
        .map(|face| {
            let b = FaceBox::of(&face.detection);
            let face_box = json!([b.x1, b.y1, b.x2, b.y2]);
            match &face.matches {
                Ok(matches) => {
                    let results: Vec<Value> = matches
                        .iter()
                        .map(|m| {
                            entry.record(&m.record.record_id);
                            json!({ "record_id": m.record.record_id, "index_id": m.record.index_id, "match_score": m.score })
                        })
                        .collect();
                    json!({ "box": face_box, "results": results })
                }
                Err(why) => {
                    let code = ApiError::from(facesearch_face::PipelineError::from(*why)).code;
                    json!({ "box": face_box, "refused": code })
                }
            }
        })
        .collect()
}

/// The `X-Face-Quality` header: every measure as `name=value`, separated by `; `.
pub fn quality_header(q: &FaceQuality) -> String {
    format!(
        "face_size={:.1}; eye_distance={:.1}; sharpness={:.1}; compression={:.2}; brightness={:.1}; \
         dark_fraction={:.3}; bright_fraction={:.3}; yaw={:.1}; pitch={:.1}; roll={:.1}; detector_score={:.3}; \
         rotation={}",
        q.face_size,
        q.eye_distance,
        q.sharpness,
        q.compression,
        q.brightness,
        q.dark_fraction,
        q.bright_fraction,
        q.yaw,
        q.pitch,
        q.roll,
        q.detector_score,
        q.rotation
    )
}

/// One match as the wire shows it: a [`MatchResult`] through `serde_json::Value`, its
/// keys sorted, also where it sits in a body serialised directly ([`SearchBody`]).
pub fn match_object(m: &Match) -> Value {
    serde_json::to_value(MatchResult::from(m)).unwrap_or(Value::Null)
}

/// `GET /media/file/download/{file_id}`: an enrolled image, base64. An image the
/// caller may not read is indistinguishable from one that does not exist. Audited.
#[utoipa::path(
    get,
    path = "/media/file/download/{file_id}",
    tag = TAG_SEARCH,
    operation_id = "download",
    summary = "Download an enrolled image",
    description = "The stored image (a `match_image_id` or one of a record's `image_ids`), base64; the bytes \
                   are exactly those uploaded. Audited.",
    params(("file_id" = String, Path, description = "The image id")),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The image", body = FileResponse),
        (status = 404, description = "`FILE_NOT_FOUND`: no image with that id, or one the caller may not read", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(file_id): Path<String>,
) -> Result<Response, ApiError> {
    let mut entry = AuditEntry::new(&caller, "image.download");
    entry.detail("file_id", file_id.as_str());
    let result = run_download(&state, &caller, &file_id, &mut entry).await;
    entry.finish(&state, result).await
}

async fn run_download(
    state: &AppState,
    caller: &Caller,
    file_id: &str,
    entry: &mut AuditEntry,
) -> Result<Response, ApiError> {
    let image = state.store().get_image(file_id).await?.ok_or_else(ApiError::file_not_found)?;
    let index = state.store().get_index(&image.index_id).await?.ok_or_else(ApiError::file_not_found)?;
    if !caller.may_read(&index) {
        return Err(ApiError::file_not_found());
    }
    entry.index(&index.id).record(&image.record_id);
    Ok(ok(FileObject::from(&image)))
}
