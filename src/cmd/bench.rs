//! `vigil bench`: per-stage times, end-to-end throughput, pipeline overhead
//! over raw tract inference, worker scaling, peak memory and cold start, all
//! measured in one process so the ratios compare like with like.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Error;
use vigil::bundle::{Bundle, Variant};
use vigil::decide::Decider;
use vigil::engine::{self, EngineChoice, InferenceEngine};
use vigil::frame::Frame;
use vigil::pipeline::{self, Decisions, Model, RunSummary};
use vigil::preprocess::Preprocessor;
use vigil::protocol::LineFormat;
use vigil::sink::{LineSink, Sink};
use vigil::source::{FilesSource, FilesSpec, FrameSource, Next};
use vigil::stop::StopFlag;
use vigil::thresholds;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Model variant.
    pub variant: Variant,
    /// Images to replay (file, directory or glob).
    pub images: String,
    /// Frames per measurement.
    pub frames: u64,
    /// Worker counts to compare (the first is the baseline).
    pub workers: Vec<usize>,
    /// Which engine runs the model.
    pub engine: EngineChoice,
}

/// Mean per-frame times of each stage, in ms.
#[derive(Debug, Clone, Serialize)]
pub struct StageMs {
    /// JPEG/PNG decode.
    pub decode: f64,
    /// Convert + resize + normalise.
    pub prepare: f64,
    /// Model.
    pub infer: f64,
    /// Decide.
    pub decide: f64,
    /// Emit (format and write lines).
    pub emit: f64,
}

/// One pipeline run at a given worker count.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRun {
    /// Inference workers.
    pub workers: usize,
    /// Frames decided.
    pub frames: u64,
    /// Frames per second, steady state.
    pub fps: f64,
    /// Steady-state wall time per frame, ms.
    pub ms_per_frame: f64,
    /// Mean stage times per frame.
    pub stages: StageMs,
}

/// Everything `vigil bench` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Model described.
    pub model: String,
    /// Process start → model loaded and optimised, ms.
    pub load_ms: f64,
    /// Process start → first decision, ms.
    pub cold_start_ms: f64,
    /// Raw tract inference, one worker, same tensor, mean ms.
    pub raw_infer_ms: f64,
    /// One run per worker count.
    pub runs: Vec<PipelineRun>,
    /// End-to-end ms/frame (1st run) over raw inference ms. Each worker decodes, prepares
    /// and infers one frame after the other, so with one worker this is
    /// (decode + prepare + inference) / inference.
    pub overhead_ratio: f64,
    /// End-to-end ms/frame (1st run) over the sum of its stages' own times (decode + prepare
    /// from that run, raw inference): what the pipeline's threads, channels, decisions and
    /// output add to the work itself.
    pub pipeline_overhead_ratio: f64,
    /// fps of the last run over fps of the first (goal ≥ 1.7 for 2 vs 1 on 2 cores).
    pub scaling_ratio: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Preprocessing cost per camera format and size.
    pub formats: Vec<FormatCost>,
}

/// What turning one camera frame into the model's tensor costs.
#[derive(Debug, Clone, Serialize)]
pub struct FormatCost {
    /// `jpeg`, `yuyv`, `nv12`, `i420`, `rgb24` or `grey`.
    pub format: &'static str,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Decode or YUV conversion, resize and normalisation, mean ms per frame (one thread).
    pub ms: f64,
    /// `ms` over raw inference time: the share of a frame's work it adds.
    pub share_of_inference: f64,
}

/// Ends a source after a fixed number of frames.
struct Limited {
    inner: FilesSource,
    left: u64,
}

