//! `facesearch eval liveness-candidates`: the ways of judging a face with little context
//! around it, compared out of fold with every "cannot judge" counted as a refusal (of a
//! live face: a false rejection; of an attack: a correct rejection), and the shipped
//! way's threshold curve and rates per capture kind. The output is a Markdown file kept
//! in the repository (`docs/liveness-candidates.md`), regenerated bit for bit by a test,
//! so the figures the documentation quotes come from a recorded command.
//!
//! Every candidate is fitted and scored the way the shipped fusion is
//! (`eval liveness-fit`): the same features, leave one collection out, the operating
//! point at the out-of-fold equal-error threshold (here counting refusals).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use facesearch_eval::{Hinge, LivenessSample, ManifestRow, PadReport, pad_report};
use facesearch_face::LivenessConfig;
use facesearch_face::liveness::{CropFit, FEATURE_NAMES, FEATURES, LivenessFeatures, context_crop};
use facesearch_face::liveness_fusion::{Fusion, sigmoid};

use super::eval::{
    Ctx, DEFAULT_L2, default_fit_features, default_fit_sources, fit_group, liveness_rows, operating_logit,
    read_manifest, sigmoid_logit,
};

/// One photo's face, measured every way a candidate may judge it.
struct Measured<'a> {
    row: &'a ManifestRow,
    group: String,
    /// Context of the largest view at the model's crop scale that fits in the photo.
    context: f32,
    /// The face box reaches beyond the photo: the face is cut off by the frame edge.
    cut_off: bool,
    /// The features with the views taken each [`CropFit`] way (in [`CropFit::ALL`] order).
    by_fit: Vec<LivenessFeatures>,
    /// A tight crop of the held-out set: scored, never fitted on.
    held_out: bool,
}

/// The held-out set of tight face crops (the face fills or overflows the photo).
const HELD_OUT_SOURCE: &str = "pyimagesearch-liveness";

/// Which faces a candidate refuses as "cannot judge".
#[derive(Clone, Copy, PartialEq)]
enum Refuse {
    Never,
    /// Context below this (the shipped rule before close-ups were judged).
    ContextBelow(f32),
    /// Only a face cut off by the frame edge.
    CutOff,
}

/// How a candidate scores the faces it judges.
#[derive(Clone, Copy, PartialEq)]
enum Fusions {
    /// One fusion for every judged face.
    One,
    /// Faces with context at least this: the one fusion fitted on them; below it, a
    /// second fusion of the same features fitted on the low-context faces only.
    SplitAt(f32),
    /// One fusion, fitted only on the faces with context at least this, judging every face.
    FitAbove(f32),
}

struct Candidate {
    name: &'static str,
    fit: CropFit,
    refuse: Refuse,
    fusions: Fusions,
    /// Fitted on the model's score alone, without the image cues: how much of the
    /// error is the model's own.
    model_only: bool,
}

/// The context below which the service refused before close-ups were judged.
const OLD_MIN_CONTEXT: f32 = 1.6;

fn candidates() -> Vec<Candidate> {
    let c = |name, fit, refuse, fusions| Candidate { name, fit, refuse, fusions, model_only: false };
    vec![
        c("refuse context < 1.6 (before)", CropFit::Shrink, Refuse::ContextBelow(OLD_MIN_CONTEXT), Fusions::One),
        c("(a) shrink to fit (Silent-Face)", CropFit::Shrink, Refuse::Never, Fusions::One),
        c("(b) pad, edge replicated", CropFit::PadEdge, Refuse::Never, Fusions::One),
        c("(b) pad, black", CropFit::PadBlack, Refuse::Never, Fusions::One),
        c("(c) shrink, close-up weights below 1.6", CropFit::Shrink, Refuse::Never, Fusions::SplitAt(OLD_MIN_CONTEXT)),
        c("(a) shrink, refuse a face cut off", CropFit::Shrink, Refuse::CutOff, Fusions::One),
        c("(b) pad edge, refuse a face cut off", CropFit::PadEdge, Refuse::CutOff, Fusions::One),
        c(
            "(b) pad edge, close-up weights below 1.6",
            CropFit::PadEdge,
            Refuse::Never,
            Fusions::SplitAt(OLD_MIN_CONTEXT),
        ),
        c(
            "(d) shrink, fusion fitted on context ≥ 1.6 only",
            CropFit::Shrink,
            Refuse::Never,
            Fusions::FitAbove(OLD_MIN_CONTEXT),
        ),
        c(
            "(c) + refuse context < 1.0 (face larger than the photo)",
            CropFit::Shrink,
            Refuse::ContextBelow(1.0),
            Fusions::SplitAt(OLD_MIN_CONTEXT),
        ),
        c(
            "(a) + refuse context < 1.0 (face larger than the photo)",
            CropFit::Shrink,
            Refuse::ContextBelow(1.0),
            Fusions::One,
        ),
        Candidate {
            model_only: true,
            ..c(
                "the shipped way, the model's score alone (no image cues)",
                CropFit::Shrink,
                Refuse::ContextBelow(1.0),
                Fusions::SplitAt(OLD_MIN_CONTEXT),
            )
        },
    ]
}

