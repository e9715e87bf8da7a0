//! The engine's settings, and how it loads the pipeline of another model pack.
//!
//! [`EngineConfig`] is also the engine's part of the server's settings tree: its
//! serde names are the flat keys of `facesearch serve` (flags, `FACESEARCH_*`, the
//! config file), and its defaults are defined here only.

use std::sync::Arc;
use std::time::Duration;

use facesearch_face::{FacePipeline, Pack, PipelineError, QualityMinimums};
use facesearch_vectors::VectorConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Live probability below which a probe is refused as a spoof.
    pub liveness_threshold: f32,
    /// Photos analysed at once; more wait, up to `queue_timeout`. The server sets it
    /// from its `workers` setting.
    #[serde(skip)]
    pub max_concurrent_analyses: usize,
    /// How long a photo may wait for an analysis slot before the request is refused as busy.
    #[serde(skip)]
    pub queue_timeout: Duration,
    /// Exact or approximate vector search, by collection size.
    #[serde(flatten)]
    pub vectors: VectorConfig,
    /// Test-only: a re-embedding job stops (still `running`, resumed at the next start)
    /// once this many images of its index are staged. Lets a test interrupt a job at a
    /// known point without timing. Only in a build with the `test-knobs` feature (the
    /// workspace's tests turn it on); no setting (see [`EngineConfig::pause_reembeds_after`]).
    #[cfg(feature = "test-knobs")]
    #[serde(skip)]
    reembed_pause_after: Option<u64>,
    /// The least face quality an enrolment needs; searches report probes below it.
    #[serde(flatten)]
    pub quality: QualityMinimums,
    /// Calibrated score at or above which two faces of different records count as one
    /// person: the default of a duplicate search and the bar of `check_duplicates`.
    pub duplicate_score: f64,
}

/// The default [`EngineConfig::duplicate_score`]: strict (a stranger scores this high
/// with probability about 2e-6 on the shipped calibration of the `open` pack).
pub const DEFAULT_DUPLICATE_SCORE: f64 = 80.0;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            liveness_threshold: facesearch_face::liveness::DEFAULT_THRESHOLD,
            max_concurrent_analyses: 1,
            queue_timeout: Duration::from_secs(10),
            vectors: VectorConfig::default(),
            #[cfg(feature = "test-knobs")]
            reembed_pause_after: None,
            quality: QualityMinimums::default(),
            duplicate_score: DEFAULT_DUPLICATE_SCORE,
        }
    }
}

impl EngineConfig {
    /// Test-only: re-embedding jobs pause once `images` of their index are staged.
    /// `false` (nothing set) in a build without the `test-knobs` feature.
    pub fn pause_reembeds_after(&mut self, images: u64) -> bool {
        #[cfg(feature = "test-knobs")]
        {
            self.reembed_pause_after = Some(images);
            true
        }
        #[cfg(not(feature = "test-knobs"))]
        {
            let _ = images;
            false
        }
    }

    /// The test-only pause, `None` in production builds.
    pub(crate) fn reembed_pause_after(&self) -> Option<u64> {
        #[cfg(feature = "test-knobs")]
        return self.reembed_pause_after;
        #[cfg(not(feature = "test-knobs"))]
        None
    }
}

/// Loads the face pipeline of a pack (fetching its models if needed). Called on the
/// blocking pool, at most once per pack.
pub type PipelineLoader = Arc<dyn Fn(Pack) -> Result<FacePipeline, PipelineError> + Send + Sync>;
