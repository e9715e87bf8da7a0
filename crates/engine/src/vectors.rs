//! Where the vectors live and how they are searched: in memory, one
//! [`VectorIndex`] per model pack ([`Backend::InMemory`]), or in a store that searches
//! them itself ([`Backend::InDatabase`], PostgreSQL with pgvector). Every place that
//! reads or changes vectors asks [`Vectors`], which does the work for either backend.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use facesearch_face::calibration::Calibration;
use facesearch_face::{FacePipeline, Pack};
use facesearch_store::{EmbeddingRow, IndexInfo, NearestFace, Store, StoreError, VectorQuery, VectorStore};
use facesearch_vectors::{Hit, VectorError, VectorIndex};
use tokio::sync::OnceCell;

use crate::error::{EngineError, task_failed};

/// One model pack as the engine holds it.
pub(crate) struct PackSlot {
    pub(crate) pack: Pack,
    pub(crate) pipeline: OnceCell<Arc<FacePipeline>>,
    /// Empty when the vectors are in the database.
    pub(crate) vectors: VectorIndex,
    pub(crate) calibration: Calibration,
}

impl PackSlot {
    /// The lowest similarity whose calibrated score can reach `score` (slightly below,
    /// so that rounding in the inverse never loses a pair that scores exactly `score`).
    pub(crate) fn min_similarity_for(&self, score: f64) -> f32 {
        self.calibration.similarity_for(score) - 1e-4
    }

    /// The calibrated score of a similarity, rounded to two decimals (the value the
    /// thresholds apply to).
    pub(crate) fn score(&self, similarity: f32) -> f64 {
        round2(self.calibration.score(similarity))
    }
}

/// Where the vectors are searched.
pub(crate) enum Backend {
    /// In memory, in each pack's [`PackSlot::vectors`]. `routes` maps index id → pack
    /// for the indexes known at start and those moved since; an index missing there
    /// (created since start) is of the pack its store row names. Read for the whole of
    /// a scan; written when an index moves to another pack.
    InMemory { routes: RwLock<HashMap<String, Pack>> },
    /// The store searches its own vectors: nothing is held in memory, and each index's
    /// pack is read from its store row with every request (each node sharing the
    /// database sees the others' writes and pack switches at once).
    InDatabase,
}

/// The vectors of every pack, and the pack each index is searched with.
pub(crate) struct Vectors {
    /// One per [`Pack::ALL`], in that order.
    pub(crate) slots: Vec<PackSlot>,
    pub(crate) backend: Backend,
}

/// The hits of a scan, scored and best first; `None` when an index is now of a pack
/// that has no probe embedding (it moved since the probe was analysed).
pub(crate) type Scored = Option<Vec<(Hit, f64)>>;

impl Vectors {
    pub(crate) fn slot(&self, pack: Pack) -> &PackSlot {
        // Every pack has a slot (built from Pack::ALL).
        self.slots.iter().find(|s| s.pack == pack).unwrap_or(&self.slots[0])
    }

