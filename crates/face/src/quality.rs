//! Face quality: cheap measures (well under a millisecond) of how fit one detected
//! face is for recognition, and the minimums an enrolment must meet.
//!
//! Every measure is taken either from the detection (box, five landmarks, score, in
//! the pixels of the original image) or from the aligned 112×112 crop the embedder
//! sees, converted to grey:
//!
//! * **Size**: the inter-ocular distance and the shorter side of the face box.
//! * **Sharpness**: the variance of the 4-neighbour Laplacian over the inner face
//!   region of the aligned crop, scaled to mid-grey exposure (× (128 / mean grey)²).
//!   The crop always has the same size, so the figure is comparable between photos of
//!   any resolution: a small face upscaled into the crop or a blurred one loses its
//!   fine detail and scores low. The exposure scaling keeps a darker photo of the same
//!   face from reading as blurred (darkening by a factor scales the Laplacian by it).
//! * **Brightness**: the mean grey level (0–255) of the inner face region.
//! * **Exposure**: the fractions of the inner face region that are clipped dark
//!   (≤ [`DARK_LEVEL`]) or bright (≥ [`BRIGHT_LEVEL`]).
//! * **Compression**: JPEG blockiness, the mean grey-level step across the 8×8 block
//!   boundaries of the original image divided by the mean step inside the blocks,
//!   over the face box. About 1 for an uncompressed or well-compressed photo; heavy
//!   compression flattens the blocks and leaves steps at their edges (q=10: above 2).
//!   The Laplacian cannot see this: the block edges look like detail to it.
//! * **Pose**: yaw and pitch in degrees, estimated from the five landmarks (see
//!   [`pose`] for the geometry), and the in-plane roll of the eye line.
//! * **Detector confidence**: the detector's score, 0–1.
//! * **Rotation**: the quarter turn clockwise (0, 90, 180, 270 degrees) applied to a
//!   sideways or upside-down photo to make the face upright (see [`crate::orient`]);
//!   every other measure is taken on the upright image (compression on the photo as
//!   sent, whose JPEG block grid the turn would shift).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::detect::{Detection, Landmarks};

/// Grey level at or below which a pixel counts as clipped dark.
pub const DARK_LEVEL: u8 = 15;
/// Grey level at or above which a pixel counts as clipped bright.
pub const BRIGHT_LEVEL: u8 = 240;

/// The inner face region of the 112×112 aligned crop (x0, y0, x1, y1; exclusive
/// ends): eyebrows to chin, cheek to cheek, little background.
const INNER: (u32, u32, u32, u32) = (20, 28, 92, 108);

/// The quality measures of one detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaceQuality {
    /// Shorter side of the face box, pixels of the original image.
    pub face_size: f32,
    /// Distance between the eye centres, pixels of the original image.
    pub eye_distance: f32,
    /// Variance of the Laplacian of the aligned grey crop (inner region), scaled to
    /// mid-grey exposure.
    pub sharpness: f32,
    /// JPEG blockiness over the face box (≈ 1: none).
    pub compression: f32,
    /// Mean grey level of the aligned crop's inner region, 0–255.
    pub brightness: f32,
    /// Fraction of the inner region clipped dark, 0–1.
    pub dark_fraction: f32,
    /// Fraction of the inner region clipped bright, 0–1.
    pub bright_fraction: f32,
    /// Head turn left/right, degrees; positive when the nose lies right of the face's
    /// midline in the image.
    pub yaw: f32,
    /// Head tilt up/down, degrees; positive when the face looks up.
    pub pitch: f32,
    /// In-plane rotation of the eye line, degrees (not gated: alignment removes it).
    pub roll: f32,
    /// Detector confidence, 0–1.
    pub detector_score: f32,
    /// Degrees clockwise the photo was turned to make the face upright: 0, 90, 180 or
    /// 270 (0 for measures stored before photos were turned).
    #[serde(default)]
    pub rotation: u16,
}

