//! What a search searched and the search of every face of a photo, over real HTTP on a
//! real photo of several faces: Barack Obama and Joe Biden side by side (and a third,
//! smaller face behind them), each of the two enrolled from another photo of theirs.
//!
//! * `include=probe` adds `probe` (faces found, the face's box and landmarks, the rule
//!   that chose it, quality, liveness, packs) and leaves the published body, byte for
//!   byte, as the prefix of the answer; `X-Faces-Found` and `X-Face-Box` come with
//!   every search.
//! * `faces=all` answers every face with its own matches, each face finding the person
//!   it shows; liveness is not run in this mode, and the audit has every face's results.
//! * A deployment's limits apply: `--max-search-faces`, `--min-face-size` (a face too
//!   small is listed as refused), `--require-liveness` (non-admins may not use `faces=all`).
//! * `MULTIPLE_FACES` names the boxes of the faces of similar size.

mod common;

use std::sync::OnceLock;

use common::{Server, ServerOptions, eval};
use serde_json::{Value, json};

/// Obama (largest), Biden, and a smaller third face.
const PAIR: &str = "face_recognition/examples/knn_examples/test/obama_and_biden.jpg";
const OBAMA: &str = "face_recognition/examples/knn_examples/train/obama/obama.jpg";
const BIDEN: &str = "face_recognition/examples/knn_examples/train/biden/biden.jpg";

const NO_LIVENESS: (&str, &str) = ("perform_liveness_check", "false");

/// The server the tests share (each works in its own index).
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start)
}

