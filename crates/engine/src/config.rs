//! The engine's settings, and how it loads the pipeline of another model pack.

use std::sync::Arc;
use std::time::Duration;

use facesearch_face::{FacePipeline, Pack, PipelineError, QualityMinimums};
use facesearch_index::IndexConfig;

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
