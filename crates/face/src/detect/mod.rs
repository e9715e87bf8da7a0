//! Face detection: a detector network (YuNet or SCRFD) turns an image into face boxes
//! with five landmarks. This module holds what both share — fitting the photo into the
//! network's input (at the photo's own aspect ratio: both networks take any size that
//! is a multiple of their largest stride, YuNet once its pinned file is edited, see
//! `facesearch_models::onnx_edit`), non-maximum suppression, the padded-canvas retry
//! for faces that fill the frame — and each network's output decoding lives in its
//! own file.

mod scrfd;
mod yunet;

use std::sync::Arc;

use image::{RgbImage, imageops};
use serde::Serialize;

use crate::resize;
use crate::runtime::{InferenceModel, NamedTensor, RuntimeError, run_timed};

pub use scrfd::decode_scrfd;
pub use yunet::decode_yunet;

/// An axis-aligned box in image pixels: left, top, right, bottom.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    pub fn iou(&self, other: &BBox) -> f32 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// Five facial landmarks: right eye, left eye (as seen in the image: the subject's
/// right eye is on the image's left), nose tip, right and left mouth corners.
pub type Landmarks = [[f32; 2]; 5];

/// One detected face.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub bbox: BBox,
    pub landmarks: Landmarks,
    pub score: f32,
}

impl Detection {
    fn mapped(&self, scale: f32, dx: f32, dy: f32) -> Detection {
        let m = |x: f32, off: f32| x / scale - off;
        Detection {
            bbox: BBox {
                x1: m(self.bbox.x1, dx),
                y1: m(self.bbox.y1, dy),
                x2: m(self.bbox.x2, dx),
                y2: m(self.bbox.y2, dy),
            },
            landmarks: self.landmarks.map(|[x, y]| [m(x, dx), m(y, dy)]),
            score: self.score,
        }
    }
}

/// Which detector network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    YuNet,
    Scrfd,
}

impl DetectorKind {
    /// Where this network's confidence decides whether a photo is turned.
    pub fn confidence(self) -> crate::orient::Confidence {
        match self {
            DetectorKind::YuNet => crate::orient::Confidence::YUNET,
            DetectorKind::Scrfd => crate::orient::Confidence::SCRFD,
        }
    }
}

/// The shape of the network input a photo is fitted into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputShape {
    /// A square of the input's long side, the photo top-left and black elsewhere (the
    /// shape the detectors were published with).
    Square,
    /// The photo's own aspect ratio: the long side the square's, the short side the
    /// scaled photo's plus a margin, rounded up to a multiple of [`STRIDE`] (a 16:9
    /// photo: 640×416 instead of 640×640).
    AspectRatio,
}

#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// Minimum detector confidence, 0–1.
    pub score_threshold: f32,
    /// Boxes overlapping a better one by more than this IoU are dropped.
    pub nms_iou: f32,
    /// How a photo is fitted into the input.
    pub shape: InputShape,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self { score_threshold: 0.6, nms_iou: 0.4, shape: InputShape::AspectRatio }
    }
}

/// Images whose longer side is shorter than this are retried enlarged when no face is found.
pub const THUMBNAIL_SIDE: u32 = 160;

/// Long side of the network input: a photo is scaled down to fit it, never up.
pub const INPUT_SIZE: u32 = 640;

/// The detectors' largest stride: every input side is a multiple of it.
pub const STRIDE: u32 = 32;

/// Black pixels at least past the photo on the short side of an [`InputShape::AspectRatio`] input.
const MARGIN: u32 = 32;

/// A face detector network plus its pre- and post-processing.
pub struct FaceDetector {
    kind: DetectorKind,
    model: Arc<dyn InferenceModel>,
    config: DetectorConfig,
}

impl FaceDetector {
    pub fn new(kind: DetectorKind, model: Arc<dyn InferenceModel>, config: DetectorConfig) -> Self {
        Self { kind, model, config }
    }

