//! Camera formats and live sources, fed by a real `ffmpeg` from a committed real photo:
//! conversions against ffmpeg's own, pipe streams of every format through the daemon,
//! bad frames in the middle of a stream, and a FIFO whose writer stalls, goes away and
//! comes back.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{default_bundle, vigil, write};
use serde_json::Value;
use vigil::convert::YuvConverter;
use vigil::frame::{PixelFormat, Range, YuvColour};

/// The photo every stream is made from: an espresso, which the default model knows well.
fn photo() -> PathBuf {
    default_bundle().join("samples/coffee.jpg")
}

/// Run ffmpeg (quietly, bit-exact) with `args`, feeding `input`; return its stdout.
fn ffmpeg(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("ffmpeg")
        .args(
            ["-hide_banner", "-loglevel", "error", "-nostdin"].iter().filter(|a| input.is_none() || **a != "-nostdin"),
        )
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed (.ci/run installs it)");
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || stdin.write_all(&bytes));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

const W: u32 = 640;
const H: u32 = 480;
const SIZE: &str = "640x480";
/// What makes ffmpeg's YUV -> RGB comparable: nearest chroma, full-precision rounding.
const SWS: &str = "neighbor+full_chroma_int+accurate_rnd+bitexact";

/// The photo as `pix_fmt` frames at 640x480, `n` of them back to back.
fn frames(pix_fmt: &str, muxer: &str, n: usize) -> Vec<u8> {
    frames_sized(pix_fmt, muxer, n, (W, H))
}

/// The photo as `pix_fmt` frames of `width` x `height`, `n` of them back to back.
fn frames_sized(pix_fmt: &str, muxer: &str, n: usize, (width, height): (u32, u32)) -> Vec<u8> {
    let n = n.to_string();
    let vf = format!("scale={width}:{height}");
    ffmpeg(
        &[
            "-loop",
            "1",
            "-i",
            photo().to_str().unwrap(),
            "-frames:v",
            &n,
            "-vf",
            &vf,
            "-pix_fmt",
            pix_fmt,
            "-f",
            muxer,
            "-",
        ],
        None,
    )
}

/// ffmpeg's conversion of raw `pix_fmt` frame bytes to `out_fmt`.
fn ffmpeg_convert(pix_fmt: &str, data: &[u8], out_fmt: &str) -> Vec<u8> {
    ffmpeg(
        &[
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-s",
            SIZE,
            "-i",
            "-",
            "-f",
            "rawvideo",
            "-pix_fmt",
            out_fmt,
            "-sws_flags",
            SWS,
            "-",
        ],
        Some(data),
    )
}

#[test]
fn yuv_conversions_match_ffmpeg() {
    for (pix_fmt, format, range) in [
        ("yuv420p", PixelFormat::I420, Range::Limited),
        ("nv12", PixelFormat::Nv12, Range::Limited),
        ("yuyv422", PixelFormat::Yuyv, Range::Limited),
        ("yuvj420p", PixelFormat::I420, Range::Full),
    ] {
        let yuv = frames(pix_fmt, "rawvideo", 1);
        assert_eq!(yuv.len(), format.frame_len(W, H).unwrap(), "{pix_fmt} frame size");
        let conv = YuvConverter::new(YuvColour { range, ..YuvColour::default() });

        let reference = ffmpeg_convert(pix_fmt, &yuv, "rgb24");
        let mut ours = Vec::new();
        conv.to_rgb(format, W, H, &yuv, &mut ours);
        assert_eq!(ours.len(), reference.len());
        let differ = ours.iter().zip(&reference).filter(|(a, b)| a != b).count();
        let worst = ours.iter().zip(&reference).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        // ffmpeg's fixed point and ours round a few values near .5 differently; both are
        // within one level of the exact formula (src/convert.rs tests ours on every input).
        assert!(worst <= 1, "{pix_fmt}: ours and ffmpeg's RGB differ by {worst} levels");
        assert!(differ * 100 < ours.len(), "{pix_fmt}: {differ} of {} values differ by one", ours.len());

        // Grey models take Y, range-expanded: exactly ffmpeg's gray.
        let reference = ffmpeg_convert(pix_fmt, &yuv, "gray");
        conv.to_grey(format, W, H, &yuv, &mut ours);
        assert!(ours == reference, "{pix_fmt}: grey differs from ffmpeg's");
    }
}

