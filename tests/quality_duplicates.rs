//! Over real HTTP: the enrolment quality gate (refusing the low-quality photos of
//! ../shared/eval/derived with the failing measure named, reporting but not refusing a
//! low-quality search probe), duplicate-identity jobs (a planted duplicate found among
//! many other people and nothing else), `check_duplicates=true`, their permissions,
//! and the `facesearch duplicates` client.

mod common;

use std::process::{Command, Stdio};

use common::{ADMIN_PASSWORD, ADMIN_USER, Resp, Server, eval, file_part, lfw_people, lfw_photos};
use reqwest::blocking::multipart::Form;
use serde_json::{Value, json};

const PASSWORD: &str = "dup-Password-1";

fn as_user(s: &Server, user: &str, method: reqwest::Method, path: &str) -> Resp {
    s.send(
        format!("{method} {path} as {user}"),
        s.http().request(method.clone(), s.url(path)).basic_auth(user, Some(PASSWORD)),
    )
}

/// Starts a duplicate job as admin and waits for it with long polls (the server
/// answers as soon as the job ends).
fn run_job(s: &Server, index_id: &str, query: &str) -> Value {
    let r = s.post_json(&format!("/face/index/{index_id}/duplicates{query}"), &json!({}));
    let job = r.ok(202).clone();
    let id = job["job_id"].as_str().expect("a job id").to_string();
    assert_eq!(r.header("location"), Some(format!("/face/index/{index_id}/duplicates/{id}").as_str()));
    loop {
        let job = s.get(&format!("/face/index/{index_id}/duplicates/{id}?wait=30")).ok(200).clone();
        match job["status"].as_str() {
            Some("running") => continue,
            Some("done") => return job,
            other => panic!("job ended {other:?}: {job}"),
        }
    }
}

#[test]
fn low_quality_faces_are_refused_at_enrolment_with_the_measure_named() {
    let s = Server::start();
    let idx = s.create_index_id("quality-gate");
    for set in ["deepface_img1", "compreface_004_A"] {
        let e = s
            .enrol(&idx, &eval(&format!("derived/{set}/low_quality_q10.jpg")), &[("name", "q10")])
            .err(422, "LOW_QUALITY_FACE")
            .clone();
        assert_eq!(e["measure"], "compression", "{set} q10: {e}");
        assert!(e["value"].as_f64().unwrap() > e["maximum"].as_f64().unwrap(), "{e}");
        let e = s
            .enrol(&idx, &eval(&format!("derived/{set}/tiny_48px.jpg")), &[("name", "tiny")])
            .err(422, "LOW_QUALITY_FACE")
            .clone();
        assert_eq!(e["measure"], "face_size", "{set} 48 px: {e}");
        assert!(e["value"].as_f64().unwrap() < e["minimum"].as_f64().unwrap(), "{e}");
    }
    assert_eq!(s.record_count(&idx), 0, "nothing was stored");

    // The originals of the same photos pass, and their quality is stored and shown.
    for set in ["deepface_img1", "compreface_004_A"] {
        let record = s.enrol_ok(&idx, &eval(&format!("derived/{set}/rgb.png")), &[("name", set)]);
        let quality = &record["images"][0]["quality"];
        assert_eq!(record["images"][0]["image_id"], record["image_ids"][0]);
        for measure in
            ["face_size", "eye_distance", "sharpness", "compression", "brightness", "yaw", "pitch", "detector_score"]
        {
            assert!(quality[measure].is_number(), "{measure} missing: {record}");
        }
        assert!(quality["compression"].as_f64().unwrap() < 1.5, "{quality}");
        let id = record["record_id"].as_str().unwrap();
        let read = s.get(&format!("/face/index/{idx}/records/{id}")).ok(200).clone();
        assert_eq!(&read["images"][0]["quality"], quality);
    }

    // Searching never refuses for quality: a low-quality probe is reported in a header.
    let q10 = eval("derived/deepface_img1/low_quality_q10.jpg");
    let r = s.search(&[&idx], &q10, &[("perform_liveness_check", "false")]);
    let matches = r.ok(200).as_array().expect("matches").clone();
    assert_eq!(matches[0]["name"], "deepface_img1", "the q10 photo still finds its original");
    assert_eq!(r.header("x-low-quality"), Some("compression"));
    assert!(r.header("x-face-quality").is_some_and(|h| h.contains("compression=")), "{:?}", r.headers);
    let r = s.search(&[&idx], &eval("derived/deepface_img1/rgb.png"), &[("perform_liveness_check", "false")]);
    r.ok(200);
    assert_eq!(r.header("x-low-quality"), None);
    assert!(r.header("x-face-quality").is_some_and(|h| h.contains("sharpness=")));
}

