//! The inference runtime, kept behind a narrow trait (load a model, run a tensor) so
//! that another engine can be added without touching the pipeline.
//!
//! The ONNX Runtime implementation loads `libonnxruntime` dynamically from the
//! verified models cache (`ort` with `load-dynamic`): nothing is downloaded at build
//! time and a missing library is an error, never a panic.
//!
//! Every model run of the pipeline goes through [`run_timed`], which adds its time to
//! a per-thread network clock, so that a stage's time can be split into the networks'
//! share and everything around them (resizing, tensor fill, output decoding, NMS,
//! crops, cues) with a [`StageClock`] — two `Instant::now()` per run, no locking, and
//! right also when a stage runs on a thread of its own (the parallel liveness check).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use ort::environment::GlobalThreadPoolOptions;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One named output of a model run.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("could not load the ONNX Runtime library {path}: {detail}")]
    Library { path: PathBuf, detail: String },
    #[error("the ONNX Runtime was already initialised from {loaded}, not {requested}")]
    LibraryMismatch { loaded: PathBuf, requested: PathBuf },
    #[error("could not load model {path}: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("inference failed in {model}: {detail}")]
    Run { model: String, detail: String },
    #[error("model {model} produced an unexpected output: {detail}")]
    BadOutput { model: String, detail: String },
}

/// A loaded model that can be run from many threads at once.
pub trait InferenceModel: Send + Sync {
    /// Runs the model on one f32 input tensor and returns all outputs in graph order.
    fn run(&self, shape: &[usize], data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError>;
    /// [`InferenceModel::run`] for the only photo being analysed, while the other cores
    /// are idle: on the model's session on the shared pool of a thread per core
    /// ([`RuntimeOptions::lone_sessions`]) when it has one and it is free, else like
    /// `run`.
    fn run_lone(&self, shape: &[usize], data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError> {
        self.run(shape, data)
    }
    /// A short name for errors and logs.
    fn name(&self) -> &str;
}

thread_local! {
    /// Time this thread has spent inside [`run_timed`], ever.
    static NETWORK: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// Whether this thread's model runs are a lone analysis's ([`alone`]).
    static LONE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with this thread's model runs on the models' lone sessions
/// ([`InferenceModel::run_lone`]): for the only photo being analysed. A flag of the
/// thread rather than a parameter of every stage, like the network clock beside it.
pub fn alone<T>(work: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LONE.with(|lone| lone.set(self.0));
        }
    }
    let _restore = Restore(LONE.with(|lone| lone.replace(true)));
    work()
}

/// Runs `model` and adds the run's wall time, failed or not, to this thread's network
/// clock ([`StageClock`]). The pipeline's stages call their models only through this.
pub fn run_timed(model: &dyn InferenceModel, shape: &[usize], data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError> {
    let start = Instant::now();
    let outputs = if LONE.with(Cell::get) { model.run_lone(shape, data) } else { model.run(shape, data) };
    let took = start.elapsed();
    NETWORK.with(|n| n.set(n.get().saturating_add(took)));
    outputs
}

/// The time this thread has spent in model runs ([`run_timed`]) since it started.
fn network_clock() -> Duration {
    NETWORK.with(Cell::get)
}

/// Measures one stage on the calling thread: its wall time and the part of it spent
/// in model runs. Model runs on other threads do not count (each thread that runs a
/// stage keeps its own clock).
#[derive(Debug, Clone, Copy)]
pub struct StageClock {
    start: Instant,
    network: Duration,
}

impl StageClock {
    pub fn start() -> Self {
        Self { start: Instant::now(), network: network_clock() }
    }

    /// The time since [`StageClock::start`], and the network's share of it.
    pub fn stop(&self) -> StageTime {
        let total = self.start.elapsed();
        // Read after `total`: the network time is then never more than the total.
        let network = network_clock().saturating_sub(self.network).min(total);
        StageTime { total, network }
    }
}

/// The wall time of one stage and the part of it spent running networks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageTime {
    pub total: Duration,
    pub network: Duration,
}

impl StageTime {
    /// Everything but the networks: resizing, tensor fill, output decoding, NMS,
    /// crops, cues.
    pub fn other(&self) -> Duration {
        self.total.saturating_sub(self.network)
    }
}

/// A model to load: a file, or bytes made in memory (an edited pinned file,
/// `facesearch_models::EditedModel`).
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    File(&'a Path),
    Bytes { name: &'a str, bytes: &'a [u8] },
}

impl ModelSource<'_> {
    fn name(&self) -> String {
        match self {
            ModelSource::File(path) => {
                path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
            }
            ModelSource::Bytes { name, .. } => name.to_string(),
        }
    }
}