/// A YUV frame larger than the model is resized before it is converted (36x fewer pixels to
/// convert for 1280x720 into 160x160). Against converting the whole frame first (the exact
/// path, checked against ffmpeg above), on real frames into each shipped bundle's input:
/// grey within 2 levels; RGB on average within 0.6 levels, 99 % of values within 2 (chroma
/// is filtered once at its own resolution instead of replicated then filtered, which moves
/// a few pixels on sharp colour edges by up to about 20), and every model score within 0.03,
/// the tolerance docs/performance.md states.
#[test]
fn yuv_frames_resized_before_conversion_stay_close_to_converting_first() {
    use vigil::bundle::{Bundle, Channels, Variant};
    use vigil::engine::{InferenceEngine, TractEngine};
    use vigil::frame::Frame;
    use vigil::preprocess::Preprocessor;
    let root = crate::common::root();
    let engines: Vec<(String, Bundle, TractEngine)> = ["road-scene", "mobilenetv2-imagenet", "elpv-solar"]
        .into_iter()
        .map(|name| {
            let bundle = Bundle::load(&root.join("models").join(name)).expect("shipped bundle");
            let engine = TractEngine::load(&bundle, Variant::Fp32).expect("shipped model loads");
            (name.to_string(), bundle, engine)
        })
        .collect();
    for size in [(640, 480), (1280, 720), (641, 479)] {
        for (pix_fmt, format, range) in [
            ("yuv420p", PixelFormat::I420, Range::Limited),
            ("nv12", PixelFormat::Nv12, Range::Limited),
            ("yuyv422", PixelFormat::Yuyv, Range::Limited),
            ("yuvj420p", PixelFormat::I420, Range::Full),
        ] {
            let colour = YuvColour { range, ..YuvColour::default() };
            let yuv = frames_sized(pix_fmt, "rawvideo", 1, size);
            let frame = Frame { format, width: size.0, height: size.1, colour, data: yuv, ..Frame::empty() };
            let (mut rgb, mut grey) = (Vec::new(), Vec::new());
            let conv = YuvConverter::new(colour);
            conv.to_rgb(format, size.0, size.1, &frame.data, &mut rgb);
            conv.to_grey(format, size.0, size.1, &frame.data, &mut grey);
            let raw = |format, data| Frame { format, width: size.0, height: size.1, data, ..Frame::empty() };
            let (rgb, grey) = (raw(PixelFormat::Rgb24, rgb), raw(PixelFormat::Grey, grey));
            for (name, bundle, engine) in &engines {
                let what = format!("{pix_fmt} {size:?} -> {name}");
                let exact = if bundle.input.channels == Channels::Grey { &grey } else { &rgb };
                let mut scores = Vec::new();
                let mut pixels = Vec::new();
                for f in [exact, &frame] {
                    let mut pre = Preprocessor::new(&bundle.input);
                    let mut input = engine.new_input().unwrap();
                    pre.run(f, input.as_mut_slice()).unwrap();
                    pixels.push(pre.resized_pixels().to_vec());
                    let mut s = vec![0.0; bundle.labels.len()];
                    engine.new_worker().unwrap().infer(&mut input, &mut s).unwrap();
                    scores.push(s);
                }
                let mut diffs: Vec<u8> = pixels[0].iter().zip(&pixels[1]).map(|(a, b)| a.abs_diff(*b)).collect();
                diffs.sort_unstable();
                let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
                let (p99, worst) = (diffs[diffs.len() * 99 / 100], diffs[diffs.len() - 1]);
                let score_diff = scores[0].iter().zip(&scores[1]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                eprintln!("{what}: pixels mean {mean:.2} p99 {p99} worst {worst}; scores within {score_diff:.4}");
                if bundle.input.channels == Channels::Grey {
                    assert!(worst <= 2, "{what}: grey pixels differ by {worst} levels");
                } else {
                    assert!(mean < 0.6 && p99 <= 2, "{what}: RGB pixels differ by {mean:.2} on average, p99 {p99}");
                }
                assert!(score_diff < 0.03, "{what}: a score moved by {score_diff}");
            }
        }
    }
}

// ------------------------------------------------------------------ the daemon on pipes

/// A run config reading a pipe source; `source` holds the `[source]` keys after `kind`.
fn pipe_config(dir: &Path, source: &str) -> PathBuf {
    let text = format!(
        "[model]\nbundle = \"{}\"\nworkers = 2\n\n[source]\nkind = \"pipe\"\n{source}\n\n[status]\ninterval_s = 0.2\n",
        default_bundle().display()
    );
    write(dir, "c.toml", &text)
}

/// A pipe source config for tests about timing (watchdog, outages), not labels: see
/// [`crate::common::light_model_section`].
fn light_pipe_config(dir: &Path, source: &str) -> PathBuf {
    let text = format!(
        "{}\n[source]\nkind = \"pipe\"\n{source}\n\n[status]\ninterval_s = 0.2\n",
        crate::common::light_model_section()
    );
    write(dir, "c.toml", &text)
}

/// Everything a finished run printed: JSON lines and the log.
struct Finished {
    lines: Vec<Value>,
    log: String,
    code: Option<i32>,
}

impl Finished {
    fn last_status(&self) -> &Value {
        self.lines.iter().rev().find(|v| v["type"] == "status").expect("a final status line")
    }
    fn espresso_on(&self) -> bool {
        self.lines.iter().any(|v| v["type"] == "event" && v["label"] == "espresso" && v["state"] == "on")
    }
}

/// Run vigil on a config whose source reads stdin, writing `chunks` (with a pause after each)
/// once the daemon says its source is open (so no frame waits in the pipe while the model loads).
fn run_on_stdin(config: &Path, chunks: &[Vec<u8>], pause: Duration) -> Finished {
    let mut child = vigil()
        .args(["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains(" source: ") {
                let _ = ready_tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let mut stdin = child.stdin.take().unwrap();
    let chunks = chunks.to_vec();
    let writer = std::thread::spawn(move || {
        ready.recv_timeout(Duration::from_secs(60)).expect("the daemon opened its source");
        for c in chunks {
            stdin.write_all(&c).unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(pause);
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    Finished { lines, log: log.join().unwrap(), code: out.status.code() }
}

#[test]
fn pipe_streams_of_every_format_are_classified_and_every_frame_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let n = 12;
    for (format, pix_fmt, muxer, size) in [
        ("i420", "yuv420p", "rawvideo", true),
        ("nv12", "nv12", "rawvideo", true),
        ("yuyv", "yuyv422", "rawvideo", true),
        ("rgb24", "rgb24", "rawvideo", true),
        ("mjpeg", "yuvj420p", "mjpeg", false),
        ("y4m", "yuv420p", "yuv4mpegpipe", false),
    ] {
        let size = if size { format!("width = {W}\nheight = {H}\n") } else { String::new() };
        let cfg = pipe_config(dir.path(), &format!("path = \"-\"\nformat = \"{format}\"\n{size}"));
        // All frames at once, as fast as the pipe takes them: latest frame wins, so the
        // frames inference cannot keep up with are dropped as stale, and counted.
        let run = run_on_stdin(&cfg, &[frames(pix_fmt, muxer, n)], Duration::ZERO);
        assert_eq!(run.code, Some(0), "{format}: the stream's end ends the run cleanly\n{}", run.log);
        assert!(run.espresso_on(), "{format}: the espresso was seen\n{}", run.log);
        let status = run.last_status();
        let (decided, dropped) = (status["frames"].as_u64().unwrap(), status["dropped"].as_u64().unwrap());
        assert!(decided >= 1, "{format}: {status}");
        assert_eq!(decided + dropped, n as u64, "{format}: every frame decided or counted as dropped: {status}");
        assert_eq!((status["source"].as_str(), status["outages"].as_u64()), (Some("ok"), Some(0)), "{format}");
    }
}

/// Split an MJPEG stream made by ffmpeg into its JPEGs (ffmpeg writes no thumbnails,
/// so every FF D8 FF starts a frame).
fn split_jpegs(stream: &[u8]) -> Vec<Vec<u8>> {
    let starts: Vec<usize> =
        stream.windows(3).enumerate().filter(|(_, w)| *w == [0xFF, 0xD8, 0xFF]).map(|(i, _)| i).collect();
    starts.iter().enumerate().map(|(k, &s)| stream[s..*starts.get(k + 1).unwrap_or(&stream.len())].to_vec()).collect()
}

#[test]
fn truncated_and_corrupt_frames_mid_stream_are_dropped_counted_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pause = Duration::from_millis(250); // slower than inference: no frame is stale

    // MJPEG: good, good, truncated, good, corrupt header (height 0), good.
    let jpegs = split_jpegs(&frames("yuvj420p", "mjpeg", 6));
    assert_eq!(jpegs.len(), 6);
    let truncated = jpegs[2][..jpegs[2].len() / 2].to_vec();
    let mut corrupt = jpegs[4].clone();
    let sof = corrupt.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    corrupt[sof + 5] = 0; // frame height, high byte
    corrupt[sof + 6] = 0; // frame height, low byte
    let chunks = vec![jpegs[0].clone(), jpegs[1].clone(), truncated, jpegs[3].clone(), corrupt, jpegs[5].clone()];
    let cfg = pipe_config(dir.path(), "path = \"-\"\nformat = \"mjpeg\"\n");
    let run = run_on_stdin(&cfg, &chunks, pause);
    assert_eq!(run.code, Some(0), "{}", run.log);
    let status = run.last_status();
    assert_eq!((status["frames"].as_u64(), status["dropped"].as_u64()), (Some(4), Some(2)), "{status}\n{}", run.log);
    assert!(run.log.contains("truncated JPEG"), "{}", run.log);
    assert!(run.log.contains("cannot decode image"), "{}", run.log);
    assert!(run.espresso_on());

    // Y4M: frame 2 of 4 cut short (the next FRAME marker shows up inside it).
    let y4m = frames("yuv420p", "yuv4mpegpipe", 4);
    let marks: Vec<usize> = y4m.windows(6).enumerate().filter(|(_, w)| *w == b"FRAME\n").map(|(i, _)| i).collect();
    assert_eq!(marks.len(), 4);
    let header = y4m[..marks[0]].to_vec();
    let frame = |k: usize| y4m[marks[k]..*marks.get(k + 1).unwrap_or(&y4m.len())].to_vec();
    let short = frame(1)[..frame(1).len() / 3].to_vec();
    let chunks = vec![header, frame(0), short, frame(2), frame(3)];
    let cfg = pipe_config(dir.path(), "path = \"-\"\nformat = \"y4m\"\n");
    let run = run_on_stdin(&cfg, &chunks, pause);
    let status = run.last_status();
    assert_eq!((status["frames"].as_u64(), status["dropped"].as_u64()), (Some(3), Some(1)), "{status}\n{}", run.log);
    assert!(run.log.contains("truncated Y4M frame"), "{}", run.log);

    // Raw I420: two frames, then half a frame and the end of the stream.
    let raw = frames("yuv420p", "rawvideo", 3);
    let cut = raw.len() - raw.len() / 6;
    let cfg = pipe_config(dir.path(), &format!("path = \"-\"\nformat = \"i420\"\nwidth = {W}\nheight = {H}\n"));
    let third = raw.len() / 3;
    let run = run_on_stdin(
        &cfg,
        &[raw[..third].to_vec(), raw[third..2 * third].to_vec(), raw[2 * third..cut].to_vec()],
        pause,
    );
    let status = run.last_status();
    assert_eq!((status["frames"].as_u64(), status["dropped"].as_u64()), (Some(2), Some(1)), "{status}\n{}", run.log);
    assert!(run.log.contains("incomplete frame at the end of the stream"), "{}", run.log);
}

// ------------------------------------------------------------------ FIFO: stalls and outages

/// A daemon reading a FIFO; its stdout lines arrive on a channel.
struct FifoRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Value>,
    fifo: PathBuf,
    _dir: tempfile::TempDir,
}

impl FifoRun {
    fn start() -> FifoRun {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("camera.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let cfg = light_pipe_config(
            dir.path(),
            &format!("path = \"{}\"\nformat = \"mjpeg\"\non_end = \"reopen\"\nwatchdog_s = 1.0\n", fifo.display()),
        );
        let log = std::fs::File::create(dir.path().join("vigil.log")).unwrap();
        let mut child = vigil()
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap());
            }
        });
        FifoRun { child, lines, fifo, _dir: dir }
    }

    /// Open the FIFO as a writer (as rpicam-vid or gst-launch would).
    fn writer(&self) -> std::fs::File {
        std::fs::OpenOptions::new().write(true).open(&self.fifo).unwrap()
    }

    /// Wait for a status line matching `pred`.
    fn status(&self, within: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        let mut last = Value::Null;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(v) = self.lines.recv_timeout(left) else {
                let log = std::fs::read_to_string(self._dir.path().join("vigil.log")).unwrap_or_default();
                panic!("no status line within {within:?}: {what}; last line: {last}\nvigil's log:\n{log}");
            };
            if v["type"] == "status" && pred(&v) {
                return v;
            }
            last = v;
        }
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
    }
}

