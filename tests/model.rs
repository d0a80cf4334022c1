//! The shipped model bundle end to end: tract's scores agree with
//! onnxruntime's on the same input, and real photos get their expected labels.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;
use vigil::bundle::{Bundle, Variant};
use vigil::classify::Classifier;
use vigil::engine::{InferenceEngine, InferenceWorker, TractEngine};
use vigil::frame::Frame;
use vigil::preprocess::Preprocessor;

/// Loading and optimising a model takes seconds under qemu: share one per variant.
fn engine(variant: Variant) -> &'static TractEngine {
    static FP32: OnceLock<TractEngine> = OnceLock::new();
    static INT8: OnceLock<TractEngine> = OnceLock::new();
    let cell = match variant {
        Variant::Fp32 => &FP32,
        Variant::Int8 => &INT8,
    };
    cell.get_or_init(|| TractEngine::load(bundle(), variant).expect("shipped model loads"))
}

fn bundle() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| Bundle::load(&common::default_bundle()).expect("shipped bundle manifest is valid"))
}

fn golden() -> Value {
    let path = common::root().join("tests/golden/mobilenetv2/golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("golden json")
}

fn scores_for(variant: Variant, image: &Path) -> Vec<f32> {
    let mut worker = engine(variant).new_worker().expect("worker");
    let mut frame = Frame::empty();
    frame.data = std::fs::read(image).expect("image");
    Preprocessor::new(&bundle().input)
        .run(&frame, worker.input_mut())
        .expect("preprocess");
    let mut scores = vec![0.0; bundle().labels.len()];
    worker.infer(&mut scores).expect("infer");
    scores
}

fn check_against_onnxruntime(variant: Variant, key: &str) {
    let g = golden();
    let images = g["images"].as_array().expect("images");
    assert!(images.len() >= 4, "golden file covers several images");
    for img in images {
        let file = common::root()
            .join("tests/golden/mobilenetv2")
            .join(img["file"].as_str().unwrap());
        let ours = scores_for(variant, &file);
        let theirs: Vec<f32> = img[key]["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(ours.len(), theirs.len());
        let (worst, at) = ours
            .iter()
            .zip(&theirs)
            .enumerate()
            .map(|(i, (a, b))| ((a - b).abs(), i))
            .fold((0.0f32, 0), |m, x| if x.0 > m.0 { x } else { m });
        assert!(
            worst <= 1e-4,
            "{variant} {}: max |tract - onnxruntime| = {worst} at label {at} ({}): {} vs {}",
            file.display(),
            bundle().labels[at],
            ours[at],
            theirs[at]
        );
    }
}

#[test]
fn fp32_scores_match_onnxruntime() {
    check_against_onnxruntime(Variant::Fp32, "fp32");
}

#[test]
fn int8_scores_match_onnxruntime() {
    check_against_onnxruntime(Variant::Int8, "int8");
}

#[test]
fn int8_model_runs_integer_kernels() {
    // tract runs QDQ graphs in float; the shipped INT8 form must keep integer convolutions.
    let ops = engine(Variant::Int8).optimized_ops();
    let fp32_ops = engine(Variant::Fp32).optimized_ops();
    let quantised = ops
        .iter()
        .filter(|o| o.contains("Quant") || o.contains("q_") || o.contains("Q"))
        .count();
    assert!(quantised > 0, "no quantised ops in the INT8 plan: {ops:?}");
    assert_ne!(ops, fp32_ops, "INT8 plan equals the fp32 plan");
}

#[test]
fn real_photos_get_their_expected_top_label() {
    // Full pipeline preprocessing (decode + resize in Rust) on the original photos:
    // the top label must be the one onnxruntime gives the same photo resized by PIL.
    let g = golden();
    let rules = vigil::app::rules_for(bundle(), None).unwrap();
    for variant in [Variant::Fp32, Variant::Int8] {
        let mut c = Classifier {
            labels: &bundle().labels,
            rules: &rules,
            pre: Preprocessor::new(&bundle().input),
            worker: engine(variant).new_worker().unwrap(),
        };
        for img in g["images"].as_array().unwrap() {
            let source = common::root().join(img["source"].as_str().unwrap());
            let r = c.classify(&source, 3, false);
            assert!(r.error.is_none(), "{}: {:?}", source.display(), r.error);
            let expected = img["fp32"]["top5"][0][1].as_str().unwrap();
            assert_eq!(
                r.top[0].label,
                expected,
                "{variant} {}: top-3 {:?}",
                source.display(),
                r.top
            );
        }
    }
}

#[test]
fn manifest_matches_graph() {
    // Loading succeeded (shapes and label count were checked); the label count is ImageNet's.
    assert_eq!(bundle().labels.len(), 1000);
    assert!(engine(Variant::Fp32).describe().contains("[1, 3, 224, 224]"));
}
