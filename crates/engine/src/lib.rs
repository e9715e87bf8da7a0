//! The face search engine: what the service does, independent of HTTP.
//!
//! It ties three parts together — the face pipeline (photo → embedding), the
//! in-memory vector index (embedding → nearest records) and the store (the durable
//! truth) — and keeps the index in step with the store: vectors are loaded from the
//! store at start, added after a write is committed and removed after a delete is
//! committed, so a search never returns a record the store no longer has.
//!
//! It also finds duplicate identities across the records of indexes ([`duplicates`]).
//!
//! CPU-heavy pipeline work runs on the blocking thread pool, bounded by a semaphore so
//! that a burst of requests queues (and can be refused) instead of piling up threads.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facesearch_face::calibration::{Calibration, CalibrationError};
use facesearch_face::{FaceChoice, FacePipeline, Liveness, PipelineError, ProbeFace, QualityMinimums, StageTimings};
use facesearch_index::{FaceIndex, IndexError};
use facesearch_store::{EnrolOutcome, IndexInfo, NewImage, Record, RecordFields, Store, StoreError};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};

mod duplicates;

pub use duplicates::{
    DuplicateGroup, DuplicatePair, DuplicateProgress, DuplicateRecord, DuplicateReport, MAX_DUPLICATE_PAIRS,
    same_identity,
};

/// Serialises "write the store, then update the in-memory index", so that an enrolment
/// racing a delete can never leave a deleted person's vector in memory. The server
/// holds it while the engine loads its snapshot, and deletes made before the engine is
/// ready take it too. SQLite has one writer anyway, so this costs no parallelism.
pub type WriteLock = Arc<Mutex<()>>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Face(#[from] PipelineError),
    #[error("the face was judged a spoof (live probability {score:.3} below the threshold {threshold:.3})")]
    LivenessFailed { score: f32, threshold: f32 },
    #[error(
        "liveness cannot be judged: the face fills the frame (context {context:.2}× the face, at least {min_context:.2}× needed); send a photo showing the head and shoulders"
    )]
    LivenessCannotJudge { context: f32, min_context: f32 },
    #[error("no index with id {0:?}")]
    IndexNotFound(String),
    #[error("index {index} holds vectors of the {index_pack} model pack; this server runs {server_pack}")]
    PackMismatch { index: String, index_pack: String, server_pack: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    #[error("the face is already enrolled in this index as record {record_id} (match score {score:.2})")]
    DuplicateFace { record_id: String, image_id: String, score: f64 },
    #[error("the server is too busy; retry shortly")]
    Busy,
    #[error("internal task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Live probability below which a probe is refused as a spoof.
    pub liveness_threshold: f32,
    /// Photos analysed at once; more wait, up to `queue_timeout`.
    pub max_concurrent_analyses: usize,
    /// How long a photo may wait for an analysis slot before the request is refused as busy.
    pub queue_timeout: Duration,
    /// The least face quality an enrolment needs; searches report probes below it.
    pub quality: QualityMinimums,
    /// Calibrated score at or above which two faces of different records count as one
    /// person: the default of a duplicate search and the bar of `check_duplicates`.
    pub duplicate_score: f64,
}

/// The default [`EngineConfig::duplicate_score`]: strict (a stranger scores this high
/// with probability about 2e-6 on the shipped calibration of the `open` pack).
pub const DEFAULT_DUPLICATE_SCORE: f64 = 80.0;

/// Parameters of one search.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub indexes: Vec<IndexInfo>,
    pub min_score: f64,
    pub max_results: usize,
    pub liveness: bool,
}

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct Match {
    pub record: Record,
    pub index_name: String,
    pub index_type: String,
    pub image_id: String,
    pub similarity: f32,
    /// Calibrated score, rounded to two decimals (the value the threshold applies to).
    pub score: f64,
    pub distance: f64,
}

/// The result of a search, with what was found out about the probe.
#[derive(Debug, Clone, Serialize)]
pub struct SearchOutcome {
    pub matches: Vec<Match>,
    pub probe: ProbeFace,
}

