//! The face pipeline: turns any photo a user may send into the faces in it — box, five
//! landmarks, embedding, liveness — with the registry-shipped models of a model pack.
//!
//! Data flows one way: [`decode`] → [`detect`] → [`align`] → [`embed`] (→ [`liveness`]);
//! [`pipeline::FacePipeline`] ties the stages together. Inference goes through the
//! narrow [`runtime`] trait, implemented on ONNX Runtime.

pub mod align;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod every_face;
pub mod liveness;
pub mod liveness_cues;
pub mod liveness_fusion;
pub mod orient;
pub mod pipeline;
pub mod quality;
pub mod resize;
pub mod runtime;

pub use decode::{DecodeError, DecodeLimits, DecodedImage};
pub use detect::{BBox, Detection, DetectorConfig};
pub use embed::cosine;
pub use every_face::{EveryFace, SeenFace, Unembedded};
pub use liveness::{Liveness, LivenessConfig};
pub use orient::Rotation;
pub use pipeline::{FaceChoice, FacePipeline, Pack, PipelineConfig, PipelineError, ProbeFace, StageTimings, Upright};
pub use quality::{FaceQuality, QualityFailure, QualityMinimums};
pub use runtime::{RuntimeOptions, StageClock, StageTime};
pub mod calibration;
pub mod false_matches;
pub mod fpir_table;
