//! `facesearch bench fpir`: checks the FPIR predicted from the calibration (docs/API.md,
//! Scores) against a measurement. People of ../shared/eval are split in two: the photos
//! of one half are the gallery (topped up to each size with the synthetic faces `bench
//! index` draws from a Gaussian fitted to the real embeddings), every photo of the
//! other half is a search of a stranger (non-mated: that person is not enrolled). The
//! measured FPIR at score s is the share of those searches that would return anyone at
//! or above s; predicted is 1 − (1 − FMR(s))^N. The per-comparison rate against real
//! and against synthetic faces is shown apart, so a difference between the two is seen.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;
use facesearch_eval::table;
use facesearch_face::calibration::Calibration;
use facesearch_face::false_matches::format_number;
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use super::PipelineArgs;
use super::bench_index::{FittedGaussian, Real};

#[derive(Args)]
pub struct FpirBench {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Manifest whose `face` photos (those `eval calibrate` uses) give the real embeddings.
    #[arg(long, default_value = "../shared/eval/manifest.csv")]
    manifest: PathBuf,
    /// Where the embeddings of the calibration's photos are cached between runs.
    #[arg(long, default_value = "target/bench-index")]
    work_dir: PathBuf,
    /// Gallery sizes (faces), ascending; each at least the real gallery faces.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<usize>,
    /// Scores at which FPIR is measured.
    #[arg(long, value_delimiter = ',', default_value = "42,50,56,63,70,77,84")]
    scores: Vec<f64>,
    /// Seed of the split of people into enrolled and strangers, and of the synthetic faces.
    #[arg(long, default_value_t = 17)]
    seed: u64,
}

/// Counts of one kind of gallery face (real or synthetic) over every stranger search.
#[derive(Clone, Default)]
struct Counts {
    /// Per score: comparisons at or above it, over all searches.
    pairs: Vec<u64>,
    /// Per search, per score: whether any face of this kind reached it.
    any: Vec<Vec<bool>>,
}

/// Compares every query with `gallery` (row-major, `dim` wide) against the similarity
/// thresholds (ascending).
fn count(queries: &[&[f32]], gallery: &[f32], dim: usize, thresholds: &[f32]) -> Counts {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_query = super::parallel_map(queries.len(), workers, |q| {
        let query = queries[q];
        let mut above = vec![0u64; thresholds.len()];
        for face in gallery.chunks_exact(dim) {
            let s: f32 = query.iter().zip(face).map(|(a, b)| a * b).sum();
            for (n, t) in above.iter_mut().zip(thresholds) {
                if s >= *t {
                    *n += 1;
                }
            }
        }
        above
    });
    let mut counts = Counts { pairs: vec![0; thresholds.len()], any: Vec::with_capacity(queries.len()) };
    for above in per_query {
        for (total, n) in counts.pairs.iter_mut().zip(&above) {
            *total += n;
        }
        counts.any.push(above.iter().map(|&n| n > 0).collect());
    }
    counts
}

/// The number of pairs of photos of different people, and per threshold how many of
/// them reach it.
fn cross_identity_pairs(photos: &[&Real], thresholds: &[f32]) -> (u64, Vec<u64>) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_photo = super::parallel_map(photos.len(), workers, |i| {
        let (mut pairs, mut above) = (0u64, vec![0u64; thresholds.len()]);
        for other in &photos[i + 1..] {
            if other.identity == photos[i].identity {
                continue;
            }
            pairs += 1;
            let s: f32 = photos[i].vector.iter().zip(&other.vector).map(|(a, b)| a * b).sum();
            for (n, t) in above.iter_mut().zip(thresholds) {
                if s >= *t {
                    *n += 1;
                }
            }
        }
        (pairs, above)
    });
    let mut total = (0u64, vec![0u64; thresholds.len()]);
    for (pairs, above) in per_photo {
        total.0 += pairs;
        for (t, n) in total.1.iter_mut().zip(above) {
            *t += n;
        }
    }
    total
}

/// Wilson 95% interval of `k` successes in `n` trials.
fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

fn rate(pairs: u64, comparisons: f64) -> String {
    if comparisons == 0.0 { "-".into() } else { format_number(pairs as f64 / comparisons) }
}

/// The embeddings of the photos `eval calibrate` fits the calibration on: `face` rows
/// with a known person, without the re-crops, resizes and rotated copies of one photo
/// (which are not independent photos: a stranger matching one would match them all).
fn calibration_photos(args: &FpirBench) -> anyhow::Result<Vec<Real>> {
    super::bench_index::embeddings_of(&args.pipeline, &args.manifest, &args.work_dir, "fpir", |r| {
        r.kind == "face" && !r.identity.is_empty() && !super::eval::is_derivative(r)
    })
}

