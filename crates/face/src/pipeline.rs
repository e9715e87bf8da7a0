//! The whole pipeline for one photo: decode → detect (turning a sideways photo
//! upright) → align → embed (→ liveness), with the policy for choosing the face a
//! request is about and per-stage timings.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use facesearch_models::{FetchError, ModelCache, catalog};
use image::RgbImage;
use serde::Serialize;

use crate::align::{AlignedFace, align};
use crate::decode::{DecodeError, DecodeLimits, DecodedImage, decode};
use crate::detect::{Detection, DetectorConfig, DetectorKind, FaceDetector};
use crate::embed::{EmbedderKind, FaceEmbedder};
use crate::liveness::{Liveness, LivenessChecker, LivenessConfig, LivenessFeatures};
use crate::orient::{self, MAX_UPRIGHT_ROLL, Pick, Rotation, Seen};
use crate::quality::{FaceQuality, QualityFailure, QualityMinimums, assess, compression};
use crate::runtime::{
    self, InferenceRuntime, ModelSource, OrtRuntime, RuntimeError, RuntimeOptions, StageClock, StageTime,
};

pub use facesearch_models::Pack;

/// The detector a pack runs.
fn detector_kind(pack: Pack) -> DetectorKind {
    match pack {
        Pack::Open => DetectorKind::YuNet,
        Pack::Insightface => DetectorKind::Scrfd,
    }
}

/// The embedder a pack runs.
fn embedder_kind(pack: Pack) -> EmbedderKind {
    match pack {
        Pack::Open => EmbedderKind::SFace,
        Pack::Insightface => EmbedderKind::ArcFaceMbf,
    }
}

/// The pipeline's settings. The serde fields are the server's settings (flat keys:
/// `max_image_bytes`, `max_image_pixels`, `min_face_size`, `liveness_min_context`);
/// the rest are chosen by the program (runtime threads) or fixed by measurement.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    #[serde(flatten)]
    pub decode: DecodeLimits,
    #[serde(skip)]
    pub detector: DetectorConfig,
    /// Faces whose box is smaller than this many pixels (shorter side) are too small to embed reliably.
    #[serde(rename = "min_face_size")]
    pub min_face_px: f32,
    /// Embed the mirrored face too and average (measured by `facesearch eval`).
    #[serde(skip)]
    pub flip_average: bool,
    #[serde(flatten)]
    pub liveness: LivenessConfig,
    #[serde(skip)]
    pub runtime: RuntimeOptions,
    /// Run the liveness check on its own thread beside the embedding when a core is
    /// free and the photo is not alone (lower latency per search; the same work either
    /// way, see [`CoreShare`]).
    #[serde(skip)]
    pub parallel_liveness: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            decode: DecodeLimits::default(),
            detector: DetectorConfig::default(),
            min_face_px: 32.0,
            flip_average: false,
            liveness: LivenessConfig::default(),
            runtime: RuntimeOptions::default(),
            parallel_liveness: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Models(#[from] FetchError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("no face was found in the image")]
    NoFace,
    #[error("the face is {size:.0} pixels across; at least {min:.0} are needed")]
    FaceTooSmall { size: f32, min: f32 },
    #[error("the image shows {count} faces of similar size; it is not clear which one is meant")]
    AmbiguousFaces {
        count: usize,
        /// Those faces, largest first, so that a refusal can show what they were.
        faces: Vec<Detection>,
    },
    #[error("the face's landmarks are degenerate and cannot be aligned")]
    Unalignable,
    #[error("the face's quality is too low: {0}")]
    LowQuality(QualityFailure),
    #[error(
        "no quarter turn of the photo shows the face clearly upright (within ±{max:.0}°; its eye line is \
         tilted {roll:.0}° as sent); send a photo with the head upright"
    )]
    NotUpright { roll: f32, max: f32 },
}

/// How to pick the face a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceChoice {
    /// The largest face (searching).
    Largest,
    /// The largest face, refusing when another face is nearly as large (enrolment).
    Unambiguous,
    /// The face nearest the image centre (evaluation on LFW-style crops, which are
    /// centred on the labelled person whoever else is in the frame).
    Central,
}

/// Time spent in each stage for one photo (wall time), and the part of it spent
/// running the stage's networks (`*_network`; the rest is resizing, tensor fill,
/// output decoding, NMS, crops and cues). Decoding runs no network.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimings {
    /// How the embedding and liveness stages shared the cores.
    pub core_share: CoreShare,
    pub decode: Duration,
    pub detect: Duration,
    pub align_embed: Duration,
    pub liveness: Duration,
    pub detect_network: Duration,
    pub align_embed_network: Duration,
    pub liveness_network: Duration,
}

