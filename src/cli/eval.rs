//! `facesearch eval verify | identify | liveness | liveness-fit | calibrate | fpir-table`: accuracy of the face
//! pipeline on labelled photos, measured with the protocols of `facesearch-eval`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use facesearch_eval::{
    Hinge, LivenessSample, ManifestRow, ProbeResult, build_open_set_protocol, fit_logistic, identification_report,
    leave_one_group_out, pad_report, parse_manifest, parse_pairs, table, verification_report,
};
use facesearch_face::calibration::{Calibration, CalibrationPoint};
use facesearch_face::liveness::{FEATURE_NAMES, LivenessFeatures};
use facesearch_face::liveness_fusion::{
    CloseUpFusion, Fusion, FusionFeature, FusionValidation, OneSided, round_to, sigmoid,
};
use facesearch_face::{BBox, FaceChoice, FacePipeline, RuntimeOptions, cosine};
use serde::Serialize;

use super::PipelineArgs;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Images analysed in parallel (default: one per core, each inference single-threaded).
    #[arg(long, global = true)]
    jobs: Option<usize>,
    #[command(subcommand)]
    task: EvalTask,
}

#[derive(Subcommand)]
enum EvalTask {
    /// 1:1 verification on pairs in LFW format: 10-fold accuracy, TAR at FAR 1e-3 and 1e-4.
    Verify {
        /// Pairs file (`name i j` / `name1 i name2 j`).
        #[arg(long)]
        pairs: PathBuf,
        /// Image folder (default: lfw-deepfunneled/images beside the pairs file).
        #[arg(long)]
        images: Option<PathBuf>,
    },
    /// Open-set 1:N identification on the `face` rows of a manifest.
    Identify {
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Presentation-attack detection on the `live`, `spoof` and `face` rows of a manifest:
    /// APCER per attack type, BPCER, EER, the threshold curve, bootstrap CIs.
    Liveness {
        #[arg(long)]
        manifest: PathBuf,
        /// Live-score threshold: a face is live when its score is at least this.
        #[arg(long, default_value_t = facesearch_face::liveness::DEFAULT_THRESHOLD)]
        threshold: f32,
        /// Only rows of these sources (the manifest's `source` column), comma-separated.
        #[arg(long, value_delimiter = ',')]
        source: Vec<String>,
        /// Score with this fusion file instead of the shipped one.
        #[arg(long, conflicts_with = "score")]
        fusion: Option<PathBuf>,
        /// Score with one liveness feature alone (its logistic), e.g. `model_logit_2_7`
        /// for the single model on the 2.7× crop (the pre-fusion baseline).
        #[arg(long)]
        score: Option<String>,
    },
    /// Fit the liveness fusion (logistic regression over liveness features) with
    /// leave-one-collection-out cross-validation; print the out-of-fold rates and
    /// write the coefficients.
    LivenessFit {
        #[arg(long)]
        manifest: PathBuf,
        /// Sources (the manifest's `source` column) to fit on, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = default_fit_sources())]
        source: Vec<String>,
        /// Features to fuse, comma-separated (see `facesearch_face::liveness::FEATURE_NAMES`);
        /// `name:above` / `name:below` counts only how far a value lies above / below the
        /// median of the live samples (a cue that may only count against liveness).
        #[arg(long, value_delimiter = ',', default_values_t = default_fit_features())]
        features: Vec<String>,
        /// L2 penalty on the standardised weights.
        #[arg(long, default_value_t = DEFAULT_L2)]
        l2: f64,
        /// Faces with less context than this (crop side / face side) get weights of their
        /// own, fitted on such close-ups only; 0 fits one set of weights for every face.
        #[arg(long, default_value_t = CLOSE_UP_BELOW)]
        close_up_below: f64,
        /// Output file (default: print to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write every row's features, face box and out-of-fold score as CSV here.
        #[arg(long)]
        features_csv: Option<PathBuf>,
        /// CSV of candidate features computed outside facesearch (e.g. by
        /// `bench/liveness_candidates.py`): a `path` column (the manifest's paths) and one
        /// numeric column per feature. Those columns may be named in `--features` to
        /// measure them out of fold; a fusion using one cannot be written with `--out`,
        /// since the service does not compute it.
        #[arg(long)]
        extra_features: Option<PathBuf>,
    },
    /// Print the FPIR-by-gallery-size tables of docs/API.md (Scores) computed from the
    /// shipped calibration of `--pack`: expected false matches per search of a stranger,
    /// FPIR, and the score for FPIR 1e-2 and 1e-3. Loads no model.
    FpirTable,
    /// Compare ways of judging a face with little context around it (crop shrunk to fit,
    /// padded, a second fusion), out of fold with every "cannot judge" counted as a
    /// refusal; write the table, the shipped way's threshold curve and its rates per
    /// capture kind as Markdown.
    LivenessCandidates {
        #[arg(long)]
        manifest: PathBuf,
        /// Output file (default: print to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the detected faces and the embedding of the largest face of each photo as JSON lines.
    Embed { images: Vec<PathBuf> },
    /// Face quality: the measures of normal photos, how verification accuracy falls as
    /// the second photo of each pair is blurred, shrunk, darkened or compressed, and
    /// how many photos the enrolment minimums refuse.
    Quality {
        /// Pairs file (`name i j` / `name1 i name2 j`).
        #[arg(long)]
        pairs: PathBuf,
        /// Image folder (default: lfw-deepfunneled/images beside the pairs file).
        #[arg(long)]
        images: Option<PathBuf>,
    },
    /// Sideways photos: on every `face` and `multiface` row of a manifest, how often the
    /// photo's turns were tried and which turn was used, apart for the rows whose note
    /// says they were turned on purpose (pixel-rotated copies) and the ordinary ones.
    Orientation {
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Fit the score calibration table (score → false-match rate) on every
    /// cross-identity pair of a manifest's `face` rows, and write it as JSON.
    Calibrate {
        #[arg(long)]
        manifest: PathBuf,
        /// Output file (default: print to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let EvalTask::FpirTable = args.task {
        let calibration = Calibration::shipped(args.pipeline.pack)?;
        print!("{}", facesearch_face::fpir_table::render(&calibration));
        return Ok(());
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut pipeline_args = args.pipeline.clone();
    // Throughput: one single-threaded inference per job.
    pipeline_args.intra_threads.get_or_insert(1);
    let mut config = pipeline_args.config();
    config.runtime = RuntimeOptions { sessions_per_model: jobs, ..config.runtime };
    let cache = facesearch_models::ModelCache::resolve(pipeline_args.models_dir.clone())?;
    let pipeline = FacePipeline::load(pipeline_args.pack, &cache, config)?;
    let ctx = Ctx { pipeline: &pipeline, jobs, json: args.json };
    match args.task {
        EvalTask::Verify { pairs, images } => verify(&ctx, &pairs, images),
        EvalTask::Identify { manifest } => identify(&ctx, &manifest),
        EvalTask::Liveness { manifest, threshold, source, fusion, score } => {
            liveness(&ctx, &manifest, threshold, &source, fusion.as_deref(), score.as_deref())
        }
        EvalTask::LivenessFit { manifest, source, features, l2, close_up_below, out, features_csv, extra_features } => {
            let fit = LivenessFitArgs { source, features, l2, close_up_below, out, features_csv, extra_features };
            liveness_fit(&ctx, &manifest, &fit)
        }
        EvalTask::LivenessCandidates { manifest, out } => super::liveness_candidates::run(&ctx, &manifest, out),
        EvalTask::Calibrate { manifest, out } => calibrate(&ctx, &manifest, out),
        EvalTask::Embed { images } => embed(&ctx, &images),
        // Answered above, before any model is loaded.
        EvalTask::FpirTable => Ok(()),
        EvalTask::Orientation { manifest } => {
            let (base, rows) = read_manifest(&manifest)?;
            super::orientation_eval::run(ctx.pipeline, ctx.jobs, ctx.json, &base, &rows)
        }
        EvalTask::Quality { pairs, images } => {
            super::quality_eval::run(ctx.pipeline, ctx.jobs, ctx.json, &pairs, images)
        }
    }
}

pub(super) struct Ctx<'a> {
    pub(super) pipeline: &'a FacePipeline,
    jobs: usize,
    json: bool,
}

impl Ctx<'_> {
    /// Runs `f` on every item with `jobs` threads, keeping the order; reports progress on stderr.
    pub(super) fn map<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
        let results = super::parallel_map(items.len(), self.jobs, |i| {
            if i.is_multiple_of(200) {
                eprint!("\r{i}/{} images", items.len());
            }
            f(&items[i])
        });
        eprintln!("\r{0}/{0} images", items.len());
        results
    }

    /// The embedding of the chosen face of each photo (`None`: unreadable or no face).
    fn embed_all(&self, paths: &[PathBuf], choice: FaceChoice) -> Vec<Option<Vec<f32>>> {
        self.map(paths, |path| {
            let bytes = std::fs::read(path).ok()?;
            self.pipeline.probe(&bytes, choice, false).ok().map(|p| p.embedding)
        })
    }

    fn print<R: Serialize>(&self, report: &R, rows: Vec<Vec<String>>) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            println!("{}", table::render(&["measure", "value"], &rows));
        }
        Ok(())
    }
}

