//! A short, deterministic mutational fuzz run of `decode`, part of the normal test suite.
//!
//! Seeds are small synthetic images encoded here in every supported format (JPEG, PNG,
//! GIF, BMP, WebP, TIFF, ICO, PNM), plus a few photos of ../shared/eval/derived when
//! that directory is present (read at run time, never copied into the repository).
//! Each iteration applies 1–4 mutations (bit flips, byte sets, truncations, splices,
//! width/height overwrites with huge values) and checks that `decode`:
//!
//! - never panics (a panic is reported with the iteration, the seed and the input,
//!   which is written to the temporary directory);
//! - returns only images within the pixel limit;
//! - never holds more memory than the limits allow (a counting global allocator
//!   measures the peak of each call).
//!
//! Environment knobs for a longer run (the defaults are what CI runs):
//! `FACESEARCH_FUZZ_SEED` (u64), `FACESEARCH_FUZZ_ITERS`, and `FACESEARCH_FUZZ_SEEDS_OUT`
//! (a directory: the synthetic seeds are written there, for `cargo fuzz run decode`).
//! See docs/FUZZING.md for the cargo-fuzz targets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use facesearch_face::decode::{DecodeError, DecodeLimits, decode};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------
// A global allocator that tracks, per thread, the live bytes and their peak, so each
// decode call's peak memory can be checked against the limits.

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(size);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    });
}

fn on_dealloc(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        on_dealloc(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            on_dealloc(layout.size());
            on_alloc(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak extra bytes held and the largest
/// single allocation made while it ran (on this thread).
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, PEAK.with(Cell::get).saturating_sub(base), LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------------
// Limits and the memory bound they imply.

/// The limits of the cargo-fuzz target: 4 MiB, 4 Mpx.
const LIMITS: DecodeLimits = DecodeLimits { max_bytes: 4 << 20, max_pixels: 4_000_000 };

/// What `decode` may hold at its peak: the decoder's budget (`decode` gives the decoder
/// `max_pixels × 8 + 64 MiB`, room for 16-bit RGBA plus its own buffers), plus a second
/// decoded buffer for the EXIF rotation (up to 16 bytes per pixel: 32-bit float RGBA)
/// and the 3-byte-per-pixel RGB result.
fn memory_bound(limits: &DecodeLimits) -> usize {
    let px = limits.max_pixels as usize;
    px * 8 + (64 << 20) + px * 16 + px * 3
}

/// Found by this test (see docs/FUZZING.md): the `tiff` crate reads the first IFD while
/// `ImageReader::into_decoder` builds the decoder, before `decode`'s limits are handed
/// to it, under its own default `decoding_buffer_size` of 256 MiB: one tag whose count
/// is ~8 million reserves `count × 32` bytes (a `Vec<tiff::Value>`) for a 582-byte
/// file. Within the budget of the service's default limits (40 Mpx: 384 MiB), but not
/// within the 4 Mpx budget used here, so TIFF inputs get this cap instead.
const TIFF_HEADER_CAP: usize = 256 << 20;

fn memory_bound_for(input: &[u8], limits: &DecodeLimits) -> usize {
    let bound = memory_bound(limits);
    if input.starts_with(b"II") || input.starts_with(b"MM") { bound.max(TIFF_HEADER_CAP + (1 << 20)) } else { bound }
}

// ---------------------------------------------------------------------------------
// Seeds: small synthetic images in every supported format.

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap_or_else(|e| panic!("encoding a {format:?} seed: {e}"));
    out.into_inner()
}

fn picture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, ((x ^ y) * 16) as u8]))
}

fn picture_rgba(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, y| {
        Rgba([(x * 255 / w) as u8, (y * 255 / h) as u8, 128, if (x + y) % 3 == 0 { 0 } else { 255 }])
    })
}