impl<'a> From<&'a Path> for ModelSource<'a> {
    fn from(path: &'a Path) -> Self {
        ModelSource::File(path)
    }
}

/// An inference engine: turns a model into a runnable [`InferenceModel`].
pub trait InferenceRuntime: Send + Sync {
    fn load(&self, model: ModelSource<'_>) -> Result<Arc<dyn InferenceModel>, RuntimeError>;
}

/// Threading of the ONNX Runtime sessions.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeOptions {
    /// Threads one inference may use (ORT intra-op threads).
    pub intra_threads: usize,
    /// Sessions kept per model, so that this many requests can infer at once.
    pub sessions_per_model: usize,
    /// Keep one more session per model, for when only one photo is being analysed
    /// ([`alone`]): it runs on the process's one shared pool of a thread per core (up
    /// to [`LONE_THREADS_MAX`]). Only worth it when that pool is larger than
    /// `intra_threads` ([`RuntimeOptions::has_lone_sessions`]). Off by default: on the
    /// project's 2-vCPU machine a lone photo's latency on the shared pool swung
    /// between 7 % below and 45 % above the liveness check's own thread beside the
    /// embedding (README, Performance); `facesearch bench pipeline --lone-sessions`
    /// measures it on another machine (the server does not offer it).
    pub lone_sessions: bool,
}

/// The most threads of the shared pool lone analyses run on: a cap, not a measured
/// optimum (these networks are small; only two cores were measured).
pub const LONE_THREADS_MAX: usize = 4;

/// The threads of the shared pool for lone analyses (asked of the system once: the
/// pool is made once per process, and the answer must not change after it).
fn lone_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, LONE_THREADS_MAX))
}

impl RuntimeOptions {
    /// Whether models keep a session on the shared pool for a lone analysis.
    pub fn has_lone_sessions(&self) -> bool {
        self.lone_sessions && lone_threads() > self.intra_threads
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        // One thread per inference and one session per core: these networks are small,
        // and under load two single-thread inferences side by side get more done than
        // one on two threads. A lone analysis runs its liveness check beside the
        // embedding (README, Performance).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { intra_threads: 1, sessions_per_model: cores.clamp(1, 8), lone_sessions: false }
    }
}

/// ONNX Runtime through the `ort` crate.
pub struct OrtRuntime {
    env: ort::environment::Environment,
    options: RuntimeOptions,
}

static ORT_LIBRARY: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> = OnceLock::new();

impl OrtRuntime {
    /// Initialises ONNX Runtime from the shared library at `library` (once per process;
    /// later calls must name the same file).
    pub fn new(library: &Path, options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let loaded = ORT_LIBRARY.get_or_init(|| {
            // One pool shared by every lone session, spinning between the runs of a
            // search: pools of their own would spin against each other (measured: a lone
            // search twice as slow) and without spinning each run waits on waking them.
            // (Made once the library is loaded: the options are ORT objects.) It is made
            // whatever the options, because the environment is made once per process
            // and a later runtime may keep lone sessions; without them its threads only
            // wait.
            let builder = ort::init_from(library).map_err(|e| e.to_string())?;
            let pool = GlobalThreadPoolOptions::default()
                .with_intra_threads(lone_threads())
                .and_then(|p| p.with_inter_threads(1))
                .and_then(|p| p.with_spin_control(true))
                .map_err(|e| e.to_string())?;
            builder
                .with_name("facesearch")
                .with_global_thread_pool(pool)
                .build()
                .map_err(|e| e.to_string())
                .map(|env| (library.to_path_buf(), env))
        });
        match loaded {
            Ok((path, env)) if path == library => Ok(Self { env: env.clone(), options }),
            Ok((path, _)) => {
                Err(RuntimeError::LibraryMismatch { loaded: path.clone(), requested: library.to_path_buf() })
            }
            Err(detail) => Err(RuntimeError::Library { path: library.to_path_buf(), detail: detail.clone() }),
        }
    }

