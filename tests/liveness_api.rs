//! The liveness decision over HTTP: a judged spoof is refused with its score and the
//! threshold it was held to, a live capture passes with its score in a header, and
//! the threshold is the deployment's (`serve --liveness-threshold`).

mod common;

use common::{Server, ServerOptions, eval};

const REPLAY: &str = "fullframe-liveness/Codersworld-23_Antispoof/spoof/1743175325991858.jpg";
const LIVE: &str = "deepface/img2.jpg";

fn score_of(e: &serde_json::Value) -> f64 {
    e["liveness_score"].as_f64().unwrap_or_else(|| panic!("no liveness_score in {e}"))
}

#[test]
fn a_replay_is_refused_with_its_score_and_the_default_threshold() {
    let s = Server::start();
    let index = s.create_index_id("liveness-default");
    let r = s.search(&[&index], &eval(REPLAY), &[]);
    let e = r.err(422, "LIVENESS_CHECK_FAILED");
    assert_eq!(e["threshold"].as_f64(), Some(0.5), "{}", r.text);
    let score = score_of(e);
    assert!((0.0..0.5).contains(&score), "{}", r.text);

    let r = s.search(&[&index], &eval(LIVE), &[]);
    r.ok(200);
    let header = r.headers.get("x-liveness-score").expect("X-Liveness-Score on a judged search");
    let live: f64 = header.to_str().unwrap().parse().unwrap();
    assert!((0.5..=1.0).contains(&live), "{live}");
}

#[test]
fn the_threshold_is_the_deployments() {
    // The live photo scores about 0.98: a deployment demanding 0.99 refuses it.
    let s = Server::start_with(ServerOptions::default().args(&["--liveness-threshold", "0.99"]));
    let index = s.create_index_id("liveness-strict");
    let r = s.search(&[&index], &eval(LIVE), &[]);
    let e = r.err(422, "LIVENESS_CHECK_FAILED");
    assert_eq!(e["threshold"].as_f64(), Some(0.99), "{}", r.text);
    let score = score_of(e);
    assert!(score > 0.5 && score < 0.99, "{}", r.text);
    // Off, the same photo is searched.
    s.search(&[&index], &eval(LIVE), &[("perform_liveness_check", "false")]).ok(200);
}

/// A search as `user` (not the admin) over `index`, with `perform_liveness_check` in
/// the query string when given.
fn search_as(s: &Server, user: (&str, &str), index: &str, photo: &str, liveness: Option<&str>) -> common::Resp {
    let path = match liveness {
        Some(v) => format!("/face/search?perform_liveness_check={v}"),
        None => "/face/search".to_string(),
    };
    let form = reqwest::blocking::multipart::Form::new()
        .part("source_image", common::file_part(&eval(photo)))
        .text("target_index_ids", index.to_string());
    let req = common::with_form(s.http().post(s.url(&path)).basic_auth(user.0, Some(user.1)), form);
    s.send(format!("POST {path} as {}", user.0), req)
}

#[test]
fn a_deployment_can_make_liveness_mandatory_for_everyone_but_admins() {
    let s = Server::start_with(ServerOptions::default().args(&["--require-liveness"]));
    let index = s.create_index_id("liveness-required");
    s.enrol_ok(&index, &eval("deepface/img1.jpg"), &[("name", "Angelina Jolie")]);
    let searcher = ("gate-searcher", "gate-searcher-Password-1");
    let user =
        serde_json::json!({"username": searcher.0, "password": searcher.1, "role": "searcher", "grants": [index]});
    s.post_json("/users", &user).ok(201);

    // Skipping the check is refused for a searcher, whatever the photo, before any work.
    for photo in [LIVE, "compreface/format_tests/truncated.jpg"] {
        let r = search_as(&s, searcher, &index, photo, Some("false"));
        let e = r.err(403, "LIVENESS_REQUIRED");
        assert_eq!(e["parameter"], "perform_liveness_check", "{}", r.text);
        assert!(r.header("x-liveness-score").is_none() && r.header("x-face-quality").is_none(), "{:?}", r.headers);
    }
    search_as(&s, searcher, &index, LIVE, Some("0")).err(403, "LIVENESS_REQUIRED");
    // With the check (by default or asked for) the searcher searches as usual.
    let r = search_as(&s, searcher, &index, LIVE, None);
    assert!(!r.ok(200).as_array().expect("matches").is_empty(), "{}", r.text);
    assert!(r.header("x-liveness-score").is_some());
    search_as(&s, searcher, &index, LIVE, Some("true")).ok(200);
    search_as(&s, searcher, &index, REPLAY, None).err(422, "LIVENESS_CHECK_FAILED");
    // An admin may still skip it.
    s.search(&[&index], &eval(LIVE), &[("perform_liveness_check", "false")]).ok(200);

    // The refusals are on record like any refused search.
    let r = s.get("/audit?action=face.search&limit=100");
    let events = r.ok(200)["events"].as_array().expect("events").clone();
    let refused: Vec<_> = events.iter().filter(|e| e["outcome"] == "LIVENESS_REQUIRED").collect();
    assert_eq!(refused.len(), 3, "{events:?}");
    assert!(refused.iter().all(|e| e["actor"] == searcher.0 && e["index_ids"] == serde_json::json!([index])));
    assert!(refused.iter().all(|e| e["details"]["perform_liveness_check"] == false), "{refused:?}");
}
