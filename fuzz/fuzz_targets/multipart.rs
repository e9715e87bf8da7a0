//! Runs arbitrary bytes, as a `multipart/form-data; boundary=X` body, through the API's
//! `Form` extractor and its accessors.
//!
//! Oracle: nothing panics, and every rejection is a 4xx `ApiError` (a malformed upload
//! is the client's fault; a 5xx here would page someone for nothing).
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use facesearch_api::extract::Form;
use facesearch_api::{ApiConfig, ApiError, AppState};
use facesearch_store::SqliteStore;
use libfuzzer_sys::fuzz_target;

/// Small enough that the file-size limit is reachable with fuzzer-sized inputs.
const MAX_IMAGE_BYTES: usize = 2048;

struct Harness {
    runtime: tokio::runtime::Runtime,
    state: AppState,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        // The extractor never touches the store, but AppState needs one. The directory
        // is removed once the store is open (its connections keep the unlinked files),
        // so that fuzzing processes leave nothing behind in /tmp.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("sqlite store");
        drop(dir);
        let config = ApiConfig { max_image_bytes: MAX_IMAGE_BYTES, ..ApiConfig::default() };
        Harness { runtime, state: AppState::new(Arc::new(store), config) }
    })
}

fn check(result: Result<impl Sized, ApiError>, what: &str) {
    if let Err(e) = result {
        assert!(e.status.is_client_error(), "{what}: {} {} {}", e.status, e.code, e.message);
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let request = Request::builder()
        .method("POST")
        .uri("/face/search")
        .header(CONTENT_TYPE, "multipart/form-data; boundary=X")
        .body(Body::from(data.to_vec()))
        .expect("request");
    let form = h.runtime.block_on(Form::from_request(request, &h.state));
    let mut form = match form {
        Ok(form) => form,
        Err(e) => return check(Err::<(), _>(e), "Form::from_request"),
    };
    check(form.file("image"), "file(image)");
    check(form.file("source_image"), "file(source_image)");
    let _ = form.text("index_id");
    check(form.number("threshold", 0.5, 0.0..=1.0), "number(threshold)");
    check(form.integer("max_results", 10, 1..=100), "integer(max_results)");
    check(form.integer("page", 0, 0..=usize::MAX), "integer(page)");
});