fn pct(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

pub(super) fn read_manifest(path: &Path) -> anyhow::Result<(PathBuf, Vec<ManifestRow>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok((base, parse_manifest(&text)?))
}

#[derive(Serialize)]
struct VerifyOutput {
    pack: String,
    faces_not_found: usize,
    images: usize,
    pairs_skipped: usize,
    #[serde(flatten)]
    report: facesearch_eval::VerificationReport,
}

fn verify(ctx: &Ctx, pairs_path: &Path, images: Option<PathBuf>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pairs_path).with_context(|| format!("reading {}", pairs_path.display()))?;
    let pairs = parse_pairs(&text)?;
    if pairs.is_empty() {
        bail!("no pairs in {}", pairs_path.display());
    }
    let images =
        images.unwrap_or_else(|| pairs_path.parent().unwrap_or(Path::new(".")).join("lfw-deepfunneled/images"));
    // Pairs whose photos are not in the image folder are skipped and counted.
    let total_pairs = pairs.len();
    let pairs: Vec<_> =
        pairs.into_iter().filter(|p| p.a.lfw_path(&images).is_file() && p.b.lfw_path(&images).is_file()).collect();
    let skipped = total_pairs - pairs.len();
    if pairs.is_empty() {
        bail!("none of the photos of {} are in {}", pairs_path.display(), images.display());
    }
    let mut paths: Vec<PathBuf> = pairs.iter().flat_map(|p| [p.a.lfw_path(&images), p.b.lfw_path(&images)]).collect();
    paths.sort();
    paths.dedup();
    // LFW photos are centred on the labelled person; others may be larger in the frame.
    let embeddings: HashMap<&PathBuf, Option<Vec<f32>>> =
        paths.iter().zip(ctx.embed_all(&paths, FaceChoice::Central)).collect();
    let not_found = embeddings.values().filter(|e| e.is_none()).count();
    // A photo whose face is not found makes its pairs fail: similarity −1.
    let scores: Vec<(f32, bool)> = pairs
        .iter()
        .map(|p| {
            let (a, b) = (&embeddings[&p.a.lfw_path(&images)], &embeddings[&p.b.lfw_path(&images)]);
            let s = match (a, b) {
                (Some(a), Some(b)) => cosine(a, b),
                _ => -1.0,
            };
            (s, p.same)
        })
        .collect();
    let report = verification_report(&scores, None);
    let rows = vec![
        vec!["pack".into(), ctx.pipeline.pack().to_string()],
        vec![
            "pairs (genuine / impostor)".into(),
            format!("{} ({} / {})", report.pairs, report.genuine, report.impostors),
        ],
        vec!["10-fold accuracy".into(), format!("{} ± {}", pct(report.accuracy_mean), pct(report.accuracy_std))],
        vec!["mean threshold (cosine)".into(), format!("{:.3}", report.best_threshold_mean)],
        vec!["TAR @ FAR 1e-3".into(), pct(report.tar_at_far_1e3)],
        vec!["TAR @ FAR 1e-4".into(), pct(report.tar_at_far_1e4)],
        vec!["faces not found".into(), format!("{not_found} of {} images", paths.len())],
        vec!["pairs skipped (photo missing)".into(), skipped.to_string()],
    ];
    let output = VerifyOutput {
        pack: ctx.pipeline.pack().to_string(),
        faces_not_found: not_found,
        images: paths.len(),
        pairs_skipped: skipped,
        report,
    };
    ctx.print(&output, rows)
}

