//! How long the duplicate search takes on 100,000 faces (ignored: a measurement, not a
//! check; run it in release):
//!
//! ```sh
//! facesearch eval embed ../shared/eval/lfw-deepfunneled/images/*/*.jpg > /tmp/lfw-embeddings.jsonl
//! FACESEARCH_BENCH_EMBEDDINGS=/tmp/lfw-embeddings.jsonl \
//!     cargo test --release -p facesearch-vectors --test duplicates_100k -- --ignored --nocapture
//! ```
//!
//! The real LFW embeddings (when given) are topped up with random unit vectors to
//! 100,000; every 1,000th synthetic row is a slightly perturbed copy of a real one (a
//! planted duplicate). It times the all-pairs [`neighbours`] search the duplicate job
//! runs, and, for comparison, per-face [`VectorIndex::search`] queries on a sample.

use std::time::Instant;

use facesearch_vectors::{VectorIndex, dot, neighbours};

const FACES: usize = 100_000;
const DIM: usize = 128;
/// Cosine similarity of score 80 on the `open` pack's shipped calibration.
const MIN_SIMILARITY: f32 = 0.55;

fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn hundred_thousand_faces() {
    let mut vectors: Vec<f32> = Vec::with_capacity(FACES * DIM);
    if let Ok(path) = std::env::var("FACESEARCH_BENCH_EMBEDDINGS") {
        let text = std::fs::read_to_string(&path).expect("reading the embeddings");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            if let Some(e) = v["face"]["embedding"].as_array().filter(|e| e.len() == DIM) {
                vectors.extend(e.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32));
            }
        }
    }
    let real = vectors.len() / DIM;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut planted = 0;
    for i in real..FACES {
        let mut v: Vec<f32> = if real > 0 && i % 1000 == 0 {
            planted += 1;
            let src = i % real;
            vectors[src * DIM..(src + 1) * DIM].iter().map(|x| x + 0.01 * next()).collect()
        } else {
            (0..DIM).map(|_| next()).collect()
        };
        normalise(&mut v);
        vectors.extend(v);
    }
    let group: Vec<u32> = (0..FACES as u32).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    let (pairs, truncated) = neighbours(&vectors, DIM, &group, MIN_SIMILARITY, 1_000_000, threads, &|_| {});
    let all_pairs = start.elapsed();
    println!(
        "{FACES} faces ({real} real LFW, {planted} planted copies), {threads} threads: neighbours {:.1} s, \
         {} pairs at cos >= {MIN_SIMILARITY} (truncated: {truncated})",
        all_pairs.as_secs_f64(),
        pairs.len()
    );

    let index = VectorIndex::new(DIM);
    for (i, v) in vectors.chunks_exact(DIM).enumerate() {
        index.insert("db", &format!("r{i}"), &format!("i{i}"), v).expect("insert");
    }
    let sample = 200;
    let start = Instant::now();
    for v in vectors.chunks_exact(DIM).take(sample) {
        index.search(v, &["db"], MIN_SIMILARITY, 10).expect("search");
    }
    let per_query = start.elapsed().as_secs_f64() / sample as f64;
    println!(
        "per-face VectorIndex::search: {:.1} ms a query, {:.0} s for all {FACES} on one thread",
        per_query * 1e3,
        per_query * FACES as f64
    );
    assert!(pairs.len() >= planted);
}