/// Why the engine analysed a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analysis {
    /// The probe of a search.
    Search,
    /// A photo to enrol (a new record or another image of one).
    Enrol,
}

impl Analysis {
    pub fn as_str(self) -> &'static str {
        match self {
            Analysis::Search => "search",
            Analysis::Enrol => "enrol",
        }
    }
}

/// Why a search probe was refused by the liveness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessRefusal {
    /// Judged a spoof (`LivenessFailed`).
    Spoof,
    /// Too little context around the face to judge (`LivenessCannotJudge`).
    CannotJudge,
}

impl LivenessRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            LivenessRefusal::Spoof => "spoof",
            LivenessRefusal::CannotJudge => "cannot_judge",
        }
    }
}

/// Told what the engine did and how long it took, e.g. to export metrics. Every method
/// has an empty default; calls are made on the request's task and must be quick.
pub trait EngineObserver: Send + Sync {
    /// A photo went through the face pipeline successfully (per-stage timings).
    fn photo_analysed(&self, _analysis: Analysis, _timings: &StageTimings) {}
    /// The in-memory vector search of one query took `elapsed`.
    fn vectors_searched(&self, _elapsed: Duration) {}
    /// A search probe was refused by the liveness check.
    fn liveness_refused(&self, _refusal: LivenessRefusal) {}
}

pub struct Engine {
    observer: Option<Arc<dyn EngineObserver>>,
    store: Arc<dyn Store>,
    pipeline: Arc<FacePipeline>,
    index: Arc<FaceIndex>,
    calibration: Calibration,
    config: EngineConfig,
    analyses: Arc<Semaphore>,
    writes: WriteLock,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn task_failed(e: tokio::task::JoinError) -> EngineError {
    EngineError::Task(e.to_string())
}

impl Engine {
    /// Loads every stored vector of the pipeline's pack into memory. The caller holds
    /// `writes` from before this call until the engine is published, so that no write
    /// slips between the snapshot and the engine taking over.
    pub async fn open(
        store: Arc<dyn Store>,
        pipeline: Arc<FacePipeline>,
        config: EngineConfig,
        writes: WriteLock,
    ) -> Result<Self, EngineError> {
        let pack = pipeline.pack();
        let calibration = Calibration::shipped(pack)?;
        let index = FaceIndex::new(pack.dimension());
        let rows = store.embeddings(pack.name()).await?;
        let count = rows.len();
        for row in rows {
            index.insert(&row.index_id, &row.record_id, &row.image_id, &row.vector)?;
        }
        tracing::info!(faces = count, pack = pack.name(), "vector index loaded");
        Ok(Self {
            observer: None,
            store,
            pipeline,
            index: Arc::new(index),
            calibration,
            analyses: Arc::new(Semaphore::new(config.max_concurrent_analyses.max(1))),
            config,
            writes,
        })
    }

    /// Reports the engine's work (timings, liveness refusals) to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn EngineObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, f: impl FnOnce(&dyn EngineObserver)) {
        if let Some(o) = &self.observer {
            f(o.as_ref());
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn pipeline(&self) -> &FacePipeline {
        &self.pipeline
    }

    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The index with this id, ready to be searched or written by this server.
    pub async fn usable_index(&self, id: &str) -> Result<IndexInfo, EngineError> {
        let index = self.store.get_index(id).await?.ok_or_else(|| EngineError::IndexNotFound(id.to_string()))?;
        if index.pack != self.pipeline.pack().name() {
            return Err(EngineError::PackMismatch {
                index: index.id,
                index_pack: index.pack,
                server_pack: self.pipeline.pack().name().to_string(),
            });
        }
        Ok(index)
    }

    /// Runs the face pipeline on the blocking pool and hands the photo back (enrolment
    /// stores it; no copy of up to the image limit is made). The slot is held by the
    /// blocking task itself, so a cancelled request cannot let more analyses run than allowed.
    async fn analyse(
        &self,
        bytes: Vec<u8>,
        analysis: Analysis,
        liveness: bool,
    ) -> Result<(ProbeFace, Vec<u8>), EngineError> {
        let choice = match analysis {
            Analysis::Search => FaceChoice::Largest,
            Analysis::Enrol => FaceChoice::Unambiguous,
        };
        let permit = tokio::time::timeout(self.config.queue_timeout, self.analyses.clone().acquire_owned())
            .await
            .map_err(|_| EngineError::Busy)?
            .map_err(|_| EngineError::Busy)?;
        let pipeline = self.pipeline.clone();
        // Enrolment refuses faces below the quality minimums; a search only reports them.
        let gate = (analysis == Analysis::Enrol).then_some(self.config.quality);
        let (probe, bytes) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            (pipeline.probe_gated(&bytes, choice, liveness, gate.as_ref()), bytes)
        })
        .await
        .map_err(task_failed)?;
        let probe = probe?;
        self.observe(|o| o.photo_analysed(analysis, &probe.timings));
        Ok((probe, bytes))
    }