#[derive(Serialize)]
struct IdentifyOutput {
    pack: String,
    faces_not_found: usize,
    #[serde(flatten)]
    report: facesearch_eval::IdentificationReport,
}

fn identify(ctx: &Ctx, manifest: &Path) -> anyhow::Result<()> {
    let (base, rows) = read_manifest(manifest)?;
    let faces: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.kind == "face" && !r.identity.is_empty())
        .map(|r| (r.identity.clone(), r.path.clone()))
        .collect();
    let protocol = build_open_set_protocol(&faces);
    let embed = |list: &[(String, String)]| -> Vec<(String, Option<Vec<f32>>)> {
        let paths: Vec<PathBuf> = list.iter().map(|(_, p)| base.join(p)).collect();
        list.iter().map(|(id, _)| id.clone()).zip(ctx.embed_all(&paths, FaceChoice::Largest)).collect()
    };
    let gallery = embed(&protocol.gallery);
    let mated = embed(&protocol.mated_probes);
    let nonmated = embed(&protocol.nonmated_probes);
    let not_found = [&gallery, &mated, &nonmated].iter().flat_map(|l| l.iter()).filter(|(_, e)| e.is_none()).count();
    let gallery: Vec<(&str, &[f32])> =
        gallery.iter().filter_map(|(id, e)| e.as_deref().map(|e| (id.as_str(), e))).collect();
    let score = |probe: &Option<Vec<f32>>, identity: Option<&str>| -> ProbeResult {
        let Some(probe) = probe else {
            // A probe without a face is a miss for a mated probe and no alarm for a non-mated one.
            return ProbeResult { mated: identity.is_some(), true_score: None, best_nonmate_score: None };
        };
        let mut true_score = None;
        let mut best_nonmate: Option<f32> = None;
        for (id, g) in &gallery {
            let s = cosine(probe, g);
            if Some(*id) == identity {
                true_score = Some(true_score.map_or(s, |t: f32| t.max(s)));
            } else {
                best_nonmate = Some(best_nonmate.map_or(s, |b| b.max(s)));
            }
        }
        ProbeResult { mated: identity.is_some(), true_score, best_nonmate_score: best_nonmate }
    };
    let mut results: Vec<ProbeResult> = mated.iter().map(|(id, e)| score(e, Some(id))).collect();
    results.extend(nonmated.iter().map(|(_, e)| score(e, None)));
    let report = identification_report(&results, gallery.len(), None);
    let rows = vec![
        vec!["pack".into(), ctx.pipeline.pack().to_string()],
        vec![
            "gallery / mated / non-mated".into(),
            format!("{} / {} / {}", report.gallery_size, report.mated_probes, report.nonmated_probes),
        ],
        vec!["rank-1".into(), pct(report.rank1)],
        vec![
            "FNIR @ FPIR 1e-2".into(),
            format!("{} (threshold {:.3})", pct(report.fnir_at_fpir_1e2), report.threshold_at_fpir_1e2),
        ],
        vec![
            "FNIR @ FPIR 1e-3".into(),
            format!("{} (threshold {:.3})", pct(report.fnir_at_fpir_1e3), report.threshold_at_fpir_1e3),
        ],
        vec!["faces not found".into(), not_found.to_string()],
    ];
    ctx.print(&IdentifyOutput { pack: ctx.pipeline.pack().to_string(), faces_not_found: not_found, report }, rows)
}

