use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn unit(dim: usize, hot: usize) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[hot] = 1.0;
    v
}

/// Deterministic pseudo-random unit vectors (splitmix64), no extra dependency.
fn random_unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) as f64 / u64::MAX as f64 - 0.5) as f32
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn approximate(min_rows: usize) -> VectorConfig {
    VectorConfig { ann_min_rows: min_rows, ..VectorConfig::default() }
}

#[test]
fn search_ranks_dedups_and_filters() {
    for config in [VectorConfig::default(), approximate(1)] {
        let idx = VectorIndex::with_config(4, config);
        idx.insert("db1", "alice", "a1", &unit(4, 0)).unwrap();
        idx.insert("db1", "alice", "a2", &[0.8, 0.6, 0.0, 0.0]).unwrap();
        idx.insert("db1", "bob", "b1", &[0.6, 0.8, 0.0, 0.0]).unwrap();
        idx.insert("db2", "carol", "c1", &[0.9, 0.0, 0.435_889_9, 0.0]).unwrap();
        idx.insert("db2", "dave", "d1", &unit(4, 3)).unwrap();

        let hits = idx.search(&unit(4, 0), &["db1", "db2"], 0.5, 10).unwrap();
        let got: Vec<(&str, &str)> = hits.iter().map(|h| (h.record_id.as_str(), h.image_id.as_str())).collect();
        assert_eq!(got, vec![("alice", "a1"), ("carol", "c1"), ("bob", "b1")], "one hit per record, best image");
        assert_eq!(idx.search(&unit(4, 0), &["db1", "db2"], 0.5, 2).unwrap().len(), 2);
        assert_eq!(idx.search(&unit(4, 0), &["db2"], 0.95, 10).unwrap().len(), 0);
        assert!(idx.search(&unit(4, 0), &["nope"], -1.0, 10).unwrap().is_empty());
        assert_eq!(idx.search(&[1.0], &["db1"], 0.0, 1), Err(VectorError::Dimension { expected: 4, got: 1 }));
    }
}

#[test]
fn a_record_with_many_images_does_not_hide_the_others() {
    // 100 near-identical images of one record rank above everyone else: the search
    // must widen past them to return the next records.
    let idx = VectorIndex::new(2);
    for i in 0..100 {
        idx.insert("db", "many", &format!("m{i}"), &[1.0, 0.0]).unwrap();
    }
    idx.insert("db", "other", "o1", &[0.9, 0.435_889_9]).unwrap();
    idx.insert("db", "third", "t1", &[0.0, 1.0]).unwrap();
    let hits = idx.search(&[1.0, 0.0], &["db"], -1.0, 3).unwrap();
    let records: Vec<&str> = hits.iter().map(|h| h.record_id.as_str()).collect();
    assert_eq!(records, vec!["many", "other", "third"]);
}

#[test]
fn deletes_are_reflected_immediately() {
    for config in [VectorConfig::default(), approximate(1)] {
        let idx = VectorIndex::with_config(2, config);
        for i in 0..5 {
            idx.insert("db", &format!("r{i}"), &format!("i{i}"), &[1.0, i as f32 * 0.01]).unwrap();
        }
        assert_eq!(idx.remove_images("db", &["i0".into(), "i3".into(), "zzz".into()]), 2);
        assert_eq!(idx.len("db"), 3);
        let ids: Vec<String> =
            idx.search(&[1.0, 0.0], &["db"], -1.0, 10).unwrap().into_iter().map(|h| h.image_id).collect();
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains(&"i0".to_string()) && !ids.contains(&"i3".to_string()));
        // The moved row still maps to its own vector.
        idx.insert("db", "r4", "i4", &[0.0, 1.0]).unwrap();
        let top = idx.search(&[0.0, 1.0], &["db"], 0.99, 1).unwrap();
        assert_eq!(top[0].image_id, "i4");
        idx.remove_collection("db");
        assert_eq!(idx.len("db"), 0);
    }
}