impl Drop for FifoRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_frames(w: &mut std::fs::File, jpegs: &[Vec<u8>], spacing: Duration) {
    for j in jpegs {
        w.write_all(j).unwrap();
        std::thread::sleep(spacing);
    }
}

#[test]
fn a_stalled_fifo_is_reported_lost_and_detections_resume_when_frames_return() {
    let jpegs = split_jpegs(&frames("yuvj420p", "mjpeg", 4));
    let run = FifoRun::start();
    let slow = Duration::from_secs(60); // model loading under emulation
    let spacing = Duration::from_millis(200);
    let mut w = run.writer();
    write_frames(&mut w, &jpegs, spacing);
    // Frames decided. (On a slow machine, under qemu-user, the watchdog may already have fired by
    // the first status line with frames: the first inference can outlast the burst plus 1 s.)
    run.status(slow, "frames decided", |s| s["frames"].as_u64() >= Some(1));
    // The writer stalls (keeps the FIFO open, sends nothing) for longer than the 1 s watchdog.
    let lost = run.status(slow, "source lost", |s| s["source"] == "lost");
    assert_eq!(lost["outages"], 1, "{lost}");
    let decided = lost["frames"].as_u64();
    write_frames(&mut w, &jpegs, spacing);
    let back = run.status(slow, "source back", |s| s["source"] == "ok" && s["frames"].as_u64() > decided);
    assert_eq!(back["outages"], 1, "one outage, counted once: {back}");
    run.stop();
}

