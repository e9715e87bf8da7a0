//! Passive liveness (presentation-attack detection): the MiniFASNet-design model looks
//! at the face with its surroundings (a square crop several times the face box) and
//! says how likely the capture is of a live person rather than a print, a screen or a mask.
//!
//! A view that does not fit inside the photo is shrunk to the largest square that
//! fits (the model's original Silent-Face cropping, [`CropFit::Shrink`]): out of fold,
//! that judged close-ups (a phone selfie shows 1.1–1.5× the face) better than padding
//! the view, and better than refusing them (see `docs/liveness-candidates.md`). A
//! close-up is scored by the fusion's close-up weights, fitted on close-ups only. Only a
//! face larger than the photo (context under 1.0: the face itself is cut off) is
//! "cannot judge" by default: judged, such crops scored worse than chance. A deployment
//! may require more context (`min_context`); refusing below 1.6 turned away most phone
//! selfies.
//!
//! The decision fuses features of the face — the model's live logit on the 2.7× and
//! 4.0× crops and their mirror images, and hand-crafted cues ([`crate::liveness_cues`])
//! — through a small logistic regression shipped as data ([`crate::liveness_fusion`]);
//! only the features the shipped fusion uses are computed, and the live score is its output.

use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;

use crate::detect::Detection;
use crate::liveness_cues::{CUE_NAMES, measure};
use crate::liveness_fusion::Fusion;
use crate::resize;
use crate::runtime::{InferenceModel, RuntimeError, run_timed};

const INPUT: u32 = 128;

/// Default live-score threshold: a face is live when its score is at least this. The
/// shipped fusion's intercept puts its chosen operating point here.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// The liveness check's settings; `min_context` is the server setting
/// `liveness_min_context` (serde name), the rest are fixed by the model.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LivenessConfig {
    /// Crop side as a multiple of the face box side.
    #[serde(skip)]
    pub crop_scale: f32,
    /// Faces with less context than this (achievable crop side / face side) are
    /// refused as "cannot judge". The default 1.0 refuses only a face larger than the
    /// photo; 0 judges every face.
    #[serde(rename = "liveness_min_context")]
    pub min_context: f32,
    /// How a view that does not fit inside the photo is taken.
    #[serde(skip)]
    pub fit: CropFit,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self { crop_scale: 2.7, min_context: 1.0, fit: CropFit::Shrink }
    }
}

/// How the model's square view around a face is taken when it does not fit inside
/// the photo (a close-up: the face fills much of the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CropFit {
    /// Shrunk to the largest square that fits and shifted inside the photo: the
    /// cropping of the model's original (Silent-Face) pipeline.
    Shrink,
    /// Kept at its scale, centred on the face; beyond the photo its edge pixels repeat.
    PadEdge,
    /// Kept at its scale, centred on the face; beyond the photo it is black.
    PadBlack,
}

impl CropFit {
    pub const ALL: [CropFit; 3] = [CropFit::Shrink, CropFit::PadEdge, CropFit::PadBlack];

