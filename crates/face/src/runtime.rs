//! The inference runtime, kept behind a narrow trait (load a model, run a tensor) so
//! that another engine can be added without touching the pipeline.
//!
//! The ONNX Runtime implementation loads `libonnxruntime` dynamically from the
//! verified models cache (`ort` with `load-dynamic`): nothing is downloaded at build
//! time and a missing library is an error, never a panic.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// A short name for errors and logs.
    fn name(&self) -> &str;
}

/// An inference engine: turns a model file into a runnable [`InferenceModel`].
pub trait InferenceRuntime: Send + Sync {
    fn load(&self, path: &Path) -> Result<Arc<dyn InferenceModel>, RuntimeError>;
}

/// Threading of the ONNX Runtime sessions.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeOptions {
    /// Threads one inference may use (ORT intra-op threads).
    pub intra_threads: usize,
    /// Sessions kept per model, so that this many requests can infer at once.
    pub sessions_per_model: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        // One thread per inference and one session per core: these networks are small,
        // and on two cores a two-thread inference measured twice as slow as two
        // single-thread inferences side by side (`facesearch bench pipeline`).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { intra_threads: 1, sessions_per_model: cores.clamp(1, 8) }
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
            ort::init_from(library)
                .map_err(|e| e.to_string())
                .and_then(|b| b.with_name("facesearch").build().map_err(|e| e.to_string()))
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

    fn session(&self, path: &Path) -> Result<Session, RuntimeError> {
        let load_err = |e: ort::Error| RuntimeError::Load { path: path.to_path_buf(), detail: e.to_string() };
        Session::builder(&self.env)
            .map_err(load_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load_err(e.into()))?
            .with_intra_threads(self.options.intra_threads.max(1))
            .map_err(|e| load_err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| load_err(e.into()))?
            .commit_from_file(path)
            .map_err(load_err)
    }
}

impl InferenceRuntime for OrtRuntime {
    fn load(&self, path: &Path) -> Result<Arc<dyn InferenceModel>, RuntimeError> {
        let n = self.options.sessions_per_model.max(1);
        let sessions = (0..n).map(|_| self.session(path).map(Mutex::new)).collect::<Result<Vec<_>, _>>()?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Arc::new(OrtModel { name, sessions, next: AtomicUsize::new(0) }))
    }
}

/// A pool of ORT sessions of one model: `Session::run` needs `&mut`, so concurrent
/// requests each take a free session (or wait on one, round-robin).
struct OrtModel {
    name: String,
    sessions: Vec<Mutex<Session>>,
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

    fn name(&self) -> &str {
        &self.name
    }
}
