//! Embedding: an aligned face becomes an L2-normalised feature vector whose cosine
//! similarity to another face's says how alike the two are.

use std::sync::Arc;

use image::imageops;

use crate::align::{ALIGNED_SIZE, AlignedFace};
use crate::runtime::{InferenceModel, RuntimeError, run_timed};

/// Which embedder network, which fixes its input scaling and output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedderKind {
    /// SFace 2021dec: RGB, raw 0–255 (normalisation is in the graph), 128-d.
    SFace,
    /// ArcFace MobileFaceNet w600k_mbf: RGB, (x − 127.5) / 127.5, 512-d.
    ArcFaceMbf,
}

impl EmbedderKind {
    pub fn dimension(self) -> usize {
        match self {
            EmbedderKind::SFace => 128,
            EmbedderKind::ArcFaceMbf => 512,
        }
    }
}

pub struct FaceEmbedder {
    kind: EmbedderKind,
    model: Arc<dyn InferenceModel>,
    flip_average: bool,
}

impl FaceEmbedder {
    /// `flip_average`: also embed the mirrored face and average the two vectors.
    pub fn new(kind: EmbedderKind, model: Arc<dyn InferenceModel>, flip_average: bool) -> Self {
        Self { kind, model, flip_average }
    }

    pub fn kind(&self) -> EmbedderKind {
        self.kind
    }

    /// The L2-normalised embedding of `face`.
    pub fn embed(&self, face: &AlignedFace) -> Result<Vec<f32>, RuntimeError> {
        let mut v = self.raw(face)?;
        if self.flip_average {
            let mirrored = AlignedFace { image: imageops::flip_horizontal(&face.image) };
            for (a, b) in v.iter_mut().zip(self.raw(&mirrored)?) {
                *a += b;
            }
        }
        l2_normalise(&mut v);
        Ok(v)
    }

    fn raw(&self, face: &AlignedFace) -> Result<Vec<f32>, RuntimeError> {
        let side = ALIGNED_SIZE as usize;
        let plane = side * side;
        let mut input = vec![0f32; 3 * plane];
        for (i, px) in face.image.pixels().enumerate() {
            for c in 0..3 {
                let x = f32::from(px.0[c]);
                input[c * plane + i] = match self.kind {
                    EmbedderKind::SFace => x,
                    EmbedderKind::ArcFaceMbf => (x - 127.5) / 127.5,
                };
            }
        }
        let outputs = run_timed(&*self.model, &[1, 3, side, side], &input)?;
        let out = outputs.into_iter().next().ok_or_else(|| RuntimeError::BadOutput {
            model: self.model.name().to_string(),
            detail: "no output".into(),
        })?;
        if out.tensor.data.len() != self.kind.dimension() {
            return Err(RuntimeError::BadOutput {
                model: self.model.name().to_string(),
                detail: format!("{} values, expected {}", out.tensor.data.len(), self.kind.dimension()),
            });
        }
        Ok(out.tensor.data)
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn l2_normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_and_cosine() {
        let mut v = vec![3.0, 4.0];
        l2_normalise(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);
        let mut zero = vec![0.0; 3];
        l2_normalise(&mut zero);
        assert_eq!(zero, vec![0.0; 3]);
    }
}
