//! `facesearch bench index`: search latency, recall, memory and cold start of the
//! vector index at growing gallery sizes, and (with `--faiss`) faiss's exact
//! `IndexFlatIP` on the very same vectors in the same run.
//!
//! The gallery is real embeddings of ../shared/eval photos topped up with synthetic
//! ones drawn from a Gaussian fitted to the real embeddings (their mean and full
//! covariance, sampled through its Cholesky factor, then L2-normalised), so the
//! synthetic faces occupy the same region of the space, with the same correlations, as
//! real faces do. Queries are real embeddings of held-out photos (one per identity
//! with at least two photos), never in the gallery themselves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use facesearch_eval::table;
use facesearch_face::FaceChoice;
use facesearch_face::calibration::Calibration;
use facesearch_vectors::{Codec, Hit, Quantised, Quantization, VectorConfig, VectorIndex};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::PipelineArgs;
use super::threshold_recall::{Tally, Threshold};

#[derive(Args)]
pub struct IndexBench {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Manifest whose `face` photos give the real embeddings.
    #[arg(long, default_value = "../shared/eval/manifest.csv")]
    manifest: PathBuf,
    /// Where the real embeddings are cached between runs (computing them takes a minute).
    #[arg(long, default_value = "target/bench-index")]
    work_dir: PathBuf,
    /// Gallery sizes, ascending.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// Queries per size (held-out real photos).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Results per query (recall@k).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// HNSW ef values to try at search time (one table row each).
    #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
    ef_search: Vec<usize>,
    /// HNSW links per node.
    #[arg(long, default_value_t = VectorConfig::default().connectivity)]
    connectivity: usize,
    /// How the graph stores vectors: f32, f16 or i8.
    #[arg(long, default_value = "f16")]
    quantization: Quantization,
    /// Also time faiss IndexFlatIP on the same vectors (needs python3 with faiss-cpu and numpy).
    #[arg(long)]
    faiss: bool,
    /// Save and reload the index at each size, timing the load (cold start).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cold_start: bool,
    /// Exact scan only: build no HNSW graph (for sizes whose graph takes hours to build).
    #[arg(long)]
    exact_only: bool,
    /// Match scores whose threshold recall is reported (see `threshold_recall`).
    #[arg(long, value_delimiter = ',', default_value = "50,70")]
    scores: Vec<f64>,
    /// Also search the gallery split into this many indexes (e.g. `1,10,50`): one
    /// search over all of them against one search per index, merged (exact scans).
    #[arg(long, value_delimiter = ',')]
    split: Vec<usize>,
    /// Quantised exact scans to measure against the f32 scan at each size (see
    /// facesearch_vectors::Quantised): `i8`, `f16` (codes in memory, f32 re-rank from the
    /// index's f32 rows), `i8-file`, `f16-file` (codes in memory, f32 rows re-read from
    /// a file for the re-rank). Empty: none.
    #[arg(long, value_delimiter = ',', default_value = "i8,f16,i8-file")]
    scans: Vec<ScanKind>,
}

/// A quantised exact scan `bench index` measures.
#[derive(Clone, Copy)]
struct ScanKind {
    codec: Codec,
    /// The f32 rows re-read from a file for the re-rank, not held in memory.
    file: bool,
}

impl std::str::FromStr for ScanKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (codec, file) = match s.strip_suffix("-file") {
            Some(codec) => (codec, true),
            None => (s, false),
        };
        Ok(ScanKind { codec: codec.parse()?, file })
    }
}

impl ScanKind {
    fn name(self) -> String {
        format!("{}{}", self.codec.as_str(), if self.file { ", f32 rows in a file" } else { "" })
    }
}

/// `facesearch bench pgvector`: the same workload as `bench index`, searched inside
/// PostgreSQL by the store's own query (pgvector HNSW on half-precision vectors,
/// candidates re-ranked exactly), against an exact in-memory scan of the same vectors.
#[derive(Args)]
pub struct PgBench {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The database to fill (`--store postgres://…` or FACESEARCH_DATABASE_URL); a new
    /// index is created in it.
    #[command(flatten)]
    database: super::database::DatabaseArgs,
    /// Manifest whose `face` photos give the real embeddings.
    #[arg(long, default_value = "../shared/eval/manifest.csv")]
    manifest: PathBuf,
    /// Where the real embeddings are cached between runs.
    #[arg(long, default_value = "target/bench-index")]
    work_dir: PathBuf,
    /// Gallery sizes, ascending.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<usize>,
    /// Queries per size (held-out real photos).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Results per query (recall@k).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// pgvector `hnsw.ef_search` values to try (one table row each).
    #[arg(long, value_delimiter = ',', default_value = "100,200,400")]
    ef_search: Vec<u32>,
    /// Load each size with the HNSW graph dropped and build it afterwards (as a bulk
    /// import would), instead of enrolling into the live graph.
    #[arg(long)]
    bulk: bool,
    /// Match scores whose threshold recall is reported (see `threshold_recall`).
    #[arg(long, value_delimiter = ',', default_value = "50,70")]
    scores: Vec<f64>,
    /// After the last size, also search its faces split into this many indexes (e.g.
    /// `1,10,50`; each split beyond 1 enrols a copy of the faces into new indexes):
    /// one statement over all of them against one per index, merged.
    #[arg(long, value_delimiter = ',')]
    split: Vec<usize>,
    /// With `--split`: time exact searches only (with `--bulk`, no graph is rebuilt over
    /// the copies, which at 1M faces per split would take most of an hour here).
    #[arg(long)]
    split_exact_only: bool,
    /// With `--split`: queries timed per split (default: all of them).
    #[arg(long)]
    split_queries: Option<usize>,
}

/// Records per `enrol_batch` transaction in `bench pgvector`. Each insert updates the
/// index row's record count by trigger, and within one transaction those updates cost
/// more the more there were before, so a smaller batch loads faster.
const PG_BATCH: usize = 500;

/// `facesearch bench seed`: fills a data directory with synthetic enrolled faces
/// (offline, server stopped) so the server can be measured at gallery sizes no one
/// would enrol photo by photo for a benchmark.
#[derive(Args)]
pub struct SeedBench {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The server's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Seed a PostgreSQL store instead (see `serve --store`).
    #[command(flatten)]
    database: super::database::DatabaseArgs,
    /// Name of the index to create (or add to).
    #[arg(long, default_value = "bench")]
    index_name: String,
    /// Faces to add.
    #[arg(long)]
    faces: usize,
    /// Manifest whose `face` photos give the real embeddings the synthetic ones are fitted to.
    #[arg(long, default_value = "../shared/eval/manifest.csv")]
    manifest: PathBuf,
    /// Where the real embeddings are cached.
    #[arg(long, default_value = "target/bench-index")]
    work_dir: PathBuf,
}

