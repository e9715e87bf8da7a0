//! `facesearch eval quality`: measurements behind the default enrolment quality
//! minimums. For each LFW pair the second photo is degraded synthetically (blur,
//! shrinking, darkening, JPEG compression) at increasing strength; at each level the
//! table shows the median of the measure the degradation acts on, the verification
//! accuracy and mean genuine similarity of the pairs, the share of genuine pairs that
//! still reach the search default score of 70, and the share of degraded photos the
//! default minimums refuse (and by which measure).

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use facesearch_eval::{parse_pairs, table, verification_report};
use facesearch_face::calibration::Calibration;
use facesearch_face::pipeline::choose;
use facesearch_face::{FaceChoice, FacePipeline, FaceQuality, QualityMinimums, cosine};
use image::{DynamicImage, RgbImage, imageops};
use serde::Serialize;

/// Reads one measure of a quality report.
type Measure = fn(&FaceQuality) -> f32;

/// A synthetic degradation of a photo.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "level", rename_all = "snake_case")]
enum Degradation {
    None,
    /// Gaussian blur of this sigma (pixels).
    Blur(f32),
    /// Shrunk by this factor (and left small: the face is that much smaller).
    Downscale(f32),
    /// Every pixel multiplied by this factor.
    Darken(f32),
    /// Re-encoded as JPEG of this quality.
    Jpeg(u8),
}

impl Degradation {
    fn apply(self, image: &RgbImage) -> anyhow::Result<RgbImage> {
        Ok(match self {
            Degradation::None => image.clone(),
            Degradation::Blur(sigma) => imageops::blur(image, sigma),
            Degradation::Downscale(f) => {
                let (w, h) = (((image.width() as f32 * f) as u32).max(1), ((image.height() as f32 * f) as u32).max(1));
                imageops::resize(image, w, h, imageops::FilterType::Triangle)
            }
            Degradation::Darken(f) => {
                let mut out = image.clone();
                out.pixels_mut().for_each(|p| p.0 = p.0.map(|v| (f32::from(v) * f).round() as u8));
                out
            }
            Degradation::Jpeg(q) => {
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut bytes), q)
                    .encode_image(&DynamicImage::ImageRgb8(image.clone()))?;
                image::load_from_memory(&bytes)?.to_rgb8()
            }
        })
    }

    /// The measure this degradation acts on, and its value in a quality report.
    fn measure(self) -> (&'static str, Measure) {
        match self {
            Degradation::None | Degradation::Blur(_) => ("sharpness", |q| q.sharpness),
            Degradation::Jpeg(_) => ("compression", |q| q.compression),
            Degradation::Downscale(_) => ("eye_distance", |q| q.eye_distance),
            Degradation::Darken(_) => ("brightness", |q| q.brightness),
        }
    }

    fn label(self) -> String {
        match self {
            Degradation::None => "none".into(),
            Degradation::Blur(s) => format!("blur σ={s}"),
            Degradation::Downscale(f) => format!("downscale ×{f}"),
            Degradation::Darken(f) => format!("darken ×{f}"),
            Degradation::Jpeg(q) => format!("JPEG q={q}"),
        }
    }
}

const LEVELS: &[Degradation] = &[
    Degradation::None,
    Degradation::Blur(1.0),
    Degradation::Blur(2.0),
    Degradation::Blur(3.0),
    Degradation::Blur(5.0),
    Degradation::Downscale(0.5),
    Degradation::Downscale(0.3),
    Degradation::Downscale(0.2),
    Degradation::Downscale(0.15),
    Degradation::Darken(0.5),
    Degradation::Darken(0.25),
    Degradation::Darken(0.12),
    Degradation::Darken(0.06),
    Degradation::Jpeg(30),
    Degradation::Jpeg(20),
    Degradation::Jpeg(15),
    Degradation::Jpeg(10),
    Degradation::Jpeg(5),
];

