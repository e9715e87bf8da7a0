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
//! # Vectors in the database
//!
//! A store that searches vectors itself ([`Store::searches_vectors`]: PostgreSQL with
//! pgvector) is used as it is: the engine then holds no vectors in memory, sends every
//! search and duplicate check to the store, and saves no snapshot, so any number of
//! nodes can share one database and each sees the others' writes at once. Which pack
//! an index holds is then read from the store with every request, and the store
//! refuses a vector of another pack ([`StoreError::PackMismatch`]): a search embeds
//! the probe again with the new pack; an enrolment (its photo already handed to the
//! store) is answered "retry" — only possible while another node switches the index.
//!
//! CPU-heavy pipeline work runs on the blocking thread pool, bounded by a semaphore so
//! that a burst of requests queues (and can be refused) instead of piling up threads.
//!
//! # Several model packs
//!
//! Every index records the model pack its vectors come from, and the engine serves
//! indexes of every pack this build knows: per pack it keeps a vector index (one
//! embedding dimension each), the pack's score calibration, and the pack's face
//! pipeline. The server's configured pipeline is handed in at start; the others are
//! loaded on first need (their models fetched on first use, as always), so a server
//! whose indexes are all of its own pack never loads a second pack.
//!
//! Vectors of different packs are never compared. A search over indexes of several
//! packs embeds the probe once per pack involved (the liveness check runs once, on the
//! first), searches each pack's indexes with that pack's embedding, and merges the
//! matches by `match_score`, which is calibrated per pack to the same false-match
//! rates and so means the same thing whichever pack produced it. (Within one pack this
//! is the same order as by distance.)
//!
//! Which pack an index is searched with is decided under one lock together with the
//! scan, and an index moves to another pack (see [`reembed`]) under the same lock in
//! its write mode, so a search sees an index's vectors all of one pack, never a mix
//! and never none. A probe or an enrolment embedded with a pack the index has just
//! left is embedded again with the new one.

mod every_face;
pub mod reembed;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use facesearch_face::calibration::{Calibration, CalibrationError};
use facesearch_face::{
    FaceChoice, FacePipeline, Liveness, Pack, PipelineError, ProbeFace, QualityMinimums, StageTimings,
};
use facesearch_index::{FaceIndex, Hit, IndexConfig, IndexError};
use facesearch_store::{EnrolOutcome, IndexInfo, NewImage, Record, RecordFields, Store, StoreError, VectorQuery};
use serde::Serialize;
use tokio::sync::{Mutex, OnceCell, Semaphore};

mod duplicates;
mod false_matches;

pub use duplicates::{
    DuplicateGroup, DuplicatePair, DuplicateProgress, DuplicateRecord, DuplicateReport, MAX_DUPLICATE_PAIRS,
    same_identity,
};
pub use false_matches::HINT_FPIR;

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
    #[error("index {index} holds vectors of the {pack:?} model pack, which this server cannot run")]
    UnknownPack { index: String, pack: String },
    #[error("index {0} moved to another model pack during the request; retry")]
    PackMoved(String),
    #[error("indexes {0} hold vectors of different model packs, which cannot be compared")]
    MixedPacks(String),
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
    /// Exact or approximate vector search, by collection size.
    pub index: IndexConfig,
    /// Test-only: a re-embedding job stops (still `running`, resumed at the next start)
    /// once this many images of its index are staged. Lets a test interrupt a job at a
    /// known point without timing. `None` in production.
    pub reembed_pause_after: Option<u64>,
    /// The least face quality an enrolment needs; searches report probes below it.
    pub quality: QualityMinimums,
    /// Calibrated score at or above which two faces of different records count as one
    /// person: the default of a duplicate search and the bar of `check_duplicates`.
    pub duplicate_score: f64,
}

/// The default [`EngineConfig::duplicate_score`]: strict (a stranger scores this high
/// with probability about 2e-6 on the shipped calibration of the `open` pack).
pub const DEFAULT_DUPLICATE_SCORE: f64 = 80.0;

/// Loads the face pipeline of a pack (fetching its models if needed). Called on the
/// blocking pool, at most once per pack.
pub type PipelineLoader = Arc<dyn Fn(Pack) -> Result<FacePipeline, PipelineError> + Send + Sync>;

/// How often a request embedded for a pack that its index has just left is tried again.
const PACK_ATTEMPTS: usize = 3;

