//! `facesearch bench`: per-stage time of the face pipeline on real photos, and
//! whole-pipeline throughput with 1 and N concurrent workers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use facesearch_eval::table;
use facesearch_face::{FaceChoice, FacePipeline, RuntimeOptions, StageClock, StageTime};

use super::PipelineArgs;
use super::form::FormBody;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Per-stage time of the face pipeline, and whole-pipeline throughput.
    Pipeline(PipelineBench),
    /// Latency of `POST /face/search` against a running server.
    Search(HttpBench),
    /// Throughput of enrolment (`POST /face/index/{id}/records`) against a running server.
    Enrol(HttpBench),
    /// Vector search latency, recall, memory and cold start at growing gallery sizes.
    Index(super::bench_index::IndexBench),
    /// Fill a (stopped) server's data directory with synthetic faces for benchmarks.
    Seed(super::bench_index::SeedBench),
    /// Vector search inside PostgreSQL (pgvector) at growing gallery sizes: latency and
    /// recall@k against an exact scan of the same vectors.
    Pgvector(super::bench_index::PgBench),
    /// FPIR measured on stranger searches of real photos against a gallery of real and
    /// synthetic faces, beside the FPIR predicted from the calibration.
    Fpir(super::bench_fpir::FpirBench),
}

#[derive(Args)]
struct HttpBench {
    /// Server root.
    #[arg(long, env = "FACESEARCH_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "FACESEARCH_USER", default_value = "admin")]
    user: String,
    #[arg(long, env = "FACESEARCH_PASSWORD", hide_env_values = true)]
    password: String,
    /// Index to search or enrol into.
    #[arg(long)]
    index: String,
    /// Photos to send, round-robin.
    #[arg(long = "image", required = true)]
    images: Vec<PathBuf>,
    /// Requests to send in all.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Search with the liveness check on.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    liveness: bool,
}

#[derive(Args)]
struct PipelineBench {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Photos to time (default: a 250×250 LFW photo and a multi-megapixel phone photo from ../shared/eval).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// Repetitions per photo and stage.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Worker counts for the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Also run bench/reference_pipeline.py (Python: onnxruntime + NumPy + OpenCV, same
    /// models and steps) on the same photos in this run, and print the ratios.
    #[arg(long)]
    python_reference: bool,
}

#[derive(serde::Deserialize)]
struct ReferenceReport {
    photos: Vec<ReferencePhoto>,
    enrol_images_per_s: f64,
}

#[derive(serde::Deserialize)]
struct ReferencePhoto {
    detect_embed_ms: f64,
    liveness_ms: Option<f64>,
}

