//! JPEGs are decoded at the smallest DCT scale that still covers the model (src/jpeg.rs), not
//! at full size and then resized: a different, cheaper filter, so the model sees slightly
//! different pixels. These tests hold the difference to stated bounds on real photos through
//! real bundles: scores against decoding at full size (the reference: the photo decoded by the
//! `image` crate, handed over as an RGB frame, resized), and the decisions at the manifest's
//! thresholds.

use std::path::{Path, PathBuf};

use vigil::bundle::{Bundle, Variant};
use vigil::engine::{InferenceEngine, TractEngine};
use vigil::frame::{Frame, PixelFormat};
use vigil::jpeg::covering_scale;
use vigil::preprocess::Preprocessor;

use crate::common::root;

/// Score one frame.
fn scores(engine: &TractEngine, pre: &mut Preprocessor, frame: &Frame, labels: usize) -> Vec<f32> {
    let mut worker = engine.new_worker().expect("worker");
    let mut input = engine.new_input().expect("input");
    pre.run(frame, input.as_mut_slice()).expect("preprocess");
    let mut s = vec![0.0; labels];
    worker.infer(&mut input, &mut s).expect("infer");
    s
}

fn jpegs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "jpeg"))
        .collect();
    v.sort();
    v
}

/// (largest |score difference|, mean |score difference|, decisions that differ, decisions
/// compared, photos decoded scaled)
fn compare(bundle_dir: &Path, images: &[PathBuf]) -> (f32, f32, usize, usize, usize) {
    let bundle = Bundle::load(bundle_dir).unwrap();
    let engine = TractEngine::load(&bundle, Variant::Fp32).unwrap();
    let rules = vigil::thresholds::rules_for(&bundle, None, None).unwrap();
    let n = bundle.labels.len();
    let mut pre = Preprocessor::new(&bundle.input);
    let (mut worst, mut sum, mut flips, mut compared, mut scaled) = (0.0f32, 0.0f32, 0, 0, 0);
    for path in images {
        let mut jpeg = Frame::empty();
        jpeg.data = std::fs::read(path).unwrap();
        let full = image::open(path).unwrap().to_rgb8();
        let (w, h) = full.dimensions();
        let small = covering_scale(w, h, bundle.input.width, bundle.input.height);
        scaled += usize::from(small != (w, h));
        let rgb = Frame { format: PixelFormat::Rgb24, width: w, height: h, data: full.into_raw(), ..Frame::empty() };
        let ours = scores(&engine, &mut pre, &jpeg, n);
        let reference = scores(&engine, &mut pre, &rgb, n);
        for (label, (a, b)) in ours.iter().zip(&reference).enumerate() {
            let d = (a - b).abs();
            sum += d;
            if d > worst {
                worst = d;
            }
            let on = rules[label].on;
            flips += usize::from((*a >= on) != (*b >= on));
            compared += 1;
        }
        eprintln!("{}: {w}x{h} -> {small:?}, worst so far {worst:.4}", path.display());
    }
    (worst, sum / compared.max(1) as f32, flips, compared, scaled)
}

#[test]
fn scaled_jpeg_decoding_keeps_road_scene_scores_and_decisions() {
    let images = jpegs(&root().join("models/road-scene/eval/images"));
    assert!(images.len() >= 40, "the committed real-still set");
    let (worst, mean, flips, compared, scaled) = compare(&root().join("models/road-scene"), &images);
    eprintln!(
        "road-scene: |Δscore| worst {worst:.4}, mean {mean:.4}; {flips} of {compared} decisions differ; {scaled} photos scaled"
    );
    assert!(scaled * 2 >= images.len(), "most photos are large enough to decode scaled ({scaled})");
    assert!(worst <= 0.25 && mean <= 0.02, "score difference worst {worst}, mean {mean}");
    assert!(flips * 100 <= compared * 2, "{flips} of {compared} decisions differ");
}

#[test]
fn scaled_jpeg_decoding_keeps_mobilenetv2_scores() {
    let images = jpegs(&root().join("models/mobilenetv2-imagenet/samples"));
    let (worst, mean, flips, compared, scaled) = compare(&root().join("models/mobilenetv2-imagenet"), &images);
    eprintln!(
        "mobilenetv2: |Δscore| worst {worst:.4}, mean {mean:.5}; {flips} of {compared} decisions differ; {scaled} photos scaled"
    );
    assert!(scaled >= 1, "at least one sample decodes scaled");
    assert!(worst <= 0.1 && flips <= 1, "score difference worst {worst}; {flips} decisions differ");
}
