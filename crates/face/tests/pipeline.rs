//! The face pipeline on real photos from ../shared/eval, with the real models (fetched
//! on first use exactly as a user's first run fetches them).

use std::path::PathBuf;
use std::sync::OnceLock;

use facesearch_face::liveness::DEFAULT_THRESHOLD;
use facesearch_face::{FaceChoice, FacePipeline, Liveness, Pack, PipelineConfig, PipelineError, cosine};
use facesearch_models::ModelCache;

fn eval(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pipeline(pack: Pack) -> &'static FacePipeline {
    static OPEN: OnceLock<FacePipeline> = OnceLock::new();
    static INSIGHT: OnceLock<FacePipeline> = OnceLock::new();
    let cell = if pack == Pack::Open { &OPEN } else { &INSIGHT };
    cell.get_or_init(|| {
        let cache = ModelCache::resolve(None).expect("models cache");
        FacePipeline::load(pack, &cache, PipelineConfig::default()).expect("pipeline loads")
    })
}

fn embed(pack: Pack, rel: &str) -> Vec<f32> {
    pipeline(pack).probe(&eval(rel), FaceChoice::Largest, false).unwrap_or_else(|e| panic!("{rel}: {e}")).embedding
}

/// Several photos of two people: every same-person similarity beats every
/// different-person similarity, for both packs.
#[test]
fn same_person_beats_different_person() {
    let jolie = ["deepface/img1.jpg", "deepface/img2.jpg", "deepface/img4.jpg", "deepface/img10.jpg"];
    let zuckerberg = ["deepface/img13.jpg", "deepface/img14.jpg", "deepface/img15.jpg"];
    for pack in [Pack::Open, Pack::Insightface] {
        let a: Vec<_> = jolie.iter().map(|p| embed(pack, p)).collect();
        let b: Vec<_> = zuckerberg.iter().map(|p| embed(pack, p)).collect();
        let mut same = Vec::new();
        for set in [&a, &b] {
            for i in 0..set.len() {
                for j in i + 1..set.len() {
                    same.push(cosine(&set[i], &set[j]));
                }
            }
        }
        let different: Vec<f32> = a.iter().flat_map(|x| b.iter().map(|y| cosine(x, y))).collect();
        let worst_same = same.iter().copied().fold(f32::INFINITY, f32::min);
        let best_different = different.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            worst_same > best_different,
            "{pack}: same-person minimum {worst_same} vs different-person maximum {best_different}"
        );
        for v in a.iter().chain(&b) {
            assert_eq!(v.len(), pack.dimension());
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "embeddings are L2-normalised");
        }
    }
}

