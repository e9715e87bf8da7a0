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
