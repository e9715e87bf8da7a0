//! Resizing at SIMD speed: the detector's letterbox and the liveness crops go through
//! `fast_image_resize` (SSE4.1/AVX2/NEON, picked at run time) instead of
//! `image::imageops::resize`, which resamples in scalar `f32` through per-pixel bounds
//! checks and costs more than the networks on a whole photo (issue 18).
//!
//! The filter is the same as before: a triangle (bilinear) kernel widened by the
//! shrink factor, so every source pixel counts. The SIMD code computes in fixed point
//! and rounds between its two passes, so a pixel may differ from `imageops::resize`'s
//! by a level or two (the tests state the bound). A crop is read straight from the
//! photo: no copy of the region is made first.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{RgbImage, imageops};

/// The `width`×`height` region at (`x`, `y`) of `image` (clamped inside it), resized to
/// `out_w`×`out_h` with the triangle filter. A region of the output's size is copied.
pub fn resize_region(
    image: &RgbImage,
    (x, y, width, height): (u32, u32, u32, u32),
    out_w: u32,
    out_h: u32,
) -> RgbImage {
    if image.width() == 0 || image.height() == 0 || out_w == 0 || out_h == 0 {
        return RgbImage::new(out_w, out_h);
    }
    let (x, y) = (x.min(image.width() - 1), y.min(image.height() - 1));
    let (width, height) = (width.clamp(1, image.width() - x), height.clamp(1, image.height() - y));
    simd(image, (x, y, width, height), out_w, out_h).unwrap_or_else(|| {
        // Not reached for an RGB photo and a crop inside it (the only things the SIMD
        // resizer refuses are mismatched pixel types and crops outside the source);
        // kept so that a refusal is a slower resize, never a failed request.
        let view = imageops::crop_imm(image, x, y, width, height);
        imageops::resize(&*view, out_w, out_h, imageops::FilterType::Triangle)
    })
}

/// The whole of `image` resized to `out_w`×`out_h`.
pub fn resize(image: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resize_region(image, (0, 0, image.width(), image.height()), out_w, out_h)
}

fn simd(image: &RgbImage, (x, y, width, height): (u32, u32, u32, u32), out_w: u32, out_h: u32) -> Option<RgbImage> {
    let src = ImageRef::new(image.width(), image.height(), image.as_raw(), PixelType::U8x3).ok()?;
    let mut dst = Image::new(out_w, out_h, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
        f64::from(x),
        f64::from(y),
        f64::from(width),
        f64::from(height),
    );
    Resizer::new().resize(&src, &mut dst, &options).ok()?;
    RgbImage::from_raw(out_w, out_h, dst.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// Largest and mean absolute difference per channel value.
    fn difference(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
        assert_eq!(a.dimensions(), b.dimensions());
        let max = a.as_raw().iter().zip(b.as_raw()).map(|(p, q)| p.abs_diff(*q)).max().unwrap_or(0);
        let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(p, q)| u64::from(p.abs_diff(*q))).sum();
        (max, sum as f64 / a.as_raw().len() as f64)
    }

    /// A photo-like test card: smooth gradients, sharp edges and fine noise.
    fn card(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let noise = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)).wrapping_mul(2_654_435_761) >> 27) as u8;
            let edge = if (x / 37 + y / 23) % 2 == 0 { 60 } else { 0 };
            Rgb([(x * 255 / w) as u8 / 2 + edge + noise, (y * 255 / h) as u8 / 2 + noise, 120 + edge])
        })
    }

    /// The tolerance the SIMD resize keeps against `imageops::resize` (triangle): no
    /// value more than 2 levels away, and on average under a quarter of a level.
    #[test]
    fn simd_resize_matches_the_previous_resize_within_two_levels() {
        let photo = card(1920, 1080);
        for (w, h) in [(640, 360), (128, 128), (333, 187), (1000, 700)] {
            let before = imageops::resize(&photo, w, h, imageops::FilterType::Triangle);
            let (max, mean) = difference(&resize(&photo, w, h), &before);
            assert!(max <= 2 && mean < 0.25, "{w}×{h}: max {max}, mean {mean}");
        }
        // A crop, as the liveness views take it, against cropping first: the same
        // within 2 levels inside; on the outermost ring of output pixels the kernel of
        // the SIMD resize reads the photo just beyond the crop where cropping first
        // repeated the crop's edge, so there only the mean is bounded.
        let region = (700, 200, 810, 810);
        let cropped = imageops::crop_imm(&photo, 700, 200, 810, 810).to_image();
        let before = imageops::resize(&cropped, 128, 128, imageops::FilterType::Triangle);
        let now = resize_region(&photo, region, 128, 128);
        let (_, mean) = difference(&now, &before);
        assert!(mean < 0.25, "crop: mean {mean}");
        let inner = |img: &RgbImage| imageops::crop_imm(img, 1, 1, 126, 126).to_image();
        let (max, _) = difference(&inner(&now), &inner(&before));
        assert!(max <= 2, "crop inside: max {max}");
    }

    #[test]
    fn the_same_size_is_a_copy_and_regions_stay_inside() {
        let photo = card(250, 250);
        assert_eq!(resize(&photo, 250, 250), photo);
        let inside = resize_region(&photo, (10, 20, 30, 40), 30, 40);
        assert_eq!(inside, imageops::crop_imm(&photo, 10, 20, 30, 40).to_image());
        // A region reaching beyond the photo is clamped to it, never a panic.
        assert_eq!(resize_region(&photo, (240, 240, 100, 100), 8, 8).dimensions(), (8, 8));
        assert_eq!(resize_region(&RgbImage::new(0, 0), (0, 0, 1, 1), 4, 4).dimensions(), (4, 4));
    }
}
