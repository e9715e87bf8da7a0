//! A short, deterministic mutational fuzz run of the multipart `Form` extractor, part of
//! the normal test suite (the cargo-fuzz target `fuzz/fuzz_targets/multipart.rs` is the
//! open-ended version; see docs/FUZZING.md).
//!
//! Bodies are generated valid (image and text parts, quoted and odd names, file names,
//! odd headers, several boundary spellings), then mutated (bit flips, byte sets,
//! truncations, splices, multipart-aware edits). Every call must return `Ok` or an
//! `ApiError` with a 4xx status (never 5xx, never a panic), and so must the `Form`
//! accessors. Unmutated plain bodies must parse and give back what was sent.
//!
//! `FACESEARCH_FUZZ_SEED` (u64) and `FACESEARCH_FUZZ_ITERS` make a longer run;
//! `FACESEARCH_FUZZ_SEEDS_OUT` writes generated bodies (boundary `X`) to a directory,
//! as a seed corpus for `cargo fuzz run multipart`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use facesearch_api::body::BodyTooLarge;
use facesearch_api::extract::Form;
use facesearch_api::{ApiConfig, ApiError, AppState};
use facesearch_store::SqliteStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Small, so that the file-size limit is reached by generated bodies.
const MAX_IMAGE_BYTES: usize = 2048;
/// The extractor's own limits (crates/api/src/extract.rs).
const MAX_PARTS: usize = 32;
const MAX_TEXT_FIELD: usize = 40 * 1024;

struct Harness {
    runtime: tokio::runtime::Runtime,
    state: AppState,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("sqlite store");
    let config = ApiConfig { max_image_bytes: MAX_IMAGE_BYTES, ..ApiConfig::default() };
    Harness { runtime, state: AppState::new(Arc::new(store), config), _dir: dir }
}

// ---------------------------------------------------------------------------------
// Generation.

const BOUNDARIES: [&str; 7] = [
    "X",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "------------------------d74496d66958873e",
    "b0und.ary_with-punct+and'quote",
    "a",
    "XX",
    "=_boundary_=",
];

/// The Content-Type header for a boundary, in several legal spellings.
fn content_type(boundary: &str, rng: &mut StdRng) -> String {
    match rng.random_range(0..5) {
        0 => format!("multipart/form-data; boundary=\"{boundary}\""),
        1 => format!("Multipart/Form-Data;boundary=\"{boundary}\"; charset=utf-8"),
        2 if !boundary.contains(['=', '\'', '+']) => format!("multipart/form-data; charset=UTF-8; boundary={boundary}"),
        _ => format!("multipart/form-data; boundary=\"{boundary}\""),
    }
}