/// Whether the candidate is the shipped configuration.
fn is_shipped(c: &Candidate, shipped: &LivenessConfig, fusion: &Fusion) -> bool {
    let refuse = if shipped.min_context > 0.0 { Refuse::ContextBelow(shipped.min_context) } else { Refuse::Never };
    let fusions = fusion.close_up.as_ref().map_or(Fusions::One, |c| Fusions::SplitAt(c.below_context as f32));
    !c.model_only && c.fit == shipped.fit && c.refuse == refuse && c.fusions == fusions
}

pub(super) fn run(ctx: &Ctx, manifest: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let (base, all_rows) = read_manifest(manifest)?;
    let sources = default_fit_sources();
    // As `liveness-fit`: physical presentations only (no synthetic faces).
    let physical = |r: &&ManifestRow| matches!(r.kind.as_str(), "live" | "spoof") && r.attack_type() != Some("other");
    let mut rows: Vec<&ManifestRow> = liveness_rows(&all_rows, &sources).into_iter().filter(physical).collect();
    let fit_rows = rows.len();
    rows.extend(liveness_rows(&all_rows, &[HELD_OUT_SOURCE.to_string()]).into_iter().filter(physical));
    let specs: Vec<(usize, Option<Hinge>)> = default_fit_features()
        .iter()
        .map(|spec| {
            let (name, hinge) = match spec.split_once(':') {
                None => (spec.as_str(), None),
                Some((name, "above")) => (name, Some(Hinge::Above)),
                Some((name, _)) => (name, Some(Hinge::Below)),
            };
            let index = FEATURE_NAMES.iter().position(|n| *n == name).with_context(|| format!("feature {name}"))?;
            Ok((index, hinge))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut wanted = [false; FEATURES];
    for (i, _) in &specs {
        wanted[*i] = true;
    }
    let indexed: Vec<(usize, &ManifestRow)> = rows.iter().copied().enumerate().collect();
    let measured: Vec<Option<Measured>> =
        ctx.map(&indexed, |(i, row)| measure(ctx, &base, row, &wanted, *i >= fit_rows));
    let no_face = measured.iter().take(fit_rows).filter(|m| m.is_none()).count();
    let (held_out, measured): (Vec<Measured>, Vec<Measured>) = measured.into_iter().flatten().partition(|m| m.held_out);
    if measured.is_empty() {
        bail!("no face found in the liveness rows of {}", manifest.display());
    }
    let shipped = ctx.pipeline.config().liveness;
    let mut text = header(manifest, &measured, &held_out, no_face);
    let mut shipped_result = None;
    // The model's own score is the fusion's first feature.
    ensure!(FEATURE_NAMES[specs[0].0].starts_with("model_"), "the fusion's first feature is not the model's score");
    for c in candidates() {
        let specs = if c.model_only { &specs[..1] } else { &specs[..] };
        let (scored, tight) = score_candidate(&c, &measured, &held_out, specs);
        let report = pad_report(&scored, facesearch_face::liveness::DEFAULT_THRESHOLD);
        let tight = pad_report(&tight, facesearch_face::liveness::DEFAULT_THRESHOLD);
        let mark = if is_shipped(&c, &shipped, Fusion::shipped()) { " **(shipped)**" } else { "" };
        writeln!(
            text,
            "| {}{mark} | {} / {} | {} | {} / {} | {} | {} ({} / {}) | {} / {} ({} / {} refused) |",
            c.name,
            report.cannot_judge_bona_fide,
            report.cannot_judge_attacks,
            pct(report.eer_with_refusals),
            pct(report.apcer_with_refusals),
            pct(report.bpcer_with_refusals),
            pct(report.bpcer_with_refusals_at_apcer_5),
            pct(report.eer),
            pct(report.apcer),
            pct(report.bpcer),
            pct(tight.apcer_with_refusals),
            pct(tight.bpcer_with_refusals),
            tight.cannot_judge_bona_fide,
            tight.cannot_judge_attacks,
        )?;
        if !mark.is_empty() {
            shipped_result = Some((c, scored, report));
        }
    }
    let Some((c, scored, report)) = shipped_result else {
        bail!("the shipped liveness configuration is none of the candidates");
    };
    text += &shipped_section(&c, &measured, &scored, &report);
    match out {
        Some(path) => std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// The largest face of a row's photo, measured every way (`None`: no face).
fn measure<'a>(
    ctx: &Ctx,
    base: &Path,
    row: &'a ManifestRow,
    wanted: &[bool; FEATURES],
    held_out: bool,
) -> Option<Measured<'a>> {
    let bytes = std::fs::read(base.join(&row.path)).ok()?;
    let image = ctx.pipeline.decode(&bytes).ok()?;
    let face = ctx.pipeline.detect(&image.rgb).ok()?.into_iter().next()?;
    let checker = ctx.pipeline.liveness_checker();
    let (w, h) = (image.rgb.width(), image.rgb.height());
    let context = context_crop(w, h, &face, checker.config().crop_scale)?.context;
    let b = face.bbox;
    let cut_off = b.x1 < 0.0 || b.y1 < 0.0 || b.x2 > w as f32 || b.y2 > h as f32;
    let mut by_fit = Vec::with_capacity(CropFit::ALL.len());
    for fit in CropFit::ALL {
        // The cues do not depend on how the model's views are taken: measured once.
        let mut want = *wanted;
        if !by_fit.is_empty() {
            want[6..].fill(false);
        }
        let mut features = checker.features_with(&image.rgb, &face, &want, fit).ok()?;
        if let Some(first) = by_fit.first() {
            let first: &LivenessFeatures = first;
            features.values[6..].copy_from_slice(&first.values[6..]);
        }
        by_fit.push(features);
    }
    Some(Measured { row, group: fit_group(row), context, cut_off, by_fit, held_out })
}

fn refused(c: &Candidate, m: &Measured) -> bool {
    match c.refuse {
        Refuse::Never => false,
        Refuse::ContextBelow(min) => m.context < min,
        Refuse::CutOff => m.cut_off,
    }
}

/// The candidate's out-of-fold samples, on the shipped scale (its operating point at
/// 0.5), and the held-out tight crops scored by the candidate fitted on every face.
fn score_candidate(
    c: &Candidate,
    measured: &[Measured],
    held_out: &[Measured],
    specs: &[(usize, Option<Hinge>)],
) -> (Vec<LivenessSample>, Vec<LivenessSample>) {
    let fit_index = CropFit::ALL.iter().position(|f| *f == c.fit).unwrap_or(0);
    let hinges: Vec<Option<Hinge>> = specs.iter().map(|(_, h)| *h).collect();
    // The held-out crops form one more group, never trained on: its fold is the fit on every face.
    let all: Vec<&Measured> = measured.iter().chain(held_out).collect();
    // Which fusion judges each face (None: refused).
    let part: Vec<Option<usize>> = all
        .iter()
        .map(|m| match (refused(c, m), c.fusions) {
            (true, _) => None,
            (false, Fusions::One | Fusions::FitAbove(_)) => Some(0),
            (false, Fusions::SplitAt(at)) => Some(usize::from(m.context < at)),
        })
        .collect();
    let mut raw = vec![f64::NAN; all.len()];
    for p in [0, 1] {
        let members: Vec<usize> = (0..all.len()).filter(|&i| part[i] == Some(p)).collect();
        if members.is_empty() {
            continue;
        }
        let x: Vec<Vec<f64>> =
            members.iter().map(|&i| specs.iter().map(|(j, _)| all[i].by_fit[fit_index].values[*j]).collect()).collect();
        let y: Vec<bool> = members.iter().map(|&i| all[i].row.kind == "live").collect();
        let groups: Vec<String> = members
            .iter()
            .map(|&i| if all[i].held_out { HELD_OUT_SOURCE.into() } else { all[i].group.clone() })
            .collect();
        let train: Vec<bool> = members
            .iter()
            .map(|&i| match c.fusions {
                Fusions::FitAbove(at) => !all[i].held_out && all[i].context >= at,
                _ => !all[i].held_out,
            })
            .collect();
        let oof = leave_one_group_out_fitted_on(&x, &y, &groups, &train, &hinges);
        for (&i, p) in members.iter().zip(oof) {
            raw[i] = p;
        }
    }
    let samples: Vec<LivenessSample> = all
        .iter()
        .zip(&raw)
        .zip(&part)
        .map(|((m, &s), part)| LivenessSample {
            // A face judged by a fusion that had no training data for its fold is refused.
            live_score: part.filter(|_| s.is_finite()).map(|_| s as f32),
            is_attack: m.row.kind == "spoof",
            attack_type: m.row.attack_type().unwrap_or("none").to_string(),
        })
        .collect();
    let (fit, tight) = samples.split_at(measured.len());
    // As `liveness-fit` does: the operating point (of the fitted faces) moved to 0.5.
    let shift = operating_logit(fit, pad_report(fit, 0.5).eer_with_refusals_threshold);
    let shifted = |samples: &[LivenessSample]| -> Vec<LivenessSample> {
        samples
            .iter()
            .map(|s| LivenessSample {
                live_score: s.live_score.map(|p| sigmoid(sigmoid_logit(f64::from(p)) - shift) as f32),
                ..s.clone()
            })
            .collect()
    };
    (shifted(fit), shifted(tight))
}

/// Leave one group out, each fold fitted only on the rows marked `train` of the other
/// groups, scoring every row of the left-out group.
fn leave_one_group_out_fitted_on(
    x: &[Vec<f64>],
    y: &[bool],
    groups: &[String],
    train: &[bool],
    hinges: &[Option<Hinge>],
) -> Vec<f64> {
    let mut out = vec![f64::NAN; x.len()];
    let names: std::collections::BTreeSet<&str> = groups.iter().map(String::as_str).collect();
    for name in names {
        let fold: Vec<usize> = (0..x.len()).filter(|&i| train[i] && groups[i] != name).collect();
        let fx: Vec<Vec<f64>> = fold.iter().map(|&i| x[i].clone()).collect();
        let fy: Vec<bool> = fold.iter().map(|&i| y[i]).collect();
        if fy.is_empty() {
            continue;
        }
        let model = facesearch_eval::fit_logistic(&fx, &fy, hinges, DEFAULT_L2);
        for i in (0..x.len()).filter(|&i| groups[i] == name) {
            out[i] = model.probability(&x[i]);
        }
    }
    out
}

fn pct(x: f64) -> String {
    if x.is_nan() { "—".into() } else { format!("{:.2} %", 100.0 * x) }
}

fn header(manifest: &Path, measured: &[Measured], held_out: &[Measured], no_face: usize) -> String {
    let tight_live = held_out.iter().filter(|m| m.row.kind == "live").count();
    let tight_context = |pick: fn(f32, f32) -> f32, start: f32| held_out.iter().map(|m| m.context).fold(start, pick);
    let live = measured.iter().filter(|m| m.row.kind == "live").count();
    let groups: std::collections::BTreeSet<&str> = measured.iter().map(|m| m.group.as_str()).collect();
    let low = |kind: &str| measured.iter().filter(|m| m.row.kind == kind && m.context < OLD_MIN_CONTEXT).count();
    let cut = |kind: &str| measured.iter().filter(|m| m.row.kind == kind && m.cut_off).count();
    format!(
        "# Liveness candidates: judging faces with little context\n\n\
         Generated by `facesearch eval liveness-candidates --manifest {} --out docs/liveness-candidates.md`; \
         tests/liveness_fit.rs checks that it regenerates bit for bit. Do not edit by hand.\n\n\
         {} faces ({live} live, {} attacks) from {} collections of `fullframe-liveness` and \
         `silent-face-antispoofing`; {no_face} photos without a detected face are left out. \
         Context below {OLD_MIN_CONTEXT}× the face: {} live / {} attacks; face cut off by the frame edge: \
         {} live / {} attacks.\n\n\
         Every figure is out of fold (leave one collection out: the fusion scoring a face never saw its \
         collection). \"Refusals counted\" counts every face the candidate cannot judge as rejected: for a \
         live face a false rejection, for an attack a correct one. The operating point is the out-of-fold \
         equal-error threshold counting refusals, moved to 0.5 as the shipped fusion's is. Fusion features: {}.\n\n\
         The last column scores the tight face crops of `{HELD_OUT_SOURCE}` ({} live / {} attacks, context \
         {:.2}–{:.2}×: the face fills or overflows the photo), never fitted on, with each candidate fitted on \
         every face above.\n\n\
         | candidate | cannot judge (live / attacks) | EER, refusals counted | at the operating point: APCER / BPCER, refusals counted | BPCER at APCER ≤ 5 %, refusals counted | judged only: EER (APCER / BPCER at the operating point) | held-out tight crops: APCER / BPCER at the operating point, refusals counted |\n\
         |---|---|---|---|---|---|---|\n",
        manifest.display(),
        measured.len(),
        measured.len() - live,
        groups.len(),
        low("live"),
        low("spoof"),
        cut("live"),
        cut("spoof"),
        default_fit_features().join(", "),
        tight_live,
        held_out.len() - tight_live,
        tight_context(f32::min, f32::INFINITY),
        tight_context(f32::max, 0.0),
    )
}

/// What a row is, for the per-capture-kind rates: the attack type of an attack; for a
/// live face the capture the manifest's note describes.
fn capture_kind(row: &ManifestRow) -> String {
    if let Some(t) = row.attack_type() {
        return format!("attack: {t}");
    }
    let note = row.note.to_ascii_lowercase();
    if note.contains("phone front-camera selfie") {
        "live: phone selfie".into()
    } else if note.contains("webcam") {
        "live: webcam selfie".into()
    } else {
        "live: other photo (press, stock, sample)".into()
    }
}

fn shipped_section(c: &Candidate, measured: &[Measured], scored: &[LivenessSample], report: &PadReport) -> String {
    let mut s = format!(
        "\n## Shipped: {}\n\n\
         Out of fold at the default threshold 0.5: APCER {} / BPCER {} counting refusals \
         (judged only: APCER {} / BPCER {}); BPCER at APCER ≤ 5 % counting refusals {} (threshold {:.3}).\n\n\
         ### Threshold curve, refusals counted\n\n\
         | threshold | APCER, refusals counted | BPCER, refusals counted | APCER judged | BPCER judged |\n\
         |---|---|---|---|---|\n",
        c.name,
        pct(report.apcer_with_refusals),
        pct(report.bpcer_with_refusals),
        pct(report.apcer),
        pct(report.bpcer),
        pct(report.bpcer_with_refusals_at_apcer_5),
        report.threshold_with_refusals_at_apcer_5,
    );
    // The grid of thresholds (the curve also holds the judged-only equal-error point).
    for p in report.curve.iter().filter(|p| (p.threshold * 20.0).fract() == 0.0) {
        let _ = writeln!(
            s,
            "| {:.3} | {} | {} | {} | {} |",
            p.threshold,
            pct(p.apcer_with_refusals),
            pct(p.bpcer_with_refusals),
            pct(p.apcer),
            pct(p.bpcer)
        );
    }
    s += "\n### Per capture kind at 0.5\n\n\
          An error is a live face rejected (refused or scored below 0.5) or an attack accepted.\n\n\
          | capture kind | faces | cannot judge | errors, refusals counted | judged only |\n\
          |---|---|---|---|---|\n";
    let mut kinds: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new(); // faces, refused, errors, judged errors
    for (m, sample) in measured.iter().zip(scored) {
        let e = kinds.entry(capture_kind(m.row)).or_default();
        e.0 += 1;
        match sample.live_score {
            None => {
                e.1 += 1;
                if !sample.is_attack {
                    e.2 += 1;
                }
            }
            Some(score) => {
                let error = (score >= 0.5) == sample.is_attack;
                e.2 += usize::from(error);
                e.3 += usize::from(error);
            }
        }
    }
    for (kind, (faces, refused, errors, judged_errors)) in kinds {
        let judged = faces - refused;
        let _ = writeln!(
            s,
            "| {kind} | {faces} | {refused} | {errors} ({}) | {judged_errors} of {judged} ({}) |",
            pct(errors as f64 / faces as f64),
            if judged == 0 { "—".into() } else { pct(judged_errors as f64 / judged as f64) },
        );
    }
    s
}