/// Measures a face from the image it was found in, its detection and its aligned crop
/// (any size; the standard 112×112 one in the service).
pub fn assess(image: &RgbImage, face: &Detection, aligned: &RgbImage) -> FaceQuality {
    let [re, le] = [face.landmarks[0], face.landmarks[1]];
    let grey = to_grey(aligned);
    let (w, h) = (aligned.width(), aligned.height());
    let region = scaled_inner(w, h);
    let stats = intensity(&grey, w, region);
    let (yaw, pitch, roll) = pose(&face.landmarks);
    FaceQuality {
        face_size: face.bbox.width().min(face.bbox.height()),
        eye_distance: (le[0] - re[0]).hypot(le[1] - re[1]),
        sharpness: laplacian_variance(&grey, w, region) * exposure_scale(stats.0),
        compression: blockiness(image, face),
        brightness: stats.0,
        dark_fraction: stats.1,
        bright_fraction: stats.2,
        yaw,
        pitch,
        roll,
        detector_score: face.score,
        rotation: 0,
    }
}

/// JPEG blockiness of `face` in `image` (see the module doc): for measuring a face
/// found in a turned copy of the photo on the photo's own 8×8 block grid.
pub fn compression(image: &RgbImage, face: &Detection) -> f32 {
    blockiness(image, face)
}

fn to_grey(image: &RgbImage) -> Vec<f32> {
    // ITU-R BT.601 luma, as JPEG and OpenCV compute grey.
    image.pixels().map(|p| 0.299 * f32::from(p.0[0]) + 0.587 * f32::from(p.0[1]) + 0.114 * f32::from(p.0[2])).collect()
}

/// [`INNER`] scaled to a crop of `w`×`h`, at least 3×3 so that a Laplacian fits.
fn scaled_inner(w: u32, h: u32) -> (u32, u32, u32, u32) {
    let sx = |v: u32| (u64::from(v) * u64::from(w) / 112) as u32;
    let sy = |v: u32| (u64::from(v) * u64::from(h) / 112) as u32;
    let (x0, y0) = (sx(INNER.0).max(1), sy(INNER.1).max(1));
    let (x1, y1) = (sx(INNER.2).min(w.saturating_sub(1)), sy(INNER.3).min(h.saturating_sub(1)));
    (x0, y0, x1.max(x0 + 1), y1.max(y0 + 1))
}