#[derive(Debug, Clone)]
enum Content {
    Text(String),
    File { file_name: Option<String>, bytes: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Part {
    name: String,
    content: Content,
    /// Written as is, after Content-Disposition.
    extra_headers: Vec<String>,
    /// Odd but possibly legal framing: no expectation on the parse result.
    odd: bool,
}

const TEXT_NAMES: [&str; 6] = ["threshold", "max_results", "index_id", "page", "min_quality", "metadata"];
const NUMBERS: [&str; 22] = [
    "0.5",
    " 0.8 ",
    "1",
    "0",
    "-0",
    "1e308",
    "1e-400",
    "NaN",
    "inf",
    "-inf",
    "",
    " ",
    "abc",
    "0x10",
    "10",
    "101",
    "18446744073709551616",
    "-1",
    "+5",
    "٣",
    "1_000",
    "0.5\u{0}",
];
const ODD_NAMES: [&str; 8] = ["na\\\"me", "name with spaces", "ünïcödé", "", "image\u{0}", "IMAGE", "a;b", "x\\\\y"];
const FILE_NAMES: [&str; 8] = [
    "photo.jpg",
    "../../etc/passwd",
    "C:\\\\Users\\\\me\\\\face.png",
    "ünï çødé.webp",
    "",
    "with \\\"quote\\\".jpg",
    "a;b=c.gif",
    "no-extension",
];

fn random_text(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    let alphabet: Vec<char> = "abcXYZ019 -_.:/\\\"'é€😀\t".chars().collect();
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect()
}

fn random_part(rng: &mut StdRng, index: usize) -> Part {
    let mut odd = false;
    let mut extra_headers = Vec::new();
    let (name, content) = match rng.random_range(0..10) {
        0..=2 => {
            let name = if rng.random_bool(0.7) { "image" } else { "source_image" };
            let file_name = rng.random_bool(0.7).then(|| FILE_NAMES[rng.random_range(0..FILE_NAMES.len())].to_string());
            if file_name.as_deref().is_some_and(|f| f.contains(['\\', ';']) || !f.is_ascii()) {
                odd = true;
            }
            let len = match rng.random_range(0..10) {
                0 => 0,
                1 => MAX_IMAGE_BYTES + rng.random_range(1..100),
                2 => MAX_IMAGE_BYTES,
                _ => rng.random_range(1..600),
            };
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.3) && bytes.len() > 8 {
                // Bytes that look like multipart framing inside the file.
                let at = rng.random_range(0..bytes.len() - 4);
                bytes.splice(at..at, b"\r\n--".iter().copied());
                odd = true;
            }
            if rng.random_bool(0.6) {
                extra_headers.push(
                    ["Content-Type: image/jpeg", "Content-Type: application/octet-stream", "content-type: IMAGE/PNG"]
                        [rng.random_range(0..3)]
                    .to_string(),
                );
            }
            (name.to_string(), Content::File { file_name, bytes })
        }
        3..=7 => {
            let name = TEXT_NAMES[rng.random_range(0..TEXT_NAMES.len())].to_string();
            let value = match rng.random_range(0..4) {
                0 => random_text(rng, 40),
                1 if rng.random_bool(0.05) => "9".repeat(MAX_TEXT_FIELD + rng.random_range(0..2)),
                _ => NUMBERS[rng.random_range(0..NUMBERS.len())].to_string(),
            };
            if value.contains(['\r', '\n']) {
                odd = true;
            }
            (name, Content::Text(value))
        }
        8 => {
            odd = true;
            let name = ODD_NAMES[rng.random_range(0..ODD_NAMES.len())].to_string();
            (name, Content::Text(random_text(rng, 20)))
        }
        _ => {
            // A file under a text name, or text under a file name.
            if rng.random_bool(0.5) {
                (format!("field{index}"), Content::File { file_name: Some("f.bin".into()), bytes: vec![1, 2, 3] })
            } else {
                // "image" is a file field even without a file name: no round trip.
                odd = true;
                ("image".to_string(), Content::Text("not a file".into()))
            }
        }
    };
    if rng.random_bool(0.15) {
        odd = true;
        extra_headers.push(
            [
                "X-Custom: value",
                "Content-Transfer-Encoding: base64",
                "Content-Type: text/plain; charset=latin1",
                "Content-Length: 99999",
                "X-Empty:",
                "X-Folded: a\r\n b",
            ][rng.random_range(0..6)]
            .to_string(),
        );
    }
    Part { name, content, extra_headers, odd }
}

fn disposition(part: &Part, rng: &mut StdRng) -> String {
    let mut d = if rng.random_bool(0.9) {
        format!("Content-Disposition: form-data; name=\"{}\"", part.name)
    } else {
        format!("content-disposition:form-data;name=\"{}\"", part.name)
    };
    if let Content::File { file_name: Some(f), .. } = &part.content {
        d.push_str(&format!("; filename=\"{f}\""));
    }
    d
}

struct Generated {
    boundary: String,
    content_type: String,
    body: Vec<u8>,
    parts: Vec<Part>,
    /// Plain and within every limit: must parse and give back its parts.
    expect_ok: bool,
}

fn generate(rng: &mut StdRng, boundary: Option<&str>) -> Generated {
    let boundary = boundary.unwrap_or_else(|| BOUNDARIES[rng.random_range(0..BOUNDARIES.len())]).to_string();
    let count = match rng.random_range(0..20) {
        0 => 0,
        1 => MAX_PARTS + rng.random_range(0..3),
        _ => rng.random_range(1..=6),
    };
    let parts: Vec<Part> = (0..count).map(|i| random_part(rng, i)).collect();
    let mut body = Vec::new();
    if rng.random_bool(0.1) {
        body.extend_from_slice(b"this is the preamble\r\n");
    }
    for part in &parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(disposition(part, rng).as_bytes());
        body.extend_from_slice(b"\r\n");
        for h in &part.extra_headers {
            body.extend_from_slice(h.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"\r\n");
        match &part.content {
            Content::Text(t) => body.extend_from_slice(t.as_bytes()),
            Content::File { bytes, .. } => body.extend_from_slice(bytes),
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    if rng.random_bool(0.1) {
        body.extend_from_slice(b"epilogue, ignored\r\n");
    }
    let mut names = std::collections::HashSet::new();
    let unique = parts.iter().all(|p| names.insert(p.name.clone()));
    let within_limits = parts.len() <= MAX_PARTS
        && parts.iter().all(|p| match &p.content {
            Content::Text(t) => t.len() <= MAX_TEXT_FIELD,
            Content::File { bytes, .. } => bytes.len() <= MAX_IMAGE_BYTES,
        });
    let expect_ok = unique && within_limits && !parts.iter().any(|p| p.odd);
    let content_type = content_type(&boundary, rng);
    Generated { boundary, content_type, body, parts, expect_ok }
}

// ---------------------------------------------------------------------------------
// Mutation.

fn mutate(corpus: &[Vec<u8>], data: &mut Vec<u8>, boundary: &str, rng: &mut StdRng) -> String {
    if data.is_empty() {
        data.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        return "seed-boundary".into();
    }
    let delimiter = format!("--{boundary}");
    match rng.random_range(0..100) {
        0..=19 => {
            let n = rng.random_range(1..=8);
            for _ in 0..n {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            format!("flip{n}")
        }
        20..=34 => {
            let n = rng.random_range(1..=4);
            for _ in 0..n {
                let i = rng.random_range(0..data.len());
                data[i] = *[b'\r', b'\n', b'"', b';', b'-', b':', b'\\', 0, 0xFF, b' ']
                    .get(rng.random_range(0..11))
                    .unwrap_or(&rng.random());
            }
            format!("set{n}")
        }
        35..=49 => {
            let len = rng.random_range(0..data.len());
            data.truncate(len);
            format!("truncate@{len}")
        }
        50..=59 => {
            let other = &corpus[rng.random_range(0..corpus.len())];
            if other.is_empty() {
                return "splice-nothing".into();
            }
            let start = rng.random_range(0..other.len());
            let len = rng.random_range(1..=(other.len() - start).min(400));
            let at = rng.random_range(0..=data.len());
            data.splice(at..at, other[start..start + len].iter().copied());
            format!("splice[{start}..+{len}]@{at}")
        }
        60..=69 => {
            // Remove or double a CRLF.
            let crlfs: Vec<usize> = data.windows(2).enumerate().filter(|(_, w)| w == b"\r\n").map(|(i, _)| i).collect();
            if crlfs.is_empty() {
                return "no-crlf".into();
            }
            let at = crlfs[rng.random_range(0..crlfs.len())];
            if rng.random_bool(0.5) {
                data.drain(at..at + 2);
                format!("drop-crlf@{at}")
            } else {
                data.splice(at..at, *b"\r\n");
                format!("double-crlf@{at}")
            }
        }
        70..=79 => {
            // A delimiter where none belongs, or a delimiter broken.
            let at = rng.random_range(0..=data.len());
            let variants =
                [format!("\r\n{delimiter}\r\n"), format!("\r\n{delimiter}--"), delimiter.clone(), "\r\n--".into()];
            let v = &variants[rng.random_range(0..variants.len())];
            data.splice(at..at, v.bytes());
            format!("insert-delimiter@{at}")
        }
        80..=87 => {
            let hits: Vec<usize> = data
                .windows(delimiter.len())
                .enumerate()
                .filter(|(_, w)| *w == delimiter.as_bytes())
                .map(|(i, _)| i)
                .collect();
            if hits.is_empty() {
                return "no-delimiter".into();
            }
            let at = hits[rng.random_range(0..hits.len())];
            match rng.random_range(0..3) {
                0 => {
                    data.drain(at..at + delimiter.len());
                    format!("drop-delimiter@{at}")
                }
                1 => {
                    // Drop the closing "--" or add one.
                    let end = at + delimiter.len();
                    if data.get(end..end + 2) == Some(b"--") {
                        data.drain(end..end + 2);
                    } else {
                        data.splice(end..end, *b"--");
                    }
                    format!("toggle-close@{at}")
                }
                _ => {
                    // Duplicate the part that starts here (a repeated field).
                    let next = hits.iter().find(|&&h| h > at).copied().unwrap_or(data.len());
                    let part = data[at..next].to_vec();
                    data.splice(next..next, part);
                    format!("dup-part@{at}")
                }
            }
        }
        _ => {
            // A huge or empty header line.
            let at = data.windows(2).position(|w| w == b"\r\n").map_or(0, |p| p + 2);
            let header = if rng.random_bool(0.5) {
                format!("X-Long: {}\r\n", "a".repeat(rng.random_range(100..20_000)))
            } else {
                ":\r\n".to_string()
            };
            data.splice(at..at, header.bytes());
            format!("header@{at}")
        }
    }
}

// ---------------------------------------------------------------------------------
// Checks.

fn assert_4xx(result: &Result<impl Sized, ApiError>, what: &str, context: &dyn Fn() -> String) {
    if let Err(e) = result
        && !e.status.is_client_error()
    {
        panic!("{what} answered {} {} ({}): not a 4xx\n  {}", e.status, e.code, e.message, context());
    }
}

/// Runs one body through the extractor and every accessor; returns the form's result
/// (before the accessors) as `Ok(())` or the status.
fn run_one(
    h: &Harness,
    content_type: Option<&str>,
    body: &[u8],
    too_large: bool,
    expected: Option<&[Part]>,
    context: &dyn Fn() -> String,
) -> Result<(), StatusCode> {
    let mut request = Request::builder().method("POST").uri("/face/search");
    if let Some(ct) = content_type {
        request = request.header(CONTENT_TYPE, ct);
    }
    let mut request = request.body(Body::from(body.to_vec())).expect("request");
    if too_large {
        request.extensions_mut().insert(BodyTooLarge(MAX_IMAGE_BYTES + 256 * 1024));
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let result = h.runtime.block_on(Form::from_request(request, &h.state));
        assert_4xx(&result, "Form::from_request", context);
        let mut form = match result {
            Ok(form) => form,
            Err(e) => return Err(e.status),
        };
        if let Some(parts) = expected {
            for part in parts {
                match &part.content {
                    Content::Text(t) => {
                        let got = form.text(&part.name);
                        assert_eq!(got.as_deref(), Some(t.as_str()), "text {:?}\n  {}", part.name, context());
                    }
                    Content::File { file_name, bytes } => {
                        // A file with a name (or under a file field) comes back as a file.
                        let got = form.file(&part.name);
                        match got {
                            Ok(upload) => {
                                assert_eq!(&upload.bytes, bytes, "file {:?}\n  {}", part.name, context());
                                assert_eq!(&upload.file_name, file_name, "file name {:?}\n  {}", part.name, context());
                            }
                            Err(e) => assert!(
                                bytes.is_empty() && e.code == "INVALID_IMAGE",
                                "file {:?}: {} {}\n  {}",
                                part.name,
                                e.code,
                                e.message,
                                context()
                            ),
                        }
                    }
                }
            }
            return Ok(());
        }
        assert_4xx(&form.file("image"), "form.file(image)", context);
        assert_4xx(&form.file("source_image"), "form.file(source_image)", context);
        let _ = form.text("index_id");
        assert_4xx(&form.number("threshold", 0.5, 0.0..=1.0), "form.number(threshold)", context);
        assert_4xx(&form.number("min_quality", 0.0, 0.0..=1.0), "form.number(min_quality)", context);
        assert_4xx(&form.integer("max_results", 10, 1..=100), "form.integer(max_results)", context);
        assert_4xx(&form.integer("page", 0, 0..=usize::MAX), "form.integer(page)", context);
        let _ = form.text("metadata");
        Ok(())
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let path = std::env::temp_dir().join(format!("facesearch-fuzz-form-{}.bin", std::process::id()));
            let saved = std::fs::write(&path, body)
                .map_or_else(|e| format!("(not saved: {e})"), |()| path.display().to_string());
            panic!(
                "the form extractor panicked or broke its contract: {msg}\n  {}\n  Content-Type: {content_type:?}, body {} bytes saved to {saved}",
                context(),
                body.len()
            );
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn form_survives_mutated_multipart_bodies() {
    let seed = env_u64("FACESEARCH_FUZZ_SEED", 0x00FA_CE5E_A4C8);
    let iterations = env_u64("FACESEARCH_FUZZ_ITERS", 5000);
    let started = Instant::now();
    let h = harness();
    let mut rng = StdRng::seed_from_u64(seed);

    if let Ok(dir) = std::env::var("FACESEARCH_FUZZ_SEEDS_OUT") {
        // Seeds for the cargo-fuzz target, whose boundary is X.
        std::fs::create_dir_all(&dir).expect("seed output dir");
        let mut seed_rng = StdRng::seed_from_u64(seed ^ 1);
        for i in 0..64 {
            let g = generate(&mut seed_rng, Some("X"));
            std::fs::write(PathBuf::from(&dir).join(format!("form-{i:02}")), &g.body).expect("write seed");
        }
    }

    // A pool of generated bodies to splice from.
    let pool: Vec<Vec<u8>> = (0..32).map(|_| generate(&mut rng, None).body).collect();
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut plain_ok = 0;
    for iteration in 0..iterations {
        let g = generate(&mut rng, None);
        let context_base = |steps: &str| {
            format!(
                "iteration {iteration} of seed FACESEARCH_FUZZ_SEED={seed} (FACESEARCH_FUZZ_ITERS={iterations}), boundary {:?}: {steps}",
                g.boundary
            )
        };
        // One in five bodies goes in as generated: a plain one must parse and round-trip.
        if rng.random_bool(0.2) {
            let context = || context_base("unmutated");
            let expected = g.expect_ok.then_some(g.parts.as_slice());
            let result = run_one(&h, Some(&g.content_type), &g.body, false, expected, &context);
            if g.expect_ok {
                assert_eq!(result, Ok(()), "a plain multipart body was refused\n  {}", context());
                plain_ok += 1;
            }
            *statuses.entry(format!("{result:?}")).or_default() += 1;
            continue;
        }
        let mut body = g.body.clone();
        let steps: Vec<String> =
            (0..rng.random_range(1..=4)).map(|_| mutate(&pool, &mut body, &g.boundary, &mut rng)).collect();
        // The request line itself, now and then: no header, another type, another boundary.
        let content_type = match rng.random_range(0..40) {
            0 => None,
            1 => Some("application/json".to_string()),
            2 => Some("multipart/form-data".to_string()),
            3 => Some("multipart/form-data; boundary=".to_string()),
            4 => Some("multipart/form-data; boundary=Y".to_string()),
            5 => Some(format!("multipart/mixed; boundary=\"{}\"", g.boundary)),
            6 => Some(format!("multipart/form-data; boundary=\"{}", g.boundary)),
            _ => Some(g.content_type.clone()),
        };
        let too_large = rng.random_bool(0.02);
        let steps = steps.join(" + ");
        let context = || context_base(&format!("{steps}; Content-Type {content_type:?}; too_large {too_large}"));
        let result = run_one(&h, content_type.as_deref(), &body, too_large, None, &context);
        *statuses.entry(format!("{result:?}")).or_default() += 1;
    }
    eprintln!(
        "fuzz_form: {iterations} iterations in {:.1?}, {plain_ok} plain bodies round-tripped: {statuses:?}",
        started.elapsed()
    );
    assert!(plain_ok > 0, "no plain body was generated");
    assert!(statuses.keys().any(|k| k.starts_with("Ok")), "nothing parsed");
}

/// Each limit of the extractor gives its 4xx, never a 5xx.
#[test]
fn each_limit_is_a_client_error() {
    let h = harness();
    let context = || "limit case".to_string();
    let part = |name: &str, file: Option<&str>, value: &[u8]| {
        let mut p = format!("--X\r\nContent-Disposition: form-data; name=\"{name}\"").into_bytes();
        if let Some(f) = file {
            p.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        p.extend_from_slice(b"\r\n\r\n");
        p.extend_from_slice(value);
        p.extend_from_slice(b"\r\n");
        p
    };
    let ct = Some("multipart/form-data; boundary=X");
    let finish = |mut b: Vec<u8>| {
        b.extend_from_slice(b"--X--\r\n");
        b
    };
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "oversize image",
            finish(part("image", Some("a.jpg"), &vec![0; MAX_IMAGE_BYTES + 1])),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("image at the limit", finish(part("image", None, &vec![0; MAX_IMAGE_BYTES])), StatusCode::OK),
        ("oversize text", finish(part("index_id", None, &vec![b'a'; MAX_TEXT_FIELD + 1])), StatusCode::BAD_REQUEST),
        ("non-UTF-8 text", finish(part("index_id", None, b"\xFF\xFE")), StatusCode::BAD_REQUEST),
        (
            "duplicate field",
            finish([part("page", None, b"1"), part("page", None, b"2")].concat()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "too many parts",
            finish((0..=MAX_PARTS).flat_map(|i| part(&format!("f{i}"), None, b"v")).collect()),
            StatusCode::BAD_REQUEST,
        ),
        ("no closing delimiter", part("page", None, b"1"), StatusCode::BAD_REQUEST),
        ("empty body", Vec::new(), StatusCode::BAD_REQUEST),
    ];
    for (what, body, expected) in cases {
        let result = run_one(&h, ct, &body, false, None, &context);
        let status = result.err().unwrap_or(StatusCode::OK);
        assert_eq!(status, expected, "{what}");
    }
    assert_eq!(run_one(&h, None, b"", false, None, &context), Err(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    assert_eq!(run_one(&h, ct, b"", true, None, &context), Err(StatusCode::PAYLOAD_TOO_LARGE));
}