/// A JPEG with an EXIF APP1 segment holding only the orientation tag.
fn jpeg_with_orientation(img: &DynamicImage, orientation: u16) -> Vec<u8> {
    let jpeg = encode(img, ImageFormat::Jpeg);
    let mut tiff = b"MM\0*\0\0\0\x08\0\x01".to_vec(); // big-endian, IFD at 8, one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
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

/// An ICO holding one 32-bit BMP image (the `image` encoder writes only PNG icons).
fn ico_with_bmp(w: u8, h: u8) -> Vec<u8> {
    let (wu, hu) = (u32::from(w), u32::from(h));
    let mask_row = (wu.div_ceil(32) * 4) as usize;
    let mut dib = Vec::new();
    dib.extend_from_slice(&40u32.to_le_bytes());
    dib.extend_from_slice(&(wu as i32).to_le_bytes());
    dib.extend_from_slice(&((2 * hu) as i32).to_le_bytes()); // XOR + AND masks
    dib.extend_from_slice(&1u16.to_le_bytes());
    dib.extend_from_slice(&32u16.to_le_bytes());
    dib.extend_from_slice(&[0; 24]); // BI_RGB, sizes, resolution, palette
    for y in 0..hu {
        for x in 0..wu {
            dib.extend_from_slice(&[(x * 40) as u8, (y * 40) as u8, 200, 255]);
        }
    }
    dib.extend(std::iter::repeat_n(0u8, mask_row * h as usize));
    let mut out = vec![0, 0, 1, 0, 1, 0]; // reserved, type 1 (icon), one entry
    out.extend_from_slice(&[w, h, 0, 0]);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(&(dib.len() as u32).to_le_bytes());
    out.extend_from_slice(&22u32.to_le_bytes());
    out.extend_from_slice(&dib);
    out
}

/// PNM seeds in the ASCII and binary variants, and PAM.
fn pnm_seeds() -> Vec<(String, Vec<u8>)> {
    let (w, h) = (5u32, 3u32);
    let ascii = |magic: &str, maxval: Option<u32>, per_px: &dyn Fn(u32, u32) -> String| {
        let mut s = format!("{magic}\n# a comment\n{w} {h}\n");
        if let Some(m) = maxval {
            s.push_str(&format!("{m}\n"));
        }
        for y in 0..h {
            let row: Vec<String> = (0..w).map(|x| per_px(x, y)).collect();
            s.push_str(&row.join(" "));
            s.push('\n');
        }
        s.into_bytes()
    };
    let mut seeds = vec![
        ("pnm-p1".to_string(), ascii("P1", None, &|x, y| ((x + y) % 2).to_string())),
        ("pnm-p2".to_string(), ascii("P2", Some(255), &|x, y| (x * 50 + y).to_string())),
        ("pnm-p3".to_string(), ascii("P3", Some(65535), &|x, y| format!("{} {} {}", x * 1000, y * 9000, 7))),
    ];
    let mut p4 = format!("P4\n{w} {h}\n").into_bytes();
    p4.extend_from_slice(&[0b1010_1000, 0b0101_0000, 0b1111_1000]);
    seeds.push(("pnm-p4".into(), p4));
    let mut p5 = format!("P5 {w} {h} 255\n").into_bytes();
    p5.extend((0..w * h).map(|i| (i * 17) as u8));
    seeds.push(("pnm-p5".into(), p5));
    let mut p6_16 = format!("P6\n{w} {h}\n1000\n").into_bytes();
    p6_16.extend((0..w * h * 3).flat_map(|i| ((i * 37) as u16 % 1000).to_be_bytes()));
    seeds.push(("pnm-p6-16bit".into(), p6_16));
    let mut p7 = format!("P7\nWIDTH {w}\nHEIGHT {h}\nDEPTH 4\nMAXVAL 255\nTUPLTYPE RGB_ALPHA\nENDHDR\n").into_bytes();
    p7.extend((0..w * h * 4).map(|i| (i * 13) as u8));
    seeds.push(("pam-p7".into(), p7));
    seeds
}

fn synthetic_seeds() -> Vec<(String, Vec<u8>)> {
    let rgb = DynamicImage::ImageRgb8(picture(24, 16));
    let rgba = DynamicImage::ImageRgba8(picture_rgba(16, 12));
    let luma = DynamicImage::ImageLuma8(rgb.to_luma8());
    let la = DynamicImage::ImageLumaA8(rgba.to_luma_alpha8());
    let rgb16 = DynamicImage::ImageRgb16(rgb.to_rgb16());
    let rgba16 = DynamicImage::ImageRgba16(rgba.to_rgba16());
    let luma16 = DynamicImage::ImageLuma16(rgb.to_luma16());
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| seeds.push((name.to_string(), bytes));

    add("jpeg-rgb", encode(&rgb, ImageFormat::Jpeg));
    add("jpeg-gray", encode(&luma, ImageFormat::Jpeg));
    add("jpeg-exif6", jpeg_with_orientation(&rgb, 6));
    add("jpeg-exif5", jpeg_with_orientation(&DynamicImage::ImageRgb8(picture(9, 7)), 5));
    for (name, img) in [("rgb", &rgb), ("rgba", &rgba), ("gray", &luma), ("la", &la), ("rgb16", &rgb16)] {
        add(&format!("png-{name}"), encode(img, ImageFormat::Png));
    }
    add("png-rgba16", encode(&rgba16, ImageFormat::Png));
    add("png-gray16", encode(&luma16, ImageFormat::Png));
    add("gif-rgb", encode(&rgb, ImageFormat::Gif));
    add("gif-rgba", encode(&rgba, ImageFormat::Gif));
    {
        // An animated GIF: two frames.
        use image::codecs::gif::GifEncoder;
        let mut out = Vec::new();
        let frames = [picture_rgba(8, 8), RgbaImage::from_pixel(8, 8, Rgba([255, 0, 0, 255]))]
            .map(|f| image::Frame::from_parts(f, 0, 0, image::Delay::from_numer_denom_ms(100, 1)));
        GifEncoder::new(&mut out).encode_frames(frames).expect("animated gif");
        add("gif-animated", out);
    }
    for (name, img) in [("rgb", &rgb), ("rgba", &rgba), ("gray", &luma)] {
        add(&format!("bmp-{name}"), encode(img, ImageFormat::Bmp));
    }
    add("webp-rgb", encode(&rgb, ImageFormat::WebP));
    add("webp-rgba", encode(&rgba, ImageFormat::WebP));
    for (name, img) in [("rgb", &rgb), ("rgba", &rgba), ("gray", &luma), ("rgb16", &rgb16)] {
        add(&format!("tiff-{name}"), encode(img, ImageFormat::Tiff));
    }
    add("ico-png", encode(&rgba, ImageFormat::Ico));
    add("ico-bmp", ico_with_bmp(6, 4));
    add("pnm-ppm", encode(&rgb, ImageFormat::Pnm));
    add("pnm-pgm", encode(&luma, ImageFormat::Pnm));
    seeds.extend(pnm_seeds());
    seeds
}

/// A few small photos of ../shared/eval/derived (the tests' photos are always there; a
/// missing one is a failure, not a smaller seed set).
fn eval_seeds() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval/derived");
    let mut seeds = Vec::new();
    for set in ["deepface_img1", "compreface_004_A"] {
        for name in ["tiny_48px.jpg", "tiny_96px.jpg", "low_quality_q10.jpg", "lossy.webp"] {
            let path = root.join(set).join(name);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("eval seed {}: {e}", path.display()));
            seeds.push((format!("eval:{set}/{name}"), bytes));
        }
    }
    seeds
}

