//! An acknowledged enrolment survives `kill -9`: the server is killed with SIGKILL
//! right after it answered 201, and a new server on the same data directory still has
//! the record, its image (byte for byte) and its face vector (a search finds it).

mod common;

use base64::Engine as _;
use common::{Server, eval, lfw_photos, temp_dir};
use serde_json::Value;

struct Enrolled {
    name: String,
    record_id: String,
    image_id: String,
    photo: std::path::PathBuf,
    probe: std::path::PathBuf,
}

fn check_survivor(s: &Server, index_id: &str, e: &Enrolled) {
    let rec = s.get(&format!("/face/index/{index_id}/records/{}", e.record_id)).ok(200).clone();
    assert_eq!(rec["name"], e.name.as_str());
    assert_eq!(rec["image_ids"], serde_json::json!([e.image_id.as_str()]));

    let r = s.download(&e.image_id);
    let d = r.ok(200);
    assert_eq!(d["file_id"], e.image_id.as_str());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(d["file_base64"].as_str().expect("file_base64"))
        .expect("base64");
    assert!(bytes == common::read(&e.photo), "{}: the image came back different after kill -9", e.name);

    let matches = s.search_ok(&[index_id], &e.probe, &[("perform_liveness_check", "false")]);
    assert_eq!(
        matches.first().map(|m| &m["record_id"]),
        Some(&Value::from(e.record_id.as_str())),
        "{}: not found by search after kill -9: {matches:?}",
        e.name
    );
}

#[test]
fn acknowledged_enrolments_survive_kill_9() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let people: [(&str, std::path::PathBuf, std::path::PathBuf); 3] = [
        {
            let p = lfw_photos("Paul_Burrell");
            ("Paul Burrell", p[0].clone(), p[1].clone())
        },
        ("Jack Dorsey", eval("deepface/img16.jpg"), eval("deepface/img17.jpg")),
        {
            let p = lfw_photos("Sergey_Lavrov");
            ("Sergey Lavrov", p[0].clone(), p[1].clone())
        },
    ];

    let mut server = Server::start_in(&data);
    let index_id = server.create_index_id("durable");
    let mut done: Vec<Enrolled> = Vec::new();
    for (name, photo, probe) in people {
        let rec = server.enrol_ok(&index_id, &photo, &[("name", name)]);
        // SIGKILL immediately after the 201: no graceful shutdown, no flush.
        server.kill();
        done.push(Enrolled {
            name: name.to_string(),
            record_id: rec["record_id"].as_str().expect("record_id").to_string(),
            image_id: rec["image_ids"][0].as_str().expect("image id").to_string(),
            photo,
            probe,
        });
        server = Server::start_in(&data);
        assert_eq!(server.record_count(&index_id), done.len() as u64, "record_count after restart");
        for e in &done {
            check_survivor(&server, &index_id, e);
        }
    }
    drop(server);
}