/// A new index holding Obama and Biden: (index id, Obama's record, Biden's record).
fn people(s: &Server, name: &str) -> (String, String, String) {
    let index = s.create_index_id(name);
    let record = |photo: &str, who: &str| {
        s.enrol_ok(&index, &eval(photo), &[("name", who)])["record_id"].as_str().expect("record_id").to_string()
    };
    let obama = record(OBAMA, "Barack Obama");
    let biden = record(BIDEN, "Joe Biden");
    (index, obama, biden)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `(x1, y1, x2, y2)` of a box object.
fn corners(b: &Value) -> (f64, f64, f64, f64) {
    (num(&b["x1"]), num(&b["y1"]), num(&b["x2"]), num(&b["y2"]))
}

fn area(b: &Value) -> f64 {
    let (x1, y1, x2, y2) = corners(b);
    (x2 - x1) * (y2 - y1)
}

/// A face box and its landmarks make sense in a photo of `size`: inside the photo, at
/// least 32 px, five landmarks inside the box with the eyes above the mouth and the
/// image-left eye left of the other.
#[track_caller]
fn assert_plausible_face(b: &Value, landmarks: &Value, score: &Value, size: (u32, u32)) {
    let (x1, y1, x2, y2) = corners(b);
    let (w, h) = (f64::from(size.0), f64::from(size.1));
    assert!(0.0 <= x1 && x1 < x2 && x2 <= w && 0.0 <= y1 && y1 < y2 && y2 <= h, "box {b} in a {w}×{h} photo");
    assert!(x2 - x1 >= 32.0 && y2 - y1 >= 32.0, "box {b} is too small for a face that was embedded");
    let points: Vec<(f64, f64)> = landmarks
        .as_array()
        .unwrap_or_else(|| panic!("landmarks {landmarks}"))
        .iter()
        .map(|p| (num(&p[0]), num(&p[1])))
        .collect();
    assert_eq!(points.len(), 5, "{landmarks}");
    for (x, y) in &points {
        assert!((x1..=x2).contains(x) && (y1..=y2).contains(y), "landmark ({x}, {y}) outside the box {b}");
    }
    let [right_eye, left_eye, nose, mouth_r, mouth_l] = [points[0], points[1], points[2], points[3], points[4]];
    assert!(right_eye.0 < left_eye.0 && mouth_r.0 < mouth_l.0, "{landmarks}");
    assert!(right_eye.1.max(left_eye.1) < nose.1 && nose.1 < mouth_r.1.min(mouth_l.1), "{landmarks}");
    assert!((0.5..=1.0).contains(&num(score)), "detection score {score}");
}

fn names(matches: &Value) -> Vec<String> {
    matches.as_array().expect("matches").iter().map(|m| m["name"].as_str().unwrap_or_default().to_string()).collect()
}

#[test]
fn include_probe_shows_the_face_searched_and_leaves_the_published_body_alone() {
    let s = server();
    let (index, _, _) = people(s, "probe-include");
    let index = &index;
    let size = image::image_dimensions(eval(PAIR)).expect("the photo's size");
    let plain = s.search(&[index], &eval(PAIR), &[NO_LIVENESS]);
    plain.ok(200);
    let with = s.search(&[index], &eval(PAIR), &[NO_LIVENESS, ("include", "probe")]);
    with.ok(200);

    // The published body is untouched: only `response`, and the answer with `probe`
    // begins with exactly the same bytes.
    assert_eq!(plain.json.as_object().map(|o| o.len()), Some(1), "{}", plain.text);
    let published = plain.text.strip_suffix('}').expect("a JSON object");
    assert!(
        with.text.starts_with(published) && with.text[published.len()..].starts_with(",\"probe\":{"),
        "the body with include=probe does not begin with the published body:\n{}\n{}",
        plain.text,
        with.text
    );
    assert_eq!(with.json.as_object().map(|o| o.len()), Some(2), "{}", with.text);

    let p = &with.json["probe"];
    assert_eq!(p["faces_found"], 3, "{p}");
    assert_eq!(p["chosen_by"], "largest");
    assert_plausible_face(&p["face"]["box"], &p["face"]["landmarks"], &p["face"]["detection_score"], size);
    // The quality measures are those of this face.
    let (x1, y1, x2, y2) = corners(&p["face"]["box"]);
    assert!((num(&p["quality"]["face_size"]) - (x2 - x1).min(y2 - y1)).abs() < 0.05, "{p}");
    assert!(p["quality_failures"].is_array(), "{p}");
    assert_eq!(
        p["liveness"],
        json!({"status": "not_checked", "score": null, "threshold": 0.5, "reason": "perform_liveness_check=false"})
    );
    assert_eq!(p["packs"], json!(["open"]));
    // The expectation of the header, as an object at the search's minimum score.
    let header = with.header("x-expected-false-matches").expect("X-Expected-False-Matches");
    assert_eq!(p["expected_false_matches"]["min_match_score"], 70.0, "{p}");
    assert_eq!(p["expected_false_matches"]["upper_bound"], false, "{p}");
    let value = num(&p["expected_false_matches"]["value"]);
    let from_header: f64 = header.parse().expect("a number");
    assert!((value - from_header).abs() <= 0.006 * value.max(1e-12), "{value} vs header {header}");
    // The largest face is Obama's.
    assert_eq!(names(&with.json["response"]).first().map(String::as_str), Some("Barack Obama"), "{}", with.text);

    // The essentials as headers, on every search.
    let header_box = format!("{},{},{},{}", x1.round(), y1.round(), x2.round(), y2.round());
    for r in [&plain, &with] {
        assert_eq!(r.header("x-faces-found"), Some("3"), "{:?}", r.headers);
        assert_eq!(r.header("x-face-box"), Some(header_box.as_str()), "{:?}", r.headers);
    }

    // With the liveness check (the default), a judged verdict is shown with the threshold.
    let live = s.search(&[index], &eval("deepface/img2.jpg"), &[("include", "probe")]);
    live.ok(200);
    let l = &live.json["probe"]["liveness"];
    assert_eq!(l["status"], "judged", "{l}");
    assert_eq!(l["threshold"], 0.5);
    let header: f64 = live.header("x-liveness-score").expect("X-Liveness-Score").parse().unwrap();
    assert!((num(&l["score"]) - header).abs() < 1e-9 && num(&l["score"]) >= 0.5, "{l} vs {header}");
    assert_eq!(live.json["probe"]["faces_found"], 1);
    assert_eq!(live.header("x-faces-found"), Some("1"));

    // Coordinates are those of the photo upright (its EXIF orientation applied): a photo
    // stored sideways with an EXIF tag has its face where the upright copy has it.
    let boxed = |photo: &str| {
        let r = s.search(&[index], &eval(photo), &[NO_LIVENESS, ("include", "probe")]);
        r.ok(200);
        corners(&r.json["probe"]["face"]["box"])
    };
    let upright = boxed("derived/deepface_img1/rgb.png");
    let tagged = boxed("derived/deepface_img1/exif_orientation_6.jpg");
    let (stored_w, stored_h) = image::image_dimensions(eval("derived/deepface_img1/exif_orientation_6.jpg")).unwrap();
    assert!(stored_w > stored_h, "the file is stored sideways");
    assert!(tagged.2 <= f64::from(stored_h), "the box {tagged:?} is not in upright coordinates");
    for (a, b) in [(upright.0, tagged.0), (upright.1, tagged.1), (upright.2, tagged.2), (upright.3, tagged.3)] {
        assert!((a - b).abs() <= 3.0, "upright {upright:?}, EXIF-tagged {tagged:?}");
    }
}

#[test]
fn faces_all_searches_every_face_with_its_own_matches() {
    let s = server();
    let (index, obama, biden) = people(s, "probe-every-face");
    let index = &index;
    let size = image::image_dimensions(eval(PAIR)).expect("the photo's size");
    let plain = s.search(&[index], &eval(PAIR), &[NO_LIVENESS]);
    // The liveness check is asked for (the published default) but not run in this mode.
    let r = s.search(&[index], &eval(PAIR), &[("faces", "all"), ("include", "probe")]);
    r.ok(200);
    assert_eq!(r.json["response"], plain.json["response"], "response is the largest face's matches");
    assert!(r.header("x-liveness-score").is_none(), "{:?}", r.headers);
    assert_eq!(r.json["probe"]["liveness"]["status"], "not_checked");
    assert_eq!(r.json["probe"]["liveness"]["reason"], "faces=all");

    let faces = r.json["faces"].as_array().expect("faces");
    assert_eq!(faces.len(), 3, "{}", r.text);
    assert_eq!(faces[0]["box"], r.json["probe"]["face"]["box"], "the first face is the one of response");
    assert_eq!(faces[0]["matches"], r.json["response"]);
    for pair in faces.windows(2) {
        assert!(area(&pair[0]["box"]) >= area(&pair[1]["box"]), "not largest first: {}", r.text);
    }
    for f in faces {
        assert_plausible_face(&f["box"], &f["landmarks"], &f["detection_score"], size);
        assert!(f["quality"]["face_size"].is_number() && f["quality_failures"].is_array(), "{f}");
        assert!(f.get("refused").is_none(), "{f}");
    }
    // Each face finds the person it shows, and only that face does.
    assert_eq!(names(&faces[0]["matches"]).first().map(String::as_str), Some("Barack Obama"), "{}", r.text);
    assert_eq!(names(&faces[1]["matches"]).first().map(String::as_str), Some("Joe Biden"), "{}", r.text);
    assert!(num(&faces[1]["matches"][0]["match_score"]) >= 70.0);
    assert_eq!(faces[1]["matches"][0]["record_id"], biden.as_str());
    for (i, f) in faces.iter().enumerate() {
        let found = names(&f["matches"]);
        assert!(i == 0 || !found.contains(&"Barack Obama".to_string()), "face {i}: {found:?}");
        assert!(i == 1 || !found.contains(&"Joe Biden".to_string()), "face {i}: {found:?}");
    }

    // Audited like any search, with every face's results.
    let events = s.get(&format!("/audit?action=face.search&index_id={index}&limit=10"));
    let event = &events.ok(200)["events"][0];
    assert_eq!(event["outcome"], "ok", "{event}");
    assert_eq!(event["details"]["faces"], "all", "{event}");
    assert_eq!(event["details"]["liveness"]["status"], "not_checked", "{event}");
    let audited = event["details"]["face_results"].as_array().expect("face_results");
    assert_eq!(audited.len(), 3, "{event}");
    assert_eq!(audited[1]["results"][0]["record_id"], biden.as_str(), "{event}");
    let records: Vec<&str> = event["record_ids"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(records.contains(&obama.as_str()) && records.contains(&biden.as_str()), "{event}");

    // Without include=probe, faces comes alone beside response.
    let r = s.search(&[index], &eval(PAIR), &[("faces", "all")]);
    let keys: Vec<&String> = r.json.as_object().expect("a body").keys().collect();
    assert_eq!(keys, ["faces", "response"], "{}", r.text);
}

#[test]
fn unknown_values_of_the_opt_in_parameters_are_refused() {
    let s = server();
    let index = &s.create_index_id("probe-refusals");
    for (name, value) in [("include", "probes"), ("include", "probe,faces"), ("faces", "every"), ("faces", "")] {
        let r = s.search(&[index], &eval(PAIR), &[(name, value)]);
        let e = r.err(400, "INVALID_PARAMETER");
        assert_eq!(e["parameter"], name, "{}", r.text);
    }
}

#[test]
fn a_multiple_faces_refusal_lists_the_boxes_of_the_faces() {
    let s = server();
    let (index, _, _) = people(s, "probe-multiple");
    let index = &index;
    let before = s.record_count(index);
    let r = s.enrol(index, &eval(PAIR), &[("name", "Who")]);
    let e = r.err(422, "MULTIPLE_FACES");
    assert_eq!(e["faces"], 3, "{}", r.text);
    let boxes = e["boxes"].as_array().expect("boxes");
    assert_eq!(boxes.len(), 3, "{}", r.text);
    // The same faces a search finds, largest first.
    let all = s.search(&[index], &eval(PAIR), &[("faces", "all")]);
    for (b, f) in boxes.iter().zip(all.json["faces"].as_array().expect("faces")) {
        assert_eq!(corners(b), corners(&f["box"]), "{}", r.text);
        assert_eq!(b["detection_score"], f["detection_score"]);
    }
    assert_eq!(s.record_count(index), before, "nothing stored");
    // Adding the photo to a record is refused the same way.
    let record = s.enrol_ok(index, &eval(BIDEN), &[("name", "Joe Biden again")]);
    let r = s.add_image(index, record["record_id"].as_str().expect("record_id"), &eval(PAIR));
    let e = r.err(422, "MULTIPLE_FACES");
    assert_eq!(e["boxes"].as_array().map(Vec::len), Some(3), "{}", r.text);
}

#[test]
fn faces_all_over_indexes_of_two_model_packs() {
    // Obama in an index of the open pack (made by a first server), Biden in one of the
    // insightface pack (made by a second server of that pack on the same data): each
    // face of the photo is searched in both with each pack's embedding of it.
    let dir = common::temp_dir();
    let data = dir.path().join("data");
    let first = Server::start_with(ServerOptions::default().data_dir(&data));
    let open = first.create_index_id("probe-open");
    first.enrol_ok(&open, &eval(OBAMA), &[("name", "Barack Obama")]);
    first.stop();
    let s = Server::start_with(ServerOptions::default().data_dir(&data).args(&["--pack", "insightface"]));
    let insightface = s.create_index_id("probe-insightface");
    assert_eq!(s.index(&insightface).ok(200)["pack"], "insightface");
    s.enrol_ok(&insightface, &eval(BIDEN), &[("name", "Joe Biden")]);

    let r = s.search(&[&open, &insightface], &eval(PAIR), &[("faces", "all"), ("include", "probe")]);
    r.ok(200);
    assert_eq!(r.json["probe"]["packs"], json!(["insightface", "open"]), "{}", r.text);
    let faces = r.json["faces"].as_array().expect("faces");
    assert_eq!(faces.len(), r.json["probe"]["faces_found"].as_u64().expect("faces_found") as usize, "{}", r.text);
    let top = |i: usize| names(&faces[i]["matches"]).first().cloned().unwrap_or_default();
    assert_eq!((top(0), top(1)), ("Barack Obama".to_string(), "Joe Biden".to_string()), "{}", r.text);
    assert_eq!(faces[0]["matches"][0]["index_id"], open.as_str());
    assert_eq!(faces[1]["matches"][0]["index_id"], insightface.as_str());
}

#[test]
fn a_deployments_limits_apply_to_faces_all() {
    // At most two faces, and none under 112 px: Obama's face (117 px) is searched,
    // Biden's (108 px) is listed as too small, the third is beyond the limit.
    let s = Server::start_with(ServerOptions::default().args(&[
        "--require-liveness",
        "--max-search-faces",
        "2",
        "--min-face-size",
        "112",
    ]));
    let index = s.create_index_id("probe-limits");
    s.enrol_ok(&index, &eval(OBAMA), &[("name", "Barack Obama")]);
    let r = s.search(&[&index], &eval(PAIR), &[("faces", "all"), ("include", "probe")]);
    r.ok(200);
    assert_eq!(r.header("x-faces-found"), Some("3"));
    assert_eq!(r.json["probe"]["faces_found"], 3);
    let faces = r.json["faces"].as_array().expect("faces");
    assert_eq!(faces.len(), 2, "{}", r.text);
    assert_eq!(names(&faces[0]["matches"]), ["Barack Obama"], "{}", r.text);
    assert_eq!(faces[1]["refused"], "FACE_TOO_SMALL", "{}", r.text);
    assert!(faces[1].get("matches").is_none() && faces[1]["message"].is_string(), "{}", r.text);
    assert!(faces[1]["quality"]["face_size"].as_f64().is_some_and(|v| v < 112.0), "{}", r.text);

    // Liveness is mandatory here and faces=all does not run it: refused for a searcher.
    let searcher = ("probe-searcher", "probe-searcher-Password-1");
    let user = json!({"username": searcher.0, "password": searcher.1, "role": "searcher", "grants": [index]});
    s.post_json("/users", &user).ok(201);
    let form = reqwest::blocking::multipart::Form::new()
        .part("source_image", common::file_part(&eval(PAIR)))
        .text("target_index_ids", index.clone());
    let path = "/face/search?faces=all";
    let req = common::with_form(s.http().post(s.url(path)).basic_auth(searcher.0, Some(searcher.1)), form);
    let r = s.send(format!("POST {path} as {}", searcher.0), req);
    let e = r.err(403, "LIVENESS_REQUIRED");
    assert_eq!(e["parameter"], "faces", "{}", r.text);
}