#[derive(Serialize)]
struct LivenessOutput {
    scoring: String,
    no_face: usize,
    #[serde(flatten)]
    report: facesearch_eval::PadReport,
}

/// What the liveness check made of one manifest row.
enum LivenessOutcome {
    /// Unreadable, or no face found.
    NoFace,
    CannotJudge,
    /// The features and the face they were measured on.
    Judged(LivenessFeatures, BBox),
}

/// The `live`/`spoof` (and `face`) rows of the chosen sources.
pub(super) fn liveness_rows<'a>(rows: &'a [ManifestRow], sources: &[String]) -> Vec<&'a ManifestRow> {
    rows.iter()
        .filter(|r| matches!(r.kind.as_str(), "live" | "spoof" | "face"))
        .filter(|r| sources.is_empty() || sources.contains(&r.source))
        .collect()
}

/// The liveness features of the largest face of each row's photo.
fn liveness_outcomes(ctx: &Ctx, base: &Path, rows: &[&ManifestRow]) -> Vec<LivenessOutcome> {
    ctx.map(rows, |row| {
        let Ok(bytes) = std::fs::read(base.join(&row.path)) else { return LivenessOutcome::NoFace };
        let Ok(image) = ctx.pipeline.decode(&bytes) else { return LivenessOutcome::NoFace };
        let Some(face) = ctx.pipeline.detect(&image.rgb).ok().and_then(|f| f.into_iter().next()) else {
            return LivenessOutcome::NoFace;
        };
        match ctx.pipeline.liveness_features(&image.rgb, &face) {
            Ok(Ok(features)) => LivenessOutcome::Judged(features, face.bbox),
            Ok(Err(_)) => LivenessOutcome::CannotJudge,
            Err(_) => LivenessOutcome::NoFace,
        }
    })
}

/// The PAD samples of the rows with a face: `score` for a judged one (called in row
/// order), no score for one that cannot be judged.
fn pad_samples(
    rows: &[&ManifestRow],
    outcomes: &[LivenessOutcome],
    mut score: impl FnMut(&LivenessFeatures) -> Option<f32>,
) -> Vec<LivenessSample> {
    rows.iter()
        .zip(outcomes)
        .filter_map(|(row, outcome)| {
            let live_score = match outcome {
                LivenessOutcome::NoFace => return None,
                LivenessOutcome::CannotJudge => None,
                LivenessOutcome::Judged(f, _) => score(f),
            };
            Some(LivenessSample {
                live_score,
                is_attack: row.kind == "spoof",
                attack_type: row.attack_type().unwrap_or("none").to_string(),
            })
        })
        .collect()
}

fn feature_index(name: &str) -> anyhow::Result<usize> {
    FEATURE_NAMES
        .iter()
        .position(|n| *n == name)
        .with_context(|| format!("unknown liveness feature {name:?} (known: {})", FEATURE_NAMES.join(", ")))
}

fn liveness(
    ctx: &Ctx,
    manifest: &Path,
    threshold: f32,
    sources: &[String],
    fusion_file: Option<&Path>,
    single: Option<&str>,
) -> anyhow::Result<()> {
    let (base, rows) = read_manifest(manifest)?;
    let rows = liveness_rows(&rows, sources);
    let fusion: Fusion = match fusion_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Fusion::parse(&text, &FEATURE_NAMES)?
        }
        None => Fusion::shipped().clone(),
    };
    let single = single.map(feature_index).transpose()?;
    let scoring = match (single, fusion_file) {
        (Some(i), _) => format!("single feature {}", FEATURE_NAMES[i]),
        (None, Some(path)) => format!("fusion {}", path.display()),
        (None, None) => "shipped fusion".to_string(),
    };
    let outcomes = liveness_outcomes(ctx, &base, &rows);
    let no_face = outcomes.iter().filter(|o| matches!(o, LivenessOutcome::NoFace)).count();
    let samples = pad_samples(&rows, &outcomes, |f| {
        Some(match single {
            Some(i) => sigmoid(f.values[i]) as f32,
            None => fusion.score_at(f.context, &FEATURE_NAMES, &f.values) as f32,
        })
    });
    let report = pad_report(&samples, threshold);
    let mut out = vec![vec!["scoring".into(), scoring.clone()]];
    out.extend(pad_rows(&report));
    out.push(vec!["no face found".into(), no_face.to_string()]);
    ctx.print(&LivenessOutput { scoring, no_face, report }, out)
}