/// Mean, dark fraction and bright fraction of `grey` (row length `w`) over `region`.
fn intensity(grey: &[f32], w: u32, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> (f32, f32, f32) {
    let (mut sum, mut dark, mut bright, mut n) = (0f64, 0u32, 0u32, 0u32);
    for y in y0..y1 {
        for x in x0..x1 {
            let Some(&v) = grey.get((y * w + x) as usize) else { continue };
            sum += f64::from(v);
            dark += u32::from(v <= f32::from(DARK_LEVEL));
            bright += u32::from(v >= f32::from(BRIGHT_LEVEL));
            n += 1;
        }
    }
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let n = n as f32;
    ((sum / f64::from(n)) as f32, dark as f32 / n, bright as f32 / n)
}

/// Darkest mean grey level the exposure scaling of sharpness assumes (keeps a nearly
/// black face, refused for its brightness anyway, from an enormous factor).
const MIN_SCALED_MEAN: f32 = 8.0;

/// The factor that scales a Laplacian variance measured at mean grey `mean` to mid-grey.
fn exposure_scale(mean: f32) -> f32 {
    let k = 128.0 / mean.max(MIN_SCALED_MEAN);
    k * k
}

/// Variance of `4·p − (up + down + left + right)` over `region` (whose border pixels
/// must have neighbours inside the image).
fn laplacian_variance(grey: &[f32], w: u32, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> f32 {
    let w = w as usize;
    let at = |x: u32, y: u32| grey.get(y as usize * w + x as usize).copied().unwrap_or(0.0);
    let (mut sum, mut sum_sq, mut n) = (0f64, 0f64, 0u32);
    for y in y0..y1 {
        for x in x0..x1 {
            if x == 0 || y == 0 {
                continue;
            }
            let lap = 4.0 * at(x, y) - at(x - 1, y) - at(x + 1, y) - at(x, y - 1) - at(x, y + 1);
            sum += f64::from(lap);
            sum_sq += f64::from(lap) * f64::from(lap);
            n += 1;
        }
    }
    if n == 0 {
        return 0.0;
    }
    let mean = sum / f64::from(n);
    (sum_sq / f64::from(n) - mean * mean).max(0.0) as f32
}

/// JPEG blocks are 8×8 pixels, aligned with the image's top-left corner.
const BLOCK: u32 = 8;
/// Rows and columns sampled at most per direction (keeps huge faces under a millisecond).
const MAX_SAMPLES: u32 = 256;

/// Mean absolute grey step across 8-pixel block boundaries over the mean step between
/// other neighbouring pixels, inside the face box of `image`. 1 where there are no steps
/// at all (a flat region) or the box is too small to tell.
fn blockiness(image: &RgbImage, face: &Detection) -> f32 {
    let (w, h) = (image.width(), image.height());
    let clampf = |v: f32, hi: u32| (v.max(0.0) as u32).min(hi);
    let (x0, y0) = (clampf(face.bbox.x1, w), clampf(face.bbox.y1, h));
    let (x1, y1) = (clampf(face.bbox.x2, w.saturating_sub(1)), clampf(face.bbox.y2, h.saturating_sub(1)));
    if x1 < x0 + 2 * BLOCK || y1 < y0 + 2 * BLOCK {
        return 1.0;
    }
    let grey = |x: u32, y: u32| {
        let p = image.get_pixel(x, y).0;
        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
    };
    let (mut edge, mut edge_n, mut inner, mut inner_n) = (0f64, 0u32, 0f64, 0u32);
    let step_y = ((y1 - y0) / MAX_SAMPLES).max(1);
    let step_x = ((x1 - x0) / MAX_SAMPLES).max(1);
    // Horizontal steps (between x and x+1) on sampled rows, vertical ones on sampled columns.
    for y in (y0..y1).step_by(step_y as usize) {
        for x in x0..x1 {
            let d = f64::from((grey(x + 1, y) - grey(x, y)).abs());
            if (x + 1) % BLOCK == 0 {
                (edge, edge_n) = (edge + d, edge_n + 1);
            } else {
                (inner, inner_n) = (inner + d, inner_n + 1);
            }
        }
    }
    for x in (x0..x1).step_by(step_x as usize) {
        for y in y0..y1 {
            let d = f64::from((grey(x, y + 1) - grey(x, y)).abs());
            if (y + 1) % BLOCK == 0 {
                (edge, edge_n) = (edge + d, edge_n + 1);
            } else {
                (inner, inner_n) = (inner + d, inner_n + 1);
            }
        }
    }
    if edge_n == 0 || inner_n == 0 || inner <= 0.0 {
        return 1.0;
    }
    ((edge / f64::from(edge_n)) / (inner / f64::from(inner_n))) as f32
}

/// Depth of the nose tip in front of the eye/mouth plane, as a multiple of half the
/// inter-ocular distance (anthropometric average: both are about 30–35 mm).
const NOSE_DEPTH_PER_HALF_EYE: f32 = 1.0;
/// The same depth as a multiple of the eye-to-mouth height (about 0.5).
const NOSE_DEPTH_PER_FACE_HEIGHT: f32 = 0.5;
/// Where the nose tip lies between the eye line (0) and the mouth line (1) in a
/// frontal face: the ArcFace template's value.
const FRONTAL_NOSE_HEIGHT: f32 = 0.494;

/// Yaw, pitch and roll (degrees) from the five landmarks.
///
/// The landmarks are first rotated so that the eye line is horizontal (roll). The
/// face's midline is the mean of the eye midpoint and the mouth midpoint, which both
/// lie near one plane; the nose tip stands about `d` in front of it. Turning the head
/// by yaw `ψ` moves the nose tip sideways by `d·sin ψ` while half the eye distance `e`
/// shrinks to `e·cos ψ`, so the offset of the nose from the midline in units of half
/// the projected eye distance is `(d/e)·tan ψ`: `ψ = atan(offset / (d/e))`. Pitch is
/// read the same way from the nose's height between the eye line and the mouth line,
/// compared with its height in a frontal face: `θ = atan((t₀ − t) / (d/H))`, with `H`
/// the eye-to-mouth height. The ratios `d/e ≈ 1` and `d/H ≈ 0.5` are population
/// averages, so the angles are estimates (good to about ten degrees), enough to tell
/// a frontal face from a profile.
pub fn pose(landmarks: &Landmarks) -> (f32, f32, f32) {
    let [re, le, nose, rm, lm] = *landmarks;
    let roll = (le[1] - re[1]).atan2(le[0] - re[0]);
    let (sin, cos) = (-roll).sin_cos();
    let eye_mid = [(re[0] + le[0]) / 2.0, (re[1] + le[1]) / 2.0];
    // Coordinates in the face's own frame: origin at the eye midpoint, x along the eyes.
    let local = |p: [f32; 2]| {
        let (dx, dy) = (p[0] - eye_mid[0], p[1] - eye_mid[1]);
        [dx * cos - dy * sin, dx * sin + dy * cos]
    };
    let (re, le, nose) = (local(re), local(le), local(nose));
    let mouth = {
        let (a, b) = (local(rm), local(lm));
        [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0]
    };
    let half_eye = ((le[0] - re[0]) / 2.0).abs();
    let height = mouth[1];
    if half_eye <= f32::EPSILON || height <= f32::EPSILON {
        // Degenerate landmarks: report an extreme pose so that a gate refuses them.
        return (90.0, 90.0, roll.to_degrees());
    }
    let midline = mouth[0] / 2.0;
    let yaw = ((nose[0] - midline) / half_eye / NOSE_DEPTH_PER_HALF_EYE).atan();
    let t = nose[1] / height;
    let pitch = ((FRONTAL_NOSE_HEIGHT - t) / NOSE_DEPTH_PER_FACE_HEIGHT).atan();
    (yaw.to_degrees(), pitch.to_degrees(), roll.to_degrees())
}

/// The least quality an enrolment needs. A minimum of 0 (or a maximum of 90° / 1.0)
/// turns a check off. The serde names are the server's settings (`quality_*`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualityMinimums {
    #[serde(rename = "quality_min_face_size")]
    pub face_size: f32,
    #[serde(rename = "quality_min_eye_distance")]
    pub eye_distance: f32,
    #[serde(rename = "quality_min_sharpness")]
    pub sharpness: f32,
    /// Largest JPEG blockiness accepted.
    #[serde(rename = "quality_max_compression")]
    pub max_compression: f32,
    #[serde(rename = "quality_min_brightness")]
    pub brightness: f32,
    /// Largest brightness (mean grey level) accepted.
    #[serde(rename = "quality_max_brightness")]
    pub max_brightness: f32,
    /// Largest clipped fraction (dark + bright) accepted.
    #[serde(rename = "quality_max_clipped")]
    pub max_clipped: f32,
    /// Largest |yaw| accepted, degrees.
    #[serde(rename = "quality_max_yaw")]
    pub max_yaw: f32,
    /// Largest |pitch| accepted, degrees.
    #[serde(rename = "quality_max_pitch")]
    pub max_pitch: f32,
    #[serde(rename = "quality_min_detector_score")]
    pub detector_score: f32,
}

impl Default for QualityMinimums {
    /// Chosen from the measurements in EVALUATION.md ("Face quality").
    fn default() -> Self {
        Self {
            face_size: 32.0,
            eye_distance: 15.0,
            sharpness: 10.0,
            max_compression: 2.0,
            brightness: 25.0,
            max_brightness: 230.0,
            max_clipped: 0.5,
            max_yaw: 60.0,
            max_pitch: 40.0,
            detector_score: 0.7,
        }
    }
}

/// The measure that failed a quality check, its value and the limit it missed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QualityFailure {
    /// `face_size`, `eye_distance`, `detector_score`, `brightness`, `exposure`,
    /// `compression`, `sharpness`, `yaw` or `pitch`.
    pub measure: &'static str,
    pub value: f32,
    /// The limit: a minimum, or for `exposure`, `compression`, `yaw`, `pitch` and
    /// too-bright `brightness` a maximum (`limit_kind` says which).
    pub limit: f32,
    /// `min` or `max`.
    pub limit_kind: &'static str,
}