    /// The routes, read-locked (in memory only).
    fn routes(&self) -> Option<RwLockReadGuard<'_, HashMap<String, Pack>>> {
        match &self.backend {
            Backend::InMemory { routes } => Some(routes.read().unwrap_or_else(PoisonError::into_inner)),
            Backend::InDatabase => None,
        }
    }

    fn pack_in(routes: Option<&HashMap<String, Pack>>, index: &IndexInfo) -> Result<Pack, EngineError> {
        match routes.and_then(|r| r.get(&index.id)) {
            Some(pack) => Ok(*pack),
            None => parse_pack(index),
        }
    }

    /// The pack `index` is searched with now.
    pub(crate) fn pack_of(&self, index: &IndexInfo) -> Result<Pack, EngineError> {
        Self::pack_in(self.routes().as_deref(), index)
    }

    /// The pack of each index, each pack once, in the order first met.
    pub(crate) fn packs_of(&self, indexes: &[IndexInfo]) -> Result<Vec<Pack>, EngineError> {
        let routes = self.routes();
        let mut packs = Vec::new();
        for index in indexes {
            let pack = Self::pack_in(routes.as_deref(), index)?;
            if !packs.contains(&pack) {
                packs.push(pack);
            }
        }
        Ok(packs)
    }

    /// Adds a committed face (the database has it already).
    pub(crate) fn insert(
        &self,
        pack: Pack,
        index_id: &str,
        record_id: &str,
        image_id: &str,
        embedding: &[f32],
    ) -> Result<(), VectorError> {
        match self.backend {
            Backend::InMemory { .. } => self.slot(pack).vectors.insert(index_id, record_id, image_id, embedding),
            Backend::InDatabase => Ok(()),
        }
    }

    /// Removes the faces of deleted images (of whatever pack).
    pub(crate) fn remove_images(&self, index_id: &str, image_ids: &[String]) {
        for slot in &self.slots {
            slot.vectors.remove_images(index_id, image_ids);
        }
    }

    /// Forgets a deleted index.
    pub(crate) fn remove_index(&self, index_id: &str) {
        for slot in &self.slots {
            slot.vectors.remove_collection(index_id);
        }
        if let Backend::InMemory { routes } = &self.backend {
            routes.write().unwrap_or_else(PoisonError::into_inner).remove(index_id);
        }
    }

    /// An index moved to `pack`: its faces are replaced by `rows` under the routes'
    /// write lock, so a scan sees the index all old or all new.
    pub(crate) fn switch(&self, index_id: &str, pack: Pack, rows: &[EmbeddingRow]) -> Result<(), VectorError> {
        let Backend::InMemory { routes } = &self.backend else { return Ok(()) };
        let mut routes = routes.write().unwrap_or_else(PoisonError::into_inner);
        for slot in &self.slots {
            slot.vectors.remove_collection(index_id);
        }
        let slot = self.slot(pack);
        for row in rows {
            slot.vectors.insert(&row.index_id, &row.record_id, &row.image_id, &row.vector)?;
        }
        routes.insert(index_id.to_string(), pack);
        Ok(())
    }

    /// The pack whose calibration scores a search of `index`, and the number of faces
    /// the probe is compared with: the vectors held in memory, or, when the database
    /// searches the vectors, its record count (what the store itself sizes a search
    /// by; a record with several images makes more comparisons than that).
    pub(crate) fn faces_searched(&self, index: &IndexInfo) -> Result<(Pack, u64), EngineError> {
        let pack = self.pack_of(index)?;
        match self.backend {
            Backend::InMemory { .. } => {
                let faces = self.slot(pack).vectors.len(&index.id);
                Ok((pack, u64::try_from(faces).unwrap_or(u64::MAX)))
            }
            Backend::InDatabase => Ok((pack, index.record_count)),
        }
    }

    /// The faces of `indexes` under `pack`, as one row-major matrix and each row's
    /// (index, image, record).
    pub(crate) async fn all_of(
        &self,
        store: &Arc<dyn Store>,
        pack: Pack,
        indexes: &[IndexInfo],
    ) -> Result<(Vec<f32>, Vec<(String, String, String)>), EngineError> {
        let (mut vectors, mut rows) = (Vec::new(), Vec::new());
        match self.backend {
            Backend::InDatabase => {
                let ids: Vec<String> = indexes.iter().map(|i| i.id.clone()).collect();
                for row in store.embeddings_in(pack, &ids).await? {
                    vectors.extend_from_slice(&row.vector);
                    rows.push((row.index_id, row.image_id, row.record_id));
                }
            }
            Backend::InMemory { .. } => {
                for index in indexes {
                    let snapshot = self.slot(pack).vectors.snapshot(&index.id);
                    vectors.extend_from_slice(&snapshot.vectors);
                    rows.extend(snapshot.owners.into_iter().map(|(image, record)| (index.id.clone(), image, record)));
                }
            }
        }
        Ok((vectors, rows))
    }

    /// The `limit` faces of one index nearest to `embedding` with at least
    /// `min_similarity`, by the pack's vectors (scanned on the blocking pool in memory).
    pub(crate) async fn nearest(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        pack: Pack,
        index_id: &str,
        embedding: &[f32],
        min_similarity: f32,
        limit: usize,
    ) -> Result<Vec<Hit>, EngineError> {
        match self.backend {
            Backend::InDatabase => {
                let query = VectorQuery {
                    pack,
                    index_ids: vec![index_id.to_string()],
                    vector: embedding.to_vec(),
                    min_similarity,
                    limit,
                };
                searcher(store)?.nearest_faces(query).await?.into_iter().map(hit_of).collect()
            }
            Backend::InMemory { .. } => {
                let (v, i, e) = (self.clone(), index_id.to_string(), embedding.to_vec());
                Ok(tokio::task::spawn_blocking(move || {
                    v.slot(pack).vectors.search(&e, &[i.as_str()], min_similarity, limit)
                })
                .await
                .map_err(task_failed)??)
            }
        }
    }

    /// Searches each index with the embedding of its pack and merges the hits of all
    /// packs by calibrated score, at most `candidates`, each scoring at least
    /// `min_score` (give or take the rounding, filtered later). Also returns how long
    /// the vector search took, when it ran.
    pub(crate) async fn scan(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        indexes: &[IndexInfo],
        embeddings: Vec<(Pack, Vec<f32>)>,
        min_score: f64,
        candidates: usize,
    ) -> Result<(Scored, Option<Duration>), EngineError> {
        match self.backend {
            Backend::InMemory { .. } => {
                let (vectors, indexes) = (self.clone(), indexes.to_vec());
                // The scan reads every vector: keep it off the async worker threads.
                tokio::task::spawn_blocking(move || {
                    let start = Instant::now();
                    // Held for the whole scan: an index cannot move to another pack meanwhile.
                    let routes = vectors.routes();
                    let by_pack = by_pack(&indexes, |index| Self::pack_in(routes.as_deref(), index))?;
                    let mut scored = Vec::new();
                    for (pack, ids) in by_pack {
                        let Some((_, embedding)) = embeddings.iter().find(|(p, _)| *p == pack) else {
                            return Ok((None, Some(start.elapsed())));
                        };
                        let slot = vectors.slot(pack);
                        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                        for hit in
                            slot.vectors.search(embedding, &ids, slot.min_similarity_for(min_score), candidates)?
                        {
                            let score = slot.score(hit.similarity);
                            scored.push((hit, score));
                        }
                    }
                    best_first(&mut scored, candidates);
                    Ok((Some(scored), Some(start.elapsed())))
                })
                .await
                .map_err(task_failed)?
            }
            Backend::InDatabase => {
                // One query per pack, each index with the pack the store says it holds now.
                let start = Instant::now();
                let mut scored = Vec::new();
                for (pack, index_ids) in by_pack(indexes, parse_pack)? {
                    let Some((_, embedding)) = embeddings.iter().find(|(p, _)| *p == pack) else {
                        return Ok((None, None));
                    };
                    let slot = self.slot(pack);
                    let query = VectorQuery {
                        pack,
                        index_ids,
                        vector: embedding.clone(),
                        min_similarity: slot.min_similarity_for(min_score),
                        limit: candidates,
                    };
                    let found = match searcher(store)?.nearest_faces(query).await {
                        Ok(found) => found,
                        Err(StoreError::PackMismatch { .. }) => return Ok((None, None)),
                        Err(e) => return Err(e.into()),
                    };
                    for face in found {
                        let hit = hit_of(face)?;
                        let score = slot.score(hit.similarity);
                        scored.push((hit, score));
                    }
                }
                best_first(&mut scored, candidates);
                Ok((Some(scored), Some(start.elapsed())))
            }
        }
    }
}