/// Recall@10 of the graph against the exact scan on clustered vectors (identities
/// with several noisy images each), the shape of a face gallery.
#[test]
fn approximate_search_recall_is_measured_against_exact() {
    let dim = 64;
    let (exact, approx) = (VectorIndex::new(dim), VectorIndex::with_config(dim, approximate(1000)));
    let mut rows = Vec::new();
    for person in 0..1500u64 {
        let centre = random_unit(person, dim);
        for shot in 0..3u64 {
            let noise = random_unit(1_000_000 + person * 7 + shot, dim);
            let mut v: Vec<f32> = centre.iter().zip(&noise).map(|(c, n)| c + 0.6 * n).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            rows.push((format!("p{person}"), format!("p{person}-{shot}"), v));
        }
    }
    let bulk = rows.iter().map(|(r, i, v)| ("db", r.as_str(), i.as_str(), v.as_slice()));
    approx.insert_bulk(bulk).unwrap();
    for (r, i, v) in &rows {
        exact.insert("db", r, i, v).unwrap();
    }
    assert!(approx.stats()["db"].approximate && !exact.stats()["db"].approximate);
    let (mut found, mut wanted) = (0, 0);
    for q in 0..100u64 {
        let query = &rows[(q * 37 % rows.len() as u64) as usize].2;
        let truth: Vec<String> =
            exact.search(query, &["db"], -1.0, 10).unwrap().into_iter().map(|h| h.record_id).collect();
        let scanned = approx.search_exact(query, &["db"], -1.0, 10).unwrap();
        assert_eq!(scanned.into_iter().map(|h| h.record_id).collect::<Vec<_>>(), truth);
        let got = approx.search(query, &["db"], -1.0, 10).unwrap();
        // Similarities are exact even when found through the graph.
        for h in &got {
            let row = rows.iter().find(|(_, i, _)| *i == h.image_id).unwrap();
            assert!((h.similarity - dot(query, &row.2)).abs() < 1e-5);
        }
        wanted += truth.len();
        found += got.iter().filter(|h| truth.contains(&h.record_id)).count();
    }
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.97, "recall@10 {recall}");
}

#[test]
fn the_graph_is_built_when_a_collection_grows_past_the_threshold() {
    let idx = VectorIndex::with_config(8, approximate(50));
    for i in 0..49u64 {
        idx.insert("db", &format!("r{i}"), &format!("i{i}"), &random_unit(i, 8)).unwrap();
    }
    assert!(!idx.stats()["db"].approximate);
    idx.insert("db", "r49", "i49", &random_unit(49, 8)).unwrap();
    assert!(idx.stats()["db"].approximate);
    // Inserted after the build: found through the graph.
    idx.insert("db", "late", "late", &unit(8, 2)).unwrap();
    assert_eq!(idx.search(&unit(8, 2), &["db"], 0.99, 1).unwrap()[0].record_id, "late");
}

#[test]
fn snapshot_round_trip_keeps_every_vector_and_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let idx = VectorIndex::with_config(16, approximate(100));
    for i in 0..300u64 {
        idx.insert(if i % 3 == 0 { "small" } else { "big" }, &format!("r{i}"), &format!("i{i}"), &random_unit(i, 16))
            .unwrap();
    }
    idx.remove_images("big", &["i1".into(), "i2".into()]);
    idx.save(dir.path(), 42).unwrap();
    // A second save replaces the first and leaves one snapshot directory.
    idx.save(dir.path(), 43).unwrap();
    let snaps = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("snap-"));
    assert_eq!(snaps.count(), 1);

    let (loaded, tag) = VectorIndex::load(dir.path(), 16, approximate(100)).unwrap().unwrap();
    assert_eq!(tag, 43);
    for (name, stats) in idx.stats() {
        let got = loaded.stats()[&name];
        assert_eq!((got.vectors, got.approximate), (stats.vectors, stats.approximate), "{name}");
    }
    for i in (0..300u64).filter(|i| *i != 1 && *i != 2) {
        let q = random_unit(i, 16);
        let c = if i % 3 == 0 { "small" } else { "big" };
        let hit = &loaded.search(&q, &[c], 0.999, 1).unwrap()[0];
        assert_eq!(hit.image_id, format!("i{i}"));
    }
    assert!(loaded.search(&random_unit(1, 16), &["big"], 0.999, 1).unwrap().is_empty(), "deleted stays deleted");
    // Keys go on from where they were: a new image after loading is searchable.
    loaded.insert("big", "new", "new", &unit(16, 5)).unwrap();
    assert_eq!(loaded.search(&unit(16, 5), &["big"], 0.99, 1).unwrap()[0].image_id, "new");
}

