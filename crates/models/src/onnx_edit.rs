//! Documented, reproducible edits of pinned ONNX files, made in memory when a model is
//! loaded (the cache keeps only the files as published). Two edits:
//! [`yunet_dynamic_input`] (below) and [`prelu_elementwise`] (on that function).
//!
//! The first, [`yunet_dynamic_input`], makes YuNet's input size free, so that a
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
    #[error("the graph has no PRelu node this edit rewrites")]
    NoPrelu,
    #[error("the rewrite would name a new tensor {0:?}, which the graph already uses")]
    NameTaken(String),
    #[error("IR version {0}: initializers must be graph inputs before version 4")]
    IrVersion(u64),
}

// Field numbers of onnx.proto3 on the edited paths.
const MODEL_IR_VERSION: u32 = 1;
const MODEL_GRAPH: u32 = 7;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
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
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const NODE_DOMAIN: u32 = 7;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_FLOAT_DATA: u32 = 4;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;
const TENSOR_DATA_LOCATION: u32 = 14;
/// `TensorProto.DataType.FLOAT`.
const FLOAT: u64 = 1;
/// `TensorProto.DataLocation.EXTERNAL`: the values are in another file.
const EXTERNAL: u64 = 1;

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
    flat_map_field(msg, number, |bytes| Ok(edit(bytes)?.into_iter().collect()))
}

