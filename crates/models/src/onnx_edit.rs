//! Documented, reproducible edits of pinned ONNX files, made in memory when a model is
//! loaded (the cache keeps only the files as published).
//!
//! The one edit today, [`yunet_dynamic_input`], makes YuNet's input size free, so that a
//! photo can be detected at its own aspect ratio instead of in a fixed 640×640 square. The network itself (convolutions, pooling, ×2 upsampling by
//! scale factor, reshapes to `[1, -1, k]`) has no size built in; only the shape
//! annotations of the graph name 640. Exactly these protobuf fields change, in
//! `ModelProto.graph` (field 7, a `GraphProto`):
//!
//! - `input` (field 11) named `input`: `type.tensor_type.shape.dim[2]` and `dim[3]`
//!   (each a `TensorShapeProto.Dimension`) change from `dim_value: 640` (field 1) to
//!   `dim_param: "height"` / `"width"` (field 2);
//! - each of the twelve `output`s (field 12) `{cls,obj,bbox,kps}_{8,16,32}`:
//!   `dim[1]`, the number of grid cells `(640/s)²`, changes from `dim_value` to
//!   `dim_param: "cells_{s}"`;
//! - every `value_info` (field 13: optional shape annotations of the 94 inner tensors,
//!   all tied to 640, which ONNX Runtime infers itself) is removed.
//!
//! Every other byte is copied as it is: the walk below reads the protobuf wire format
//! and re-encodes only the length-delimited fields on the path to an edited one (and
//! so their lengths). Decoding into typed messages (`prost`) and encoding again would
//! drop unknown fields and could reorder others. The result is pinned by its SHA-256
//! ([`crate::catalog::YUNET_DYNAMIC`]) and checked like any fetched file.

use std::cell::Cell;

/// Why an edit could not be made: the file is not a protobuf of the shape the edit
/// expects (each variant says where it stopped reading or what it found instead).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum EditError {
    #[error("the file ends inside a {0}")]
    Truncated(&'static str),
    #[error("a varint longer than 10 bytes")]
    LongVarint,
    #[error("a field number beyond 32 bits")]
    FieldNumber,
    #[error("field {field}: wire type {wire} (groups are not used by ONNX)")]
    WireType { field: u32, wire: u64 },
    #[error("input dimension {index} is {value}, not {expected}")]
    InputDimension { index: usize, value: u64, expected: u64 },
    #[error("output {name:?} has {value} cells, not {expected}")]
    OutputCells { name: String, value: u64, expected: u64 },
    #[error("unexpected output {0:?}")]
    UnexpectedOutput(String),
    #[error("edited {inputs} input and {outputs} output dimensions; YuNet has 2 and 12")]
    DimensionCount { inputs: usize, outputs: usize },
}

// Field numbers of onnx.proto3 on the edited path.
const MODEL_GRAPH: u32 = 7;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
const VALUE_INFO_NAME: u32 = 1;
const VALUE_INFO_TYPE: u32 = 2;
const TYPE_TENSOR: u32 = 1;
const TENSOR_SHAPE: u32 = 2;
const SHAPE_DIM: u32 = 1;
const DIM_VALUE: u32 = 1;
const DIM_PARAM: u32 = 2;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// One field of a message as it lies on the wire.
struct Field<'a> {
    number: u32,
    value: Value<'a>,
    /// The whole field, tag included, to copy it unchanged.
    raw: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, EditError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = buf.get(*pos) else { return Err(EditError::Truncated("varint")) };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(EditError::LongVarint)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field: tag, length, bytes.
fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The fields of one message, in wire order.
fn fields(msg: &[u8]) -> Result<Vec<Field<'_>>, EditError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let start = pos;
        let tag = read_varint(msg, &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| EditError::FieldNumber)?;
        let take = |pos: &mut usize, n: usize| -> Result<&[u8], EditError> {
            let end = pos.checked_add(n).filter(|&e| e <= msg.len()).ok_or(EditError::Truncated("field"))?;
            let bytes = &msg[*pos..end];
            *pos = end;
            Ok(bytes)
        };
        let value = match (tag & 7) as u8 {
            WIRE_VARINT => Value::Varint(read_varint(msg, &mut pos)?),
            WIRE_FIXED64 => take(&mut pos, 8).map(|_| Value::Fixed)?,
            WIRE_FIXED32 => take(&mut pos, 4).map(|_| Value::Fixed)?,
            WIRE_LEN => {
                let n = usize::try_from(read_varint(msg, &mut pos)?).map_err(|_| EditError::Truncated("field"))?;
                Value::Bytes(take(&mut pos, n)?)
            }
            wire => return Err(EditError::WireType { field: number, wire: u64::from(wire) }),
        };
        out.push(Field { number, value, raw: &msg[start..pos] });
    }
    Ok(out)
}

/// `msg` with every length-delimited field `number` replaced by what `edit` makes of it
/// (`None` removes it); all other fields are copied byte for byte, in order.
fn map_field(
    msg: &[u8],
    number: u32,
    mut edit: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, EditError>,
) -> Result<Vec<u8>, EditError> {
    let mut out = Vec::with_capacity(msg.len());
    for field in fields(msg)? {
        match field.value {
            Value::Bytes(bytes) if field.number == number => {
                if let Some(new) = edit(bytes)? {
                    put_bytes(&mut out, number, &new);
                }
            }
            _ => out.extend_from_slice(field.raw),
        }
    }
    Ok(out)
}

