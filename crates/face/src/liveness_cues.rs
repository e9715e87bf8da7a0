//! Hand-crafted presentation-attack cues: cheap, deterministic image measurements
//! that a 128-pixel CNN input does not see well, computed on the face at native
//! resolution, on the context crop and on the full frame.
//!
//! * `moire_peak`: screens re-photographed by a camera alias into periodic patterns
//!   (moiré, pixel grid) that show as isolated peaks in the 2-D power spectrum of the
//!   face at native resolution. Measured as the strongest spectral peak relative to
//!   the median of its frequency ring (the ring median whitens the natural 1/f fall-off).
//! * `high_freq`: share of spectral energy at high frequencies; recaptures (a photo of
//!   a photo or screen) lose fine detail.
//! * `sharpness`: variance of the Laplacian relative to the intensity variance (blur
//!   independent of contrast) on the face resampled to 128 px.
//! * `saturation`: mean colour saturation of the face; prints and screens shift the gamut.
//! * `specular_face` / `specular_context`: share of near-white clipped pixels (glare on
//!   glossy paper and screen glass).
//! * `straight_edge`: strongest long, straight, consistently signed edge across the
//!   context crop (a phone or monitor bezel, a paper border).
//! * `blockiness`: JPEG 8×8 block-boundary gradient relative to the gradient elsewhere
//!   on the full frame (re-encoded video frames).
//!
//! The FFT is a small radix-2 transform in f64 written here: windows are at most
//! 128×128, so a dependency would buy nothing, and f64 arithmetic in a fixed order keeps
//! the cue bit-for-bit reproducible.

use image::RgbImage;

use crate::detect::Detection;

/// Side of the resampled face and context images the cues are measured on.
const SIDE: u32 = 128;
/// Largest native-resolution window the spectrum is taken over.
const MAX_FFT: usize = 128;
/// Smallest window (a smaller face gives no spectrum cue).
const MIN_FFT: usize = 32;

/// Names of the cues, in the order of [`Cues::values`].
pub const CUE_NAMES: [&str; 8] = [
    "moire_peak",
    "high_freq",
    "sharpness",
    "saturation",
    "specular_face",
    "specular_context",
    "straight_edge",
    "blockiness",
];

/// The hand-crafted cues of one face.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cues {
    pub moire_peak: f64,
    pub high_freq: f64,
    pub sharpness: f64,
    pub saturation: f64,
    pub specular_face: f64,
    pub specular_context: f64,
    pub straight_edge: f64,
    pub blockiness: f64,
}

impl Cues {
    /// The values in the order of [`CUE_NAMES`].
    pub fn values(&self) -> [f64; 8] {
        [
            self.moire_peak,
            self.high_freq,
            self.sharpness,
            self.saturation,
            self.specular_face,
            self.specular_context,
            self.straight_edge,
            self.blockiness,
        ]
    }
}

/// A square region of the image, clamped inside it.
fn square(image: &RgbImage, cx: f32, cy: f32, side: f32) -> (u32, u32, u32) {
    let side = side.min(image.width().min(image.height()) as f32).max(1.0);
    let x = (cx - side / 2.0).clamp(0.0, image.width() as f32 - side);
    let y = (cy - side / 2.0).clamp(0.0, image.height() as f32 - side);
    (x as u32, y as u32, side as u32)
}

fn luma(p: &image::Rgb<u8>) -> f64 {
    0.299 * f64::from(p.0[0]) + 0.587 * f64::from(p.0[1]) + 0.114 * f64::from(p.0[2])
}

fn resampled(image: &RgbImage, (x, y, side): (u32, u32, u32)) -> RgbImage {
    crate::resize::resize_region(image, (x, y, side.max(1), side.max(1)), SIDE, SIDE)
}

