//! `facesearch eval verify | identify | liveness | calibrate`: accuracy of the face
//! pipeline on labelled photos, measured with the protocols of `facesearch-eval`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use facesearch_eval::{
    LivenessSample, ManifestRow, ProbeResult, build_open_set_protocol, identification_report, pad_report,
    parse_manifest, parse_pairs, table, verification_report,
};
use facesearch_face::calibration::{Calibration, CalibrationPoint};
use facesearch_face::{FaceChoice, FacePipeline, Liveness, RuntimeOptions, cosine};
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
    /// Presentation-attack detection on the `live`, `spoof` and `face` rows of a manifest.
    Liveness {
        #[arg(long)]
        manifest: PathBuf,
        /// Live-probability threshold: a face is live when its score is at least this.
        #[arg(long, default_value_t = facesearch_face::liveness::DEFAULT_THRESHOLD)]
        threshold: f32,
        /// Only rows of these sources (the manifest's `source` column), comma-separated.
        #[arg(long, value_delimiter = ',')]
        source: Vec<String>,
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
        EvalTask::Liveness { manifest, threshold, source } => liveness(&ctx, &manifest, threshold, &source),
        EvalTask::Calibrate { manifest, out } => calibrate(&ctx, &manifest, out),
        EvalTask::Embed { images } => embed(&ctx, &images),
        EvalTask::Quality { pairs, images } => {
            super::quality_eval::run(ctx.pipeline, ctx.jobs, ctx.json, &pairs, images)
        }
    }
}

struct Ctx<'a> {
    pipeline: &'a FacePipeline,
    jobs: usize,
    json: bool,
}

impl Ctx<'_> {
    /// Runs `f` on every item with `jobs` threads, keeping the order; reports progress on stderr.
    fn map<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
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

fn read_manifest(path: &Path) -> anyhow::Result<(PathBuf, Vec<ManifestRow>)> {
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
    no_face: usize,
    #[serde(flatten)]
    report: facesearch_eval::PadReport,
}

fn liveness(ctx: &Ctx, manifest: &Path, threshold: f32, sources: &[String]) -> anyhow::Result<()> {
    let (base, rows) = read_manifest(manifest)?;
    let rows: Vec<&ManifestRow> = rows
        .iter()
        .filter(|r| matches!(r.kind.as_str(), "live" | "spoof" | "face"))
        .filter(|r| sources.is_empty() || sources.contains(&r.source))
        .collect();
    let verdicts = ctx.map(&rows, |row| -> Option<Liveness> {
        let bytes = std::fs::read(base.join(&row.path)).ok()?;
        let image = ctx.pipeline.decode(&bytes).ok()?;
        let faces = ctx.pipeline.detect(&image.rgb).ok()?;
        ctx.pipeline.liveness(&image.rgb, faces.first()?).ok()
    });
    let no_face = verdicts.iter().filter(|v| v.is_none()).count();
    let samples: Vec<LivenessSample> = rows
        .iter()
        .zip(&verdicts)
        .filter_map(|(row, v)| {
            v.map(|v| LivenessSample {
                live_score: v.live_probability(),
                is_attack: row.kind == "spoof",
                attack_type: row.attack_type().unwrap_or("none").to_string(),
            })
        })
        .collect();
    let report = pad_report(&samples, threshold);
    let mut out = vec![
        vec!["threshold".into(), format!("{threshold:.2}")],
        vec!["attacks / bona fide judged".into(), format!("{} / {}", report.attacks, report.bona_fide)],
        vec![
            "APCER".into(),
            format!("{} (95% CI {} – {})", pct(report.apcer), pct(report.apcer_ci95.0), pct(report.apcer_ci95.1)),
        ],
        vec![
            "BPCER".into(),
            format!("{} (95% CI {} – {})", pct(report.bpcer), pct(report.bpcer_ci95.0), pct(report.bpcer_ci95.1)),
        ],
        vec!["EER".into(), format!("{} at threshold {:.3}", pct(report.eer), report.eer_threshold)],
        vec![
            "cannot judge (attacks / bona fide)".into(),
            format!("{} / {}", report.cannot_judge_attacks, report.cannot_judge_bona_fide),
        ],
        vec!["no face found".into(), no_face.to_string()],
    ];
    for t in &report.per_attack_type {
        out.push(vec![format!("APCER {}", t.attack_type), format!("{} of {}", pct(t.apcer), t.attacks)]);
    }
    for p in &report.curve {
        out.push(vec![format!("curve t={:.2}", p.threshold), format!("APCER {} BPCER {}", pct(p.apcer), pct(p.bpcer))]);
    }
    ctx.print(&LivenessOutput { no_face, report }, out)
}

/// Photos that are re-crops or resizes of another photo in the set: not independent.
fn is_derivative(row: &ManifestRow) -> bool {
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