fn python_reference(images: &[PathBuf], iterations: usize) -> anyhow::Result<ReferenceReport> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/reference_pipeline.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg("--iterations")
        .arg(iterations.to_string())
        .args(images)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(out.status.success(), "the Python reference failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn default_images() -> Vec<PathBuf> {
    let eval = PathBuf::from("../shared/eval");
    vec![eval.join("lfw-deepfunneled/images/AJ_Lamas/AJ_Lamas_0001.jpg"), eval.join("deepface/img1.jpg")]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The columns of the per-stage profile ([`profile_rows`]).
const PROFILE_HEADERS: [&str; 6] = ["photo", "stage", "total", "network", "other", "network share"];

/// The profile of one photo: for each stage (and all of them together), the median
/// wall time, the median time in the networks and the median of the rest (resizing,
/// tensor fill, output decoding, NMS, crops, cues), each over the runs. Medians of
/// parts need not add up to the median of the whole; the share is of the medians.
fn profile_rows(photo: &str, stages: &[(&str, Vec<StageTime>)]) -> Vec<Vec<String>> {
    let runs = stages.iter().map(|(_, times)| times.len()).min().unwrap_or(0);
    let all: Vec<StageTime> = (0..runs)
        .map(|i| {
            stages.iter().fold(StageTime::default(), |sum, (_, times)| StageTime {
                total: sum.total + times[i].total,
                network: sum.network + times[i].network,
            })
        })
        .collect();
    stages
        .iter()
        .map(|(name, times)| (*name, times.as_slice()))
        .chain(std::iter::once(("all", all.as_slice())))
        .map(|(name, times)| {
            let total = median(times.iter().map(|t| t.total).collect());
            let network = median(times.iter().map(|t| t.network).collect());
            let other = median(times.iter().map(StageTime::other).collect());
            let share = if total.is_zero() { 0.0 } else { network.as_secs_f64() / total.as_secs_f64() * 100.0 };
            vec![photo.to_string(), name.to_string(), ms(total), ms(network), ms(other), format!("{share:.0} %")]
        })
        .collect()
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Pipeline(p) => pipeline(p),
        BenchWhat::Search(h) => http(h, false),
        BenchWhat::Enrol(h) => http(h, true),
        BenchWhat::Index(i) => super::bench_index::run(i),
        BenchWhat::Seed(s) => super::bench_index::seed(s),
        BenchWhat::Pgvector(p) => super::bench_index::pgvector(p),
        BenchWhat::Fpir(f) => super::bench_fpir::run(f),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// Sends `requests` searches or enrolments with `concurrency` clients; prints latency
/// percentiles, throughput and the status codes seen.
fn http(args: HttpBench, enrol: bool) -> anyhow::Result<()> {
    let photos: Vec<Vec<u8>> = args
        .images
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<Result<_, _>>()?;
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let url = if enrol {
        format!("{}/face/index/{}/records", args.url.trim_end_matches('/'), args.index)
    } else {
        format!("{}/face/search?perform_liveness_check={}", args.url.trim_end_matches('/'), args.liveness)
    };
    // Each request's body is encoded before its clock starts (so not through
    // `WithForm::form_body`, which encodes as it sends) and sent as one buffer.
    let start = Instant::now();
    let results: Vec<(Duration, u16)> = super::parallel_map(args.requests, args.concurrency, |i| {
        let photo = photos[i % photos.len()].clone();
        let form = if enrol {
            FormBody::new().file("image", "probe.jpg", photo).text("name", format!("bench {i}"))
        } else {
            FormBody::new().file("source_image", "probe.jpg", photo).text("target_index_ids", args.index.clone())
        };
        let (content_type, body) = form.encode();
        let t = Instant::now();
        let status = client
            .post(&url)
            .basic_auth(&args.user, Some(&args.password))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        (t.elapsed(), status)
    });
    let wall = start.elapsed();
    let mut latencies: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    latencies.sort();
    let mut statuses = std::collections::BTreeMap::new();
    for (_, s) in &results {
        *statuses.entry(*s).or_insert(0usize) += 1;
    }
    println!(
        "{} {} requests, {} concurrent: p50 {} p95 {} p99 {} max {}; {:.2} requests/s; statuses {:?}",
        if enrol { "enrol" } else { "search" },
        results.len(),
        args.concurrency,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.95)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
        results.len() as f64 / wall.as_secs_f64(),
        statuses
    );
    Ok(())
}

fn pipeline(args: PipelineBench) -> anyhow::Result<()> {
    let images = if args.images.is_empty() { default_images() } else { args.images.clone() };
    let photos: Vec<(PathBuf, Vec<u8>)> = images
        .iter()
        .map(|p| std::fs::read(p).map(|b| (p.clone(), b)).with_context(|| format!("reading {}", p.display())))
        .collect::<Result<_, _>>()?;
    let max_workers = args.workers.iter().copied().max().unwrap_or(1);
    // Stage timings with all cores on one inference; throughput with one thread per worker.
    let pipeline = args.pipeline.load()?;
    let mut rows = Vec::new();
    let mut profile = Vec::new();
    let mut identify = Vec::new(); // (decode+detect+align+embed, liveness) per photo
    for (path, bytes) in &photos {
        let n = args.iterations.max(1);
        let (mut dec, mut det, mut emb, mut live) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut size = (0, 0);
        for _ in 0..n {
            let t = StageClock::start();
            let image = pipeline.decode(bytes)?;
            dec.push(t.stop());
            size = (image.rgb.width(), image.rgb.height());
            let t = StageClock::start();
            let faces = pipeline.detect(&image.rgb)?;
            det.push(t.stop());
            let face = faces.first().with_context(|| format!("no face in {}", path.display()))?;
            let t = StageClock::start();
            pipeline.embed(&image.rgb, face)?;
            emb.push(t.stop());
            let t = StageClock::start();
            pipeline.liveness(&image.rgb, face)?;
            live.push(t.stop());
        }
        let totals = |v: &[StageTime]| median(v.iter().map(|t| t.total).collect());
        let (dec_ms, det_ms, emb_ms, live_ms) = (totals(&dec), totals(&det), totals(&emb), totals(&live));
        identify.push((dec_ms + det_ms + emb_ms, live_ms));
        let photo = format!("{} ({}×{})", path.file_name().unwrap_or_default().to_string_lossy(), size.0, size.1);
        rows.push(vec![
            photo.clone(),
            ms(dec_ms),
            ms(det_ms),
            ms(emb_ms),
            ms(live_ms),
            ms(dec_ms + det_ms + emb_ms + live_ms),
        ]);
        profile.extend(profile_rows(
            &photo,
            &[("decode", dec), ("detect", det), ("align+embed", emb), ("liveness", live)],
        ));
    }
    println!(
        "pack {}, median of {} runs, intra-op threads {}",
        pipeline.pack(),
        args.iterations,
        pipeline.config().runtime.intra_threads
    );
    println!("{}", table::render(&["photo", "decode", "detect", "align+embed", "liveness", "total"], &rows));
    println!(
        "\nwhere the time goes: network = model runs (InferenceModel::run), other = everything else \
         (resize, letterbox, tensor fill, output decoding, NMS, crops, cues); medians of each column"
    );
    println!("{}", table::render(&PROFILE_HEADERS, &profile));

    // The same photos one at a time through `probe`, as the server analyses a search
    // with liveness on: the stages share the cores as `CoreShare` decides (by default
    // the liveness check beside the embedding, so their times overlap: the probe's own
    // wall time is printed beside the stages' sum).
    let mut alone = Vec::new();
    let mut walls = Vec::new();
    let mut shares = std::collections::BTreeSet::new();
    for (path, bytes) in &photos {
        let mut stages: [(&str, Vec<StageTime>); 4] =
            [("decode", vec![]), ("detect", vec![]), ("align+embed", vec![]), ("liveness", vec![])];
        let mut wall = Vec::new();
        for _ in 0..args.iterations.max(1) {
            let start = Instant::now();
            let probe = pipeline.probe(bytes, FaceChoice::Largest, true)?;
            wall.push(start.elapsed());
            shares.insert(format!("{:?}", probe.timings.core_share));
            for ((_, times), (_, time)) in stages.iter_mut().zip(probe.timings.stages()) {
                times.push(time);
            }
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        alone.extend(profile_rows(&format!("{name} (probe)"), &stages));
        walls.push(format!("{name} {}", ms(median(wall))));
    }
    println!(
        "\none photo at a time through the whole pipeline as the server runs a search (core share: {}); medians; \
         \"all\" adds the stages up, the probe's wall time: {}",
        shares.into_iter().collect::<Vec<_>>().join(", "),
        walls.join(", ")
    );
    println!("{}", table::render(&PROFILE_HEADERS, &alone));
    drop(pipeline);

    let mut config = args.pipeline.config();
    config.runtime = RuntimeOptions { intra_threads: 1, sessions_per_model: max_workers, ..config.runtime };
    let cache = facesearch_models::ModelCache::resolve(args.pipeline.models_dir.clone())?;
    let pipeline = FacePipeline::load(args.pipeline.pack, &cache, config)?;
    let mut rows = Vec::new();
    for (path, bytes) in &photos {
        for &workers in &args.workers {
            let total = args.iterations.max(workers) * 2;
            let start = Instant::now();
            super::parallel_map(total, workers, |_| {
                let _ = pipeline.probe(bytes, FaceChoice::Largest, true);
            });
            let per_s = total as f64 / start.elapsed().as_secs_f64();
            rows.push(vec![
                path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                workers.to_string(),
                format!("{per_s:.1}"),
            ]);
        }
    }
    println!("\nwhole pipeline (decode, detect, embed, liveness), one single-threaded inference per worker");
    println!("{}", table::render(&["photo", "workers", "images/s"], &rows));

    if args.python_reference {
        // Enrolment-like: every photo in turn, no liveness, all workers.
        let rounds = (args.iterations / 4).max(1) * photos.len();
        let start = Instant::now();
        super::parallel_map(rounds * max_workers, max_workers, |i| {
            let _ = pipeline.probe(&photos[i % photos.len()].1, FaceChoice::Largest, false);
        });
        let ours_enrol = (rounds * max_workers) as f64 / start.elapsed().as_secs_f64();
        let reference = python_reference(&images, args.iterations)?;
        let mut rows = Vec::new();
        for ((path, _), (ours, reference)) in photos.iter().zip(identify.iter().zip(&reference.photos)) {
            let ours_ms = ours.0.as_secs_f64() * 1000.0;
            rows.push(vec![
                path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                format!("{ours_ms:.1} ms"),
                format!("{:.1} ms", reference.detect_embed_ms),
                format!("{:.2}×", ours_ms / reference.detect_embed_ms),
                ms(ours.1),
                reference.liveness_ms.map_or("-".into(), |l| format!("{l:.1} ms")),
            ]);
        }
        println!(
            "\nsame photos through bench/reference_pipeline.py in this run (Python, default onnxruntime threading)"
        );
        println!(
            "{}",
            table::render(
                &[
                    "photo",
                    "ours: decode→embed",
                    "Python: decode→embed",
                    "ours / Python",
                    "ours: liveness",
                    "Python: liveness"
                ],
                &rows
            )
        );
        println!(
            "enrolment-like throughput (decode→embed, every photo in turn): ours {ours_enrol:.1} images/s with {max_workers} workers, Python {:.1} images/s (one process): {:.2}×",
            reference.enrol_images_per_s,
            ours_enrol / reference.enrol_images_per_s
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(total_ms: u64, network_ms: u64) -> StageTime {
        StageTime { total: Duration::from_millis(total_ms), network: Duration::from_millis(network_ms) }
    }

    #[test]
    fn the_profile_splits_each_stage_and_adds_them_up() {
        let stages = [
            ("decode", vec![time(9, 0), time(11, 0), time(10, 0)]),
            ("detect", vec![time(25, 8), time(26, 8), time(24, 9)]),
        ];
        let rows = profile_rows("img1.jpg (1382×1868)", &stages);
        let cells = |stage: &str| -> Vec<String> {
            rows.iter().find(|r| r[1] == stage).unwrap_or_else(|| panic!("no {stage} row in {rows:?}"))[2..].to_vec()
        };
        assert!(rows.iter().all(|r| r.len() == PROFILE_HEADERS.len() && r[0] == "img1.jpg (1382×1868)"));
        assert_eq!(cells("decode"), ["10.0 ms", "0.0 ms", "10.0 ms", "0 %"]);
        // Other is the median of each run's rest (17, 18, 15), not a difference of medians.
        assert_eq!(cells("detect"), ["25.0 ms", "8.0 ms", "17.0 ms", "32 %"]);
        // All stages, run by run: (34, 8), (37, 8), (34, 9).
        assert_eq!(cells("all"), ["34.0 ms", "8.0 ms", "26.0 ms", "24 %"]);
        assert_eq!(rows.last().map(|r| r[1].as_str()), Some("all"));

        let text = table::render(&PROFILE_HEADERS, &rows);
        for column in PROFILE_HEADERS {
            assert!(text.contains(column), "{column} missing from\n{text}");
        }
    }

    #[test]
    fn a_stage_that_took_no_time_has_no_share() {
        let rows = profile_rows("p", &[("decode", vec![time(0, 0)])]);
        assert_eq!(rows[0][5], "0 %");
        assert!(profile_rows("p", &[("decode", Vec::new())]).iter().all(|r| r[2] == "0.0 ms"));
    }
}