// ---------------------------------------------------------------------------------
// Mutations.

/// Values that break size arithmetic: zero, one, the 16/31/32-bit edges and the square
/// roots of 2^31 / 2^32 (whose squares overflow).
const HUGE: [u32; 10] = [0, 1, 0x7FFF, 0xFFFF, 0x1_0000, 46_341, 65_536 * 2, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF];

fn huge(rng: &mut StdRng) -> u32 {
    if rng.random_bool(0.8) { HUGE[rng.random_range(0..HUGE.len())] } else { rng.random() }
}

fn put_be32(d: &mut [u8], at: usize, v: u32) {
    if let Some(s) = d.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
fn put_le32(d: &mut [u8], at: usize, v: u32) {
    if let Some(s) = d.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
fn put_be16(d: &mut [u8], at: usize, v: u16) {
    if let Some(s) = d.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
fn put_le16(d: &mut [u8], at: usize, v: u16) {
    if let Some(s) = d.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
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

/// Overwrites the width and/or height in the format's header with huge values;
/// returns what it did.
fn overwrite_dimensions(d: &mut Vec<u8>, rng: &mut StdRng) -> String {
    let (w, h) = (huge(rng), huge(rng));
    let (w, h) = match rng.random_range(0..3) {
        0 => (w, h),
        1 => (w, 0x10),
        _ => (0x10, h),
    };
    let mut done = Vec::new();
    // PNG, and the PNG inside an ICO: IHDR width/height, CRC fixed most of the time.
    for at in find_all(d, b"IHDR") {
        put_be32(d, at + 4, w);
        put_be32(d, at + 8, h);
        if rng.random_bool(0.8) && at + 21 <= d.len() {
            let crc = crc32(&d[at..at + 17]);
            put_be32(d, at + 17, crc);
        }
        done.push(format!("IHDR@{at}"));
    }
    if d.starts_with(b"\xFF\xD8") {
        // JPEG: every SOFn (not DHT C4, JPG C8, DAC CC).
        for at in find_all(d, &[0xFF]) {
            if let Some(&m) = d.get(at + 1)
                && (0xC0..=0xCF).contains(&m)
                && ![0xC4, 0xC8, 0xCC].contains(&m)
            {
                put_be16(d, at + 5, h as u16);
                put_be16(d, at + 7, w as u16);
                done.push(format!("SOF{:X}@{at}", m - 0xC0));
            }
        }
    } else if d.starts_with(b"GIF8") {
        put_le16(d, 6, w as u16);
        put_le16(d, 8, h as u16);
        done.push("GIF screen".into());
        // The first image descriptor, past the global palette and any extensions.
        let mut i = 13 + d.get(10).filter(|p| **p & 0x80 != 0).map_or(0, |p| 3usize << ((p & 7) + 1));
        while i < d.len() && d[i] == 0x21 {
            i += 2;
            while i < d.len() && d[i] != 0 {
                i += usize::from(d[i]) + 1;
            }
            i += 1;
        }
        if d.get(i) == Some(&0x2C) && rng.random_bool(0.7) {
            put_le16(d, i + 5, w as u16);
            put_le16(d, i + 7, h as u16);
            done.push(format!("GIF frame@{i}"));
        }
    } else if d.starts_with(b"BM") {
        put_le32(d, 18, w);
        put_le32(d, 22, h); // negative heights (top-down) included
        done.push("BMP".into());
    } else if d.starts_with(b"II*\0") || d.starts_with(b"MM\0*") {
        let le = d[0] == b'I';
        let u16_at = |d: &[u8], at: usize| {
            d.get(at..at + 2)
                .map(|b| if le { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) })
        };
        let ifd = d.get(4..8).map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            (if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }) as usize
        });
        if let Some(ifd) = ifd
            && let Some(n) = u16_at(d, ifd)
        {
            for e in 0..usize::from(n) {
                let at = ifd + 2 + 12 * e;
                let Some(tag) = u16_at(d, at) else { break };
                if tag == 256 || tag == 257 {
                    let v = if tag == 256 { w } else { h };
                    // Type LONG, count 1, the value.
                    let (t, c, val) = if le {
                        (4u16.to_le_bytes(), 1u32.to_le_bytes(), v.to_le_bytes())
                    } else {
                        (4u16.to_be_bytes(), 1u32.to_be_bytes(), v.to_be_bytes())
                    };
                    if at + 12 <= d.len() {
                        d[at + 2..at + 4].copy_from_slice(&t);
                        d[at + 4..at + 8].copy_from_slice(&c);
                        d[at + 8..at + 12].copy_from_slice(&val);
                        done.push(format!("TIFF tag {tag}@{at}"));
                    }
                }
            }
        }
    } else if d.starts_with(b"RIFF") && d.get(8..12) == Some(b"WEBP") {
        match d.get(12..16) {
            Some(b"VP8L") => {
                // 14 bits width-1, 14 bits height-1, alpha, version.
                let bits =
                    (w & 0x3FFF) | ((h & 0x3FFF) << 14) | (u32::from(d.get(24).copied().unwrap_or(0)) & 0xF0) << 24;
                put_le32(d, 21, bits);
                done.push("VP8L".into());
            }
            Some(b"VP8X") if d.len() >= 30 => {
                d[24..27].copy_from_slice(&w.to_le_bytes()[..3]);
                d[27..30].copy_from_slice(&h.to_le_bytes()[..3]);
                done.push("VP8X".into());
            }
            Some(b"VP8 ") => {
                put_le16(d, 26, w as u16);
                put_le16(d, 28, h as u16);
                done.push("VP8".into());
            }
            _ => {}
        }
        // The frame inside an extended file.
        for at in find_all(d, b"VP8L") {
            if at > 12 {
                put_le32(d, at + 9, (w & 0x3FFF) | ((h & 0x3FFF) << 14));
                done.push(format!("VP8L@{at}"));
            }
        }
    } else if d.first() == Some(&b'P') && d.get(1).is_some_and(|c| (b'1'..=b'7').contains(c)) {
        // PNM: replace the first two numbers of the header (or WIDTH/HEIGHT of PAM).
        let text: Vec<u8> = d.clone();
        let numbers = [w.to_string(), if rng.random_bool(0.2) { "99999999999999999999".into() } else { h.to_string() }];
        let mut out = Vec::with_capacity(d.len() + 16);
        let (mut i, mut replaced) = (2, 0);
        out.extend_from_slice(&text[..2]);
        while i < text.len() {
            if replaced < 2 && text[i].is_ascii_digit() && !text[i - 1].is_ascii_alphanumeric() {
                let start = i;
                while i < text.len() && text[i].is_ascii_digit() {
                    i += 1;
                }
                // Skip comment lines: keep their digits.
                let line_start = text[..start].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
                if text[line_start] == b'#' {
                    out.extend_from_slice(&text[start..i]);
                } else {
                    out.extend_from_slice(numbers[replaced].as_bytes());
                    replaced += 1;
                }
                continue;
            }
            out.push(text[i]);
            i += 1;
        }
        *d = out;
        done.push("PNM".into());
    }
    if d.starts_with(&[0, 0, 1, 0]) && d.len() >= 22 {
        // ICO directory entry (one byte each, 0 means 256) and the BMP header it points to.
        d[6] = w as u8;
        d[7] = h as u8;
        let off = u32::from_le_bytes([d[18], d[19], d[20], d[21]]) as usize;
        if d.get(off..off + 4) == Some(&40u32.to_le_bytes()[..]) {
            put_le32(d, off + 4, w);
            put_le32(d, off + 8, h);
        }
        done.push("ICO".into());
    }
    if done.is_empty() {
        // Unknown layout: a huge value at a random header offset, either byte order.
        let at = rng.random_range(0..d.len().clamp(1, 64));
        if rng.random_bool(0.5) {
            put_be32(d, at, w)
        } else {
            put_le32(d, at, w)
        }
        done.push(format!("u32@{at}"));
    }
    format!("dims {w}x{h} [{}]", done.join(","))
}

