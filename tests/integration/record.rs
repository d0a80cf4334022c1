//! `vigil record`: frames from a config's source saved as JPEGs named by capture time, one
//! every `--every` seconds and/or at each switch-on, up to a limit that stops the recording
//! and deletes nothing. Run on the real binary with the files source (PNG stills, looped) and
//! the pipe source (an MJPEG stream on stdin, paced by the test).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    grey_difference as difference, light_model_sample_files as samples, light_model_samples, light_model_section,
    stderr, vigil, write,
};

/// A config on the light model with `source`; labels switch on at 0.5 from one frame, events as JSON.
fn config(dir: &Path, source: &str) -> PathBuf {
    let text = format!(
        "{}\n[source]\n{source}\n\n[thresholds]\ndefault = {{ on = 0.5, off = 0.35, min_frames = 1, hold_ms = 0 }}\n\n\
         [stdout]\nformat = \"json\"\n\n[status]\ninterval_s = 0\n",
        light_model_section()
    );
    write(dir, "c.toml", &text)
}

fn files_source(fps: f64, looped: bool) -> String {
    format!("kind = \"files\"\npath = \"{}\"\nfps = {fps}\nloop = {looped}", light_model_samples().display())
}

fn record(config: &Path, out: &Path, extra: &[&str]) -> Output {
    vigil().args(["record", "--config"]).arg(config).arg("--out").arg(out).args(extra).output().unwrap()
}

/// A recorded file's name: capture time (unix ms), label, seq.
#[derive(Debug)]
struct Recorded {
    name: String,
    unix_ms: i64,
    label: Option<String>,
    seq: u64,
}

/// The folder's files, in name order, parsed; fails on any other name (a temporary file left behind).
fn recorded(dir: &Path) -> Vec<Recorded> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names.into_iter().map(|n| parse(&n)).collect()
}

/// Fails the test: `name` is not a recorded frame's name.
fn bad<T>(name: &str) -> T {
    panic!("not a recorded frame's name: {name}")
}

/// `YYYYMMDDTHHMMSS.mmmZ[_label]_seq.jpg`.
fn parse(name: &str) -> Recorded {
    let stem = name.strip_suffix(".jpg").unwrap_or_else(|| bad(name));
    let (time, rest) = stem.split_once('_').unwrap_or_else(|| bad(name));
    if time.len() != 20 || &time[8..9] != "T" || &time[15..16] != "." || &time[19..] != "Z" {
        bad::<()>(name);
    }
    let num = |r: std::ops::Range<usize>| time.get(r).and_then(|s| s.parse::<i64>().ok()).unwrap_or_else(|| bad(name));
    let (y, m, d) = (num(0..4), num(4..6), num(6..8));
    // Days since 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let unix_ms = ((days * 24 + num(9..11)) * 60 + num(11..13)) * 60_000 + num(13..15) * 1000 + num(16..19);
    let (label, seq) = match rest.rsplit_once('_') {
        Some((label, seq)) => (Some(label.to_string()), seq),
        None => (None, rest),
    };
    Recorded { name: name.to_string(), unix_ms, label, seq: seq.parse().unwrap_or_else(|_| bad(name)) }
}

/// Each recorded file is the sample replayed at its seq (the files source loops over them).
fn assert_each_is_its_frame(dir: &Path, files: &[Recorded]) {
    let samples = samples();
    let images: Vec<image::GrayImage> = samples.iter().map(|p| image::open(p).unwrap().to_luma8()).collect();
    for f in files {
        let saved = image::open(dir.join(&f.name)).unwrap_or_else(|e| panic!("{}: {e}", f.name)).to_luma8();
        let own = (f.seq % images.len() as u64) as usize;
        let d = difference(&saved, &images[own]);
        assert!(d < 4.0, "{}: {d} levels from its frame", f.name);
        for (i, other) in images.iter().enumerate().filter(|(i, _)| *i != own) {
            assert!(difference(&saved, other) > d * 2.0, "{} is closer to sample {i} than to its own frame", f.name);
        }
    }
}

