//! Decodes arbitrary bytes with small limits (4 MiB, 4 Mpx).
//!
//! Oracle: `decode` never panics (libfuzzer-sys aborts on any panic, so a panic that
//! `decode`'s own `catch_unwind` turns into `DecodeError::Corrupt` is still reported
//! here: triage it with the stack trace, see docs/FUZZING.md), every decoded image
//! is within the pixel limit, and no allocation exceeds what the limits allow (run
//! with `-malloc_limit_mb=...`, see docs/FUZZING.md).
#![no_main]

use facesearch_face::decode::{DecodeLimits, decode};
use libfuzzer_sys::fuzz_target;

const LIMITS: DecodeLimits = DecodeLimits { max_bytes: 4 << 20, max_pixels: 4_000_000 };

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = decode(data, &LIMITS) {
        let (w, h) = image.rgb.dimensions();
        assert!(w > 0 && h > 0, "decoded an empty {w}×{h} image");
        assert!(u64::from(w) * u64::from(h) <= LIMITS.max_pixels, "decoded {w}×{h}, over the pixel limit");
        assert_eq!(image.rgb.as_raw().len(), w as usize * h as usize * 3);
        assert!((1..=8).contains(&image.exif_orientation));
        assert!(image.mime.starts_with("image/"), "{}", image.mime);
    }
});