    /// A session of `model`: with its own `threads`, or on the shared pool (`None`).
    fn session(&self, model: ModelSource<'_>, threads: Option<usize>) -> Result<Session, RuntimeError> {
        let path = match model {
            ModelSource::File(path) => path.to_path_buf(),
            ModelSource::Bytes { name, .. } => PathBuf::from(name),
        };
        let load_err = |e: ort::Error| RuntimeError::Load { path: path.clone(), detail: e.to_string() };
        let builder = Session::builder(&self.env)
            .map_err(load_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load_err(e.into()))?;
        let mut builder = match threads {
            Some(threads) => builder
                .with_independent_thread_pool()
                .map_err(|e| load_err(e.into()))?
                .with_intra_threads(threads.max(1))
                .map_err(|e| load_err(e.into()))?
                .with_inter_threads(1)
                .map_err(|e| load_err(e.into()))?,
            None => builder,
        };
        match model {
            ModelSource::File(path) => builder.commit_from_file(path),
            ModelSource::Bytes { bytes, .. } => builder.commit_from_memory(bytes),
        }
        .map_err(load_err)
    }
}

impl InferenceRuntime for OrtRuntime {
    fn load(&self, model: ModelSource<'_>) -> Result<Arc<dyn InferenceModel>, RuntimeError> {
        let (n, threads) = (self.options.sessions_per_model.max(1), self.options.intra_threads.max(1));
        let sessions =
            (0..n).map(|_| self.session(model, Some(threads)).map(Mutex::new)).collect::<Result<Vec<_>, _>>()?;
        let lone = if self.options.has_lone_sessions() { Some(Mutex::new(self.session(model, None)?)) } else { None };
        let name = model.name();
        Ok(Arc::new(OrtModel { name, sessions, lone, next: AtomicUsize::new(0) }))
    }
}

/// A pool of ORT sessions of one model: `Session::run` needs `&mut`, so concurrent
/// requests each take a free session (or wait on one, round-robin).
struct OrtModel {
    name: String,
    sessions: Vec<Mutex<Session>>,
    /// The session on the shared pool ([`RuntimeOptions::lone_sessions`]), if kept.
    lone: Option<Mutex<Session>>,
    next: AtomicUsize,
}

impl OrtModel {
    fn run_session(
        &self,
        session: &mut Session,
        shape: &[usize],
        data: &[f32],
    ) -> Result<Vec<NamedTensor>, RuntimeError> {
        let run_err = |e: ort::Error| RuntimeError::Run { model: self.name.clone(), detail: e.to_string() };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let input = TensorRef::from_array_view((dims, data)).map_err(run_err)?;
        let outputs = session.run(ort::inputs![input]).map_err(run_err)?;
        let mut result = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| RuntimeError::BadOutput {
                model: self.name.clone(),
                detail: format!("output {name}: {e}"),
            })?;
            result.push(NamedTensor {
                name: name.to_string(),
                tensor: Tensor { shape: shape.iter().map(|&d| d.max(0) as usize).collect(), data: data.to_vec() },
            });
        }
        Ok(result)
    }
}

