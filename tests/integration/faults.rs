//! Faults injected into the real binary (issue 18): a model whose inference panics, hostile
//! byte streams on a pipe source, stdout closed under `classify`. Each must end the process
//! with a meaningful exit code and message within a bound, never panic it silently or hang it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use tract_onnx::pb;

use crate::common::{light_model_samples, stderr, vigil, write};

/// How long any of these runs may take before the test calls it a hang (a bound, not a speed
/// claim: the runs end in well under a second on x86, a few seconds under qemu-user).
const HANG: Duration = Duration::from_secs(60);

/// Wait for `child` at most [`HANG`]; kill it and fail if it is still running.
fn wait_bounded(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + HANG;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{what}: still running after {HANG:?} (a hang); stderr:\n{}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn dim(n: i64) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)),
        ..Default::default()
    }
}

fn float_value(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim: dims.iter().map(|&d| dim(d)).collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints_attribute(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute,
        ..Default::default()
    }
}

/// A valid ONNX graph, `input` [1,1,8,8] → Gather(axis 3, indices [0, 99]) → ReduceMean over
/// axes 1 and 2 → `logits` [1,2], whose shapes all check out at load; index 99 is out of range
/// for the width of 8 only when the gather runs — tract panics there.
fn out_of_range_gather_model() -> Vec<u8> {
    let indices = pb::TensorProto {
        name: "indices".into(),
        dims: vec![2],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: vec![0, 99],
        ..Default::default()
    };
    let gather = pb::AttributeProto {
        name: "axis".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 3,
        ..Default::default()
    };
    let keepdims = pb::AttributeProto {
        name: "keepdims".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 0,
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "hostile".into(),
        node: vec![
            node("Gather", &["input", "indices"], "gathered", vec![gather]),
            node("ReduceMean", &["gathered"], "logits", vec![ints_attribute("axes", &[1, 2]), keepdims]),
        ],
        initializer: vec![indices],
        input: vec![float_value("input", &[1, 1, 8, 8])],
        output: vec![float_value("logits", &[1, 2])],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "vigil tests".into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// A bundle around [`out_of_range_gather_model`], and a config running it on real images.
fn hostile_model_config(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("model.onnx"), out_of_range_gather_model()).unwrap();
    write(
        &bundle,
        "model.toml",
        "name = \"hostile\"\nmodel = \"model.onnx\"\nlabels = [\"a\", \"b\"]\n\n[input]\nwidth = 8\nheight = 8\n\
         channels = \"grey\"\nlayout = \"nchw\"\ndtype = \"f32\"\nscale = 0.00392156862745098\nmean = [0.0]\nstd = [1.0]\n\n\
         [output]\nactivation = \"sigmoid\"\n\n[thresholds]\ndefault = { on = 0.5, off = 0.4 }\n\n\
         [provenance]\nsource = \"written by tests/integration/faults.rs\"\nlicence = \"same as vigil\"\n",
    );
    let text = format!(
        "[model]\nbundle = \"{}\"\nworkers = 2\n\n[source]\nkind = \"files\"\npath = \"{}\"\nfps = 0\nloop = true\n",
        bundle.display(),
        light_model_samples().display()
    );
    write(dir, "c.toml", &text)
}

#[test]
fn a_model_whose_inference_panics_fails_the_run_with_exit_1_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hostile_model_config(dir.path());
    let child = vigil()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, "vigil run on a model whose gather panics");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a failure while running: exit 1; stderr:\n{err}");
    assert!(err.contains("the pipeline's `infer-"), "the message names the thread: {err}");
    assert!(err.contains("thread failed"), "{err}");
}

/// Run `vigil run` on a pipe source of `format` reading `bytes` from stdin.
fn run_on_stdin(format: &str, bytes: &[u8]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[source]\nkind = \"pipe\"\npath = \"-\"\nformat = \"{format}\"\n",
        crate::common::light_model_section()
    );
    let cfg = write(dir.path(), "c.toml", &text);
    let mut child = vigil()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(bytes).unwrap();
    drop(stdin);
    wait_bounded(child, &format!("vigil run on a hostile {format} stream"))
}

#[test]
fn an_mjpeg_stream_cut_inside_a_segment_header_ends_cleanly_at_its_end() {
    // The SOS segment's length points past the end of the stream: the capture thread panicked
    // on it, and the daemon then stayed up deciding nothing and ignoring the end of stream.
    let out = run_on_stdin("mjpeg", &[0xFF, 0xD8, 0xFF, 0xDA, 0xFF, 0xFF, 0x00, 0x00]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "end of stream: exit 0; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("incomplete frame at the end of the stream"), "{err}");
}

#[test]
fn a_y4m_stream_with_stray_bytes_ends_at_its_end() {
    let mut stream = b"YUV4MPEG2 W16 H16 C420jpeg\n".to_vec();
    let frame = [b"FRAME\n".as_slice(), &[128u8; 16 * 16 * 3 / 2]].concat();
    for stray in [b"x\n".as_slice(), b"stray", b"ab\n"] {
        stream.extend_from_slice(&frame);
        stream.extend_from_slice(stray);
    }
    let out = run_on_stdin("y4m", &stream);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "end of stream: exit 0; stderr:\n{err}");
    // (How many of the three good frames are decided depends on timing: a live source keeps
    // the newest frame and counts the ones the pipeline was too busy for.)
    assert!(err.contains("source ended after"), "{err}");
    assert!(err.contains("lost Y4M frame sync"), "{err}");
}

#[test]
fn classify_into_a_closed_pipe_ends_quietly() {
    // `vigil classify *.png | head -1`: the reader is gone before vigil writes.
    let samples: Vec<PathBuf> = std::fs::read_dir(light_model_samples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png" || x == "jpg"))
        .collect();
    assert!(samples.len() >= 2, "sample images");
    let mut child = vigil()
        .args(["classify", "--model"])
        .arg(crate::common::root().join("models/elpv-solar"))
        .args(&samples)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = wait_bounded(child, "vigil classify into a closed pipe");
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_raw_pipe_frame_larger_than_the_read_buffer_is_refused_at_check() {
    // It passed `check`, then never arrived: the read buffer's limit was below one frame.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[source]\nkind = \"pipe\"\npath = \"-\"\nformat = \"rgb24\"\nwidth = 8192\nheight = 8192\n",
        crate::common::light_model_section()
    );
    let cfg = write(dir.path(), "big.toml", &text);
    let out = vigil().args(["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("big.toml") && err.contains("source.width"), "{err}");
    assert!(err.contains("at most 33554432 bytes"), "{err}");
}
