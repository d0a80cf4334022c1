//! The soak (issue 18, docs/reliability.md): frames through the daemon's own assembly
//! (`vigil::setup::prepare`, as `vigil run` builds it) for a long time, watching what months
//! unattended would show: memory that grows, file descriptors or threads that leak, and
//! decisions that drift.
//!
//! The stream is MJPEG on a FIFO, written by a thread of this test (at a camera's pace in the
//! long run; in lock step with the decisions in the default test run, which shares the machine
//! with other tests): a cycle of 40 frames (real solar-cell images of the factory bundle,
//! encoded as JPEG, and four corrupt frames of different kinds) repeated. Events go out on a real pseudo-terminal, as `[serial]`
//! in the config writes them, and are read back here; the GPIO lines (one per label, heartbeat,
//! fault) are recording pins, since this machine has no GPIO chip (the real character device is
//! exercised on the emulated board).
//!
//! "Decisions identical to a short run": a short run of two cycles gives the events of the first
//! cycle and of a cycle in steady state; every cycle of the long run must give exactly those
//! (sequence number within the cycle, label, state, score as written on the line).
//!
//! The long run is `#[ignore]`d (100,000 frames take about 14 minutes here); its command is in
//! docs/reliability.md. A run of a few cycles is part of the default test run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, OutputPin};
use vigil::config::Config;
use vigil::pipeline::RunSummary;
use vigil::sink::gpio::OutputLine;
use vigil::sink::{GpioLines, LabelOutput, OutputMode};
use vigil::stop::StopFlag;

use crate::common::{openpty, pty_turn, root};

/// Frames in one cycle of the stream (good and corrupt together).
const CYCLE: usize = 40;
/// Share of the long run treated as warm-up before memory is compared.
const WARM_UP_SHARE: f64 = 0.1;
/// Memory is sampled this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

// ------------------------------------------------------------------ the stream

/// The solar-cell samples, by the scores the factory model gives them (EXPECTED.md):
/// defective / uncertain / monocrystalline.
const SAMPLES: [&str; 6] = [
    "cell0066.128.png", // 0 none:    0.59 0.33 0.00
    "cell0004.128.png", // 1 mono:    0.97 0.01 1.00
    "cell0068.128.png", // 2 poly defective: 0.75 0.18 0.00
    "cell0002.128.png", // 3 mono defective: 0.97 0.01 1.00
    "cell0516.128.png", // 4 mono, uncertain: 0.82 0.11 1.00
    "cell0143.128.png", // 5 poly, uncertain: 0.50 0.34 0.01
];

/// One item of the cycle.
#[derive(Clone, Copy)]
enum Item {
    /// Sample `n`, as a good JPEG.
    Good(usize),
    /// The first half of sample `n`'s JPEG: the splitter sees the next JPEG start inside it.
    Truncated(usize),
    /// 300 bytes of noise between two JPEGs.
    Garbage,
    /// Sample `n` with its frame height set to 0 in the header: split fine, refused by the decoder.
    ZeroHeight(usize),
    /// Sample `n` with its entropy-coded data replaced by noise (headers and end marker kept).
    Scrambled(usize),
}

/// The cycle: runs of each sample long enough for the N-of-M rules (2 of 3) to switch labels
/// on and off, with the four kinds of corrupt frame among them.
fn cycle() -> Vec<Item> {
    use Item::*;
    let runs: [(usize, usize); 10] = [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (2, 3), (0, 3), (1, 2), (5, 4)];
    let mut items: Vec<Item> = Vec::new();
    let corrupt = [Truncated(2), Garbage, ZeroHeight(3), Scrambled(4)];
    for (k, &(sample, n)) in runs.iter().enumerate() {
        items.extend(std::iter::repeat_n(Good(sample), n));
        if let Some(&bad) = corrupt.get(k / 2).filter(|_| k % 2 == 1) {
            items.push(bad);
        }
    }
    assert_eq!(items.len(), CYCLE);
    items
}

/// A deterministic noise generator (xorshift), so every cycle's corrupt bytes are the same.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // No 0xFF: noise must not contain markers (a JPEG start would make it a frame).
            (x as u8) & 0xFE
        })
        .collect()
}