pub(super) struct Real {
    pub(super) identity: String,
    pub(super) vector: Vec<f32>,
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// "p50 / p99" of sorted latencies.
fn latency(sorted: &[Duration]) -> String {
    format!("{} / {}", ms(percentile(sorted, 0.5)), ms(percentile(sorted, 0.99)))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// Real embeddings of every `face` photo of the manifest, cached in `work_dir`.
pub(super) fn real_embeddings(
    pipeline_args: &PipelineArgs,
    manifest: &Path,
    work_dir: &Path,
) -> anyhow::Result<Vec<Real>> {
    embeddings_of(pipeline_args, manifest, work_dir, "real", |r| r.kind == "face")
}

/// Real embeddings of the manifest's photos that `keep` selects, cached in `work_dir`
/// as `NAME-PACK.jsonl` (JSON lines of identity and vector).
pub(super) fn embeddings_of(
    pipeline_args: &PipelineArgs,
    manifest: &Path,
    work_dir: &Path,
    name: &str,
    keep: impl Fn(&facesearch_eval::manifest::ManifestRow) -> bool,
) -> anyhow::Result<Vec<Real>> {
    let cache = work_dir.join(format!("{name}-{}.jsonl", pipeline_args.pack.name()));
    if let Ok(text) = std::fs::read_to_string(&cache) {
        let rows: Result<Vec<(String, Vec<f32>)>, _> = text.lines().map(serde_json::from_str).collect();
        if let Ok(rows) = rows {
            return Ok(rows.into_iter().map(|(identity, vector)| Real { identity, vector }).collect());
        }
    }
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let root = manifest.parent().unwrap_or(Path::new("."));
    let rows: Vec<_> = facesearch_eval::manifest::parse_manifest(&text)?.into_iter().filter(|r| keep(r)).collect();
    eprintln!("embedding {} photos of {} (cached in {})", rows.len(), manifest.display(), cache.display());
    let pipeline = pipeline_args.load()?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let vectors = super::parallel_map(rows.len(), workers, |i| {
        let bytes = std::fs::read(root.join(&rows[i].path)).ok()?;
        pipeline.probe(&bytes, FaceChoice::Largest, false).ok().map(|p| p.embedding)
    });
    let real: Vec<Real> = rows
        .iter()
        .zip(vectors)
        .filter_map(|(r, v)| v.map(|vector| Real { identity: r.identity.clone(), vector }))
        .collect();
    std::fs::create_dir_all(work_dir)?;
    let lines: Vec<String> =
        real.iter().map(|r| serde_json::to_string(&(&r.identity, &r.vector))).collect::<Result<_, _>>()?;
    std::fs::write(&cache, lines.join("\n"))?;
    Ok(real)
}

/// Samples unit vectors from the Gaussian (mean, full covariance) of `real`.
pub(super) struct FittedGaussian {
    mean: Vec<f64>,
    chol: Vec<f64>, // lower-triangular, row-major dim × dim
    dim: usize,
}

impl FittedGaussian {
    pub(super) fn fit(real: &[&[f32]]) -> anyhow::Result<Self> {
        let dim = real.first().map_or(0, |v| v.len());
        let n = real.len() as f64;
        let mut mean = vec![0f64; dim];
        for v in real {
            for (m, x) in mean.iter_mut().zip(v.iter()) {
                *m += *x as f64 / n;
            }
        }
        let mut cov = vec![0f64; dim * dim];
        for v in real {
            for i in 0..dim {
                let di = v[i] as f64 - mean[i];
                for j in 0..=i {
                    cov[i * dim + j] += di * (v[j] as f64 - mean[j]) / (n - 1.0);
                }
            }
        }
        // Cholesky with a small ridge: fewer photos than dimensions (512-d) leave the
        // sample covariance singular.
        let ridge = (0..dim).map(|i| cov[i * dim + i]).sum::<f64>() / dim as f64 * 1e-3;
        let mut l = vec![0f64; dim * dim];
        for i in 0..dim {
            for j in 0..=i {
                let mut sum = cov[i * dim + j] + if i == j { ridge } else { 0.0 };
                for k in 0..j {
                    sum -= l[i * dim + k] * l[j * dim + k];
                }
                if i == j {
                    anyhow::ensure!(sum > 0.0, "covariance of the real embeddings is not positive definite");
                    l[i * dim + i] = sum.sqrt();
                } else {
                    l[i * dim + j] = sum / l[j * dim + j];
                }
            }
        }
        Ok(Self { mean, chol: l, dim })
    }

    pub(super) fn sample(&self, rng: &mut StdRng) -> Vec<f32> {
        let z: Vec<f64> = (0..self.dim)
            .map(|_| {
                // Box–Muller.
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect();
        let mut v: Vec<f64> = self.mean.clone();
        for (i, x) in v.iter_mut().enumerate() {
            *x += (0..=i).map(|k| self.chol[i * self.dim + k] * z[k]).sum::<f64>();
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| (x / norm) as f32).collect()
    }
}

/// Writes a little-endian f32 matrix in NumPy's .npy format (version 1.0).
fn write_npy(path: &Path, rows: usize, dim: usize, data: impl Iterator<Item = f32>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for x in data {
        w.write_all(&x.to_le_bytes())?;
    }
    w.flush()?;
    Ok(())
}

#[derive(serde::Deserialize)]
struct FaissResult {
    p50_ms: f64,
    p99_ms: f64,
    threads: usize,
}

fn run_faiss(dir: &Path, gallery: &[f32], dim: usize, queries: &[&[f32]], k: usize) -> anyhow::Result<FaissResult> {
    let g = dir.join("gallery.npy");
    let q = dir.join("queries.npy");
    write_npy(&g, gallery.len() / dim, dim, gallery.iter().copied())?;
    write_npy(&q, queries.len(), dim, queries.iter().flat_map(|v| v.iter().copied()))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/faiss_flat.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&g)
        .arg(&q)
        .arg(k.to_string())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(out.status.success(), "faiss run failed: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&g);
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Real queries held out of a gallery of real faces, and the Gaussian that tops the
/// gallery up with synthetic faces.
struct Workload<'a> {
    dim: usize,
    queries: Vec<&'a [f32]>,
    query_identity: Vec<&'a str>,
    /// Non-mated queries: photos of people with one photo, kept out of the gallery.
    strangers: Vec<&'a [f32]>,
    gallery_real: Vec<&'a Real>,
    gaussian: FittedGaussian,
}

impl<'a> Workload<'a> {
    /// Holds out the first photo of every identity with two or more as a (mated)
    /// query, and up to as many photos of people with only one as non-mated queries.
    fn new(real: &'a [Real], max_queries: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(real.len() > 10, "too few real embeddings ({})", real.len());
        let dim = real[0].vector.len();
        let mut seen = std::collections::HashMap::<&str, usize>::new();
        for r in real {
            *seen.entry(&r.identity).or_default() += 1;
        }
        let (mut queries, mut gallery_real, mut strangers) = (Vec::new(), Vec::new(), Vec::new());
        let mut query_identity: Vec<&str> = Vec::new();
        let mut held = std::collections::HashSet::new();
        for r in real {
            if seen[r.identity.as_str()] >= 2 && queries.len() < max_queries && held.insert(r.identity.as_str()) {
                queries.push(r.vector.as_slice());
                query_identity.push(&r.identity);
            } else if seen[r.identity.as_str()] == 1 && strangers.len() < max_queries {
                strangers.push(r.vector.as_slice());
            } else {
                gallery_real.push(r);
            }
        }
        let gaussian = FittedGaussian::fit(&gallery_real.iter().map(|r| r.vector.as_slice()).collect::<Vec<_>>())?;
        Ok(Workload { dim, queries, query_identity, strangers, gallery_real, gaussian })
    }

    /// Gallery face number `i`: the real ones first, then synthetic ones (identity, vector).
    fn face(&self, i: usize, rng: &mut StdRng) -> (String, Vec<f32>) {
        match self.gallery_real.get(i) {
            Some(r) => (r.identity.clone(), r.vector.clone()),
            None => (format!("synthetic-{i}"), self.gaussian.sample(rng)),
        }
    }
}

/// One graph setting's results: (ef, sorted latencies, recall@k, mated recall text).
type GraphRow = (usize, Vec<Duration>, f64, String);

/// An above-threshold result: (index, record).
type Key = (String, String);

/// The results of a search that are matches at threshold `t`.
fn passing(calibration: &Calibration, t: &Threshold, hits: &[Hit]) -> Vec<Key> {
    hits.iter()
        .filter(|h| t.passes(calibration, h.similarity))
        .map(|h| (h.collection.clone(), h.record_id.clone()))
        .collect()
}

/// The exact scan's above-threshold results, per threshold, per query set (mated,
/// non-mated), per query: what every approximate search is held to.
struct ThresholdTruth {
    thresholds: Vec<Threshold>,
    exact: Vec<[Vec<Vec<Key>>; 2]>,
}

impl ThresholdTruth {
    /// `search(query, min_similarity)` returns the exact hits of one query.
    fn new(
        calibration: &Calibration,
        scores: &[f64],
        sets: [&[&[f32]]; 2],
        mut search: impl FnMut(&[f32], f32) -> anyhow::Result<Vec<Hit>>,
    ) -> anyhow::Result<Self> {
        let thresholds: Vec<Threshold> = scores.iter().map(|&s| Threshold::new(calibration, s)).collect();
        let mut exact = Vec::new();
        for t in &thresholds {
            let mut per_set: [Vec<Vec<Key>>; 2] = Default::default();
            for (set, queries) in per_set.iter_mut().zip(sets) {
                for &q in queries {
                    set.push(passing(calibration, t, &search(q, t.min_similarity)?));
                }
            }
            exact.push(per_set);
        }
        Ok(Self { thresholds, exact })
    }

    /// The tallies of an approximate `search`, per threshold then per query set.
    fn tally(
        &self,
        calibration: &Calibration,
        sets: [&[&[f32]]; 2],
        mut search: impl FnMut(&[f32], f32) -> anyhow::Result<Vec<Hit>>,
    ) -> anyhow::Result<Vec<[Tally; 2]>> {
        let mut out = Vec::new();
        for (t, exact) in self.thresholds.iter().zip(&self.exact) {
            let mut tallies = [Tally::default(); 2];
            for ((tally, queries), truths) in tallies.iter_mut().zip(sets).zip(exact) {
                for (&q, truth) in queries.iter().zip(truths) {
                    tally.add(truth, &passing(calibration, t, &search(q, t.min_similarity)?));
                }
            }
            out.push(tallies);
        }
        Ok(out)
    }

    /// Table headers: "mated ≥ 50 (n)", …, then "non-mated ≥ 50 (n)", ….
    fn headers(&self) -> Vec<String> {
        let mut h: Vec<String> = self.thresholds.iter().map(|t| format!("mated ≥ {} (n)", t.score)).collect();
        h.extend(self.thresholds.iter().map(|t| format!("non-mated ≥ {} (n)", t.score)));
        h
    }

    /// Cells in the order of [`ThresholdTruth::headers`].
    fn cells(tallies: &[[Tally; 2]]) -> Vec<String> {
        let mut c: Vec<String> = tallies.iter().map(|t| t[0].render()).collect();
        c.extend(tallies.iter().map(|t| t[1].render()));
        c
    }
}

/// A search over several indexes done the way the engine did before one search
/// covered them all: each index searched alone, the results merged best first (ties by
/// index, then record). The reference the one-pass search must equal.
fn search_each(index: &VectorIndex, query: &[f32], ids: &[&str], min: f32, k: usize) -> anyhow::Result<Vec<Hit>> {
    let mut all = Vec::new();
    for id in ids {
        all.extend(index.search(query, &[id], min, k)?);
    }
    all.sort_by(|a, b| {
        b.similarity
            .total_cmp(&a.similarity)
            .then_with(|| a.collection.cmp(&b.collection))
            .then_with(|| a.record_id.cmp(&b.record_id))
    });
    all.truncate(k);
    Ok(all)
}

/// Searches the `faces` of one index split into `parts` indexes (round robin), exact
/// scans: one search over all of them against one search per index, merged. Returns
/// the two sorted latency lists; fails if the two ever disagree.
fn split_search(
    snapshot: &facesearch_vectors::Snapshot,
    parts: usize,
    queries: &[&[f32]],
    k: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let dim = snapshot.dim;
    let index = VectorIndex::with_config(dim, VectorConfig { ann_min_rows: usize::MAX, ..VectorConfig::default() });
    let names: Vec<String> = (0..parts.max(1)).map(|j| format!("part-{j}")).collect();
    index.insert_bulk(snapshot.owners.iter().enumerate().map(|(i, (image, record))| {
        (names[i % names.len()].as_str(), record.as_str(), image.as_str(), &snapshot.vectors[i * dim..(i + 1) * dim])
    }))?;
    let ids: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut one, mut each) = (Vec::new(), Vec::new());
    for q in queries {
        let t = Instant::now();
        let a = index.search(q, &ids, -1.0, k)?;
        one.push(t.elapsed());
        let t = Instant::now();
        let b = search_each(&index, q, &ids, -1.0, k)?;
        each.push(t.elapsed());
        anyhow::ensure!(a == b, "{parts} indexes: one search and the per-index merge disagree: {a:?} vs {b:?}");
    }
    one.sort();
    each.sort();
    Ok((one, each))
}

/// Times a quantised exact scan and checks its answers against the f32 scan's.
struct ScanProbe<'a> {
    queries: &'a [&'a [f32]],
    /// The f32 scan's top k of each query (min similarity −1).
    truths: &'a [Vec<Hit>],
    k: usize,
    /// The similarity of the highest score asked for.
    min: f32,
    work_dir: &'a Path,
}

impl ScanProbe<'_> {
    /// Cells: top-k latency, thresholded latency, answers equal to the f32 scan's, and
    /// "-" for the rows re-scored (the index does not report them).
    fn in_memory(&self, index: &VectorIndex) -> anyhow::Result<Vec<String>> {
        let (mut top, mut at, mut same) = (Vec::new(), Vec::new(), 0usize);
        for (q, truth) in self.queries.iter().zip(self.truths) {
            let t = Instant::now();
            let got = index.search_exact(q, &["bench"], -1.0, self.k)?;
            top.push(t.elapsed());
            same += usize::from(&got == truth);
            let t = Instant::now();
            index.search_exact(q, &["bench"], self.min, self.k)?;
            at.push(t.elapsed());
        }
        top.sort();
        at.sort();
        Ok(vec![latency(&top), latency(&at), format!("{same} of {}", self.queries.len()), "-".into()])
    }