#[test]
fn a_removed_snapshot_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let idx = VectorIndex::new(4);
    idx.insert("db", "r", "i", &unit(4, 1)).unwrap();
    idx.save(dir.path(), 1).unwrap();
    snapshot::remove(dir.path()).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(VectorIndex::load(dir.path(), 4, VectorConfig::default()).unwrap().is_none());
    snapshot::remove(&dir.path().join("never-made")).unwrap();
}

#[test]
fn a_damaged_or_missing_snapshot_is_reported_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    assert!(VectorIndex::load(dir.path(), 4, VectorConfig::default()).unwrap().is_none());
    let idx = VectorIndex::new(4);
    idx.insert("db", "r", "i", &unit(4, 1)).unwrap();
    idx.save(dir.path(), 7).unwrap();
    assert!(VectorIndex::load(dir.path(), 8, VectorConfig::default()).is_err(), "other dimension");
    let snap = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    // CURRENT: the snapshot's name, then the manifest's digest.
    let vec_file = dir.path().join(snap.lines().next().unwrap()).join("c0.vec");
    let bytes = std::fs::read(&vec_file).unwrap();
    std::fs::write(&vec_file, &bytes[..bytes.len() - 4]).unwrap();
    assert!(matches!(VectorIndex::load(dir.path(), 4, VectorConfig::default()), Err(VectorError::Snapshot(_))));
}

fn random_unit_ds(dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[test]
fn neighbours_equal_the_naive_all_pairs_search() {
    let (dim, rows) = (16, 700); // several query blocks, a partial last one
    let mut vectors = Vec::new();
    for i in 0..rows {
        // Every 50th row nearly repeats the row before it.
        let v = if i % 50 == 1 {
            let mut v: Vec<f32> = vectors[(i - 1) * dim..i * dim].to_vec();
            v[0] += 0.05;
            v
        } else {
            random_unit_ds(dim, i as u64)
        };
        vectors.extend(v);
    }
    // Rows 0 and 1 belong to one group: their pair is skipped.
    let group: Vec<u32> = (0..rows as u32).map(|i| if i == 1 { 0 } else { i }).collect();
    let min = 0.6;
    let mut naive = Vec::new();
    for a in 0..rows {
        for b in a + 1..rows {
            let s = dot(&vectors[a * dim..(a + 1) * dim], &vectors[b * dim..(b + 1) * dim]);
            if s >= min && group[a] != group[b] {
                naive.push((a, b));
            }
        }
    }
    let counted = AtomicUsize::new(0);
    for threads in [1, 3] {
        counted.store(0, Ordering::Relaxed);
        let progress = |n: usize| {
            counted.fetch_add(n, Ordering::Relaxed);
        };
        let (found, truncated) = neighbours(&vectors, dim, &group, min, 1_000_000, threads, &progress);
        assert!(!truncated);
        let mut got: Vec<(usize, usize)> = found.iter().map(|n| (n.a, n.b)).collect();
        got.sort_unstable();
        assert_eq!(got, naive, "{threads} threads");
        assert!(got.contains(&(50, 51)) && !got.contains(&(0, 1)));
        assert!(found.windows(2).all(|w| w[0].similarity >= w[1].similarity), "best first");
        assert_eq!(counted.load(Ordering::Relaxed), rows);
    }
    let (capped, truncated) = neighbours(&vectors, dim, &group, min, 3, 2, &|_| {});
    assert!(truncated && capped.len() == 3);
}

#[test]
fn a_snapshot_copies_the_rows() {
    let idx = VectorIndex::new(2);
    idx.insert("db", "r1", "i1", &[1.0, 0.0]).unwrap();
    idx.insert("db", "r2", "i2", &[0.0, 1.0]).unwrap();
    let snap = idx.snapshot("db");
    assert_eq!(snap.vectors, vec![1.0, 0.0, 0.0, 1.0]);
    assert_eq!(snap.owners, vec![("i1".to_string(), "r1".to_string()), ("i2".to_string(), "r2".to_string())]);
    assert!(idx.snapshot("nope").owners.is_empty());
}

/// A fresh snapshot of two collections (one with a graph) in a new directory, and
/// the path of that snapshot's own directory.
fn saved_snapshot() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let idx = VectorIndex::with_config(16, approximate(50));
    for i in 0..80u64 {
        idx.insert(if i < 60 { "big" } else { "small" }, &format!("r{i}"), &format!("i{i}"), &random_unit(i, 16))
            .unwrap();
    }
    idx.save(dir.path(), 9).unwrap();
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    let snap = dir.path().join(current.lines().next().unwrap());
    (dir, snap)
}

