//! The vector index is saved at shutdown and read back at the next start instead of
//! every stored vector; after a crash (SIGKILL, so the saved copy is stale) the server
//! notices the mismatch with the store and rebuilds from it — nothing enrolled or
//! deleted in between is lost or resurrected.

mod common;

use common::{Server, lfw_photos, temp_dir};
use serde_json::Value;

fn top_record(s: &Server, index_id: &str, probe: &std::path::Path) -> Option<String> {
    let matches = s.search_ok(&[index_id], probe, &[("perform_liveness_check", "false")]);
    matches.first().and_then(|m| m["record_id"].as_str()).map(str::to_string)
}

#[test]
fn the_index_is_read_from_its_snapshot_and_rebuilt_after_a_crash() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let people = ["Paul_Burrell", "Sergey_Lavrov", "Vicente_Fox", "Jennifer_Capriati"];
    let photos: Vec<Vec<std::path::PathBuf>> = people.iter().map(|p| lfw_photos(p)).collect();

    let s = Server::start_in(&data);
    assert!(s.ready_line.contains("0 faces read from the store"), "{}", s.ready_line);
    let index_id = s.create_index_id("snap");
    let mut ids = Vec::new();
    for (name, p) in people.iter().zip(&photos).take(3) {
        let r = s.enrol_ok(&index_id, &p[0], &[("name", name)]);
        ids.push(r["record_id"].as_str().expect("record_id").to_string());
    }
    s.stop();
    assert!(data.join("vectors/open/CURRENT").exists(), "a graceful stop saves the index");

    // Restart: the snapshot matches the store and is used.
    let s = Server::start_in(&data);
    assert!(s.ready_line.contains("3 faces read from the snapshot"), "{}", s.ready_line);
    for (i, p) in photos.iter().take(3).enumerate() {
        assert_eq!(top_record(&s, &index_id, &p[1]).as_ref(), Some(&ids[i]));
    }
    // Changes after the save, then a crash: the snapshot is stale.
    let fourth = s.enrol_ok(&index_id, &photos[3][0], &[("name", "Jennifer Capriati")]);
    let fourth = fourth["record_id"].as_str().expect("record_id").to_string();
    assert_eq!(s.delete(&format!("/face/index/{index_id}/records/{}", ids[0])).status, 204);
    // A deleted face must not outlive its record in a saved copy of the index.
    assert!(!data.join("vectors/open/CURRENT").exists(), "the snapshot is deleted with a face");
    s.kill();

    let s = Server::start_in(&data);
    assert!(s.ready_line.contains("3 faces read from the store"), "stale snapshot rebuilt: {}", s.ready_line);
    assert_eq!(top_record(&s, &index_id, &photos[3][1]), Some(fourth));
    assert_ne!(top_record(&s, &index_id, &photos[0][1]).as_ref(), Some(&ids[0]), "a deleted record stays deleted");
    assert_eq!(top_record(&s, &index_id, &photos[1][1]).as_ref(), Some(&ids[1]));
    s.stop();

    // A damaged snapshot is never trusted: it is rebuilt from the store.
    // (CURRENT names the snapshot on its first line; its second is the manifest's digest.)
    let current = std::fs::read_to_string(data.join("vectors/open/CURRENT")).expect("CURRENT");
    let name = current.lines().next().expect("a snapshot name");
    std::fs::write(data.join("vectors/open").join(name).join("manifest.json"), b"{not json").unwrap();
    let s = Server::start_in(&data);
    assert!(s.ready_line.contains("3 faces read from the store"), "{}", s.ready_line);
    let listed: Value = s.index(&index_id).ok(200).clone();
    assert_eq!(listed["record_count"], 3);
    assert_eq!(top_record(&s, &index_id, &photos[1][1]).as_ref(), Some(&ids[1]));
}