impl FrameSource for Limited {
    fn next_frame(&mut self, frame: &mut Frame, stop: &StopFlag) -> Next {
        if self.left == 0 {
            return Next::End;
        }
        let n = self.inner.next_frame(frame, stop);
        if n == Next::Frame {
            self.left -= 1;
        }
        n
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Peak resident set size of this process (VmHWM), in MiB; 0 where /proc is absent.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Run the benchmark. `process_start` is taken as early as possible in `main`.
pub fn run(opts: &BenchOptions, process_start: Instant) -> Result<BenchReport, Error> {
    if opts.workers.is_empty() || opts.workers.contains(&0) {
        return Err(Error::Usage("--workers: expected worker counts of 1 or more, e.g. 1,2".into()));
    }
    let bundle = Bundle::load(&opts.bundle)?;
    let rules = thresholds::rules_for(&bundle, None, None)?;
    let engine = engine::load(&bundle, opts.variant, &opts.engine)?.engine;
    let load_ms = ms(process_start.elapsed());

    // Raw inference is measured after the first pipeline run (which must come first: it
    // gives the cold start) and after the last; the mean of both is reported, so that
    // drift in the machine's speed does not bias the ratio.
    let mut raw_between = None;
    let mut runs = Vec::new();
    let mut cold_start_ms = 0.0;
    for (i, &workers) in opts.workers.iter().enumerate() {
        // The first run starts its clock at process start, so its first decision is the cold start.
        let started = if i == 0 { process_start } else { Instant::now() };
        let files = FilesSpec { pattern: opts.images.clone(), fps: 0.0, looped: true };
        let source = Limited { inner: FilesSource::new(&files, started)?, left: opts.frames };
        let model = Model { engine: engine.clone(), input: bundle.input.clone(), workers };
        let decisions = Decisions {
            decider: Decider::new(Arc::clone(&bundle.labels), rules.clone()),
            sinks: vec![Box::new(LineSink::new(std::io::sink(), LineFormat::Json)) as Box<dyn Sink>],
            status_interval: None,
            control: None,
            health: Arc::default(),
            first_seq: 0,
            snapshots: None,
        };
        let summary: RunSummary = pipeline::run(Box::new(source), &model, decisions, &StopFlag::new(), started)?;
        if i == 0 {
            cold_start_ms = summary.first_decision.map_or(0.0, ms);
            raw_between = Some(raw_inference_ms(engine.as_ref(), &bundle, opts)?);
        }
        let n = summary.counters.decided.max(1) as f64;
        let per_frame = ms(summary.busy) / (summary.counters.decided.saturating_sub(1).max(1)) as f64;
        let s = &summary.stages;
        runs.push(PipelineRun {
            workers,
            frames: summary.counters.decided,
            fps: 1000.0 / per_frame,
            ms_per_frame: per_frame,
            stages: StageMs {
                decode: ms(s.decode) / n,
                prepare: ms(s.prepare) / n,
                infer: ms(s.infer) / n,
                decide: ms(s.decide) / n,
                emit: ms(s.emit) / n,
            },
        });
    }

    let raw_after = raw_inference_ms(engine.as_ref(), &bundle, opts)?;
    let raw_infer_ms = (raw_between.unwrap_or(raw_after) + raw_after) / 2.0;
    let formats = format_costs(&bundle, opts, raw_infer_ms)?;
    let base = &runs[0];
    let last = runs.last().expect("at least one run");
    Ok(BenchReport {
        model: engine.describe(),
        load_ms,
        cold_start_ms,
        raw_infer_ms,
        overhead_ratio: base.ms_per_frame / raw_infer_ms,
        pipeline_overhead_ratio: base.ms_per_frame / (base.stages.decode + base.stages.prepare + raw_infer_ms),
        scaling_ratio: last.fps / base.fps,
        runs,
        peak_rss_mib: peak_rss_mib(),
        formats,
    })
}

/// Time the preprocessor on the first bench image as each camera format at 640x480 and
/// 1280x720 (the frames are made here: BT.601 limited-range YUV, JPEG quality 90).
fn format_costs(bundle: &Bundle, opts: &BenchOptions, raw_infer_ms: f64) -> Result<Vec<FormatCost>, Error> {
    let first = vigil::source::files::resolve_files(&opts.images)?.remove(0);
    let photo = image::open(&first).map_err(|e| Error::Runtime(format!("{}: {e}", first.display())))?.to_rgb8();
    let mut pre = Preprocessor::new(&bundle.input);
    let mut tensor = vec![0.0f32; bundle.input.len()];
    let mut out = Vec::new();
    for (w, h) in [(640, 480), (1280, 720)] {
        let rgb = image::imageops::resize(&photo, w, h, image::imageops::FilterType::Triangle);
        for (name, frame) in camera_frames(&rgb) {
            let run = |pre: &mut Preprocessor, tensor: &mut [f32]| {
                pre.run(&frame, tensor).map_err(|e| Error::Runtime(format!("bench frame {name}: {e}")))
            };
            run(&mut pre, &mut tensor)?; // warm-up: buffers grow once
            let n = 50;
            let t0 = Instant::now();
            for _ in 0..n {
                run(&mut pre, &mut tensor)?;
            }
            let per = ms(t0.elapsed()) / f64::from(n);
            out.push(FormatCost { format: name, width: w, height: h, ms: per, share_of_inference: per / raw_infer_ms });
        }
    }
    Ok(out)
}

/// `rgb` as a frame of every format a camera or pipe delivers.
fn camera_frames(rgb: &image::RgbImage) -> Vec<(&'static str, Frame)> {
    use vigil::frame::PixelFormat as P;
    let (w, h) = rgb.dimensions();
    let px = |x: u32, y: u32| {
        let p = rgb.get_pixel(x.min(w - 1), y.min(h - 1)).0.map(f64::from);
        // BT.601 limited range, the inverse of what src/convert.rs undoes.
        let y_ = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        let q = |v: f64| v.round().clamp(0.0, 255.0) as u8;
        (
            q(16.0 + 219.0 / 255.0 * y_),
            q(128.0 + 224.0 / 255.0 * (p[2] - y_) / 1.772),
            q(128.0 + 224.0 / 255.0 * (p[0] - y_) / 1.402),
        )
    };
    let frame = |format, data| Frame { format, width: w, height: h, data, ..Frame::empty() };
    let luma: Vec<u8> = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| px(x, y).0).collect();
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let chroma: Vec<(u8, u8)> =
        (0..ch).flat_map(|y| (0..cw).map(move |x| (x, y))).map(|(x, y)| px(x * 2, y * 2)).map(|c| (c.1, c.2)).collect();
    let mut i420 = luma.clone();
    i420.extend(chroma.iter().map(|c| c.0));
    i420.extend(chroma.iter().map(|c| c.1));
    let mut nv12 = luma.clone();
    nv12.extend(chroma.iter().flat_map(|c| [c.0, c.1]));
    let yuyv: Vec<u8> = (0..h)
        .flat_map(|y| (0..cw).map(move |x| (x, y)))
        .flat_map(|(x, y)| {
            let (a, b) = (px(x * 2, y), px(x * 2 + 1, y));
            [a.0, a.1, b.0, a.2]
        })
        .collect();
    let mut jpeg = Vec::new();
    let _ = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(rgb);
    vec![
        ("jpeg", Frame { data: jpeg, ..Frame::empty() }),
        ("yuyv", frame(P::Yuyv, yuyv)),
        ("nv12", frame(P::Nv12, nv12)),
        ("i420", frame(P::I420, i420)),
        ("rgb24", frame(P::Rgb24, rgb.as_raw().clone())),
        ("grey", frame(P::Grey, luma)),
    ]
}

/// Mean time of `opts.frames` inferences on one prepared tensor, one worker, after a warm-up.
fn raw_inference_ms(engine: &dyn InferenceEngine, bundle: &Bundle, opts: &BenchOptions) -> Result<f64, Error> {
    let first = vigil::source::files::resolve_files(&opts.images)?.remove(0);
    let mut frame = Frame::empty();
    frame.data = std::fs::read(&first).map_err(|e| Error::Runtime(format!("{}: {e}", first.display())))?;
    let mut worker = engine.new_worker()?;
    let mut input = engine.new_input()?;
    Preprocessor::new(&bundle.input)
        .run(&frame, input.as_mut_slice())
        .map_err(|e| Error::Runtime(format!("{}: {e}", first.display())))?;
    let mut scores = vec![0.0; bundle.labels.len()];
    worker.infer(&mut input, &mut scores)?; // warm-up
    let t0 = Instant::now();
    for _ in 0..opts.frames {
        worker.infer(&mut input, &mut scores)?;
    }
    Ok(ms(t0.elapsed()) / opts.frames.max(1) as f64)
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model: {}", self.model)?;
        writeln!(f, "load + optimise (from process start): {:.0} ms", self.load_ms)?;
        writeln!(f, "cold start (process start -> first decision): {:.0} ms", self.cold_start_ms)?;
        writeln!(f, "raw tract inference: {:.2} ms/frame", self.raw_infer_ms)?;
        writeln!(f, "workers  frames     fps  ms/frame | decode  prepare    infer   decide     emit (ms/frame)")?;
        for r in &self.runs {
            writeln!(
                f,
                "{:>7} {:>7} {:>7.1} {:>9.2} | {:>6.3} {:>8.3} {:>8.2} {:>8.4} {:>8.4}",
                r.workers,
                r.frames,
                r.fps,
                r.ms_per_frame,
                r.stages.decode,
                r.stages.prepare,
                r.stages.infer,
                r.stages.decide,
                r.stages.emit
            )?;
        }
        writeln!(f, "overhead (end-to-end ms/frame, 1st run / raw inference): {:.3}", self.overhead_ratio)?;
        writeln!(
            f,
            "pipeline overhead (end-to-end ms/frame, 1st run / (decode + prepare + raw inference)): {:.3}",
            self.pipeline_overhead_ratio
        )?;
        writeln!(f, "scaling (fps, last run / 1st run): {:.2}", self.scaling_ratio)?;
        writeln!(f, "peak RSS: {:.1} MiB", self.peak_rss_mib)?;
        writeln!(f, "camera frame -> tensor (one thread): format  size        ms/frame  share of inference")?;
        for c in &self.formats {
            writeln!(
                f,
                "{:>40} {:>4}x{:<5} {:>9.3} {:>10.1} %",
                c.format,
                c.width,
                c.height,
                c.ms,
                100.0 * c.share_of_inference
            )?;
        }
        Ok(())
    }
}
