//! The saved vector index is a derived copy of the store, and a copy that was changed
//! on disk between two runs of the server is never trusted: the server is stopped, the
//! snapshot damaged (two rows swapped, random bytes in rows, the file truncated, the
//! manifest edited), and the next start must notice (digests), say why in its log,
//! rebuild the index from the store, answer every search exactly as before the damage,
//! and write the next snapshot from the rebuilt index, never from the damaged files.
//!
//! And what the server writes under a data directory that an administrator made
//! beforehand with a looser mode is owner-only all the same (files 0600, directories
//! 0700), with a warning about the directory itself.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Server, ServerOptions, lfw_photos, temp_dir};
use rand::{Rng, SeedableRng};
use serde_json::Value;

const PEOPLE: [&str; 4] = ["Paul_Burrell", "Sergey_Lavrov", "Vicente_Fox", "Jennifer_Capriati"];

/// The best match of a search: record, score and similarity.
#[derive(Debug, Clone, PartialEq)]
struct Top {
    record_id: String,
    match_score: f64,
    similarity: f64,
}

fn top(s: &Server, index_id: &str, probe: &Path) -> Option<Top> {
    let matches = s.search_ok(&[index_id], probe, &[("perform_liveness_check", "false")]);
    matches.first().map(|m: &Value| Top {
        record_id: m["record_id"].as_str().expect("record_id").to_string(),
        match_score: m["match_score"].as_f64().expect("match_score"),
        similarity: m["similarity"].as_f64().expect("similarity"),
    })
}

/// Every search answers as it did before the damage: the same person, the same score.
#[track_caller]
fn check_searches(s: &Server, index_id: &str, probes: &[PathBuf], expected: &[Top], when: &str) {
    for (probe, want) in probes.iter().zip(expected) {
        let got = top(s, index_id, probe).unwrap_or_else(|| panic!("{when}: no match for {}", probe.display()));
        assert_eq!(got.record_id, want.record_id, "{when}: {} found another person: {got:?}", probe.display());
        assert_eq!(got.match_score, want.match_score, "{when}: {}: score changed: {got:?}", probe.display());
        assert!((got.similarity - want.similarity).abs() <= 1e-6, "{when}: {}: {got:?} vs {want:?}", probe.display());
        assert!((-1.0..=1.0).contains(&got.similarity));
    }
}

/// The directory of the snapshot `vectors/open/CURRENT` names now.
fn current_snapshot(data: &Path) -> PathBuf {
    let pack = data.join("vectors/open");
    let current = std::fs::read_to_string(pack.join("CURRENT")).expect("vectors/open/CURRENT");
    pack.join(current.lines().next().expect("a snapshot name").trim())
}

/// What the current snapshot holds, by image: (index, record, the vector's bytes).
fn snapshot_rows(data: &Path) -> BTreeMap<String, (String, String, Vec<u8>)> {
    let snap = current_snapshot(data);
    let manifest: Value = serde_json::from_slice(&common::read(&snap.join("manifest.json"))).expect("manifest");
    let dim = manifest["dim"].as_u64().expect("dim") as usize;
    let mut rows = BTreeMap::new();
    for c in manifest["collections"].as_array().expect("collections") {
        let stem = c["stem"].as_str().expect("stem");
        let vectors = common::read(&snap.join(format!("{stem}.vec")));
        let ids = common::read(&snap.join(format!("{stem}.ids")));
        let text = |at: &mut usize| {
            let len = u32::from_le_bytes(ids[*at..*at + 4].try_into().unwrap()) as usize;
            let s = String::from_utf8(ids[*at + 4..*at + 4 + len].to_vec()).expect("UTF-8 id");
            *at += 4 + len;
            s
        };
        let mut at = 0;
        for row in vectors.chunks_exact(dim * 4) {
            at += 8; // graph key
            let image = text(&mut at);
            let record = text(&mut at);
            rows.insert(image, (c["name"].as_str().expect("name").to_string(), record, row.to_vec()));
        }
    }
    rows
}

type Damage = fn(&Path, &mut rand::rngs::StdRng);

fn swap_two_rows(snap: &Path, _: &mut rand::rngs::StdRng) {
    // Same size, each row still of unit length: only a digest tells.
    let path = snap.join("c0.vec");
    let mut bytes = common::read(&path);
    let row = bytes.len() / PEOPLE.len();
    let (first, rest) = bytes.split_at_mut(row);
    first.swap_with_slice(&mut rest[..row]);
    std::fs::write(&path, bytes).unwrap();
}

fn random_bytes_in_rows(snap: &Path, rng: &mut rand::rngs::StdRng) {
    let path = snap.join("c0.vec");
    let mut bytes = common::read(&path);
    let row = bytes.len() / PEOPLE.len();
    rng.fill(&mut bytes[row..row * 3]);
    std::fs::write(&path, bytes).unwrap();
}

fn truncate(snap: &Path, _: &mut rand::rngs::StdRng) {
    let path = snap.join("c0.vec");
    let bytes = common::read(&path);
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
}

fn edit_manifest(snap: &Path, _: &mut rand::rngs::StdRng) {
    // Still valid JSON of the right shape: the index's vectors now belong to no index.
    let path = snap.join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&common::read(&path)).unwrap();
    manifest["collections"][0]["name"] = "another-index".into();
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