const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x2C, 0x0A];

fn mutate(seeds: &[(String, Vec<u8>)], data: &mut Vec<u8>, rng: &mut StdRng) -> String {
    if data.is_empty() {
        data.push(rng.random());
        return "push".into();
    }
    match rng.random_range(0..100) {
        0..=24 => {
            let n = rng.random_range(1..=8);
            for _ in 0..n {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            format!("flip{n}")
        }
        25..=44 => {
            let n = rng.random_range(1..=4);
            for _ in 0..n {
                // Headers matter most: half of the sets land in the first 64 bytes.
                let end = if rng.random_bool(0.5) { data.len().min(64) } else { data.len() };
                let i = rng.random_range(0..end);
                data[i] = if rng.random_bool(0.5) {
                    INTERESTING[rng.random_range(0..INTERESTING.len())]
                } else {
                    rng.random()
                };
            }
            format!("set{n}")
        }
        45..=59 => {
            let len = rng.random_range(0..data.len());
            data.truncate(len);
            format!("truncate@{len}")
        }
        60..=74 => {
            // Splice: a chunk of another seed, inserted or overwriting.
            let (name, other) = &seeds[rng.random_range(0..seeds.len())];
            let start = rng.random_range(0..other.len());
            let len = rng.random_range(1..=(other.len() - start).min(512));
            let chunk = &other[start..start + len];
            let at = rng.random_range(0..=data.len());
            if rng.random_bool(0.5) {
                data.splice(at..at, chunk.iter().copied());
                format!("insert {name}[{start}..+{len}]@{at}")
            } else {
                let end = (at + len).min(data.len());
                data.splice(at..end, chunk.iter().copied());
                format!("overwrite {name}[{start}..+{len}]@{at}")
            }
        }
        75..=84 => {
            // Repeat a block (chunk/segment duplication) or delete one.
            let start = rng.random_range(0..data.len());
            let len = rng.random_range(1..=(data.len() - start).min(256));
            if rng.random_bool(0.5) {
                let block = data[start..start + len].to_vec();
                data.splice(start..start, block);
                format!("dup[{start}..+{len}]")
            } else {
                data.drain(start..start + len);
                format!("delete[{start}..+{len}]")
            }
        }
        _ => overwrite_dimensions(data, rng),
    }
}

// ---------------------------------------------------------------------------------

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn describe(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Empty => "empty",
        DecodeError::TooManyBytes { .. } => "too many bytes",
        DecodeError::TooManyPixels { .. } => "too many pixels",
        DecodeError::UnknownFormat => "unknown format",
        DecodeError::Corrupt { detail, .. } if detail == "the decoder failed on this data" => "decoder panic caught",
        DecodeError::Corrupt { .. } => "corrupt",
    }
}

