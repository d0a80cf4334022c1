//! Every shipped bundle that carries `samples/golden.json` (made by onnxruntime from the
//! same sample images): the manifest agrees with both graphs, tract reproduces the recorded
//! scores, and the INT8 model runs on integer kernels rather than in float.

use std::path::PathBuf;

use serde_json::Value;
use tract_onnx::prelude::Framework;
use vigil::bundle::{Bundle, Int8Form, Variant};
use vigil::engine::TractEngine;

/// Bundles with golden files, by directory.
fn bundles_with_goldens() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(crate::common::root().join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("samples/golden.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_bundle_reproduces_its_golden_scores_in_fp32_and_int8() {
    let dirs = bundles_with_goldens();
    assert!(dirs.iter().any(|d| d.ends_with("elpv-solar")), "the factory bundle is shipped: {dirs:?}");
    for dir in dirs {
        let bundle = Bundle::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("samples/golden.json")).unwrap()).unwrap();
        let labels: Vec<&str> = golden["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        assert_eq!(labels, bundle.labels.iter().map(String::as_str).collect::<Vec<_>>(), "{}", dir.display());
        for (variant, key) in [(Variant::Fp32, "fp32"), (Variant::Int8, "int8")] {
            // Loading checks the manifest against the graph (input shape, output size).
            let engine = TractEngine::load(&bundle, variant).unwrap_or_else(|e| panic!("{} {key}: {e}", dir.display()));
            for img in golden["images"].as_array().unwrap() {
                let file = dir.join("samples").join(img["file"].as_str().unwrap());
                let ours = crate::common::score_image(&engine, &bundle, &file);
                let theirs: Vec<f32> =
                    img[key]["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4,
                        "{} {key} {}: {} is {a}, onnxruntime {b}",
                        dir.display(),
                        file.display(),
                        labels[i]
                    );
                }
            }
        }
    }
}

/// An INT8 model that tract runs in float (dequantise → float conv → quantise) is slower than
/// fp32 and must not ship: every convolution's matmul must take integer inputs.
#[test]
fn every_int8_model_runs_its_convolutions_on_integer_kernels() {
    for dir in bundles_with_goldens() {
        let bundle = Bundle::load(&dir).unwrap();
        let engine = TractEngine::load(&bundle, Variant::Int8).unwrap();
        let nodes = engine.optimized_nodes();
        let matmuls: Vec<_> = nodes.iter().filter(|n| n.op == "OptMatMul").collect();
        let integer = matmuls.iter().filter(|n| matches!(n.input_types[0].as_str(), "I8" | "U8")).count();
        let float = matmuls.len() - integer;
        // Every QLinearConv of the ONNX graph becomes an integer matmul; only the classifier
        // head (after the global pool) may stay float.
        let proto = tract_onnx::onnx()
            .proto_model_for_path(bundle.model_path(Variant::Int8, Int8Form::QOperator).unwrap())
            .unwrap();
        let convs = proto.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == "QLinearConv").count();
        assert!(convs >= 3, "{}: only {convs} QLinearConv nodes", dir.display());
        assert!(
            integer >= convs && float <= 1,
            "{}: {convs} QLinearConvs, but {integer} integer and {float} float matmuls",
            dir.display()
        );
        let dequantise =
            nodes.iter().filter(|n| n.op.contains("Dequantize") || n.op.contains("DequantizeLinear")).count();
        assert!(dequantise <= 1, "{}: {dequantise} dequantise nodes: convs run in float", dir.display());
    }
}

/// `model_int8_qdq` (the INT8 file for ONNX Runtime) is checked like every file key, and a
/// bundle whose INT8 model is in QDQ form only is refused on tract with a message that says
/// which key tract needs, instead of running the QDQ graph in float.
#[test]
fn a_qdq_only_bundle_is_refused_on_tract_naming_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir =
        crate::common::bundle_copy(tmp.path(), &crate::common::root().join("models/elpv-solar"), &["model.int8.onnx"]);
    let manifest = std::fs::read_to_string(dir.join("model.toml")).unwrap();
    let qdq_only: String =
        manifest.lines().filter(|l| !l.starts_with("model_int8 ")).map(|l| format!("{l}\n")).collect();
    assert_ne!(qdq_only, manifest);
    std::fs::write(dir.join("model.toml"), &qdq_only).unwrap();
    let bundle = Bundle::load(&dir).unwrap();
    let err = TractEngine::load(&bundle, Variant::Int8).err().expect("tract refuses the QDQ-only bundle").to_string();
    assert!(err.contains("model_int8_qdq") && err.contains("QOperator") && err.contains("model.toml"), "{err}");
    assert!(TractEngine::load(&bundle, Variant::Fp32).is_ok());

    std::fs::remove_file(dir.join("model.int8.qdq.onnx")).unwrap();
    let err = Bundle::load(&dir).expect_err("a missing QDQ file is refused").to_string();
    assert!(err.contains("model_int8_qdq") && err.contains("model.int8.qdq.onnx"), "{err}");
}