/// `msg` without any field `number` (of whatever wire type), the rest byte for byte.
fn without_field(msg: &[u8], number: u32) -> Result<Vec<u8>, EditError> {
    Ok(fields(msg)?.iter().filter(|f| f.number != number).flat_map(|f| f.raw).copied().collect())
}

/// The string field `number` of `msg`, if present.
fn string_field(msg: &[u8], number: u32) -> Result<Option<String>, EditError> {
    for field in fields(msg)? {
        if let (true, Value::Bytes(b)) = (field.number == number, field.value) {
            return Ok(Some(String::from_utf8_lossy(b).into_owned()));
        }
    }
    Ok(None)
}

/// A `ValueInfoProto` whose shape dimensions are renamed by `symbol(index, dim_value)`
/// (`Some(name)`: the fixed size becomes the symbol `name`); returns how many were.
fn symbolic_dims(
    value_info: &[u8],
    symbol: impl Fn(usize, u64) -> Result<Option<String>, EditError>,
) -> Result<(Vec<u8>, usize), EditError> {
    let (index, changed) = (Cell::new(0), Cell::new(0));
    let edited = map_field(value_info, VALUE_INFO_TYPE, |ty| {
        map_field(ty, TYPE_TENSOR, |tensor| {
            map_field(tensor, TENSOR_SHAPE, |shape| {
                map_field(shape, SHAPE_DIM, |dim| {
                    let i = index.replace(index.get() + 1);
                    let fixed = fields(dim)?.iter().find_map(|f| match f.value {
                        Value::Varint(v) if f.number == DIM_VALUE => Some(v),
                        _ => None,
                    });
                    let Some(name) = fixed.map(|v| symbol(i, v)).transpose()?.flatten() else {
                        return Ok(Some(dim.to_vec()));
                    };
                    changed.set(changed.get() + 1);
                    // Any other field of the dimension (a denotation) stays.
                    let mut out = without_field(dim, DIM_VALUE)?;
                    put_bytes(&mut out, DIM_PARAM, name.as_bytes());
                    Ok(Some(out))
                })
                .map(Some)
            })
            .map(Some)
        })
        .map(Some)
    })?;
    Ok((edited, changed.get()))
}

/// YuNet 2023mar's side: the pinned file's fixed input is 640×640.
const YUNET_SIDE: u64 = 640;
const YUNET_STRIDES: [u64; 3] = [8, 16, 32];