/// Parameters of one search.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub indexes: Vec<IndexInfo>,
    pub min_score: f64,
    pub max_results: usize,
    pub liveness: bool,
    /// Search every face of the photo, at most this many (largest first), each with
    /// its own matches (`faces=all`); liveness is then not judged. `None`: the
    /// largest face only.
    pub every_face: Option<usize>,
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
    /// The matches of the largest face.
    pub matches: Vec<Match>,
    /// The largest face, analysed by the first of `packs`.
    pub probe: ProbeFace,
    /// The packs the probe was embedded with, the one that found `probe` first.
    pub packs: Vec<Pack>,
    /// With [`SearchQuery::every_face`]: every face searched, largest first (the first
    /// is `probe`, its matches `matches`); empty otherwise.
    pub faces: Vec<FaceResult>,
}

/// One face of a photo searched face by face.
#[derive(Debug, Clone, Serialize)]
pub struct FaceResult {
    pub detection: facesearch_face::Detection,
    /// `None` when the face could not be aligned.
    pub quality: Option<facesearch_face::FaceQuality>,
    /// Its matches, best first, or why it was not searched.
    pub matches: Result<Vec<Match>, facesearch_face::Unembedded>,
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

/// One model pack as the engine holds it.
struct PackSlot {
    pack: Pack,
    pipeline: OnceCell<Arc<FacePipeline>>,
    vectors: FaceIndex,
    calibration: Calibration,
}

/// The vectors of every pack, and the pack each index is searched with.
struct Vectors {
    /// One per [`Pack::ALL`], in that order.
    slots: Vec<PackSlot>,
    /// The store searches the vectors itself: the slots' indexes stay empty and
    /// `routes` is never filled (each node reads packs from the shared store).
    in_store: bool,
    /// Index id → pack, for the indexes known at start and those moved since; an
    /// index missing here (created since start) is of the pack its store row names.
    /// Read for the whole of a scan; written when an index moves to another pack.
    routes: RwLock<HashMap<String, Pack>>,
}

impl Vectors {
    fn slot(&self, pack: Pack) -> &PackSlot {
        // Every pack has a slot (built from Pack::ALL).
        self.slots.iter().find(|s| s.pack == pack).unwrap_or(&self.slots[0])
    }

