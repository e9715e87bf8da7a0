//! The document against the code: every route of the table is its handler's path, and
//! sample answers of every response type conform to their schemas, type by type
//! ([`super::conformance`]).

use std::collections::BTreeSet;

use facesearch_engine::{DuplicateGroup, DuplicatePair, DuplicateRecord, DuplicateReport, EngineError, Match};
use facesearch_face::{BBox, DecodeError, Detection, FaceQuality, Pack, PipelineError};
use facesearch_store::{
    AuditEvent, ImageSummary, IndexInfo, IndexType, JobState, Record, RecordFields, ReembedFailure, ReembedJob, Role,
    StoredImage, User,
};
use serde::Serialize;
use serde_json::{Value, json};

use super::conformance::{departures, object_fields};
use super::*;
use crate::ApiError;
use crate::responses::{
    AuditPage, FileObject, IndexObject, MatchResult, RecordObject, RecordPage, ReembedJobObject, StatusObject,
    UserObject,
};
use crate::routes::false_matches::{IndexHints, managed_fields};

fn doc() -> Value {
    serde_json::from_str(document_json()).expect("the document is JSON")
}

/// Asserts that `value`, serialised as the service sends it, is the schema `name`.
fn assert_conforms(doc: &Value, name: &str, value: impl Serialize) {
    let value = serde_json::to_value(value).expect("serialisable");
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    let out = departures(doc, schema, &value, name);
    assert!(out.is_empty(), "{value}\n{}", out.join("\n"));
}

fn sample_index() -> IndexInfo {
    IndexInfo {
        id: "i".into(),
        index_name: "n".into(),
        index_type: IndexType::Internal,
        record_count: 3,
        title: "t".into(),
        description: "d".into(),
        pack: Pack::Open.into(),
        created_at: "t".into(),
        updated_at: "t".into(),
    }
}

fn sample_quality() -> FaceQuality {
    FaceQuality {
        face_size: 120.5,
        eye_distance: 50.25,
        sharpness: 300.1,
        compression: 1.1,
        brightness: 128.0,
        dark_fraction: 0.01,
        bright_fraction: 0.0,
        yaw: -3.5,
        pitch: 2.0,
        roll: 0.5,
        detector_score: 0.9,
        rotation: 90,
    }
}

fn sample_record(reference: Option<&str>, quality: Option<Value>) -> Record {
    Record {
        record_id: "r".into(),
        index_id: "i".into(),
        fields: RecordFields { watch_list: vec!["pep".into()], ..RecordFields::default() },
        reference: reference.map(str::to_string),
        image_ids: vec!["img".into()],
        images: vec![ImageSummary { image_id: "img".into(), quality }],
        created_at: "t".into(),
        updated_at: "t".into(),
    }
}

fn detection() -> Detection {
    Detection {
        bbox: BBox { x1: 10.0, y1: 20.0, x2: 110.0, y2: 130.0 },
        landmarks: [[40.0, 60.0], [80.0, 60.0], [60.0, 85.0], [45.0, 105.0], [75.0, 105.0]],
        score: 0.9,
    }
}

#[test]
fn document_is_openapi_3_1() {
    let doc = doc();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert_eq!(doc["components"]["securitySchemes"]["basic_auth"]["scheme"], "basic");
}

/// The table names each handler's own `#[utoipa::path]`: the same path and method.
#[test]
fn every_route_of_the_table_is_its_handlers_path() {
    for spec in crate::route_table() {
        let route = spec.doc();
        let methods: Vec<Value> = route.methods.iter().map(|m| serde_json::to_value(m).expect("a method")).collect();
        assert_eq!(route.path, spec.path, "{spec:?}");
        assert_eq!(methods, [json!(spec.method.as_str().to_ascii_lowercase())], "{spec:?}");
        assert!(!route.operation.tags.unwrap_or_default().is_empty(), "{spec:?} has no tag");
    }
}