/// The pinned YuNet 2023mar model with a free input height and width: the edit of the
/// module documentation. Fails on a file whose input is not 640×640 or that lacks the
/// twelve outputs' dimensions; that it is YuNet is the pin's job (the caller checks the
/// edited bytes' SHA-256).
pub fn yunet_dynamic_input(model: &[u8]) -> Result<Vec<u8>, EditError> {
    let (inputs, outputs) = (Cell::new(0), Cell::new(0));
    let mut failure: Option<EditError> = None;
    let edited = map_field(model, MODEL_GRAPH, |graph| {
        let graph = without_field(graph, GRAPH_VALUE_INFO)?;
        let graph = map_field(&graph, GRAPH_INPUT, |input| {
            if string_field(input, VALUE_INFO_NAME)?.as_deref() != Some("input") {
                return Ok(Some(input.to_vec()));
            }
            let (edited, n) = symbolic_dims(input, |i, v| match (i, v) {
                (2, YUNET_SIDE) => Ok(Some("height".into())),
                (3, YUNET_SIDE) => Ok(Some("width".into())),
                (2 | 3, _) => Err(EditError::InputDimension { index: i, value: v, expected: YUNET_SIDE }),
                _ => Ok(None),
            })?;
            inputs.set(inputs.get() + n);
            Ok(Some(edited))
        })?;
        map_field(&graph, GRAPH_OUTPUT, |output| {
            let name = string_field(output, VALUE_INFO_NAME)?.unwrap_or_default();
            let stride = name.rsplit_once('_').and_then(|(_, s)| s.parse::<u64>().ok());
            let Some(stride) = stride.filter(|s| YUNET_STRIDES.contains(s)) else {
                failure.get_or_insert(EditError::UnexpectedOutput(name.clone()));
                return Ok(Some(output.to_vec()));
            };
            let cells = (YUNET_SIDE / stride).pow(2);
            let (edited, n) = symbolic_dims(output, |i, v| match (i, v) {
                (1, v) if v == cells => Ok(Some(format!("cells_{stride}"))),
                (1, v) => Err(EditError::OutputCells { name: name.clone(), value: v, expected: cells }),
                _ => Ok(None),
            })?;
            outputs.set(outputs.get() + n);
            Ok(Some(edited))
        })
        .map(Some)
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if inputs.get() != 2 || outputs.get() != 12 {
        return Err(EditError::DimensionCount { inputs: inputs.get(), outputs: outputs.get() });
    }
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(number: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, number, bytes);
        out
    }

    fn varint_field(number: u32, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, u64::from(number) << 3);
        put_varint(&mut out, v);
        out
    }

    fn dim(v: u64) -> Vec<u8> {
        len_field(SHAPE_DIM, &varint_field(DIM_VALUE, v))
    }

    /// A `ValueInfoProto` named `name` of a float tensor with fixed `dims`, followed by
    /// an unknown field (number 99) that must survive.
    fn value_info(name: &str, dims: &[u64]) -> Vec<u8> {
        let shape: Vec<u8> = dims.iter().flat_map(|&d| dim(d)).collect();
        let tensor = [varint_field(1, 1), len_field(TENSOR_SHAPE, &shape)].concat();
        let ty = len_field(TYPE_TENSOR, &tensor);
        [len_field(VALUE_INFO_NAME, name.as_bytes()), len_field(VALUE_INFO_TYPE, &ty), varint_field(99, 7)].concat()
    }

    /// A miniature YuNet: a node (kept as opaque bytes), the input, twelve outputs, one
    /// value_info, and fields around the graph (a fixed32, a fixed64, an unknown field).
    fn tiny_yunet(side: u64) -> Vec<u8> {
        let mut graph = len_field(1, b"opaque node bytes");
        graph.extend(len_field(GRAPH_INPUT, &value_info("input", &[1, 3, side, side])));
        for kind in ["cls", "obj", "bbox", "kps"] {
            for s in YUNET_STRIDES {
                graph.extend(len_field(GRAPH_OUTPUT, &value_info(&format!("{kind}_{s}"), &[1, (side / s).pow(2), 4])));
            }
        }
        graph.extend(len_field(GRAPH_VALUE_INFO, &value_info("419", &[1, 16, side / 2, side / 2])));
        around(&graph)
    }

    /// A model message holding `graph` between other fields: a varint, a fixed32, a
    /// fixed64 before it and an unknown length-delimited field after it.
    fn around(graph: &[u8]) -> Vec<u8> {
        let mut fixed = vec![(3 << 3) | WIRE_FIXED32];
        fixed.extend([1, 2, 3, 4]);
        fixed.push((4 << 3) | WIRE_FIXED64);
        fixed.extend([0; 8]);
        [varint_field(1, 6), fixed, len_field(MODEL_GRAPH, graph), len_field(500, b"future field")].concat()
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(read_varint(&buf, &mut 0).unwrap(), v);
        }
        assert_eq!(read_varint(&[0x80], &mut 0), Err(EditError::Truncated("varint")));
        assert_eq!(read_varint(&[0xff; 11], &mut 0), Err(EditError::LongVarint));
    }

    #[test]
    fn edits_exactly_the_documented_fields() {
        let original = tiny_yunet(640);
        let edited = yunet_dynamic_input(&original).unwrap();
        let expected = {
            let sym = |n: &str| len_field(SHAPE_DIM, &len_field(DIM_PARAM, n.as_bytes()));
            let info = |name: &str, dims: Vec<Vec<u8>>| {
                let tensor = [varint_field(1, 1), len_field(TENSOR_SHAPE, &dims.concat())].concat();
                [
                    len_field(VALUE_INFO_NAME, name.as_bytes()),
                    len_field(VALUE_INFO_TYPE, &len_field(TYPE_TENSOR, &tensor)),
                    varint_field(99, 7),
                ]
                .concat()
            };
            let mut graph = len_field(1, b"opaque node bytes");
            graph.extend(len_field(GRAPH_INPUT, &info("input", vec![dim(1), dim(3), sym("height"), sym("width")])));
            for kind in ["cls", "obj", "bbox", "kps"] {
                for s in YUNET_STRIDES {
                    let dims = vec![dim(1), sym(&format!("cells_{s}")), dim(4)];
                    graph.extend(len_field(GRAPH_OUTPUT, &info(&format!("{kind}_{s}"), dims)));
                }
            }
            around(&graph)
        };
        assert_eq!(edited, expected);
        // Deterministic, and an edited file is no longer a fixed-size YuNet.
        assert_eq!(yunet_dynamic_input(&original).unwrap(), edited);
        assert_eq!(yunet_dynamic_input(&edited), Err(EditError::DimensionCount { inputs: 0, outputs: 0 }));
    }

    #[test]
    fn refuses_files_that_are_not_the_pinned_yunet() {
        let other_size = yunet_dynamic_input(&tiny_yunet(320));
        assert_eq!(other_size, Err(EditError::InputDimension { index: 2, value: 320, expected: 640 }));
        assert_eq!(yunet_dynamic_input(&[]), Err(EditError::DimensionCount { inputs: 0, outputs: 0 }), "no graph");
        assert_eq!(yunet_dynamic_input(&[0x3a, 0x05, 0x01]), Err(EditError::Truncated("field")));
        let mut grouped = tiny_yunet(640);
        grouped.insert(0, (9 << 3) | 3);
        assert_eq!(yunet_dynamic_input(&grouped), Err(EditError::WireType { field: 9, wire: 3 }));
    }
}
