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

use crate::error::EngineError;

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

    /// Refuses a setting out of its range, naming it: `liveness_threshold` (a
    /// probability, 0 to 1) and `duplicate_score` (a calibrated score, 0 to 100). NaN
    /// is in no range.
    pub fn validate(&self) -> Result<(), EngineError> {
        within("liveness_threshold", self.liveness_threshold, 0.0, 1.0, "between 0 and 1")?;
        within("duplicate_score", self.duplicate_score, 0.0, 100.0, "between 0 and 100")
    }

    /// The test-only pause, `None` in production builds.
    pub(crate) fn reembed_pause_after(&self) -> Option<u64> {
        #[cfg(feature = "test-knobs")]
        return self.reembed_pause_after;
        #[cfg(not(feature = "test-knobs"))]
        None
    }
}

/// `value` within `low..=high`, else [`EngineError::Setting`] naming `setting`.
fn within<T: PartialOrd + ToString>(
    setting: &'static str,
    value: T,
    low: T,
    high: T,
    range: &'static str,
) -> Result<(), EngineError> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(EngineError::Setting { setting, range, value: value.to_string() })
    }
}

/// Loads the face pipeline of a pack (fetching its models if needed). Called on the
/// blocking pool, at most once per pack.
pub type PipelineLoader = Arc<dyn Fn(Pack) -> Result<FacePipeline, PipelineError> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        assert!(EngineConfig::default().validate().is_ok());
        let edges = EngineConfig { liveness_threshold: 1.0, duplicate_score: 0.0, ..EngineConfig::default() };
        assert!(edges.validate().is_ok(), "the bounds are in range");
        for bad in [1.5, -0.1, f32::NAN] {
            let e =
                EngineConfig { liveness_threshold: bad, ..EngineConfig::default() }.validate().expect_err("refused");
            assert!(matches!(e, EngineError::Setting { setting: "liveness_threshold", .. }), "{e:?}");
            assert!(e.to_string().starts_with("liveness_threshold must be between 0 and 1, not "), "{e}");
        }
        for bad in [100.5, -1.0, f64::NAN] {
            let e = EngineConfig { duplicate_score: bad, ..EngineConfig::default() }.validate().expect_err("refused");
            assert!(matches!(e, EngineError::Setting { setting: "duplicate_score", .. }), "{e:?}");
        }
        let e = EngineConfig { duplicate_score: 101.0, ..EngineConfig::default() }.validate().expect_err("refused");
        assert_eq!(e.to_string(), "duplicate_score must be between 0 and 100, not 101");
        let e = EngineConfig { liveness_threshold: -0.1, ..EngineConfig::default() }.validate().expect_err("refused");
        assert_eq!(e.to_string(), "liveness_threshold must be between 0 and 1, not -0.1");
    }
}