fn jpeg_of(png: &Path) -> Vec<u8> {
    let img = image::open(png).unwrap_or_else(|e| panic!("{}: {e}", png.display())).to_luma8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92).encode_image(&img).expect("encode JPEG");
    out
}

/// One cycle of the stream, as bytes.
fn cycle_bytes() -> Vec<u8> {
    let dir = root().join("models/elpv-solar/samples");
    let jpegs: Vec<Vec<u8>> = SAMPLES.iter().map(|s| jpeg_of(&dir.join(s))).collect();
    let mut out = Vec::new();
    for (k, item) in cycle().into_iter().enumerate() {
        match item {
            Item::Good(n) => out.extend_from_slice(&jpegs[n]),
            Item::Truncated(n) => out.extend_from_slice(&jpegs[n][..jpegs[n].len() / 2]),
            Item::Garbage => out.extend(noise(300, k as u64)),
            Item::ZeroHeight(n) => {
                let mut j = jpegs[n].clone();
                let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
                (j[sof + 5], j[sof + 6]) = (0, 0);
                out.extend(j);
            }
            Item::Scrambled(n) => {
                let j = &jpegs[n];
                let sos = j.windows(2).position(|w| w == [0xFF, 0xDA]).expect("start of scan");
                let body = sos + 2 + usize::from(u16::from_be_bytes([j[sos + 2], j[sos + 3]]));
                out.extend_from_slice(&j[..body]);
                out.extend(noise(j.len() - 2 - body, 99 + k as u64));
                out.extend_from_slice(&[0xFF, 0xD9]);
            }
        }
    }
    out
}

// ------------------------------------------------------------------ GPIO and serial

/// A pin that counts its level changes (no log: the soak must not grow memory itself).
#[derive(Default)]
struct Counts {
    high: AtomicBool,
    rises: AtomicU64,
}

struct CountingPin(Arc<Counts>);

impl ErrorType for CountingPin {
    type Error = std::convert::Infallible;
}

impl OutputPin for CountingPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.high.store(false, Ordering::Relaxed);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        if !self.0.high.swap(true, Ordering::Relaxed) {
            self.0.rises.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn counting_line(name: &str) -> (OutputLine, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    (OutputLine::new(name, Box::new(CountingPin(Arc::clone(&counts))), false, None), counts)
}

/// One event as the serial line carries it, without its run-specific fields (`t_ms`), and with
/// its sequence number made relative to its cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CycleEvent {
    seq_in_cycle: u64,
    label: String,
    state: String,
    score: String,
}

/// What the serial reader checks the events against: per cycle, the events expected (the first
/// cycle, then every later one), or nothing (the short run, which records).
enum Expect {
    Record(Vec<(u64, CycleEvent)>),
    Match { seqs_per_cycle: u64, first: Vec<CycleEvent>, steady: Vec<CycleEvent>, checked: Checked },
}

/// The long run's comparison, in counters (bounded memory).
#[derive(Default, Debug)]
struct Checked {
    events: u64,
    cycles_complete: u64,
    mismatches: u64,
    first_mismatch: Option<String>,
    cycle: u64,
    cursor: usize,
}

impl Checked {
    fn mismatch(&mut self, what: String) {
        self.mismatches += 1;
        self.first_mismatch.get_or_insert(what);
    }
}

fn expected<'a>(first: &'a [CycleEvent], steady: &'a [CycleEvent], cycle: u64) -> &'a [CycleEvent] {
    if cycle == 0 { first } else { steady }
}

impl Expect {
    fn event(&mut self, seq: u64, e: CycleEvent) {
        match self {
            Expect::Record(all) => all.push((seq, e)),
            Expect::Match { seqs_per_cycle, first, steady, checked } => {
                checked.events += 1;
                let cycle = seq / *seqs_per_cycle;
                let e = CycleEvent { seq_in_cycle: seq % *seqs_per_cycle, ..e };
                while checked.cycle < cycle {
                    checked.end_cycle(expected(first, steady, checked.cycle).len());
                }
                let want = expected(first, steady, cycle);
                match want.get(checked.cursor) {
                    Some(w) if *w == e => {}
                    w => checked.mismatch(format!("cycle {cycle}: got {e:?}, expected {w:?}")),
                }
                checked.cursor += 1;
            }
        }
    }
}