impl StageTimings {
    /// Each stage's time split into network and the rest, in pipeline order.
    pub fn stages(&self) -> [(&'static str, StageTime); 4] {
        [
            ("decode", StageTime { total: self.decode, network: Duration::ZERO }),
            ("detect", StageTime { total: self.detect, network: self.detect_network }),
            ("align_embed", StageTime { total: self.align_embed, network: self.align_embed_network }),
            ("liveness", StageTime { total: self.liveness, network: self.liveness_network }),
        ]
    }

    pub(crate) fn set_detect(&mut self, time: StageTime) {
        self.detect = time.total;
        self.detect_network = time.network;
    }

    pub(crate) fn set_align_embed(&mut self, time: StageTime) {
        self.align_embed = time.total;
        self.align_embed_network = time.network;
    }

    pub(crate) fn set_liveness(&mut self, time: StageTime) {
        self.liveness = time.total;
        self.liveness_network = time.network;
    }
}

/// The face a request is about, analysed.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeFace {
    /// Box and landmarks in the pixels of the photo as sent (EXIF applied), also when
    /// the photo was turned to find the face (`quality.rotation`).
    pub detection: Detection,
    pub embedding: Vec<f32>,
    /// Size, sharpness, exposure, pose and confidence of the face.
    pub quality: FaceQuality,
    pub liveness: Option<Liveness>,
    /// How many faces the image showed (in the turn that showed them upright).
    pub faces_in_image: usize,
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
    pub timings: StageTimings,
}

/// The loaded models of one pack, shared by all requests.
pub struct FacePipeline {
    pack: Pack,
    detector: FaceDetector,
    embedder: FaceEmbedder,
    liveness: LivenessChecker,
    config: PipelineConfig,
    /// Analyses running now: every public entry point the service runs a network
    /// through counts itself once ([`InFlight`]; the calls between them do not, and
    /// neither do the evaluation's `liveness_features` and `liveness_checker`). Per
    /// pipeline: a process serving two packs at once counts each pack's on its own.
    in_flight: AtomicUsize,
    /// The cores this process may use.
    cores: usize,
    /// Whether the models keep lone sessions ([`RuntimeOptions::has_lone_sessions`]),
    /// read once at load rather than on every probe.
    lone_sessions: bool,
}

/// How one probe's networks share the cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreShare {
    /// The only photo being analysed, with lone sessions kept (opt-in,
    /// [`RuntimeOptions::lone_sessions`]): every network on the models' lone sessions, a
    /// thread per core, the liveness check after the embedding.
    Alone,
    /// A core is free: the liveness check on a thread of its own beside the embedding.
    LivenessBeside,
    /// Every core is busy with a photo: one thread, the liveness check after the
    /// embedding (a second thread per analysis would only make them take turns).
    #[default]
    OneThread,
}

impl CoreShare {
    /// The share for a probe with `in_flight` photos being analysed (this one
    /// included) on `cores` cores, `came_alone` if none was when it came in (a probe
    /// that came in beside another stays on one thread when that one ends: under
    /// steady load the other core is about to get the next photo). Measured on two
    /// cores (README, Performance): with two workers the check after the embedding gets
    /// 1–5 % more photos through than beside it; a lone photo's check beside its
    /// embedding was steadier than the lone sessions, and faster on average.
    pub fn of(in_flight: usize, came_alone: bool, cores: usize, lone_sessions: bool, liveness_beside: bool) -> Self {
        if in_flight <= 1 && came_alone && lone_sessions {
            CoreShare::Alone
        } else if liveness_beside && in_flight < cores {
            CoreShare::LivenessBeside
        } else {
            CoreShare::OneThread
        }
    }
}

