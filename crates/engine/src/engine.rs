//! The [`Engine`] itself: what it holds once the models are loaded, how it starts, and
//! the machinery every request shares — the analysis slots, the write lock and the
//! retry of work that an index's move to another pack overtook.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use facesearch_face::calibration::Calibration;
use facesearch_face::{FaceChoice, FacePipeline, Pack, ProbeFace};
use facesearch_store::{IndexInfo, Store};
use facesearch_vectors::VectorIndex;
use tokio::sync::{Mutex, OnceCell, Semaphore};

use crate::config::{EngineConfig, PipelineLoader};
use crate::error::{EngineError, task_failed};
use crate::observer::{Analysis, EngineObserver};
use crate::snapshot::{IndexOrigin, load_vectors};
use crate::vectors::{Backend, PackSlot, Vectors, parse_pack};

/// Serialises "write the store, then update the in-memory index", so that an enrolment
/// racing a delete can never leave a deleted person's vector in memory. Held while the
/// engine loads its snapshot, and by deletes made before the engine is ready (see
/// [`crate::Service`]). SQLite has one writer anyway, so this costs no parallelism.
pub(crate) type WriteLock = Arc<Mutex<()>>;

/// How often a request embedded for a pack that its index has just left is tried again.
const PACK_ATTEMPTS: usize = 3;

/// The result of one try of work that depends on the packs of indexes.
pub(crate) enum Attempt<T, S> {
    Done(T),
    /// An index moved to another pack meanwhile; what the next try needs (the photo,
    /// the probes already embedded) is handed back.
    Moved(S),
}

/// Runs `attempt` until it is done, each try given what the last one handed back, at
/// most [`PACK_ATTEMPTS`] times; then [`EngineError::PackMoved`] naming `ids`.
pub(crate) async fn until_settled<S, T, F, Fut>(ids: &[&str], first: S, mut attempt: F) -> Result<T, EngineError>
where
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Result<Attempt<T, S>, EngineError>>,
{
    let mut state = first;
    for _ in 0..PACK_ATTEMPTS {
        match attempt(state).await? {
            Attempt::Done(done) => return Ok(done),
            Attempt::Moved(back) => state = back,
        }
    }
    Err(EngineError::PackMoved(ids.join(",")))
}

/// Runs a store write and the matching in-memory update as one task under the write
/// lock: a client that disconnects mid-request cannot split them.
pub(crate) async fn under_write_lock<T, F>(writes: &WriteLock, job: F) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, EngineError>> + Send + 'static,
{
    let writes = writes.clone();
    tokio::spawn(async move {
        let _guard = writes.lock().await;
        job.await
    })
    .await
    .map_err(task_failed)?
}

/// The face search engine once its models are loaded: search, enrolment, deletion of
/// faces, re-embedding and duplicate search. Reached through [`crate::Service`].
pub struct Engine {
    pub(crate) observer: Option<Arc<dyn EngineObserver>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) default_pack: Pack,
    pub(crate) loader: PipelineLoader,
    pub(crate) vectors: Arc<Vectors>,
    pub(crate) config: EngineConfig,
    pub(crate) analyses: Arc<Semaphore>,
    pub(crate) writes: WriteLock,
    /// Ids of the re-embedding jobs that have a task in this process.
    pub(crate) jobs: std::sync::Mutex<HashSet<String>>,
    /// Where the vector index is saved between runs (`None`: never saved).
    pub(crate) snapshot_dir: Option<PathBuf>,
    /// The store's vector version that the saved snapshot matches.
    pub(crate) saved_version: AtomicU64,
    pub(crate) origin: IndexOrigin,
}

