//! Issue 17: what a minimum score means at the size of the indexes searched, said over
//! real HTTP where the user decides — the `X-Expected-False-Matches` header of every
//! search (equal to the calibration's N × FMR for the faces searched), and the Part 2
//! index object's `faces`, `min_score_fpir_1e3` and (on request) expected false matches
//! — while the published Part 1 bodies, the details list included, stay as they were.
//! On both stores: in memory the faces are the enrolled images, in PostgreSQL the
//! record count.

mod common;

use std::collections::BTreeSet;

use common::{Server, ServerOptions, StoreKind, eval, lfw_photos};
use facesearch_face::Pack;
use facesearch_face::calibration::Calibration;
use serde_json::Value;

/// The people enrolled in index A (photo 1 each; the first also photo 2) and B.
const PEOPLE_A: [&str; 3] = ["John_Bolton", "Tang_Jiaxuan", "Leonid_Kuchma"];
const PEOPLE_B: [&str; 2] = ["Mohamed_ElBaradei", "Paul_Burrell"];

fn calibration() -> Calibration {
    Calibration::shipped(Pack::Open).unwrap_or_else(|e| panic!("{e}"))
}

/// The header value the calibration gives for `faces` at `score`.
fn expected_header(score: f64, faces: u64) -> String {
    calibration().expected_false_matches(score, faces).header_value()
}

struct Fixture {
    server: Server,
    a: String,
    b: String,
    /// Faces a search compares with: images in memory, records in PostgreSQL.
    faces_a: u64,
    faces_b: u64,
}

fn fixture(store: StoreKind) -> Fixture {
    let server = Server::start_with(ServerOptions::default().store(store));
    let a = server.create_index_id("fm-a");
    let b = server.create_index_id("fm-b");
    for (i, name) in PEOPLE_A.iter().enumerate() {
        let photos = lfw_photos(name);
        let record = server.enrol_ok(&a, &photos[0], &[("name", name)]);
        if i == 0 {
            let record_id = record["record_id"].as_str().expect("record_id");
            server.add_image(&a, record_id, &photos[1]).ok(201);
        }
    }
    for name in PEOPLE_B {
        server.enrol_ok(&b, &lfw_photos(name)[0], &[("name", name)]);
    }
    let (faces_a, faces_b) = match store {
        StoreKind::Sqlite => (PEOPLE_A.len() as u64 + 1, PEOPLE_B.len() as u64),
        StoreKind::Postgres => (PEOPLE_A.len() as u64, PEOPLE_B.len() as u64),
    };
    Fixture { server, a, b, faces_a, faces_b }
}

fn no_liveness(min: &str) -> Vec<(&'static str, String)> {
    vec![("perform_liveness_check", "false".into()), ("min_match_score", min.into())]
}

fn search_header(f: &Fixture, ids: &[&str], photo: &std::path::Path, min: Option<&str>) -> (String, Value) {
    let params: Vec<(&str, String)> = match min {
        Some(m) => no_liveness(m),
        None => vec![("perform_liveness_check", "false".into())],
    };
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = f.server.search(ids, photo, &refs);
    let body = r.ok(200).clone();
    let header = r.header("x-expected-false-matches").unwrap_or_else(|| panic!("no header on {}", r.what));
    // Part 1 body: `{"response": [...]}` and nothing beside it.
    let keys: Vec<&String> = r.json.as_object().expect("an object body").keys().collect();
    assert_eq!(keys, ["response"], "{}", r.text);
    (header.to_string(), body)
}