/// The ids of `indexes` grouped by their pack, packs in the order first met.
fn by_pack(
    indexes: &[IndexInfo],
    pack_of: impl Fn(&IndexInfo) -> Result<Pack, EngineError>,
) -> Result<Vec<(Pack, Vec<String>)>, EngineError> {
    let mut by_pack: Vec<(Pack, Vec<String>)> = Vec::new();
    for index in indexes {
        let pack = pack_of(index)?;
        match by_pack.iter_mut().find(|(p, _)| *p == pack) {
            Some((_, ids)) => ids.push(index.id.clone()),
            None => by_pack.push((pack, vec![index.id.clone()])),
        }
    }
    Ok(by_pack)
}

/// The pack an index's store row names, when this build runs it.
pub(crate) fn parse_pack(index: &IndexInfo) -> Result<Pack, EngineError> {
    index.pack.known().ok_or_else(|| EngineError::UnknownPack { index: index.id.clone(), pack: index.pack.to_string() })
}

/// The store's own vector search, which the in-database backend is chosen for: a
/// store without one there is a wiring fault, reported rather than a panic.
fn searcher(store: &Arc<dyn Store>) -> Result<&dyn VectorStore, EngineError> {
    store
        .vector_search()
        .ok_or_else(|| StoreError::InvalidInput("this store does not search vectors; the engine does".into()).into())
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A face the store found, as the in-memory index reports one (its similarity
/// checked as the index checks its own, see [`checked`]).
fn hit_of(face: NearestFace) -> Result<Hit, EngineError> {
    let similarity = checked(face.similarity, &face.index_id, &face.image_id)?;
    Ok(Hit { collection: face.index_id, record_id: face.record_id, image_id: face.image_id, similarity })
}

/// A similarity fit to report: within [-1, 1] (see
/// [`facesearch_vectors::checked_similarity`]). Anything else comes only from a vector
/// that is not of unit length (damage): it is logged as an error and the request fails
/// as an internal error, so that it never reaches a response as a score.
pub(crate) fn checked(similarity: f32, collection: &str, image_id: &str) -> Result<f32, EngineError> {
    facesearch_vectors::checked_similarity(similarity).ok_or_else(|| {
        let e =
            VectorError::Similarity { collection: collection.to_string(), image_id: image_id.to_string(), similarity };
        tracing::error!(error = %e, "request refused: a stored vector is damaged");
        EngineError::Vectors(e)
    })
}

/// Sorts hits by calibrated score (then similarity, then record id, for a stable
/// order) and keeps the best `n`.
fn best_first(scored: &mut Vec<(Hit, f64)>, n: usize) {
    scored.sort_by(|(a, sa), (b, sb)| {
        sb.total_cmp(sa).then_with(|| b.similarity.total_cmp(&a.similarity)).then_with(|| a.record_id.cmp(&b.record_id))
    });
    scored.truncate(n);
}