#[derive(Serialize)]
struct LevelRow {
    degradation: Degradation,
    measure: &'static str,
    median: f32,
    accuracy: f64,
    genuine_mean_similarity: f64,
    /// Share of genuine pairs that still reach the search default score of 70.
    genuine_at_score_70: f64,
    faces_not_found: usize,
    refused: f64,
    refused_by: BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct Report {
    photos: usize,
    minimums: QualityMinimums,
    /// Percentiles (1, 5, 50, 95, 99) of each measure over the undegraded photos.
    percentiles: BTreeMap<&'static str, [f32; 5]>,
    /// Share of the undegraded photos the default minimums refuse, and by which measure.
    refused: f64,
    refused_by: BTreeMap<&'static str, usize>,
    levels: Vec<LevelRow>,
}

/// The central face's quality and embedding.
fn analyse(pipeline: &FacePipeline, image: &RgbImage) -> Option<(FaceQuality, Vec<f32>)> {
    let faces = pipeline.detect(image).ok()?;
    let face = choose(&faces, FaceChoice::Central, (image.width(), image.height())).ok()?;
    Some((pipeline.quality(image, face).ok()?, pipeline.embed(image, face).ok()?))
}

fn percentile(sorted: &[f32], p: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(
    pipeline: &FacePipeline,
    jobs: usize,
    json: bool,
    pairs_path: &Path,
    images: Option<PathBuf>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pairs_path).with_context(|| format!("reading {}", pairs_path.display()))?;
    let images =
        images.unwrap_or_else(|| pairs_path.parent().unwrap_or(Path::new(".")).join("lfw-deepfunneled/images"));
    let pairs: Vec<_> = parse_pairs(&text)?
        .into_iter()
        .filter(|p| p.a.lfw_path(&images).is_file() && p.b.lfw_path(&images).is_file())
        .collect();
    if pairs.is_empty() {
        bail!("no usable pairs in {}", pairs_path.display());
    }
    let mut paths: Vec<PathBuf> = pairs.iter().flat_map(|p| [p.a.lfw_path(&images), p.b.lfw_path(&images)]).collect();
    paths.sort();
    paths.dedup();
    let decoded: Vec<Option<RgbImage>> = super::parallel_map(paths.len(), jobs, |i| {
        let bytes = std::fs::read(&paths[i]).ok()?;
        pipeline.decode(&bytes).ok().map(|d| d.rgb)
    });
    let minimums = QualityMinimums::default();
    let at_70 = Calibration::shipped(pipeline.pack())?.similarity_for(70.0);
    let refusals = |qualities: &[Option<FaceQuality>]| {
        let mut by: BTreeMap<&'static str, usize> = BTreeMap::new();
        for q in qualities.iter().flatten() {
            if let Some(f) = q.first_failure(&minimums) {
                *by.entry(f.measure).or_default() += 1;
            }
        }
        let n = qualities.iter().flatten().count().max(1);
        (by.values().sum::<usize>() as f64 / n as f64, by)
    };

    let clean: Vec<Option<(FaceQuality, Vec<f32>)>> =
        super::parallel_map(paths.len(), jobs, |i| decoded[i].as_ref().and_then(|img| analyse(pipeline, img)));
    let clean_quality: Vec<Option<FaceQuality>> = clean.iter().map(|c| c.as_ref().map(|(q, _)| *q)).collect();
    let index: HashMap<&PathBuf, usize> = paths.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let mut percentiles = BTreeMap::new();
    let measures: [(&'static str, Measure); 10] = [
        ("compression", |q| q.compression),
        ("face_size", |q| q.face_size),
        ("eye_distance", |q| q.eye_distance),
        ("sharpness", |q| q.sharpness),
        ("brightness", |q| q.brightness),
        ("clipped", |q| q.dark_fraction + q.bright_fraction),
        ("|yaw|", |q| q.yaw.abs()),
        ("|pitch|", |q| q.pitch.abs()),
        ("roll", |q| q.roll),
        ("detector_score", |q| q.detector_score),
    ];
    for (name, get) in measures {
        let mut v: Vec<f32> = clean_quality.iter().flatten().map(get).collect();
        v.sort_by(f32::total_cmp);
        percentiles.insert(name, [0.01, 0.05, 0.5, 0.95, 0.99].map(|p| percentile(&v, p)));
    }
    let (refused, refused_by) = refusals(&clean_quality);

    // The second photo of every pair, degraded at each level; the first stays clean.
    let seconds: Vec<usize> = {
        let mut s: Vec<usize> = pairs.iter().map(|p| index[&p.b.lfw_path(&images)]).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    let mut levels = Vec::new();
    for &level in LEVELS {
        eprintln!("{}", level.label());
        let degraded: Vec<Option<(FaceQuality, Vec<f32>)>> = super::parallel_map(seconds.len(), jobs, |k| {
            let image = decoded[seconds[k]].as_ref()?;
            analyse(pipeline, &level.apply(image).ok()?)
        });
        let by_path: HashMap<usize, &Option<(FaceQuality, Vec<f32>)>> =
            seconds.iter().copied().zip(degraded.iter()).collect();
        let scores: Vec<(f32, bool)> = pairs
            .iter()
            .map(|p| {
                let a = &clean[index[&p.a.lfw_path(&images)]];
                let b = by_path[&index[&p.b.lfw_path(&images)]];
                let s = match (a, b) {
                    (Some((_, a)), Some((_, b))) => cosine(a, b),
                    _ => -1.0,
                };
                (s, p.same)
            })
            .collect();
        let report = verification_report(&scores, None);
        let genuine: Vec<f64> = scores.iter().filter(|s| s.1).map(|s| f64::from(s.0)).collect();
        let qualities: Vec<Option<FaceQuality>> = degraded.iter().map(|d| d.as_ref().map(|(q, _)| *q)).collect();
        let (measure, get) = level.measure();
        let mut values: Vec<f32> = qualities.iter().flatten().map(get).collect();
        values.sort_by(f32::total_cmp);
        let (refused, refused_by) = refusals(&qualities);
        levels.push(LevelRow {
            degradation: level,
            measure,
            median: percentile(&values, 0.5),
            accuracy: report.accuracy_mean,
            genuine_mean_similarity: genuine.iter().sum::<f64>() / genuine.len().max(1) as f64,
            genuine_at_score_70: genuine.iter().filter(|&&s| s >= f64::from(at_70)).count() as f64
                / genuine.len().max(1) as f64,
            faces_not_found: qualities.iter().filter(|q| q.is_none()).count(),
            refused,
            refused_by,
        });
    }
    let report = Report { photos: paths.len(), minimums, percentiles, refused, refused_by, levels };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .percentiles
        .iter()
        .map(|(name, p)| std::iter::once(name.to_string()).chain(p.iter().map(|v| format!("{v:.2}"))).collect())
        .collect();
    println!("{} photos, undegraded", report.photos);
    println!("{}", table::render(&["measure", "p1", "p5", "p50", "p95", "p99"], &rows));
    println!("refused at the default minimums: {:.2} % {:?}\n", 100.0 * report.refused, report.refused_by);
    let rows: Vec<Vec<String>> = report
        .levels
        .iter()
        .map(|l| {
            vec![
                l.degradation.label(),
                format!("{} {:.1}", l.measure, l.median),
                format!("{:.2} %", 100.0 * l.accuracy),
                format!("{:.3}", l.genuine_mean_similarity),
                format!("{:.1} %", 100.0 * l.genuine_at_score_70),
                l.faces_not_found.to_string(),
                format!("{:.1} %", 100.0 * l.refused),
                format!("{:?}", l.refused_by),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &[
                "second photo",
                "median measure",
                "accuracy",
                "genuine cos",
                "genuine ≥ 70",
                "no face",
                "refused",
                "refused by"
            ],
            &rows
        )
    );
    Ok(())
}
