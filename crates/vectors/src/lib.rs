//! In-memory vector search over face embeddings: the *vector index*. (The API's
//! "index" is a face database; here each face database's rows are a *collection*.)
//!
//! The store is the source of truth; the vector index is a copy of its vectors, kept in step
//! with every write and delete, so that a search never touches the disk. Vectors are
//! L2-normalised, so cosine similarity is a dot product.
//!
//! Each face database (collection) keeps its vectors as a flat row-major f32 matrix.
//! Small collections are searched exactly (a SIMD scan over that matrix, see [`scan`]);
//! from [`VectorConfig::ann_min_rows`] vectors on, an HNSW graph ([`ann`]) proposes
//! candidates and every candidate is re-scored exactly from the f32 matrix, so the
//! similarities reported are always exact and only recall is approximate.
//! [`snapshot`] saves and loads the whole index so that a restart does not re-read
//! every vector from the store.

mod ann;
mod quantised;
mod scan;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

pub use ann::Quantization;
pub use quantised::{Codec, Quantised};
pub use scan::{dot, kernel_name};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VectorError {
    #[error("vector has {got} dimensions; this index holds {expected}")]
    Dimension { expected: usize, got: usize },
    #[error("approximate index: {0}")]
    Graph(String),
    #[error("index snapshot: {0}")]
    Snapshot(String),
    /// A similarity outside [-1, 1]: a vector in the index is not of unit length
    /// (damage). Never reported as a score; the search fails instead.
    #[error(
        "similarity {similarity} of image {image_id} in {collection} is outside [-1, 1]: a stored vector is not of unit length"
    )]
    Similarity { collection: String, image_id: String, similarity: f32 },
}

/// How far the squared length of a stored vector may be from 1, and a similarity
/// beyond ±1, before it counts as damage rather than f32 rounding (which is orders
/// of magnitude smaller for a normalised embedding).
pub const UNIT_TOLERANCE: f32 = 1e-3;

/// A cosine similarity fit to report: within [-1, 1] (a value beyond by no more than
/// [`UNIT_TOLERANCE`] is rounding and is clamped); `None` for anything else (NaN,
/// infinite, or farther out), which only a vector that is not of unit length produces.
pub fn checked_similarity(similarity: f32) -> Option<f32> {
    (similarity.is_finite() && similarity.abs() <= 1.0 + UNIT_TOLERANCE).then(|| similarity.clamp(-1.0, 1.0))
}

/// How collections are searched. The serde fields are the server's settings
/// `exact_search_below` and `ann_ef_search`; the graph's shape is fixed here.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct VectorConfig {
    /// Collections with at least this many vectors get an approximate (HNSW) graph;
    /// smaller ones are always scanned exactly. `usize::MAX` disables the graph.
    #[serde(rename = "exact_search_below")]
    pub ann_min_rows: usize,
    /// HNSW links per node (M).
    #[serde(skip)]
    pub connectivity: usize,
    /// Candidate list size while inserting (efConstruction).
    #[serde(skip)]
    pub expansion_add: usize,
    /// Candidate list size while searching (ef): higher is slower and more exact.
    #[serde(rename = "ann_ef_search")]
    pub ef_search: usize,
    /// How the graph stores its copy of the vectors.
    #[serde(skip)]
    pub quantization: Quantization,
    /// The exact scan reads a quantised copy of the vectors and re-scores in f32 only
    /// the rows that can be in the answer (see [`quantised`]); `None` scans the f32
    /// vectors. The answers are the same either way.
    #[serde(skip)]
    pub exact_scan: Option<Codec>,
}

impl Default for VectorConfig {
    /// Exact at every size: the graph's threshold recall at score 70 reaches 0.999
    /// only at an ef that makes it slower than the exact scan (README, "Threshold
    /// recall"); the graph is for operators who accept the measured recall. Its ef is
    /// the smallest that reached 0.999 at score 70 for mated queries at 300,000 faces
    /// in both graphs built.
    fn default() -> Self {
        Self {
            ann_min_rows: usize::MAX,
            connectivity: 32,
            expansion_add: 128,
            ef_search: 2048,
            quantization: Quantization::F16,
            exact_scan: DEFAULT_EXACT_SCAN,
        }
    }
}

