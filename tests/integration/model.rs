//! The shipped model bundle end to end: tract's scores agree with
//! onnxruntime's on the same input, and real photos get their expected labels.

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;
use vigil::bundle::{Bundle, Variant};
use vigil::classify::Classifier;
use vigil::engine::{InferenceEngine, TractEngine};
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
    B.get_or_init(|| Bundle::load(&crate::common::default_bundle()).expect("shipped bundle manifest is valid"))
}

fn golden() -> Value {
    let path = crate::common::root().join("tests/golden/mobilenetv2/golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("golden json")
}

fn scores_for(variant: Variant, image: &Path) -> Vec<f32> {
    let mut worker = engine(variant).new_worker().expect("worker");
    let mut input = engine(variant).new_input().expect("input");
    let mut frame = Frame::empty();
    frame.data = std::fs::read(image).expect("image");
    Preprocessor::new(&bundle().input).run(&frame, input.as_mut_slice()).expect("preprocess");
    let mut scores = vec![0.0; bundle().labels.len()];
    worker.infer(&mut input, &mut scores).expect("infer");
    scores
}

/// The largest |tract - onnxruntime| over all labels, and where.
fn worst_difference(ours: &[f32], theirs: &[f32]) -> (f32, usize) {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .enumerate()
        .map(|(i, (a, b))| ((a - b).abs(), i))
        .fold((0.0f32, 0), |m, x| if x.0 > m.0 { x } else { m })
}

fn golden_probs(img: &Value, key: &str) -> Vec<f32> {
    img[key]["probs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn golden_image(img: &Value) -> std::path::PathBuf {
    crate::common::root().join("tests/golden/mobilenetv2").join(img["file"].as_str().unwrap())
}

#[test]
fn fp32_scores_match_onnxruntime() {
    let g = golden();
    let images = g["images"].as_array().expect("images");
    assert!(images.len() >= 4, "golden file covers several images");
    for img in images {
        let file = golden_image(img);
        let ours = scores_for(Variant::Fp32, &file);
        let (worst, at) = worst_difference(&ours, &golden_probs(img, "fp32"));
        assert!(
            worst <= 1e-4,
            "{}: max |tract - onnxruntime| = {worst} at label {at} ({})",
            file.display(),
            bundle().labels[at]
        );
    }
}

#[test]
fn int8_scores_stay_close_to_onnxruntime() {
    // Per-tensor INT8 MobileNetV2 amplifies rounding: correct runtimes disagree with
    // each other by up to 0.14 in probability on these images (onnxruntime optimised vs
    // unoptimised vs onnx's exact reference evaluator: `spread` in golden.json, see
    // make_golden.py), and tract lands within the same range (measured on x86: at most
    // 0.132, and tract's INT8 is as close to fp32 as onnxruntime's INT8 is). So this
    // bundle's INT8 form is held to 0.15 and to onnxruntime's top-1 on most images; the
    // 1e-4 agreement is asserted for fp32 above.
    let g = golden();
    let images = g["images"].as_array().unwrap();
    let mut same_top1 = 0;
    for img in images {
        let file = golden_image(img);
        let ours = scores_for(Variant::Int8, &file);
        let (worst, at) = worst_difference(&ours, &golden_probs(img, "int8"));
        assert!(worst <= 0.15, "{}: max |tract - onnxruntime| = {worst} at {}", file.display(), bundle().labels[at]);
        let top = ours.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        same_top1 += usize::from(top as u64 == img["int8"]["top5"][0][0].as_u64().unwrap());
    }
    assert!(same_top1 + 2 >= images.len(), "top-1 agrees on {same_top1} of {} images", images.len());
}

/// (integer matmuls, float matmuls) in a variant's optimised tract plan.
fn matmul_kinds(variant: Variant) -> (usize, usize) {
    let nodes = engine(variant).optimized_nodes();
    let matmuls = nodes.iter().filter(|n| n.op == "OptMatMul");
    let integer = matmuls.clone().filter(|n| matches!(n.input_types[0].as_str(), "I8" | "U8")).count();
    (integer, matmuls.count() - integer)
}

#[test]
fn int8_model_runs_integer_kernels() {
    // tract runs QDQ graphs in float (Dequantize -> float conv); the shipped INT8 form
    // must keep its 35 QLinearConvs as integer matmuls. Only the classifier (Gemm, left
    // in float by the export) may stay a float matmul.
    let (integer, float) = matmul_kinds(Variant::Int8);
    assert!(integer >= 35, "only {integer} integer matmuls in the INT8 plan");
    assert!(float <= 1, "{float} float matmuls in the INT8 plan");
    assert_eq!(matmul_kinds(Variant::Fp32).0, 0, "the fp32 plan has no integer matmul");
}

#[test]
fn real_photos_get_their_expected_top_label() {
    // Full preprocessing (decode + resize in Rust) on the original photos. Rust's resize is
    // not Pillow's, so where onnxruntime's top-1 leads by 0.1 or more it must be ours too;
    // where two classes are neck and neck (e.g. Eskimo dog vs malamute) it must be in our top 3.
    let g = golden();
    let rules = vigil::thresholds::rules_for(bundle(), None, None).unwrap();
    let mut c = Classifier {
        labels: &bundle().labels,
        rules: &rules,
        pre: Preprocessor::new(&bundle().input),
        worker: engine(Variant::Fp32).new_worker().unwrap(),
        input: engine(Variant::Fp32).new_input().unwrap(),
    };
    let mut exact = 0;
    for img in g["images"].as_array().unwrap() {
        let source = crate::common::root().join(img["source"].as_str().unwrap());
        let r = c.classify(&source, 3, false);
        assert!(r.error.is_none(), "{}: {:?}", source.display(), r.error);
        let top5 = &img["fp32"]["top5"];
        let expected = top5[0][1].as_str().unwrap();
        let margin = top5[0][2].as_f64().unwrap() - top5[1][2].as_f64().unwrap();
        if margin >= 0.1 {
            assert_eq!(r.top[0].label, expected, "{}: our top-3 {:?}", source.display(), r.top);
            exact += 1;
        } else {
            assert!(r.top.iter().any(|s| s.label == expected), "{}: {expected} not in {:?}", source.display(), r.top);
        }
    }
    assert!(exact >= 5, "most samples have a clear winner");
}

#[test]
fn manifest_matches_graph() {
    // Loading succeeded (shapes and label count were checked); the label count is ImageNet's.
    assert_eq!(bundle().labels.len(), 1000);
    assert!(engine(Variant::Fp32).describe().contains("[1, 3, 224, 224]"));
}

#[test]
fn resize_is_close_to_pillow_bilinear() {
    // The golden 224x224 inputs were made by Pillow's `Image.resize((224, 224), BILINEAR)`,
    // as the bundles' Python tooling preprocesses. vigil's resize (fast_image_resize,
    // bilinear convolution) must stay within a couple of levels of it, so a deployed
    // model sees what it was trained and calibrated on. JPEG decoders differ slightly too.
    let g = golden();
    for img in g["images"].as_array().unwrap() {
        let source = crate::common::root().join(img["source"].as_str().unwrap());
        let mut frame = Frame::empty();
        frame.data = std::fs::read(&source).unwrap();
        let mut pre = Preprocessor::new(&bundle().input);
        let mut tensor = vec![0.0; bundle().input.len()];
        pre.run(&frame, &mut tensor).unwrap();
        let pillow = image::open(golden_image(img)).unwrap().to_rgb8().into_raw();
        let ours = pre.resized_pixels();
        let diffs: Vec<i32> = ours.iter().zip(&pillow).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        eprintln!("{}: max {max}, mean {mean:.3}", source.display());
        // A JPEG larger than twice the model in both directions decodes at 1/2 (or less) straight
        // from its DCT (src/jpeg.rs), a sharper filter than Pillow's resize from full size:
        // pixels differ by 1-2 levels on average (most at edges and in fine texture: eagle.jpg),
        // and the scores it gives are held to their bounds in jpeg_scaling.rs. Full-size
        // decodes are libjpeg-turbo's, as Pillow's.
        let (w, h) = image::image_dimensions(&source).unwrap();
        let scaled = vigil::jpeg::covering_scale(w, h, 224, 224) != (w, h);
        let (max_allowed, mean_allowed) = match source.extension().unwrap().to_str() {
            Some("png") => (1, 0.2),
            _ if scaled => (48, 2.5),
            _ => (2, 0.3),
        };
        assert!(
            max <= max_allowed && mean < mean_allowed,
            "{}: |ours - Pillow| mean {mean}, max {max} (decoded scaled: {scaled})",
            source.display()
        );
    }
}