#[test]
fn a_fifo_whose_writer_goes_away_and_comes_back_is_reopened() {
    let jpegs = split_jpegs(&frames("yuvj420p", "mjpeg", 4));
    let run = FifoRun::start();
    let slow = Duration::from_secs(60);
    let spacing = Duration::from_millis(200);
    let mut w = run.writer();
    write_frames(&mut w, &jpegs, spacing);
    run.status(slow, "frames from the first writer", |s| s["frames"].as_u64() >= Some(1));
    drop(w); // the camera process exits
    let lost = run.status(slow, "source lost", |s| s["source"] == "lost");
    assert_eq!(lost["outages"], 1, "{lost}");
    std::thread::sleep(Duration::from_millis(1500));
    // Frames still in the pipeline when the writer left are decided by now (on a slow machine
    // they may be decided after the outage began).
    let decided = run.status(slow, "the outage", |s| s["source"] == "lost")["frames"].as_u64();
    let mut w = run.writer(); // a restarted camera process
    write_frames(&mut w, &jpegs, spacing);
    let back =
        run.status(slow, "frames from the second writer", |s| s["source"] == "ok" && s["frames"].as_u64() > decided);
    assert_eq!(back["outages"], 1, "{back}");
    run.stop();
    drop(w);
}

// ------------------------------------------------------------------ systemd notification

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 once the model is loaded, WATCHDOG=1
/// while frames flow and none while the camera is quiet, STOPPING=1 at the end. Paced by what
/// the daemon reports, not by fixed times, so a slow machine (or emulation) passes too. A test
/// about timing, so it runs the light model.
#[test]
fn systemd_watchdog_is_pinged_only_while_frames_flow() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    let cfg = light_pipe_config(dir.path(), "path = \"-\"\nformat = \"mjpeg\"\nwatchdog_s = 30\n");
    let mut child = vigil()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, messages) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        socket.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = text.contains("STOPPING=1");
            if tx.send(text).is_err() || done {
                break;
            }
        }
    });
    let next = |within: Duration| messages.recv_timeout(within).ok();
    let first = next(Duration::from_secs(120)).expect("a notification");
    assert!(first.starts_with("READY=1"), "READY first (model loaded, source open): {first}");

    let jpeg = std::fs::read(photo()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A burst: frames every 100 ms until three pings have come (a ping every 0.2 s while
    // frames are decided).
    let burst = |stdin: &mut std::process::ChildStdin| {
        let (mut pings, deadline) = (0, Instant::now() + Duration::from_secs(120));
        while pings < 3 {
            assert!(Instant::now() < deadline, "no watchdog pings while frames flow");
            stdin.write_all(&jpeg).unwrap();
            while let Some(m) = next(Duration::from_millis(100)) {
                assert_eq!(m, "WATCHDOG=1", "only pings while running");
                pings += 1;
            }
        }
    };
    burst(&mut stdin);
    // Quiet camera: once the frames in flight are decided, the pings stop. 1.5 s without one
    // is 7 missed ping periods.
    let deadline = Instant::now() + Duration::from_secs(60);
    while next(Duration::from_millis(1500)).is_some() {
        assert!(Instant::now() < deadline, "pings go on while no frame comes");
    }
    burst(&mut stdin); // frames again: pings again
    drop(stdin); // end of stream: the run ends
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut rest = Vec::new();
    while let Some(m) = next(Duration::from_secs(5)) {
        rest.push(m);
    }
    assert!(rest.last().is_some_and(|m| m.contains("STOPPING=1")), "STOPPING last: {rest:?}");
}