#[track_caller]
fn load_error(dir: &std::path::Path) -> String {
    match VectorIndex::load(dir, 16, approximate(50)) {
        Err(VectorError::Snapshot(reason)) => reason,
        Err(other) => panic!("not a snapshot error: {other}"),
        Ok(Some(_)) => panic!("a damaged snapshot was loaded"),
        Ok(None) => panic!("the snapshot was not found"),
    }
}

/// Pseudo-random bytes (splitmix64), no extra dependency.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            (z >> 56) as u8
        })
        .collect()
}

#[test]
fn every_snapshot_file_is_checked_against_its_digest() {
    let (dir, _) = saved_snapshot();
    let (loaded, tag) = VectorIndex::load(dir.path(), 16, approximate(50)).unwrap().unwrap();
    assert_eq!((tag, loaded.len("big"), loaded.len("small")), (9, 60, 20), "an intact snapshot loads");
    assert!(loaded.stats()["big"].approximate, "with its graph");

    const ROW: usize = 16 * 4;
    type Damage = fn(&std::path::Path, &std::path::Path);
    let damages: [(&str, Damage, &str); 9] = [
        (
            "two rows swapped",
            |_, snap| {
                // Same size, every row still of unit length: only the digest can tell.
                let path = snap.join("c0.vec");
                let mut bytes = std::fs::read(&path).unwrap();
                let (a, b) = bytes.split_at_mut(ROW * 3);
                a[..ROW].swap_with_slice(&mut b[..ROW]);
                std::fs::write(&path, bytes).unwrap();
            },
            "c0.vec",
        ),
        (
            "random bytes in rows",
            |_, snap| {
                let path = snap.join("c1.vec");
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[ROW * 2..ROW * 7].copy_from_slice(&noise(7, ROW * 5));
                std::fs::write(&path, bytes).unwrap();
            },
            "c1.vec",
        ),
        (
            "truncated vectors",
            |_, snap| {
                let path = snap.join("c0.vec");
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() - ROW]).unwrap();
            },
            "c0.vec",
        ),
        (
            "a record id changed",
            |_, snap| {
                // Same length: the file keeps its shape.
                let path = snap.join("c0.ids");
                let text = std::fs::read(&path).unwrap();
                let swapped: Vec<u8> = String::from_utf8_lossy(&text).replacen("r0", "rX", 1).into_bytes();
                assert_eq!(swapped.len(), text.len());
                std::fs::write(&path, swapped).unwrap();
            },
            "c0.ids",
        ),
        (
            "a graph byte flipped",
            |_, snap| {
                let path = snap.join("c0.graph");
                let mut bytes = std::fs::read(&path).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x40;
                std::fs::write(&path, bytes).unwrap();
            },
            "c0.graph",
        ),
        (
            "the manifest edited",
            |_, snap| {
                let path = snap.join("manifest.json");
                let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                manifest["collections"][0]["name"] = "small".into();
                manifest["collections"][1]["name"] = "big".into();
                std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
            },
            "manifest.json",
        ),
        (
            "a digest in the manifest replaced",
            |_, snap| {
                // Recording the digest of damaged data does not help: the manifest's own
                // digest (in CURRENT) no longer matches.
                let path = snap.join("manifest.json");
                let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                manifest["collections"][0]["vec_sha256"] = "0".repeat(64).into();
                std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
            },
            "manifest.json",
        ),
        (
            "CURRENT without the manifest digest",
            |dir, _| {
                let path = dir.join("CURRENT");
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, text.lines().next().unwrap()).unwrap();
            },
            "no manifest digest",
        ),
        (
            "CURRENT naming a path outside",
            |dir, _| {
                let path = dir.join("CURRENT");
                let text = std::fs::read_to_string(&path).unwrap();
                let digest = text.lines().nth(1).unwrap().to_string();
                std::fs::write(&path, format!("../elsewhere\n{digest}\n")).unwrap();
            },
            "outside",
        ),
    ];
    for (what, damage, expected) in damages {
        let (dir, snap) = saved_snapshot();
        damage(dir.path(), &snap);
        let reason = load_error(dir.path());
        assert!(reason.contains(expected), "{what}: {reason}");
        if !expected.contains(' ') && expected != "outside" {
            assert!(reason.contains("SHA-256 digest"), "{what}: {reason}");
        }
    }
}