impl Engine {
    /// Loads the vectors of every pack: from the snapshot in `snapshot_dir` when it
    /// matches the store's vector version, otherwise from every stored vector (and then
    /// saves a fresh snapshot). `pipeline` is the server's own (its pack is the default
    /// for new indexes); other packs' pipelines are made by `loader` on first need. The
    /// caller holds `writes` from before this call until the engine is published, so
    /// that no write slips between the loading and the engine taking over.
    pub(crate) async fn open(
        store: Arc<dyn Store>,
        pipeline: Arc<FacePipeline>,
        loader: PipelineLoader,
        config: EngineConfig,
        writes: WriteLock,
        snapshot_dir: Option<PathBuf>,
    ) -> Result<Self, EngineError> {
        let default_pack = pipeline.pack();
        let started = Instant::now();
        let in_database = store.vector_search().is_some();
        let snapshot_dir = snapshot_dir.filter(|_| !in_database);
        let version = store.vectors_version().await?;
        let mut slots = Vec::new();
        let mut origin = if in_database { IndexOrigin::Database } else { IndexOrigin::Snapshot };
        for pack in Pack::ALL {
            let (vectors, from) = if in_database {
                (VectorIndex::with_config(pack.dimension(), config.vectors), IndexOrigin::Database)
            } else {
                load_vectors(&store, pack, config.vectors, snapshot_dir.as_deref(), version).await?
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
        let backend = if in_database {
            Backend::InDatabase
        } else {
            let mut routes = HashMap::new();
            for index in store.list_indexes().await? {
                match parse_pack(&index) {
                    Ok(pack) => {
                        routes.insert(index.id, pack);
                    }
                    Err(e) => tracing::warn!(error = %e, "an index cannot be served"),
                }
            }
            Backend::InMemory { routes: RwLock::new(routes) }
        };
        let engine = Self {
            observer: None,
            store,
            default_pack,
            loader,
            vectors: Arc::new(Vectors { slots, backend }),
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

    /// Vectors per index (of every pack) and whether each is searched approximately.
    pub fn index_stats(&self) -> HashMap<String, facesearch_vectors::CollectionStats> {
        self.vectors.slots.iter().flat_map(|slot| slot.vectors.stats()).collect()
    }

    /// Faces held in memory for an index.
    pub fn vectors_in(&self, index_id: &str) -> usize {
        self.vectors.slots.iter().map(|s| s.vectors.len(index_id)).sum()
    }

    /// Reports the engine's work (timings, liveness refusals) to `observer`.
    pub(crate) fn with_observer(mut self, observer: Arc<dyn EngineObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub(crate) fn observe(&self, f: impl FnOnce(&dyn EngineObserver)) {
        if let Some(o) = &self.observer {
            f(o.as_ref());
        }
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

    /// Whether this server can search and write `index` (it runs the index's pack):
    /// [`EngineError::UnknownPack`] if not. Reads nothing: the caller has the index.
    pub fn check_usable(&self, index: &IndexInfo) -> Result<(), EngineError> {
        parse_pack(index).map(|_| ())
    }

    /// The pipeline of `pack`, loaded (and its models fetched) on first need.
    pub(crate) async fn pipeline(&self, pack: Pack) -> Result<Arc<FacePipeline>, EngineError> {
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
    pub(crate) fn packs_of(&self, indexes: &[IndexInfo]) -> Result<Vec<Pack>, EngineError> {
        let mut packs = self.vectors.packs_of(indexes)?;
        packs.sort_by_key(|p| *p != self.default_pack);
        Ok(packs)
    }

    /// Runs the face pipeline on the blocking pool and hands the photo back (enrolment
    /// stores it; no copy of up to the image limit is made). The slot is held by the
    /// blocking task itself, so a cancelled request cannot let more analyses run than allowed.
    pub(crate) async fn analyse(
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
    pub(crate) async fn analysis_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, EngineError> {
        tokio::time::timeout(self.config.queue_timeout, self.analyses.clone().acquire_owned())
            .await
            .map_err(|_| EngineError::Busy)?
            .map_err(|_| EngineError::Busy)
    }

    /// The lowest similarity whose calibrated score can reach `score` in `pack`.
    pub(crate) fn min_similarity_for(&self, pack: Pack, score: f64) -> f32 {
        self.vectors.slot(pack).min_similarity_for(score)
    }

    /// Runs a store write and the matching index update as one task under the write
    /// lock (see [`under_write_lock`]).
    pub(crate) async fn committed<T, F>(
        &self,
        work: impl FnOnce(Arc<dyn Store>, Arc<Vectors>) -> F,
    ) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        under_write_lock(&self.writes, work(self.store.clone(), self.vectors.clone())).await
    }
}