impl Checked {
    fn end_cycle(&mut self, expected_events: usize) {
        if self.cursor == expected_events {
            self.cycles_complete += 1;
        } else {
            let (c, n) = (self.cycle, self.cursor);
            self.mismatch(format!("cycle {c}: {n} events, expected {expected_events}"));
        }
        self.cycle += 1;
        self.cursor = 0;
    }
}

/// Read `$VGEVT` lines from the pty master into `expect` until the master closes or `stop`.
fn read_events(master: std::fs::File, expect: Arc<Mutex<Expect>>, lines: Arc<AtomicU64>) {
    let mut reader = BufReader::new(master);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        lines.fetch_add(1, Ordering::Relaxed);
        let Ok(fields) = vigil::protocol::parse_text_line(&line) else { continue };
        if fields[0] != "VGEVT" {
            continue;
        }
        // $VGEVT,seq,t_ms,label,ON|OFF,score
        let seq: u64 = fields[1].parse().expect("seq");
        let e = CycleEvent {
            seq_in_cycle: seq,
            label: fields[3].to_string(),
            state: fields[4].to_string(),
            score: fields[5].to_string(),
        };
        expect.lock().unwrap().event(seq, e);
    }
}

// ------------------------------------------------------------------ process figures

/// One look at this process: resident memory, open file descriptors, threads.
#[derive(Debug, Clone, Copy)]
struct Sample {
    frames_written: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(frames_written: u64) -> Sample {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in status"));
        line[name.len()..].trim().trim_end_matches(" kB").trim().parse().expect("number")
    };
    let fds = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count() as u64;
    Sample { frames_written, rss_kib: field("VmRSS:"), fds, threads: field("Threads:") }
}

// ------------------------------------------------------------------ one run

/// What one run gave.
struct Soak {
    summary: RunSummary,
    frames_written: u64,
    took: Duration,
    expect: Expect,
    samples: Vec<Sample>,
    label_rises: Vec<u64>,
    heartbeat_rises: u64,
    fault_rises: u64,
    serial_lines: u64,
}