    fn routes(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Pack>> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pack `index` is searched with now.
    fn pack_of(&self, routes: &HashMap<String, Pack>, index: &IndexInfo) -> Result<Pack, EngineError> {
        match routes.get(&index.id) {
            Some(pack) => Ok(*pack),
            None => parse_pack(index),
        }
    }
}

fn parse_pack(index: &IndexInfo) -> Result<Pack, EngineError> {
    index.pack.parse().map_err(|_| EngineError::UnknownPack { index: index.id.clone(), pack: index.pack.clone() })
}

/// The result of one try of a write that depends on the index's pack.
enum Attempt<T> {
    Done(T),
    /// The index moved to another pack meanwhile; the photo is handed back.
    Moved(Vec<u8>),
}

pub struct Engine {
    observer: Option<Arc<dyn EngineObserver>>,
    store: Arc<dyn Store>,
    default_pack: Pack,
    loader: PipelineLoader,
    vectors: Arc<Vectors>,
    config: EngineConfig,
    analyses: Arc<Semaphore>,
    writes: WriteLock,
    /// Ids of the re-embedding jobs that have a task in this process.
    jobs: std::sync::Mutex<HashSet<String>>,
    /// Where the vector index is saved between runs (`None`: never saved).
    snapshot_dir: Option<PathBuf>,
    /// The store's vector version that the saved snapshot matches.
    saved_version: AtomicU64,
    origin: IndexOrigin,
}

/// How the vector index came to be at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexOrigin {
    /// Read from a snapshot that matched the store.
    Snapshot,
    /// Re-read from the store (no snapshot, a stale one after a crash, or a damaged one).
    Store,
    /// Not in memory at all: the store searches its own vectors.
    Database,
}

impl IndexOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexOrigin::Snapshot => "snapshot",
            IndexOrigin::Store => "store",
            IndexOrigin::Database => "database",
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn task_failed(e: tokio::task::JoinError) -> EngineError {
    EngineError::Task(e.to_string())
}

/// Inside the write lock: refuses a face that already matches another record of
/// `index_id` at or above the duplicate score `bar` (similarity, score). The
/// in-memory index is scanned on the blocking pool; a store that searches its own
/// vectors is asked instead.
async fn refuse_duplicate(
    store: &Arc<dyn Store>,
    vectors: &Arc<Vectors>,
    pack: Pack,
    index_id: &str,
    own_record: Option<&str>,
    embedding: &[f32],
    (min_similarity, min_score): (f32, f64),
) -> Result<(), EngineError> {
    // Two candidates: one may be the record the image is being added to.
    let hits: Vec<Hit> = if vectors.in_store {
        let query = VectorQuery {
            pack: pack.name().to_string(),
            index_ids: vec![index_id.to_string()],
            vector: embedding.to_vec(),
            min_similarity,
            limit: 2,
        };
        store.nearest_faces(query).await?.into_iter().map(hit_of).collect::<Result<_, _>>()?
    } else {
        let (v, i, e) = (vectors.clone(), index_id.to_string(), embedding.to_vec());
        tokio::task::spawn_blocking(move || v.slot(pack).vectors.search(&e, &[i.as_str()], min_similarity, 2))
            .await
            .map_err(task_failed)??
    };
    let calibration = &vectors.slot(pack).calibration;
    match hits.into_iter().find(|h| Some(h.record_id.as_str()) != own_record) {
        Some(hit) if round2(calibration.score(hit.similarity)) >= min_score => Err(EngineError::DuplicateFace {
            score: round2(calibration.score(hit.similarity)),
            record_id: hit.record_id,
            image_id: hit.image_id,
        }),
        _ => Ok(()),
    }
}

/// A face the store found, as the in-memory index reports one (its similarity
/// checked as the index checks its own, see [`checked`]).
fn hit_of(face: facesearch_store::NearestFace) -> Result<Hit, EngineError> {
    let similarity = checked(face.similarity, &face.index_id, &face.image_id)?;
    Ok(Hit { collection: face.index_id, record_id: face.record_id, image_id: face.image_id, similarity })
}

/// A similarity fit to report: within [-1, 1] (see
/// [`facesearch_index::checked_similarity`]). Anything else comes only from a vector
/// that is not of unit length (damage): it is logged as an error and the request fails
/// as an internal error, so that it never reaches a response as a score.
pub(crate) fn checked(similarity: f32, collection: &str, image_id: &str) -> Result<f32, EngineError> {
    facesearch_index::checked_similarity(similarity).ok_or_else(|| {
        let e =
            IndexError::Similarity { collection: collection.to_string(), image_id: image_id.to_string(), similarity };
        tracing::error!(error = %e, "request refused: a stored vector is damaged");
        EngineError::Index(e)
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

/// Deletes the saved vector index of every pack after faces were deleted, so that no
/// deleted face survives in a file; the next periodic save writes a fresh one (a crash
/// before then costs a rebuild from the store at the next start, never a deleted face).
/// A failure is logged, not returned: the delete itself is committed, and the next
/// save replaces the files anyway.
async fn forget_snapshots(dir: Option<PathBuf>, vectors: &Vectors) {
    let Some(dir) = dir else { return };
    let packs: Vec<PathBuf> = vectors.slots.iter().map(|s| dir.join(s.pack.name())).collect();
    let removed =
        tokio::task::spawn_blocking(move || packs.iter().try_for_each(|d| facesearch_index::snapshot::remove(d))).await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "could not delete the saved vector index after a delete"),
        Err(e) => tracing::error!(error = %e, "could not delete the saved vector index after a delete"),
    }
}

/// The vectors of one pack: its snapshot under `dir` when that matches the store's
/// vector `version`, otherwise every stored vector of the pack.
async fn load_vectors(
    store: &Arc<dyn Store>,
    pack: Pack,
    config: IndexConfig,
    dir: Option<&std::path::Path>,
    version: u64,
) -> Result<(FaceIndex, IndexOrigin), EngineError> {
    let dim = pack.dimension();
    let loaded = match dir.map(|d| d.join(pack.name())) {
        Some(dir) => {
            tokio::task::spawn_blocking(move || FaceIndex::load(&dir, dim, config)).await.map_err(task_failed)?
        }
        None => Ok(None),
    };
    match loaded {
        Ok(Some((index, tag))) if tag == version => return Ok((index, IndexOrigin::Snapshot)),
        Ok(Some((_, tag))) => {
            tracing::warn!(
                snapshot = tag,
                store = version,
                pack = pack.name(),
                "vector index snapshot is stale; rebuilding from the store"
            )
        }
        Err(e) => {
            // Failed verification (a digest, a non-unit vector) or unreadable: nothing of
            // it is used, and the snapshot saved next is written from the rebuilt index.
            tracing::warn!(
                error = %e,
                pack = pack.name(),
                "vector index snapshot ignored (failed verification or unreadable); rebuilding from the store"
            )
        }
        Ok(None) => {}
    }
    let rows = store.embeddings(pack.name()).await?;
    // The store is the truth and is used as it is; a vector in it that is not of unit
    // length is reported here, and any search that reaches it fails (see `checked`).
    let damaged = rows.iter().filter(|r| !facesearch_index::snapshot::is_unit(&r.vector)).count();
    if damaged > 0 {
        tracing::error!(
            vectors = damaged,
            pack = pack.name(),
            "stored vectors are not of unit length (damaged); searches reaching them fail"
        );
    }
    let index = tokio::task::spawn_blocking(move || {
        let index = FaceIndex::with_config(dim, config);
        index
            .insert_bulk(
                rows.iter()
                    .map(|r| (r.index_id.as_str(), r.record_id.as_str(), r.image_id.as_str(), r.vector.as_slice())),
            )
            .map(|()| index)
    })
    .await
    .map_err(task_failed)??;
    Ok((index, IndexOrigin::Store))
}

impl Engine {
    /// Loads the vectors of every pack: from the snapshot in `snapshot_dir` when it
    /// matches the store's vector version, otherwise from every stored vector (and then
    /// saves a fresh snapshot). `pipeline` is the server's own (its pack is the default
    /// for new indexes); other packs' pipelines are made by `loader` on first need. The
    /// caller holds `writes` from before this call until the engine is published, so
    /// that no write slips between the loading and the engine taking over.
    pub async fn open(
        store: Arc<dyn Store>,
        pipeline: Arc<FacePipeline>,
        loader: PipelineLoader,
        config: EngineConfig,
        writes: WriteLock,
        snapshot_dir: Option<PathBuf>,
    ) -> Result<Self, EngineError> {
        let default_pack = pipeline.pack();
        let started = Instant::now();
        let in_store = store.searches_vectors();
        let snapshot_dir = snapshot_dir.filter(|_| !in_store);
        let version = store.vectors_version().await?;
        let mut slots = Vec::new();
        let mut origin = if in_store { IndexOrigin::Database } else { IndexOrigin::Snapshot };
        for pack in Pack::ALL {
            let (vectors, from) = if in_store {
                (FaceIndex::with_config(pack.dimension(), config.index), IndexOrigin::Database)
            } else {
                load_vectors(&store, pack, config.index, snapshot_dir.as_deref(), version).await?
            };
            if from == IndexOrigin::Store {
                origin = IndexOrigin::Store;
            }
            let count: usize = vectors.stats().values().map(|s| s.vectors).sum();
            if count > 0 || pack == default_pack {
                tracing::info!(
                    faces = count,
                    pack = pack.name(),
                    from = from.as_str(),
                    ms = started.elapsed().as_millis() as u64,
                    "vector index loaded"
                );
            }
            slots.push(PackSlot {
                pack,
                pipeline: if pack == default_pack {
                    OnceCell::new_with(Some(pipeline.clone()))
                } else {
                    OnceCell::new()
                },
                vectors,
                calibration: Calibration::shipped(pack)?,
            });
        }
        let mut routes = HashMap::new();
        for index in store.list_indexes().await?.into_iter().filter(|_| !in_store) {
            match parse_pack(&index) {
                Ok(pack) => {
                    routes.insert(index.id, pack);
                }
                Err(e) => tracing::warn!(error = %e, "an index cannot be served"),
            }
        }
        let engine = Self {
            observer: None,
            store,
            default_pack,
            loader,
            vectors: Arc::new(Vectors { slots, in_store, routes: RwLock::new(routes) }),
            analyses: Arc::new(Semaphore::new(config.max_concurrent_analyses.max(1))),
            config,
            writes,
            jobs: std::sync::Mutex::new(HashSet::new()),
            snapshot_dir,
            saved_version: AtomicU64::new(if origin == IndexOrigin::Snapshot { version } else { u64::MAX }),
            origin,
        };
        if origin == IndexOrigin::Store {
            // The caller holds the write lock, so the index matches `version` now.
            engine.write_snapshot(version).await?;
        }
        Ok(engine)
    }

    /// Saves the vector index if it changed since the last save, so the next start
    /// reads it instead of every stored vector. Holds off writes (not searches) while
    /// it runs. Returns whether a snapshot was written.
    pub async fn save_snapshot(&self) -> Result<bool, EngineError> {
        let _writes = self.writes.lock().await;
        let version = self.store.vectors_version().await?;
        if self.saved_version.load(Ordering::Acquire) == version {
            return Ok(false);
        }
        self.write_snapshot(version).await
    }

    /// The caller holds the write lock.
    async fn write_snapshot(&self, version: u64) -> Result<bool, EngineError> {
        let Some(dir) = self.snapshot_dir.clone() else {
            return Ok(false);
        };
        let vectors = self.vectors.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            // 0700, whatever the mode of the data directory (tightened if it was looser).
            facesearch_index::snapshot::create_private_dir(&dir)?;
            vectors.slots.iter().try_for_each(|slot| slot.vectors.save(&dir.join(slot.pack.name()), version))
        })
        .await
        .map_err(task_failed)??;
        self.saved_version.store(version, Ordering::Release);
        tracing::info!(version, ms = started.elapsed().as_millis() as u64, "vector index snapshot saved");
        Ok(true)
    }

