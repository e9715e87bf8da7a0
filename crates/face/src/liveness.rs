//! Passive liveness (presentation-attack detection): the MiniFASNet-design model looks
//! at the face with its surroundings (a square 2.7× the face box) and says how likely
//! the capture is of a live person rather than a print, a screen or a mask.
//!
//! The model needs that context: on a photo where the face fills the frame it calls
//! nearly every live face a spoof. Such inputs are reported as "cannot judge", never
//! as a confident answer.

use std::sync::Arc;

use image::{RgbImage, imageops};
use serde::Serialize;

use crate::detect::Detection;
use crate::runtime::{InferenceModel, RuntimeError};

const INPUT: u32 = 128;

/// Default live-probability threshold: a face is live when its probability is at least this.
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

impl LivenessChecker {
    pub fn new(model: Arc<dyn InferenceModel>, config: LivenessConfig) -> Self {
        Self { model, config }
    }

    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    pub fn assess(&self, image: &RgbImage, face: &Detection) -> Result<Liveness, RuntimeError> {
        let bad = |detail: String| RuntimeError::BadOutput { model: self.model.name().to_string(), detail };
        let Some(crop) = context_crop(image.width(), image.height(), face, self.config.crop_scale) else {
            return Ok(Liveness::CannotJudge { context: 0.0, min_context: self.config.min_context });
        };
        if crop.context < self.config.min_context {
            return Ok(Liveness::CannotJudge { context: crop.context, min_context: self.config.min_context });
        }
        let view = imageops::crop_imm(image, crop.x, crop.y, crop.side.max(1), crop.side.max(1)).to_image();
        let resized = imageops::resize(&view, INPUT, INPUT, imageops::FilterType::Triangle);
        let plane = (INPUT * INPUT) as usize;
        let mut input = vec![0f32; 3 * plane];
        for (i, px) in resized.pixels().enumerate() {
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
        Ok(Liveness::Judged { live_probability: softmax(logits)[0] })
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