#[test]
fn a_snapshot_of_an_older_format_is_not_loaded() {
    let (dir, snap) = saved_snapshot();
    // Format 1 had no digests: even made consistent, it is refused.
    let path = snap.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["format"] = 1.into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    let name = current.lines().next().unwrap();
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    std::fs::write(dir.path().join("CURRENT"), format!("{name}\n{digest}\n")).unwrap();
    assert!(load_error(dir.path()).contains("format 1"));
}

#[test]
fn a_vector_not_of_unit_length_is_refused_on_load() {
    // The digests are right (the index held these rows when it saved them): only the
    // length check stands between such a row and a search.
    for bad in [vec![2.0, 0.0, 0.0, 0.0], vec![0.0, 0.0, 0.0, 0.0], vec![f32::NAN, 0.0, 0.0, 0.0], vec![1e19; 4]] {
        let dir = tempfile::tempdir().unwrap();
        let idx = VectorIndex::new(4);
        idx.insert("db", "good", "g", &unit(4, 1)).unwrap();
        idx.insert("db", "bad", "b", &bad).unwrap();
        idx.save(dir.path(), 1).unwrap();
        let reason = match VectorIndex::load(dir.path(), 4, VectorConfig::default()) {
            Err(VectorError::Snapshot(reason)) => reason,
            other => panic!("{bad:?} was not refused: {:?}", other.map(|o| o.map(|(_, tag)| tag))),
        };
        assert!(reason.contains("row 1 is not a unit-length vector"), "{reason}");
    }
    // f32 rounding of a normalised vector is well within the tolerance.
    let dir = tempfile::tempdir().unwrap();
    let idx = VectorIndex::new(4);
    idx.insert("db", "r", "i", &[0.5, 0.5, 0.5, 0.500_1]).unwrap();
    idx.save(dir.path(), 1).unwrap();
    assert!(VectorIndex::load(dir.path(), 4, VectorConfig::default()).unwrap().is_some());
    assert!(snapshot::is_unit(&random_unit(3, 512)) && !snapshot::is_unit(&[1.01, 0.0]));
}

/// A log writer that keeps what was written, for the tests that check what is logged.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn a_similarity_outside_the_unit_range_is_an_error_never_a_score() {
    assert_eq!(checked_similarity(0.25), Some(0.25));
    assert_eq!(checked_similarity(1.000_3), Some(1.0), "rounding is clamped");
    assert_eq!(checked_similarity(-1.000_3), Some(-1.0));
    for bad in [1.01, -1.5, 4.0e37, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_eq!(checked_similarity(bad), None, "{bad}");
    }
    for config in [VectorConfig::default(), approximate(1)] {
        let idx = VectorIndex::with_config(4, config);
        idx.insert("db", "alice", "a1", &unit(4, 1)).unwrap();
        // A crafted vector three times too long: its dot product with a matching probe is 3.
        idx.insert("db", "mallory", "m1", &[3.0, 0.0, 0.0, 0.0]).unwrap();
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt().with_writer(log.clone()).with_ansi(false).finish();
        let (search, exact) = tracing::subscriber::with_default(subscriber, || {
            (idx.search(&unit(4, 0), &["db"], -1.0, 5), idx.search_exact(&unit(4, 0), &["db"], 0.5, 1))
        });
        for result in [search, exact] {
            match result {
                Err(VectorError::Similarity { collection, image_id, similarity }) => {
                    assert_eq!((collection.as_str(), image_id.as_str()), ("db", "m1"));
                    assert!((similarity - 3.0).abs() < 1e-6);
                }
                other => panic!("a similarity of 3 was not refused: {other:?}"),
            }
        }
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("ERROR") && log.contains("search refused") && log.contains("m1"), "not logged: {log}");
        // A search that does not reach the damaged row is answered; rounding is clamped.
        let hits = idx.search(&unit(4, 1), &["db"], 0.5, 5).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].record_id.as_str(), hits[0].similarity), ("alice", 1.0));
        idx.insert("db", "rounded", "r1", &[0.0, 0.0, 1.000_2, 0.0]).unwrap();
        assert_eq!(idx.search(&unit(4, 2), &["db"], 0.5, 1).unwrap()[0].similarity, 1.0);
    }
}

