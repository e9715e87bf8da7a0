//! Sideways photos over real HTTP (issue 16, point 5): a phone photo turned 90° without
//! an EXIF tag is enrolled upright and found by an upright photo of the same person;
//! the turn is recorded in the image's quality and the search's `X-Face-Quality`
//! header; upright photos are not turned; re-embedding with another pack turns the
//! stored photo as at enrolment; an enrolment whose face no quarter turn shows
//! clearly upright is refused with `FACE_NOT_UPRIGHT`.

mod common;

use std::io::Cursor;

use common::{Server, eval, poll_reembed, read};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};

/// The default lowest score of a match (Part 1 of the API).
const DEFAULT_MIN_SCORE: f64 = 70.0;

fn no_liveness() -> [(&'static str, &'static str); 1] {
    [("perform_liveness_check", "false")]
}

/// The `rotation` of the quality of a record's first image.
fn stored_rotation(record: &Value) -> &Value {
    &record["images"][0]["quality"]["rotation"]
}

/// The `rotation=` measure of a search's `X-Face-Quality` header.
fn header_rotation(r: &common::Resp) -> String {
    let header = r.header("x-face-quality").unwrap_or_else(|| panic!("no X-Face-Quality: {:?}", r.headers));
    header
        .split("; ")
        .find_map(|m| m.strip_prefix("rotation="))
        .unwrap_or_else(|| panic!("no rotation in {header:?}"))
        .to_string()
}

#[test]
fn a_sideways_photo_is_enrolled_upright_and_found_by_the_upright_photo() {
    let s = Server::start();
    let index = s.create_index_id("sideways");
    let sideways = s.enrol_ok(
        &index,
        &eval("derived/deepface_img1/rot90_no_exif.jpg"),
        &[("name", "Angelina Jolie (sideways)"), ("reference", "sideways")],
    );
    assert_eq!(stored_rotation(&sideways), 90, "{sideways}");
    let upright = s.enrol_ok(&index, &eval("deepface/img13.jpg"), &[("name", "Mark Zuckerberg")]);
    assert_eq!(stored_rotation(&upright), 0, "{upright}");

    // The upright photo of the same person finds the sideways enrolment.
    for probe in ["deepface/img1.jpg", "deepface/img2.jpg"] {
        let r = s.search(&[&index], &eval(probe), &no_liveness());
        let matches = r.ok(200).as_array().expect("an array");
        let top = matches.first().unwrap_or_else(|| panic!("{probe}: no match: {}", r.text));
        assert_eq!(top["record_id"], sideways["record_id"], "{probe}: {}", r.text);
        let score = top["match_score"].as_f64().expect("a score");
        println!("{probe} against the sideways enrolment: match_score {score}");
        assert!(score >= DEFAULT_MIN_SCORE, "{probe}: score {score}");
        assert_eq!(header_rotation(&r), "0", "{probe} is upright");
    }

    // Searching with the sideways photo turns it too, and says so; the liveness check
    // (on by default) judges the upright face.
    let r = s.search(&[&index], &eval("derived/deepface_img1/rot90_no_exif.jpg"), &[]);
    let matches = r.ok(200).as_array().expect("an array");
    assert_eq!(matches[0]["record_id"], sideways["record_id"], "{}", r.text);
    assert_eq!(header_rotation(&r), "90");
    assert!(r.header("x-liveness-score").is_some(), "{:?}", r.headers);
}

/// A sideways enrolment moved to the other pack: the job finds the face in the stored
/// photo turned as at enrolment (the stored box is in the photo's own pixels), and the
/// upright photo finds the record under the new pack too.
#[test]
fn a_sideways_enrolment_survives_a_move_to_another_pack() {
    let s = Server::start();
    let index = s.create_index_id("sideways-reembed");
    let record = s.enrol_ok(&index, &eval("derived/deepface_img1/rot90_no_exif.jpg"), &[("name", "sideways")]);
    assert_eq!(stored_rotation(&record), 90, "{record}");
    s.post_json(&format!("/face/index/{index}/reembed"), &json!({"pack": "insightface"})).ok(202);
    let job = poll_reembed(&s, &index, |j| j["state"] != "running");
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!((job["done"].as_u64(), job["failed"].as_u64()), (Some(1), Some(0)), "{job}");
    assert_eq!(s.index(&index).ok(200)["pack"], "insightface");
    let r = s.search(&[&index], &eval("deepface/img1.jpg"), &no_liveness());
    let matches = r.ok(200).as_array().expect("an array");
    assert_eq!(matches.first().map(|m| &m["record_id"]), Some(&record["record_id"]), "{}", r.text);
    let score = matches[0]["match_score"].as_f64().expect("a score");
    assert!(score >= DEFAULT_MIN_SCORE, "score {score} under the insightface pack");
}

/// `image` turned by `degrees` (anticlockwise) about its centre on a black canvas big
/// enough to hold it, nearest-neighbour: a face tilted between the quarter turns.
fn tilted(image: &RgbImage, degrees: f32) -> RgbImage {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let side = w.hypot(h).ceil() as u32;
    let (cx, cy, centre) = (w / 2.0, h / 2.0, side as f32 / 2.0);
    RgbImage::from_fn(side, side, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - centre, y as f32 + 0.5 - centre);
        let (sx, sy) = (cos * dx + sin * dy + cx, -sin * dx + cos * dy + cy);
        if sx >= 0.0 && sy >= 0.0 && sx < w && sy < h { *image.get_pixel(sx as u32, sy as u32) } else { Rgb([0, 0, 0]) }
    })
}

#[test]
fn an_enrolment_no_quarter_turn_makes_upright_is_refused() {
    let s = Server::start();
    let index = s.create_index_id("tilted");
    let photo = image::load_from_memory(&read(&eval("deepface/img1.jpg"))).expect("a photo").to_rgb8();
    // Upside down and 45° off: the nearest quarter turn still leaves the face 45° off.
    let mut png = Vec::new();
    DynamicImage::ImageRgb8(tilted(&photo, 135.0)).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).expect("PNG");
    let path = common::temp_dir();
    let file = path.path().join("tilted-135.png");
    std::fs::write(&file, &png).expect("writing the tilted photo");
    let r = s.enrol(&index, &file, &[("name", "tilted")]);
    let e = r.err(422, "FACE_NOT_UPRIGHT");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("upright")), "{}", r.text);
    assert_eq!(e["max_roll"], 45.0, "{}", r.text);
    assert!(e["roll"].is_number(), "{}", r.text);
    assert_eq!(s.record_count(&index), 0);
    // A search with it is not refused: searches only report quality.
    let r = s.search(&[&index], &file, &no_liveness());
    r.ok(200);
}
