//! Decoding of SCRFD (`*_bnkps`) outputs: per stride 8/16/32, two anchors per grid
//! cell, each with a sigmoid `score`, a `bbox` of distances (left, top, right,
//! bottom) and `kps` offsets, both in stride units from the anchor centre.

use super::{BBox, Detection, output};
use crate::runtime::NamedTensor;

const STRIDES: [u32; 3] = [8, 16, 32];
const ANCHORS_PER_CELL: usize = 2;

/// Faces scoring at least `threshold` in SCRFD's raw outputs for a `width`×`height`
/// input (multiples of 32); the grid cells run along rows, `width / stride` to a row.
pub fn decode_scrfd(
    outputs: &[NamedTensor],
    width: u32,
    height: u32,
    threshold: f32,
) -> Result<Vec<Detection>, String> {
    let mut faces = Vec::new();
    for stride in STRIDES {
        let cols = (width / stride) as usize;
        let anchors = cols * (height / stride) as usize * ANCHORS_PER_CELL;
        let get = |kind: &str, width: usize| -> Result<&[f32], String> {
            let t = &output(outputs, &format!("{kind}_{stride}"))?.tensor;
            if t.data.len() != anchors * width {
                return Err(format!("{kind}_{stride} has {} values, expected {}", t.data.len(), anchors * width));
            }
            Ok(&t.data)
        };
        let (scores, bbox, kps) = (get("score", 1)?, get("bbox", 4)?, get("kps", 10)?);
        let s = stride as f32;
        for (i, &score) in scores.iter().enumerate() {
            if score < threshold {
                continue;
            }
            let cell = i / ANCHORS_PER_CELL;
            let (cx, cy) = ((cell % cols) as f32 * s, (cell / cols) as f32 * s);
            let d = &bbox[i * 4..i * 4 + 4];
            let k = &kps[i * 10..i * 10 + 10];
            faces.push(Detection {
                bbox: BBox { x1: cx - d[0] * s, y1: cy - d[1] * s, x2: cx + d[2] * s, y2: cy + d[3] * s },
                landmarks: std::array::from_fn(|j| [cx + k[2 * j] * s, cy + k[2 * j + 1] * s]),
                score,
            });
        }
    }
    Ok(faces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Tensor;

    #[test]
    fn decodes_a_planted_anchor() {
        // A wide 64×32 input: 8 columns, 4 rows at stride 8.
        let (width, height) = (64, 32);
        let mut outputs = Vec::new();
        for s in STRIDES {
            let n = ((width / s) * (height / s)) as usize * ANCHORS_PER_CELL;
            for (kind, width) in [("score", 1), ("bbox", 4), ("kps", 10)] {
                let mut data = vec![0.0; n * width];
                // Second anchor of cell (row 1, col 2) of the stride-8 grid (8 columns).
                let i = (8 + 2) * 2 + 1;
                if s == 8 {
                    match kind {
                        "score" => data[i] = 0.9,
                        "bbox" => data[i * 4..i * 4 + 4].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]),
                        _ => data[i * 10..i * 10 + 2].copy_from_slice(&[0.5, -0.5]),
                    }
                }
                outputs
                    .push(NamedTensor { name: format!("{kind}_{s}"), tensor: Tensor { shape: vec![n, width], data } });
            }
        }
        let faces = decode_scrfd(&outputs, width, height, 0.5).unwrap();
        assert_eq!(faces.len(), 1);
        let f = &faces[0];
        // anchor centre (16, 8)
        assert_eq!((f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2), (8.0, -8.0, 40.0, 40.0));
        assert_eq!(f.landmarks[0], [20.0, 4.0]);
        assert_eq!(f.landmarks[1], [16.0, 8.0]);
        assert!(decode_scrfd(&outputs, width, height, 0.95).unwrap().is_empty());
        assert!(decode_scrfd(&outputs, width, 64, 0.5).is_err(), "a wrong height is caught");
    }
}