    /// Where the vector index was read from at start.
    pub fn index_origin(&self) -> IndexOrigin {
        self.origin
    }

    /// Vectors per index (of every pack) and whether each is searched approximately.
    pub fn index_stats(&self) -> HashMap<String, facesearch_index::CollectionStats> {
        self.vectors.slots.iter().flat_map(|slot| slot.vectors.stats()).collect()
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

    /// The pack of the server's own pipeline: new indexes hold its vectors.
    pub fn default_pack(&self) -> Pack {
        self.default_pack
    }

    /// The score calibration of a pack.
    pub fn calibration(&self, pack: Pack) -> &Calibration {
        &self.vectors.slot(pack).calibration
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The index with this id, ready to be searched or written by this server.
    pub async fn usable_index(&self, id: &str) -> Result<IndexInfo, EngineError> {
        let index = self.store.get_index(id).await?.ok_or_else(|| EngineError::IndexNotFound(id.to_string()))?;
        parse_pack(&index)?;
        Ok(index)
    }

    /// The pipeline of `pack`, loaded (and its models fetched) on first need.
    async fn pipeline(&self, pack: Pack) -> Result<Arc<FacePipeline>, EngineError> {
        let loader = self.loader.clone();
        self.vectors
            .slot(pack)
            .pipeline
            .get_or_try_init(|| async move {
                if pack.non_commercial() {
                    tracing::warn!(
                        "the insightface pack's pretrained models are licensed for non-commercial research only"
                    );
                }
                tracing::info!(pack = pack.name(), "loading the models of another pack");
                let pipeline = tokio::task::spawn_blocking(move || loader(pack)).await.map_err(task_failed)??;
                Ok(Arc::new(pipeline))
            })
            .await
            .cloned()
    }

    /// The pack each index is searched with now, each once, the default pack first.
    fn packs_of(&self, indexes: &[IndexInfo]) -> Result<Vec<Pack>, EngineError> {
        let routes = self.vectors.routes();
        let mut packs = Vec::new();
        for index in indexes {
            let pack = self.vectors.pack_of(&routes, index)?;
            if !packs.contains(&pack) {
                packs.push(pack);
            }
        }
        packs.sort_by_key(|p| *p != self.default_pack);
        Ok(packs)
    }

    /// Runs the face pipeline on the blocking pool and hands the photo back (enrolment
    /// stores it; no copy of up to the image limit is made). The slot is held by the
    /// blocking task itself, so a cancelled request cannot let more analyses run than allowed.
    async fn analyse(
        &self,
        pack: Pack,
        bytes: Vec<u8>,
        analysis: Analysis,
        liveness: bool,
    ) -> Result<(ProbeFace, Vec<u8>), EngineError> {
        let pipeline = self.pipeline(pack).await?;
        let choice = match analysis {
            Analysis::Search => FaceChoice::Largest,
            Analysis::Enrol => FaceChoice::Unambiguous,
        };
        let permit = self.analysis_slot().await?;
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

    /// A slot to analyse one photo in, waiting up to the queue timeout ([`EngineError::Busy`]).
    async fn analysis_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, EngineError> {
        tokio::time::timeout(self.config.queue_timeout, self.analyses.clone().acquire_owned())
            .await
            .map_err(|_| EngineError::Busy)?
            .map_err(|_| EngineError::Busy)
    }

    /// Runs a store write and the matching index update as one task under the write
    /// lock: a client that disconnects mid-request cannot split them.
    async fn committed<T, F>(&self, work: impl FnOnce(Arc<dyn Store>, Arc<Vectors>) -> F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        let writes = self.writes.clone();
        let job = work(self.store.clone(), self.vectors.clone());
        tokio::spawn(async move {
            let _guard = writes.lock().await;
            job.await
        })
        .await
        .map_err(task_failed)?
    }

    /// 1:N search of the largest face of `bytes` in `query.indexes`.
    pub async fn search(&self, bytes: Vec<u8>, query: &SearchQuery) -> Result<SearchOutcome, EngineError> {
        if let Some(max_faces) = query.every_face {
            return self.search_every_face(bytes, query, max_faces).await;
        }
        let mut bytes = bytes;
        let mut probes: Vec<(Pack, ProbeFace)> = Vec::new();
        for _ in 0..PACK_ATTEMPTS {
            let mut packs = self.packs_of(&query.indexes)?;
            if packs.is_empty() {
                // No index to search: the probe is still analysed (and judged live).
                packs.push(self.default_pack);
            }
            for pack in packs {
                if probes.iter().any(|(p, _)| *p == pack) {
                    continue;
                }
                // Liveness is judged once, on the first analysis.
                let first = probes.is_empty();
                let (probe, back) = self.analyse(pack, bytes, Analysis::Search, query.liveness && first).await?;
                bytes = back;
                if first {
                    self.check_liveness(&probe)?;
                }
                probes.push((pack, probe));
            }
            if let Some(hits) = self.scan(query, &probes).await? {
                let matches = self.matches(query, hits).await?;
                let packs = probes.iter().map(|(p, _)| *p).collect();
                let probe = probes.swap_remove(0).1;
                return Ok(SearchOutcome { matches, probe, packs, faces: Vec::new() });
            }
        }
        Err(EngineError::PackMoved(query.indexes.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(",")))
    }

    fn check_liveness(&self, probe: &ProbeFace) -> Result<(), EngineError> {
        let threshold = self.config.liveness_threshold;
        match probe.liveness {
            // Fail closed: a NaN probability is not live.
            Some(Liveness::Judged { live_probability })
                if live_probability.is_nan() || live_probability < threshold =>
            {
                self.observe(|o| o.liveness_refused(LivenessRefusal::Spoof));
                Err(EngineError::LivenessFailed { score: live_probability, threshold })
            }
            Some(Liveness::CannotJudge { context, min_context }) => {
                self.observe(|o| o.liveness_refused(LivenessRefusal::CannotJudge));
                Err(EngineError::LivenessCannotJudge { context, min_context })
            }
            _ => Ok(()),
        }
    }

    /// The vector scan: each index searched with the probe embedded by its pack, the
    /// hits of all packs merged by calibrated score. `None` when an index is now of a
    /// pack that has no probe embedding (it moved since the probe was analysed).
    async fn scan(
        &self,
        query: &SearchQuery,
        probes: &[(Pack, ProbeFace)],
    ) -> Result<Option<Vec<(Hit, f64)>>, EngineError> {
        let vectors = self.vectors.clone();
        let indexes = query.indexes.clone();
        let embeddings: Vec<(Pack, Vec<f32>)> = probes.iter().map(|(p, f)| (*p, f.embedding.clone())).collect();
        let min_score = query.min_score;
        let candidates = query.max_results.saturating_mul(2).max(query.max_results);
        if vectors.in_store {
            return self.scan_in_store(&indexes, &embeddings, min_score, candidates).await;
        }
        // The scan reads every vector: keep it off the async worker threads.
        let (hits, elapsed) = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            // Held for the whole scan: an index cannot move to another pack meanwhile.
            let routes = vectors.routes();
            let mut by_pack: Vec<(Pack, Vec<&str>)> = Vec::new();
            for index in &indexes {
                let pack = vectors.pack_of(&routes, index)?;
                match by_pack.iter_mut().find(|(p, _)| *p == pack) {
                    Some((_, ids)) => ids.push(&index.id),
                    None => by_pack.push((pack, vec![&index.id])),
                }
            }
            let mut scored = Vec::new();
            for (pack, ids) in by_pack {
                let Some((_, embedding)) = embeddings.iter().find(|(p, _)| *p == pack) else {
                    return Ok((None, start.elapsed()));
                };
                let slot = vectors.slot(pack);
                // Slightly below the threshold, then filtered on the score itself, so that
                // rounding in the inverse never drops a match that scores exactly min_score.
                let min_similarity = slot.calibration.similarity_for(min_score) - 1e-4;
                for hit in slot.vectors.search(embedding, &ids, min_similarity, candidates)? {
                    let score = round2(slot.calibration.score(hit.similarity));
                    scored.push((hit, score));
                }
            }
            best_first(&mut scored, candidates);
            Ok::<_, EngineError>((Some(scored), start.elapsed()))
        })
        .await
        .map_err(task_failed)??;
        self.observe(|o| o.vectors_searched(elapsed));
        Ok(hits)
    }

    /// [`Engine::scan`] by the store: one query per pack, each index with the pack the
    /// store says it holds now (`None` when one moved since the probe was analysed).
    async fn scan_in_store(
        &self,
        indexes: &[IndexInfo],
        embeddings: &[(Pack, Vec<f32>)],
        min_score: f64,
        candidates: usize,
    ) -> Result<Option<Vec<(Hit, f64)>>, EngineError> {
        let start = Instant::now();
        let mut by_pack: Vec<(Pack, Vec<String>)> = Vec::new();
        for index in indexes {
            let pack = parse_pack(index)?;
            match by_pack.iter_mut().find(|(p, _)| *p == pack) {
                Some((_, ids)) => ids.push(index.id.clone()),
                None => by_pack.push((pack, vec![index.id.clone()])),
            }
        }
        let mut scored = Vec::new();
        for (pack, index_ids) in by_pack {
            let Some((_, embedding)) = embeddings.iter().find(|(p, _)| *p == pack) else {
                return Ok(None);
            };
            let calibration = &self.vectors.slot(pack).calibration;
            let query = VectorQuery {
                pack: pack.name().to_string(),
                index_ids,
                vector: embedding.clone(),
                min_similarity: self.min_similarity_for(pack, min_score),
                limit: candidates,
            };
            let found = match self.store.nearest_faces(query).await {
                Ok(found) => found,
                Err(StoreError::PackMismatch { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            for face in found {
                let hit = hit_of(face)?;
                let score = round2(calibration.score(hit.similarity));
                scored.push((hit, score));
            }
        }
        best_first(&mut scored, candidates);
        self.observe(|o| o.vectors_searched(start.elapsed()));
        Ok(Some(scored))
    }

    /// The records of the hits, as matches, best first.
    async fn matches(&self, query: &SearchQuery, hits: Vec<(Hit, f64)>) -> Result<Vec<Match>, EngineError> {
        let ids: Vec<String> = hits.iter().map(|(h, _)| h.record_id.clone()).collect();
        let records = self.store.get_records(&ids).await?;
        let mut matches = Vec::new();
        for (hit, score) in hits {
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
        Ok(matches)
    }

    fn new_image(pack: Pack, probe: &ProbeFace, bytes: Vec<u8>, file_name: String) -> NewImage {
        NewImage {
            pack: pack.name().to_string(),
            bytes,
            mime: probe.mime.to_string(),
            file_name,
            embedding: probe.embedding.clone(),
            face: serde_json::json!({
                "bbox": probe.detection.bbox,
                "landmarks": probe.detection.landmarks,
                "score": probe.detection.score,
                "faces_in_image": probe.faces_in_image,
                // The quarter turn that showed the face upright: re-embedding turns the
                // photo the same way before looking for the face again.
                "rotation": probe.quality.rotation,
            }),
            quality: serde_json::to_value(probe.quality).ok(),
        }
    }

    /// The lowest similarity whose calibrated score can reach `score` (slightly below,
    /// so that rounding never loses a pair that scores exactly `score`).
    fn min_similarity_for(&self, pack: Pack, score: f64) -> f32 {
        self.vectors.slot(pack).calibration.similarity_for(score) - 1e-4
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
        let mut bytes = bytes;
        for _ in 0..PACK_ATTEMPTS {
            let (pack, probe, image) = self.enrolment_image(index, bytes, file_name.as_deref()).await?;
            let (index, fields, reference) = (index.clone(), fields.clone(), reference.clone());
            let duplicates = self.duplicate_bar(pack, check_duplicates);
            let attempt = self
                .committed(move |store, vectors| async move {
                    if vectors.pack_of(&vectors.routes(), &index)? != pack {
                        return Ok(Attempt::Moved(image.bytes));
                    }
                    if let Some(bar) = duplicates {
                        refuse_duplicate(&store, &vectors, pack, &index.id, None, &probe.embedding, bar).await?;
                    }
                    let outcome = store
                        .enrol(&index.id, fields, reference, image)
                        .await?
                        .ok_or(EngineError::IndexNotFound(index.id.clone()))?;
                    if let EnrolOutcome::Created(record) = &outcome
                        && let Some(image_id) = record.image_ids.first()
                        && !vectors.in_store
                    {
                        vectors.slot(pack).vectors.insert(&index.id, &record.record_id, image_id, &probe.embedding)?;
                    }
                    Ok(Attempt::Done(outcome))
                })
                .await?;
            match attempt {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Moved(back) => bytes = back,
            }
        }
        Err(EngineError::PackMoved(index.id.clone()))
    }

    /// Analyses a photo to enrol with the index's current pack.
    async fn enrolment_image(
        &self,
        index: &IndexInfo,
        bytes: Vec<u8>,
        file_name: Option<&str>,
    ) -> Result<(Pack, ProbeFace, NewImage), EngineError> {
        let pack = self.vectors.pack_of(&self.vectors.routes(), index)?;
        let (probe, bytes) = self.analyse(pack, bytes, Analysis::Enrol, false).await?;
        let image = Self::new_image(pack, &probe, bytes, stored_file_name(file_name, probe.mime));
        Ok((pack, probe, image))
    }

    /// The similarity and score a duplicate check needs, if one was asked for.
    fn duplicate_bar(&self, pack: Pack, check: bool) -> Option<(f32, f64)> {
        check.then(|| (self.min_similarity_for(pack, self.config.duplicate_score), self.config.duplicate_score))
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
        let mut bytes = bytes;
        for _ in 0..PACK_ATTEMPTS {
            let (pack, probe, image) = self.enrolment_image(index, bytes, file_name.as_deref()).await?;
            let (index, record_id) = (index.clone(), record_id.to_string());
            let duplicates = self.duplicate_bar(pack, check_duplicates);
            let attempt = self
                .committed(move |store, vectors| async move {
                    if vectors.pack_of(&vectors.routes(), &index)? != pack {
                        return Ok(Attempt::Moved(image.bytes));
                    }
                    if let Some(bar) = duplicates {
                        let own = Some(record_id.as_str());
                        refuse_duplicate(&store, &vectors, pack, &index.id, own, &probe.embedding, bar).await?;
                    }
                    let Some((record, image_id)) = store.add_image(&index.id, &record_id, image).await? else {
                        return Ok(Attempt::Done(None));
                    };
                    if !vectors.in_store {
                        vectors.slot(pack).vectors.insert(&index.id, &record_id, &image_id, &probe.embedding)?;
                    }
                    Ok(Attempt::Done(Some(record)))
                })
                .await?;
            match attempt {
                Attempt::Done(record) => return Ok(record),
                Attempt::Moved(back) => bytes = back,
            }
        }
        Err(EngineError::PackMoved(index.id.clone()))
    }

    /// Deletes a record with its images and vectors; `false` if there was none.
    pub async fn delete_record(&self, index_id: &str, record_id: &str) -> Result<bool, EngineError> {
        let (index_id, record_id) = (index_id.to_string(), record_id.to_string());
        let snapshots = self.snapshot_dir.clone();
        self.committed(move |store, vectors| async move {
            let Some(image_ids) = store.delete_record(&index_id, &record_id).await? else {
                return Ok(false);
            };
            for slot in &vectors.slots {
                slot.vectors.remove_images(&index_id, &image_ids);
            }
            forget_snapshots(snapshots, &vectors).await;
            Ok(true)
        })
        .await
    }

    /// Deletes an index with all its records, images and vectors (and its
    /// re-embedding job and staged vectors).
    pub async fn delete_index(&self, index_id: &str) -> Result<bool, EngineError> {
        let index_id = index_id.to_string();
        let snapshots = self.snapshot_dir.clone();
        self.committed(move |store, vectors| async move {
            let deleted = store.delete_index(&index_id).await?;
            for slot in &vectors.slots {
                slot.vectors.remove_collection(&index_id);
            }
            vectors.routes.write().unwrap_or_else(PoisonError::into_inner).remove(&index_id);
            if deleted {
                forget_snapshots(snapshots, &vectors).await;
            }
            Ok(deleted)
        })
        .await
    }

    /// Faces held in memory for an index.
    pub fn vectors_in(&self, index_id: &str) -> usize {
        self.vectors.slots.iter().map(|s| s.vectors.len(index_id)).sum()
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
