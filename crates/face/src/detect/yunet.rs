//! Decoding of YuNet (2023mar) outputs: per stride 8/16/32 a grid of cells, each with
//! `cls`, `obj`, `bbox` (centre offset and log size, in stride units) and `kps` (five
//! landmark offsets, in stride units). Score = sqrt(cls · obj).

use super::{BBox, Detection, output};
use crate::runtime::NamedTensor;

const STRIDES: [u32; 3] = [8, 16, 32];

/// Faces scoring at least `threshold` in YuNet's raw outputs for a `width`×`height`
/// input (multiples of 32); the grid cells run along rows, `width / stride` to a row.
pub fn decode_yunet(
    outputs: &[NamedTensor],
    width: u32,
    height: u32,
    threshold: f32,
) -> Result<Vec<Detection>, String> {
    let mut faces = Vec::new();
    for stride in STRIDES {
        let cols = (width / stride) as usize;
        let cells = cols * (height / stride) as usize;
        let get = |kind: &str, width: usize| -> Result<&[f32], String> {
            let t = &output(outputs, &format!("{kind}_{stride}"))?.tensor;
            if t.data.len() != cells * width {
                return Err(format!("{kind}_{stride} has {} values, expected {}", t.data.len(), cells * width));
            }
            Ok(&t.data)
        };
        let (cls, obj, bbox, kps) = (get("cls", 1)?, get("obj", 1)?, get("bbox", 4)?, get("kps", 10)?);
        let s = stride as f32;
        for i in 0..cells {
            let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
            if score < threshold {
                continue;
            }
            let (col, row) = ((i % cols) as f32, (i / cols) as f32);
            let b = &bbox[i * 4..i * 4 + 4];
            let (cx, cy) = ((col + b[0]) * s, (row + b[1]) * s);
            let (w, h) = (b[2].exp() * s, b[3].exp() * s);
            let k = &kps[i * 10..i * 10 + 10];
            let landmarks = std::array::from_fn(|j| [(col + k[2 * j]) * s, (row + k[2 * j + 1]) * s]);
            faces.push(Detection {
                bbox: BBox { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0 },
                landmarks,
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

    fn outputs_with_one_face(width: u32, height: u32, stride: u32, cell: usize) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for s in STRIDES {
            let cells = ((width / s) * (height / s)) as usize;
            for (kind, width) in [("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)] {
                let mut data = vec![0.0; cells * width];
                if s == stride {
                    match kind {
                        "cls" | "obj" => data[cell] = 0.81,
                        "bbox" => data[cell * 4..cell * 4 + 4].copy_from_slice(&[0.5, 0.25, 2f32.ln(), 1f32.ln()]),
                        _ => data[cell * 10..cell * 10 + 2].copy_from_slice(&[1.0, -1.0]),
                    }
                }
                out.push(NamedTensor {
                    name: format!("{kind}_{s}"),
                    tensor: Tensor { shape: vec![1, cells, width], data },
                });
            }
        }
        out
    }

    #[test]
    fn decodes_a_planted_anchor() {
        // Cell (row 2, col 3) of the stride-16 grid of a 64×64 input (4 columns).
        let faces = decode_yunet(&outputs_with_one_face(64, 64, 16, 2 * 4 + 3), 64, 64, 0.5).unwrap();
        assert_eq!(faces.len(), 1);
        let f = &faces[0];
        assert!((f.score - 0.81).abs() < 1e-6);
        // centre ((3 + 0.5)·16, (2 + 0.25)·16) = (56, 36); size (2·16, 1·16)
        assert_eq!((f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2), (40.0, 28.0, 72.0, 44.0));
        assert_eq!(f.landmarks[0], [(3.0 + 1.0) * 16.0, (2.0 - 1.0) * 16.0]);
        assert_eq!(f.landmarks[1], [3.0 * 16.0, 2.0 * 16.0]);
    }

    /// On a wide grid (96×64: 6 columns, 4 rows at stride 16) and a tall one (64×96:
    /// 4 columns, 6 rows), cell `row · columns + col` lies at (col, row).
    #[test]
    fn decodes_non_square_grids() {
        for (width, height, cols) in [(96, 64, 6), (64, 96, 4)] {
            let (row, col) = (3, 2);
            let outputs = outputs_with_one_face(width, height, 16, row * cols + col);
            let faces = decode_yunet(&outputs, width, height, 0.5).unwrap();
            assert_eq!(faces.len(), 1, "{width}×{height}");
            let f = &faces[0];
            // centre ((2 + 0.5)·16, (3 + 0.25)·16) = (40, 52); size (32, 16)
            assert_eq!((f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2), (24.0, 44.0, 56.0, 60.0), "{width}×{height}");
            assert_eq!(f.landmarks[1], [32.0, 48.0]);
            assert!(decode_yunet(&outputs, width, height + 32, 0.5).is_err(), "a wrong height is caught");
        }
    }

    #[test]
    fn threshold_and_shape_errors() {
        let outputs = outputs_with_one_face(64, 64, 16, 5);
        assert!(decode_yunet(&outputs, 64, 64, 0.9).unwrap().is_empty());
        assert!(decode_yunet(&outputs, 128, 128, 0.5).is_err(), "wrong input size is caught");
        assert!(decode_yunet(&outputs[1..], 64, 64, 0.5).is_err(), "missing output is caught");
    }
}