/// Measures the cues for `face`, whose context crop (as used by the model) is
/// `context` = (x, y, side). Only the cues `wanted` (in the order of [`CUE_NAMES`])
/// asks for are measured; the others are NaN.
pub fn measure(image: &RgbImage, face: &Detection, context: (u32, u32, u32), wanted: &[bool; 8]) -> Cues {
    let face_side = face.bbox.width().max(face.bbox.height());
    let cx = (face.bbox.x1 + face.bbox.x2) / 2.0;
    let cy = (face.bbox.y1 + face.bbox.y2) / 2.0;
    // Resampling a large crop costs more than any cue: only what is wanted.
    let face_img = (wanted[2] || wanted[3] || wanted[4]).then(|| resampled(image, square(image, cx, cy, face_side)));
    let context_img = (wanted[5] || wanted[6]).then(|| resampled(image, context));
    let gray = |img: &RgbImage| -> Vec<f64> { img.pixels().map(luma).collect() };

    // The spectrum window: the largest power of two fitting in 80 % of the face, native pixels.
    let mut n = MAX_FFT;
    while n > MIN_FFT && (n as f32) > face_side * 0.8 {
        n /= 2;
    }
    let (wx, wy, _) = square(image, cx, cy, n as f32);
    let (moire_peak, high_freq) = if !(wanted[0] || wanted[1]) {
        (f64::NAN, f64::NAN)
    } else if (n as f32) <= face_side && image.width() >= n as u32 && image.height() >= n as u32 {
        spectrum_cues(image, wx, wy, n)
    } else {
        (0.0, 0.0)
    };

    Cues {
        moire_peak,
        high_freq,
        sharpness: face_img.as_ref().map_or(f64::NAN, |img| sharpness(&gray(img), SIDE as usize)),
        saturation: face_img.as_ref().map_or(f64::NAN, saturation),
        specular_face: face_img.as_ref().map_or(f64::NAN, specular),
        specular_context: context_img.as_ref().map_or(f64::NAN, specular),
        straight_edge: context_img.as_ref().map_or(f64::NAN, |img| straight_edge(&gray(img), SIDE as usize)),
        blockiness: if wanted[7] { blockiness(image) } else { f64::NAN },
    }
}

/// log10 of the strongest peak over its ring median, and the high-frequency energy share.
fn spectrum_cues(image: &RgbImage, x0: u32, y0: u32, n: usize) -> (f64, f64) {
    let hann: Vec<f64> = (0..n).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()).collect();
    let mut re = vec![0f64; n * n];
    let mut im = vec![0f64; n * n];
    let mut mean = 0.0;
    for y in 0..n {
        for x in 0..n {
            let v = luma(image.get_pixel(x0 + x as u32, y0 + y as u32));
            re[y * n + x] = v;
            mean += v;
        }
    }
    mean /= (n * n) as f64;
    for y in 0..n {
        for x in 0..n {
            re[y * n + x] = (re[y * n + x] - mean) * hann[x] * hann[y];
        }
    }
    fft_2d(&mut re, &mut im, n);
    let half = n / 2;
    // Power by integer ring radius (frequency index distance from DC).
    let mut rings: Vec<Vec<f64>> = vec![Vec::new(); half + 1];
    let mut cells: Vec<(usize, f64)> = Vec::with_capacity(n * n / 2);
    let (mut high, mut band) = (0.0, 0.0);
    for v in 0..n {
        // Half plane: the spectrum of a real image is symmetric.
        for u in 0..=half {
            let fu = u as f64;
            let fv = if v > half { v as f64 - n as f64 } else { v as f64 };
            let r = (fu * fu + fv * fv).sqrt();
            let ring = r.round() as usize;
            if ring > half || ring < n / 16 {
                continue;
            }
            let p = re[v * n + u] * re[v * n + u] + im[v * n + u] * im[v * n + u];
            band += p;
            if ring >= n / 4 {
                high += p;
            }
            if ring >= n / 8 {
                rings[ring].push(p);
                cells.push((ring, p));
            }
        }
    }
    let medians: Vec<f64> = rings
        .iter_mut()
        .map(|ring| {
            if ring.is_empty() {
                return 0.0;
            }
            ring.sort_by(f64::total_cmp);
            ring[ring.len() / 2]
        })
        .collect();
    let peak =
        cells.iter().filter(|(ring, _)| medians[*ring] > 0.0).map(|(ring, p)| p / medians[*ring]).fold(1.0, f64::max);
    let high_freq = if band > 0.0 { high / band } else { 0.0 };
    (peak.log10(), high_freq)
}

