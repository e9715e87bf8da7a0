//! Every face of one photo, each measured and embedded on its own: the `faces=all`
//! search of a group photo or a CCTV still, where the question is who is in it rather
//! than who the one person in front of the camera is.
//!
//! No liveness is judged here: the liveness model judges one face in the context of
//! the frame around it, and a group photo or a CCTV still is not a live selfie, so its
//! verdict would mean nothing for the faces at the back of the room.

use std::time::Instant;

use serde::Serialize;

use crate::detect::Detection;
use crate::pipeline::{FacePipeline, PipelineError, ProbeFace, StageTimings};
use crate::quality::FaceQuality;
use crate::runtime::StageClock;

/// Why a face found in the photo was not embedded (the rest of the photo still is).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Unembedded {
    /// Its box is smaller than the pipeline's minimum face size.
    TooSmall { size: f32, min: f32 },
    /// Its landmarks are degenerate and cannot be aligned.
    Unalignable,
}

impl From<Unembedded> for PipelineError {
    fn from(u: Unembedded) -> Self {
        match u {
            Unembedded::TooSmall { size, min } => PipelineError::FaceTooSmall { size, min },
            Unembedded::Unalignable => PipelineError::Unalignable,
        }
    }
}

/// One face of the photo, analysed.
#[derive(Debug, Clone, Serialize)]
pub struct SeenFace {
    pub detection: Detection,
    /// `None` when the face cannot be aligned (nothing can be measured).
    pub quality: Option<FaceQuality>,
    /// The embedding, or why there is none.
    pub embedding: Result<Vec<f32>, Unembedded>,
}

/// Every face of one photo (at most the number asked for), largest first.
#[derive(Debug, Clone, Serialize)]
pub struct EveryFace {
    pub faces: Vec<SeenFace>,
    /// How many faces the detector found (more than `faces` holds when it was capped).
    pub faces_in_image: usize,
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
    pub timings: StageTimings,
}

impl EveryFace {
    /// The largest face as the probe of an ordinary search: the same face, measures and
    /// embedding that [`FacePipeline::probe`] with [`crate::FaceChoice::Largest`] gives
    /// (without liveness). A largest face that cannot be embedded fails the search as
    /// it would fail an ordinary one (every other face is smaller still).
    pub fn largest(&self) -> Result<ProbeFace, PipelineError> {
        let face = self.faces.first().ok_or(PipelineError::NoFace)?;
        let embedding = face.embedding.clone().map_err(PipelineError::from)?;
        let quality = face.quality.ok_or(PipelineError::Unalignable)?;
        Ok(ProbeFace {
            detection: face.detection.clone(),
            embedding,
            quality,
            liveness: None,
            faces_in_image: self.faces_in_image,
            mime: self.mime,
            width: self.width,
            height: self.height,
            timings: self.timings,
        })
    }
}

impl FacePipeline {
    /// Decodes `bytes` and analyses its faces, largest first, at most `max_faces` of
    /// them. A photo without any face is [`PipelineError::NoFace`]; a face that cannot
    /// be embedded is reported in its entry, not as an error.
    pub fn every_face(&self, bytes: &[u8], max_faces: usize) -> Result<EveryFace, PipelineError> {
        let _analysing = self.analysing();
        let mut timings = StageTimings::default();
        let start = Instant::now();
        let decoded = self.decode(bytes)?;
        timings.decode = start.elapsed();
        let clock = StageClock::start();
        let detections = self.detector().detect(&decoded.rgb)?;
        timings.set_detect(clock.stop());
        if detections.is_empty() {
            return Err(PipelineError::NoFace);
        }
        let clock = StageClock::start();
        let faces = detections
            .iter()
            .take(max_faces.max(1))
            .map(|d| self.see(&decoded.rgb, d))
            .collect::<Result<Vec<_>, _>>()?;
        timings.set_align_embed(clock.stop());
        Ok(EveryFace {
            faces,
            faces_in_image: detections.len(),
            mime: decoded.mime,
            width: decoded.rgb.width(),
            height: decoded.rgb.height(),
            timings,
        })
    }

    /// The embeddings of faces another pack's detector found in `bytes` (a search over
    /// indexes of several packs embeds every face with each pack's own embedder).
    pub fn embed_faces(
        &self,
        bytes: &[u8],
        faces: &[Detection],
    ) -> Result<Vec<Result<Vec<f32>, Unembedded>>, PipelineError> {
        let _analysing = self.analysing();
        let decoded = self.decode(bytes)?;
        faces.iter().map(|d| Ok(self.see(&decoded.rgb, d)?.embedding)).collect()
    }

    /// One face: its measures and embedding; a failure of the models is an error.
    fn see(&self, image: &image::RgbImage, face: &Detection) -> Result<SeenFace, PipelineError> {
        let (quality, embedding) = match self.quality_and_embedding(image, face) {
            Ok((quality, embedding)) => (Some(quality), embedding),
            Err(PipelineError::Unalignable) => (None, Err(PipelineError::Unalignable)),
            Err(e) => return Err(e),
        };
        let embedding = match embedding {
            Ok(v) => Ok(v),
            Err(PipelineError::FaceTooSmall { size, min }) => Err(Unembedded::TooSmall { size, min }),
            Err(PipelineError::Unalignable) => Err(Unembedded::Unalignable),
            Err(e) => return Err(e),
        };
        Ok(SeenFace { detection: face.clone(), quality, embedding })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;

    fn seen(side: f32, embedding: Result<Vec<f32>, Unembedded>) -> SeenFace {
        let detection =
            Detection { bbox: BBox { x1: 0.0, y1: 0.0, x2: side, y2: side }, landmarks: [[1.0; 2]; 5], score: 0.9 };
        // Real measures of a plain grey picture: whatever fields FaceQuality has.
        let grey = image::RgbImage::from_pixel(112, 112, image::Rgb([128, 128, 128]));
        let quality = crate::quality::assess(&grey, &detection, &grey);
        SeenFace { detection, quality: Some(quality), embedding }
    }

    fn photo(faces: Vec<SeenFace>) -> EveryFace {
        EveryFace {
            faces_in_image: faces.len(),
            faces,
            mime: "image/jpeg",
            width: 640,
            height: 480,
            timings: StageTimings::default(),
        }
    }

    #[test]
    fn the_largest_face_is_the_probe_of_an_ordinary_search() {
        let every = photo(vec![
            seen(120.0, Ok(vec![1.0, 0.0])),
            seen(20.0, Err(Unembedded::TooSmall { size: 20.0, min: 32.0 })),
        ]);
        let probe = every.largest().expect("the largest face embeds");
        assert_eq!(probe.embedding, vec![1.0, 0.0]);
        assert_eq!(probe.detection, every.faces[0].detection);
        assert_eq!(probe.faces_in_image, 2);
        assert!(probe.liveness.is_none(), "never judged in this mode");
    }

    #[test]
    fn a_largest_face_that_cannot_be_embedded_fails_as_an_ordinary_search_would() {
        let every = photo(vec![seen(20.0, Err(Unembedded::TooSmall { size: 20.0, min: 32.0 }))]);
        assert!(matches!(every.largest(), Err(PipelineError::FaceTooSmall { .. })));
        let every = photo(vec![seen(50.0, Err(Unembedded::Unalignable))]);
        assert!(matches!(every.largest(), Err(PipelineError::Unalignable)));
        assert!(matches!(photo(vec![]).largest(), Err(PipelineError::NoFace)));
    }
}