#[test]
fn duplicate_identities_are_found_and_refused() {
    let s = Server::start();
    let idx = s.create_index_id("duplicates");
    let other = s.create_index_id("duplicates-other");

    // Many different people, one photo each.
    let mut people = 0;
    for (n, name) in
        lfw_people().iter().filter(|p| !["Jacques_Chirac", "Bill_Frist"].contains(&p.as_str())).take(60).enumerate()
    {
        let r = s.enrol(&idx, &lfw_photos(name)[0], &[("name", name), ("id_no", &format!("ID-{n}"))]);
        if r.status == 201 {
            people += 1;
        } else {
            // Group photos and poor photos are refused; nothing else may fail.
            r.err_any(422, &["MULTIPLE_FACES", "LOW_QUALITY_FACE", "NO_FACE_DETECTED"]);
        }
    }
    assert!(people >= 40, "only {people} people enrolled");

    // One face, two identities: the planted duplicate. check_duplicates refuses it first.
    let chirac = lfw_photos("Jacques_Chirac");
    let original = s.enrol_ok(&idx, &chirac[0], &[("name", "Jacques Chirac"), ("id_no", "FR-1")]);
    let original_id = original["record_id"].as_str().unwrap().to_string();
    let form = Form::new().part("image", file_part(&chirac[1])).text("name", "Jean Dupont").text("id_no", "FR-2");
    let e = s
        .post_form(&format!("/face/index/{idx}/records?check_duplicates=true"), form)
        .err(409, "DUPLICATE_FACE")
        .clone();
    assert_eq!(e["record_id"], original_id.as_str(), "{e}");
    assert_eq!(e["image_id"], original["image_ids"][0], "{e}");
    assert!(e["match_score"].as_f64().unwrap() >= 80.0, "{e}");
    let planted = s.enrol_ok(&idx, &chirac[1], &[("name", "Jean Dupont"), ("id_no", "FR-2")]);
    let planted_id = planted["record_id"].as_str().unwrap().to_string();
    // One person enrolled twice under the same id_no is no fraud: not reported.
    let frist = lfw_photos("Bill_Frist");
    s.enrol_ok(&idx, &frist[0], &[("name", "Bill Frist"), ("id_no", "US-7")]);
    s.enrol_ok(&idx, &frist[2], &[("name", "William Frist"), ("id_no", "US-7")]);
    // A new face passes the check, and adding a record's own face again passes it too.
    let fresh = lfw_photos("Amelie_Mauresmo");
    let form = Form::new().part("image", file_part(&fresh[0])).text("name", "Amelie Mauresmo");
    let fresh_record = s.post_form(&format!("/face/index/{idx}/records?check_duplicates=true"), form).ok(201).clone();
    let fresh_id = fresh_record["record_id"].as_str().unwrap();
    let form = Form::new().part("image", file_part(&fresh[0]));
    s.post_form(&format!("/face/index/{idx}/records/{fresh_id}/images?check_duplicates=true"), form).ok(201);
    // ... but a face of another record added to this one is refused.
    let form = Form::new().part("image", file_part(&chirac[0]));
    let e = s
        .post_form(&format!("/face/index/{idx}/records/{fresh_id}/images?check_duplicates=true"), form)
        .err(409, "DUPLICATE_FACE")
        .clone();
    assert!([original_id.as_str(), planted_id.as_str()].contains(&e["record_id"].as_str().unwrap()), "{e}");

    // The job finds exactly the planted pair at a strict score.
    let job = run_job(&s, &idx, "?min_score=80");
    let groups = job["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{job}");
    let mut ids: Vec<&str> =
        groups[0]["records"].as_array().unwrap().iter().map(|r| r["record_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want = vec![original_id.as_str(), planted_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{job}");
    let pair = &groups[0]["pairs"][0];
    assert!(pair["match_score"].as_f64().unwrap() >= 80.0);
    let images: Vec<&Value> = vec![&pair["image_a"], &pair["image_b"]];
    assert!(images.contains(&&original["image_ids"][0]) && images.contains(&&planted["image_ids"][0]), "{pair}");
    assert_eq!(job["progress"]["done"], job["progress"]["total"]);
    assert_eq!(job["faces"].as_u64(), job["progress"]["total"].as_u64());
    assert!(job["same_identity_skipped"].as_u64().unwrap() >= 1, "the Frist pair is skipped: {job}");
    assert_eq!(job["status"], "done");

    // Across two indexes: the other index holds a third identity for the face.
    s.enrol_ok(&other, &chirac[0], &[("name", "J. C."), ("id_no", "XX-9")]);
    let job = run_job(&s, &other, &format!("?index_ids={idx}"));
    let groups = job["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{job}");
    assert_eq!(groups[0]["records"].as_array().unwrap().len(), 3, "{job}");

    // Unknown jobs, and jobs of another index, are 404.
    s.get(&format!("/face/index/{idx}/duplicates/no-such-job")).err(404, "JOB_NOT_FOUND");
    let other_job = job["job_id"].as_str().unwrap();
    s.get(&format!("/face/index/{idx}/duplicates/{other_job}")).err(404, "JOB_NOT_FOUND");
    s.get("/face/index/no-such-index/duplicates/x").err(404, "INDEX_NOT_FOUND");
    s.post_json("/face/index/no-such-index/duplicates", &json!({})).err(404, "INDEX_NOT_FOUND");
    s.post_json(&format!("/face/index/{idx}/duplicates?min_score=101"), &json!({})).err(400, "INVALID_PARAMETER");
    s.get(&format!("/face/index/{idx}/duplicates/x?wait=999")).err(400, "INVALID_PARAMETER");

    // Permissions: searchers and auditors never; operators on granted indexes.
    for (user, role) in [("dup-searcher", "searcher"), ("dup-auditor", "auditor"), ("dup-operator", "operator")] {
        s.post_json("/users", &json!({"username": user, "password": PASSWORD, "role": role})).ok(201);
        let r = s.send(
            format!("grant {user}"),
            s.http().put(s.url(&format!("/users/{user}/grants/{idx}"))).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)),
        );
        assert_eq!(r.status, 204, "{}", r.text);
    }
    let first_job = format!("/face/index/{idx}/duplicates/{}", job["job_id"].as_str().unwrap());
    for user in ["dup-searcher", "dup-auditor"] {
        as_user(&s, user, reqwest::Method::POST, &format!("/face/index/{idx}/duplicates")).err(403, "FORBIDDEN");
        as_user(&s, user, reqwest::Method::GET, &first_job).err(403, "FORBIDDEN");
    }
    let r = as_user(&s, "dup-operator", reqwest::Method::POST, &format!("/face/index/{idx}/duplicates"));
    let started = r.ok(202)["job_id"].as_str().unwrap().to_string();
    as_user(&s, "dup-operator", reqwest::Method::GET, &format!("/face/index/{idx}/duplicates/{started}?wait=30"))
        .ok(200);
    as_user(&s, "dup-operator", reqwest::Method::POST, &format!("/face/index/{other}/duplicates"))
        .err(403, "FORBIDDEN");

    // The start of a job is audited.
    let audit = s.get("/audit?action=duplicates.start&limit=10").ok(200).clone();
    let events = audit["events"].as_array().expect("events");
    assert!(events.iter().any(|e| e["actor"] == "dup-operator" && e["outcome"] == "ok"), "{audit}");

    // The command-line client.
    let out = Command::new(env!("CARGO_BIN_EXE_facesearch"))
        .args(["duplicates", "--index", &idx, "--min-score", "80", "--json"])
        .env("FACESEARCH_URL", &s.base)
        .env("FACESEARCH_USER", ADMIN_USER)
        .env("FACESEARCH_PASSWORD", ADMIN_PASSWORD)
        .env("FACESEARCH_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running facesearch duplicates");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let job: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(job["groups"].as_array().map(Vec::len), Some(1), "{job}");
    let out = Command::new(env!("CARGO_BIN_EXE_facesearch"))
        .args(["duplicates", "--index", &idx])
        .env("FACESEARCH_URL", &s.base)
        .env("FACESEARCH_USER", ADMIN_USER)
        .env("FACESEARCH_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("running facesearch duplicates");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 group(s)") && text.contains("Jean Dupont") && text.contains("Jacques Chirac"), "{text}");
}