/// Counts a photo as being analysed while it lives.
pub(crate) struct InFlight<'a> {
    count: &'a AtomicUsize,
    /// Whether no other photo was being analysed when this one came in.
    came_alone: bool,
}

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let before = count.fetch_add(1, Ordering::Relaxed);
        Self { count, came_alone: before == 0 }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FacePipeline {
    /// Fetches whatever is missing from `cache`, verifies it, and loads the pack.
    pub fn load(pack: Pack, cache: &ModelCache, config: PipelineConfig) -> Result<Self, PipelineError> {
        let library = catalog::onnxruntime().ok_or_else(|| RuntimeError::Library {
            path: cache.dir().to_path_buf(),
            detail: "no ONNX Runtime build is pinned for this platform".into(),
        })?;
        let library = cache.ensure(&library)?;
        let runtime = OrtRuntime::new(&library, config.runtime)?;
        // YuNet's pinned file has a fixed 640×640 input: it is loaded edited to take any
        // size (catalog::YUNET_DYNAMIC, pinned itself). SCRFD's already does.
        let edited;
        let detector_file;
        let detector = match pack {
            Pack::Open => {
                edited = cache.ensure_edited(&catalog::YUNET_DYNAMIC)?;
                ModelSource::Bytes { name: catalog::YUNET_DYNAMIC.name, bytes: &edited }
            }
            Pack::Insightface => {
                detector_file = cache.ensure(&pack.detector_file())?;
                ModelSource::File(&detector_file)
            }
        };
        // The embedder and the liveness model are loaded with their PRelu activations as
        // vectorised operators (`onnx_edit::prelu_elementwise`, pinned like the files).
        let embedder_model = pack.embedder_model();
        let embedder = cache.ensure_edited(&embedder_model)?;
        let liveness = cache.ensure_edited(&catalog::LIVENESS_ELEMENTWISE)?;
        Self::with_runtime(
            pack,
            &runtime,
            detector,
            ModelSource::Bytes { name: embedder_model.name, bytes: &embedder },
            ModelSource::Bytes { name: catalog::LIVENESS_ELEMENTWISE.name, bytes: &liveness },
            config,
        )
    }

    /// Loads the pack's model files through any inference runtime.
    pub fn with_runtime(
        pack: Pack,
        runtime: &dyn InferenceRuntime,
        detector: ModelSource<'_>,
        embedder: ModelSource<'_>,
        liveness: ModelSource<'_>,
        config: PipelineConfig,
    ) -> Result<Self, PipelineError> {
        Ok(Self {
            pack,
            detector: FaceDetector::new(detector_kind(pack), runtime.load(detector)?, config.detector),
            embedder: FaceEmbedder::new(embedder_kind(pack), runtime.load(embedder)?, config.flip_average),
            liveness: LivenessChecker::new(runtime.load(liveness)?, config.liveness),
            config,
            in_flight: AtomicUsize::new(0),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lone_sessions: config.runtime.has_lone_sessions(),
        })
    }

    pub fn pack(&self) -> Pack {
        self.pack
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<DecodedImage, DecodeError> {
        decode(bytes, &self.config.decode)
    }

    /// Every face in the image, largest first.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, RuntimeError> {
        let _analysing = InFlight::enter(&self.in_flight);
        self.detector.detect(image)
    }

    /// The embedding of one detected face.
    pub fn embed(&self, image: &RgbImage, face: &Detection) -> Result<Vec<f32>, PipelineError> {
        let _analysing = InFlight::enter(&self.in_flight);
        Ok(self.embedder.embed(&Self::align(image, face)?)?)
    }

    /// Counts an analysis while the returned guard lives (for [`crate::every_face`]).
    pub(crate) fn analysing(&self) -> InFlight<'_> {
        InFlight::enter(&self.in_flight)
    }

    /// The detector, for entry points that count themselves.
    pub(crate) fn detector(&self) -> &FaceDetector {
        &self.detector
    }

    /// How a probe being analysed now shares the cores, from the photos in flight.
    fn core_share(&self, came_alone: bool) -> CoreShare {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        CoreShare::of(in_flight, came_alone, self.cores, self.lone_sessions, self.config.parallel_liveness)
    }

    fn align(image: &RgbImage, face: &Detection) -> Result<AlignedFace, PipelineError> {
        align(image, &face.landmarks).ok_or(PipelineError::Unalignable)
    }

    /// The quality measures of one detected face.
    pub fn quality(&self, image: &RgbImage, face: &Detection) -> Result<FaceQuality, PipelineError> {
        Ok(assess(image, face, &Self::align(image, face)?.image))
    }

    /// The quality measures and the embedding of one detected face, aligned once; a
    /// face too small to embed keeps its measures ([`crate::every_face`]).
    pub(crate) fn quality_and_embedding(
        &self,
        image: &RgbImage,
        face: &Detection,
    ) -> Result<(FaceQuality, Result<Vec<f32>, PipelineError>), PipelineError> {
        let aligned = Self::align(image, face)?;
        let quality = assess(image, face, &aligned.image);
        let embedding = match self.check_size(face) {
            Ok(()) => Ok(self.embedder.embed(&aligned)?),
            Err(e) => Err(e),
        };
        Ok((quality, embedding))
    }

    /// The liveness verdict for one detected face.
    pub fn liveness(&self, image: &RgbImage, face: &Detection) -> Result<Liveness, RuntimeError> {
        let _analysing = InFlight::enter(&self.in_flight);
        self.liveness.assess(image, face)
    }

    /// The liveness check itself (the evaluation measures its features every way).
    pub fn liveness_checker(&self) -> &LivenessChecker {
        &self.liveness
    }

    /// Every liveness feature of one detected face (for fitting the fusion), or the
    /// "cannot judge" verdict.
    pub fn liveness_features(
        &self,
        image: &RgbImage,
        face: &Detection,
    ) -> Result<Result<LivenessFeatures, Liveness>, RuntimeError> {
        self.liveness.features(image, face)
    }

    /// Whether a face is large enough to embed.
    pub fn check_size(&self, face: &Detection) -> Result<(), PipelineError> {
        let size = face.bbox.width().min(face.bbox.height());
        if size < self.config.min_face_px {
            return Err(PipelineError::FaceTooSmall { size, min: self.config.min_face_px });
        }
        Ok(())
    }

    /// Decodes `bytes`, picks the face the request is about, embeds it and, if asked,
    /// judges its liveness.
    pub fn probe(&self, bytes: &[u8], choice: FaceChoice, with_liveness: bool) -> Result<ProbeFace, PipelineError> {
        self.probe_gated(bytes, choice, with_liveness, None)
    }

    /// [`FacePipeline::probe`], refusing a face that misses `minimums` with
    /// [`PipelineError::LowQuality`] before anything else is checked or computed (so
    /// that a small face is reported as such rather than as too small to embed).
    pub fn probe_gated(
        &self,
        bytes: &[u8],
        choice: FaceChoice,
        with_liveness: bool,
        minimums: Option<&QualityMinimums>,
    ) -> Result<ProbeFace, PipelineError> {
        let analysing = InFlight::enter(&self.in_flight);
        let core_share = || self.core_share(analysing.came_alone);
        let mut timings = StageTimings::default();
        let start = Instant::now();
        let decoded = self.decode(bytes)?;
        timings.decode = start.elapsed();

        let clock = StageClock::start();
        // Enrolment (the gated probe) refuses a face that cannot be made upright; a
        // search goes on with the photo as sent, as it always did.
        let detect = || self.detect_upright(&decoded.rgb, choice, minimums.is_some());
        let Upright { image, rotation, faces, .. } =
            if core_share() == CoreShare::Alone { runtime::alone(detect) } else { detect() }?;
        timings.set_detect(clock.stop());
        let face = choose(&faces, choice, (image.width(), image.height()))?;
        let original = (decoded.rgb.width(), decoded.rgb.height());
        let in_photo = rotation.detection_to_original(face, original);

        // Embedding and the liveness check both need only the detection: on a machine
        // with a core to spare they run side by side, which takes the liveness model
        // off a single search's latency (each inference keeps its own thread count).
        let embed = || -> Result<_, PipelineError> {
            let clock = StageClock::start();
            let aligned = Self::align(&image, face)?;
            let mut quality = assess(&image, face, &aligned.image);
            if rotation != Rotation::None {
                // Turning shifts the JPEG block grid unless the sides are multiples of 8.
                quality.compression = compression(&decoded.rgb, &in_photo);
                quality.rotation = rotation.degrees();
            }
            if let Some(failure) = minimums.and_then(|m| quality.first_failure(m)) {
                return Err(PipelineError::LowQuality(failure));
            }
            self.check_size(face)?;
            let embedding = self.embedder.embed(&aligned)?;
            Ok((embedding, quality, clock.stop()))
        };
        // On its own thread when parallel: the clock is per thread, so it counts this
        // stage's model runs only.
        let judge = || {
            let clock = StageClock::start();
            // The checker itself: this probe is counted once already, not again here.
            self.liveness.assess(&image, face).map(|verdict| (verdict, clock.stop()))
        };
        // After the embedding, the check runs only for a face that was embedded.
        let then_judge = || {
            let embedded = embed();
            let judged = (with_liveness && embedded.is_ok()).then(judge);
            (embedded, judged)
        };
        let share = core_share();
        timings.core_share = share;
        let (embedded, judged) = match share {
            CoreShare::Alone => runtime::alone(then_judge),
            CoreShare::LivenessBeside if with_liveness => std::thread::scope(|scope| {
                let liveness = scope.spawn(judge);
                let embedded = embed();
                // A panic in the liveness thread is a bug; re-raise it here.
                let judged = liveness.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (embedded, Some(judged))
            }),
            CoreShare::LivenessBeside | CoreShare::OneThread => then_judge(),
        };
        let (embedding, quality, align_embed) = embedded?;
        timings.set_align_embed(align_embed);
        let liveness = match judged.transpose()? {
            Some((verdict, took)) => {
                timings.set_liveness(took);
                Some(verdict)
            }
            None => None,
        };
        Ok(ProbeFace {
            detection: in_photo,
            embedding,
            quality,
            liveness,
            faces_in_image: faces.len(),
            mime: decoded.mime,
            width: decoded.rgb.width(),
            height: decoded.rgb.height(),
            timings,
        })
    }

    /// The faces of `photo` in the quarter turn that shows the face a request is about
    /// upright. The photo as sent is tried first and kept when its face is upright
    /// and surely detected (the common case: one detection, no copy). Otherwise — no
    /// face, a face tilted beyond ±45°, or one the detector is unsure of — the photo
    /// is turned 90°, 180° and 270° and [`orient::pick`] chooses: the upright face
    /// the detector is surest of, by a margin (see [`crate::orient`] for why the
    /// detector's confidence, not the landmarks' tilt, tells the right turn).
    ///
    /// When a face is found but no turn shows it clearly upright ([`Pick::NotUpright`]),
    /// `strict` refuses it ([`PipelineError::NotUpright`]); otherwise the photo as sent
    /// is used.
    pub fn detect_upright<'a>(
        &self,
        photo: &'a RgbImage,
        choice: FaceChoice,
        strict: bool,
    ) -> Result<Upright<'a>, PipelineError> {
        let faces = self.detector.detect(photo)?;
        let sent = candidate(&faces, choice, (photo.width(), photo.height())).cloned();
        let confidence = detector_kind(self.pack).confidence();
        if !orient::needs_turning(sent.as_ref(), confidence) {
            return Ok(Upright { image: Cow::Borrowed(photo), rotation: Rotation::None, faces, tried: false });
        }
        // Only each turn's faces are kept: the chosen turn is made again below, so the
        // request never holds more than one turned copy of the photo.
        let mut turns = Vec::with_capacity(Rotation::TURNS.len());
        for rotation in Rotation::TURNS {
            let turned = rotation.apply(photo);
            let turned_faces = self.detector.detect(&turned)?;
            let size = (turned.width(), turned.height());
            turns.push((rotation, size, turned_faces));
        }
        let seen: Vec<(Rotation, Seen<'_>)> = turns
            .iter()
            .map(|(rotation, size, faces)| {
                (*rotation, Seen { face: candidate(faces, choice, *size), faces: faces.len() })
            })
            .collect();
        match orient::pick(Seen { face: sent.as_ref(), faces: faces.len() }, &seen, confidence) {
            Pick::Turn(chosen) => {
                let (rotation, _, faces) =
                    turns.into_iter().find(|(rotation, _, _)| *rotation == chosen).ok_or(PipelineError::NoFace)?;
                Ok(Upright { image: rotation.apply(photo), rotation, faces, tried: true })
            }
            Pick::NotUpright { roll } if strict => Err(PipelineError::NotUpright { roll, max: MAX_UPRIGHT_ROLL }),
            Pick::AsSent | Pick::NotUpright { .. } => {
                Ok(Upright { image: Cow::Borrowed(photo), rotation: Rotation::None, faces, tried: true })
            }
        }
    }
}