/// The exact scan's default codes: see README (Quantised exact scan) for the figures.
pub const DEFAULT_EXACT_SCAN: Option<Codec> = Some(Codec::I8);

/// One search result: the best-matching image of one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub collection: String,
    pub record_id: String,
    pub image_id: String,
    /// Cosine similarity, −1 to 1.
    pub similarity: f32,
}

struct Owner {
    image_id: Box<str>,
    record_id: Box<str>,
    /// The row's key in the graph: stable while rows move on deletion.
    key: u64,
}

#[derive(Default)]
struct Collection {
    vectors: Vec<f32>,
    owners: Vec<Owner>,             // row-aligned with `vectors`
    rows: HashMap<Box<str>, usize>, // image_id -> row
    keys: HashMap<u64, usize>,      // graph key -> row, only while a graph exists
    next_key: u64,
    graph: Option<ann::AnnGraph>,
    /// The quantised copy of `vectors` the exact scan reads, when one is configured.
    quant: Option<Quantised>,
}

impl Collection {
    fn len(&self) -> usize {
        self.owners.len()
    }

    fn row(&self, row: usize, dim: usize) -> &[f32] {
        &self.vectors[row * dim..(row + 1) * dim]
    }

    /// Adds or replaces a row; the graph, if any, is updated unless `defer_graph`
    /// (the caller then adds the new rows with [`Collection::graph_add_rows`]).
    fn insert(
        &mut self,
        dim: usize,
        config: &VectorConfig,
        image_id: &str,
        record_id: &str,
        vector: &[f32],
        defer_graph: bool,
    ) -> Result<(), VectorError> {
        if let Some(&row) = self.rows.get(image_id) {
            self.vectors[row * dim..(row + 1) * dim].copy_from_slice(vector);
            self.owners[row].record_id = record_id.into();
            match &mut self.quant {
                Some(q) if !defer_graph => q.replace(row, &self.vectors),
                // Rebuilt once the bulk insert is done.
                _ => self.quant = None,
            }
            if let Some(graph) = &self.graph {
                // An image's vector never changes in practice; keep the graph exact if it does.
                graph.remove(self.owners[row].key)?;
                graph.add(self.owners[row].key, vector)?;
            }
            return Ok(());
        }
        let key = self.next_key;
        self.next_key += 1;
        let row = self.owners.len();
        if let Some(graph) = &self.graph
            && !defer_graph
        {
            graph.add(key, vector)?;
            self.keys.insert(key, row);
        }
        self.rows.insert(image_id.into(), row);
        self.owners.push(Owner { image_id: image_id.into(), record_id: record_id.into(), key });
        self.vectors.extend_from_slice(vector);
        match &mut self.quant {
            Some(q) if !defer_graph => q.push(&self.vectors),
            _ => self.quant = None,
        }
        if self.graph.is_none() && !defer_graph && self.len() >= config.ann_min_rows {
            self.build_graph(dim, config)?;
        }
        Ok(())
    }

    /// Adds rows `from..` to the graph in parallel (after deferred inserts).
    fn graph_add_rows(&mut self, dim: usize, from: usize) -> Result<(), VectorError> {
        let Some(graph) = &self.graph else { return Ok(()) };
        let rows: Vec<(u64, &[f32])> =
            (from..self.len()).map(|row| (self.owners[row].key, &self.vectors[row * dim..(row + 1) * dim])).collect();
        graph.add_many(rows)?;
        for row in from..self.len() {
            self.keys.insert(self.owners[row].key, row);
        }
        Ok(())
    }

    fn build_graph(&mut self, dim: usize, config: &VectorConfig) -> Result<(), VectorError> {
        let rows = self.owners.iter().enumerate().map(|(row, o)| (o.key, &self.vectors[row * dim..(row + 1) * dim]));
        let graph = ann::AnnGraph::build(dim, config, rows)?;
        self.keys = self.owners.iter().enumerate().map(|(row, o)| (o.key, row)).collect();
        self.graph = Some(graph);
        Ok(())
    }