    /// All faces in `image`, largest first. When nothing is found the image is retried
    /// on a canvas twice its size, which finds faces that fill the whole frame (tight
    /// crops, ID photos) that detectors trained on scenes miss; and a thumbnail (under
    /// [`THUMBNAIL_SIDE`] pixels) is retried enlarged, so that a face below the
    /// detector's smallest anchor is found and reported as too small, not as missing.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, RuntimeError> {
        let faces = self.detect_once(image, 0)?;
        if !faces.is_empty() {
            return Ok(faces);
        }
        let pad = image.width().max(image.height()) / 2;
        let faces = self.detect_once(image, pad)?;
        let side = image.width().max(image.height());
        if !faces.is_empty() || side >= THUMBNAIL_SIDE || side == 0 {
            return Ok(faces);
        }
        let factor = (THUMBNAIL_SIDE / side).max(2);
        let enlarged =
            imageops::resize(image, image.width() * factor, image.height() * factor, imageops::FilterType::Triangle);
        let pad = enlarged.width().max(enlarged.height()) / 2;
        let faces = self.detect_once(&enlarged, pad)?;
        Ok(faces.into_iter().map(|d| d.mapped(factor as f32, 0.0, 0.0)).collect())
    }

    fn detect_once(&self, image: &RgbImage, pad: u32) -> Result<Vec<Detection>, RuntimeError> {
        let letterbox = Letterbox::new(image, pad, INPUT_SIZE, self.config.shape);
        let input = letterbox.tensor(image, self.kind);
        let (w, h) = (letterbox.width, letterbox.height);
        let outputs = run_timed(&*self.model, &[1, 3, h as usize, w as usize], &input)?;
        let raw = match self.kind {
            DetectorKind::YuNet => decode_yunet(&outputs, w, h, self.config.score_threshold),
            DetectorKind::Scrfd => decode_scrfd(&outputs, w, h, self.config.score_threshold),
        }
        .map_err(|detail| RuntimeError::BadOutput { model: self.model.name().to_string(), detail })?;
        let mut faces: Vec<Detection> = nms(raw, self.config.nms_iou)
            .into_iter()
            .map(|d| d.mapped(letterbox.scale, pad as f32, pad as f32))
            .collect();
        faces.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        Ok(faces)
    }
}

/// The image (on a canvas padded by `pad` on every side) scaled to fit the network
/// input, top-left aligned, zero padded to the input's size. Only the scaled photo is
/// held (not a padded canvas): the tensor is filled from it in one pass, and the
/// padding is written as the value black has in the tensor.
struct Letterbox {
    /// The photo at `scale`; `None` when it is not scaled (the photo itself is read: no copy).
    resized: Option<RgbImage>,
    /// Where the photo starts in the input (the padding, scaled), on both axes.
    offset: u32,
    scale: f32,
    /// The input's size, multiples of [`STRIDE`].
    width: u32,
    height: u32,
}

impl Letterbox {
    /// Fits the padded photo into an input whose long side is at most `side` (a
    /// multiple of [`STRIDE`]).
    fn new(image: &RgbImage, pad: u32, side: u32, shape: InputShape) -> Letterbox {
        let (w, h) = (image.width() + 2 * pad, image.height() + 2 * pad);
        // Never enlarge: the detectors are most accurate on faces at their native
        // size (upscaling a 250×250 photo shifts the landmarks by pixels).
        let scale = (side as f32 / w.max(h) as f32).min(1.0);
        let fit = |n: u32| ((n as f32 * scale).round() as u32).clamp(1, side);
        let (iw, ih) = (fit(image.width()), fit(image.height()));
        let resized = ((iw, ih) != image.dimensions()).then(|| resize::resize(image, iw, ih));
        let offset = ((pad as f32 * scale).round() as u32).min(side);
        let (width, height) = match shape {
            InputShape::Square => (side, side),
            InputShape::AspectRatio => {
                // The long side stays `side`, as in the square, so that a photo smaller
                // than the input keeps the black around it along that axis; the short
                // side ends MARGIN black pixels or more past the photo: faces cut by
                // the photo's edge are found with the boxes the square gives them
                // (without the margin, one face cut by the bottom edge of
                // deepface/img62.jpg was lost).
                let short = |n: u32| (fit(n) + MARGIN).div_ceil(STRIDE).saturating_mul(STRIDE).min(side);
                if w >= h { (side, short(h)) } else { (short(w), side) }
            }
        };
        Self { resized, offset, scale, width, height }
    }