#[test]
fn answers_are_their_schemas() {
    let doc = doc();
    let index = sample_index();
    assert_conforms(&doc, "IndexObject", IndexObject::from(&index));
    let estimate = facesearch_face::false_matches::Estimate { value: 0.01, upper_bound: true };
    for (hints, asked) in [
        (IndexHints::default(), false),
        (IndexHints::default(), true),
        (IndexHints { faces: Some(1), min_score_fpir_1e3: Some(42.0), expected: Some((70.0, estimate)) }, true),
    ] {
        assert_conforms(&doc, "ManagedIndexObject", managed_fields(&index, hints, asked));
    }
    let quality = serde_json::to_value(sample_quality()).expect("a quality");
    assert_conforms(&doc, "FaceQualityObject", &quality);
    for (reference, quality) in [(Some("ref"), Some(quality)), (None, None)] {
        let record = sample_record(reference, quality);
        let m = Match {
            record: record.clone(),
            index_name: "n".into(),
            index_type: "EXTERNAL".into(),
            image_id: "img".into(),
            similarity: 0.5,
            score: 70.0,
            distance: 0.5,
        };
        assert_conforms(&doc, "MatchResult", MatchResult::from(&m));
        assert_conforms(&doc, "RecordObject", RecordObject::from(record.clone()));
        let page = RecordPage { records: vec![record.into()], next_cursor: reference.map(str::to_string) };
        assert_conforms(&doc, "RecordPage", page);
    }
    let image = StoredImage {
        image_id: "img".into(),
        record_id: "r".into(),
        index_id: "i".into(),
        bytes: vec![1, 2, 3],
        mime: "image/jpeg".into(),
        file_name: "a.jpg".into(),
        sha256: String::new(),
    };
    assert_conforms(&doc, "FileObject", FileObject::from(&image));
    for role in [Role::Admin, Role::Operator, Role::Searcher, Role::Auditor] {
        let user = User {
            username: "u".into(),
            role,
            password_hash: String::new(),
            grants: vec!["i".into()],
            created_at: "t".into(),
        };
        assert_conforms(&doc, "UserObject", UserObject::from(&user));
    }
    let event = AuditEvent {
        id: 1,
        at: "t".into(),
        actor: "a".into(),
        action: "x".into(),
        outcome: "ok".into(),
        index_ids: vec!["i".into()],
        record_ids: vec![],
        details: json!({"a": 1}),
    };
    assert_conforms(&doc, "AuditPage", AuditPage { events: vec![event.into()], next_before_id: Some(1) });
    assert_conforms(&doc, "AuditPage", AuditPage { events: vec![], next_before_id: None });
    for (state, error, finished_at) in
        [(JobState::Running, None, None), (JobState::Failed, Some("boom".to_string()), Some("t".to_string()))]
    {
        let job = ReembedJob {
            job_id: "j".into(),
            index_id: "i".into(),
            pack: Pack::Insightface.into(),
            from_pack: Pack::Open.into(),
            state,
            total: 2,
            done: 2,
            failed: 1,
            failures: vec![ReembedFailure {
                image_id: "img".into(),
                record_id: "r".into(),
                code: "NO_FACE_DETECTED".into(),
            }],
            error,
            requested_by: "admin".into(),
            created_at: "t".into(),
            updated_at: "t".into(),
            finished_at,
        };
        assert_conforms(&doc, "ReembedJobObject", ReembedJobObject::from(job));
    }
    let jobs = crate::jobs::DuplicateJobs::default();
    let job = jobs.start(vec!["i".into()], 80.0, "admin").expect("a job");
    assert_conforms(&doc, "DuplicateJob", jobs.view(&job.id));
    let group = DuplicateGroup {
        records: vec![DuplicateRecord {
            record_id: "a".into(),
            index_id: "i".into(),
            name: String::new(),
            id_no: String::new(),
            reference: None,
        }],
        pairs: vec![DuplicatePair {
            record_a: "a".into(),
            record_b: "b".into(),
            match_score: 90.0,
            similarity: 0.7,
            image_a: "x".into(),
            image_b: "y".into(),
        }],
    };
    let report =
        DuplicateReport { faces: 2, min_score: 80.0, groups: vec![group], truncated: false, same_identity_skipped: 0 };
    jobs.finish(&job.id, Ok(report));
    assert_conforms(&doc, "DuplicateJob", jobs.view(&job.id));
    assert_conforms(&doc, "StatusObject", StatusObject { status: "ok" });
}