    /// Removes a row by moving the last row into its place. The row always leaves
    /// the matrix and the key map; a graph that fails to forget its key can then only
    /// propose a key that maps to no row (skipped), never the deleted image.
    fn remove(&mut self, dim: usize, image_id: &str) -> bool {
        let Some(row) = self.rows.remove(image_id) else {
            return false;
        };
        if let Some(graph) = &self.graph {
            if let Err(e) = graph.remove(self.owners[row].key) {
                tracing::warn!(error = %e, "graph removal failed; the key is unmapped instead");
            }
            self.keys.remove(&self.owners[row].key);
        }
        let last = self.owners.len() - 1;
        if let Some(q) = &mut self.quant {
            q.swap_remove(row);
        }
        if row != last {
            self.vectors.copy_within(last * dim..(last + 1) * dim, row * dim);
            self.owners.swap(row, last);
            self.rows.insert(self.owners[row].image_id.clone(), row);
            if self.graph.is_some() {
                self.keys.insert(self.owners[row].key, row);
            }
        }
        self.owners.pop();
        self.vectors.truncate(last * dim);
        true
    }

    /// The `k` best rows (exact similarities, best first) with similarity ≥ `min`.
    fn candidates(
        &self,
        dim: usize,
        config: &VectorConfig,
        query: &[f32],
        k: usize,
        min: f32,
        exact: bool,
    ) -> Result<Vec<scan::Scored>, VectorError> {
        match &self.graph {
            Some(graph) if !exact && self.len() >= config.ann_min_rows => {
                // Asking for ef results makes the graph keep (and return) its whole
                // candidate list; re-scoring a few hundred rows exactly is cheap.
                let keys = graph.search(query, k.max(config.ef_search).min(self.len()))?;
                let mut found: Vec<scan::Scored> = keys
                    .iter()
                    .filter_map(|key| self.keys.get(key))
                    .map(|&row| scan::Scored { score: dot(query, self.row(row, dim)), row })
                    .filter(|s| s.score >= min)
                    .collect();
                found.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.row.cmp(&b.row)));
                found.truncate(k);
                Ok(found)
            }
            _ => Ok(scan_many(query, &[(self, k)], dim, min).pop().unwrap_or_default()),
        }
    }

    /// Makes the quantised copy match `codec` (building it if missing).
    fn ensure_quant(&mut self, dim: usize, codec: Option<Codec>) {
        match codec {
            None => self.quant = None,
            Some(codec) => {
                if self.quant.as_ref().is_none_or(|q| q.codec() != codec || q.len() != self.len()) {
                    self.quant = Some(Quantised::build(codec, dim, &self.vectors));
                }
            }
        }
    }

    /// The quantised copy, if it is in step with the vectors.
    fn codes(&self) -> Option<&Quantised> {
        self.quant.as_ref().filter(|q| q.len() == self.len())
    }
}

/// The `k` best rows (exact f32 scores) of each collection with a score of at least
/// `min`: one pass over all their rows, through the quantised copies when every
/// collection has one (the answer is the same), else over the f32 vectors.
fn scan_many(query: &[f32], parts: &[(&Collection, usize)], dim: usize, min: f32) -> Vec<Vec<scan::Scored>> {
    let coded: Option<Vec<(&Quantised, &[f32], usize)>> =
        parts.iter().map(|(c, k)| c.codes().map(|q| (q, c.vectors.as_slice(), *k))).collect();
    match coded {
        Some(coded) => quantised::top_k_many(query, &coded, dim, min),
        None => {
            let matrices: Vec<(&[f32], usize)> = parts.iter().map(|(c, k)| (c.vectors.as_slice(), *k)).collect();
            scan::top_k_many(query, &matrices, dim, min)
        }
    }
}

impl Collection {
    /// Whether a search of this collection goes through its graph.
    fn searched_by_graph(&self, config: &VectorConfig, exact: bool) -> bool {
        self.graph.is_some() && !exact && self.len() >= config.ann_min_rows
    }

    /// The rows [`Collection::best_per_record`] asks for first.
    fn first_k(&self, max_results: usize) -> usize {
        (max_results * 2).max(16).min(self.len().max(1))
    }

    /// Whether `found`, the `k` best rows, holds enough distinct records (or every row
    /// there is) for [`Collection::best_per_record`] to stop widening.
    fn wide_enough(&self, found: &[scan::Scored], k: usize, max_results: usize) -> bool {
        if found.len() < k || k >= self.len() {
            return true;
        }
        let distinct: std::collections::HashSet<&str> = found.iter().map(|s| &*self.owners[s.row].record_id).collect();
        distinct.len() >= max_results
    }