/// Decodes one input under every check; panics with a reproducible report.
fn check(input: &[u8], context: &dyn Fn() -> String) -> (Result<(), &'static str>, Duration, usize) {
    let start = Instant::now();
    let (result, peak, largest) = measured(|| catch_unwind(AssertUnwindSafe(|| decode(input, &LIMITS))));
    let elapsed = start.elapsed();
    let fail = |what: String| -> ! {
        let path = std::env::temp_dir().join(format!("facesearch-fuzz-decode-{}.bin", std::process::id()));
        let saved =
            std::fs::write(&path, input).map_or_else(|e| format!("(not saved: {e})"), |()| path.display().to_string());
        panic!("{what}\n  {}\n  input: {} bytes, saved to {saved}", context(), input.len());
    };
    let bound = memory_bound_for(input, &LIMITS);
    if peak > bound {
        fail(format!("decode held {peak} bytes at its peak (largest allocation {largest}); the limits allow {bound}"));
    }
    match result {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            fail(format!("decode panicked: {msg}"))
        }
        Ok(Ok(img)) => {
            let (w, h) = img.rgb.dimensions();
            if w == 0 || h == 0 || u64::from(w) * u64::from(h) > LIMITS.max_pixels {
                fail(format!("decode returned a {w}×{h} image; the limit is {} pixels", LIMITS.max_pixels));
            }
            if img.rgb.as_raw().len() != w as usize * h as usize * 3 || !(1..=8).contains(&img.exif_orientation) {
                fail(format!("decode returned an inconsistent {w}×{h} image"));
            }
            (Ok(()), elapsed, peak)
        }
        Ok(Err(e)) => (Err(describe(&e)), elapsed, peak),
    }
}