/// Every detail an error may carry is documented with its type.
#[test]
fn errors_are_their_schema() {
    let doc = doc();
    let quality_failure =
        facesearch_face::QualityFailure { measure: "yaw", value: 40.0, limit: 30.0, limit_kind: "max" };
    let errors = [
        ApiError::invalid_parameter("limit", "x"),
        ApiError::missing_field("image"),
        ApiError::index_not_found("i"),
        ApiError::record_not_found("r"),
        ApiError::internal(),
        crate::routes::users::user_not_found("u"),
        facesearch_engine::users::check_password("short").expect_err("weak").into(),
        DecodeError::TooManyBytes { bytes: 10, limit: 5 }.into(),
        DecodeError::TooManyPixels { width: 10, height: 10, limit: 50 }.into(),
        PipelineError::FaceTooSmall { size: 20.0, min: 40.0 }.into(),
        PipelineError::AmbiguousFaces { count: 2, faces: vec![detection(), detection()] }.into(),
        PipelineError::NotUpright { roll: 40.0, max: 30.0 }.into(),
        PipelineError::LowQuality(quality_failure).into(),
        EngineError::LivenessFailed { score: 0.1, threshold: 0.5 }.into(),
        EngineError::LivenessCannotJudge { context: 1.0, min_context: 1.6 }.into(),
        EngineError::DuplicateFace { record_id: "r".into(), image_id: "img".into(), score: 90.0 }.into(),
        crate::limits::envelope_for(axum::http::StatusCode::BAD_GATEWAY),
    ];
    for error in errors {
        assert_conforms(&doc, "ErrorBody", error.body());
    }
}

#[test]
fn published_fields_are_documented() {
    let doc = doc();
    let names = |schema: &str| {
        object_fields(&doc, &doc["components"]["schemas"][schema]).0.into_keys().collect::<BTreeSet<_>>()
    };
    let index = names("IndexObject");
    for f in ["id", "index_name", "index_type", "record_count", "title", "description"] {
        assert!(index.contains(f), "IndexObject lacks {f}");
    }
    let m = names("MatchResult");
    for f in [
        "match_score",
        "distance",
        "match_image_id",
        "name",
        "dob",
        "nationality",
        "gender",
        "id_no",
        "address",
        "watch_list",
        "additional_info",
        "index_name",
        "index_type",
    ] {
        assert!(m.contains(f), "MatchResult lacks {f}");
    }
    let file = names("FileObject");
    for f in ["file_base64", "file_name", "file_type", "file_id"] {
        assert!(file.contains(f), "FileObject lacks {f}");
    }
}

/// The `ErrorCode` schema is the code table: its values, and its description lists
/// each code with its status.
#[test]
fn the_error_code_schema_is_the_table() {
    let doc = doc();
    let schema = &doc["components"]["schemas"]["ErrorCode"];
    let in_schema: Vec<&str> = schema["enum"].as_array().expect("an enum").iter().filter_map(Value::as_str).collect();
    let in_table: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(in_schema, in_table);
    let description = schema["description"].as_str().expect("a description");
    for code in ErrorCode::ALL {
        assert!(description.contains(&format!("| {} | `{}` |", code.status().as_u16(), code.as_str())), "{code}");
    }
}

#[test]
fn the_pages_are_self_contained() {
    for (page, uses) in [(DOCS_HTML, "/openapi.json"), (CONSOLE_HTML, "/face/search")] {
        let lower = page.to_ascii_lowercase();
        for external in ["http://", "https://", "//cdn", "src=\"/", "<link"] {
            assert!(!lower.contains(external), "a page refers to {external}");
        }
        assert!(page.contains(uses), "a page does not use {uses}");
    }
}
