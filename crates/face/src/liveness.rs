//! Passive liveness (presentation-attack detection): the MiniFASNet-design model looks
//! at the face with its surroundings (a square crop several times the face box) and
//! says how likely the capture is of a live person rather than a print, a screen or a mask.
//!
//! The model needs that context: on a photo where the face fills the frame it calls
//! nearly every live face a spoof. A face whose 2.7× crop does not fit (context under
//! `min_context`) is reported as "cannot judge", never as a confident answer.
//!
//! The decision fuses features of the face — the model's live logit on the 2.7× and
//! 4.0× crops and their mirror images, and hand-crafted cues ([`crate::liveness_cues`])
//! — through a small logistic regression shipped as data ([`crate::liveness_fusion`]);
//! only the features the shipped fusion uses are computed, and the live score is its output.

use std::sync::Arc;

use image::{RgbImage, imageops};
use serde::Serialize;

use crate::detect::Detection;
use crate::liveness_cues::{CUE_NAMES, measure};
use crate::liveness_fusion::Fusion;
use crate::runtime::{InferenceModel, RuntimeError};

const INPUT: u32 = 128;

/// Default live-score threshold: a face is live when its score is at least this. The
/// shipped fusion's intercept puts its chosen operating point here.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    /// Crop side as a multiple of the face box side.
    pub crop_scale: f32,
    /// The smallest context (achievable crop side / face side) the model can judge.
    pub min_context: f32,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self { crop_scale: 2.7, min_context: 1.6 }
    }
}

/// The liveness verdict input for one face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Liveness {
    /// The model judged the face: probability 0–1 that it is a live capture.
    Judged { live_probability: f32 },
    /// The face fills the frame: too little context around it to judge.
    CannotJudge { context: f32, min_context: f32 },
}

impl Liveness {
    pub fn live_probability(&self) -> Option<f32> {
        match self {
            Liveness::Judged { live_probability } => Some(*live_probability),
            Liveness::CannotJudge { .. } => None,
        }
    }
}

pub struct LivenessChecker {
    model: Arc<dyn InferenceModel>,
    config: LivenessConfig,
    fusion: &'static Fusion,
}

/// Crop scale of the second view of the model (the original design's second model
/// looks at 4.0× the face box).
const WIDE_SCALE: f32 = 4.0;

/// Number of liveness features.
pub const FEATURES: usize = 14;

/// Names of every liveness feature, in the order of [`LivenessFeatures::values`]:
/// the model's live logit on the 2.7× and 4.0× crops, their mirror images and the
/// mean of each crop with its mirror (a decision that does not change when a front
/// camera mirrors the picture), then the hand-crafted cues.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "model_logit_2_7",
    "model_logit_2_7_flip",
    "model_logit_4_0",
    "model_logit_4_0_flip",
    "model_logit_2_7_flipavg",
    "model_logit_4_0_flipavg",
    CUE_NAMES[0],
    CUE_NAMES[1],
    CUE_NAMES[2],
    CUE_NAMES[3],
    CUE_NAMES[4],
    CUE_NAMES[5],
    CUE_NAMES[6],
    CUE_NAMES[7],
];

/// Every liveness feature of one judged face (see [`FEATURE_NAMES`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LivenessFeatures {
    pub values: [f64; FEATURES],
}

/// The square crop around a face: left, top, side (pixels), and the context it gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextCrop {
    pub x: u32,
    pub y: u32,
    pub side: u32,
    pub context: f32,
}

/// A square of `scale` × the face's larger side around its centre; when the image is
/// too small the square shrinks to fit and is shifted inside the image (as the
/// model's original cropping does).
pub fn context_crop(width: u32, height: u32, face: &Detection, scale: f32) -> Option<ContextCrop> {
    let face_side = face.bbox.width().max(face.bbox.height());
    if face_side < 1.0 || width == 0 || height == 0 {
        return None;
    }
    let side = (face_side * scale).min(width.min(height) as f32).max(1.0);
    let cx = (face.bbox.x1 + face.bbox.x2) / 2.0;
    let cy = (face.bbox.y1 + face.bbox.y2) / 2.0;
    let x = (cx - side / 2.0).clamp(0.0, width as f32 - side);
    let y = (cy - side / 2.0).clamp(0.0, height as f32 - side);
    Some(ContextCrop { x: x as u32, y: y as u32, side: side as u32, context: side / face_side })
}

/// ln(p / (1 − p)) with p kept away from 0 and 1 so a saturated softmax stays finite.
fn logit(p: f32) -> f64 {
    let p = f64::from(p).clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln()
}

