//! Alignment: a similarity transform (rotation, uniform scale, translation; no
//! reflection) takes the five detected landmarks onto the standard 112×112 ArcFace
//! template, and the face is resampled bilinearly into that frame. Both embedders
//! were trained on faces aligned this way.

use image::{Rgb, RgbImage};

use crate::detect::Landmarks;

/// Side of an aligned face.
pub const ALIGNED_SIZE: u32 = 112;

/// Where the five landmarks land in a 112×112 aligned face (ArcFace template).
pub const ARCFACE_TEMPLATE: Landmarks =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// A 2-D similarity transform `p ↦ [a −b; b a]·p + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    /// The least-squares similarity taking `src` onto `dst` (Umeyama's solution; with
    /// reflection excluded it reduces to this closed form). `None` if the source
    /// points all coincide.
    pub fn estimate(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Self> {
        let n = src.len().min(dst.len());
        if n < 2 {
            return None;
        }
        let mean = |pts: &[[f32; 2]]| {
            let (sx, sy) = pts[..n].iter().fold((0.0, 0.0), |(x, y), p| (x + f64::from(p[0]), y + f64::from(p[1])));
            (sx / n as f64, sy / n as f64)
        };
        let ((mx, my), (nx, ny)) = (mean(src), mean(dst));
        let (mut num_a, mut num_b, mut den) = (0.0, 0.0, 0.0);
        for (p, q) in src[..n].iter().zip(&dst[..n]) {
            let (x, y) = (f64::from(p[0]) - mx, f64::from(p[1]) - my);
            let (u, v) = (f64::from(q[0]) - nx, f64::from(q[1]) - ny);
            num_a += x * u + y * v;
            num_b += x * v - y * u;
            den += x * x + y * y;
        }
        if den <= f64::EPSILON {
            return None;
        }
        let (a, b) = (num_a / den, num_b / den);
        Some(Self { a, b, tx: nx - (a * mx - b * my), ty: ny - (b * mx + a * my) })
    }

    pub fn apply(&self, [x, y]: [f64; 2]) -> [f64; 2] {
        [self.a * x - self.b * y + self.tx, self.b * x + self.a * y + self.ty]
    }

    /// The inverse transform; `None` for a degenerate (zero-scale) one.
    pub fn inverse(&self) -> Option<Self> {
        let det = self.a * self.a + self.b * self.b;
        if det <= f64::EPSILON {
            return None;
        }
        let (a, b) = (self.a / det, -self.b / det);
        Some(Self { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) })
    }

    /// Uniform scale factor of the transform.
    pub fn scale(&self) -> f64 {
        (self.a * self.a + self.b * self.b).sqrt()
    }
}

/// A face resampled into the 112×112 template frame, RGB.
#[derive(Debug, Clone)]
pub struct AlignedFace {
    pub image: RgbImage,
}

/// Aligns the face with `landmarks` in `image`. `None` if the landmarks are degenerate.
pub fn align(image: &RgbImage, landmarks: &Landmarks) -> Option<AlignedFace> {
    let to_template = Similarity::estimate(landmarks, &ARCFACE_TEMPLATE)?;
    Some(AlignedFace { image: warp(image, &to_template.inverse()?, ALIGNED_SIZE, ALIGNED_SIZE) })
}

/// Samples `out_w`×`out_h` pixels; output pixel `p` takes the bilinear value of the
/// source at `inverse(p)`; outside the source is black (OpenCV's `warpAffine`
/// convention, which the models were trained with).
pub fn warp(image: &RgbImage, inverse: &Similarity, out_w: u32, out_h: u32) -> RgbImage {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let pixel = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h { [0.0; 3] } else { image.get_pixel(x as u32, y as u32).0.map(f32::from) }
    };
    RgbImage::from_fn(out_w, out_h, |u, v| {
        let [sx, sy] = inverse.apply([f64::from(u), f64::from(v)]);
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let (p00, p10, p01, p11) = (pixel(x0, y0), pixel(x0 + 1, y0), pixel(x0, y0 + 1), pixel(x0 + 1, y0 + 1));
        Rgb(std::array::from_fn(|c| {
            let top = p00[c] + (p10[c] - p00[c]) * fx;
            let bottom = p01[c] + (p11[c] - p01[c]) * fx;
            (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity() {
        let truth = Similarity { a: 1.3 * 0.4f64.cos(), b: 1.3 * 0.4f64.sin(), tx: 12.5, ty: -7.0 };
        let src: Vec<[f32; 2]> = ARCFACE_TEMPLATE.to_vec();
        let dst: Vec<[f32; 2]> = src
            .iter()
            .map(|p| {
                let q = truth.apply([f64::from(p[0]), f64::from(p[1])]);
                [q[0] as f32, q[1] as f32]
            })
            .collect();
        let est = Similarity::estimate(&src, &dst).unwrap();
        for (x, y) in [(est.a, truth.a), (est.b, truth.b), (est.tx, truth.tx), (est.ty, truth.ty)] {
            assert!((x - y).abs() < 1e-4, "{est:?} vs {truth:?}");
        }
        let inv = est.inverse().unwrap();
        let back = inv.apply(est.apply([3.0, 4.0]));
        assert!((back[0] - 3.0).abs() < 1e-9 && (back[1] - 4.0).abs() < 1e-9);
        assert!((est.scale() - 1.3).abs() < 1e-5);
    }

    #[test]
    fn a_mirrored_face_is_not_reflected() {
        // Landmarks mirrored left-right cannot be matched by a rotation; the estimate
        // must stay a proper similarity (it degenerates towards scale 0, not a flip).
        let mirrored: Vec<[f32; 2]> = ARCFACE_TEMPLATE.iter().map(|p| [112.0 - p[0], p[1]]).collect();
        let est = Similarity::estimate(&mirrored, &ARCFACE_TEMPLATE).unwrap();
        assert!(est.scale() < 0.9, "{est:?}");
    }

    #[test]
    fn degenerate_points_are_refused() {
        assert!(Similarity::estimate(&[[1.0, 1.0]; 5], &ARCFACE_TEMPLATE).is_none());
        assert!(Similarity::estimate(&[[1.0, 1.0]], &[[2.0, 2.0]]).is_none());
    }

    #[test]
    fn aligning_the_template_itself_is_the_identity() {
        let image = RgbImage::from_fn(112, 112, |x, y| Rgb([x as u8, y as u8, (x + y) as u8]));
        let aligned = align(&image, &ARCFACE_TEMPLATE).unwrap();
        assert_eq!(aligned.image, image);
    }
}