/// The table rows of a PAD report: headline rates with CIs, per attack type, the curve.
fn pad_rows(report: &facesearch_eval::PadReport) -> Vec<Vec<String>> {
    let ci = |(lo, hi): (f64, f64)| format!("(95% CI {} – {})", pct(lo), pct(hi));
    let mut out = vec![
        vec!["threshold".into(), format!("{:.3}", report.threshold)],
        vec![
            "attacks / bona fide (judged)".into(),
            format!(
                "{} / {} ({} / {})",
                report.attacks,
                report.bona_fide,
                report.attacks - report.cannot_judge_attacks,
                report.bona_fide - report.cannot_judge_bona_fide
            ),
        ],
        vec!["APCER (pooled)".into(), format!("{} {}", pct(report.apcer), ci(report.apcer_ci95))],
        vec!["APCER (worst type)".into(), pct(report.apcer_max_type)],
        vec!["BPCER".into(), format!("{} {}", pct(report.bpcer), ci(report.bpcer_ci95))],
        vec![
            "EER".into(),
            format!("{} {} at threshold {:.3}", pct(report.eer), ci(report.eer_ci95), report.eer_threshold),
        ],
        vec![
            "BPCER at APCER ≤ 5 %".into(),
            format!("{} at threshold {:.3}", pct(report.bpcer_at_apcer_5), report.threshold_at_apcer_5),
        ],
        vec![
            "cannot judge (attacks / bona fide)".into(),
            format!("{} / {}", report.cannot_judge_attacks, report.cannot_judge_bona_fide),
        ],
        vec![
            "counting cannot judge as refused".into(),
            format!("APCER {} BPCER {}", pct(report.apcer_with_refusals), pct(report.bpcer_with_refusals)),
        ],
        vec![
            "same, BPCER at APCER ≤ 5 %".into(),
            format!(
                "{} at threshold {:.3}",
                pct(report.bpcer_with_refusals_at_apcer_5),
                report.threshold_with_refusals_at_apcer_5
            ),
        ],
    ];
    for t in &report.per_attack_type {
        out.push(vec![
            format!("APCER {}", t.attack_type),
            format!("{} of {} judged {} ({} cannot judge)", pct(t.apcer), t.attacks, ci(t.apcer_ci95), t.cannot_judge),
        ]);
    }
    for p in &report.curve {
        out.push(vec![
            format!("curve t={:.3}", p.threshold),
            format!(
                "APCER {} BPCER {} (refusals counted: APCER {} BPCER {})",
                pct(p.apcer),
                pct(p.bpcer),
                pct(p.apcer_with_refusals),
                pct(p.bpcer_with_refusals)
            ),
        ]);
    }
    out
}

/// The L2 penalty of the shipped fusion.
pub(super) const DEFAULT_L2: f64 = 1.0;

/// Context below which the shipped fusion scores a face with its close-up weights: the
/// context the service needed before close-ups were judged (a 2.7× view shrunk by more
/// than 40 %), not a value tuned on the evaluation set.
pub(super) const CLOSE_UP_BELOW: f64 = 1.6;

pub(super) fn default_fit_sources() -> Vec<String> {
    vec!["fullframe-liveness".into(), "silent-face-antispoofing".into()]
}

pub(super) fn default_fit_features() -> Vec<String> {
    ["model_logit_4_0_flipavg", "saturation:above", "sharpness:below"].map(String::from).to_vec()
}

struct LivenessFitArgs {
    source: Vec<String>,
    features: Vec<String>,
    l2: f64,
    close_up_below: f64,
    out: Option<PathBuf>,
    features_csv: Option<PathBuf>,
    extra_features: Option<PathBuf>,
}

/// Where a fitted feature's values come from.
enum FeatureColumn {
    /// A feature the service computes (index into [`FEATURE_NAMES`]).
    Builtin(usize),
    /// A column of the `--extra-features` file.
    Extra(usize),
}

/// Candidate features computed outside facesearch, by manifest path (none without a file).
#[derive(Default)]
struct ExtraFeatures {
    names: Vec<String>,
    values: HashMap<String, Vec<f64>>,
}