    /// The same cells for codes in memory and the f32 rows re-read from a file (one
    /// positioned read per re-scored row), against a brute-force f32 scan of the rows;
    /// and the bytes of the codes.
    fn rerank_from_file(&self, index: &VectorIndex, codec: Codec) -> anyhow::Result<(Vec<String>, usize)> {
        use std::os::unix::fs::FileExt;
        let dim = index.dimension();
        let path = self.work_dir.join("rows.f32");
        let (codes, want) = index
            .read_vectors("bench", |m| -> anyhow::Result<_> {
                let bytes: Vec<u8> = m.iter().flat_map(|x| x.to_le_bytes()).collect();
                std::fs::write(&path, bytes)?;
                // The f32 scan's rows, by brute force, for both minimum scores.
                let mut want = Vec::new();
                for q in self.queries {
                    for min in [-1.0, self.min] {
                        let mut all: Vec<(usize, f32)> = m
                            .chunks_exact(dim)
                            .map(|r| facesearch_vectors::dot(q, r))
                            .enumerate()
                            .filter(|(_, s)| *s >= min)
                            .collect();
                        let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
                        if all.len() > self.k {
                            all.select_nth_unstable_by(self.k, order);
                            all.truncate(self.k);
                        }
                        all.sort_by(order);
                        want.push(all);
                    }
                }
                Ok((Quantised::build(codec, dim, m), want))
            })
            .context("no bench index")??;
        let file = std::fs::File::open(&path)?;
        let (mut top, mut at, mut same, mut rescored) = (Vec::new(), Vec::new(), 0usize, 0usize);
        let mut want = want.into_iter();
        for q in self.queries {
            for (min, times) in [(-1.0, &mut top), (self.min, &mut at)] {
                let mut buf = vec![0u8; dim * 4];
                let mut row = vec![0f32; dim];
                let t = Instant::now();
                let got = codes.search(q, self.k, min, |r| -> std::io::Result<f32> {
                    rescored += 1;
                    file.read_exact_at(&mut buf, (r * dim * 4) as u64)?;
                    for (x, b) in row.iter_mut().zip(buf.chunks_exact(4)) {
                        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                    Ok(facesearch_vectors::dot(q, &row))
                })?;
                times.push(t.elapsed());
                let w = want.next().unwrap_or_default();
                same += usize::from(
                    got.iter().map(|(r, s)| (*r, s.to_bits())).eq(w.iter().map(|(r, s)| (*r, s.to_bits()))),
                );
            }
        }
        let _ = std::fs::remove_file(&path);
        top.sort();
        at.sort();
        let n = self.queries.len();
        let cells = vec![
            latency(&top),
            latency(&at),
            format!("{same} of {}", 2 * n),
            format!("{:.0}", rescored as f64 / (2 * n) as f64),
        ];
        Ok((cells, codes.bytes()))
    }
}

pub fn run(args: IndexBench) -> anyhow::Result<()> {
    let real = real_embeddings(&args.pipeline, &args.manifest, &args.work_dir)?;
    let work = Workload::new(&real, args.queries)?;
    let calibration = Calibration::shipped(args.pipeline.pack)?;
    let (dim, queries, query_identity) = (work.dim, &work.queries, &work.query_identity);
    let sets: [&[&[f32]]; 2] = [&work.queries, &work.strangers];
    let config = VectorConfig {
        ann_min_rows: if args.exact_only { usize::MAX } else { 1 },
        connectivity: args.connectivity,
        ef_search: args.ef_search.first().copied().unwrap_or(128),
        quantization: args.quantization,
        // The f32 scan first, the ground truth; quantised scans are switched on in turn.
        exact_scan: None,
        ..VectorConfig::default()
    };
    println!(
        "pack {} ({dim}-d), {} real gallery faces + synthetic, {} real queries + {} non-mated, k={}, HNSW M={} \
         ef={:?} {} graph, scan kernel {}",
        args.pipeline.pack.name(),
        work.gallery_real.len(),
        queries.len(),
        work.strangers.len(),
        args.k,
        args.connectivity,
        args.ef_search,
        args.quantization.as_str(),
        facesearch_vectors::kernel_name()
    );
    std::fs::create_dir_all(&args.work_dir)?;
    let rss0 = rss_bytes();
    let index = VectorIndex::with_config(dim, config);
    let mut rng = StdRng::seed_from_u64(7);
    let mut flat: Vec<f32> = Vec::new(); // the same gallery, for faiss
    let mut inserted = 0usize;
    let mut rows = Vec::new();
    let mut threshold_rows = Vec::new();
    let mut split_rows = Vec::new();
    let mut scan_rows = Vec::new();
    // The quantised scans are also timed at the highest score asked for.
    let scan_score = args.scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let scan_min = if scan_score.is_finite() { Threshold::new(&calibration, scan_score).min_similarity } else { -1.0 };
    for &size in &args.sizes {
        let t = Instant::now();
        let mut batch: Vec<(String, String, Vec<f32>)> = Vec::with_capacity(size.saturating_sub(inserted));
        while inserted + batch.len() < size {
            let i = inserted + batch.len();
            let (record, vector) = work.face(i, &mut rng);
            batch.push((record, format!("img-{i}"), vector));
        }
        let made = t.elapsed();
        let t = Instant::now();
        index.insert_bulk(batch.iter().map(|(r, i, v)| ("bench", r.as_str(), i.as_str(), v.as_slice())))?;
        let insert = t.elapsed();
        if args.faiss {
            flat.extend(batch.iter().flat_map(|(_, _, v)| v.iter().copied()));
        }
        inserted += batch.len();
        drop(batch);
        eprintln!("{size}: made in {:.1} s, indexed in {:.1} s", made.as_secs_f64(), insert.as_secs_f64());

        index.set_exact_scan(None);
        let mut exact_t = Vec::new();
        let mut truths = Vec::new();
        for q in queries {
            let t = Instant::now();
            truths.push(index.search_exact(q, &["bench"], -1.0, args.k)?);
            exact_t.push(t.elapsed());
        }
        exact_t.sort();
        let threshold_truth = ThresholdTruth::new(&calibration, &args.scores, sets, |q, min| {
            Ok(index.search_exact(q, &["bench"], min, args.k)?)
        })?;
        if !args.scans.is_empty() {
            let f32_rss = rss_bytes().saturating_sub(rss0);
            let mut f32_row = vec![size.to_string(), "f32".into(), latency(&exact_t)];
            let mut f32_at = Vec::new();
            for q in queries {
                let t = Instant::now();
                index.search_exact(q, &["bench"], scan_min, args.k)?;
                f32_at.push(t.elapsed());
            }
            f32_at.sort();
            f32_row.extend([latency(&f32_at), "-".into(), "-".into()]);
            f32_row.extend(threshold_truth.headers().iter().map(|_| "-".to_string()));
            f32_row.extend([format!("{} B", dim * 4), format!("{} B", f32_rss / size.max(1))]);
            scan_rows.push(f32_row);
            let probe = ScanProbe { queries, truths: &truths, k: args.k, min: scan_min, work_dir: &args.work_dir };
            for &kind in &args.scans {
                let mut row = vec![String::new(), kind.name()];
                if kind.file {
                    let (cells, bytes) = probe.rerank_from_file(&index, kind.codec)?;
                    row.extend(cells);
                    row.extend(threshold_truth.headers().iter().map(|_| "-".to_string()));
                    row.extend([format!("{} B", bytes / size.max(1)), "-".into()]);
                } else {
                    index.set_exact_scan(Some(kind.codec));
                    row.extend(probe.in_memory(&index)?);
                    let tallies = threshold_truth
                        .tally(&calibration, sets, |q, min| Ok(index.search_exact(q, &["bench"], min, args.k)?))?;
                    row.extend(ThresholdTruth::cells(&tallies));
                    let stats = index.stats()["bench"];
                    let rss = rss_bytes().saturating_sub(rss0);
                    row.extend([format!("{} B", stats.scan_bytes / size.max(1)), format!("{} B", rss / size.max(1))]);
                    index.set_exact_scan(None);
                }
                scan_rows.push(row);
            }
            let mut headers: Vec<String> = [
                "faces",
                "exact scan",
                &format!("top {} p50 / p99", args.k),
                &format!("score ≥ {} p50 / p99", scan_score),
                "same answers as f32",
                "rows re-scored per query",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            headers.extend(threshold_truth.headers().iter().map(|h| format!("threshold recall {h}")));
            headers.extend(["scan structure per face".into(), "RSS per face".into()]);
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            println!(
                "exact scans: the f32 scan against quantised ones (codes, then an f32 re-rank of every row within the \
                 proven error bound)\n{}",
                table::render(&headers, &scan_rows)
            );
        }
        let mut per_ef = Vec::new();
        let ef_values: &[usize] = if args.exact_only { &[] } else { &args.ef_search };
        for &ef in ef_values {
            index.set_ef_search(ef);
            let (mut ann_t, mut hit, mut want) = (Vec::new(), 0usize, 0usize);
            let (mut mated_found, mut mated) = (0usize, 0usize);
            for ((q, truth), identity) in queries.iter().zip(&truths).zip(query_identity) {
                let t = Instant::now();
                let got = index.search(q, &["bench"], -1.0, args.k)?;
                ann_t.push(t.elapsed());
                want += truth.len();
                hit += got.iter().filter(|h| truth.iter().any(|t| t.record_id == h.record_id)).count();
                // The query's own identity (its other photos are in the gallery).
                if truth.iter().any(|h| h.record_id == *identity) {
                    mated += 1;
                    mated_found += usize::from(got.iter().any(|h| h.record_id == *identity));
                }
            }
            ann_t.sort();
            let mated = format!("{:.4} ({mated})", mated_found as f64 / mated.max(1) as f64);
            let tallies =
                threshold_truth.tally(&calibration, sets, |q, min| Ok(index.search(q, &["bench"], min, args.k)?))?;
            let mut row = vec![size.to_string(), format!("ef {ef}"), latency(&ann_t)];
            row.extend(ThresholdTruth::cells(&tallies));
            threshold_rows.push(row);
            per_ef.push((ef, ann_t, hit as f64 / want.max(1) as f64, mated));
        }
        let stats = index.stats()["bench"];
        let rss = rss_bytes().saturating_sub(rss0);
        let cold = if args.cold_start {
            let dir = args.work_dir.join("snapshot");
            let t = Instant::now();
            index.save(&dir, size as u64)?;
            let saved = t.elapsed();
            let t = Instant::now();
            let loaded = VectorIndex::load(&dir, dim, config)?.context("snapshot missing after save")?;
            let load = t.elapsed();
            drop(loaded);
            let _ = std::fs::remove_dir_all(&dir);
            format!("{} / {}", ms(saved), ms(load))
        } else {
            "-".into()
        };
        let faiss = if args.faiss {
            let f = run_faiss(&args.work_dir, &flat, dim, queries, args.k)?;
            format!(
                "{} / {} ({} thr)",
                ms(Duration::from_secs_f64(f.p50_ms / 1e3)),
                ms(Duration::from_secs_f64(f.p99_ms / 1e3)),
                f.threads
            )
        } else {
            "-".into()
        };
        let graph_rows: Vec<Option<&GraphRow>> =
            if per_ef.is_empty() { vec![None] } else { per_ef.iter().map(Some).collect() };
        for (i, graph) in graph_rows.into_iter().enumerate() {
            let first = i == 0;
            let blank = || "".to_string();
            rows.push(vec![
                if first { size.to_string() } else { blank() },
                if first { latency(&exact_t) } else { blank() },
                if first { faiss.clone() } else { blank() },
                graph.map_or("-".into(), |(ef, t, _, _)| format!("ef {ef}: {}", latency(t))),
                graph.map_or("-".into(), |(_, _, recall, _)| format!("{recall:.4}")),
                graph.map_or("-".into(), |(_, _, _, mated)| mated.clone()),
                if first { format!("{:.0} / s", size as f64 / insert.as_secs_f64().max(1e-9)) } else { blank() },
                if first {
                    format!("{} B (RSS {} B)", stats.vector_bytes / size.max(1), rss / size.max(1))
                } else {
                    blank()
                },
                if first { cold.clone() } else { blank() },
            ]);
        }
        println!(
            "{}",
            table::render(
                &[
                    "faces",
                    "exact p50 / p99",
                    "faiss flat p50 / p99",
                    "HNSW p50 / p99",
                    &format!("recall@{}", args.k),
                    "mated recall (n)",
                    "index build",
                    "memory per face",
                    "save / load",
                ],
                &rows
            )
        );
        if !threshold_rows.is_empty() {
            let mut headers = vec!["faces".to_string(), "ef".into(), "HNSW p50 / p99".into()];
            headers.extend(threshold_truth.headers());
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            println!(
                "threshold recall: the exact scan's matches (best {} records at or above each score) the graph also returns\n{}",
                args.k,
                table::render(&headers, &threshold_rows)
            );
        }
        if !args.split.is_empty() {
            let snapshot = index.snapshot("bench");
            for &parts in &args.split {
                let (one, each) = split_search(&snapshot, parts, queries, args.k)?;
                split_rows.push(vec![size.to_string(), parts.to_string(), latency(&one), latency(&each)]);
            }
            println!(
                "{}",
                table::render(
                    &["faces", "indexes", "one search p50 / p99", "one search per index, merged p50 / p99"],
                    &split_rows
                )
            );
        }
    }
    Ok(())
}

pub fn seed(args: SeedBench) -> anyhow::Result<()> {
    use facesearch_store::{IndexType, NewImage, NewIndex, RecordFields};
    let real = real_embeddings(&args.pipeline, &args.manifest, &args.work_dir)?;
    let vectors: Vec<&[f32]> = real.iter().map(|r| r.vector.as_slice()).collect();
    let gaussian = FittedGaussian::fit(&vectors)?;
    // A tiny stand-in photo: the benchmark measures search, not downloads, and a
    // million copies of a real photo would be gigabytes.
    let mut photo = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(8, 8, image::Rgb([128, 128, 128])).write_to(&mut photo, image::ImageFormat::Png)?;
    let photo = photo.into_inner();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = facesearch_store::open(&args.database.store_config(&args.data_dir)?).await?;
        let pack = args.pipeline.pack;
        let index = match store.list_indexes().await?.into_iter().find(|i| i.index_name == args.index_name) {
            Some(i) => {
                anyhow::ensure!(i.pack == pack, "index {} holds {} vectors, not {pack}", i.index_name, i.pack);
                i
            }
            None => {
                store
                    .create_index(NewIndex {
                        index_name: args.index_name.clone(),
                        title: "synthetic benchmark faces".into(),
                        description: "made by facesearch bench seed".into(),
                        index_type: IndexType::Internal,
                        pack,
                    })
                    .await?
            }
        };
        let mut rng = StdRng::seed_from_u64(11);
        let started = Instant::now();
        let mut done = 0;
        while done < args.faces {
            let n = (args.faces - done).min(5000);
            let batch = (done..done + n)
                .map(|i| {
                    let fields = RecordFields { name: format!("synthetic {i}"), ..RecordFields::default() };
                    let image = NewImage {
                        bytes: photo.clone(),
                        mime: "image/png".into(),
                        file_name: "synthetic.png".into(),
                        embedding: gaussian.sample(&mut rng),
                        pack,
                        face: serde_json::json!({"synthetic": true}),
                        quality: None,
                    };
                    (fields, None, image)
                })
                .collect();
            store.enrol_batch(&index.id, batch).await?.context("index vanished")?;
            done += n;
            eprint!("\r{done} / {} faces ({:.0} /s)", args.faces, done as f64 / started.elapsed().as_secs_f64());
        }
        eprintln!();
        println!("index {} ({}) now has {} more synthetic faces", index.index_name, index.id, args.faces);
        Ok(())
    })
}

