//! Image decoding: any photo a user may send becomes an upright RGB image, or a typed
//! error. Byte and pixel limits are checked from the header, before the pixels are
//! decoded, so a decompression bomb cannot make us allocate gigabytes.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// Limits applied before decoding. Also the server's settings `max_image_bytes` and
/// `max_image_pixels` (serde names), whose defaults are defined here only.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DecodeLimits {
    /// Largest accepted encoded size in bytes.
    #[serde(rename = "max_image_bytes")]
    pub max_bytes: usize,
    /// Largest accepted width × height.
    #[serde(rename = "max_image_pixels")]
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_bytes: 15 * 1024 * 1024, max_pixels: 40_000_000 }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("the image is empty")]
    Empty,
    #[error("the image is {bytes} bytes; the limit is {limit}")]
    TooManyBytes { bytes: usize, limit: usize },
    #[error("the image is {width}×{height} pixels; the limit is {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the data is not an image in a supported format (JPEG, PNG, WebP, BMP, GIF, TIFF, PGM/PPM)")]
    UnknownFormat,
    #[error("the {format} image could not be decoded: {detail}")]
    Corrupt { format: &'static str, detail: String },
}

/// A decoded photo, EXIF orientation already applied.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub rgb: RgbImage,
    /// MIME type of the encoded data, e.g. `image/jpeg`.
    pub mime: &'static str,
    /// The EXIF orientation (1–8) found and applied; 1 when absent.
    pub exif_orientation: u8,
}

fn format_name(format: ImageFormat) -> &'static str {
    format.extensions_str().first().copied().unwrap_or("image")
}