    /// NCHW floats in the colour order and scaling the network expects, with the photo
    /// (`image` itself when it was not scaled) at its offset and black elsewhere.
    fn tensor(&self, image: &RgbImage, kind: DetectorKind) -> Vec<f32> {
        // Channel order and the value of a channel byte: YuNet takes BGR, raw 0–255;
        // SCRFD RGB, (x − 127.5) / 128.
        match kind {
            DetectorKind::YuNet => self.fill(image, [2, 1, 0], f32::from),
            DetectorKind::Scrfd => self.fill(image, [0, 1, 2], |c| (f32::from(c) - 127.5) / 128.0),
        }
    }

    /// [`Letterbox::tensor`] for one channel `order` and byte `value`: generic, so that
    /// the conversion is inlined into the loop (a function pointer per value cost more
    /// than the writes), each plane written row by row without bounds checks.
    fn fill(&self, image: &RgbImage, order: [usize; 3], value: impl Fn(u8) -> f32) -> Vec<f32> {
        let photo = self.resized.as_ref().unwrap_or(image);
        let (width, height) = (self.width as usize, self.height as usize);
        let plane = width * height;
        let mut out = vec![value(0); 3 * plane];
        let (first, rest) = out.split_at_mut(plane);
        let (second, third) = rest.split_at_mut(plane);
        let off = self.offset as usize;
        // Pixels beyond the input (rounding of the scaled padding) are cut off.
        let cols = (photo.width() as usize).min(width.saturating_sub(off));
        let rows = photo.as_raw().chunks_exact(photo.width() as usize * 3).take(height.saturating_sub(off));
        for (y, row) in rows.enumerate() {
            let start = (off + y) * width + off;
            let span = start..start + cols;
            let planes = first[span.clone()].iter_mut().zip(&mut second[span.clone()]).zip(&mut third[span]);
            for (px, ((a, b), c)) in row.chunks_exact(3).zip(planes) {
                *a = value(px[order[0]]);
                *b = value(px[order[1]]);
                *c = value(px[order[2]]);
            }
        }
        out
    }
}

/// Greedy non-maximum suppression: keeps the best-scoring box of each overlapping group.
pub fn nms(mut faces: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for face in faces {
        if kept.iter().all(|k| k.bbox.iou(&face.bbox) <= iou_threshold) {
            kept.push(face);
        }
    }
    kept
}

