//! In-memory exact vector search over face embeddings.
//!
//! The store is the source of truth; this index is a copy of its vectors, loaded at
//! start and kept in step with every write and delete, so that a search never touches
//! the disk. Vectors are L2-normalised, so cosine similarity is a dot product.
//! Each face database (collection) is a flat row-major matrix: a scan is one pass over
//! contiguous memory that the compiler vectorises.

use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IndexError {
    #[error("vector has {got} dimensions; this index holds {expected}")]
    Dimension { expected: usize, got: usize },
}

/// One search result: the best-matching image of one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub collection: String,
    pub record_id: String,
    pub image_id: String,
    /// Cosine similarity, −1 to 1.
    pub similarity: f32,
}

#[derive(Default)]
struct Collection {
    vectors: Vec<f32>,
    owners: Vec<(String, String)>, // (image_id, record_id), row-aligned with `vectors`
    rows: HashMap<String, usize>,  // image_id -> row
}

impl Collection {
    fn insert(&mut self, dim: usize, image_id: &str, record_id: &str, vector: &[f32]) {
        if let Some(&row) = self.rows.get(image_id) {
            self.vectors[row * dim..(row + 1) * dim].copy_from_slice(vector);
            self.owners[row].1 = record_id.to_string();
            return;
        }
        self.rows.insert(image_id.to_string(), self.owners.len());
        self.owners.push((image_id.to_string(), record_id.to_string()));
        self.vectors.extend_from_slice(vector);
    }

    /// Removes a row by moving the last row into its place.
    fn remove(&mut self, dim: usize, image_id: &str) -> bool {
        let Some(row) = self.rows.remove(image_id) else {
            return false;
        };
        let last = self.owners.len() - 1;
        if row != last {
            self.vectors.copy_within(last * dim..(last + 1) * dim, row * dim);
            self.owners.swap(row, last);
            self.rows.insert(self.owners[row].0.clone(), row);
        }
        self.owners.pop();
        self.vectors.truncate(last * dim);
        true
    }
}

/// Exact cosine search over several collections of one embedding dimension.
pub struct FaceIndex {
    dim: usize,
    collections: RwLock<HashMap<String, Collection>>,
}

impl FaceIndex {
    pub fn new(dim: usize) -> Self {
        Self { dim, collections: RwLock::new(HashMap::new()) }
    }

    pub fn dimension(&self) -> usize {
        self.dim
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Collection>> {
        self.collections.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Collection>> {
        self.collections.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) the vector of one enrolled image.
    pub fn insert(&self, collection: &str, record_id: &str, image_id: &str, vector: &[f32]) -> Result<(), IndexError> {
        if vector.len() != self.dim {
            return Err(IndexError::Dimension { expected: self.dim, got: vector.len() });
        }
        self.write().entry(collection.to_string()).or_default().insert(self.dim, image_id, record_id, vector);
        Ok(())
    }

    /// Removes the vectors of these images; returns how many were present.
    pub fn remove_images(&self, collection: &str, image_ids: &[String]) -> usize {
        let mut all = self.write();
        let Some(c) = all.get_mut(collection) else {
            return 0;
        };
        image_ids.iter().filter(|id| c.remove(self.dim, id)).count()
    }

    /// Drops a whole collection.
    pub fn remove_collection(&self, collection: &str) {
        self.write().remove(collection);
    }

    /// Number of vectors in a collection.
    pub fn len(&self, collection: &str) -> usize {
        self.read().get(collection).map_or(0, |c| c.owners.len())
    }

    /// The best `max_results` records across `collections` with similarity at least
    /// `min_similarity`, best first; each record appears once, with its best image.
    pub fn search(
        &self,
        query: &[f32],
        collections: &[&str],
        min_similarity: f32,
        max_results: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::Dimension { expected: self.dim, got: query.len() });
        }
        let all = self.read();
        let mut best: HashMap<(&str, &str), (f32, &str)> = HashMap::new();
        for &name in collections {
            let Some(c) = all.get(name) else { continue };
            for (row, v) in c.vectors.chunks_exact(self.dim).enumerate() {
                let s = dot(query, v);
                if s < min_similarity {
                    continue;
                }
                let (image_id, record_id) = (&c.owners[row].0, &c.owners[row].1);
                let slot = best.entry((name, record_id.as_str())).or_insert((f32::NEG_INFINITY, ""));
                if s > slot.0 {
                    *slot = (s, image_id.as_str());
                }
            }
        }
        let mut hits: Vec<Hit> = best
            .into_iter()
            .map(|((collection, record_id), (similarity, image_id))| Hit {
                collection: collection.to_string(),
                record_id: record_id.to_string(),
                image_id: image_id.to_string(),
                similarity,
            })
            .collect();
        hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then_with(|| a.record_id.cmp(&b.record_id)));
        hits.truncate(max_results);
        Ok(hits)
    }
}