impl ExtraFeatures {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let records = facesearch_eval::parse_csv(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut records = records.into_iter();
        let header = records.next().with_context(|| format!("{} is empty", path.display()))?;
        if header.first().map(String::as_str) != Some("path") || header.len() < 2 {
            bail!("{}: the first column must be `path`, followed by at least one feature column", path.display());
        }
        let names = header[1..].to_vec();
        if let Some(name) = names.iter().find(|n| FEATURE_NAMES.contains(&n.as_str())) {
            bail!("{}: column {name:?} has the name of a feature facesearch computes; rename it", path.display());
        }
        let mut values = HashMap::new();
        for (line, record) in records.enumerate() {
            let line = line + 2;
            if record.len() != header.len() {
                bail!("{} line {line}: {} fields, the header has {}", path.display(), record.len(), header.len());
            }
            let row = record[1..]
                .iter()
                .zip(&names)
                .map(|(v, name)| match v.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok(x),
                    _ => bail!("{} line {line}: {name} = {v:?} is not a finite number", path.display()),
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
            if values.insert(record[0].clone(), row).is_some() {
                bail!("{} line {line}: {} is listed twice", path.display(), record[0]);
            }
        }
        Ok(Self { names, values })
    }
}

#[derive(Serialize)]
struct LivenessFitOutput {
    fusion: Fusion,
    out_of_fold: facesearch_eval::PadReport,
}

/// The cross-validation group of a row: its collection (the first two path parts,
/// e.g. one GitHub repository's samples: one person, one room, one camera).
pub(super) fn fit_group(row: &ManifestRow) -> String {
    row.path.split('/').take(2).collect::<Vec<_>>().join("/")
}

fn liveness_fit(ctx: &Ctx, manifest: &Path, args: &LivenessFitArgs) -> anyhow::Result<()> {
    let (base, rows) = read_manifest(manifest)?;
    // Attacks of type `other` (synthetic faces) are no physical presentation: not fitted on.
    let rows: Vec<&ManifestRow> = liveness_rows(&rows, &args.source)
        .into_iter()
        .filter(|r| matches!(r.kind.as_str(), "live" | "spoof") && r.attack_type() != Some("other"))
        .collect();
    // `name`, or `name:above` / `name:below` for a one-sided input.
    let specs: Vec<(&str, Option<Hinge>)> = args
        .features
        .iter()
        .map(|spec| match spec.split_once(':') {
            None => Ok((spec.as_str(), None)),
            Some((name, "above")) => Ok((name, Some(Hinge::Above))),
            Some((name, "below")) => Ok((name, Some(Hinge::Below))),
            Some((_, side)) => bail!("{spec:?}: a one-sided feature is `name:above` or `name:below`, not {side:?}"),
        })
        .collect::<anyhow::Result<_>>()?;
    let extra = args.extra_features.as_deref().map(ExtraFeatures::read).transpose()?.unwrap_or_default();
    let columns: Vec<FeatureColumn> = specs
        .iter()
        .map(|(name, _)| match extra.names.iter().position(|n| n == name) {
            Some(j) => Ok(FeatureColumn::Extra(j)),
            None => feature_index(name).map(FeatureColumn::Builtin),
        })
        .collect::<anyhow::Result<_>>()?;
    let uses_extra = columns.iter().any(|c| matches!(c, FeatureColumn::Extra(_)));
    if uses_extra && args.out.is_some() {
        bail!(
            "a fusion with features from --extra-features cannot be written with --out: the service does not compute them"
        );
    }
    let hinges: Vec<Option<Hinge>> = specs.iter().map(|(_, h)| *h).collect();
    let outcomes = liveness_outcomes(ctx, &base, &rows);
    let judged: Vec<(&ManifestRow, &LivenessFeatures, &BBox)> = rows
        .iter()
        .zip(&outcomes)
        .filter_map(|(row, o)| match o {
            LivenessOutcome::Judged(f, face) => Some((*row, f, face)),
            _ => None,
        })
        .collect();
    if judged.is_empty() {
        bail!("no judged liveness samples in {}", manifest.display());
    }
    let x: Vec<Vec<f64>> = judged
        .iter()
        .map(|(row, f, _)| {
            columns
                .iter()
                .map(|c| match c {
                    FeatureColumn::Builtin(i) => Ok(f.values[*i]),
                    FeatureColumn::Extra(j) => extra
                        .values
                        .get(&row.path)
                        .map(|v| v[*j])
                        .with_context(|| format!("--extra-features has no row for {}", row.path)),
                })
                .collect::<anyhow::Result<Vec<f64>>>()
        })
        .collect::<anyhow::Result<_>>()?;
    // The positive class is bona fide: the fused score is a live score.
    let y: Vec<bool> = judged.iter().map(|(r, _, _)| r.kind == "live").collect();
    let groups: Vec<String> = judged.iter().map(|(r, _, _)| fit_group(r)).collect();
    let group_count = groups.iter().collect::<std::collections::BTreeSet<_>>().len();
    if group_count < 2 || y.iter().all(|&l| l) || y.iter().all(|&l| !l) {
        bail!("cross-validation needs live and spoof samples from at least two collections");
    }
    // Close-ups and faces with context each get their own weights, cross-validated apart.
    let close_up: Vec<bool> = judged.iter().map(|(_, f, _)| f64::from(f.context) < args.close_up_below).collect();
    let part = |wanted: bool| -> Vec<usize> { (0..judged.len()).filter(|&i| close_up[i] == wanted).collect() };
    let (main_rows, close_rows) = (part(false), part(true));
    let pick = |rows: &[usize]| -> (Vec<Vec<f64>>, Vec<bool>, Vec<String>) {
        (
            rows.iter().map(|&i| x[i].clone()).collect(),
            rows.iter().map(|&i| y[i]).collect(),
            rows.iter().map(|&i| groups[i].clone()).collect(),
        )
    };
    let mut oof = vec![f64::NAN; judged.len()];
    for rows in [&main_rows, &close_rows] {
        let (px, py, pg) = pick(rows);
        if !(py.contains(&true) && py.contains(&false)) {
            if rows.is_empty() {
                continue;
            }
            bail!("the {} faces need live and spoof samples to fit their weights", rows.len());
        }
        for (&i, p) in rows.iter().zip(leave_one_group_out(&px, &py, &pg, &hinges, args.l2)) {
            oof[i] = p;
        }
    }
    // Out-of-fold scores of the judged rows, and the rows the check cannot judge (kept
    // so the report also gives the rates counting those refusals).
    let mut oof_scores = oof.iter();
    let samples = pad_samples(&rows, &outcomes, |_| oof_scores.next().map(|&p| p as f32));
    // The operating point: the out-of-fold equal-error threshold, counting every face
    // the check cannot judge as rejected (the service refuses it).
    let raw_threshold = pad_report(&samples, 0.5).eer_with_refusals_threshold;
    let shift = operating_logit(&samples, raw_threshold);
    // Reported on the shipped score's scale: the operating point moved to 0.5, so the
    // curve's thresholds are the ones a deployment would set.
    let shipped_scale: Vec<LivenessSample> = samples
        .iter()
        .map(|s| LivenessSample {
            live_score: s.live_score.map(|p| sigmoid(sigmoid_logit(f64::from(p)) - shift) as f32),
            ..s.clone()
        })
        .collect();
    let out_of_fold = pad_report(&shipped_scale, facesearch_face::liveness::DEFAULT_THRESHOLD);
    let (mx, my, _) = pick(&main_rows);
    let model = fit_logistic(&mx, &my, &hinges, args.l2);
    let close_model = (!close_rows.is_empty()).then(|| {
        let (cx, cy, _) = pick(&close_rows);
        fit_logistic(&cx, &cy, &hinges, args.l2)
    });
    let mut command = format!("facesearch eval liveness-fit --manifest {}", manifest.display());
    // Settings that change the boxes or the judged set change the fit: recorded when not the default.
    let pipeline_config = ctx.pipeline.config();
    if ctx.pipeline.pack() != facesearch_face::Pack::Open {
        command += &format!(" --pack {}", ctx.pipeline.pack());
    }
    if pipeline_config.liveness.min_context != facesearch_face::LivenessConfig::default().min_context {
        command += &format!(" --liveness-min-context {}", pipeline_config.liveness.min_context);
    }
    if args.source != default_fit_sources() {
        command += &format!(" --source {}", args.source.join(","));
    }
    if args.features != default_fit_features() {
        command += &format!(" --features {}", args.features.join(","));
    }
    if args.l2 != DEFAULT_L2 {
        command += &format!(" --l2 {}", args.l2);
    }
    if args.close_up_below != CLOSE_UP_BELOW {
        command += &format!(" --close-up-below {}", args.close_up_below);
    }
    if let Some(path) = args.extra_features.as_ref().filter(|_| uses_extra) {
        command += &format!(" --extra-features {}", path.display());
    }
    command += " --out crates/face/liveness/fusion.json";
    let fusion = Fusion {
        about: "Liveness fusion: live score = logistic(intercept + sum of weight × (feature − mean) / scale). \
                A one-sided feature counts only how far it lies above or below its knot (the median of the live \
                samples), so it can only count against liveness. \
                A face with less context than `close_up.below_context` is scored with the close-up weights, \
                fitted on such close-ups only. \
                The intercepts include the shift that puts the out-of-fold equal-error operating point \
                (counting refusals) at 0.5. \
                Fitted on the manifest's liveness sets only; regenerate with `command`."
            .into(),
        command,
        features: fusion_features(&specs, &model),
        intercept: round_to(model.intercept - shift, 6),
        close_up: close_model.map(|m| CloseUpFusion {
            below_context: args.close_up_below,
            features: fusion_features(&specs, &m),
            intercept: round_to(m.intercept - shift, 6),
        }),
        l2: args.l2,
        validation: FusionValidation {
            folds: format!("leave one collection out ({group_count} collections)"),
            attacks: out_of_fold.attacks - out_of_fold.cannot_judge_attacks,
            bona_fide: out_of_fold.bona_fide - out_of_fold.cannot_judge_bona_fide,
            apcer: round_to(out_of_fold.apcer, 6),
            bpcer: round_to(out_of_fold.bpcer, 6),
            eer: round_to(out_of_fold.eer, 6),
            raw_threshold: round_to(f64::from(raw_threshold), 6),
        },
    };
    let json = serde_json::to_string_pretty(&fusion)? + "\n";
    match &args.out {
        Some(path) => std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?,
        None if !ctx.json => print!("{json}"),
        None => {}
    }
    if let Some(path) = &args.features_csv {
        // The face box (pixels of the decoded, EXIF-oriented photo) lets a script outside
        // facesearch measure a candidate feature on the same face.
        let mut csv = format!(
            "path,group,kind,attack_type,oof_score,face_x1,face_y1,face_x2,face_y2,context,{}\n",
            FEATURE_NAMES.join(",")
        );
        for ((row, f, face), p) in judged.iter().zip(&oof) {
            let values: Vec<String> = f.values.iter().map(|v| format!("{v:.6}")).collect();
            csv += &format!(
                "{},{},{},{},{p:.6},{:.1},{:.1},{:.1},{:.1},{:.3},{}\n",
                row.path,
                fit_group(row),
                row.kind,
                row.attack_type().unwrap_or("none"),
                face.x1,
                face.y1,
                face.x2,
                face.y2,
                f.context,
                values.join(",")
            );
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&LivenessFitOutput { fusion, out_of_fold })?);
    } else {
        let mut rows = vec![
            vec!["features".into(), args.features.join(", ")],
            vec!["L2".into(), args.l2.to_string()],
            vec!["folds".into(), fusion.validation.folds.clone()],
            vec!["not judged (cannot judge / no face)".into(), (rows.len() - judged.len()).to_string()],
        ];
        rows.extend(pad_rows(&out_of_fold));
        eprintln!("out-of-fold (cross-validated) rates:\n{}", table::render(&["measure", "value"], &rows));
    }
    Ok(())
}