#[test]
fn decode_survives_mutated_images() {
    let seed = env_u64("FACESEARCH_FUZZ_SEED", 0x00FA_CE5E_A4C8);
    let iterations = env_u64("FACESEARCH_FUZZ_ITERS", 5000);
    let started = Instant::now();

    let synthetic = synthetic_seeds();
    if let Ok(dir) = std::env::var("FACESEARCH_FUZZ_SEEDS_OUT") {
        std::fs::create_dir_all(&dir).expect("seed output dir");
        for (name, bytes) in &synthetic {
            std::fs::write(PathBuf::from(&dir).join(name), bytes).expect("write seed");
        }
    }
    // Every synthetic seed is a valid image: mutations start from something decodable.
    for (name, bytes) in &synthetic {
        let (result, _, _) = check(bytes, &|| format!("seed {name}"));
        assert_eq!(result, Ok(()), "seed {name} does not decode");
    }
    let mut seeds = synthetic;
    seeds.extend(eval_seeds());

    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut most_memory = (0, String::new());
    for iteration in 0..iterations {
        let (name, base) = &seeds[rng.random_range(0..seeds.len())];
        let mut data = base.clone();
        let steps: Vec<String> = (0..rng.random_range(1..=4)).map(|_| mutate(&seeds, &mut data, &mut rng)).collect();
        let context = || {
            format!(
                "iteration {iteration} of seed FACESEARCH_FUZZ_SEED={seed} (FACESEARCH_FUZZ_ITERS={iterations}): {name} + {}",
                steps.join(" + ")
            )
        };
        let (result, elapsed, peak) = check(&data, &context);
        *outcomes.entry(result.err().unwrap_or("ok")).or_default() += 1;
        if elapsed > slowest.0 {
            slowest = (elapsed, context());
        }
        if peak > most_memory.0 {
            most_memory = (peak, context());
        }
    }
    eprintln!(
        "fuzz_decode: {iterations} iterations over {} seeds in {:.1?}: {outcomes:?}\n  slowest {:.1?}: {}\n  \
         most memory {} KiB (bound {} KiB, TIFF {} KiB): {}",
        seeds.len(),
        started.elapsed(),
        slowest.0,
        slowest.1,
        most_memory.0 >> 10,
        memory_bound(&LIMITS) >> 10,
        memory_bound_for(b"II", &LIMITS) >> 10,
        most_memory.1
    );
    assert!(outcomes.get("ok").copied().unwrap_or(0) > 0, "no mutated input decoded: the mutations are too harsh");
}