pub fn pgvector(args: PgBench) -> anyhow::Result<()> {
    use facesearch_store::{
        IndexStore, IndexType, NewImage, NewIndex, PostgresStore, RecordFields, RecordStore, VectorQuery, VectorStore,
    };
    let pg =
        args.database.postgres()?.context("bench pgvector needs --store postgres://… (or FACESEARCH_DATABASE_URL)")?;
    let real = real_embeddings(&args.pipeline, &args.manifest, &args.work_dir)?;
    let work = Workload::new(&real, args.queries)?;
    let calibration = Calibration::shipped(args.pipeline.pack)?;
    let sets: [&[&[f32]]; 2] = [&work.queries, &work.strangers];
    let pack = args.pipeline.pack;
    println!(
        "pack {pack} ({}-d), {} real gallery faces + synthetic, {} real queries + {} non-mated, k={}, pgvector HNSW \
         (m 16, ef_construction 128, halfvec) with exact re-ranking, ef_search {:?}",
        work.dim,
        work.gallery_real.len(),
        work.queries.len(),
        work.strangers.len(),
        args.k,
        args.ef_search
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let store = PostgresStore::connect(&pg).await?;
        let index = store
            .create_index(NewIndex {
                index_name: format!("pgbench-{}", facesearch_store::now_rfc3339()),
                title: "pgvector benchmark".into(),
                description: "made by facesearch bench pgvector".into(),
                index_type: IndexType::Internal,
                pack,
            })
            .await?;
        // The exact answer, from the same vectors held in memory.
        let exact =
            VectorIndex::with_config(work.dim, VectorConfig { ann_min_rows: usize::MAX, ..VectorConfig::default() });
        let mut identity_of: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        let photo = vec![0xFF, 0xD8, 0xFF, 0xD9];
        let mut rng = StdRng::seed_from_u64(7);
        let (mut inserted, mut rows, mut threshold_rows) = (0usize, Vec::new(), Vec::new());
        for &size in &args.sizes {
            if args.bulk {
                store.drop_vector_graph(work.dim).await?;
            }
            let t = Instant::now();
            while inserted < size {
                let n = (size - inserted).min(PG_BATCH);
                let faces: Vec<(String, Vec<f32>)> = (inserted..inserted + n).map(|i| work.face(i, &mut rng)).collect();
                let batch = faces
                    .iter()
                    .map(|(identity, vector)| {
                        let image = NewImage {
                            bytes: photo.clone(),
                            mime: "image/jpeg".into(),
                            file_name: "synthetic.jpg".into(),
                            embedding: vector.clone(),
                            pack,
                            face: serde_json::json!({"synthetic": true}),
                            quality: None,
                        };
                        (RecordFields { name: identity.clone(), ..RecordFields::default() }, None, image)
                    })
                    .collect();
                let made = store.enrol_batch(&index.id, batch).await?.context("index vanished")?;
                for ((identity, vector), outcome) in faces.iter().zip(made) {
                    let record = outcome.into_record();
                    exact.insert(&index.id, &record.record_id, &record.image_ids[0], vector)?;
                    identity_of.insert(record.record_id, identity.clone());
                }
                inserted += n;
                eprint!("\r{inserted} / {size} faces ({:.0} /s)", inserted as f64 / t.elapsed().as_secs_f64());
            }
            eprintln!();
            let insert_rate = size as f64 / t.elapsed().as_secs_f64().max(1e-9);
            let graph_build = if args.bulk {
                let t = Instant::now();
                store.build_vector_graph(work.dim).await?;
                eprintln!("graph built in {:.0} s", t.elapsed().as_secs_f64());
                format!(", graph {:.0} s", t.elapsed().as_secs_f64())
            } else {
                String::new()
            };
            let mut exact_t = Vec::new();
            let mut truths = Vec::new();
            for q in &work.queries {
                let t = Instant::now();
                truths.push(exact.search_exact(q, &[index.id.as_str()], -1.0, args.k)?);
                exact_t.push(t.elapsed());
            }
            exact_t.sort();
            let sizes: (i64, i64) = relation_sizes(&store, work.dim).await?;
            let threshold_truth = ThresholdTruth::new(&calibration, &args.scores, sets, |q, min| {
                Ok(exact.search_exact(q, &[index.id.as_str()], min, args.k)?)
            })?;
            for (i, &ef) in args.ef_search.iter().enumerate() {
                let store = store.clone().with_search(ef, 0);
                let mut tallies = Vec::new();
                for (t, truths) in threshold_truth.thresholds.iter().zip(&threshold_truth.exact) {
                    let mut per_set = [Tally::default(); 2];
                    for ((tally, queries), truths) in per_set.iter_mut().zip(sets).zip(truths) {
                        for (q, truth) in queries.iter().zip(truths) {
                            let query = VectorQuery {
                                pack,
                                index_ids: vec![index.id.clone()],
                                vector: q.to_vec(),
                                min_similarity: t.min_similarity,
                                limit: args.k,
                            };
                            let got: Vec<Hit> = store.nearest_faces(query).await?.into_iter().map(hit_of).collect();
                            tally.add(truth, &passing(&calibration, t, &got));
                        }
                    }
                    tallies.push(per_set);
                }
                let mut row = vec![size.to_string(), format!("ef {ef}")];
                row.extend(ThresholdTruth::cells(&tallies));
                eprintln!("threshold row: {}", row.join(" | "));
                threshold_rows.push(row);
                let (mut took, mut hit, mut want, mut mated, mut mated_found) = (Vec::new(), 0, 0, 0, 0);
                for ((q, truth), identity) in work.queries.iter().zip(&truths).zip(&work.query_identity) {
                    let query = VectorQuery {
                        pack,
                        index_ids: vec![index.id.clone()],
                        vector: q.to_vec(),
                        min_similarity: -1.0,
                        limit: args.k,
                    };
                    let t = Instant::now();
                    let got = store.nearest_faces(query).await?;
                    took.push(t.elapsed());
                    want += truth.len();
                    hit += got.iter().filter(|g| truth.iter().any(|t| t.record_id == g.record_id)).count();
                    let is_mated = |record: &str| identity_of.get(record).is_some_and(|id| id == identity);
                    if truth.iter().any(|h| is_mated(&h.record_id)) {
                        mated += 1;
                        mated_found += usize::from(got.iter().any(|g| is_mated(&g.record_id)));
                    }
                }
                took.sort();
                eprintln!(
                    "ef {ef}: pgvector {} (exact in memory {}), recall@{} {:.4}, mated {:.4} ({mated})",
                    latency(&took),
                    latency(&exact_t),
                    args.k,
                    hit as f64 / want.max(1) as f64,
                    mated_found as f64 / mated.max(1) as f64
                );
                let first = i == 0;
                let blank = String::new;
                rows.push(vec![
                    if first { size.to_string() } else { blank() },
                    if first { latency(&exact_t) } else { blank() },
                    format!("ef {ef}: {}", latency(&took)),
                    format!("{:.4}", hit as f64 / want.max(1) as f64),
                    format!("{:.4} ({mated})", mated_found as f64 / mated.max(1) as f64),
                    if first { format!("{insert_rate:.0} / s{graph_build}") } else { blank() },
                    if first {
                        format!("{} B + HNSW {} B", sizes.0 / size.max(1) as i64, sizes.1 / size.max(1) as i64)
                    } else {
                        blank()
                    },
                ]);
            }
            println!(
                "{}",
                table::render(
                    &[
                        "faces",
                        "exact in memory p50 / p99",
                        "pgvector p50 / p99",
                        &format!("recall@{}", args.k),
                        "mated recall (n)",
                        "enrol (batches of 500)",
                        "disk per face (embeddings table + graph)",
                    ],
                    &rows
                )
            );
            let mut headers = vec!["faces".to_string(), "ef_search".into()];
            headers.extend(threshold_truth.headers());
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            println!(
                "threshold recall: the exact scan's matches (best {} records at or above each score) pgvector also returns\n{}",
                args.k,
                table::render(&headers, &threshold_rows)
            );
        }
        if !args.split.is_empty() {
            pg_split(&store, &args, &exact, &index.id, &work.queries).await?;
        }
        Ok(())
    })
}

