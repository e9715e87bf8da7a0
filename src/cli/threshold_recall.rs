//! Threshold recall: of the records an exact scan returns at or above a match score,
//! the share an approximate search (a graph) also returns.
//!
//! recall@k against the exact top k mostly measures strangers at near-equal,
//! sub-threshold similarity, which no operator ever sees. What matters is whether the
//! graph returns every face the exact scan would return at or above the requested
//! `min_match_score`: for a mated query its own identity, for a stranger the false
//! matches an operator must see too. Both searches apply the threshold the way the
//! engine does (a similarity a hair below the score's, then the rounded score itself),
//! and the share is pooled over queries (`found / wanted`), with `wanted` reported as n.

use facesearch_face::calibration::Calibration;

/// Found and wanted above-threshold records, pooled over queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records the exact scan returned at or above the score.
    pub wanted: usize,
    /// Of those, the ones the approximate search also returned.
    pub found: usize,
}

impl Tally {
    /// Adds one query: `exact` and `approximate` are the records (any comparable key,
    /// e.g. index and record id) each search returned at or above the score.
    pub fn add<K: PartialEq>(&mut self, exact: &[K], approximate: &[K]) {
        self.wanted += exact.len();
        self.found += exact.iter().filter(|k| approximate.contains(k)).count();
    }

    /// found / wanted; 1 when nothing was wanted (nothing could be missed).
    pub fn recall(&self) -> f64 {
        if self.wanted == 0 { 1.0 } else { self.found as f64 / self.wanted as f64 }
    }

    /// "0.9990 (n 1234)".
    pub fn render(&self) -> String {
        format!("{:.4} (n {})", self.recall(), self.wanted)
    }
}

/// A match score threshold turned into what a vector search takes, as the engine
/// does it: the similarity to search from, and the rounded-score filter that decides.
#[derive(Debug, Clone, Copy)]
pub struct Threshold {
    pub score: f64,
    /// Slightly below the score's similarity, so that rounding in the inverse never
    /// drops a face that scores exactly `score`.
    pub min_similarity: f32,
}

impl Threshold {
    pub fn new(calibration: &Calibration, score: f64) -> Self {
        Self { score, min_similarity: calibration.similarity_for(score) - 1e-4 }
    }

    /// Whether a face of this similarity is a match at this threshold (the engine's
    /// rule: the score rounded to two decimals).
    pub fn passes(&self, calibration: &Calibration, similarity: f32) -> bool {
        (calibration.score(similarity) * 100.0).round() / 100.0 >= self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facesearch_face::Pack;
    use facesearch_vectors::{VectorConfig, VectorIndex};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// The tally the benchmark computes (index searches, exact and through a graph)
    /// equals an independent brute-force count: every gallery vector's similarity
    /// computed here, the records above the score ranked by hand.
    #[test]
    fn tally_matches_a_brute_force_count() {
        let calibration = Calibration::shipped(Pack::Open).unwrap();
        let (dim, rows, k) = (32, 4000, 10);
        let mut rng = StdRng::seed_from_u64(3);
        // Clustered vectors: each query has a few close neighbours above the
        // thresholds, as a mated face has, amid a crowd below them.
        let centres: Vec<Vec<f32>> = (0..40).map(|_| unit(&mut rng, dim)).collect();
        let gallery: Vec<Vec<f32>> = (0..rows)
            .map(|i| {
                let c = &centres[i % centres.len()];
                let noise = unit(&mut rng, dim);
                let v: Vec<f32> = c.iter().zip(&noise).map(|(a, b)| a + 0.9 * b).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / n).collect()
            })
            .collect();
        // A small ef on a sparse graph, so the graph does miss some.
        let config = VectorConfig {
            ann_min_rows: 1,
            connectivity: 4,
            expansion_add: 8,
            ef_search: 4,
            ..VectorConfig::default()
        };
        let index = VectorIndex::with_config(dim, config);
        let records: Vec<String> = (0..rows).map(|i| format!("r{}", i / 2)).collect(); // two images per record
        let images: Vec<String> = (0..rows).map(|i| format!("i{i}")).collect();
        index
            .insert_bulk((0..rows).map(|i| ("g", records[i].as_str(), images[i].as_str(), gallery[i].as_slice())))
            .unwrap();
        let queries: Vec<Vec<f32>> = (0..60).map(|i| gallery[i * 7].iter().map(|x| x * 0.99).collect()).collect();
        for score in [50.0, 70.0] {
            let t = Threshold::new(&calibration, score);
            let mut tally = Tally::default();
            let mut brute = Tally::default();
            for q in &queries {
                let keep = |hits: Vec<facesearch_vectors::Hit>| -> Vec<String> {
                    hits.into_iter().filter(|h| t.passes(&calibration, h.similarity)).map(|h| h.record_id).collect()
                };
                let exact = keep(index.search_exact(q, &["g"], t.min_similarity, k).unwrap());
                let graph = keep(index.search(q, &["g"], t.min_similarity, k).unwrap());
                tally.add(&exact, &graph);
                // Brute force: each record's best similarity, the top k that pass.
                let mut best: std::collections::HashMap<&str, f32> = std::collections::HashMap::new();
                for (i, v) in gallery.iter().enumerate() {
                    // The index's own dot product, so that the floats (and ties) are the same.
                    let s = facesearch_vectors::dot(q, v);
                    let e = best.entry(records[i].as_str()).or_insert(f32::NEG_INFINITY);
                    *e = e.max(s);
                }
                let mut ranked: Vec<(&str, f32)> =
                    best.into_iter().filter(|(_, s)| t.passes(&calibration, *s)).collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
                ranked.truncate(k);
                let truth: Vec<String> = ranked.iter().map(|(r, _)| r.to_string()).collect();
                brute.wanted += truth.len();
                brute.found += truth.iter().filter(|r| graph.contains(r)).count();
            }
            assert_eq!(tally, brute, "score {score}");
            assert!(tally.wanted > 100, "score {score}: too few above-threshold hits to test ({})", tally.wanted);
        }
    }

    #[test]
    fn recall_pools_over_queries() {
        let mut t = Tally::default();
        t.add(&["a", "b"], &["a", "c"]);
        t.add::<&str>(&[], &["x"]);
        t.add(&["d"], &["d"]);
        assert_eq!(t, Tally { wanted: 3, found: 2 });
        assert_eq!(t.render(), "0.6667 (n 3)");
        assert_eq!(Tally::default().recall(), 1.0);
    }
}