/// A decompression bomb in every format decodes to a typed error without allocating
/// the claimed pixels.
#[test]
fn huge_dimensions_in_every_format_are_refused_cheaply() {
    let mut rng = StdRng::seed_from_u64(7);
    for (name, bytes) in synthetic_seeds() {
        for _ in 0..20 {
            let mut data = bytes.clone();
            let what = overwrite_dimensions(&mut data, &mut rng);
            let _ = check(&data, &|| format!("{name} + {what}"));
        }
    }
}

/// The TIFF header allocation described at [`TIFF_HEADER_CAP`], as a regression case:
/// a tag count of ~8 million in a 582-byte file is refused with a typed error, and what
/// it reserves stays within the `tiff` crate's 256 MiB cap (a count past the cap is
/// refused outright). If `decode` learns to pre-check TIFF directories, tighten this.
#[test]
fn tiff_with_a_huge_tag_count_is_refused() {
    let luma = DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(picture(24, 16)).to_luma8());
    let tiff = encode(&luma, ImageFormat::Tiff);
    let ifd = u32::from_le_bytes(tiff[4..8].try_into().unwrap()) as usize;
    let entries = usize::from(u16::from_le_bytes([tiff[ifd], tiff[ifd + 1]]));
    // BitsPerSample (258) and Predictor (317), SHORTs the decoder reads while opening
    // the file. `cargo fuzz run decode` found Predictor with count 8193281 (0x7D0501):
    // a 590-byte file, malloc(262184992); this is that case, rebuilt from a fresh seed.
    for tag in [258u16, 317] {
        let at = (0..entries)
            .map(|e| ifd + 2 + 12 * e)
            .find(|&at| tiff[at..at + 2] == tag.to_le_bytes())
            .unwrap_or_else(|| panic!("the TIFF encoder no longer writes tag {tag}"));
        for count in [8_000_000u32, 8_193_281, 9_000_000, u32::MAX] {
            let mut data = tiff.clone();
            data[at + 4..at + 8].copy_from_slice(&count.to_le_bytes());
            let (result, peak, _) = measured(|| decode(&data, &LIMITS));
            let what = format!("tag {tag}, count {count}, {} bytes", data.len());
            assert!(matches!(result, Err(DecodeError::Corrupt { format: "tiff", .. })), "{what}: {result:?}");
            assert!(peak <= TIFF_HEADER_CAP + (1 << 20), "{what}: {peak} bytes reserved");
        }
    }
}