fn every_search_says_how_many_false_matches_to_expect(store: StoreKind) {
    let f = fixture(store);
    let stranger = eval("deepface/img38.jpg");
    // The default minimum score (70) over index A alone; no match, still the header.
    let (header, body) = search_header(&f, &[&f.a], &stranger, None);
    assert_eq!(body, Value::Array(vec![]), "a stranger at the default threshold");
    assert_eq!(header, expected_header(70.0, f.faces_a));
    assert!(!header.starts_with("<="), "70 lies in the measured range: {header}");
    // Both indexes at a low score: the faces of both, one pack.
    let (header, _) = search_header(&f, &[&f.a, &f.b], &stranger, Some("30"));
    assert_eq!(header, expected_header(30.0, f.faces_a + f.faces_b));
    let value: f64 = header.parse().expect("a plain number");
    let direct = (f.faces_a + f.faces_b) as f64 * calibration().false_match_rate(30.0).value;
    assert!((value - direct).abs() <= direct * 5e-3, "{value} vs N × FMR = {direct}");
    // At 30 a few faces already make a few hundredths: the CLI would warn.
    assert!(value > 0.01, "{value}");
    // A mated search: the header does not depend on the probe.
    let (header, body) = search_header(&f, &[&f.a], &lfw_photos(PEOPLE_A[1])[1], Some("70"));
    assert_eq!(header, expected_header(70.0, f.faces_a));
    assert!(!body.as_array().expect("matches").is_empty(), "the enrolled person is found");
    // Above the last measured rate: a bound, said with `<=`.
    let (header, _) = search_header(&f, &[&f.a], &stranger, Some("90"));
    assert!(header.starts_with("<="), "{header}");
    assert_eq!(header, expected_header(90.0, f.faces_a));
    // The audit keeps what the searcher was told.
    let events = f.server.get(&format!("/audit?action=face.search&index_id={}&limit=1", f.a));
    let event = &events.ok(200)["events"][0];
    assert_eq!(event["details"]["expected_false_matches"], header.as_str(), "{event}");
}

fn the_part2_index_object_says_the_score_for_fpir_1e3(store: StoreKind) {
    let f = fixture(store);
    let c = calibration();
    let index = f.server.index(&f.a).ok(200).clone();
    assert_eq!(index["faces"].as_u64(), Some(f.faces_a), "{index}");
    let hint = index["min_score_fpir_1e3"].as_f64().unwrap_or_else(|| panic!("no hint in {index}"));
    let needed = c.score_for_fpir(1e-3, f.faces_a).expect("a measured score for a few faces");
    assert!(hint >= needed && hint - needed < 0.01, "{hint} vs {needed}");
    assert!(c.fpir(hint, f.faces_a).value <= 1e-3 * (1.0 + 1e-9), "FPIR at the hint: {index}");
    assert!(index.get("expected_false_matches").is_none(), "only on request: {index}");

    // On request, the expected false matches at a score: the header's number per index.
    let asked = f.server.get(&format!("/face/index/{}?min_match_score=50", f.a)).ok(200).clone();
    let e = &asked["expected_false_matches"];
    assert_eq!(e["min_match_score"].as_f64(), Some(50.0), "{asked}");
    assert_eq!(e["upper_bound"], false, "{asked}");
    let value = e["value"].as_f64().expect("a value");
    // JSON carries the number to the last digit or so (serde_json's parsing).
    let direct = c.expected_false_matches(50.0, f.faces_a).value;
    assert!((value - direct).abs() <= direct * 1e-12, "{value} vs {direct}");
    let bound = f.server.get(&format!("/face/index/{}?min_match_score=95", f.a)).ok(200).clone();
    assert_eq!(bound["expected_false_matches"]["upper_bound"], true, "{bound}");
    for bad in ["101", "-1", "abc", "NaN"] {
        let r = f.server.get(&format!("/face/index/{}?min_match_score={bad}", f.a));
        let err = r.err(400, "INVALID_PARAMETER");
        assert_eq!(err["parameter"], "min_match_score", "{}", r.text);
    }

    // A new index: no face, any score keeps FPIR at 0.
    let created = f.server.create_index("fm-empty");
    assert_eq!(created["faces"].as_u64(), Some(0), "{created}");
    assert_eq!(created["min_score_fpir_1e3"].as_f64(), Some(0.0), "{created}");
    let r = f.server.index(created["id"].as_str().expect("an id"));
    assert!(r.text.contains("\"min_score_fpir_1e3\":0.0"), "{}", r.text);

    // The published details list stays exactly as it was: none of the Part 2 fields.
    let published: BTreeSet<&str> =
        ["id", "index_name", "index_type", "record_count", "title", "description", "pack", "created_at", "updated_at"]
            .into();
    for listed in f.server.details() {
        let keys: BTreeSet<&str> = listed.as_object().expect("an index object").keys().map(String::as_str).collect();
        assert_eq!(keys, published, "{listed}");
    }
}

on_both_stores!(every_search_says_how_many_false_matches_to_expect, the_part2_index_object_says_the_score_for_fpir_1e3);
