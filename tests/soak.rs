//! A bounded load test against one server on 127.0.0.1: 8 concurrent clients mix
//! searches, enrolments and downloads for a fixed number of requests. No answer may be
//! a 5xx or a transport error, every answer is the expected success, and the server's
//! memory stays flat (resident set size before and after, models already warm).
//! Latency percentiles and throughput are printed, never asserted.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ADMIN_PASSWORD, ADMIN_USER, Server, lfw_people, lfw_photos, with_form};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

const SEED: u64 = 0x50A4_2026;
const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: usize = 40;
const WARM_UP: usize = 20;
const SEED_RECORDS: usize = 20;
/// Allowed growth of the resident set over the run. The ONNX sessions and the arenas
/// are warm before the first measurement; 80 new records add a few MB at most.
const RSS_GROWTH_LIMIT_KIB: u64 = 150 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Search,
    Enrol,
    Download,
}

struct Enrolled {
    photo: PathBuf,
    bytes: Arc<Vec<u8>>,
    image_id: String,
}

struct Sample {
    kind: Kind,
    what: String,
    /// `Err`: a transport error.
    status: Result<u16, String>,
    body: String,
    latency: Duration,
}

fn part(e: &Enrolled) -> Part {
    let name = e.photo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "photo.jpg".into());
    Part::bytes(e.bytes.as_ref().clone()).file_name(name)
}

fn one_request(
    http: &reqwest::blocking::Client,
    base: &str,
    index_id: &str,
    gallery: &[Enrolled],
    rng: &mut StdRng,
    tag: &str,
) -> Sample {
    let roll = rng.random_range(0..4u32);
    let e = &gallery[rng.random_range(0..gallery.len())];
    let (kind, what, req) = match roll {
        0 | 1 => {
            let form = Form::new().part("source_image", part(e)).text("target_index_ids", index_id.to_string());
            let req = http.post(format!("{base}/face/search?perform_liveness_check=false"));
            (Kind::Search, format!("search {}", e.photo.display()), with_form(req, form))
        }
        2 => {
            let reference = format!("soak-{tag}");
            let form = Form::new()
                .part("image", part(e))
                .text("reference", reference.clone())
                .text("name", format!("Soak {tag}"));
            let req = http.post(format!("{base}/face/index/{index_id}/records"));
            (Kind::Enrol, format!("enrol {reference}"), with_form(req, form))
        }
        _ => {
            let req = http.get(format!("{base}/media/file/download/{}", e.image_id));
            (Kind::Download, format!("download {}", e.image_id), req)
        }
    };
    let t0 = Instant::now();
    let result = req.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)).send().and_then(|r| {
        let status = r.status().as_u16();
        r.text().map(|t| (status, t))
    });
    let latency = t0.elapsed();
    match result {
        Ok((status, body)) => Sample { kind, what, status: Ok(status), body, latency },
        Err(e) => Sample { kind, what, status: Err(format!("{e:?}")), body: String::new(), latency },
    }
}