fn config(dir: &Path, fifo: &Path, pty: &str) -> PathBuf {
    // fp32 on x86 (tract's integer kernels are generic there), INT8 on ARM.
    let variant = if cfg!(target_arch = "aarch64") { "int8" } else { "fp32" };
    let text = format!(
        "[model]\nbundle = \"{bundle}\"\nvariant = \"{variant}\"\nworkers = 2\n\n\
         [source]\nkind = \"pipe\"\npath = \"{fifo}\"\nformat = \"mjpeg\"\nwatchdog_s = 10\n\n\
         # Test thresholds, chosen so that every label switches on and off within a cycle.\n\
         [thresholds]\ndefault = {{ min_frames = 2, window = 3 }}\n\
         [thresholds.labels.defective]\non = 0.7\noff = 0.6\n\
         [thresholds.labels.uncertain]\non = 0.3\noff = 0.2\n\n\
         [serial]\ndevice = \"{pty}\"\nbaud = 115200\nformat = \"text\"\n\n\
         [stdout]\nenabled = false\n\n[status]\ninterval_s = 1\n",
        bundle = root().join("models/elpv-solar").display(),
        fifo = fifo.display(),
    );
    let path = dir.join("soak.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// How the test writes frames into the FIFO.
#[derive(Clone, Copy)]
enum Pace {
    /// One frame every period, as a camera does. A live source keeps only the newest frame, so
    /// a machine too busy to keep up loses frames (they go stale) and the run fails its check.
    Camera(Duration),
    /// Each frame once the one before it is decided: the same frames and decisions whatever
    /// else the machine is doing (the default test run shares it with the other tests).
    LockStep,
}

/// Write `cycles` cycles of the stream into a FIFO at `pace`, and run the daemon's pipeline
/// on it to the end of the stream.
fn soak(cycles: u64, pace: Pace, expect: Expect) -> Soak {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("camera.mjpeg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let _turn = pty_turn();
    let crate::common::Pty { master, _slave, slave_path: pty } = openpty();
    let config = Config::load(&config(dir.path(), &fifo, &pty)).expect("soak config");

    let stream = cycle_bytes();
    // Where each frame of the cycle ends in the stream, so that the writer paces frames.
    let frame_ends = frame_ends(&stream);
    let mut prepared = vigil::setup::prepare(config, Instant::now()).expect("soak config prepares");
    let labels = prepared.bundle.labels.len();
    let mut label_counts = Vec::new();
    let mut outputs = Vec::new();
    for label in 0..labels {
        let (line, counts) = counting_line(&prepared.bundle.labels[label]);
        outputs.push(LabelOutput { label, mode: OutputMode::Level, line });
        label_counts.push(counts);
    }
    let (heartbeat, beats) = counting_line("heartbeat");
    let (fault, faults) = counting_line("fault");
    prepared.gpio = Some(GpioLines { outputs, heartbeat: Some(heartbeat), fault: Some(fault) });

    // The writer starts once the source has opened the FIFO (non-blocking), so its open returns.
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (fifo, written, health) = (fifo.clone(), Arc::clone(&written), Arc::clone(&prepared.health));
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new().write(true).open(&fifo).expect("open FIFO for writing");
            let items = cycle();
            let t0 = Instant::now();
            let (mut n, mut decided): (u32, u64) = (0, 0);
            for _ in 0..cycles {
                let mut from = 0;
                for (item, &end) in items.iter().zip(&frame_ends) {
                    out.write_all(&stream[from..end]).expect("write frame");
                    from = end;
                    n += 1;
                    written.fetch_add(1, Ordering::Relaxed);
                    match pace {
                        Pace::Camera(period) => {
                            if let Some(wait) = (t0 + period * n).checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        Pace::LockStep => match item {
                            Item::Good(_) | Item::Scrambled(_) => {
                                decided += 1;
                                let deadline = Instant::now() + Duration::from_secs(30);
                                while health.frames.load(Ordering::Relaxed) < decided && Instant::now() < deadline {
                                    std::thread::sleep(Duration::from_micros(200));
                                }
                            }
                            // Not decided, so not seen in `frames`: give the idle pipeline time
                            // to take it from the capture slot before the next frame replaces it.
                            Item::ZeroHeight(_) => std::thread::sleep(Duration::from_millis(100)),
                            // Reported by the splitter when the next frame arrives.
                            Item::Truncated(_) | Item::Garbage => {}
                        },
                    }
                }
            }
        })
    };

    // The reader and sampler hold their state in place, so the test adds nothing per frame.
    let lines = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new(expect));
    let reader = {
        let (shared, lines) = (Arc::clone(&shared), Arc::clone(&lines));
        std::thread::spawn(move || read_events(master, shared, lines))
    };
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, written) = (Arc::clone(&done), Arc::clone(&written));
        std::thread::spawn(move || {
            let mut samples = Vec::with_capacity(1 << 14);
            while !done.load(Ordering::Relaxed) && samples.len() < samples.capacity() {
                samples.push(sample(written.load(Ordering::Relaxed)));
                std::thread::sleep(SAMPLE_EVERY);
            }
            samples
        })
    };

    let t0 = Instant::now();
    let summary = prepared.run(&StopFlag::new(), Instant::now(), None).expect("soak run");
    let took = t0.elapsed();
    writer.join().expect("writer");
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");

    // Every event the run made is on the line: wait until the reader has had them all.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = match &*shared.lock().unwrap() {
            Expect::Record(all) => all.len() as u64,
            Expect::Match { checked, .. } => checked.events,
        };
        if seen >= summary.counters.events || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(_slave);
    // The reader ends on its own: with the sink's and this end of the slave closed, the
    // master's read fails (EIO).
    drop(reader);
    let expect = std::mem::replace(&mut *shared.lock().unwrap(), Expect::Record(Vec::new()));
    Soak {
        summary,
        frames_written: written.load(Ordering::Relaxed),
        took,
        expect,
        samples,
        label_rises: label_counts.iter().map(|c| c.rises.load(Ordering::Relaxed)).collect(),
        heartbeat_rises: beats.rises.load(Ordering::Relaxed),
        fault_rises: faults.rises.load(Ordering::Relaxed),
        serial_lines: lines.load(Ordering::Relaxed),
    }
}