#[test]
fn a_snapshot_corrupted_on_disk_between_two_server_runs_is_rebuilt_from_the_store() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let photos: Vec<Vec<PathBuf>> = PEOPLE.iter().map(|p| lfw_photos(p)).collect();
    let probes: Vec<PathBuf> = photos.iter().map(|p| p[1].clone()).collect();

    let s = Server::start_in(&data);
    let index_id = s.create_index_id("integrity");
    let mut ids = Vec::new();
    for (name, p) in PEOPLE.iter().zip(&photos) {
        let r = s.enrol_ok(&index_id, &p[0], &[("name", name)]);
        ids.push(r["record_id"].as_str().expect("record_id").to_string());
    }
    let expected: Vec<Top> = probes.iter().map(|p| top(&s, &index_id, p).expect("a match")).collect();
    for (t, id) in expected.iter().zip(&ids) {
        assert_eq!(&t.record_id, id, "each probe finds its own person before any damage");
    }
    s.stop();
    let original = snapshot_rows(&data);
    assert_eq!(original.len(), PEOPLE.len());

    // An intact snapshot is used.
    let s = Server::start_in(&data);
    assert!(s.ready_line.contains("4 faces read from the snapshot"), "{}", s.ready_line);
    check_searches(&s, &index_id, &probes, &expected, "intact snapshot");
    s.kill();

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5AFE_5A4E);
    let damages: [(&str, Damage, &str); 4] = [
        ("two rows swapped", swap_two_rows, "c0.vec: SHA-256 digest"),
        ("random bytes in rows", random_bytes_in_rows, "c0.vec: SHA-256 digest"),
        ("truncated", truncate, "c0.vec: SHA-256 digest"),
        ("manifest edited", edit_manifest, "manifest.json: SHA-256 digest"),
    ];
    for (round, (what, damage, reason)) in damages.into_iter().enumerate() {
        let damaged = current_snapshot(&data);
        damage(&damaged, &mut rng);
        let log = dir.path().join(format!("server-{round}.log"));
        let s = Server::start_with(ServerOptions::default().data_dir(&data).stderr_to(&log));
        check_searches(&s, &index_id, &probes, &expected, what);
        assert!(s.ready_line.contains("4 faces read from the store"), "{what}: {}", s.ready_line);
        let logged = std::fs::read_to_string(&log).expect("the server's log");
        let warning = logged
            .lines()
            .find(|l| l.contains("vector index snapshot ignored"))
            .unwrap_or_else(|| panic!("{what}: no warning logged:\n{logged}"));
        assert!(warning.contains("WARN") && warning.contains(reason), "{what}: the reason is not given: {warning}");

        // The snapshot on disk is rewritten, from the store: every vector as enrolled.
        let rewritten = current_snapshot(&data);
        assert_ne!(rewritten, damaged, "{what}: no new snapshot");
        assert!(!damaged.exists(), "{what}: the damaged snapshot is left on disk");
        assert!(snapshot_rows(&data) == original, "{what}: the snapshot was rewritten from the damaged copy");
        if round % 2 == 0 { s.kill() } else { s.stop() }
    }

    // Later versions saved and read back are right too: nothing of the damage survived.
    let s = Server::start_in(&data);
    assert!(s.ready_line.contains("4 faces read from the snapshot"), "{}", s.ready_line);
    let fifth = lfw_photos("John_Bolton");
    let r = s.enrol_ok(&index_id, &fifth[0], &[("name", "John Bolton")]);
    let fifth_id = r["record_id"].as_str().expect("record_id").to_string();
    s.stop();
    let s = Server::start_in(&data);
    assert!(s.ready_line.contains("5 faces read from the snapshot"), "{}", s.ready_line);
    check_searches(&s, &index_id, &probes, &expected, "after a new version");
    assert_eq!(top(&s, &index_id, &fifth[1]).map(|t| t.record_id), Some(fifth_id));
    let now = snapshot_rows(&data);
    for (image, row) in &original {
        assert_eq!(now.get(image), Some(row), "image {image} changed in the saved index");
    }
}

/// Every file under `dir` with a mode other than 0600 and every directory other than
/// 0700 (`dir` itself is not looked at).
#[cfg(unix)]
fn loose_modes(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut loose = Vec::new();
    for entry in std::fs::read_dir(dir).expect("listing the data directory") {
        let entry = entry.expect("an entry");
        let meta = entry.metadata().expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            loose.push(format!("{} {mode:04o}", entry.path().display()));
        }
        if meta.is_dir() {
            loose.extend(loose_modes(&entry.path()));
        }
    }
    loose
}

#[cfg(unix)]
#[test]
fn files_under_a_data_directory_made_0755_beforehand_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let data = dir.path().join("data");
    // As an administrator (or an older version, for the saved index) might leave them.
    std::fs::create_dir_all(data.join("vectors/open")).unwrap();
    for d in [data.clone(), data.join("vectors"), data.join("vectors/open")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = dir.path().join("server.log");
    let s = Server::start_with(ServerOptions::default().data_dir(&data).stderr_to(&log));
    let index_id = s.create_index_id("modes");
    s.enrol_ok(&index_id, &lfw_photos("Paul_Burrell")[0], &[("name", "Paul Burrell")]);
    // While running (the database's WAL files exist) and after the stop (the final save).
    assert_eq!(loose_modes(&data), Vec::<String>::new(), "while running");
    s.stop();
    assert!(current_snapshot(&data).join("c0.vec").is_file(), "the index was saved");
    assert_eq!(loose_modes(&data), Vec::<String>::new(), "after the stop");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "the data directory's own mode is the administrator's");
    let logged = std::fs::read_to_string(&log).expect("the server's log");
    assert!(
        logged.lines().any(|l| l.contains("WARN") && l.contains("data directory is accessible to group or other")),
        "no warning about the data directory's mode:\n{logged}"
    );
}