    /// The next, wider `k` when the best rows hold too few distinct records.
    fn wider_k(&self, k: usize) -> usize {
        (k * 4).min(self.len())
    }

    /// Rows (with exact scores) of the best `max_results` distinct records. Rows, not
    /// records, are ranked: a record with several images can fill several of the best
    /// rows, so the search widens until it has enough distinct records or has
    /// considered every row. The first pass almost always suffices. `done`, when
    /// given, is `(k, the k best rows)` already wide enough, found by a scan of
    /// several collections at once (with the same sequence of `k`).
    #[allow(clippy::too_many_arguments)]
    fn best_per_record(
        &self,
        dim: usize,
        config: &VectorConfig,
        query: &[f32],
        min: f32,
        max_results: usize,
        exact: bool,
        done: Option<(usize, Vec<scan::Scored>)>,
    ) -> Result<Vec<(f32, &Owner)>, VectorError> {
        let (mut k, mut found) = match done {
            Some(done) => done,
            None => {
                let k = self.first_k(max_results);
                (k, self.candidates(dim, config, query, k, min, exact)?)
            }
        };
        while !self.wide_enough(&found, k, max_results) {
            k = self.wider_k(k);
            found = self.candidates(dim, config, query, k, min, exact)?;
        }
        Ok(found.into_iter().map(|s| (s.score, &self.owners[s.row])).collect())
    }
}

/// What one collection holds, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CollectionStats {
    pub vectors: usize,
    /// Whether searches go through the approximate graph.
    pub approximate: bool,
    /// Bytes of the f32 matrix plus the graph and the quantised copy (ids and maps
    /// not counted).
    pub vector_bytes: usize,
    /// Bytes of the quantised copy the exact scan reads (0 when it reads the f32 matrix).
    pub scan_bytes: usize,
}

/// Cosine search over several collections of one embedding dimension.
pub struct VectorIndex {
    dim: usize,
    config: VectorConfig,
    collections: RwLock<HashMap<String, Collection>>,
    /// Bumped on every change, so a saver can tell whether anything moved since.
    changes: AtomicU64,
    /// The search-time ef, adjustable while serving.
    ef_search: AtomicUsize,
    /// The exact scan's codes (see [`VectorIndex::set_exact_scan`]): 0 none, 1 int8,
    /// 2 f16. Changed only under the write lock, with every collection's copy.
    exact_scan: AtomicU8,
}

fn codec_to_u8(codec: Option<Codec>) -> u8 {
    match codec {
        None => 0,
        Some(Codec::I8) => 1,
        Some(Codec::F16) => 2,
    }
}

fn codec_of_u8(v: u8) -> Option<Codec> {
    match v {
        1 => Some(Codec::I8),
        2 => Some(Codec::F16),
        _ => None,
    }
}

impl VectorIndex {
    /// An index with the default configuration.
    pub fn new(dim: usize) -> Self {
        Self::with_config(dim, VectorConfig::default())
    }

    pub fn with_config(dim: usize, config: VectorConfig) -> Self {
        let ef = AtomicUsize::new(config.ef_search);
        let exact_scan = AtomicU8::new(codec_to_u8(config.exact_scan));
        Self {
            dim,
            config,
            collections: RwLock::new(HashMap::new()),
            changes: AtomicU64::new(0),
            ef_search: ef,
            exact_scan,
        }
    }

    /// Changes how the exact scan reads the vectors (building or dropping every
    /// collection's quantised copy now). Answers do not change; speed and memory do.
    pub fn set_exact_scan(&self, codec: Option<Codec>) {
        let mut all = self.write();
        self.exact_scan.store(codec_to_u8(codec), Ordering::Relaxed);
        for c in all.values_mut() {
            c.ensure_quant(self.dim, codec);
        }
    }

    /// How the exact scan reads the vectors now.
    pub fn exact_scan(&self) -> Option<Codec> {
        codec_of_u8(self.exact_scan.load(Ordering::Relaxed))
    }

    pub fn dimension(&self) -> usize {
        self.dim
    }

    pub fn config(&self) -> &VectorConfig {
        &self.config
    }

    /// Changes how many candidates the graph explores per search (recall vs time).
    pub fn set_ef_search(&self, ef: usize) {
        self.ef_search.store(ef.max(1), Ordering::Relaxed);
    }

