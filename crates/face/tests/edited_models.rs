//! The documented edits of pinned models (`facesearch_models::onnx_edit`), made from the
//! real pinned files (fetched on first use exactly as a user's first run fetches them):
//! YuNet with a free input size, and the embedders and the liveness model with their
//! PRelu activations as element-wise operators. Each edit is deterministic and gives the
//! pinned bytes, and each edited network computes what the published one does.

use facesearch_face::runtime::{InferenceModel, InferenceRuntime, ModelSource, OrtRuntime, RuntimeOptions};
use facesearch_models::onnx_edit::{self, EditError};
use facesearch_models::{EditedModel, ModelCache, catalog};

fn cache() -> ModelCache {
    ModelCache::resolve(None).expect("models cache")
}

fn runtime(cache: &ModelCache) -> OrtRuntime {
    let library = cache.ensure(&catalog::onnxruntime().expect("a runtime for this platform")).expect("runtime");
    OrtRuntime::new(&library, RuntimeOptions { intra_threads: 1, sessions_per_model: 1, lone_sessions: false })
        .expect("ORT")
}

/// A deterministic pseudo-photo tensor of `shape` (N, C, H, W): smooth gradients plus a
/// hash-like texture, 0–255.
fn pseudo_photo(shape: [usize; 4]) -> Vec<f32> {
    let (h, w) = (shape[2], shape[3]);
    (0..shape.iter().product::<usize>())
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            let texture = (i as u32).wrapping_mul(2_654_435_761) >> 27;
            ((x + 2 * y + 50 * c) % 256) as f32 * 0.7 + texture as f32 * 2.0
        })
        .collect()
}

/// The PRelu edits of the three models that have PRelu activations, with their input shapes.
const PRELU_EDITS: [(EditedModel, [usize; 4]); 3] = [
    (catalog::SFACE_ELEMENTWISE, [1, 3, 112, 112]),
    (catalog::W600K_MBF_ELEMENTWISE, [1, 3, 112, 112]),
    (catalog::LIVENESS_ELEMENTWISE, [1, 3, 128, 128]),
];

#[test]
fn each_prelu_edit_is_deterministic_matches_its_pin_and_leaves_no_prelu() {
    let cache = cache();
    for (model, _) in PRELU_EDITS {
        let base = std::fs::read(cache.ensure(&model.base).expect("base file")).expect("read");
        let (a, b) =
            (onnx_edit::prelu_elementwise(&base).expect("edit"), onnx_edit::prelu_elementwise(&base).expect("edit"));
        assert_eq!(a, b, "{}: the same bytes twice", model.name);
        assert_eq!(model.apply(&base).expect("the pin holds"), a, "{}", model.name);
        assert_eq!(cache.ensure_edited(&model).expect("through the cache"), a);
        assert_eq!(onnx_edit::prelu_elementwise(&a), Err(EditError::NoPrelu), "{}: every PRelu rewritten", model.name);
    }
    // A model without PRelu is not one this edit is for.
    let yunet = std::fs::read(cache.ensure(&catalog::YUNET).expect("YuNet")).expect("read");
    assert_eq!(onnx_edit::prelu_elementwise(&yunet), Err(EditError::NoPrelu));
}

/// The largest difference between two runs' outputs, and the largest output value.
fn compare(published: &dyn InferenceModel, edited: &dyn InferenceModel, shape: [usize; 4]) -> (f32, f32) {
    let input = pseudo_photo(shape);
    let (a, b) =
        (published.run(&shape, &input).expect("run published"), edited.run(&shape, &input).expect("run edited"));
    assert_eq!(a.len(), b.len());
    let (mut diff, mut largest) = (0f32, 0f32);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.name, &x.tensor.shape), (&y.name, &y.tensor.shape));
        for (p, q) in x.tensor.data.iter().zip(&y.tensor.data) {
            diff = diff.max((p - q).abs());
            largest = largest.max(p.abs());
        }
    }
    (diff, largest)
}

#[test]
fn the_prelu_edits_compute_what_the_published_models_do() {
    let cache = cache();
    let runtime = runtime(&cache);
    for (model, shape) in PRELU_EDITS {
        let base = cache.ensure(&model.base).expect("base file");
        let edited = cache.ensure_edited(&model).expect("edited");
        let published = runtime.load(ModelSource::File(&base)).expect("load published");
        let rewritten = runtime.load(ModelSource::Bytes { name: model.name, bytes: &edited }).expect("load edited");
        let (diff, largest) = compare(&*published, &*rewritten, shape);
        assert!(largest > 0.0, "{}: a real output", model.name);
        if model.base.name == catalog::SFACE.name {
            // Its weights become constants, so batch normalisation is folded into the
            // convolutions: the sums round differently.
            assert!(diff <= 1e-5 * largest, "{}: differs by {diff} (largest output {largest})", model.name);
        } else {
            // The rewrite is exact: every bit the same.
            assert_eq!(diff, 0.0, "{}", model.name);
        }
    }
}

#[test]
fn the_edit_is_deterministic_and_matches_its_pin() {
    let cache = cache();
    let base = std::fs::read(cache.ensure(&catalog::YUNET).expect("YuNet")).expect("read YuNet");
    let edit = catalog::YUNET_DYNAMIC.edit;
    let (a, b) = (edit(&base).expect("edit"), edit(&base).expect("edit"));
    assert_eq!(a, b, "the same bytes twice");
    assert_eq!(catalog::YUNET_DYNAMIC.apply(&base).expect("the pin holds"), a);
    assert_eq!(cache.ensure_edited(&catalog::YUNET_DYNAMIC).expect("through the cache"), a);
    // Only shape annotations go: the file shrinks by the removed value_info, a few KB.
    assert!(a.len() < base.len() && base.len() - a.len() < 16 << 10, "{} → {} bytes", base.len(), a.len());
}

#[test]
fn the_edited_model_matches_the_published_one_at_640() {
    let cache = cache();
    let runtime = runtime(&cache);
    let base_path = cache.ensure(&catalog::YUNET).expect("YuNet");
    let edited = cache.ensure_edited(&catalog::YUNET_DYNAMIC).expect("edited YuNet");
    let published = runtime.load(ModelSource::File(&base_path)).expect("load published");
    let dynamic = runtime.load(ModelSource::Bytes { name: "dynamic", bytes: &edited }).expect("load edited");
    let shape = [1, 3, 640, 640];
    let input = pseudo_photo(shape);
    let a = published.run(&shape, &input).expect("run published");
    let b = dynamic.run(&shape, &input).expect("run edited");
    assert_eq!(a.len(), 12);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.tensor.shape, y.tensor.shape, "{}", x.name);
        let max = x.tensor.data.iter().zip(&y.tensor.data).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(max <= 1e-4, "{}: differs by {max}", x.name);
    }
    // And the edited one takes other sizes (any multiple of 32; the input's values are arbitrary here).
    let wide = dynamic.run(&[1, 3, 384, 640], &input[..3 * 384 * 640]).expect("run 640×384");
    assert_eq!(wide.len(), 12, "every output");
    for output in &wide {
        let stride: usize = output.name.rsplit('_').next().and_then(|s| s.parse().ok()).expect("an output kind_stride");
        assert_eq!(output.tensor.shape[1], (384 / stride) * (640 / stride), "{}", output.name);
    }
}