fn expected_status(kind: Kind) -> u16 {
    match kind {
        Kind::Search | Kind::Download => 200,
        Kind::Enrol => 201,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `total` requests from `CLIENTS` concurrent clients (each its own connection pool).
fn run_clients(
    base: &str,
    index_id: &str,
    gallery: &Arc<Vec<Enrolled>>,
    rng: &mut StdRng,
    total: usize,
    phase: &str,
) -> Vec<Sample> {
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let count = total / CLIENTS + usize::from(c < total % CLIENTS);
            let (base, index_id, gallery, seed) =
                (base.to_string(), index_id.to_string(), gallery.clone(), rng.random());
            let phase = phase.to_string();
            std::thread::Builder::new()
                .name(format!("soak-{phase}-{c}"))
                .spawn(move || {
                    let http =
                        reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
                    let mut rng = StdRng::seed_from_u64(seed);
                    (0..count)
                        .map(|i| one_request(&http, &base, &index_id, &gallery, &mut rng, &format!("{phase}-{c}-{i}")))
                        .collect::<Vec<_>>()
                })
                .expect("spawning a client")
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().expect("a client thread panicked")).collect()
}

#[test]
fn bounded_soak_mixed_load_has_no_5xx_and_flat_memory() {
    eprintln!("soak: seed {SEED:#x}, {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests");
    let s = Server::start();
    let index_id = s.create_index_id("soak");

    // The gallery: the first photo of LFW people, skipping photos refused with 422.
    let people = lfw_people();
    let mut gallery = Vec::new();
    for name in people.iter().step_by(people.len() / (SEED_RECORDS * 2)).take(SEED_RECORDS * 2) {
        if gallery.len() == SEED_RECORDS {
            break;
        }
        let photo = lfw_photos(name)[0].clone();
        let r = s.enrol(&index_id, &photo, &[("name", name), ("reference", &format!("seed-{name}"))]);
        if r.status == 422 {
            eprintln!("soak: {} refused: {}", photo.display(), r.text);
            continue;
        }
        let rec = r.ok(201);
        gallery.push(Enrolled {
            bytes: Arc::new(common::read(&photo)),
            photo,
            image_id: rec["image_ids"][0].as_str().expect("image id").to_string(),
        });
    }
    assert_eq!(gallery.len(), SEED_RECORDS, "not enough usable LFW photos for the gallery");
    let gallery = Arc::new(gallery);

    // Warm-up with the same concurrency as the run, so that every inference session
    // (one per worker) and the allocator arenas of the busy threads exist before the
    // first measurement.
    let rss_seeded = s.rss_kib();
    let mut rng = StdRng::seed_from_u64(SEED);
    let warm = run_clients(&s.base, &index_id, &gallery, &mut rng, WARM_UP, "warm");
    for x in &warm {
        let status = x.status.clone().unwrap_or_else(|e| panic!("warm-up {}: {e}", x.what));
        assert_eq!(status, expected_status(x.kind), "warm-up {}: {}", x.what, x.body);
    }
    let rss_start = s.rss_kib();

    let started = Instant::now();
    let samples = run_clients(&s.base, &index_id, &gallery, &mut rng, CLIENTS * REQUESTS_PER_CLIENT, "run");
    let wall = started.elapsed();
    let rss_end = s.rss_kib();

    // Report first, assert after.
    let mut by_kind: BTreeMap<Kind, Vec<Duration>> = BTreeMap::new();
    let mut statuses: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    for x in &samples {
        by_kind.entry(x.kind).or_default().push(x.latency);
        let st = match &x.status {
            Ok(c) => c.to_string(),
            Err(_) => "transport error".into(),
        };
        *statuses.entry((x.kind, st)).or_default() += 1;
    }
    eprintln!(
        "soak: {} requests in {wall:.2?} = {:.1} req/s; statuses {statuses:?}",
        samples.len(),
        samples.len() as f64 / wall.as_secs_f64()
    );
    let mut all: Vec<Duration> = samples.iter().map(|x| x.latency).collect();
    all.sort();
    for (kind, mut lat) in by_kind {
        lat.sort();
        eprintln!(
            "soak: {kind:?}: n={} p50={:.0?} p95={:.0?} p99={:.0?} max={:.0?}",
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
            lat[lat.len() - 1]
        );
    }
    eprintln!(
        "soak: all: p50={:.0?} p95={:.0?} p99={:.0?} max={:.0?}",
        percentile(&all, 0.50),
        percentile(&all, 0.95),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
    eprintln!(
        "soak: VmRSS after seeding {} MiB, after warm-up (start) {} MiB, end {} MiB, growth {} KiB",
        rss_seeded / 1024,
        rss_start / 1024,
        rss_end / 1024,
        rss_end as i64 - rss_start as i64
    );

    let transport: Vec<String> =
        samples.iter().filter_map(|x| x.status.as_ref().err().map(|e| format!("{}: {e}", x.what))).take(10).collect();
    let five_xx: Vec<String> = samples
        .iter()
        .filter(|x| x.status.as_ref().is_ok_and(|c| *c >= 500))
        .map(|x| format!("{} -> {} {} after {:.0?}", x.what, x.status.as_ref().unwrap(), x.body, x.latency))
        .collect();
    assert!(transport.is_empty(), "transport errors under load: {transport:#?}");
    assert!(five_xx.is_empty(), "{} answers were 5xx under load: {five_xx:#?}", five_xx.len());
    for x in &samples {
        let status = *x.status.as_ref().unwrap();
        assert_eq!(status, expected_status(x.kind), "{}: unexpected answer {}", x.what, x.body);
        if x.kind == Kind::Search {
            let body: Value = serde_json::from_str(&x.body).expect("search answer is JSON");
            let matches = body["response"].as_array().expect("search response is an array");
            assert!(!matches.is_empty(), "{}: an enrolled photo found nothing", x.what);
        }
    }
    let growth = rss_end.saturating_sub(rss_start);
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "the server's resident set grew by {} MiB over {} requests (from {} MiB to {} MiB)",
        growth / 1024,
        samples.len(),
        rss_start / 1024,
        rss_end / 1024
    );
}