    /// A counter that changes whenever the index does.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Collection>> {
        self.collections.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Collection>> {
        self.collections.write().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, vector: &[f32]) -> Result<(), VectorError> {
        if vector.len() != self.dim {
            return Err(VectorError::Dimension { expected: self.dim, got: vector.len() });
        }
        Ok(())
    }

    /// Adds (or replaces) the vector of one enrolled image.
    pub fn insert(&self, collection: &str, record_id: &str, image_id: &str, vector: &[f32]) -> Result<(), VectorError> {
        self.check(vector)?;
        let mut all = self.write();
        let c = all.entry(collection.to_string()).or_default();
        let result = c.insert(self.dim, &self.config, image_id, record_id, vector, false);
        c.ensure_quant(self.dim, self.exact_scan());
        self.changed();
        result
    }

    /// Adds many vectors at once (loading from the store): the graph, when the
    /// collection is large enough, is built once at the end instead of row by row.
    pub fn insert_bulk<'a>(
        &self,
        rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str, &'a [f32])>,
    ) -> Result<(), VectorError> {
        let mut all = self.write();
        let before: HashMap<String, usize> = all.iter().map(|(name, c)| (name.clone(), c.len())).collect();
        for (collection, record_id, image_id, vector) in rows {
            self.check(vector)?;
            let c = all.entry(collection.to_string()).or_default();
            c.insert(self.dim, &self.config, image_id, record_id, vector, true)?;
        }
        for (name, c) in all.iter_mut() {
            if c.graph.is_some() {
                c.graph_add_rows(self.dim, before.get(name).copied().unwrap_or(0))?;
            } else if c.len() >= self.config.ann_min_rows {
                c.build_graph(self.dim, &self.config)?;
            }
            c.ensure_quant(self.dim, self.exact_scan());
        }
        self.changed();
        Ok(())
    }

    /// Removes the vectors of these images; returns how many were present.
    pub fn remove_images(&self, collection: &str, image_ids: &[String]) -> usize {
        let mut all = self.write();
        let Some(c) = all.get_mut(collection) else {
            return 0;
        };
        let removed = image_ids.iter().filter(|id| c.remove(self.dim, id)).count();
        self.changed();
        removed
    }

    /// Drops a whole collection.
    pub fn remove_collection(&self, collection: &str) {
        self.write().remove(collection);
        self.changed();
    }

    /// Number of vectors in a collection.
    pub fn len(&self, collection: &str) -> usize {
        self.read().get(collection).map_or(0, Collection::len)
    }

    /// Vectors, search mode and memory of every collection.
    pub fn stats(&self) -> HashMap<String, CollectionStats> {
        self.read()
            .iter()
            .map(|(name, c)| {
                let graph = c.graph.as_ref();
                let stats = CollectionStats {
                    vectors: c.len(),
                    approximate: graph.is_some() && c.len() >= self.config.ann_min_rows,
                    vector_bytes: c.vectors.capacity() * 4
                        + graph.map_or(0, |g| g.memory())
                        + c.quant.as_ref().map_or(0, Quantised::bytes),
                    scan_bytes: c.quant.as_ref().map_or(0, Quantised::bytes),
                };
                (name.clone(), stats)
            })
            .collect()
    }

    /// The best `max_results` records across `collections` with similarity at least
    /// `min_similarity`, best first; each record appears once, with its best image.
    pub fn search(
        &self,
        query: &[f32],
        collections: &[&str],
        min_similarity: f32,
        max_results: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        self.search_with(query, collections, min_similarity, max_results, false)
    }

    /// [`VectorIndex::search`] by an exact scan even where a graph exists: the ground
    /// truth that the graph's recall is measured against.
    pub fn search_exact(
        &self,
        query: &[f32],
        collections: &[&str],
        min_similarity: f32,
        max_results: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        self.search_with(query, collections, min_similarity, max_results, true)
    }

    fn search_with(
        &self,
        query: &[f32],
        collections: &[&str],
        min_similarity: f32,
        max_results: usize,
        exact: bool,
    ) -> Result<Vec<Hit>, VectorError> {
        self.check(query)?;
        if max_results == 0 {
            return Ok(Vec::new());
        }
        let all = self.read();
        let mut best: HashMap<(&str, &str), (f32, &str)> = HashMap::new();
        let config = VectorConfig { ef_search: self.ef_search.load(Ordering::Relaxed), ..self.config };
        // Each collection once, in the order asked.
        let mut named: Vec<(&str, &Collection)> = Vec::with_capacity(collections.len());
        for &name in collections {
            if let Some(c) = all.get(name)
                && !named.iter().any(|(n, _)| *n == name)
            {
                named.push((name, c));
            }
        }
        // The collections without a graph are scanned together in one pass over all
        // their rows, so a search of many small indexes costs what one index of their
        // total size does, not one scan (and one thread start-up) per index. Each
        // collection still gets exactly the rows it would get alone, so the merge below
        // is unchanged. A graph is per collection, and only a collection of at least
        // `ann_min_rows` has one: the graph searches are at most faces / ann_min_rows.
        let scanned: Vec<&(&str, &Collection)> =
            named.iter().filter(|(_, c)| !c.searched_by_graph(&config, exact)).collect();
        let mut ks: Vec<usize> = scanned.iter().map(|(_, c)| c.first_k(max_results)).collect();
        let mut found: Vec<Vec<scan::Scored>> = vec![Vec::new(); scanned.len()];
        let mut pending: Vec<usize> = (0..scanned.len()).collect();
        // Widening too is one pass over the collections that need it, not one scan each
        // (a query like a person with many images widens in most collections at once).
        while !pending.is_empty() {
            let parts: Vec<(&Collection, usize)> = pending.iter().map(|&i| (scanned[i].1, ks[i])).collect();
            for (&i, rows) in pending.iter().zip(scan_many(query, &parts, self.dim, min_similarity)) {
                found[i] = rows;
            }
            pending.retain(|&i| !scanned[i].1.wide_enough(&found[i], ks[i], max_results));
            for &i in &pending {
                ks[i] = scanned[i].1.wider_k(ks[i]);
            }
        }
        let mut done: HashMap<&str, (usize, Vec<scan::Scored>)> = HashMap::with_capacity(scanned.len());
        for ((&&(name, _), k), rows) in scanned.iter().zip(ks).zip(found) {
            done.insert(name, (k, rows));
        }
        for &(name, c) in &named {
            let first = done.remove(name);
            for (score, owner) in
                c.best_per_record(self.dim, &config, query, min_similarity, max_results, exact, first)?
            {
                let slot = best.entry((name, &*owner.record_id)).or_insert((f32::NEG_INFINITY, ""));
                if score > slot.0 {
                    *slot = (score, &*owner.image_id);
                }
            }
        }
        let mut hits: Vec<Hit> = Vec::with_capacity(best.len());
        for ((collection, record_id), (similarity, image_id)) in best {
            // A damaged (non-unit) vector can score anything: never report such a value.
            let Some(similarity) = checked_similarity(similarity) else {
                let e = VectorError::Similarity {
                    collection: collection.to_string(),
                    image_id: image_id.to_string(),
                    similarity,
                };
                tracing::error!(error = %e, record_id, "search refused: a vector of the index is damaged");
                return Err(e);
            };
            hits.push(Hit {
                collection: collection.to_string(),
                record_id: record_id.to_string(),
                image_id: image_id.to_string(),
                similarity,
            });
        }
        hits.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then_with(|| a.collection.cmp(&b.collection))
                .then_with(|| a.record_id.cmp(&b.record_id))
        });
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

impl VectorIndex {
    /// `f` of the f32 matrix of `collection` (row-major), read in place under the read
    /// lock (no copy); `None` for an unknown collection.
    pub fn read_vectors<R>(&self, collection: &str, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        self.read().get(collection).map(|c| f(&c.vectors))
    }

    /// The rows of `collection` now (empty for an unknown collection).
    pub fn snapshot(&self, collection: &str) -> Snapshot {
        let all = self.read();
        let Some(c) = all.get(collection) else { return Snapshot { dim: self.dim, ..Snapshot::default() } };
        Snapshot {
            dim: self.dim,
            vectors: c.vectors.clone(),
            owners: c.owners.iter().map(|o| (o.image_id.to_string(), o.record_id.to_string())).collect(),
        }
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

#[cfg(test)]
mod tests;