impl std::fmt::Display for QualityFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let relation = if self.limit_kind == "min" { "below the minimum" } else { "above the maximum" };
        write!(f, "{} {:.2} is {relation} {:.2}", self.measure, self.value, self.limit)
    }
}

impl FaceQuality {
    /// Every check this face fails, in a fixed order (size first: a tiny face is also
    /// blurred once upscaled, and its size is the cause to report).
    pub fn failures(&self, m: &QualityMinimums) -> Vec<QualityFailure> {
        let min = |measure, value: f32, limit: f32| {
            (value < limit).then_some(QualityFailure { measure, value, limit, limit_kind: "min" })
        };
        let max = |measure, value: f32, limit: f32| {
            (value > limit).then_some(QualityFailure { measure, value, limit, limit_kind: "max" })
        };
        [
            min("face_size", self.face_size, m.face_size),
            min("eye_distance", self.eye_distance, m.eye_distance),
            min("detector_score", self.detector_score, m.detector_score),
            min("brightness", self.brightness, m.brightness),
            max("brightness", self.brightness, m.max_brightness),
            max("exposure", self.dark_fraction + self.bright_fraction, m.max_clipped),
            max("compression", self.compression, m.max_compression),
            min("sharpness", self.sharpness, m.sharpness),
            max("yaw", self.yaw.abs(), m.max_yaw),
            max("pitch", self.pitch.abs(), m.max_pitch),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The first failed check, if any.
    pub fn first_failure(&self, m: &QualityMinimums) -> Option<QualityFailure> {
        self.failures(m).into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::ARCFACE_TEMPLATE;
    use crate::detect::BBox;
    use image::{Rgb, imageops};

    fn frontal() -> Detection {
        Detection { bbox: BBox { x1: 10.0, y1: 10.0, x2: 110.0, y2: 130.0 }, landmarks: ARCFACE_TEMPLATE, score: 0.9 }
    }

    fn canvas() -> RgbImage {
        RgbImage::from_fn(160, 160, |x, y| Rgb([(x * 3 % 256) as u8, (y * 5 % 256) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn heavy_jpeg_compression_reads_as_blocky() {
        let photo = RgbImage::from_fn(160, 160, |x, y| {
            let v = (128.0 + 60.0 * ((x as f32 / 7.0).sin() * (y as f32 / 5.0).cos())) as u8;
            Rgb([v, v.wrapping_add(10), v / 2])
        });
        let jpeg = |q: u8| {
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::Cursor::new(&mut bytes), q)
                .encode_image(&image::DynamicImage::ImageRgb8(photo.clone()))
                .unwrap();
            image::load_from_memory(&bytes).unwrap().to_rgb8()
        };
        let (clean, q90, q5) =
            (blockiness(&photo, &frontal()), blockiness(&jpeg(90), &frontal()), blockiness(&jpeg(5), &frontal()));
        assert!(clean < 1.2 && q90 < 1.3, "clean {clean}, q90 {q90}");
        assert!(q5 > 1.8, "q5 {q5}");
    }

    /// A textured synthetic "face": a checkerboard of 4-pixel squares plus a gradient.
    fn textured(level: f32, contrast: f32) -> RgbImage {
        RgbImage::from_fn(112, 112, |x, y| {
            let check = if (x / 4 + y / 4) % 2 == 0 { 1.0 } else { -1.0 };
            let v = (level + contrast * check + (x as f32 - 56.0) * 0.2).clamp(0.0, 255.0) as u8;
            Rgb([v, v, v])
        })
    }

    #[test]
    fn blurring_lowers_sharpness() {
        let sharp = textured(128.0, 40.0);
        let blurred = imageops::blur(&sharp, 2.0);
        let (a, b) = (assess(&canvas(), &frontal(), &sharp), assess(&canvas(), &frontal(), &blurred));
        assert!(a.sharpness > 10.0 * b.sharpness, "sharp {} vs blurred {}", a.sharpness, b.sharpness);
        // Downscaling and upscaling back (a small face) loses detail too.
        let small = imageops::resize(&sharp, 24, 24, imageops::FilterType::Triangle);
        let upscaled = imageops::resize(&small, 112, 112, imageops::FilterType::Triangle);
        assert!(assess(&canvas(), &frontal(), &upscaled).sharpness < a.sharpness / 4.0);
        let very_blurred = imageops::blur(&sharp, 4.0);
        let failure = assess(&canvas(), &frontal(), &very_blurred).first_failure(&QualityMinimums::default());
        assert_eq!(failure.map(|f| f.measure), Some("sharpness"));
        assert_eq!(a.first_failure(&QualityMinimums::default()), None);
    }

    #[test]
    fn brightness_and_exposure() {
        let dark = assess(&canvas(), &frontal(), &textured(10.0, 5.0));
        let normal = assess(&canvas(), &frontal(), &textured(128.0, 40.0));
        let bright = assess(&canvas(), &frontal(), &textured(250.0, 5.0));
        assert!(dark.brightness < 20.0 && normal.brightness > 100.0 && bright.brightness > 235.0);
        assert!(dark.dark_fraction > 0.5 && dark.bright_fraction == 0.0, "{dark:?}");
        assert!(bright.bright_fraction > 0.5 && bright.dark_fraction == 0.0, "{bright:?}");
        assert_eq!(normal.dark_fraction + normal.bright_fraction, 0.0);
        // A darker exposure of the same face is not less sharp.
        let mut darker = textured(128.0, 40.0);
        darker.pixels_mut().for_each(|p| p.0 = p.0.map(|v| v / 2));
        let darker = assess(&canvas(), &frontal(), &darker);
        assert!(
            (darker.sharpness / normal.sharpness - 1.0).abs() < 0.1,
            "{} vs {}",
            darker.sharpness,
            normal.sharpness
        );
        let m = QualityMinimums::default();
        assert_eq!(dark.first_failure(&m).map(|f| (f.measure, f.limit_kind)), Some(("brightness", "min")));
        assert_eq!(bright.first_failure(&m).map(|f| (f.measure, f.limit_kind)), Some(("brightness", "max")));
        assert_eq!(normal.first_failure(&m), None);
    }

    #[test]
    fn the_template_is_frontal() {
        let (yaw, pitch, roll) = pose(&ARCFACE_TEMPLATE);
        assert!(yaw.abs() < 2.0 && pitch.abs() < 2.0 && roll.abs() < 1.0, "{yaw} {pitch} {roll}");
    }

    #[test]
    fn nose_offsets_give_the_sign_of_yaw_and_pitch() {
        let mut right = ARCFACE_TEMPLATE;
        right[2][0] += 15.0; // nose towards the image's right
        let (yaw, _, _) = pose(&right);
        assert!(yaw > 20.0, "{yaw}");
        let mut left = ARCFACE_TEMPLATE;
        left[2][0] -= 15.0;
        assert!(pose(&left).0 < -20.0);
        let mut up = ARCFACE_TEMPLATE;
        up[2][1] -= 10.0; // nose nearer the eyes: looking up
        assert!(pose(&up).1 > 20.0, "{:?}", pose(&up));
        let mut down = ARCFACE_TEMPLATE;
        down[2][1] += 10.0;
        assert!(pose(&down).1 < -20.0);
    }

    #[test]
    fn pose_ignores_roll_and_scale() {
        // The template turned by 30° and doubled stays frontal, with roll 30°.
        let (s, c) = 30f32.to_radians().sin_cos();
        let turned = ARCFACE_TEMPLATE.map(|[x, y]| [2.0 * (x * c - y * s) + 300.0, 2.0 * (x * s + y * c) + 50.0]);
        let (yaw, pitch, roll) = pose(&turned);
        assert!(yaw.abs() < 2.0 && pitch.abs() < 2.0 && (roll - 30.0).abs() < 0.5, "{yaw} {pitch} {roll}");
        // And a yawed face stays yawed after the rotation.
        let mut yawed = ARCFACE_TEMPLATE;
        yawed[2][0] += 15.0;
        let yawed = yawed.map(|[x, y]| [x * c - y * s, x * s + y * c]);
        assert!(pose(&yawed).0 > 20.0);
    }

    #[test]
    fn degenerate_landmarks_read_as_extreme_pose() {
        let (yaw, pitch, _) = pose(&[[5.0, 5.0]; 5]);
        assert_eq!((yaw, pitch), (90.0, 90.0));
    }

    #[test]
    fn size_and_score_come_from_the_detection() {
        let mut face = frontal();
        face.landmarks = ARCFACE_TEMPLATE.map(|[x, y]| [x / 4.0, y / 4.0]);
        face.bbox = BBox { x1: 0.0, y1: 0.0, x2: 30.0, y2: 36.0 };
        // Eye distance (73.5 − 38.3) / 4 ≈ 8.8 px.
        face.score = 0.65;
        let q = assess(&canvas(), &face, &textured(128.0, 40.0));
        assert_eq!(q.face_size, 30.0);
        assert!((q.eye_distance - (73.5318 - 38.2946) / 4.0).abs() < 0.05, "{}", q.eye_distance);
        let failures = q.failures(&QualityMinimums::default());
        let names: Vec<&str> = failures.iter().map(|f| f.measure).collect();
        assert_eq!(names, ["face_size", "eye_distance", "detector_score"]);
        assert_eq!(failures[0].value, 30.0);
        assert_eq!(failures[0].limit, 32.0);
    }
}
