//! Entry points for the fuzz targets (`fuzz/`, run with cargo-fuzz on nightly) and for the
//! corpus replay test (`tests/integration/fuzz_replay.rs`, stable): every parser of outside
//! input, fed arbitrary bytes. Each returns normally on any input; a panic, a hang (a stream
//! that never ends) or an allocation past the fuzzer's limit is the bug it looks for.
//!
//! One function per target, named as the target and its corpus folder: [`TARGETS`].

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bundle::{Bundle, Channels, DType, InputSpec, Layout};
use crate::config::Config;
use crate::console::LineReader;
use crate::evaluate::dataset::{LabelIndex, load_csv};
use crate::frame::{Frame, PixelFormat, YuvColour};
use crate::preprocess::Preprocessor;
use crate::source::live::{Capture, Read};
use crate::source::pipe::{PipeCapture, PipeSpec, StreamFormat, StreamKeys};
use crate::tomlfile::TomlFile;

/// A fuzz target's entry point: takes any bytes, returns on every input.
pub type Entry = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/` file and the corpus folder) and entry point.
pub const TARGETS: &[(&str, Entry)] = &[
    ("config", config),
    ("manifest", manifest),
    ("thresholds_file", thresholds_file),
    ("console_line", console_line),
    ("protocol_line", protocol_line),
    ("pipe_stream", pipe_stream),
    ("labelled_csv", labelled_csv),
    ("image", image),
    ("mqtt_packets", mqtt_packets),
    ("mqtt_outbox", mqtt_outbox),
];

/// A folder of the crate, so that a fuzzed config's `bundle = "../models/elpv-solar"` and a
/// fuzzed manifest's `model = "model.onnx"` find real files.
fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A run config (`vigil.toml`): TOML, validated, its bundle found, its thresholds merged.
pub fn config(data: &[u8]) {
    let Ok(file) = TomlFile::from_bytes(&crate_path("fuzz/vigil.toml"), data.to_vec()) else { return };
    let Ok(config) = Config::from_file(file) else { return };
    if let Ok(bundle) = Bundle::load(&config.bundle_dir) {
        let _ = config.rules(&bundle);
    }
}

/// A bundle manifest (`model.toml`), checked as if it were the factory bundle's.
pub fn manifest(data: &[u8]) {
    let dir = crate_path("models/elpv-solar");
    let Ok(file) = TomlFile::from_bytes(&dir.join("fuzzed-model.toml"), data.to_vec()) else { return };
    let _ = Bundle::from_manifest(&dir, file);
}

/// A thresholds file (`[model] thresholds`), as the console's `save` writes it.
pub fn thresholds_file(data: &[u8]) {
    let Ok(file) = TomlFile::from_bytes(Path::new("thresholds.toml"), data.to_vec()) else { return };
    let _ = crate::thresholds::ThresholdsFile::from_file(file);
}

/// Bytes from the serial port: split into lines, each parsed as a console command.
pub fn console_line(data: &[u8]) {
    let mut reader = LineReader::new();
    reader.feed(data, |line| {
        if let Ok(line) = line {
            let _ = crate::console::command::parse(line);
        }
    });
}

/// A line `vigil monitor` reads from the serial port (`$VG…*CS`).
pub fn protocol_line(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = crate::protocol::parse_text_line(line);
    }
}

/// A pipe stream: the first byte picks the format (MJPEG, Y4M, or a raw format with a small
/// frame size from the next two bytes); the rest is the stream, read to its end through the
/// real [`PipeCapture`] (from a memory file, so the reads are the ones a FIFO gets).
pub fn pipe_stream(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let (w, h, stream) = match (pick % 8, rest) {
        (0..=2, _) => (0, 0, rest),
        (_, [w, h, stream @ ..]) => (u32::from(w % 64) + 1, u32::from(h % 64) + 1, stream),
        _ => return,
    };
    let format = match pick % 8 {
        0 | 1 => StreamFormat::Mjpeg,
        2 => StreamFormat::Y4m,
        3 => StreamFormat::Raw(PixelFormat::I420),
        4 => StreamFormat::Raw(PixelFormat::Nv12),
        5 => StreamFormat::Raw(PixelFormat::Yuyv),
        6 => StreamFormat::Raw(PixelFormat::Rgb24),
        _ => StreamFormat::Raw(PixelFormat::Grey),
    };
    let Some(fd) = memory_file(stream) else { return };
    let keys = StreamKeys { format, width: w, height: h, colour: YuvColour::default() };
    let mut capture = PipeCapture::new(PipeSpec::for_stream(keys, "fuzzed stream".into()));
    capture.attach(fd);
    let mut frame = Frame::empty();
    // Every read consumes at least one byte or ends the stream: more reads than bytes is a hang.
    for _ in 0..stream.len() + 8 {
        match capture.read(&mut frame, Duration::from_millis(10)) {
            Read::End | Read::Failed(_) => return,
            Read::Frame | Read::Bad(_) | Read::Timeout => {}
        }
    }
    panic!("the stream of {} bytes did not end after {} reads", stream.len(), stream.len() + 8);
}

/// `bytes` in an anonymous memory file, positioned at its start.
fn memory_file(bytes: &[u8]) -> Option<OwnedFd> {
    use std::io::{Seek, Write};
    // SAFETY: memfd_create takes a C string and returns a new descriptor this function owns.
    let fd = unsafe { libc::memfd_create(c"vigil-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is open and owned by nobody else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes).ok()?;
    file.rewind().ok()?;
    Some(file.into())
}

/// A labelled-set CSV (`vigil eval` / `calibrate`) for a three-label model.
pub fn labelled_csv(data: &[u8]) {
    let labels = ["person".to_string(), "car".to_string(), "bicycle".to_string()];
    let _ = load_csv(Path::new("fuzzed/set.csv"), data, &LabelIndex::new(&labels));
}

/// A frame through the preprocessor (decode, convert, resize, normalise): the first byte
/// picks the frame's format (mostly an encoded JPEG/PNG, as a files source or MJPEG gives)
/// and the model's channels; for raw formats the next two bytes give a small frame size.
pub fn image(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let mut frame = Frame::empty();
    let (format, bytes) = match (pick % 8, rest) {
        (0..=3, _) => (PixelFormat::Encoded, rest),
        (_, [w, h, bytes @ ..]) => {
            frame.width = u32::from(w % 64) + 1;
            frame.height = u32::from(h % 64) + 1;
            let format = [PixelFormat::I420, PixelFormat::Nv12, PixelFormat::Yuyv, PixelFormat::Rgb24];
            (format[usize::from(pick % 4)], bytes)
        }
        _ => return,
    };
    frame.format = format;
    frame.data.extend_from_slice(bytes);
    let spec = InputSpec {
        width: 16,
        height: 16,
        channels: if pick & 0x80 == 0 { Channels::Rgb } else { Channels::Grey },
        layout: if pick & 0x40 == 0 { Layout::Nchw } else { Layout::Nhwc },
        dtype: DType::F32,
        scale: 1.0 / 255.0,
        mean: vec![0.5],
        std: vec![0.25],
    };
    let mut pre = Preprocessor::new(&spec);
    let mut tensor = vec![0.0; spec.len()];
    let _ = pre.run(&frame, &mut tensor);
}

/// Bytes from an MQTT broker (or anything listening where the broker should be): decoded packet
/// after packet, as the client thread does, until one is malformed or more bytes are needed.
pub fn mqtt_packets(data: &[u8]) {
    let mut at = 0;
    while let Ok(Some((_, used))) = crate::sink::mqtt::packet::decode(&data[at..]) {
        at += used;
    }
}

/// An outbox file as a power cut, a full disk or another program may have left it: opened (what
/// is readable kept, the rest cut off or moved aside), then used.
pub fn mqtt_outbox(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    let path = dir.join("outbox");
    if std::fs::write(&path, data).is_ok() {
        let mut outbox = crate::sink::mqtt::outbox::Outbox::open(&path, 4096);
        outbox.push(b"{}".to_vec());
        outbox.delivered(outbox.len() / 2);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder for one input (the library has no tempfile dependency).
fn tempfile_dir() -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir =
        std::env::temp_dir().join(format!("vigil-fuzz-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
