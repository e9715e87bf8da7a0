//! The approximate nearest-neighbour graph of a large collection.
//!
//! Built on USearch's HNSW (the `usearch` crate): a maintained, widely deployed
//! implementation with concurrent insertion, deletions, compact scalar quantisation
//! (f16 / i8) and a documented on-disk format — everything a hand-written graph would
//! need years to get right. We keep the exact f32 vectors ourselves, so the graph only
//! proposes candidates and every reported similarity is recomputed exactly.

use std::sync::{Condvar, Mutex};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::{VectorConfig, VectorError};

/// Concurrent searches the graph reserves per-thread scratch space for; more callers
/// than this wait their turn (USearch refuses a search without a free context).
const SEARCH_CONTEXTS: usize = 64;

/// How vectors are stored inside the graph (candidates are re-scored from f32 anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantization {
    F32,
    #[default]
    F16,
    I8,
}

impl Quantization {
    fn scalar(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::I8 => ScalarKind::I8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::F16 => "f16",
            Quantization::I8 => "i8",
        }
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Quantization::F32),
            "f16" => Ok(Quantization::F16),
            "i8" => Ok(Quantization::I8),
            other => Err(format!("unknown quantization {other:?} (f32, f16 or i8)")),
        }
    }
}

fn ann_error(e: cxx::Exception) -> VectorError {
    VectorError::Graph(e.what().to_string())
}

pub(crate) struct AnnGraph {
    index: Index,
    busy: Mutex<usize>,
    freed: Condvar,
}

impl AnnGraph {
    pub(crate) fn new(dim: usize, config: &VectorConfig, capacity: usize) -> Result<Self, VectorError> {
        let options = IndexOptions {
            dimensions: dim,
            metric: MetricKind::Cos,
            quantization: config.quantization.scalar(),
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.ef_search,
            multi: false,
        };
        let index = Index::new(&options).map_err(ann_error)?;
        index.reserve_capacity_and_threads(capacity.max(1024), SEARCH_CONTEXTS).map_err(ann_error)?;
        Ok(Self { index, busy: Mutex::new(0), freed: Condvar::new() })
    }

    /// Builds a graph over `rows` (key, vector) using every core.
    pub(crate) fn build<'a>(
        dim: usize,
        config: &VectorConfig,
        rows: impl ExactSizeIterator<Item = (u64, &'a [f32])>,
    ) -> Result<Self, VectorError> {
        let graph = Self::new(dim, config, rows.len())?;
        graph.add_many(rows.collect())?;
        Ok(graph)
    }

    /// Adds many rows using every core (USearch supports concurrent insertion).
    pub(crate) fn add_many(&self, rows: Vec<(u64, &[f32])>) -> Result<(), VectorError> {
        let needed = self.index.size() + rows.len();
        if needed > self.index.capacity() {
            self.index.reserve_capacity_and_threads(needed.max(1024), SEARCH_CONTEXTS).map_err(ann_error)?;
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, SEARCH_CONTEXTS);
        let per = rows.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let parts: Vec<_> = rows
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || chunk.iter().try_for_each(|(key, v)| self.index.add(*key, v).map_err(ann_error)))
                })
                .collect();
            parts.into_iter().try_for_each(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.index.size()
    }

    /// Bytes the graph holds (vectors and links).
    pub(crate) fn memory(&self) -> usize {
        self.index.memory_usage()
    }

    pub(crate) fn add(&self, key: u64, vector: &[f32]) -> Result<(), VectorError> {
        if self.index.size() + 1 > self.index.capacity() {
            let grown = (self.index.capacity() * 2).max(1024);
            self.index.reserve_capacity_and_threads(grown, SEARCH_CONTEXTS).map_err(ann_error)?;
        }
        self.index.add(key, vector).map_err(ann_error)
    }

    pub(crate) fn remove(&self, key: u64) -> Result<(), VectorError> {
        self.index.remove(key).map(|_| ()).map_err(ann_error)
    }

    /// Keys of the (approximately) `count` nearest vectors.
    pub(crate) fn search(&self, query: &[f32], count: usize) -> Result<Vec<u64>, VectorError> {
        let _slot = self.acquire();
        self.index.search(query, count).map(|m| m.keys).map_err(ann_error)
    }

    fn acquire(&self) -> SearchSlot<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= SEARCH_CONTEXTS {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        SearchSlot(self)
    }

    pub(crate) fn save(&self, path: &str) -> Result<(), VectorError> {
        self.index.save(path).map_err(ann_error)
    }

    pub(crate) fn load(path: &str, dim: usize, config: &VectorConfig) -> Result<Self, VectorError> {
        let graph = Self::new(dim, config, 0)?;
        graph.index.load(path).map_err(ann_error)?;
        if graph.index.dimensions() != dim {
            return Err(VectorError::Snapshot(format!("graph {path} has {} dimensions", graph.index.dimensions())));
        }
        let capacity = graph.index.size().max(1024);
        graph.index.reserve_capacity_and_threads(capacity, SEARCH_CONTEXTS).map_err(ann_error)?;
        graph.index.change_expansion_search(config.ef_search);
        Ok(graph)
    }
}

struct SearchSlot<'a>(&'a AnnGraph);

impl Drop for SearchSlot<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy -= 1;
        self.0.freed.notify_one();
    }
}