impl InferenceModel for OrtModel {
    fn run(&self, shape: &[usize], data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError> {
        // Prefer a session nobody is using; otherwise queue on one, round-robin.
        for slot in &self.sessions {
            if let Ok(mut session) = slot.try_lock() {
                return self.run_session(&mut session, shape, data);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        let mut session = self.sessions[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.run_session(&mut session, shape, data)
    }

    fn run_lone(&self, shape: &[usize], data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError> {
        // Never wait for it: were it busy, the cores would not be idle anyway. A panic
        // in an earlier run leaves the session usable, as in `run`.
        match self.lone.as_ref().map(Mutex::try_lock) {
            Some(Ok(mut session)) => self.run_session(&mut session, shape, data),
            Some(Err(TryLockError::Poisoned(poisoned))) => self.run_session(&mut poisoned.into_inner(), shape, data),
            Some(Err(TryLockError::WouldBlock)) | None => self.run(shape, data),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose run takes a measurable time: it waits, without sleeping, until
    /// the monotonic clock has moved.
    struct Ticking;

    impl InferenceModel for Ticking {
        fn run(&self, _shape: &[usize], _data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError> {
            tick();
            Ok(Vec::new())
        }
        fn name(&self) -> &str {
            "ticking"
        }
    }

    /// Returns once `Instant::now()` has advanced past the call's start.
    fn tick() {
        let start = Instant::now();
        while Instant::now() <= start {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_stage_splits_into_network_and_the_rest() {
        let clock = StageClock::start();
        tick();
        run_timed(&Ticking, &[1], &[0.0]).unwrap();
        run_timed(&Ticking, &[1], &[0.0]).unwrap();
        tick();
        let time = clock.stop();
        assert!(time.network > Duration::ZERO, "{time:?}");
        assert!(time.network <= time.total, "{time:?}");
        // The work outside the runs is not counted as network.
        assert!(time.other() > Duration::ZERO, "{time:?}");
        assert_eq!(time.other() + time.network, time.total);
    }

    /// Counts the runs that went to `run` and to `run_lone`.
    #[derive(Default)]
    struct Counting {
        plain: AtomicUsize,
        lone: AtomicUsize,
    }

    impl InferenceModel for Counting {
        fn run(&self, _shape: &[usize], _data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError> {
            self.plain.fetch_add(1, Ordering::Relaxed);
            Ok(Vec::new())
        }
        fn run_lone(&self, _shape: &[usize], _data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError> {
            self.lone.fetch_add(1, Ordering::Relaxed);
            Ok(Vec::new())
        }
        fn name(&self) -> &str {
            "counting"
        }
    }

    #[test]
    fn runs_inside_alone_go_to_the_lone_session_and_only_those() {
        let model = Counting::default();
        run_timed(&model, &[1], &[0.0]).unwrap();
        alone(|| {
            run_timed(&model, &[1], &[0.0]).unwrap();
            // Nested: still alone, and still alone after the inner call returns.
            alone(|| run_timed(&model, &[1], &[0.0]).unwrap());
            run_timed(&model, &[1], &[0.0]).unwrap();
        });
        run_timed(&model, &[1], &[0.0]).unwrap();
        assert_eq!((model.plain.load(Ordering::Relaxed), model.lone.load(Ordering::Relaxed)), (2, 3));
        // A panic inside leaves the thread as it was.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| alone(|| panic!("in a lone run"))));
        assert!(caught.is_err());
        run_timed(&model, &[1], &[0.0]).unwrap();
        assert_eq!(model.plain.load(Ordering::Relaxed), 3);
        // Another thread is not alone because this one is.
        alone(|| std::thread::scope(|s| s.spawn(|| run_timed(&model, &[1], &[0.0]).unwrap()).join().unwrap()));
        assert_eq!(model.plain.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_stage_without_a_model_run_has_no_network_time() {
        let clock = StageClock::start();
        tick();
        let time = clock.stop();
        assert_eq!(time.network, Duration::ZERO);
        assert_eq!(time.other(), time.total);
    }

    #[test]
    fn runs_on_another_thread_do_not_count() {
        let clock = StageClock::start();
        let theirs = std::thread::scope(|s| {
            s.spawn(|| {
                let clock = StageClock::start();
                run_timed(&Ticking, &[1], &[0.0]).unwrap();
                clock.stop()
            })
            .join()
            .unwrap()
        });
        assert!(theirs.network > Duration::ZERO, "{theirs:?}");
        assert_eq!(clock.stop().network, Duration::ZERO);
    }

    #[test]
    fn a_failed_run_counts_too() {
        struct Failing;
        impl InferenceModel for Failing {
            fn run(&self, _shape: &[usize], _data: &[f32]) -> Result<Vec<NamedTensor>, RuntimeError> {
                tick();
                Err(RuntimeError::Run { model: "failing".into(), detail: "no".into() })
            }
            fn name(&self) -> &str {
                "failing"
            }
        }
        let clock = StageClock::start();
        assert!(run_timed(&Failing, &[1], &[0.0]).is_err());
        assert!(clock.stop().network > Duration::ZERO);
    }
}