/// The MIME type for a detected format.
pub fn mime_of(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Png => "image/png",
        ImageFormat::WebP => "image/webp",
        ImageFormat::Bmp => "image/bmp",
        ImageFormat::Gif => "image/gif",
        ImageFormat::Tiff => "image/tiff",
        ImageFormat::Pnm => "image/x-portable-anymap",
        ImageFormat::Ico => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Whether a JPEG's marker structure reaches its end-of-image marker: walks the
/// segments and the entropy-coded scans (where `FF 00` and restart markers are data).
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            // Some encoders leave padding between segments: skip to the next marker.
            i += 1;
            continue;
        }
        let marker = bytes[i + 1];
        match marker {
            0xD9 => return true,
            0xFF => i += 1, // fill byte
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = bytes.get(i + 2..i + 4).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else {
                    return false;
                };
                i += 2 + len;
                if marker == 0xDA {
                    // Entropy-coded data runs to the next marker that is not FF 00 or RSTn.
                    while i + 1 < bytes.len() {
                        let Some(at) = bytes.get(i..).and_then(|rest| memchr::memchr(0xFF, rest)) else {
                            return false;
                        };
                        i += at;
                        if i + 1 >= bytes.len() || !matches!(bytes[i + 1], 0x00 | 0xD0..=0xD7) {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
    false
}

/// The largest PNG image stored inside an ICO file, if any.
fn largest_png_in_ico(bytes: &[u8]) -> Option<&[u8]> {
    let count = usize::from(u16::from_le_bytes([*bytes.get(4)?, *bytes.get(5)?]));
    let entry = |i: usize| -> Option<(u32, &[u8])> {
        let e = bytes.get(6 + 16 * i..6 + 16 * (i + 1))?;
        let size = u32::from_le_bytes(e[8..12].try_into().ok()?) as usize;
        let offset = u32::from_le_bytes(e[12..16].try_into().ok()?) as usize;
        let data = bytes.get(offset..offset.checked_add(size)?)?;
        // Width 0 means 256.
        let side = if e[0] == 0 { 256 } else { u32::from(e[0]) };
        data.starts_with(b"\x89PNG\r\n\x1a\n").then_some((side, data))
    };
    (0..count).filter_map(entry).max_by_key(|(side, _)| *side).map(|(_, data)| data)
}

/// Decodes `bytes` into an upright RGB image within `limits`.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooManyBytes { bytes: bytes.len(), limit: limits.max_bytes });
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|_| DecodeError::UnknownFormat)?;
    let format = reader.format().ok_or(DecodeError::UnknownFormat)?;
    if format == ImageFormat::Ico {
        // The `image` crate refuses icons whose embedded PNG is not RGBA; decode the
        // largest embedded PNG directly instead.
        if let Some(png) = largest_png_in_ico(bytes) {
            return decode(png, limits).map(|d| DecodedImage { mime: "image/x-icon", ..d });
        }
    }
    let name = format_name(format);
    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        // Lenient decoders fill a truncated JPEG with grey; a half photo must not be
        // searched or enrolled as if it were whole.
        return Err(DecodeError::Corrupt {
            format: name,
            detail: "the JPEG data is truncated (no end-of-image marker)".into(),
        });
    }
    let corrupt = |e: image::ImageError| DecodeError::Corrupt { format: name, detail: e.to_string() };

    let mut reader = reader;
    let mut decoder_limits = Limits::default();
    // Room for the decoded pixels at up to 16 bits × 4 channels, plus the decoder's own
    // buffers; anything asking for more is refused by the decoder itself.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(decoder_limits);
    // Header parsing and decoding both run on untrusted bytes: a decoder bug on hostile
    // input must be a refused image, not a crashed request.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut decoder = reader.into_decoder().map_err(corrupt)?;
        let (width, height) = decoder.dimensions();
        if width == 0 || height == 0 {
            return Err(DecodeError::Corrupt { format: name, detail: "zero width or height".into() });
        }
        if u64::from(width) * u64::from(height) > limits.max_pixels {
            return Err(DecodeError::TooManyPixels { width, height, limit: limits.max_pixels });
        }
        let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
        Ok((DynamicImage::from_decoder(decoder).map_err(corrupt)?, orientation))
    }))
    .map_err(|_| DecodeError::Corrupt { format: name, detail: "the decoder failed on this data".into() })?;
    let (mut image, orientation) = decoded?;
    image.apply_orientation(orientation);
    Ok(DecodedImage { rgb: image.into_rgb8(), mime: mime_of(format), exif_orientation: orientation.to_exif() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn eval_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval")
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    #[test]
    fn every_error_is_typed() {
        let limits = DecodeLimits::default();
        assert_eq!(decode(&[], &limits).unwrap_err(), DecodeError::Empty);
        assert_eq!(decode(b"hello, not an image", &limits).unwrap_err(), DecodeError::UnknownFormat);
        let small = DecodeLimits { max_bytes: 10, ..limits };
        assert!(matches!(decode(&[0u8; 11], &small), Err(DecodeError::TooManyBytes { bytes: 11, limit: 10 })));

        let png = encode(&DynamicImage::new_rgb8(64, 48), ImageFormat::Png);
        let truncated = &png[..png.len() / 2];
        assert!(matches!(decode(truncated, &limits), Err(DecodeError::Corrupt { format: "png", .. })));
        let few_pixels = DecodeLimits { max_pixels: 64 * 48 - 1, ..limits };
        assert!(matches!(decode(&png, &few_pixels), Err(DecodeError::TooManyPixels { width: 64, height: 48, .. })));
        let ok = decode(&png, &limits).expect("valid png");
        assert_eq!((ok.rgb.width(), ok.rgb.height(), ok.mime), (64, 48, "image/png"));
    }

    #[test]
    fn truncated_jpeg_is_refused() {
        let img =
            DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128])));
        let jpeg = encode(&img, ImageFormat::Jpeg);
        assert!(decode(&jpeg, &DecodeLimits::default()).is_ok());
        let cut = &jpeg[..jpeg.len() * 2 / 3];
        assert!(matches!(decode(cut, &DecodeLimits::default()), Err(DecodeError::Corrupt { format: "jpg", .. })));
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"vendor trailer after EOI");
        assert!(decode(&trailer, &DecodeLimits::default()).is_ok(), "data after EOI is allowed");
    }

    /// The end-of-image walk as it was written first, one byte at a time.
    fn has_end_bytewise(bytes: &[u8]) -> bool {
        let mut i = 2;
        while i + 1 < bytes.len() {
            if bytes[i] != 0xFF {
                i += 1;
                continue;
            }
            let marker = bytes[i + 1];
            match marker {
                0xD9 => return true,
                0xFF => i += 1,
                0x01 | 0xD0..=0xD7 => i += 2,
                _ => {
                    let Some(len) = bytes.get(i + 2..i + 4).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                    else {
                        return false;
                    };
                    i += 2 + len;
                    if marker == 0xDA {
                        while i + 1 < bytes.len() && (bytes[i] != 0xFF || matches!(bytes[i + 1], 0x00 | 0xD0..=0xD7)) {
                            i += 1;
                        }
                    }
                }
            }
        }
        false
    }

    #[test]
    fn the_end_check_agrees_with_a_byte_walk_on_every_prefix() {
        let img =
            DynamicImage::ImageRgb8(RgbImage::from_fn(48, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 200])));
        let encoded = encode(&img, ImageFormat::Jpeg);
        // A scan with stuffed bytes, restart markers, fill bytes and a marker at the end.
        let mut crafted = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02];
        crafted.extend_from_slice(&[0x11, 0xFF, 0x00, 0x22, 0xFF, 0xD0, 0x33, 0xFF, 0xD7, 0xFF, 0x00, 0x44]);
        crafted.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xD9, 0x55]);
        for bytes in [&encoded[..], &crafted[..]] {
            assert!(jpeg_has_end(bytes));
            for cut in 0..=bytes.len() {
                let prefix = &bytes[..cut];
                assert_eq!(jpeg_has_end(prefix), has_end_bytewise(prefix), "prefix of {cut} bytes");
            }
        }
        let photo = std::fs::read(eval_dir().join("deepface/img1.jpg")).expect("the phone photo of ../shared/eval");
        assert!(jpeg_has_end(&photo) && has_end_bytewise(&photo));
        let cut = &photo[..photo.len() - 2];
        assert!(!jpeg_has_end(cut) && !has_end_bytewise(cut));
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        // A PNG header claiming 100000×100000 pixels with almost no data.
        let mut png = encode(&DynamicImage::new_luma8(1, 1), ImageFormat::Png);
        // IHDR width/height live at bytes 16..24; patch them and fix the CRC.
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode(&png, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyPixels { width: 100_000, height: 100_000, .. }), "{err:?}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn formats_round_trip() {
        let img = DynamicImage::new_rgb8(20, 10);
        for format in [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::Bmp,
            ImageFormat::Gif,
            ImageFormat::Pnm,
            ImageFormat::Tiff,
        ] {
            let bytes = encode(&img, format);
            let decoded = decode(&bytes, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!((decoded.rgb.width(), decoded.rgb.height()), (20, 10), "{format:?}");
        }
        let rgba16 = DynamicImage::new_rgba16(7, 5);
        assert_eq!(decode(&encode(&rgba16, ImageFormat::Png), &DecodeLimits::default()).unwrap().rgb.width(), 7);
    }

    /// EXIF orientations rotate the decoded image upright: the derived set stores the
    /// same photo with orientations 2/3/6/8 (pixels transformed) and as an upright PNG.
    #[test]
    fn exif_orientation_is_applied() {
        for set in ["deepface_img1", "compreface_004_A"] {
            let dir = eval_dir().join("derived").join(set);
            let read = |name: &str| std::fs::read(dir.join(name)).expect("derived file");
            let upright = decode(&read("rgb.png"), &DecodeLimits::default()).expect("rgb.png").rgb;
            for o in [2u8, 3, 6, 8] {
                let img = decode(&read(&format!("exif_orientation_{o}.jpg")), &DecodeLimits::default()).expect("jpeg");
                assert_eq!(img.exif_orientation, o);
                assert_eq!(img.rgb.dimensions(), upright.dimensions(), "{set} orientation {o}");
                let diff: u64 =
                    img.rgb.as_raw().iter().zip(upright.as_raw()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
                let mean = diff as f64 / upright.as_raw().len() as f64;
                assert!(mean < 8.0, "{set} orientation {o}: mean difference {mean}");
            }
        }
    }

    /// A JPEG with an EXIF APP1 segment holding only the orientation tag.
    fn jpeg_with_orientation(img: &DynamicImage, orientation: u16) -> Vec<u8> {
        let jpeg = encode(img, ImageFormat::Jpeg);
        let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec(); // little-endian, IFD at 8, one entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes()); // count
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// All eight EXIF orientations: pixels stored transformed, decoded upright.
    #[test]
    fn every_exif_orientation_is_applied() {
        use image::metadata::Orientation;
        // An asymmetric picture: a bright block in the top-left corner.
        let upright = DynamicImage::ImageRgb8(RgbImage::from_fn(48, 32, |x, y| {
            if x < 16 && y < 8 { image::Rgb([250, 250, 250]) } else { image::Rgb([10, 10, 10]) }
        }));
        // The inverse of each orientation's transform (5, 7 and the flips are their own inverse).
        let inverse = |o: u8| match o {
            6 => 8,
            8 => 6,
            other => other,
        };
        for o in 1u8..=8 {
            let mut stored = upright.clone();
            stored.apply_orientation(Orientation::from_exif(inverse(o)).unwrap());
            let decoded = decode(&jpeg_with_orientation(&stored, u16::from(o)), &DecodeLimits::default()).unwrap();
            assert_eq!(decoded.exif_orientation, o);
            assert_eq!(decoded.rgb.dimensions(), (48, 32), "orientation {o}");
            let corner = decoded.rgb.get_pixel(2, 2).0[0];
            let far = decoded.rgb.get_pixel(45, 29).0[0];
            assert!(corner > 200 && far < 60, "orientation {o}: corner {corner}, far {far}");
        }
    }

    /// Every file of the derived and compreface sets decodes, except the three that are
    /// corrupt on purpose, which give a typed error (never a panic).
    #[test]
    fn every_eval_format_file_decodes_or_errors() {
        let mut stack = vec![eval_dir().join("derived"), eval_dir().join("compreface")];
        let limits = DecodeLimits { max_bytes: 64 << 20, max_pixels: 100_000_000 };
        let (mut decoded, mut refused) = (0, Vec::new());
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("eval dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let on_purpose = ["corrupted.png", "empty.png", "truncated.jpg"].contains(&name.as_str());
                match decode(&std::fs::read(&path).expect("read"), &limits) {
                    Ok(img) => {
                        assert!(!on_purpose, "{name} is corrupt but decoded");
                        assert!(img.rgb.width() > 0);
                        decoded += 1;
                    }
                    Err(e) => {
                        assert!(on_purpose, "{} should decode: {e}", path.display());
                        refused.push(name);
                    }
                }
            }
        }
        assert!(decoded >= 50, "decoded {decoded}");
        assert_eq!(refused.len(), 3, "{refused:?}");
    }
}