/// The shipped form of a fitted model's inputs.
fn fusion_features(specs: &[(&str, Option<Hinge>)], model: &facesearch_eval::LogisticModel) -> Vec<FusionFeature> {
    specs
        .iter()
        .enumerate()
        .map(|(j, (name, _))| FusionFeature {
            name: name.to_string(),
            one_sided: model.hinges[j].map(|(side, knot)| match side {
                Hinge::Above => OneSided::Above(round_to(knot, 6)),
                Hinge::Below => OneSided::Below(round_to(knot, 6)),
            }),
            mean: round_to(model.mean[j], 6),
            scale: round_to(model.scale[j], 6),
            weight: round_to(model.weights[j], 6),
        })
        .collect()
}

/// The log-odds the operating point moves to 0.5: halfway (in log-odds) between the
/// lowest score the equal-error threshold `t` accepts and the highest it rejects, so no
/// sample sits on the threshold where the last bits of arithmetic would decide it.
pub(super) fn operating_logit(samples: &[LivenessSample], t: f32) -> f64 {
    let below = samples.iter().filter_map(|s| s.live_score).filter(|&s| s < t).fold(f32::NEG_INFINITY, f32::max);
    let at = sigmoid_logit(f64::from(t));
    if below.is_finite() { (at + sigmoid_logit(f64::from(below))) / 2.0 } else { at }
}