pub fn run(args: FpirBench) -> anyhow::Result<()> {
    let calibration = Calibration::shipped(args.pipeline.pack)?;
    let known = calibration_photos(&args)?;
    let known: Vec<&Real> = known.iter().collect();
    anyhow::ensure!(known.len() > 10, "too few labelled real embeddings ({})", known.len());
    let dim = known[0].vector.len();
    let mut people: Vec<&str> =
        known.iter().map(|r| r.identity.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut rng = StdRng::seed_from_u64(args.seed);
    people.shuffle(&mut rng);
    let strangers: BTreeSet<&str> = people[..people.len() / 2].iter().copied().collect();
    let (queries, enrolled): (Vec<&Real>, Vec<&Real>) =
        known.iter().copied().partition(|r| strangers.contains(r.identity.as_str()));
    let queries: Vec<&[f32]> = queries.iter().map(|r| r.vector.as_slice()).collect();
    let real_gallery: Vec<f32> = enrolled.iter().flat_map(|r| r.vector.iter().copied()).collect();
    let n_real = enrolled.len();
    let gaussian = FittedGaussian::fit(&enrolled.iter().map(|r| r.vector.as_slice()).collect::<Vec<_>>())?;
    println!(
        "pack {}: {} stranger searches ({} people not enrolled) against {} real faces of {} other people, \
         topped up with synthetic faces",
        calibration.pack,
        queries.len(),
        strangers.len(),
        n_real,
        people.len() - strangers.len()
    );

    // The lowest similarity that reaches each score: the server's rule (score ≥
    // min_match_score) up to its rounding of scores to two decimals.
    let thresholds: Vec<f32> = args.scores.iter().map(|&s| calibration.similarity_for(s)).collect();
    // Every cross-identity pair of the photos, as `eval calibrate` counts them: how far
    // today's embeddings of the calibration's photo set are from the shipped table.
    let (pairs, above) = cross_identity_pairs(&known, &thresholds);
    let rates: Vec<String> =
        args.scores.iter().zip(&above).map(|(s, &n)| format!("{s}: {} ({n} pairs)", rate(n, pairs as f64))).collect();
    println!("all {pairs} cross-identity pairs of these {} photos, FMR at score {}", known.len(), rates.join(", "));
    let on_real = count(&queries, &real_gallery, dim, &thresholds);
    let mut synthetic: Vec<f32> = Vec::new();
    let mut sizes = vec![n_real];
    sizes.extend(args.sizes.iter().copied().filter(|&n| n > n_real));
    let mut rows = Vec::new();
    for &size in &sizes {
        let have = synthetic.len() / dim;
        for _ in have..size - n_real {
            synthetic.extend(gaussian.sample(&mut rng));
        }
        let on_synthetic = count(&queries, &synthetic, dim, &thresholds);
        let n_synthetic = size - n_real;
        let q = queries.len() as f64;
        for (i, &score) in args.scores.iter().enumerate() {
            let any = (0..queries.len())
                .filter(|&j| on_real.any[j][i] || on_synthetic.any.get(j).is_some_and(|a| a[i]))
                .count();
            let (lo, hi) = wilson(any, queries.len());
            let false_matches = (on_real.pairs[i] + on_synthetic.pairs[i]) as f64 / q;
            rows.push(vec![
                size.to_string(),
                format!("{score}"),
                calibration.expected_false_matches(score, size as u64).display(),
                format_number(false_matches),
                calibration.fpir(score, size as u64).display(),
                format!("{} ({}–{})", format_number(any as f64 / q), format_number(lo), format_number(hi)),
                calibration.false_match_rate(score).display(),
                rate(on_real.pairs[i], q * n_real as f64),
                rate(on_synthetic.pairs[i], q * n_synthetic as f64),
            ]);
        }
    }
    println!(
        "{}",
        table::render(
            &[
                "gallery faces",
                "score",
                "expected false matches",
                "measured",
                "FPIR predicted",
                "FPIR measured (95% CI)",
                "FMR calibration",
                "FMR vs real",
                "FMR vs synthetic",
            ],
            &rows
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pairs_and_searches_above_each_threshold() {
        // Two 2-d queries against three faces.
        let queries: Vec<&[f32]> = vec![&[1.0, 0.0], &[0.0, 1.0]];
        let gallery = [1.0, 0.0, 0.6, 0.8, 0.0, -1.0];
        let c = count(&queries, &gallery, 2, &[0.5, 0.9]);
        // Query 1: similarities 1, 0.6, 0; query 2: 0, 0.8, -1.
        assert_eq!(c.pairs, vec![3, 1]);
        assert_eq!(c.any, vec![vec![true, true], vec![true, false]]);
    }

    #[test]
    fn cross_identity_pairs_skip_pairs_of_one_person() {
        let real = |identity: &str, vector: [f32; 2]| Real { identity: identity.into(), vector: vector.to_vec() };
        let photos = [real("a", [1.0, 0.0]), real("a", [0.6, 0.8]), real("b", [0.6, 0.8]), real("c", [0.0, 1.0])];
        let refs: Vec<&Real> = photos.iter().collect();
        // Pairs of different people: a1-b 0.6, a1-c 0, a2-b 1, a2-c 0.8, b-c 0.8.
        assert_eq!(cross_identity_pairs(&refs, &[0.5, 0.9]), (5, vec![4, 1]));
    }

    #[test]
    fn wilson_interval_contains_the_rate() {
        let (lo, hi) = wilson(10, 100);
        assert!(lo < 0.1 && hi > 0.1 && lo > 0.04 && hi < 0.18, "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        assert_eq!(wilson(0, 50).0, 0.0);
    }
}