/// In-place 2-D FFT of an `n`×`n` (power of two) row-major complex array.
fn fft_2d(re: &mut [f64], im: &mut [f64], n: usize) {
    let (mut row_re, mut row_im) = (vec![0f64; n], vec![0f64; n]);
    for y in 0..n {
        row_re.copy_from_slice(&re[y * n..(y + 1) * n]);
        row_im.copy_from_slice(&im[y * n..(y + 1) * n]);
        fft(&mut row_re, &mut row_im);
        re[y * n..(y + 1) * n].copy_from_slice(&row_re);
        im[y * n..(y + 1) * n].copy_from_slice(&row_im);
    }
    for x in 0..n {
        for y in 0..n {
            row_re[y] = re[y * n + x];
            row_im[y] = im[y * n + x];
        }
        fft(&mut row_re, &mut row_im);
        for y in 0..n {
            re[y * n + x] = row_re[y];
            im[y * n + x] = row_im[y];
        }
    }
}

/// Iterative radix-2 Cooley–Tukey FFT (length a power of two).
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let angle = -2.0 * std::f64::consts::PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (s, c) = (angle * k as f64).sin_cos();
                let (a, b) = (start + k, start + k + len / 2);
                let tr = re[b] * c - im[b] * s;
                let ti = re[b] * s + im[b] * c;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
}

/// ln of (variance of the 4-neighbour Laplacian / intensity variance) on an `n`×`n` image.
fn sharpness(gray: &[f64], n: usize) -> f64 {
    let (mut sum, mut sum2, mut count) = (0.0, 0.0, 0.0);
    for y in 1..n - 1 {
        for x in 1..n - 1 {
            let i = y * n + x;
            let lap = gray[i - 1] + gray[i + 1] + gray[i - n] + gray[i + n] - 4.0 * gray[i];
            sum += lap;
            sum2 += lap * lap;
            count += 1.0;
        }
    }
    let lap_var = sum2 / count - (sum / count).powi(2);
    let mean = gray.iter().sum::<f64>() / gray.len() as f64;
    let var = gray.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / gray.len() as f64;
    ((lap_var + 1e-3) / (var + 1.0)).ln()
}