/// ln(p / (1 − p)), the inverse of the logistic.
pub(super) fn sigmoid_logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

/// Photos that are re-crops or resizes of another photo in the set: not independent.
pub(super) fn is_derivative(row: &ManifestRow) -> bool {
    row.source.starts_with("derived") || ["aligned", "240p", "rot_"].iter().any(|m| row.path.contains(m))
}

fn calibrate(ctx: &Ctx, manifest: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let (base, rows) = read_manifest(manifest)?;
    let rows: Vec<&ManifestRow> =
        rows.iter().filter(|r| r.kind == "face" && !r.identity.is_empty() && !is_derivative(r)).collect();
    let paths: Vec<PathBuf> = rows.iter().map(|r| base.join(&r.path)).collect();
    let embeddings = ctx.embed_all(&paths, FaceChoice::Largest);
    let mut by_identity: BTreeMap<&str, Vec<&[f32]>> = BTreeMap::new();
    for (row, e) in rows.iter().zip(&embeddings) {
        if let Some(e) = e {
            by_identity.entry(row.identity.as_str()).or_default().push(e);
        }
    }
    let people: Vec<(&str, &Vec<&[f32]>)> = by_identity.iter().map(|(k, v)| (*k, v)).collect();
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for (i, (_, a)) in people.iter().enumerate() {
        for (x, ea) in a.iter().enumerate() {
            for eb in &a[x + 1..] {
                genuine.push(cosine(ea, eb));
            }
            for (_, b) in &people[i + 1..] {
                for eb in b.iter() {
                    impostor.push(cosine(ea, eb));
                }
            }
        }
    }
    let calibration = Calibration::fit(
        ctx.pipeline.pack().name(),
        &genuine,
        &impostor,
        &format!("facesearch eval calibrate --pack {} --manifest {}", ctx.pipeline.pack(), manifest.display()),
    )?;
    let json = serde_json::to_string_pretty(&calibration)? + "\n";
    match out {
        Some(path) => std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{json}"),
    }
    if !ctx.json {
        let rows: Vec<Vec<String>> = calibration
            .points
            .iter()
            .map(|p: &CalibrationPoint| {
                vec![
                    format!("{:.0}", p.score),
                    format!("{:.4}", p.similarity),
                    p.fmr.map_or("—".into(), |f| format!("{f:.0e}")),
                    p.tmr.map_or("—".into(), pct),
                ]
            })
            .collect();
        eprintln!("{}", table::render(&["score", "cosine", "false-match rate", "true-match rate"], &rows));
    }
    Ok(())
}

fn embed(ctx: &Ctx, images: &[PathBuf]) -> anyhow::Result<()> {
    for path in images {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let line = match ctx.pipeline.probe(&bytes, FaceChoice::Largest, true) {
            Ok(probe) => serde_json::json!({"path": path, "face": probe}),
            Err(e) => serde_json::json!({"path": path, "error": e.to_string()}),
        };
        println!("{line}");
    }
    Ok(())
}