    /// Runs a store write and the matching index update as one task under the write
    /// lock: a client that disconnects mid-request cannot split them.
    async fn committed<T, F>(&self, work: impl FnOnce(Arc<dyn Store>, Arc<FaceIndex>) -> F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        let writes = self.writes.clone();
        let job = work(self.store.clone(), self.index.clone());
        tokio::spawn(async move {
            let _guard = writes.lock().await;
            job.await
        })
        .await
        .map_err(task_failed)?
    }

    /// 1:N search of the largest face of `bytes` in `query.indexes`.
    pub async fn search(&self, bytes: Vec<u8>, query: &SearchQuery) -> Result<SearchOutcome, EngineError> {
        let (probe, _) = self.analyse(bytes, Analysis::Search, query.liveness).await?;
        let threshold = self.config.liveness_threshold;
        match probe.liveness {
            // Fail closed: a NaN probability is not live.
            Some(Liveness::Judged { live_probability })
                if live_probability.is_nan() || live_probability < threshold =>
            {
                self.observe(|o| o.liveness_refused(LivenessRefusal::Spoof));
                return Err(EngineError::LivenessFailed { score: live_probability, threshold });
            }
            Some(Liveness::CannotJudge { context, min_context }) => {
                self.observe(|o| o.liveness_refused(LivenessRefusal::CannotJudge));
                return Err(EngineError::LivenessCannotJudge { context, min_context });
            }
            _ => {}
        }
        let names: Vec<String> = query.indexes.iter().map(|i| i.id.clone()).collect();
        // Slightly below the threshold, then filtered on the score itself, so that
        // rounding in the inverse never drops a match that scores exactly min_score.
        let min_similarity = self.calibration.similarity_for(query.min_score) - 1e-4;
        let candidates = query.max_results.saturating_mul(2).max(query.max_results);
        let (index, embedding) = (self.index.clone(), probe.embedding.clone());
        // The scan reads every vector: keep it off the async worker threads.
        let (hits, elapsed) = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let start = Instant::now();
            let hits = index.search(&embedding, &names, min_similarity, candidates);
            (hits, start.elapsed())
        })
        .await
        .map_err(task_failed)?;
        let hits = hits?;
        self.observe(|o| o.vectors_searched(elapsed));
        let ids: Vec<String> = hits.iter().map(|h| h.record_id.clone()).collect();
        let records = self.store.get_records(&ids).await?;
        let mut matches = Vec::new();
        for hit in hits {
            let score = round2(self.calibration.score(hit.similarity));
            // A record deleted between the scan and this read is simply not returned.
            let (Some(record), Some(index)) = (
                records.iter().find(|r| r.record_id == hit.record_id),
                query.indexes.iter().find(|i| i.id == hit.collection),
            ) else {
                continue;
            };
            if score < query.min_score {
                continue;
            }
            matches.push(Match {
                record: record.clone(),
                index_name: index.index_name.clone(),
                index_type: index.index_type.as_str().to_string(),
                image_id: hit.image_id,
                similarity: hit.similarity,
                score,
                // 1 − cosine; rounding can push a self-match a hair below zero.
                distance: f64::from(1.0 - hit.similarity).max(0.0) + 0.0,
            });
        }
        matches.truncate(query.max_results);
        Ok(SearchOutcome { matches, probe })
    }

    fn new_image(probe: &ProbeFace, bytes: Vec<u8>, file_name: String) -> NewImage {
        NewImage {
            bytes,
            mime: probe.mime.to_string(),
            file_name,
            embedding: probe.embedding.clone(),
            face: serde_json::json!({
                "bbox": probe.detection.bbox,
                "landmarks": probe.detection.landmarks,
                "score": probe.detection.score,
                "faces_in_image": probe.faces_in_image,
            }),
            quality: serde_json::to_value(probe.quality).ok(),
        }
    }

    /// The lowest similarity whose calibrated score can reach `score` (slightly below,
    /// so that rounding never loses a pair that scores exactly `score`).
    fn min_similarity_for(&self, score: f64) -> f32 {
        self.calibration.similarity_for(score) - 1e-4
    }

    /// Inside the write lock: refuses a face that already matches another record of
    /// `index_id` at or above the duplicate score.
    fn refuse_duplicate(
        vectors: &FaceIndex,
        calibration: &Calibration,
        index_id: &str,
        own_record: Option<&str>,
        embedding: &[f32],
        (min_similarity, min_score): (f32, f64),
    ) -> Result<(), EngineError> {
        // Two candidates: one may be the record the image is being added to.
        let hits = vectors.search(embedding, &[index_id], min_similarity, 2)?;
        let other = hits.into_iter().find(|h| Some(h.record_id.as_str()) != own_record);
        match other {
            Some(hit) if round2(calibration.score(hit.similarity)) >= min_score => Err(EngineError::DuplicateFace {
                record_id: hit.record_id,
                image_id: hit.image_id,
                score: round2(calibration.score(hit.similarity)),
            }),
            _ => Ok(()),
        }
    }

    /// Enrols a new record from one photo. A `reference` already in the index returns
    /// that record and stores nothing, so a retried enrolment never duplicates. With
    /// `check_duplicates`, a face that already matches another record of the index at
    /// or above the duplicate score is refused ([`EngineError::DuplicateFace`]); the
    /// check and the write happen under the write lock, so two concurrent enrolments of
    /// one face cannot both pass it.
    pub async fn enrol(
        &self,
        index: &IndexInfo,
        fields: RecordFields,
        reference: Option<String>,
        bytes: Vec<u8>,
        file_name: Option<String>,
        check_duplicates: bool,
    ) -> Result<EnrolOutcome, EngineError> {
        if let Some(reference) = reference.as_deref().filter(|r| !r.is_empty())
            && let Some(existing) = self.store.find_by_reference(&index.id, reference).await?
        {
            return Ok(EnrolOutcome::Existing(existing));
        }
        let (probe, bytes) = self.analyse(bytes, Analysis::Enrol, false).await?;
        let image = Self::new_image(&probe, bytes, stored_file_name(file_name.as_deref(), probe.mime));
        let index_id = index.id.clone();
        let duplicates = self.duplicate_bar(check_duplicates);
        let calibration = self.calibration.clone();
        self.committed(move |store, vectors| async move {
            if let Some(bar) = duplicates {
                let (v, i, e) = (vectors.clone(), index_id.clone(), probe.embedding.clone());
                tokio::task::spawn_blocking(move || Self::refuse_duplicate(&v, &calibration, &i, None, &e, bar))
                    .await
                    .map_err(task_failed)??;
            }
            let outcome = store
                .enrol(&index_id, fields, reference, image)
                .await?
                .ok_or(EngineError::IndexNotFound(index_id.clone()))?;
            if let EnrolOutcome::Created(record) = &outcome
                && let Some(image_id) = record.image_ids.first()
            {
                vectors.insert(&index_id, &record.record_id, image_id, &probe.embedding)?;
            }
            Ok(outcome)
        })
        .await
    }

    /// The similarity and score a duplicate check needs, if one was asked for.
    fn duplicate_bar(&self, check: bool) -> Option<(f32, f64)> {
        check.then(|| (self.min_similarity_for(self.config.duplicate_score), self.config.duplicate_score))
    }

    /// Adds a photo to an existing record; `None` if there is no such record. With
    /// `check_duplicates`, a face matching *another* record is refused (see [`Engine::enrol`]).
    pub async fn add_image(
        &self,
        index: &IndexInfo,
        record_id: &str,
        bytes: Vec<u8>,
        file_name: Option<String>,
        check_duplicates: bool,
    ) -> Result<Option<Record>, EngineError> {
        if self.store.get_record(&index.id, record_id).await?.is_none() {
            return Ok(None);
        }
        let (probe, bytes) = self.analyse(bytes, Analysis::Enrol, false).await?;
        let image = Self::new_image(&probe, bytes, stored_file_name(file_name.as_deref(), probe.mime));
        let (index_id, record_id) = (index.id.clone(), record_id.to_string());
        let duplicates = self.duplicate_bar(check_duplicates);
        let calibration = self.calibration.clone();
        self.committed(move |store, vectors| async move {
            if let Some(bar) = duplicates {
                let (v, i, r, e) = (vectors.clone(), index_id.clone(), record_id.clone(), probe.embedding.clone());
                tokio::task::spawn_blocking(move || Self::refuse_duplicate(&v, &calibration, &i, Some(&r), &e, bar))
                    .await
                    .map_err(task_failed)??;
            }
            let Some((record, image_id)) = store.add_image(&index_id, &record_id, image).await? else {
                return Ok(None);
            };
            vectors.insert(&index_id, &record_id, &image_id, &probe.embedding)?;
            Ok(Some(record))
        })
        .await
    }

    /// Deletes a record with its images and vectors; `false` if there was none.
    pub async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<bool, EngineError> {
        let (index_id, record_id) = (index_id.to_string(), record_id.to_string());
        self.committed(move |store, vectors| async move {
            let Some(image_ids) = store.delete_record(&index_id, &record_id).await? else {
                return Ok(false);
            };
            vectors.remove_images(&index_id, &image_ids);
            Ok(true)
        })
        .await
    }

    /// Deletes an index with all its records, images and vectors.
    pub async fn delete_index(&self, index_id: &str) -> Result<bool, EngineError> {
        let index_id = index_id.to_string();
        self.committed(move |store, vectors| async move {
            let deleted = store.delete_index(&index_id).await?;
            vectors.remove_collection(&index_id);
            Ok(deleted)
        })
        .await
    }

    /// Faces held in memory for an index.
    pub fn vectors_in(&self, index_id: &str) -> usize {
        self.index.len(index_id)
    }
}