/// The faces of a photo as [`FacePipeline::detect_upright`] found them.
pub struct Upright<'a> {
    /// The photo turned by `rotation` (the photo itself when not turned).
    pub image: Cow<'a, RgbImage>,
    pub rotation: Rotation,
    /// Every face of `image`, largest first.
    pub faces: Vec<Detection>,
    /// Whether the turns were tried (the photo as sent did not show a face upright
    /// and surely detected): three more detections.
    pub tried: bool,
}

/// The face whose tilt decides whether a photo is upright: the one `choice` picks,
/// ambiguity aside (a photo of two faces is turned for the larger).
fn candidate(faces: &[Detection], choice: FaceChoice, size: (u32, u32)) -> Option<&Detection> {
    let choice = if choice == FaceChoice::Central { FaceChoice::Central } else { FaceChoice::Largest };
    choose(faces, choice, size).ok()
}

/// A second face at least this fraction of the largest one's area makes enrolment ambiguous.
const AMBIGUOUS_AREA_RATIO: f32 = 0.5;

/// The face a request is about, from faces sorted largest first in an image of `size`.
pub fn choose(faces: &[Detection], choice: FaceChoice, size: (u32, u32)) -> Result<&Detection, PipelineError> {
    let largest = faces.first().ok_or(PipelineError::NoFace)?;
    match choice {
        FaceChoice::Largest => Ok(largest),
        FaceChoice::Unambiguous => {
            let similar: Vec<Detection> =
                faces.iter().filter(|f| f.bbox.area() >= AMBIGUOUS_AREA_RATIO * largest.bbox.area()).cloned().collect();
            if similar.len() > 1 {
                return Err(PipelineError::AmbiguousFaces { count: similar.len(), faces: similar });
            }
            Ok(largest)
        }
        FaceChoice::Central => {
            let (cx, cy) = (size.0 as f32 / 2.0, size.1 as f32 / 2.0);
            let off_centre =
                |f: &Detection| ((f.bbox.x1 + f.bbox.x2) / 2.0 - cx).hypot((f.bbox.y1 + f.bbox.y2) / 2.0 - cy);
            Ok(faces.iter().min_by(|a, b| off_centre(a).total_cmp(&off_centre(b))).unwrap_or(largest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;

    fn face(side: f32) -> Detection {
        Detection { bbox: BBox { x1: 0.0, y1: 0.0, x2: side, y2: side }, landmarks: [[0.0; 2]; 5], score: 0.9 }
    }

    #[test]
    fn a_lone_photo_takes_every_core_and_the_liveness_check_a_core_only_when_one_is_free() {
        use CoreShare::*;
        assert_eq!(CoreShare::of(1, true, 2, true, true), Alone);
        assert_eq!(CoreShare::of(1, false, 2, true, true), LivenessBeside, "came in beside another");
        assert_eq!(CoreShare::of(1, true, 2, false, true), LivenessBeside, "no lone sessions kept");
        assert_eq!(CoreShare::of(2, true, 2, true, true), OneThread, "another came in since");
        assert_eq!(CoreShare::of(3, false, 2, true, true), OneThread);
        assert_eq!(CoreShare::of(1, true, 1, false, true), OneThread);
        assert_eq!(CoreShare::of(3, false, 8, true, true), LivenessBeside);
        assert_eq!(CoreShare::of(3, false, 8, true, false), OneThread);
        let count = AtomicUsize::new(0);
        {
            let one = InFlight::enter(&count);
            let two = InFlight::enter(&count);
            assert!(one.came_alone && !two.came_alone);
            assert_eq!(count.load(Ordering::Relaxed), 2);
        }
        assert_eq!(count.load(Ordering::Relaxed), 0, "a probe that ends, however, is no longer counted");
    }

    #[test]
    fn choosing_the_face() {
        let size = (200, 200);
        assert!(matches!(choose(&[], FaceChoice::Largest, size), Err(PipelineError::NoFace)));
        let faces = [face(100.0), face(90.0), face(20.0)];
        assert_eq!(choose(&faces, FaceChoice::Largest, size).unwrap().bbox.x2, 100.0);
        match choose(&faces, FaceChoice::Unambiguous, size) {
            Err(PipelineError::AmbiguousFaces { count: 2, faces: similar }) => {
                assert_eq!(similar, faces[..2].to_vec(), "the two faces of similar size, largest first")
            }
            other => panic!("expected AmbiguousFaces, got {other:?}"),
        }
        let clear = [face(100.0), face(30.0)];
        assert_eq!(choose(&clear, FaceChoice::Unambiguous, size).unwrap().bbox.x2, 100.0);
        let mut centred = face(40.0);
        centred.bbox = BBox { x1: 80.0, y1: 80.0, x2: 120.0, y2: 120.0 };
        let faces = [face(100.0), centred];
        assert_eq!(choose(&faces, FaceChoice::Central, size).unwrap().bbox.x1, 80.0);
    }

    #[test]
    fn pack_names_round_trip() {
        for pack in [Pack::Open, Pack::Insightface] {
            assert_eq!(pack.name().parse::<Pack>().unwrap(), pack);
        }
        assert!("nope".parse::<Pack>().is_err());
        // The models crate states each pack's dimension; it must be its embedder's.
        for pack in Pack::ALL {
            assert_eq!(pack.dimension(), embedder_kind(pack).dimension());
        }
    }
}
