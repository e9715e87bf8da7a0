//! YuNet with a free input size (`facesearch_models::onnx_edit`), made from the real
//! pinned model (fetched on first use exactly as a user's first run fetches it): the
//! edit is deterministic and gives the pinned bytes, and the edited network computes
//! what the published one does.

use facesearch_face::runtime::{InferenceRuntime, ModelSource, OrtRuntime, RuntimeOptions};
use facesearch_models::{ModelCache, catalog};

fn cache() -> ModelCache {
    ModelCache::resolve(None).expect("models cache")
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
    let library = cache.ensure(&catalog::onnxruntime().expect("a runtime for this platform")).expect("runtime");
    let runtime =
        OrtRuntime::new(&library, RuntimeOptions { intra_threads: 1, sessions_per_model: 1, lone_sessions: false })
            .expect("ORT");
    let base_path = cache.ensure(&catalog::YUNET).expect("YuNet");
    let edited = cache.ensure_edited(&catalog::YUNET_DYNAMIC).expect("edited YuNet");
    let published = runtime.load(ModelSource::File(&base_path)).expect("load published");
    let dynamic = runtime.load(ModelSource::Bytes { name: "dynamic", bytes: &edited }).expect("load edited");
    // A deterministic pseudo-photo: smooth gradients plus a hash-like texture, 0–255.
    let shape = [1, 3, 640, 640];
    let input: Vec<f32> = (0..3 * 640 * 640u32)
        .map(|i| {
            let (c, y, x) = (i / (640 * 640), (i / 640) % 640, i % 640);
            ((x + 2 * y + 50 * c) % 256) as f32 * 0.7 + (i.wrapping_mul(2_654_435_761) >> 27) as f32 * 2.0
        })
        .collect();
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