/// A safe name to store and return for an uploaded file: the client's base name if it
/// is plain, else `face_image.EXT` from the detected format.
pub fn stored_file_name(client: Option<&str>, mime: &str) -> String {
    let base = client.and_then(|n| n.rsplit(['/', '\\']).next()).unwrap_or("");
    let plain = !base.is_empty()
        && base.len() <= 128
        && !base.starts_with('.')
        && base.chars().all(|c| c.is_ascii_alphanumeric() || "._- ".contains(c));
    if plain {
        return base.to_string();
    }
    let ext = match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/bmp" => "bmp",
        "image/gif" => "gif",
        "image/tiff" => "tiff",
        _ => "img",
    };
    format!("face_image.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(stored_file_name(Some("john.jpg"), "image/jpeg"), "john.jpg");
        assert_eq!(stored_file_name(Some("C:\\photos\\john 2.png"), "image/png"), "john 2.png");
        assert_eq!(stored_file_name(Some("../../etc/passwd"), "image/jpeg"), "passwd");
        assert_eq!(stored_file_name(Some("<script>.jpg"), "image/jpeg"), "face_image.jpg");
        assert_eq!(stored_file_name(Some(".hidden"), "image/webp"), "face_image.webp");
        assert_eq!(stored_file_name(None, "image/png"), "face_image.png");
    }
}