/// Byte offsets where each item of one cycle ends.
fn frame_ends(stream: &[u8]) -> Vec<usize> {
    // Rebuild the cycle item by item and note its length: simpler than re-parsing the stream.
    let mut ends = Vec::new();
    let mut total = 0;
    let dir = root().join("models/elpv-solar/samples");
    let jpegs: Vec<usize> = SAMPLES.iter().map(|s| jpeg_of(&dir.join(s)).len()).collect();
    for item in cycle() {
        total += match item {
            Item::Good(n) | Item::ZeroHeight(n) | Item::Scrambled(n) => jpegs[n],
            Item::Truncated(n) => jpegs[n] / 2,
            Item::Garbage => 300,
        };
        ends.push(total);
    }
    assert_eq!(total, stream.len(), "cycle layout");
    ends
}

/// The short run: two cycles, recorded.
struct Reference {
    seqs_per_cycle: u64,
    first: Vec<CycleEvent>,
    steady: Vec<CycleEvent>,
    per_cycle: [u64; 3],
}

fn reference(pace: Pace) -> Reference {
    let run = soak(2, pace, Expect::Record(Vec::new()));
    let Expect::Record(events) = run.expect else { unreachable!() };
    let c = &run.summary.counters;
    assert_eq!(run.summary.next_seq % 2, 0, "two identical cycles number the same frames: {c:?}");
    let seqs_per_cycle = run.summary.next_seq / 2;
    let in_cycle = |k: u64| -> Vec<CycleEvent> {
        events
            .iter()
            .filter(|(seq, _)| seq / seqs_per_cycle == k)
            .map(|(seq, e)| CycleEvent { seq_in_cycle: seq % seqs_per_cycle, ..e.clone() })
            .collect()
    };
    let (first, steady) = (in_cycle(0), in_cycle(1));
    for label in ["defective", "uncertain", "monocrystalline"] {
        for state in ["ON", "OFF"] {
            assert!(
                steady.iter().any(|e| e.label == label && e.state == state),
                "the cycle switches `{label}` {state}: {steady:?}"
            );
        }
    }
    // Every frame written is accounted for exactly once: decided, or dropped and counted (a
    // run of garbage is one frame however many reads it arrives in).
    assert_eq!(c.decided + c.dropped() - c.dropped_source, run.summary.next_seq, "{c:?}");
    assert_eq!(c.decided + c.dropped(), 2 * CYCLE as u64, "every frame decided or counted as dropped: {c:?}");
    assert!(c.dropped_source > 0 && c.dropped_corrupt > 0, "the corrupt frames are dropped and counted: {c:?}");
    assert_eq!(c.dropped_source % 2 + c.dropped_corrupt % 2 + c.decided % 2, 0, "{c:?}");
    Reference { seqs_per_cycle, first, steady, per_cycle: [c.decided / 2, c.dropped_source / 2, c.dropped_corrupt / 2] }
}

/// Check a long run against the reference; return its report.
fn check(run: &Soak, reference: &Reference, cycles: u64) -> String {
    let c = &run.summary.counters;
    let Expect::Match { checked, .. } = &run.expect else { unreachable!() };
    let [decided, dropped_source, dropped_corrupt] = reference.per_cycle.map(|n| n * cycles);
    assert_eq!(
        (c.decided, c.dropped_source, c.dropped_corrupt, c.dropped_engine, c.dropped_late),
        (decided, dropped_source, dropped_corrupt, 0, 0),
        "every frame decided or dropped as in the short run (more dropped at the source: the \
         machine was too busy for the pace and frames went stale; set VIGIL_SOAK_FRAME_MS higher)"
    );
    assert_eq!(checked.mismatches, 0, "decisions differ from the short run: first {:?}", checked.first_mismatch);
    let events_per_cycle = reference.steady.len() as u64;
    let want_events = reference.first.len() as u64 + events_per_cycle * (cycles - 1);
    assert_eq!((c.events, checked.events), (want_events, want_events), "events: {checked:?}");
    // Each label's line rose once per ON event; the fault line never did; the heartbeat beat.
    for (label, rises) in run.label_rises.iter().enumerate() {
        let name = ["defective", "uncertain", "monocrystalline"][label];
        let on = reference.first.iter().chain(std::iter::repeat_n(&reference.steady, cycles as usize - 1).flatten());
        let ons = on.filter(|e| e.label == name && e.state == "ON").count() as u64;
        assert_eq!(*rises, ons, "GPIO line of `{name}`");
    }
    assert_eq!(run.fault_rises, 0, "fault line");
    assert!(run.heartbeat_rises > 0, "heartbeat");
    format!(
        "{} frames written in {:.1} s: {} decided, {} dropped at the source, {} refused by the decoder; \
         {} events ({} cycles, each identical to the short run), {} serial lines; GPIO rises per label {:?}, \
         heartbeat {}, fault {}",
        run.frames_written,
        run.took.as_secs_f64(),
        c.decided,
        c.dropped_source,
        c.dropped_corrupt,
        c.events,
        checked.cycles_complete + 1,
        run.serial_lines,
        run.label_rises,
        run.heartbeat_rises,
        run.fault_rises,
    )
}