/// `msg` with every length-delimited field `number` replaced by the fields `edit` makes
/// of it, in order (none removes it); all other fields are copied byte for byte.
fn flat_map_field(
    msg: &[u8],
    number: u32,
    mut edit: impl FnMut(&[u8]) -> Result<Vec<Vec<u8>>, EditError>,
) -> Result<Vec<u8>, EditError> {
    let mut out = Vec::with_capacity(msg.len());
    for field in fields(msg)? {
        match field.value {
            Value::Bytes(bytes) if field.number == number => {
                for new in edit(bytes)? {
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

/// How one PRelu node is written with operators that ONNX Runtime vectorises. For every
/// finite `x` each form equals `PRelu(x, slope) = x ≥ 0 ? x : slope·x` exactly in
/// floating point (a zero result's sign aside, which the sums and products after it
/// cannot tell apart); an infinite `x` can differ (`∞ − ∞`, `0·∞`), and a network whose
/// activations reach infinity has no answer worth keeping either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreluForm {
    /// Every slope ≤ 1: `Max(x, slope·x)`. For x ≥ 0, slope·x ≤ x, and rounding is
    /// monotonic, so the rounded product is at most x and the maximum is x itself; for
    /// x < 0 the product is at least x, so the maximum is the product.
    Max,
    /// Every slope ≥ 1: `Min(x, slope·x)`, by the same argument mirrored.
    Min,
    /// Slopes on both sides of 1: `Relu(x) + slope·(x − Relu(x))`. For x ≥ 0 that is
    /// x + slope·0 = x (a signed zero added to x leaves x); for x < 0, 0 + slope·x.
    General,
    /// The slopes are not known to be finite floats (not a float initializer of this
    /// graph, stored elsewhere, or holding an infinity or NaN, for which the forms above
    /// differ from PRelu): the node stays as it is.
    Keep,
}

impl PreluForm {
    /// The form for a slope tensor (a `TensorProto`) from its values.
    fn of_slope(tensor: &[u8]) -> Result<Self, EditError> {
        let (mut data_type, mut external) = (0, false);
        let mut values: Vec<f32> = Vec::new();
        let le = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for field in fields(tensor)? {
            // The tag's wire type: a one-byte tag for these field numbers.
            let wire = field.raw.first().map(|tag| tag & 7);
            match (field.number, field.value) {
                (TENSOR_DATA_TYPE, Value::Varint(v)) => data_type = v,
                (TENSOR_DATA_LOCATION, Value::Varint(v)) => external = v == EXTERNAL,
                // Packed (the proto3 default) or one fixed32 per value; raw_data is little-endian.
                (TENSOR_FLOAT_DATA | TENSOR_RAW_DATA, Value::Bytes(b)) if b.len() % 4 == 0 => {
                    values.extend(b.chunks_exact(4).map(le))
                }
                (TENSOR_FLOAT_DATA, Value::Fixed) if wire == Some(WIRE_FIXED32) && field.raw.len() == 5 => {
                    values.push(le(&field.raw[1..]))
                }
                (TENSOR_FLOAT_DATA | TENSOR_RAW_DATA, _) => return Ok(PreluForm::Keep),
                _ => {}
            }
        }
        if data_type != FLOAT || external || values.is_empty() || !values.iter().all(|v| v.is_finite()) {
            return Ok(PreluForm::Keep);
        }
        Ok(if values.iter().all(|&v| v <= 1.0) {
            PreluForm::Max
        } else if values.iter().all(|&v| v >= 1.0) {
            PreluForm::Min
        } else {
            PreluForm::General
        })
    }
}

/// A `NodeProto` of the default domain with no attributes.
fn node(op_type: &str, inputs: &[&str], output: &str, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for input in inputs {
        put_bytes(&mut out, NODE_INPUT, input.as_bytes());
    }
    put_bytes(&mut out, NODE_OUTPUT, output.as_bytes());
    if !name.is_empty() {
        put_bytes(&mut out, NODE_NAME, name.as_bytes());
    }
    put_bytes(&mut out, NODE_OP_TYPE, op_type.as_bytes());
    out
}

/// The string fields `number` of `msg`, in order.
fn strings(msg: &[u8], number: u32) -> Result<Vec<String>, EditError> {
    Ok(fields(msg)?
        .into_iter()
        .filter_map(|f| match f.value {
            Value::Bytes(b) if f.number == number => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect())
}

/// The nodes that compute one PRelu node's output `y` from `x` and `slope` the `form`
/// way, with the tensor each writes (none for [`PreluForm::Keep`]). They are named after
/// the PRelu node, or after `y` when it has no name.
fn prelu_nodes(form: PreluForm, x: &str, slope: &str, y: &str, name: &str) -> Vec<(String, Vec<u8>)> {
    let node_name = if name.is_empty() { y } else { name };
    let (tensor, step) = (|part: &str| format!("{y}:prelu_{part}"), |op: &str| format!("{node_name}:{op}"));
    let scaled = tensor("scaled");
    match form {
        PreluForm::Keep => Vec::new(),
        PreluForm::Max | PreluForm::Min => {
            let pick = if form == PreluForm::Max { "Max" } else { "Min" };
            vec![
                (scaled.clone(), node("Mul", &[x, slope], &scaled, &step("mul"))),
                (y.to_string(), node(pick, &[x, &scaled], y, &step(&pick.to_lowercase()))),
            ]
        }
        PreluForm::General => {
            let (relu, negative) = (tensor("relu"), tensor("negative"));
            vec![
                (relu.clone(), node("Relu", &[x], &relu, &step("relu"))),
                (negative.clone(), node("Sub", &[x, &relu], &negative, &step("sub"))),
                (scaled.clone(), node("Mul", &[&negative, slope], &scaled, &step("mul"))),
                (y.to_string(), node("Add", &[&relu, &scaled], y, &step("add"))),
            ]
        }
    }
}

/// A model with every `PRelu` node whose slopes are finite float constants written as
/// element-wise operators ([`PreluForm`]: two nodes where every slope is on one side of
/// 1, four otherwise; the same values for every finite input), and with initializers no
/// longer listed as graph inputs.
///
/// Why: ONNX Runtime 1.31.1's CPU `PRelu` is a scalar loop with a branch per value —
/// 42 % of SFace's time and 42 % of the liveness model's, single-threaded, in its own
/// profiler — while `Mul`, `Max`, `Min`, `Relu`, `Sub` and `Add` are vectorised.
/// SFace also lists its 174 weight tensors as graph inputs (allowed, and meaning "may
/// be overridden at run time"), so the runtime must treat them as variables and cannot
/// fold its 29 batch normalisations into the convolutions; inputs that are initializers
/// are dropped (IR version 4 and later need not list them), which lets it. That fold
/// changes the rounding of the convolutions' sums, so SFace's outputs move by about
/// 1e-6; the liveness model's and w600k_mbf's outputs do not change at all
/// (`crates/face/tests/edited_models.rs`).
///
/// Exactly these protobuf fields change, in `ModelProto.graph` (field 7):
/// - each `node` (field 1) whose `op_type` is `PRelu` in the default domain, with no
///   attributes and inputs `x`, `slope`, output `y`, is replaced in place by the nodes of
///   its form (unless its slope is not a finite float initializer: then it stays); their
///   new tensors are named `{y}:prelu_scaled` (and `:prelu_relu`, `:prelu_negative`),
///   their nodes `{name}:mul` and so on (`{y}:mul` for an unnamed node);
/// - each `input` (field 11) whose name is that of an `initializer` (field 5) is removed.
///
/// Fails when no PRelu was rewritten (not a file this edit is for), when a new name is
/// taken, or for an IR version before 4. The operators it writes need opset 7 (`Mul`,
/// `Add`, `Sub` with broadcasting) and 8 (`Max`, `Min` with broadcasting); the pinned
/// files import opsets 9 and 11. PRelu nodes inside subgraphs are not looked at.
pub fn prelu_elementwise(model: &[u8]) -> Result<Vec<u8>, EditError> {
    let ir_version = fields(model)?.iter().find_map(|f| match f.value {
        Value::Varint(v) if f.number == MODEL_IR_VERSION => Some(v),
        _ => None,
    });
    if let Some(v) = ir_version.filter(|&v| v < 4) {
        return Err(EditError::IrVersion(v));
    }
    let mut rewritten = 0;
    let edited = map_field(model, MODEL_GRAPH, |graph| {
        let mut initializers = std::collections::HashMap::new();
        let mut taken = std::collections::HashSet::new();
        for field in fields(graph)? {
            match (field.number, field.value) {
                (GRAPH_INITIALIZER, Value::Bytes(tensor)) => {
                    if let Some(name) = string_field(tensor, TENSOR_NAME)? {
                        initializers.insert(name.clone(), tensor);
                        taken.insert(name);
                    }
                }
                (GRAPH_NODE, Value::Bytes(node)) => {
                    taken.extend(strings(node, NODE_INPUT)?);
                    taken.extend(strings(node, NODE_OUTPUT)?);
                }
                (GRAPH_INPUT | GRAPH_OUTPUT | GRAPH_VALUE_INFO, Value::Bytes(info)) => {
                    taken.extend(string_field(info, VALUE_INFO_NAME)?)
                }
                _ => {}
            }
        }
        let graph = flat_map_field(graph, GRAPH_NODE, |node| {
            let (inputs, outputs) = (strings(node, NODE_INPUT)?, strings(node, NODE_OUTPUT)?);
            let default_domain = matches!(string_field(node, NODE_DOMAIN)?.as_deref(), None | Some("" | "ai.onnx"));
            let has_attributes = fields(node)?.iter().any(|f| f.number == NODE_ATTRIBUTE);
            let is_prelu = string_field(node, NODE_OP_TYPE)?.as_deref() == Some("PRelu");
            let ([x, slope], [y]) = (inputs.as_slice(), outputs.as_slice()) else { return Ok(vec![node.to_vec()]) };
            if !is_prelu || !default_domain || has_attributes {
                return Ok(vec![node.to_vec()]);
            }
            let form = initializers.get(slope).map_or(Ok(PreluForm::Keep), |t| PreluForm::of_slope(t))?;
            if form == PreluForm::Keep {
                return Ok(vec![node.to_vec()]);
            }
            let name = string_field(node, NODE_NAME)?.unwrap_or_default();
            let mut nodes = Vec::new();
            for (output, bytes) in prelu_nodes(form, x, slope, y, &name) {
                if output != *y && !taken.insert(output.clone()) {
                    return Err(EditError::NameTaken(output));
                }
                nodes.push(bytes);
            }
            rewritten += 1;
            Ok(nodes)
        })?;
        map_field(&graph, GRAPH_INPUT, |input| {
            let listed = string_field(input, VALUE_INFO_NAME)?.is_some_and(|n| initializers.contains_key(&n));
            Ok((!listed).then(|| input.to_vec()))
        })
        .map(Some)
    })?;
    if rewritten == 0 {
        return Err(EditError::NoPrelu);
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

    /// A `TensorProto` named `name` holding float `values`: as `raw_data`, packed
    /// `float_data`, or one fixed32 `float_data` field per value.
    fn float_tensor(name: &str, values: &[f32], layout: &str) -> Vec<u8> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [varint_field(1, values.len() as u64), varint_field(TENSOR_DATA_TYPE, FLOAT)].concat();
        match layout {
            "raw" => out.extend(len_field(TENSOR_RAW_DATA, &bytes)),
            "packed" => out.extend(len_field(TENSOR_FLOAT_DATA, &bytes)),
            _ => {
                for v in values {
                    out.push(((TENSOR_FLOAT_DATA as u8) << 3) | WIRE_FIXED32);
                    out.extend(v.to_le_bytes());
                }
            }
        }
        out.extend(len_field(TENSOR_NAME, name.as_bytes()));
        out
    }

    /// The nodes of a model's graph as (op_type, inputs, outputs, name).
    fn nodes_of(model: &[u8]) -> Vec<(String, Vec<String>, Vec<String>, String)> {
        let graph = fields(model).unwrap().into_iter().find(|f| f.number == MODEL_GRAPH).unwrap();
        let Value::Bytes(graph) = graph.value else { panic!("graph") };
        fields(graph)
            .unwrap()
            .into_iter()
            .filter_map(|f| match f.value {
                Value::Bytes(n) if f.number == GRAPH_NODE => Some((
                    string_field(n, NODE_OP_TYPE).unwrap().unwrap_or_default(),
                    strings(n, NODE_INPUT).unwrap(),
                    strings(n, NODE_OUTPUT).unwrap(),
                    string_field(n, NODE_NAME).unwrap().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect()
    }

    /// A graph of PRelu nodes of every kind of slope, a PRelu the edit must leave (one
    /// with an attribute, one of another domain), an initializer listed as an input.
    fn prelu_graph(ir_version: u64) -> Vec<u8> {
        let prelu = |x: &str, slope: &str, y: &str, name: &str| node("PRelu", &[x, slope], y, name);
        let mut with_attribute = prelu("y4", "low", "y5", "");
        with_attribute.extend(len_field(NODE_ATTRIBUTE, b"opaque attribute"));
        let mut other_domain = prelu("y5", "low", "y6", "");
        other_domain.extend(len_field(NODE_DOMAIN, b"com.example"));
        let mut graph = Vec::new();
        for n in [
            prelu("x", "low", "y1", "p1"),
            prelu("y1", "high", "y2", "p2"),
            prelu("y2", "mixed", "y3", ""),
            node("Relu", &["y3"], "computed", "r"),
            prelu("y3", "computed", "y4", "p4"),
            with_attribute,
            other_domain,
            prelu("y6", "half", "y7", "p7"),
            prelu("y7", "nan", "y8", "p8"),
        ] {
            graph.extend(len_field(GRAPH_NODE, &n));
        }
        graph.extend(len_field(GRAPH_INITIALIZER, &float_tensor("low", &[0.25, -0.5, 1.0], "raw")));
        graph.extend(len_field(GRAPH_INITIALIZER, &float_tensor("high", &[1.5, 2.0], "packed")));
        graph.extend(len_field(GRAPH_INITIALIZER, &float_tensor("mixed", &[0.5, 1.5], "fixed")));
        // Half floats: not read, so the node is kept.
        let half = [
            varint_field(TENSOR_DATA_TYPE, 10),
            len_field(TENSOR_RAW_DATA, &[0, 0x38]),
            len_field(TENSOR_NAME, b"half"),
        ];
        graph.extend(len_field(GRAPH_INITIALIZER, &half.concat()));
        graph.extend(len_field(GRAPH_INITIALIZER, &float_tensor("nan", &[0.5, f32::NAN], "raw")));
        graph.extend(len_field(GRAPH_INPUT, &value_info("x", &[1, 3])));
        graph.extend(len_field(GRAPH_INPUT, &value_info("low", &[3])));
        graph.extend(len_field(GRAPH_OUTPUT, &value_info("y8", &[1, 3])));
        graph.extend(len_field(77, b"unknown graph field"));
        let mut model = around(&graph);
        model.splice(0..varint_field(1, 6).len(), varint_field(MODEL_IR_VERSION, ir_version));
        model
    }

    #[test]
    fn each_prelu_becomes_the_element_wise_form_its_slopes_allow() {
        let original = prelu_graph(6);
        let edited = prelu_elementwise(&original).unwrap();
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let n = |op: &str, inputs: &[&str], output: &str, name: &str| {
            (op.to_string(), owned(inputs), owned(&[output]), name.to_string())
        };
        let expected = vec![
            n("Mul", &["x", "low"], "y1:prelu_scaled", "p1:mul"),
            n("Max", &["x", "y1:prelu_scaled"], "y1", "p1:max"),
            n("Mul", &["y1", "high"], "y2:prelu_scaled", "p2:mul"),
            n("Min", &["y1", "y2:prelu_scaled"], "y2", "p2:min"),
            n("Relu", &["y2"], "y3:prelu_relu", "y3:relu"),
            n("Sub", &["y2", "y3:prelu_relu"], "y3:prelu_negative", "y3:sub"),
            n("Mul", &["y3:prelu_negative", "mixed"], "y3:prelu_scaled", "y3:mul"),
            n("Add", &["y3:prelu_relu", "y3:prelu_scaled"], "y3", "y3:add"),
            n("Relu", &["y3"], "computed", "r"),
            // A slope computed in the graph, an attribute, another domain, half floats
            // and a NaN slope: left as they were.
            n("PRelu", &["y3", "computed"], "y4", "p4"),
            n("PRelu", &["y4", "low"], "y5", ""),
            n("PRelu", &["y5", "low"], "y6", ""),
            n("PRelu", &["y6", "half"], "y7", "p7"),
            n("PRelu", &["y7", "nan"], "y8", "p8"),
        ];
        assert_eq!(nodes_of(&edited), expected);
        // The initializer listed as an input is no longer one; everything else stays,
        // the kept nodes (attribute, domain) and the unknown fields byte for byte.
        let graph_of =
            |model: &[u8]| match fields(model).unwrap().into_iter().find(|f| f.number == MODEL_GRAPH).unwrap().value {
                Value::Bytes(g) => g.to_vec(),
                _ => panic!("graph"),
            };
        let (before, after) = (graph_of(&original), graph_of(&edited));
        let inputs = |g: &[u8]| {
            fields(g).unwrap().iter().filter(|f| f.number == GRAPH_INPUT).map(|f| f.raw.to_vec()).collect::<Vec<_>>()
        };
        assert_eq!(inputs(&after), vec![len_field(GRAPH_INPUT, &value_info("x", &[1, 3]))]);
        let others = |g: &[u8]| {
            fields(g)
                .unwrap()
                .iter()
                .filter(|f| ![GRAPH_NODE, GRAPH_INPUT].contains(&f.number))
                .map(|f| f.raw.to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(others(&after), others(&before));
        let kept = |g: &[u8]| {
            fields(g)
                .unwrap()
                .iter()
                .filter(|f| f.number == GRAPH_NODE && f.raw.windows(5).any(|w| w == b"PRelu"))
                .map(|f| f.raw.to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(&after), kept(&before)[3..].to_vec(), "the PRelu nodes left as they were, byte for byte");
        let outside = |m: &[u8]| {
            fields(m).unwrap().iter().filter(|f| f.number != MODEL_GRAPH).map(|f| f.raw.to_vec()).collect::<Vec<_>>()
        };
        assert_eq!(outside(&edited), outside(&original));
        // Deterministic; the edited graph has nothing left to rewrite.
        assert_eq!(prelu_elementwise(&original).unwrap(), edited);
        assert_eq!(prelu_elementwise(&edited), Err(EditError::NoPrelu));
    }

    #[test]
    fn refuses_what_the_prelu_edit_is_not_for() {
        assert_eq!(prelu_elementwise(&prelu_graph(3)), Err(EditError::IrVersion(3)));
        let no_prelu = around(&len_field(GRAPH_NODE, &node("Relu", &["x"], "y", "")));
        assert_eq!(prelu_elementwise(&no_prelu), Err(EditError::NoPrelu));
        // A graph that already has a tensor of a new node's name.
        let mut graph = len_field(GRAPH_NODE, &node("PRelu", &["x", "s"], "y", ""));
        graph.extend(len_field(GRAPH_NODE, &node("Relu", &["x"], "y:prelu_relu", "")));
        graph.extend(len_field(GRAPH_INITIALIZER, &float_tensor("s", &[0.5, 1.5], "raw")));
        assert_eq!(prelu_elementwise(&around(&graph)), Err(EditError::NameTaken("y:prelu_relu".into())));
        // Or only a shape annotation of that name.
        let mut graph = len_field(GRAPH_NODE, &node("PRelu", &["x", "s"], "y", ""));
        graph.extend(len_field(GRAPH_INITIALIZER, &float_tensor("s", &[0.5], "raw")));
        graph.extend(len_field(GRAPH_VALUE_INFO, &value_info("y:prelu_scaled", &[1])));
        assert_eq!(prelu_elementwise(&around(&graph)), Err(EditError::NameTaken("y:prelu_scaled".into())));
    }

    /// The three forms equal PRelu in f32, as ONNX Runtime computes each operator (one
    /// rounding per operator), for finite inputs of every magnitude and sign, zeros and
    /// slopes: the same bits, but for the sign of a zero result. (Infinite inputs are
    /// outside the forms' promise, [`PreluForm`]; NaN propagates through all of them.)
    #[test]
    fn every_form_equals_prelu_in_floating_point() {
        let prelu = |x: f32, s: f32| if x >= 0.0 { x } else { s * x };
        let max_form = |x: f32, s: f32| x.max(s * x);
        let min_form = |x: f32, s: f32| x.min(s * x);
        let general = |x: f32, s: f32| {
            let relu = x.max(0.0);
            relu + s * (x - relu)
        };
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut xs = vec![0.0f32, -0.0, 1.0, -1.0, f32::MIN_POSITIVE, -f32::MIN_POSITIVE, 1e-42, -1e-42, 3e38, -3e38];
        xs.extend((0..20_000).map(|_| f32::from_bits(next() as u32)).filter(|x| x.is_finite()));
        let slopes = |low: f32, high: f32, next: &mut dyn FnMut() -> u64| {
            let mut s: Vec<f32> = (0..200).map(|_| low + (high - low) * (next() % 1_000_001) as f32 / 1e6).collect();
            s.extend([low, high]);
            s
        };
        // Zeros compare equal whatever their sign; every other value by its bits.
        let same = |a: f32, b: f32| if a == 0.0 { b == 0.0 } else { a.to_bits() == b.to_bits() };
        for s in slopes(-2.0, 1.0, &mut next) {
            for &x in &xs {
                assert!(same(max_form(x, s), prelu(x, s)), "max form, x {x:e}, slope {s}");
                assert!(same(general(x, s), prelu(x, s)), "general form, x {x:e}, slope {s}");
            }
        }
        for s in slopes(1.0, 4.0, &mut next) {
            for &x in &xs {
                assert!(same(min_form(x, s), prelu(x, s)), "min form, x {x:e}, slope {s}");
                assert!(same(general(x, s), prelu(x, s)), "general form, x {x:e}, slope {s}");
            }
        }
        // And the test can fail: the max form is wrong for a slope above 1.
        assert!(!same(max_form(-1.0, 2.0), prelu(-1.0, 2.0)));
    }
}