#[cfg(unix)]
#[test]
fn snapshot_files_are_owner_only_whatever_the_directory_above() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A directory left 0755 (by an older version) is tightened; new ones are 0700.
    let pack = dir.path().join("vectors/open");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o755)).unwrap();
    let idx = VectorIndex::with_config(16, approximate(10));
    for i in 0..20u64 {
        idx.insert("db", &format!("r{i}"), &format!("i{i}"), &random_unit(i, 16)).unwrap();
    }
    idx.save(&pack, 1).unwrap();
    idx.save(&dir.path().join("fresh/open"), 1).unwrap();
    for base in [pack, dir.path().join("fresh"), dir.path().join("fresh/open")] {
        assert_eq!(mode(&base), 0o700, "{}", base.display());
    }
    let snap = std::fs::read_to_string(dir.path().join("vectors/open/CURRENT")).unwrap();
    let snap = dir.path().join("vectors/open").join(snap.lines().next().unwrap());
    assert_eq!(mode(&snap), 0o700);
    let mut files: Vec<String> = std::fs::read_dir(&snap)
        .unwrap()
        .map(|e| e.unwrap().path())
        .inspect(|p| assert_eq!(mode(p), 0o600, "{}", p.display()))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["c0.graph", "c0.ids", "c0.vec", "manifest.json"]);
    assert_eq!(mode(&dir.path().join("vectors/open/CURRENT")), 0o600);
}

/// What a search over several collections returned before one pass covered them all:
/// each collection searched alone, merged best first (ties by collection, then record).
fn search_each(idx: &VectorIndex, q: &[f32], names: &[&str], min: f32, max: usize, exact: bool) -> Vec<Hit> {
    let mut all = Vec::new();
    for name in names {
        let hits = if exact { idx.search_exact(q, &[name], min, max) } else { idx.search(q, &[name], min, max) };
        all.extend(hits.unwrap());
    }
    all.sort_by(|a, b| {
        b.similarity
            .total_cmp(&a.similarity)
            .then_with(|| a.collection.cmp(&b.collection))
            .then_with(|| a.record_id.cmp(&b.record_id))
    });
    all.truncate(max);
    all
}