#[test]
fn every_saves_frames_spaced_by_capture_time_stops_at_the_limit_and_resumes_without_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let cfg = config(dir.path(), &files_source(20.0, true));
    let run = record(&cfg, &out, &["--every", "0.2", "--max-files", "5"]);
    let log = stderr(&run);
    assert_eq!(run.status.code(), Some(0), "a limit ends the recording cleanly: {log}");
    assert!(log.contains("limit of 5 files") && log.contains("stopping"), "the limit is logged: {log}");
    let first = recorded(&out);
    assert_eq!(first.len(), 5, "exactly the limit: {first:?}");
    assert!(first.iter().all(|f| f.label.is_none()), "saved by time, not for a label: {first:?}");
    for pair in first.windows(2) {
        assert!(pair[1].seq > pair[0].seq, "names sort in capture order: {first:?}");
        let gap = pair[1].unix_ms - pair[0].unix_ms;
        // At 20 frames/s, the first frame at or after 200 ms: 200 ms apart, later if frames were late.
        assert!(gap >= 200, "frames at least --every apart in capture time: {gap} ms in {first:?}");
    }
    assert_each_is_its_frame(&out, &first);

    // Again into the same folder with room for two more: they are added, nothing is deleted.
    let run = record(&cfg, &out, &["--every", "0.2", "--max-files", "7"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(stderr(&run).contains("already holds 5 recorded frames"), "{}", stderr(&run));
    let second = recorded(&out);
    assert_eq!(second.len(), 7, "{second:?}");
    for f in &first {
        assert!(second.iter().any(|s| s.name == f.name), "{} was kept", f.name);
    }
    // A folder at the limit is refused at start, naming it.
    let run = record(&cfg, &out, &["--every", "0.2", "--max-files", "7"]);
    let log = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{log}");
    assert!(log.contains("already holds 7") && log.contains("--max-files"), "{log}");
}

#[test]
fn on_switch_and_every_frame_save_each_decided_frame_once_naming_the_switch_ons() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    // 10 frames/s: the snapshot writer keeps up even under emulation, so no frame is missed.
    let cfg = config(dir.path(), &files_source(10.0, false));
    let run = record(&cfg, &out, &["--every", "0", "--on-switch"]);
    let log = stderr(&run);
    assert_eq!(run.status.code(), Some(0), "the source's end ends the recording: {log}");
    let events: Vec<Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "event" && v["state"] == "on")
        .collect();
    assert!(!events.is_empty(), "the samples switch labels on: {log}");
    let files = recorded(&out);
    let seqs: Vec<u64> = files.iter().map(|f| f.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (0..samples().len() as u64).collect::<Vec<_>>(), "every frame once: {files:?}");
    for e in &events {
        let name = e["snapshot"].as_str().unwrap_or_else(|| panic!("a switch-on names its file: {e}"));
        let f = files.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("{name} was saved: {files:?}"));
        assert_eq!(Some(f.seq), e["seq"].as_u64(), "{name}");
        let same_frame: Vec<&str> =
            events.iter().filter(|o| o["seq"] == e["seq"]).filter_map(|o| o["label"].as_str()).collect();
        assert!(same_frame.contains(&f.label.as_deref().unwrap_or("")), "{name}: a label of its frame");
    }
    // A frame that switches several labels on is one file, which each of its events names.
    let labelled = files.iter().filter(|f| f.label.is_some()).count();
    let mut switch_frames: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    switch_frames.dedup();
    assert_eq!(labelled, switch_frames.len(), "{files:?}");
    assert_each_is_its_frame(&out, &files);
}

/// `n` distinct 64x48 JPEG frames: a bright block whose place encodes the frame's index.
fn jpeg_frames(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let img = image::RgbImage::from_fn(64, 48, |x, y| {
                let on = (x / 8) as usize == i % 8 && (y / 16) as usize == (i / 8) % 3;
                if on { image::Rgb([250, 240, 230]) } else { image::Rgb([20, 30, 40]) }
            });
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode(img.as_raw(), 64, 48, image::ExtendedColorType::Rgb8)
                .unwrap();
            jpeg
        })
        .collect()
}

#[test]
fn a_pipe_stream_is_recorded_as_it_came_one_frame_every_period() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let cfg = config(dir.path(), "kind = \"pipe\"\npath = \"-\"\nformat = \"mjpeg\"");
    let frames = jpeg_frames(20);
    let mut child = vigil()
        .args(["record", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .args(["--every", "0.3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Feed the stream once the model is loaded (seconds under qemu-user): a live source keeps
    // only the newest frame while nothing takes them, so frames fed earlier would be one.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr_pipe)).map_while(Result::ok) {
            if line.contains("recording into") {
                let _ = ready_tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let _ = ready.recv_timeout(Duration::from_secs(60));
    let mut stdin = child.stdin.take().unwrap();
    // 20 frames, 60 ms apart: 1.2 s of stream.
    for f in &frames {
        stdin.write_all(f).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    drop(stdin);
    let run = child.wait_with_output().unwrap();
    let log = reader.join().unwrap();
    assert_eq!(run.status.code(), Some(0), "the stream's end ends the recording: {log}");
    let files = recorded(&out);
    assert!((2..=5).contains(&files.len()), "about one frame per 0.3 s of a 1.2 s stream: {files:?}\n{log}");
    for pair in files.windows(2) {
        assert!(pair[1].unix_ms - pair[0].unix_ms >= 300, "at least --every apart: {files:?}");
    }
    // Each file is one of the frames fed, byte for byte (a JPEG frame is saved as it came), and
    // later files hold later frames. (A live source numbers the frames it hands on: one dropped
    // while the pipeline starts shifts `seq` from the stream's index.)
    let mut last = None;
    for f in &files {
        let saved = std::fs::read(out.join(&f.name)).unwrap();
        let index = frames.iter().position(|x| *x == saved);
        assert!(index.is_some(), "{}: not byte for byte one of the frames fed ({} bytes)", f.name, saved.len());
        assert!(index > last, "{}: frame {index:?} after frame {last:?}", f.name);
        last = index;
    }
}

#[test]
fn bad_options_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &files_source(0.0, false));
    let a_file = write(dir.path(), "not-a-folder", "x");
    for (args, needle) in [
        (vec![], "nothing to record"),
        (vec!["--every=-1"], "--every -1"),
        (vec!["--every", "NaN"], "--every NaN"),
        (vec!["--every", "1", "--max-files", "0"], "--max-files"),
        (vec!["--every", "1", "--max-mib", "18446744073709551615"], "--max-mib"),
    ] {
        let run = record(&cfg, &dir.path().join("frames"), &args);
        let log = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {log}");
        assert!(log.contains(needle), "{args:?}: `{needle}` in {log}");
    }
    let run = record(&cfg, &a_file, &["--every", "1"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("not a directory"), "{}", stderr(&run));
    // A bad config is refused as `vigil run` refuses it, naming the file and key.
    let bad =
        write(dir.path(), "bad.toml", "[model]\nbundle = \"nowhere\"\n[source]\nkind = \"files\"\npath = \"x\"\n");
    let run = record(&bad, &dir.path().join("frames"), &["--every", "1"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("bad.toml") && stderr(&run).contains("model.bundle"), "{}", stderr(&run));
}