/// `bench pgvector --split`: the faces of the benchmark index copied into `parts` new
/// indexes (whole batches of [`PG_BATCH`], round robin) for each split, then searched both
/// ways, exactly and through the graph: one statement over all the split's indexes
/// (what the store does) against one statement per index, merged.
async fn pg_split(
    store: &facesearch_store::PostgresStore,
    args: &PgBench,
    exact: &VectorIndex,
    main_index: &str,
    queries: &[&[f32]],
) -> anyhow::Result<()> {
    use facesearch_store::{
        IndexStore, IndexType, NewImage, NewIndex, RecordFields, RecordStore, VectorQuery, VectorStore,
    };
    let pack = args.pipeline.pack;
    let snapshot = exact.snapshot(main_index);
    let dim = snapshot.dim;
    let faces = snapshot.owners.len();
    if args.bulk {
        store.drop_vector_graph(dim).await?;
    }
    let mut splits: Vec<(usize, Vec<String>)> = Vec::new();
    for &parts in &args.split {
        if parts <= 1 {
            splits.push((1, vec![main_index.to_string()]));
            continue;
        }
        let mut ids = Vec::new();
        for j in 0..parts {
            let made = store
                .create_index(NewIndex {
                    index_name: format!("pgsplit-{parts}-{j}-{}", facesearch_store::now_rfc3339()),
                    title: "pgvector split benchmark".into(),
                    description: "made by facesearch bench pgvector --split".into(),
                    index_type: IndexType::Internal,
                    pack,
                })
                .await?;
            ids.push(made.id);
        }
        let t = Instant::now();
        for (b, rows) in (0..faces).collect::<Vec<_>>().chunks(PG_BATCH).enumerate() {
            let batch = rows
                .iter()
                .map(|&i| {
                    let image = NewImage {
                        bytes: vec![0xFF, 0xD8, 0xFF, 0xD9],
                        mime: "image/jpeg".into(),
                        file_name: "synthetic.jpg".into(),
                        embedding: snapshot.vectors[i * dim..(i + 1) * dim].to_vec(),
                        pack,
                        face: serde_json::json!({"synthetic": true}),
                        quality: None,
                    };
                    (RecordFields { name: snapshot.owners[i].1.clone(), ..RecordFields::default() }, None, image)
                })
                .collect();
            store.enrol_batch(&ids[b % parts], batch).await?.context("index vanished")?;
            eprint!(
                "\r{parts} indexes: {} / {faces} faces ({:.0} /s)",
                ((b + 1) * PG_BATCH).min(faces),
                ((b + 1) * PG_BATCH).min(faces) as f64 / t.elapsed().as_secs_f64()
            );
        }
        eprintln!();
        splits.push((parts, ids));
    }
    if args.bulk && !args.split_exact_only {
        let t = Instant::now();
        store.build_vector_graph(dim).await?;
        eprintln!("graph over the split copies built in {:.0} s", t.elapsed().as_secs_f64());
    }
    let queries = &queries[..args.split_queries.unwrap_or(queries.len()).min(queries.len())];
    let merge = |mut all: Vec<facesearch_store::NearestFace>| {
        all.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then_with(|| a.record_id.cmp(&b.record_id)));
        all.truncate(args.k);
        all
    };
    let ef = args.ef_search.last().copied().unwrap_or(400);
    let mut rows = Vec::new();
    for (parts, ids) in &splits {
        let mut modes = vec![("exact".to_string(), store.clone().with_search(ef, u64::MAX))];
        if !args.split_exact_only {
            modes.push((format!("graph, ef {ef}"), store.clone().with_search(ef, 0)));
        }
        for (mode, searcher) in modes {
            let (mut one, mut each, mut differ) = (Vec::new(), Vec::new(), 0usize);
            for q in queries {
                let query = |index_ids: Vec<String>| VectorQuery {
                    pack,
                    index_ids,
                    vector: q.to_vec(),
                    min_similarity: -1.0,
                    limit: args.k,
                };
                let t = Instant::now();
                let a = searcher.nearest_faces(query(ids.clone())).await?;
                one.push(t.elapsed());
                let t = Instant::now();
                let mut all = Vec::new();
                for id in ids {
                    all.extend(searcher.nearest_faces(query(vec![id.clone()])).await?);
                }
                let b = merge(all);
                each.push(t.elapsed());
                differ += usize::from(a != b);
            }
            one.sort();
            each.sort();
            let row = vec![
                faces.to_string(),
                parts.to_string(),
                mode,
                latency(&one),
                latency(&each),
                format!("{differ} of {}", queries.len()),
            ];
            eprintln!("split row: {}", row.join(" | "));
            rows.push(row);
        }
    }
    println!(
        "{}",
        table::render(
            &[
                "faces",
                "indexes",
                "search",
                "one statement p50 / p99",
                "one per index, merged p50 / p99",
                "queries answered differently",
            ],
            &rows
        )
    );
    Ok(())
}

