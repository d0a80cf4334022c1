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

/// The manifest of the bundle around [`out_of_range_gather_model`], with its normalisation.
fn hostile_manifest(scale: &str, mean: &str, std: &str) -> String {
    format!(
        "name = \"hostile\"\nmodel = \"model.onnx\"\nlabels = [\"a\", \"b\"]\n\n[input]\nwidth = 8\nheight = 8\n\
         channels = \"grey\"\nlayout = \"nchw\"\ndtype = \"f32\"\nscale = {scale}\nmean = [{mean}]\nstd = [{std}]\n\n\
         [output]\nactivation = \"sigmoid\"\n\n[thresholds]\ndefault = {{ on = 0.5, off = 0.4 }}\n\n\
         [provenance]\nsource = \"written by tests/integration/faults.rs\"\nlicence = \"same as vigil\"\n"
    )
}

/// A bundle around [`out_of_range_gather_model`], and a config running it on real images.
fn hostile_model_config(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("model.onnx"), out_of_range_gather_model()).unwrap();
    write(&bundle, "model.toml", &hostile_manifest("0.00392156862745098", "0.0", "1.0"));
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

// ------------------------------------------------------------- reading without limits

/// `vigil check` on `config`: it must end (not block) and refuse with every one of `needles`.
fn check_refuses(config: &Path, needles: &[&str]) {
    let child =
        vigil().args(["check", "--config"]).arg(config).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let out = wait_bounded(child, &format!("vigil check --config {}", config.display()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn a_config_that_is_a_fifo_a_device_or_a_directory_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.toml");
    mkfifo(&fifo);
    check_refuses(&fifo, &["config.toml", "is a FIFO, expected a regular file"]);
    check_refuses(Path::new("/dev/zero"), &["/dev/zero", "expected a regular file"]);
    check_refuses(dir.path(), &["is a directory, expected a regular file"]);
    check_refuses(&dir.path().join("absent.toml"), &["absent.toml", "not found"]);
    let binary = dir.path().join("latin1.toml");
    std::fs::write(&binary, b"[model]\nbundle = \"caf\xe9\"\n").unwrap();
    check_refuses(&binary, &["latin1.toml:2:14", "not valid UTF-8"]);
}

#[test]
fn numbers_out_of_their_range_are_refused_at_check_not_met_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let files = |extra: &str| {
        format!(
            "{}\n[source]\nkind = \"files\"\npath = \"{}\"\n{extra}",
            crate::common::light_model_section(),
            light_model_samples().display()
        )
    };
    let pipe = |extra: &str| {
        format!(
            "{}\n[source]\nkind = \"pipe\"\npath = \"-\"\nformat = \"mjpeg\"\n{extra}",
            crate::common::light_model_section()
        )
    };
    for (text, needles) in [
        // Duration::from_secs_f64(1 / 1e-300) panicked in `run`.
        (files("fps = 1e-300\n"), ["source.fps", "expected 0 (as fast as possible"]),
        (files("fps = nan\n"), ["source.fps", "0.01 to 1000"]),
        (pipe("watchdog_s = 1e300\n"), ["source.watchdog_s", "0.1 to 3600"]),
        // A tiny status period was a busy loop (118 MB of status lines in 3 s).
        (files("\n[status]\ninterval_s = 0.0001\n"), ["status.interval_s", "0 (off) or 0.01 to 86400"]),
    ] {
        let cfg = write(dir.path(), "range.toml", &text);
        check_refuses(&cfg, &needles);
    }
}

#[test]
fn a_files_entry_swapped_for_a_fifo_is_dropped_and_the_run_still_stops() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let sample = std::fs::read_dir(light_model_samples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "png"));
    let sample = sample.expect("a PNG sample");
    std::fs::copy(&sample, images.join("a.png")).unwrap();
    std::fs::copy(&sample, images.join("b.png")).unwrap();
    let text = format!(
        "{}\n[source]\nkind = \"files\"\npath = \"{}\"\nfps = 20\nloop = true\n\n[status]\ninterval_s = 0.2\n",
        crate::common::light_model_section(),
        images.display()
    );
    let cfg = write(dir.path(), "c.toml", &text);
    let log = dir.path().join("log.txt");
    let child = vigil()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The listing is made at start; once the daemon says its source is open (after it loads
    // the model, which takes a while under qemu-user), swap an entry for a FIFO under it.
    let deadline = Instant::now() + HANG;
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("source: files") {
        assert!(Instant::now() < deadline, "vigil did not start: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(images.join("b.png")).unwrap();
    mkfifo(&images.join("b.png"));
    let deadline = Instant::now() + HANG;
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("a FIFO, expected a regular file") {
        assert!(Instant::now() < deadline, "no drop logged: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait_bounded(child, "vigil run after a FIFO entry");
    assert_eq!(out.status.code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn an_image_whose_header_claims_a_huge_size_is_refused_before_decoding() {
    // A real PNG's IHDR rewritten to 8192x8192 16-bit RGBA (512 MiB decoded), its CRC fixed:
    // the header is all the decoder needs to allocate. `classify` peaked at 558 MB on it.
    let sample = std::fs::read_dir(light_model_samples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "png"));
    let mut png = std::fs::read(sample.expect("a PNG sample")).unwrap();
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&8192u32.to_be_bytes());
    png[20..24].copy_from_slice(&8192u32.to_be_bytes());
    (png[24], png[25]) = (16, 6); // 16 bits per sample, RGBA
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, &png).unwrap();
    // A JPEG cut in half: the decoder used to fill it with grey and score it.
    let jpeg = std::fs::read(crate::common::root().join("models/mobilenetv2-imagenet/samples/coffee.jpg")).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
    let out = vigil()
        .args(["classify", "--model"])
        .arg(crate::common::root().join("models/elpv-solar"))
        .args([&huge, &cut])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "images that cannot be decoded: exit 1; {err}");
    assert!(err.contains("huge.png") && err.contains("over the 67108864-byte limit"), "{err}");
    assert!(err.contains("cut.jpg") && err.contains("truncated JPEG"), "{err}");
}

#[test]
fn manifest_normalisation_values_that_make_garbage_scores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hostile_model_config(dir.path());
    let bundle = cfg.parent().unwrap().join("bundle");
    for (scale, mean, std, key) in [
        ("0.0039", "nan", "1.0", "input.mean"),
        ("0.0039", "inf", "1.0", "input.mean"),
        ("0.0039", "0.5", "-0.2", "input.std"),
        ("0.0039", "0.5", "1e-40", "input.std"),
        ("nan", "0.5", "0.2", "input.scale"),
    ] {
        write(&bundle, "model.toml", &hostile_manifest(scale, mean, std));
        let out = vigil().args(["inspect", "--model"]).arg(&bundle).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{scale} {mean} {std}: {err}");
        assert!(err.contains("model.toml") && err.contains(key) && err.contains("expected"), "{err}");
    }
}

/// Run `vigil calibrate --output` into `out`, with `restrict` run in the child between fork
/// and exec (to set a limit or drop a privilege).
fn calibrate_restricted(
    dir: &Path,
    out: &Path,
    restrict: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> Output {
    use std::os::unix::process::CommandExt;
    let samples = light_model_samples();
    let csv = write(
        dir,
        "set.csv",
        &format!(
            "path,labels\n{0}/cell0066.128.png,\n{0}/cell0004.128.png,monocrystalline\n{0}/cell0068.128.png,defective\n{0}/cell0002.128.png,defective;monocrystalline\n{0}/cell0516.128.png,defective;uncertain;monocrystalline\n{0}/cell0143.128.png,uncertain\n",
            samples.display()
        ),
    );
    let variant = if cfg!(target_arch = "aarch64") { "int8" } else { "fp32" };
    let bundle = samples.parent().unwrap().to_path_buf();
    let mut command = vigil();
    command.args(["calibrate", "--model", bundle.to_str().unwrap(), "--variant", variant]);
    command.args(["--data", csv.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    // SAFETY: the closures passed here make async-signal-safe calls only.
    unsafe {
        command.pre_exec(restrict);
    }
    wait_bounded(command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap(), "calibrate")
}

/// `calibrate --output` with the process's file-size limit at `limit` bytes (RLIMIT_FSIZE: a
/// write past it fails with EFBIG, as on a full disk; SIGXFSZ ignored so that the write fails
/// instead of killing the process).
fn calibrate_with_file_size_limit(dir: &Path, out: &Path, limit: u64) -> Output {
    calibrate_restricted(dir, out, move || {
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        let rlim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
        if unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &rlim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
}

/// `calibrate --output` as a process that permission bits bind: CI runs as root, whom a
/// read-only directory does not stop, so root's permission-bypassing capabilities
/// (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) are dropped from the bounding set
/// before exec, and the program runs with them gone (as the packaged service's `vigil` user
/// would). Not root: there is nothing to drop.
fn calibrate_bound_by_permissions(dir: &Path, out: &Path) -> Output {
    calibrate_restricted(dir, out, || {
        if unsafe { libc::geteuid() } == 0 {
            for cap in [1, 2, 3] {
                // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    })
}

/// Files in `dir` whose name holds `.tmp-` (a temporary file left behind).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn a_thresholds_write_onto_a_full_disk_keeps_the_old_file_and_its_backup() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("thresholds.toml");
    let old = "[thresholds]\ndefault = { on = 0.6, off = 0.4 }\n";
    std::fs::write(&out, old).unwrap();
    // The new file does not fit (the old one and its backup do): the write fails, exit 1.
    let o = calibrate_with_file_size_limit(dir.path(), &out, 120);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("thresholds.toml"), "names the file: {}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), old, "the old file is intact");
    assert_eq!(std::fs::read_to_string(dir.path().join("thresholds.toml.bak")).unwrap(), old);
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());

    // Not even the backup fits: the last good backup survives (it was clobbered by a partial
    // copy before the backup was written atomically).
    let big = format!("{old}# {}\n", "x".repeat(300));
    std::fs::write(&out, &big).unwrap();
    let o = calibrate_with_file_size_limit(dir.path(), &out, 120);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), big, "the old file is intact");
    assert_eq!(std::fs::read_to_string(dir.path().join("thresholds.toml.bak")).unwrap(), old, "the last backup too");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());

    // With room, the same command writes the file.
    let o = calibrate_with_file_size_limit(dir.path(), &out, 1 << 20);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&out).unwrap().contains("[thresholds.labels"), "calibrated");
}

#[test]
fn a_thresholds_write_into_a_read_only_directory_keeps_the_old_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("ro");
    std::fs::create_dir(&inside).unwrap();
    let out = inside.join("thresholds.toml");
    let old = "[thresholds]\ndefault = { on = 0.6, off = 0.4 }\n";
    std::fs::write(&out, old).unwrap();
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o555)).unwrap();
    let o = calibrate_bound_by_permissions(dir.path(), &out);
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(o.status.code(), Some(1), "a failure while running: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("thresholds.toml") && err.contains("ermission denied"), "names the file and why: {err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), old, "the old file is intact");
    let names: Vec<String> =
        std::fs::read_dir(&inside).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["thresholds.toml"], "nothing else written there");

    // The same command, the directory writable again: the file is written (so the refusal
    // above came from the directory, not from the restricted process).
    let o = calibrate_bound_by_permissions(dir.path(), &out);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&out).unwrap().contains("[thresholds.labels"), "calibrated");
}