fn long_run(cycles: u64, pace: Pace) -> (Soak, Reference) {
    let reference = reference(pace);
    let expect = Expect::Match {
        seqs_per_cycle: reference.seqs_per_cycle,
        first: reference.first.clone(),
        steady: reference.steady.clone(),
        checked: Checked::default(),
    };
    (soak(cycles, pace, expect), reference)
}

/// The long soak's pace: a 125 frames/s camera unless `VIGIL_SOAK_FRAME_MS` says otherwise.
fn camera_pace() -> Pace {
    let ms = std::env::var("VIGIL_SOAK_FRAME_MS").ok().map_or(8.0, |v| v.parse::<f64>().expect("VIGIL_SOAK_FRAME_MS"));
    Pace::Camera(Duration::from_secs_f64(ms / 1000.0))
}

/// Five cycles against a short run of two: the default test run's check that the pipeline
/// repeats itself exactly. (Memory is not judged here: other tests share the process.)
#[test]
fn a_few_cycles_decide_exactly_as_a_short_run_does() {
    let cycles = 5;
    let (run, reference) = long_run(cycles, Pace::LockStep);
    let report = check(&run, &reference, cycles);
    eprintln!("soak, {cycles} cycles: {report}");
}

/// The long soak: `VIGIL_SOAK_FRAMES` frames (default 100,000), run alone so that the process
/// figures are the pipeline's (docs/reliability.md has the command and the last figures).
#[test]
#[ignore = "about 14 minutes: run by hand, alone (docs/reliability.md)"]
fn soak_100k_frames() {
    let frames: u64 =
        std::env::var("VIGIL_SOAK_FRAMES").ok().map_or(100_000, |v| v.parse().expect("VIGIL_SOAK_FRAMES"));
    let cycles = frames.div_ceil(CYCLE as u64).max(2);
    let (run, reference) = long_run(cycles, camera_pace());
    let report = check(&run, &reference, cycles);
    eprintln!("soak: {report}");

    let warm = run.samples.iter().position(|s| s.frames_written as f64 >= WARM_UP_SHARE * run.frames_written as f64);
    let warm = &run.samples[warm.expect("samples after warm-up")..];
    let first = warm[0];
    let last = *warm.last().unwrap();
    let max_rss = warm.iter().map(|s| s.rss_kib).max().unwrap();
    let (fds, threads) = (
        (warm.iter().map(|s| s.fds).min().unwrap(), warm.iter().map(|s| s.fds).max().unwrap()),
        (warm.iter().map(|s| s.threads).min().unwrap(), warm.iter().map(|s| s.threads).max().unwrap()),
    );
    eprintln!(
        "soak: RSS after warm-up ({} frames) {} KiB, at the end {} KiB (growth {} KiB, peak {} KiB); \
         fds {}..{}; threads {}..{}; {} samples",
        first.frames_written,
        first.rss_kib,
        last.rss_kib,
        last.rss_kib as i64 - first.rss_kib as i64,
        max_rss,
        fds.0,
        fds.1,
        threads.0,
        threads.1,
        run.samples.len()
    );
    assert!(max_rss < first.rss_kib + 1024, "RSS grew by {} KiB after warm-up", max_rss - first.rss_kib);
    assert_eq!(fds.0, fds.1, "open file descriptors changed after warm-up");
    assert_eq!(threads.0, threads.1, "threads changed after warm-up");
}