impl LivenessChecker {
    /// A checker deciding with the fusion shipped in `crates/face/liveness/fusion.json`.
    pub fn new(model: Arc<dyn InferenceModel>, config: LivenessConfig) -> Self {
        Self { model, config, fusion: Fusion::shipped() }
    }

    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// The verdict: the fused live score, or "cannot judge" when the face fills the frame.
    /// Only the features the fusion uses are computed.
    pub fn assess(&self, image: &RgbImage, face: &Detection) -> Result<Liveness, RuntimeError> {
        let wanted = FEATURE_NAMES.map(|name| self.fusion.features.iter().any(|f| f.name == name));
        match self.features_wanted(image, face, &wanted)? {
            Ok(features) => {
                let score = self.fusion.score(&FEATURE_NAMES, &features.values);
                Ok(Liveness::Judged { live_probability: score as f32 })
            }
            Err(cannot_judge) => Ok(cannot_judge),
        }
    }

    /// Every feature of a face the check can judge, or the "cannot judge" verdict.
    pub fn features(
        &self,
        image: &RgbImage,
        face: &Detection,
    ) -> Result<Result<LivenessFeatures, Liveness>, RuntimeError> {
        self.features_wanted(image, face, &[true; FEATURES])
    }

    /// The features marked in `wanted` (the others are NaN), or the "cannot judge" verdict.
    fn features_wanted(
        &self,
        image: &RgbImage,
        face: &Detection,
        wanted: &[bool; FEATURES],
    ) -> Result<Result<LivenessFeatures, Liveness>, RuntimeError> {
        let min_context = self.config.min_context;
        let Some(crop) = context_crop(image.width(), image.height(), face, self.config.crop_scale) else {
            return Ok(Err(Liveness::CannotJudge { context: 0.0, min_context }));
        };
        if crop.context < min_context {
            return Ok(Err(Liveness::CannotJudge { context: crop.context, min_context }));
        }
        let mut values = [f64::NAN; FEATURES];
        let wide = context_crop(image.width(), image.height(), face, WIDE_SCALE).unwrap_or(crop);
        for (view, crop) in [crop, wide].into_iter().enumerate() {
            let (plain, mirror, mean) = (2 * view, 2 * view + 1, 4 + view);
            if !(wanted[plain] || wanted[mirror] || wanted[mean]) {
                continue;
            }
            let sample = imageops::crop_imm(image, crop.x, crop.y, crop.side.max(1), crop.side.max(1)).to_image();
            let resized = imageops::resize(&sample, INPUT, INPUT, imageops::FilterType::Triangle);
            if wanted[plain] || wanted[mean] {
                values[plain] = logit(self.live_probability(&resized)?);
            }
            if wanted[mirror] || wanted[mean] {
                values[mirror] = logit(self.live_probability(&imageops::flip_horizontal(&resized))?);
            }
            values[mean] = (values[plain] + values[mirror]) / 2.0;
        }
        let mut cues_wanted = [false; 8];
        cues_wanted.copy_from_slice(&wanted[6..]);
        if cues_wanted.iter().any(|&w| w) {
            let cues = measure(image, face, (crop.x, crop.y, crop.side.max(1)), &cues_wanted);
            values[6..].copy_from_slice(&cues.values());
        }
        Ok(Ok(LivenessFeatures { values }))
    }

    /// The model's live probability (class 0 of its softmax) on one 128×128 view.
    fn live_probability(&self, input_image: &RgbImage) -> Result<f32, RuntimeError> {
        let bad = |detail: String| RuntimeError::BadOutput { model: self.model.name().to_string(), detail };
        let plane = (INPUT * INPUT) as usize;
        let mut input = vec![0f32; 3 * plane];
        for (i, px) in input_image.pixels().enumerate() {
            // BGR, raw 0–255.
            input[i] = f32::from(px.0[2]);
            input[plane + i] = f32::from(px.0[1]);
            input[2 * plane + i] = f32::from(px.0[0]);
        }
        let outputs = self.model.run(&[1, 3, INPUT as usize, INPUT as usize], &input)?;
        let logits = &outputs.first().ok_or_else(|| bad("no output".into()))?.tensor.data;
        if logits.len() != 3 {
            return Err(bad(format!("{} logits, expected 3", logits.len())));
        }
        Ok(softmax(logits)[0])
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;

    fn face(x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection { bbox: BBox { x1, y1, x2, y2 }, landmarks: [[0.0; 2]; 5], score: 1.0 }
    }

    #[test]
    fn crop_has_full_context_in_a_large_frame() {
        let c = context_crop(1000, 1000, &face(450.0, 450.0, 550.0, 550.0), 2.7).unwrap();
        assert_eq!((c.x, c.y, c.side), (365, 365, 270));
        assert!((c.context - 2.7).abs() < 1e-6);
    }

    #[test]
    fn crop_shifts_inside_and_shrinks_when_the_face_fills_the_frame() {
        let c = context_crop(1000, 600, &face(0.0, 0.0, 100.0, 100.0), 2.7).unwrap();
        assert_eq!((c.x, c.y, c.side), (0, 0, 270));
        let tight = context_crop(120, 120, &face(5.0, 5.0, 115.0, 115.0), 2.7).unwrap();
        assert_eq!(tight.side, 120);
        assert!(tight.context < 1.2);
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