/// The output of `outputs` called `name`, or an error naming what is missing.
fn output<'a>(outputs: &'a [NamedTensor], name: &str) -> Result<&'a NamedTensor, String> {
    outputs.iter().find(|o| o.name == name).ok_or_else(|| format!("no output named {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> Detection {
        Detection { bbox: BBox { x1, y1, x2, y2 }, landmarks: [[0.0; 2]; 5], score }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let b = BBox { x1: 5.0, y1: 0.0, x2: 15.0, y2: 10.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&BBox { x1: 20.0, y1: 20.0, x2: 30.0, y2: 30.0 }), 0.0);
        assert_eq!(a.iou(&a), 1.0);
    }

    #[test]
    fn nms_keeps_the_best_of_each_overlapping_group() {
        let faces = vec![
            det(0.0, 0.0, 10.0, 10.0, 0.8),
            det(1.0, 1.0, 11.0, 11.0, 0.9), // overlaps the first, better
            det(50.0, 50.0, 60.0, 60.0, 0.7),
            det(51.0, 50.0, 61.0, 60.0, 0.6),
        ];
        let kept = nms(faces, 0.4);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].score, 0.7);
    }

    /// The previous letterbox: `imageops::resize` (triangle) onto a black 640×640
    /// canvas, then the tensor from the canvas.
    fn previous_tensor(image: &RgbImage, pad: u32, kind: DetectorKind) -> Vec<f32> {
        let lb = Letterbox::new(image, pad, INPUT_SIZE, InputShape::Square);
        let fit = |n: u32| ((n as f32 * lb.scale).round() as u32).clamp(1, INPUT_SIZE);
        let resized = imageops::resize(image, fit(image.width()), fit(image.height()), imageops::FilterType::Triangle);
        let mut canvas = RgbImage::new(INPUT_SIZE, INPUT_SIZE);
        let off = (pad as f32 * lb.scale).round() as i64;
        imageops::replace(&mut canvas, &resized, off, off);
        let plane = (INPUT_SIZE * INPUT_SIZE) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in canvas.pixels().enumerate() {
            let [r, g, b] = px.0.map(f32::from);
            let values = match kind {
                DetectorKind::YuNet => [b, g, r],
                DetectorKind::Scrfd => [r, g, b].map(|c| (c - 127.5) / 128.0),
            };
            for (c, v) in values.into_iter().enumerate() {
                out[c * plane + i] = v;
            }
        }
        out
    }

    /// The SIMD letterbox puts every pixel where the previous one did, within 2 levels
    /// (the resize's stated tolerance, `crate::resize`); unscaled photos exactly.
    #[test]
    fn letterbox_tensor_matches_the_previous_one() {
        let photo = |w: u32, h: u32| {
            RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 253) as u8]))
        };
        for (image, pad, exact) in [
            (photo(1920, 1080), 0, false),
            (photo(1382, 1868), 934, false),
            (photo(250, 250), 0, true),
            (photo(250, 250), 125, true),
        ] {
            for kind in [DetectorKind::YuNet, DetectorKind::Scrfd] {
                let now = Letterbox::new(&image, pad, INPUT_SIZE, InputShape::Square).tensor(&image, kind);
                let before = previous_tensor(&image, pad, kind);
                assert_eq!(now.len(), before.len());
                let unit = if kind == DetectorKind::YuNet { 1.0 } else { 1.0 / 128.0 };
                let max = now.iter().zip(&before).map(|(a, b)| (a - b).abs() / unit).fold(0f32, f32::max);
                let tolerance = if exact { 0.0 } else { 2.0 + 1e-3 };
                assert!(max <= tolerance, "{:?} pad {pad} {kind:?}: {max} levels", image.dimensions());
            }
        }
    }

    /// At the photo's aspect ratio the long side is the square's and the short side the
    /// scaled photo's (canvas included) plus the margin, rounded up to a multiple of
    /// the stride; the scale is the square's.
    #[test]
    fn aspect_ratio_inputs() {
        for ((w, h, pad, side), want) in [
            ((1920, 1080, 0, 640), (640, 416)),
            ((1382, 1868, 0, 640), (512, 640)),
            ((1382, 1868, 934, 640), (608, 640)),
            ((250, 250, 0, 640), (640, 288)),
            ((250, 250, 125, 640), (640, 544)),
            ((92, 112, 0, 640), (128, 640)),
            ((1920, 1080, 0, 320), (320, 224)),
            ((3, 2000, 0, 640), (64, 640)),
            ((640, 620, 0, 640), (640, 640)),
        ] {
            let image = RgbImage::new(w, h);
            let lb = Letterbox::new(&image, pad, side, InputShape::AspectRatio);
            assert_eq!((lb.width, lb.height), want, "{w}×{h} pad {pad} into {side}");
            let square = Letterbox::new(&image, pad, side, InputShape::Square);
            assert_eq!((square.width, square.height, square.scale), (side, side, lb.scale));
            // The tensor is the input's size, the photo's pixels where the square has them.
            for kind in [DetectorKind::YuNet, DetectorKind::Scrfd] {
                let t = lb.tensor(&image, kind);
                assert_eq!(t.len(), 3 * (want.0 * want.1) as usize);
            }
        }
        let photo = RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let (wide, square) = (
            Letterbox::new(&photo, 0, 640, InputShape::AspectRatio).tensor(&photo, DetectorKind::YuNet),
            Letterbox::new(&photo, 0, 640, InputShape::Square).tensor(&photo, DetectorKind::YuNet),
        );
        let (ww, wh) = (640, 256);
        for c in 0..3 {
            for y in 0..wh {
                for x in 0..ww {
                    assert_eq!(wide[(c * wh + y) * ww + x], square[(c * 640 + y) * 640 + x]);
                }
            }
        }
    }

    #[test]
    fn letterbox_maps_back_to_image_coordinates() {
        let image = RgbImage::new(1280, 640);
        let lb = Letterbox::new(&image, 0, INPUT_SIZE, InputShape::Square);
        assert_eq!(lb.scale, 0.5);
        let d = det(100.0, 50.0, 200.0, 150.0, 1.0).mapped(lb.scale, 0.0, 0.0);
        assert_eq!((d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2), (200.0, 100.0, 400.0, 300.0));
        // With padding the offset is removed after scaling back.
        let lb = Letterbox::new(&image, 320, INPUT_SIZE, InputShape::Square);
        let d = det(160.0, 160.0, 200.0, 200.0, 1.0).mapped(lb.scale, 320.0, 320.0);
        assert!((d.bbox.x1 - (160.0 / lb.scale - 320.0)).abs() < 1e-3);
    }
}