    pub fn name(self) -> &'static str {
        match self {
            CropFit::Shrink => "shrink",
            CropFit::PadEdge => "pad-edge",
            CropFit::PadBlack => "pad-black",
        }
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
    /// Context of the largest view at the crop scale that fits (crop side / face side):
    /// which part of the fusion scores the face.
    pub context: f32,
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

/// The model's 128×128 input: a square of `scale` × the face side around the face,
/// taken the `fit` way when it does not fit inside the photo (a view that fits is the
/// same whatever `fit`). `None` for a degenerate face or image.
pub fn model_view(image: &RgbImage, face: &Detection, scale: f32, fit: CropFit) -> Option<RgbImage> {
    let shrunk = context_crop(image.width(), image.height(), face, scale)?;
    let side = face.bbox.width().max(face.bbox.height()) * scale;
    let x0 = (face.bbox.x1 + face.bbox.x2) / 2.0 - side / 2.0;
    let y0 = (face.bbox.y1 + face.bbox.y2) / 2.0 - side / 2.0;
    let (w, h) = (image.width() as f32, image.height() as f32);
    let fits = x0 >= 0.0 && y0 >= 0.0 && x0 + side <= w && y0 + side <= h;
    if fit == CropFit::Shrink || fits {
        let side = shrunk.side.max(1);
        return Some(resize::resize_region(image, (shrunk.x, shrunk.y, side, side), INPUT, INPUT));
    }
    Some(padded_view(image, x0, y0, side, fit == CropFit::PadEdge))
}

/// The square (`x0`, `y0`, `side`) that reaches beyond the photo, at 128×128: the part
/// inside the photo resampled to its place, the rest its repeated edge or black.
fn padded_view(image: &RgbImage, x0: f32, y0: f32, side: f32, edge: bool) -> RgbImage {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (ix0, iy0) = (x0.max(0.0).floor(), y0.max(0.0).floor());
    let (ix1, iy1) = ((x0 + side).min(w).ceil(), (y0 + side).min(h).ceil());
    let (iw, ih) = ((ix1 - ix0).max(1.0) as u32, (iy1 - iy0).max(1.0) as u32);
    // Output pixels per photo pixel.
    let k = INPUT as f32 / side;
    let pw = ((iw as f32 * k).round() as u32).clamp(1, INPUT);
    let ph = ((ih as f32 * k).round() as u32).clamp(1, INPUT);
    let px = (((ix0 - x0) * k).max(0.0).round() as u32).min(INPUT - pw);
    let py = (((iy0 - y0) * k).max(0.0).round() as u32).min(INPUT - ph);
    let part = resize::resize_region(image, (ix0 as u32, iy0 as u32, iw, ih), pw, ph);
    RgbImage::from_fn(INPUT, INPUT, |x, y| {
        let (cx, cy) = (x.clamp(px, px + pw - 1), y.clamp(py, py + ph - 1));
        if (cx, cy) == (x, y) || edge { *part.get_pixel(cx - px, cy - py) } else { image::Rgb([0, 0, 0]) }
    })
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

    /// The verdict: the fused live score, or "cannot judge" when the face has less
    /// context than `min_context`. Only the features the fusion uses are computed.
    pub fn assess(&self, image: &RgbImage, face: &Detection) -> Result<Liveness, RuntimeError> {
        if let Some(cannot_judge) = self.refusal(image, face) {
            return Ok(cannot_judge);
        }
        let context =
            context_crop(image.width(), image.height(), face, self.config.crop_scale).map_or(0.0, |c| c.context);
        let (part, _) = self.fusion.part(context);
        let wanted = FEATURE_NAMES.map(|name| part.iter().any(|f| f.name == name));
        let features = self.features_with(image, face, &wanted, self.config.fit)?;
        let score = self.fusion.score_at(features.context, &FEATURE_NAMES, &features.values);
        Ok(Liveness::Judged { live_probability: score as f32 })
    }

    /// The "cannot judge" verdict when the largest view around the face that fits in
    /// the photo gives less context than `min_context` (or there is no face to crop).
    pub fn refusal(&self, image: &RgbImage, face: &Detection) -> Option<Liveness> {
        let min_context = self.config.min_context;
        match context_crop(image.width(), image.height(), face, self.config.crop_scale) {
            None => Some(Liveness::CannotJudge { context: 0.0, min_context }),
            Some(crop) if crop.context < min_context => {
                Some(Liveness::CannotJudge { context: crop.context, min_context })
            }
            Some(_) => None,
        }
    }

    /// Every feature of a face the check can judge, or the "cannot judge" verdict.
    pub fn features(
        &self,
        image: &RgbImage,
        face: &Detection,
    ) -> Result<Result<LivenessFeatures, Liveness>, RuntimeError> {
        if let Some(cannot_judge) = self.refusal(image, face) {
            return Ok(Err(cannot_judge));
        }
        Ok(Ok(self.features_with(image, face, &[true; FEATURES], self.config.fit)?))
    }

    /// The features marked in `wanted` (the others are NaN) with the model's views taken
    /// the `fit` way, whatever the context (no refusal: the evaluation of refusal rules
    /// needs every face's features). A face too small to crop gets NaN throughout.
    pub fn features_with(
        &self,
        image: &RgbImage,
        face: &Detection,
        wanted: &[bool; FEATURES],
        fit: CropFit,
    ) -> Result<LivenessFeatures, RuntimeError> {
        let mut values = [f64::NAN; FEATURES];
        let Some(crop) = context_crop(image.width(), image.height(), face, self.config.crop_scale) else {
            return Ok(LivenessFeatures { values, context: 0.0 });
        };
        for (view, scale) in [self.config.crop_scale, WIDE_SCALE].into_iter().enumerate() {
            let (plain, mirror, mean) = (2 * view, 2 * view + 1, 4 + view);
            if !(wanted[plain] || wanted[mirror] || wanted[mean]) {
                continue;
            }
            let Some(input) = model_view(image, face, scale, fit) else { continue };
            if wanted[plain] || wanted[mean] {
                values[plain] = logit(self.live_probability(&input, false)?);
            }
            if wanted[mirror] || wanted[mean] {
                values[mirror] = logit(self.live_probability(&input, true)?);
            }
            values[mean] = (values[plain] + values[mirror]) / 2.0;
        }
        let mut cues_wanted = [false; 8];
        cues_wanted.copy_from_slice(&wanted[6..]);
        if cues_wanted.iter().any(|&w| w) {
            let cues = measure(image, face, (crop.x, crop.y, crop.side.max(1)), &cues_wanted);
            values[6..].copy_from_slice(&cues.values());
        }
        Ok(LivenessFeatures { values, context: crop.context })
    }

    /// The model's live probability (class 0 of its softmax) on one 128×128 view, or
    /// on its mirror image (read mirrored into the tensor: no flipped copy is made).
    fn live_probability(&self, input_image: &RgbImage, mirrored: bool) -> Result<f32, RuntimeError> {
        let bad = |detail: String| RuntimeError::BadOutput { model: self.model.name().to_string(), detail };
        let input = view_tensor(input_image, mirrored);
        let outputs = run_timed(&*self.model, &[1, 3, INPUT as usize, INPUT as usize], &input)?;
        let logits = &outputs.first().ok_or_else(|| bad("no output".into()))?.tensor.data;
        if logits.len() != 3 {
            return Err(bad(format!("{} logits, expected 3", logits.len())));
        }
        Ok(softmax(logits)[0])
    }
}

/// The model's NCHW input (BGR, raw 0–255) from a 128×128 view, mirrored left to
/// right when asked.
fn view_tensor(view: &RgbImage, mirrored: bool) -> Vec<f32> {
    let side = INPUT as usize;
    let plane = side * side;
    let mut input = vec![0f32; 3 * plane];
    for (y, row) in view.as_raw().chunks_exact(side * 3).take(side).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            let i = y * side + if mirrored { side - 1 - x } else { x };
            input[i] = f32::from(px[2]);
            input[plane + i] = f32::from(px[1]);
            input[2 * plane + i] = f32::from(px[0]);
        }
    }
    input
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
    fn a_view_that_fits_is_the_same_every_way_and_padding_fills_beyond_the_photo() {
        let img = RgbImage::from_fn(400, 300, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 200]));
        // A 50 px face: its 4.0× view (200 px) fits inside the photo.
        let small = face(150.0, 100.0, 200.0, 150.0);
        let views: Vec<RgbImage> = CropFit::ALL.iter().map(|&f| model_view(&img, &small, 4.0, f).unwrap()).collect();
        assert!(views.windows(2).all(|w| w[0] == w[1]));
        // A 200 px face: its 4.0× view (800 px) reaches beyond every side.
        let close = face(100.0, 50.0, 300.0, 250.0);
        let black = model_view(&img, &close, 4.0, CropFit::PadBlack).unwrap();
        let edge = model_view(&img, &close, 4.0, CropFit::PadEdge).unwrap();
        let shrunk = model_view(&img, &close, 4.0, CropFit::Shrink).unwrap();
        for view in [&black, &edge, &shrunk] {
            assert_eq!(view.dimensions(), (INPUT, INPUT));
        }
        assert_eq!(*black.get_pixel(0, 0), image::Rgb([0, 0, 0]));
        // The photo's (resampled) corner repeated: its blue is 200 everywhere.
        assert_eq!(edge.get_pixel(0, 0).0[2], 200);
        // The middle is the photo, the same padded either way; shrunk, the view differs.
        assert_eq!(black.get_pixel(64, 64), edge.get_pixel(64, 64));
        assert_ne!(shrunk, edge);
    }

    /// The mirrored tensor is the tensor of the flipped view.
    #[test]
    fn the_mirrored_tensor_is_the_flipped_views() {
        let view = RgbImage::from_fn(INPUT, INPUT, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let flipped = image::imageops::flip_horizontal(&view);
        assert_eq!(view_tensor(&view, true), view_tensor(&flipped, false));
        assert_ne!(view_tensor(&view, true), view_tensor(&view, false));
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