#[test]
fn one_search_over_many_collections_equals_searching_each_and_merging() {
    let dim = 16;
    // 60 small collections and one with a graph; together past the rows at which the
    // scan splits across threads. Record ids repeat across collections (different
    // records), some records have many images (the search must widen), and some
    // vectors are copied into several collections (exact ties).
    let idx = VectorIndex::with_config(dim, approximate(20_000));
    let names: Vec<String> = (0..61).map(|c| format!("db{c}")).collect();
    let shared = random_unit(999, dim);
    let mut rows = Vec::new();
    for (c, name) in names.iter().enumerate() {
        let n = if c == 60 { 25_000 } else { 200 + 37 * c };
        for i in 0..n {
            let record = if c % 7 == 0 && i < 40 { "crowd".to_string() } else { format!("r{}", i / 3) };
            let vector = if i == 5 {
                shared.clone()
            } else if record == "crowd" {
                // Just off the copied vector: for that query, the crowd fills the best rows.
                let noise = random_unit((c * 100_000 + i) as u64, dim);
                let v: Vec<f32> = shared.iter().zip(&noise).map(|(a, b)| a + 0.01 * b).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / n).collect()
            } else {
                random_unit((c * 100_000 + i) as u64, dim)
            };
            rows.push((name.clone(), record, format!("{name}-i{i}"), vector));
        }
    }
    idx.insert_bulk(rows.iter().map(|(c, r, i, v)| (c.as_str(), r.as_str(), i.as_str(), v.as_slice()))).unwrap();
    assert!(idx.stats()["db60"].approximate, "the large collection is searched through its graph");
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut compared = 0;
    for q in 0..30u64 {
        // Every fifth query is a copied vector: ties across collections.
        let query = if q % 5 == 0 { shared.clone() } else { random_unit(5_000_000 + q, dim) };
        for (min, max) in [(-1.0, 1), (-1.0, 10), (0.3, 5), (0.5, 200), (0.99, 3)] {
            for names in [&all[..], &all[..10], &all[3..4], &all[55..]] {
                for exact in [false, true] {
                    let one = if exact {
                        idx.search_exact(&query, names, min, max)
                    } else {
                        idx.search(&query, names, min, max)
                    };
                    assert_eq!(
                        one.unwrap(),
                        search_each(&idx, &query, names, min, max, exact),
                        "q {q} min {min} max {max}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 30 * 5 * 4 * 2);
    // A collection named twice is searched once; the answer is the same.
    let twice = idx.search(&shared, &["db1", "db2", "db1"], -1.0, 10).unwrap();
    assert_eq!(twice, idx.search(&shared, &["db1", "db2"], -1.0, 10).unwrap());
    assert_eq!(twice[0].similarity, twice[1].similarity, "the copied vector ties across collections");
}

#[test]
fn the_quantised_exact_scan_answers_as_the_f32_scan_does() {
    let dim = 32;
    let f32_scan = VectorConfig { exact_scan: None, ..VectorConfig::default() };
    let reference = VectorIndex::with_config(dim, f32_scan);
    let indexes: Vec<VectorIndex> = [Codec::I8, Codec::F16]
        .into_iter()
        .map(|c| VectorIndex::with_config(dim, VectorConfig { exact_scan: Some(c), ..VectorConfig::default() }))
        .collect();
    let everyone = || std::iter::once(&reference).chain(&indexes);
    // One by one (the int8 ranges widen as rows come), in bulk, replaced and removed.
    for i in 0..300u64 {
        let v = random_unit(i, dim);
        let (db, record) = (format!("db{}", i % 3), format!("r{}", i / 2));
        for idx in everyone() {
            idx.insert(&db, &record, &format!("i{i}"), &v).unwrap();
        }
    }
    let bulk: Vec<(String, String, Vec<f32>)> =
        (300..3000u64).map(|i| (format!("r{}", i / 3), format!("i{i}"), random_unit(i, dim))).collect();
    for idx in everyone() {
        idx.insert_bulk(bulk.iter().map(|(r, i, v)| ("db0", r.as_str(), i.as_str(), v.as_slice()))).unwrap();
        idx.insert("db1", "r7", "i7", &random_unit(9999, dim)).unwrap();
        assert_eq!(idx.remove_images("db0", &["i0".into(), "i300".into(), "i2999".into()]), 3);
    }
    let dir = tempfile::tempdir().unwrap();
    indexes[0].save(dir.path(), 1).unwrap();
    let (loaded, _) =
        VectorIndex::load(dir.path(), dim, VectorConfig { exact_scan: Some(Codec::I8), ..VectorConfig::default() })
            .unwrap()
            .unwrap();
    assert!(loaded.stats()["db0"].vector_bytes >= loaded.len("db0") * (dim * 4 + dim));
    let switched = VectorIndex::load(dir.path(), dim, f32_scan).unwrap().unwrap().0;
    switched.set_exact_scan(Some(Codec::F16));
    assert_eq!(switched.exact_scan(), Some(Codec::F16));
    for q in 0..40u64 {
        let query = random_unit(10_000 + q, dim);
        for (min, k) in [(-1.0, 10), (0.2, 50), (0.4, 5), (0.0, 1)] {
            let want = reference.search(&query, &["db0", "db1", "db2"], min, k).unwrap();
            for idx in indexes.iter().chain([&loaded, &switched]) {
                assert_eq!(idx.search(&query, &["db0", "db1", "db2"], min, k).unwrap(), want, "min {min} k {k}");
                assert_eq!(
                    idx.search(&query, &["db1"], min, k).unwrap(),
                    reference.search(&query, &["db1"], min, k).unwrap()
                );
            }
        }
    }
}
