//! What the engine tells an observer (the server's metrics) about its work.

use std::time::Duration;

use facesearch_face::StageTimings;

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