/// A store's search result as an index hit (index id as the collection).
fn hit_of(f: facesearch_store::NearestFace) -> Hit {
    Hit { collection: f.index_id, record_id: f.record_id, image_id: f.image_id, similarity: f.similarity }
}

/// Bytes of the embeddings table (with its TOAST) and of the HNSW graph of `dim`.
async fn relation_sizes(store: &facesearch_store::PostgresStore, dim: usize) -> anyhow::Result<(i64, i64)> {
    Ok(store.relation_sizes(dim).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_names_are_parsed_and_others_refused() {
        let file: ScanKind = "i8-file".parse().expect("i8-file");
        assert!(file.file);
        assert!(!"f16".parse::<ScanKind>().expect("f16").file);
        for bad in ["", "i4", "i8-", "-file", "f32-files"] {
            assert!(bad.parse::<ScanKind>().is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn fitted_gaussian_reproduces_the_mean_direction() {
        let mut rng = StdRng::seed_from_u64(1);
        let real: Vec<Vec<f32>> = (0..300)
            .map(|i| {
                let mut v = vec![1.0f32, 0.5, (i % 7) as f32 * 0.1, ((i * 13) % 5) as f32 * 0.1];
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                v
            })
            .collect();
        let g = FittedGaussian::fit(&real.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap();
        let mean: Vec<f32> = (0..4).map(|d| (0..2000).map(|_| g.sample(&mut rng)[d]).sum::<f32>() / 2000.0).collect();
        assert!(mean[0] > 0.6 && mean[1] > 0.3, "{mean:?}");
        assert!(g.sample(&mut rng).iter().map(|x| x * x).sum::<f32>() - 1.0 < 1e-4);
    }

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        write_npy(&path, 2, 3, [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].into_iter()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert!(std::str::from_utf8(&bytes[10..10 + header_len]).unwrap().contains("'shape': (2, 3)"));
        assert_eq!(bytes.len(), 10 + header_len + 24);
        assert_eq!(f32::from_le_bytes(bytes[10 + header_len..14 + header_len].try_into().unwrap()), 1.0);
    }
}