/// A copy of one collection's rows, taken under the read lock, for batch work (e.g.
/// [`neighbours`]) that must not hold the lock.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub dim: usize,
    /// Row-major, `dim` values per row.
    pub vectors: Vec<f32>,
    /// `(image_id, record_id)` of each row.
    pub owners: Vec<(String, String)>,
}

impl FaceIndex {
    /// The rows of `collection` now (empty for an unknown collection).
    pub fn snapshot(&self, collection: &str) -> Snapshot {
        let all = self.read();
        let Some(c) = all.get(collection) else { return Snapshot { dim: self.dim, ..Snapshot::default() } };
        Snapshot { dim: self.dim, vectors: c.vectors.clone(), owners: c.owners.clone() }
    }
}

/// Two rows whose similarity reached the minimum (`a < b`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub a: usize,
    pub b: usize,
    pub similarity: f32,
}

/// Query rows handled together: their vectors stay in cache while every other row
/// streams past once, so the matrix is read `rows / QUERY_BLOCK` times, not `rows` times.
const QUERY_BLOCK: usize = 256;

/// Every pair of rows of `vectors` (row-major, `dim` wide) with similarity at least
/// `min_similarity`, except pairs of rows with the same `group` (e.g. two images of
/// one record). At most `max_pairs` are returned; the flag says whether more existed.
///
/// An exact all-pairs search done as a blocked matrix product over `threads` threads:
/// each pair is computed once (`a < b`) and nothing but the pairs above the minimum is
/// kept. `progress` is told how many query rows each finished block covered.
pub fn neighbours(
    vectors: &[f32],
    dim: usize,
    group: &[u32],
    min_similarity: f32,
    max_pairs: usize,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> (Vec<Neighbour>, bool) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let rows = vectors.len().checked_div(dim).unwrap_or(0).min(group.len());
    let blocks = rows.div_ceil(QUERY_BLOCK);
    let next = AtomicUsize::new(0);
    let found: Mutex<Vec<Neighbour>> = Mutex::new(Vec::new());
    let truncated = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut local = Vec::new();
                loop {
                    let block = next.fetch_add(1, Ordering::Relaxed);
                    if block >= blocks || truncated.load(Ordering::Relaxed) {
                        break;
                    }
                    let (q0, q1) = (block * QUERY_BLOCK, ((block + 1) * QUERY_BLOCK).min(rows));
                    let queries = &vectors[q0 * dim..q1 * dim];
                    for b in q0 + 1..rows {
                        let target = &vectors[b * dim..(b + 1) * dim];
                        // Only the queries before `b`: each pair once.
                        let upto = (b - q0).min(q1 - q0);
                        for (qi, query) in queries.chunks_exact(dim).take(upto).enumerate() {
                            let a = q0 + qi;
                            let similarity = dot(query, target);
                            if similarity >= min_similarity && group[a] != group[b] {
                                local.push(Neighbour { a, b, similarity });
                            }
                        }
                    }
                    progress(q1 - q0);
                    if local.len() > max_pairs {
                        truncated.store(true, Ordering::Relaxed);
                    }
                }
                found.lock().unwrap_or_else(|p| p.into_inner()).append(&mut local);
            });
        }
    });
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut truncated = truncated.into_inner();
    found.sort_by(|x, y| y.similarity.total_cmp(&x.similarity).then((x.a, x.b).cmp(&(y.a, y.b))));
    if found.len() > max_pairs {
        found.truncate(max_pairs);
        truncated = true;
    }
    (found, truncated)
}

/// Dot product with eight independent accumulators, which lets the compiler use SIMD
/// lanes without reassociating a single sum.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn unit(dim: usize, hot: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[hot] = 1.0;
        v
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }

    #[test]
    fn search_ranks_dedups_and_filters() {
        let idx = FaceIndex::new(4);
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
        assert_eq!(idx.search(&[1.0], &["db1"], 0.0, 1), Err(IndexError::Dimension { expected: 4, got: 1 }));
    }

    /// A deterministic pseudo-random unit vector.
    fn random_unit(dim: usize, seed: u64) -> Vec<f32> {
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
                random_unit(dim, i as u64)
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
        let idx = FaceIndex::new(2);
        idx.insert("db", "r1", "i1", &[1.0, 0.0]).unwrap();
        idx.insert("db", "r2", "i2", &[0.0, 1.0]).unwrap();
        let snap = idx.snapshot("db");
        assert_eq!(snap.vectors, vec![1.0, 0.0, 0.0, 1.0]);
        assert_eq!(snap.owners, vec![("i1".to_string(), "r1".to_string()), ("i2".to_string(), "r2".to_string())]);
        assert!(idx.snapshot("nope").owners.is_empty());
    }

    #[test]
    fn deletes_are_reflected_immediately() {
        let idx = FaceIndex::new(2);
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