/// Mean HSV saturation of pixels that are not near black.
fn saturation(img: &RgbImage) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for p in img.pixels() {
        let max = p.0.iter().copied().max().unwrap_or(0);
        let min = p.0.iter().copied().min().unwrap_or(0);
        if max >= 25 {
            sum += f64::from(max - min) / f64::from(max);
            count += 1;
        }
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Share of clipped near-white pixels.
fn specular(img: &RgbImage) -> f64 {
    let clipped = img.pixels().filter(|p| p.0.iter().all(|&c| c >= 240)).count();
    clipped as f64 / (img.width() * img.height()).max(1) as f64
}

/// The strongest row or column of consistently signed gradient across an `n`×`n`
/// image, relative to the mean gradient magnitude: near 0 for texture, large for a
/// straight edge spanning the crop.
fn straight_edge(gray: &[f64], n: usize) -> f64 {
    let mut total_abs = 0.0;
    let mut best: f64 = 0.0;
    // Rows: vertical gradient summed along the row.
    for y in 2..n - 2 {
        let mut signed = 0.0;
        for x in 0..n {
            let d = gray[(y + 1) * n + x] - gray[(y - 1) * n + x];
            signed += d;
            total_abs += d.abs();
        }
        best = best.max(signed.abs());
    }
    for x in 2..n - 2 {
        let mut signed = 0.0;
        for y in 0..n {
            let d = gray[y * n + x + 1] - gray[y * n + x - 1];
            signed += d;
            total_abs += d.abs();
        }
        best = best.max(signed.abs());
    }
    // Mean |gradient| per line of n pixels.
    let per_line = total_abs / (2 * (n - 4)) as f64;
    if per_line <= 0.0 { 0.0 } else { best / per_line }
}

/// ln of the mean horizontal luma step across 8-pixel block boundaries over the mean
/// step elsewhere (every other row, to keep it cheap on large frames).
fn blockiness(image: &RgbImage) -> f64 {
    let (w, h) = (image.width(), image.height());
    if w < 16 {
        return 0.0;
    }
    let (mut at, mut at_n, mut off, mut off_n) = (0.0, 0usize, 0.0, 0usize);
    for y in (0..h).step_by(2) {
        let mut prev = luma(image.get_pixel(0, y));
        for x in 1..w {
            let cur = luma(image.get_pixel(x, y));
            let d = (cur - prev).abs();
            if x % 8 == 0 {
                at += d;
                at_n += 1;
            } else {
                off += d;
                off_n += 1;
            }
            prev = cur;
        }
    }
    if at_n == 0 || off_n == 0 || off <= 0.0 {
        return 0.0;
    }
    ((at / at_n as f64 + 1e-3) / (off / off_n as f64 + 1e-3)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_of_a_cosine_has_two_peaks() {
        let n = 16;
        let mut re: Vec<f64> = (0..n).map(|i| (2.0 * std::f64::consts::PI * 3.0 * i as f64 / n as f64).cos()).collect();
        let mut im = vec![0.0; n];
        fft(&mut re, &mut im);
        let power: Vec<f64> = re.iter().zip(&im).map(|(r, i)| r * r + i * i).collect();
        for (k, p) in power.iter().enumerate() {
            if k == 3 || k == n - 3 {
                assert!((p - 64.0).abs() < 1e-9, "bin {k}: {p}");
            } else {
                assert!(*p < 1e-9, "bin {k}: {p}");
            }
        }
    }

    fn image_from(n: u32, f: impl Fn(u32, u32) -> u8) -> RgbImage {
        RgbImage::from_fn(n, n, |x, y| {
            let v = f(x, y);
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn a_periodic_pattern_has_a_stronger_spectral_peak_than_noise() {
        // Deterministic pseudo-noise vs the same noise plus a fine grating (a screen's pixel grid).
        let noise =
            |x: u32, y: u32| ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)).wrapping_mul(2_654_435_761) >> 26) as u8;
        let plain = image_from(128, |x, y| 96 + noise(x, y));
        let grating = image_from(128, |x, y| 96 + noise(x, y) + if (x + y) % 5 < 2 { 60 } else { 0 });
        let (p_plain, _) = spectrum_cues(&plain, 0, 0, 128);
        let (p_grating, _) = spectrum_cues(&grating, 0, 0, 128);
        assert!(p_grating > p_plain + 1.0, "grating {p_grating} vs noise {p_plain}");
    }

    #[test]
    fn straight_edge_finds_a_border_and_not_texture() {
        let n = 128usize;
        let edge: Vec<f64> = (0..n * n).map(|i| if i / n < 40 { 30.0 } else { 200.0 }).collect();
        let checker: Vec<f64> =
            (0..n * n).map(|i| if (i / n + i % n).is_multiple_of(2) { 30.0 } else { 200.0 }).collect();
        assert!(straight_edge(&edge, n) > 10.0 * straight_edge(&checker, n).max(0.1));
    }

    #[test]
    fn blur_lowers_sharpness() {
        let n = 128usize;
        let sharp: Vec<f64> =
            (0..n * n).map(|i| if (i / n / 4 + i % n / 4).is_multiple_of(2) { 30.0 } else { 200.0 }).collect();
        let blurred: Vec<f64> = (0..n * n)
            .map(|i| {
                let (x, y) = ((i % n) as f64, (i / n) as f64);
                115.0 + 85.0 * (x * std::f64::consts::PI / 32.0).sin() * (y * std::f64::consts::PI / 32.0).sin()
            })
            .collect();
        assert!(sharpness(&sharp, n) > sharpness(&blurred, n) + 2.0);
    }
}