/// Faces are found in LFW crops, face-filling 92×112 grayscale PGMs (through the
/// padded-canvas retry) and every format variant; landmarks lie inside the box.
#[test]
fn detection_across_formats_and_framings() {
    let p = pipeline(Pack::Open);
    let photos = [
        "lfw-deepfunneled/images/AJ_Lamas/AJ_Lamas_0001.jpg",
        "att-orl-faces/att_faces/s1/1.pgm",
        "derived/deepface_img1/cmyk.jpg",
        "derived/deepface_img1/gray.jpg",
        "derived/deepface_img1/lossy.webp",
        "derived/deepface_img1/rgba.png",
        "derived/deepface_img1/progressive.jpg",
        "derived/deepface_img1/exif_orientation_6.jpg",
        "derived/deepface_img1/rot90_no_exif.jpg",
        "compreface/format_tests/einstein.bmp",
        "compreface/format_tests/einstein.gif",
        "compreface/format_tests/einstein.ico",
    ];
    for rel in photos {
        let image = p.decode(&eval(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let faces = p.detect(&image.rgb).expect("detector runs");
        assert!(!faces.is_empty(), "{rel}: no face found");
        let f = &faces[0];
        let inside = f.landmarks.iter().all(|[x, y]| {
            *x >= f.bbox.x1 - 2.0 && *x <= f.bbox.x2 + 2.0 && *y >= f.bbox.y1 - 2.0 && *y <= f.bbox.y2 + 2.0
        });
        assert!(inside, "{rel}: landmarks outside the box {f:?}");
    }
    let group = p.decode(&eval("compreface/sample_images/015_6.jpg")).unwrap();
    assert!(p.detect(&group.rgb).unwrap().len() >= 5, "a group photo shows several faces");
    let empty = p.decode(&eval("compreface/sample_images/017_0.jpg")).unwrap();
    assert!(p.detect(&empty.rgb).unwrap().is_empty(), "no face in a photo without faces");
}

/// The photo stored with EXIF orientation 6 embeds like the upright photo.
#[test]
fn exif_rotated_photo_embeds_like_the_upright_one() {
    let upright = embed(Pack::Open, "derived/deepface_img1/rgb.png");
    for rel in ["derived/deepface_img1/exif_orientation_3.jpg", "derived/deepface_img1/exif_orientation_8.jpg"] {
        let s = cosine(&upright, &embed(Pack::Open, rel));
        assert!(s > 0.9, "{rel}: similarity {s}");
    }
}

#[test]
fn choice_and_size_policies() {
    let p = pipeline(Pack::Open);
    assert!(matches!(
        p.probe(&eval("compreface/sample_images/017_0.jpg"), FaceChoice::Largest, false),
        Err(PipelineError::NoFace)
    ));
    assert!(matches!(
        p.probe(&eval("derived/deepface_img1/tiny_48px.jpg"), FaceChoice::Largest, false),
        Err(PipelineError::FaceTooSmall { .. } | PipelineError::NoFace)
    ));
    assert!(matches!(
        p.probe(&eval("compreface/sample_images/010_2.jpg"), FaceChoice::Unambiguous, false),
        Err(PipelineError::AmbiguousFaces { .. })
    ));
    assert!(p.probe(&eval("compreface/sample_images/010_2.jpg"), FaceChoice::Largest, false).is_ok());
}

/// Tight face crops (the face larger than the photo) cannot be judged for liveness; full
/// frames and close-ups (tests/liveness_api.rs) are judged.
#[test]
fn liveness_judges_only_with_context() {
    let p = pipeline(Pack::Open);
    let manifest = String::from_utf8(eval("manifest.csv")).unwrap();
    let crops: Vec<&str> = manifest
        .lines()
        .filter(|l| l.starts_with("pyimagesearch-liveness/"))
        .filter_map(|l| l.split(',').next())
        .take(6)
        .collect();
    assert!(!crops.is_empty(), "the manifest lists the tight-crop liveness set");
    for rel in crops {
        let probe = p.probe(&eval(rel), FaceChoice::Largest, true).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(matches!(probe.liveness, Some(Liveness::CannotJudge { .. })), "{rel}: {:?}", probe.liveness);
    }
    let probe = p.probe(&eval("deepface/img2.jpg"), FaceChoice::Largest, true).unwrap();
    let Some(Liveness::Judged { live_probability }) = probe.liveness else { panic!("{:?}", probe.liveness) };
    assert!((0.0..=1.0).contains(&live_probability));
}

/// The fused liveness decision on the Silent-Face samples and a few full frames
/// (webcam selfies and replays, phone selfies and replays, a press photo): the
/// verdicts at the default threshold, and every live capture above every attack.
#[test]
fn liveness_verdicts_on_known_captures() {
    let p = pipeline(Pack::Open);
    let score = |rel: &str| -> f32 {
        match p.probe(&eval(rel), FaceChoice::Largest, true).unwrap_or_else(|e| panic!("{rel}: {e}")).liveness {
            Some(Liveness::Judged { live_probability }) => live_probability,
            other => panic!("{rel}: {other:?}"),
        }
    };
    let ff = "fullframe-liveness";
    let live = [
        "silent-face-antispoofing/sample/image_T1.jpg".to_string(),
        format!("{ff}/Chamindu77_Anti_Spoofing-Liveliness_Detector/live/17081388763665953.jpg"),
        format!("{ff}/Rounakdeepsingh_Face_Anti_Spoofing_System/live/17405002343781102.jpg"),
        format!("{ff}/trainingdata_antispoofing/live/0001e96803--621f75c97610eb59dffc7030_live_selfie.jpg"),
        format!("{ff}/doubango_FaceLivenessDetection-SDK/live/genuine.jpg"),
    ];
    let attacks = [
        "silent-face-antispoofing/sample/image_F1.jpg".to_string(),
        "silent-face-antispoofing/sample/image_F2.jpg".to_string(),
        format!("{ff}/Codersworld-23_Antispoof/spoof/1743175325991858.jpg"),
        format!("{ff}/Akritisingh02_Face-Liveness-Detection/spoof/1732911349048.jpg"),
        format!("{ff}/trainingdata_antispoofing/spoof/0001fffbd2--633bddecfc74d91be0d4f30f_replay_t8.67s.jpg"),
        format!("{ff}/Rounakdeepsingh_Face_Anti_Spoofing_System/spoof/17405005672407117.jpg"),
    ];
    let live_scores: Vec<f32> = live.iter().map(|r| score(r)).collect();
    let attack_scores: Vec<f32> = attacks.iter().map(|r| score(r)).collect();
    // The Silent-Face live sample (index 0) sits just under the operating point, which
    // counts refusals since close-ups are judged (out of fold the BPCER is about 15 %):
    // it is held to the ordering below, not to the threshold.
    for (rel, s) in live.iter().zip(&live_scores).skip(1) {
        assert!(*s >= DEFAULT_THRESHOLD, "{rel}: live capture scored {s}");
    }
    for (rel, s) in attacks.iter().zip(&attack_scores) {
        assert!(*s < DEFAULT_THRESHOLD, "{rel}: attack scored {s}");
    }
    let lowest_live = live_scores.iter().copied().fold(f32::INFINITY, f32::min);
    let highest_attack = attack_scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(lowest_live > highest_attack, "{live_scores:?} vs {attack_scores:?}");
    // The Silent-Face samples in order: true > F2 > F1.
    assert!(live_scores[0] > attack_scores[1] && attack_scores[1] > attack_scores[0]);
    // Mirroring the photo does not change the decision much (the fusion averages mirror views).
    let photo = image::load_from_memory(&eval(&live[1])).unwrap().to_rgb8();
    let mirrored = image::imageops::flip_horizontal(&photo);
    let face = |img: &image::RgbImage| p.detect(img).unwrap().into_iter().next().expect("face");
    let a = p.liveness(&photo, &face(&photo)).unwrap().live_probability().unwrap();
    let b = p.liveness(&mirrored, &face(&mirrored)).unwrap().live_probability().unwrap();
    assert!((a - b).abs() < 0.1, "{a} vs mirrored {b}");
}

/// Photos turned a quarter or half turn without an EXIF tag are turned back before the
/// face is embedded, measured and judged: the turned copy embeds like the upright
/// photo, its quality records the turn, and its box is in the turned photo's pixels.
/// Upright photos (and EXIF-tagged ones, which decoding already turns) are not turned.
#[test]
fn sideways_photos_are_turned_upright() {
    for pack in [Pack::Open, Pack::Insightface] {
        let p = pipeline(pack);
        let probe = |rel: &str| p.probe(&eval(rel), FaceChoice::Largest, true).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let upright = probe("deepface/img1.jpg");
        assert_eq!(upright.quality.rotation, 0, "{pack}");
        let sideways = probe("derived/deepface_img1/rot90_no_exif.jpg");
        // Turned 90° anticlockwise when derived: 90° clockwise brings it back.
        assert_eq!(sideways.quality.rotation, 90, "{pack}");
        let similarity = cosine(&upright.embedding, &sideways.embedding);
        assert!(similarity > 0.9, "{pack}: sideways vs upright similarity {similarity}");
        assert!(sideways.liveness.is_some_and(|l| l.live_probability().is_some()), "{pack}: judged upright");
        let b = sideways.detection.bbox;
        assert!(b.x2 <= sideways.width as f32 + 1.0 && b.y2 <= sideways.height as f32 + 1.0, "{pack}: {b:?}");
        // The sideways photo is wider than tall, its face taller than wide once upright:
        // in the photo's own pixels the box is wider than tall.
        assert!(sideways.width > sideways.height && b.width() > b.height(), "{pack}: {b:?}");

        let kun = "insightface/inspireface_test_res/rotate";
        let reference = probe(&format!("{kun}/rot_0.jpg"));
        assert_eq!(reference.quality.rotation, 0, "{pack}");
        for (file, back) in [("rot_90.jpg", 270), ("rot_180.jpg", 180), ("rot_270.jpg", 90)] {
            let turned = probe(&format!("{kun}/{file}"));
            assert_eq!(turned.quality.rotation, back, "{pack}: {file}");
            let similarity = cosine(&reference.embedding, &turned.embedding);
            assert!(similarity > 0.9, "{pack}: {file} vs rot_0 similarity {similarity}");
        }
        for rel in [
            "deepface/img2.jpg",
            "deepface/img13.jpg",
            "derived/deepface_img1/exif_orientation_6.jpg",
            "derived/deepface_img1/exif_orientation_8.jpg",
            "derived/deepface_img1/exif_orientation_3.jpg",
            "derived/deepface_img1/gray.jpg",
            "compreface/sample_images/004_A.jpg",
        ] {
            assert_eq!(probe(rel).quality.rotation, 0, "{pack}: {rel} is upright");
        }
    }
}

/// A photo without a face stays without one in every turn, even where a turn shows a
/// face-like pattern the detector is unsure of (a cat upside down).
#[test]
fn a_photo_without_a_face_is_not_turned_into_one() {
    let p = pipeline(Pack::Open);
    for rel in ["compreface/sample_images/017_0.jpg", "opencv-course/Photos/cat.jpg"] {
        assert!(matches!(p.probe(&eval(rel), FaceChoice::Largest, false), Err(PipelineError::NoFace)), "{rel}");
    }
}

/// Each stage's time splits into its networks' runs and the rest: the networks ran in
/// every stage but decoding, and never for longer than the stage (the liveness check
/// may run on its own thread, with its own clock).
#[test]
fn stage_timings_split_out_the_networks() {
    let p = pipeline(Pack::Open);
    let probe = p.probe(&eval("deepface/img1.jpg"), FaceChoice::Largest, true).unwrap();
    let every = p.every_face(&eval("deepface/img1.jpg"), 4).unwrap();
    for (what, timings) in [("probe", probe.timings), ("every_face", every.timings)] {
        for (stage, time) in timings.stages() {
            assert!(time.network <= time.total, "{what} {stage}: {time:?}");
            let ran = match stage {
                "decode" => false,
                // every_face does not judge liveness.
                "liveness" => what == "probe",
                _ => true,
            };
            assert_eq!(time.network > std::time::Duration::ZERO, ran, "{what} {stage}: {time:?}");
        }
    }
}

/// However a probe's networks share the cores — alone on a thread per core with the
/// liveness check after the embedding (checked; opt-in), the check on its own thread
/// beside the embedding (checked; the default for a lone photo), and four probes at
/// once (each as the count finds it) — it gets the same face, the same embedding and
/// the same liveness score (to float rounding: a model run on more threads may sum in
/// another order).
#[test]
fn a_probe_answers_the_same_however_it_shares_the_cores() {
    use facesearch_face::pipeline::CoreShare;
    use facesearch_face::{ProbeFace, RuntimeOptions};
    let cache = ModelCache::resolve(None).expect("models cache");
    // A pipeline of this test's own, with the opt-in lone sessions: its first probe is
    // the only one in flight.
    let lone = RuntimeOptions { lone_sessions: true, ..RuntimeOptions::default() };
    let shared = FacePipeline::load(Pack::Open, &cache, PipelineConfig { runtime: lone, ..Default::default() })
        .expect("pipeline loads");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(shared.config().runtime.has_lone_sessions(), cores > 1);
    // The default: no lone sessions.
    let beside = FacePipeline::load(Pack::Open, &cache, PipelineConfig::default()).expect("pipeline loads");
    assert!(!beside.config().runtime.has_lone_sessions());
    let score = |p: &ProbeFace| match p.liveness {
        Some(Liveness::Judged { live_probability }) => live_probability,
        ref other => panic!("not judged: {other:?}"),
    };
    let same = |a: &ProbeFace, b: &ProbeFace, what: &str| {
        assert_eq!(a.faces_in_image, b.faces_in_image, "{what}");
        assert!(
            (a.detection.bbox.x1 - b.detection.bbox.x1).abs() < 0.01,
            "{what}: {:?} {:?}",
            a.detection,
            b.detection
        );
        assert!(cosine(&a.embedding, &b.embedding) > 0.99999, "{what}: embeddings differ");
        assert!((score(a) - score(b)).abs() < 1e-4, "{what}: liveness {} vs {}", score(a), score(b));
    };
    for rel in ["deepface/img1.jpg", "face_recognition/examples/obama-1080p.jpg"] {
        let photo = eval(rel);
        let alone = shared.probe(&photo, FaceChoice::Largest, true).unwrap();
        let expected = if cores > 1 { CoreShare::Alone } else { CoreShare::OneThread };
        assert_eq!(alone.timings.core_share, expected, "{rel}: the only probe of its pipeline");
        let side_by_side = beside.probe(&photo, FaceChoice::Largest, true).unwrap();
        if cores > 1 {
            assert_eq!(side_by_side.timings.core_share, CoreShare::LivenessBeside, "{rel}: no lone sessions");
        }
        same(&side_by_side, &alone, &format!("{rel}, liveness beside the embedding"));
        let busy: Vec<ProbeFace> = std::thread::scope(|scope| {
            let runs: Vec<_> =
                (0..4).map(|_| scope.spawn(|| shared.probe(&photo, FaceChoice::Largest, true).unwrap())).collect();
            runs.into_iter().map(|r| r.join().expect("probe thread")).collect()
        });
        for probe in &busy {
            same(probe, &alone, &format!("{rel}, four at once"));
        }
    }
}

/// The SIMD letterbox (issue 18) finds the same faces as the previous one on every
/// photo of `deepface` and `face_recognition/examples` larger than the detector input.
/// The previous letterbox is reproduced by handing the detector the photo already
/// shrunk by `imageops::resize` (triangle) to the letterbox size, which it then reads
/// unscaled; the counts must be equal and the largest faces' boxes the same to 2 %
/// of their size.
#[test]
fn simd_letterbox_finds_the_same_faces_as_the_previous_resize() {
    use image::imageops;
    let photos = scene_photos();
    let (mut large, mut faces_seen) = (0, 0);
    for pack in [Pack::Open, Pack::Insightface] {
        let pipeline = pipeline(pack);
        for (path, image) in &photos {
            let side = image.width().max(image.height());
            if side <= 640 {
                continue;
            }
            let scale = 640.0 / side as f32;
            let fit = |n: u32| ((n as f32 * scale).round() as u32).clamp(1, 640);
            let shrunk =
                imageops::resize(image, fit(image.width()), fit(image.height()), imageops::FilterType::Triangle);
            let now = pipeline.detect(image).expect("detect");
            let before = pipeline.detect(&shrunk).expect("detect");
            let name = path.display();
            assert_eq!(now.len(), before.len(), "{pack} {name}: faces found");
            if let (Some(a), Some(b)) = (now.first(), before.first()) {
                let b = [b.bbox.x1, b.bbox.y1, b.bbox.x2, b.bbox.y2].map(|v| v / scale);
                let size = a.bbox.width().max(a.bbox.height());
                for (x, y) in [a.bbox.x1, a.bbox.y1, a.bbox.x2, a.bbox.y2].into_iter().zip(b) {
                    assert!((x - y).abs() <= 0.02 * size, "{pack} {name}: box {:?} vs {b:?}", a.bbox);
                }
            }
            large += 1;
            faces_seen += now.len();
        }
    }
    assert!(large >= 40 && faces_seen >= large, "{large} large photos, {faces_seen} faces");
}

/// A pipeline of `pack` whose detector is configured by `detector`.
fn pipeline_with(pack: Pack, detector: impl FnOnce(&mut facesearch_face::DetectorConfig)) -> FacePipeline {
    let cache = ModelCache::resolve(None).expect("models cache");
    let mut config = PipelineConfig::default();
    detector(&mut config.detector);
    FacePipeline::load(pack, &cache, config).expect("pipeline loads")
}

/// The photos of ../shared/eval/deepface and face_recognition/examples, decoded.
fn scene_photos() -> Vec<(PathBuf, image::RgbImage)> {
    use facesearch_face::decode::{DecodeLimits, decode};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval");
    let mut photos: Vec<PathBuf> = ["deepface", "face_recognition/examples"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).expect("eval folder").map(|e| e.expect("entry").path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    photos.sort();
    let limits = DecodeLimits { max_bytes: 64 << 20, max_pixels: 100_000_000 };
    photos
        .into_iter()
        .map(|p| (p.clone(), decode(&std::fs::read(&p).expect("read"), &limits).expect("decode").rgb))
        .collect()
}

/// Where `a` and `b`, the faces of a photo of `size`, differ: the number of faces, or a
/// face of `a` without a face in `b` whose box edges lie within 2 % of the face's size.
/// The box of a face cut by the photo's edge reaches out of the photo by a guess that
/// depends on what the input holds past the edge: such faces are counted, not compared.
fn differences(
    a: &[facesearch_face::Detection],
    b: &[facesearch_face::Detection],
    size: (u32, u32),
    what: &str,
) -> Vec<String> {
    if a.len() != b.len() {
        let sizes = |l: &[facesearch_face::Detection]| l.iter().map(|d| d.bbox.width().round()).collect::<Vec<_>>();
        return vec![format!("{what}: {} faces (sides {:?}) vs {} ({:?})", a.len(), sizes(a), b.len(), sizes(b))];
    }
    let edges = |d: &facesearch_face::Detection| [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2];
    a.iter()
        .filter_map(|f| {
            let side = f.bbox.width().max(f.bbox.height());
            let closest = b.iter().max_by(|x, y| f.bbox.iou(&x.bbox).total_cmp(&f.bbox.iou(&y.bbox)))?;
            let (w, h) = (size.0 as f32, size.1 as f32);
            let cut = |d: &facesearch_face::Detection| {
                let out = [-d.bbox.x1, -d.bbox.y1, d.bbox.x2 - w, d.bbox.y2 - h].into_iter().fold(0f32, f32::max);
                out > 0.05 * side
            };
            if cut(f) || cut(closest) {
                return None;
            }
            let off = edges(f).into_iter().zip(edges(closest)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            (off > 0.02 * side)
                .then(|| format!("{what}: box {:?} vs {:?} ({:.1} % off)", f.bbox, closest.bbox, 100.0 * off / side))
        })
        .collect()
}

/// Detection at the photo's aspect ratio (640×416 for 16:9: the scaled photo and a 32-pixel margin) finds the faces the 640×640
/// square finds, for both detectors.
#[test]
fn aspect_ratio_input_finds_the_same_faces_as_the_square() {
    use facesearch_face::detect::InputShape;
    let photos = scene_photos();
    let (mut faces_seen, mut wrong) = (0, Vec::new());
    for pack in [Pack::Open, Pack::Insightface] {
        let square = pipeline_with(pack, |d| d.shape = InputShape::Square);
        let aspect = pipeline_with(pack, |d| d.shape = InputShape::AspectRatio);
        for (path, image) in &photos {
            let now = aspect.detect(image).expect("detect");
            let before = square.detect(image).expect("detect");
            let name = path.strip_prefix(path.ancestors().nth(2).unwrap_or(path)).unwrap_or(path).display();
            wrong.extend(differences(
                &now,
                &before,
                image.dimensions(),
                &format!("{pack} {name} {:?}", image.dimensions()),
            ));
            faces_seen += now.len();
        }
    }
    assert!(wrong.is_empty(), "{} differences:\n{}", wrong.len(), wrong.join("\n"));
    assert!(photos.len() >= 50 && faces_seen >= 2 * photos.len(), "{} photos, {faces_seen} faces", photos.len());
}
