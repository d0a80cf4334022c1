//! Wires the stages together and runs them on threads.
//!
//! ```text
//! source ──Frame──▶ prepare ──Job──▶ infer-0..N ──Done──▶ decide (caller's thread) ──▶ sinks
//!   ▲                 │  ▲             │  ▲                   │
//!   └── free Frames ──┘  └─ free input ┘  └─ free score bufs ─┘
//! ```
//! Frames, input tensors and score buffers circulate in fixed pools, so a warm
//! pipeline allocates none. One `prepare` thread decodes, resizes and
//! normalises while the workers infer, so preprocessing overlaps inference.
//! Jobs leave `prepare` in sequence order (a dropped frame travels on as a
//! `Job::Dropped` marker); the decide thread puts the workers' results back in
//! order in a ring before deciding, so decisions are made in frame order
//! whatever the number of workers. A worker takes a score buffer *before* it
//! takes a job, which bounds how far results can run ahead of the oldest
//! undecided frame (and so the ring) by the score pool's size.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};

use crate::bundle::InputSpec;
use crate::console::{self, Command, Reply};
use crate::decide::{Decider, Event, LabelRule};
use crate::engine::{EngineError, InferenceEngine, InferenceWorker, InputTensor};
use crate::frame::Frame;
use crate::preprocess::Preprocessor;
use crate::protocol::{EventLine, StatusLine};
use crate::sink::{ConsoleRequest, SerialShared, Sink};
use crate::source::{FrameSource, Next};
use crate::stats::{Counters, Health, LatencyRing, StageTimes};
use crate::stop::StopFlag;

/// How long sinks get to write out what was decided once a stop is asked for.
pub const FLUSH_BUDGET: Duration = Duration::from_millis(500);

/// Everything a run needs, already loaded and checked.
pub struct Pipeline {
    /// Where frames come from.
    pub source: Box<dyn FrameSource>,
    /// The loaded model.
    pub engine: Arc<dyn InferenceEngine>,
    /// The model's input spec (for the preprocessors).
    pub input: InputSpec,
    /// Per-label rules and states.
    pub decider: Decider,
    /// Where events and status lines go.
    pub sinks: Vec<Box<dyn Sink>>,
    /// Inference workers (threads), each running one frame at a time.
    pub workers: usize,
    /// Period of the status line; `None` for none.
    pub status_interval: Option<Duration>,
    /// Raised to stop the run.
    pub stop: StopFlag,
    /// When the run (or the process) started: frame times and uptime count from here.
    pub started: Instant,
    /// Console commands from serial ports, run between frames.
    pub console: Option<Receiver<ConsoleRequest>>,
    /// Where the console's `save` writes changed thresholds.
    pub thresholds_file: Option<PathBuf>,
    /// Live health, for heartbeat and fault outputs.
    pub health: Arc<Health>,
}

/// What a run did, for the caller and the benchmark.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Frame counters.
    pub counters: Counters,
    /// Sum of per-stage times over all decided frames.
    pub stages: StageTimes,
    /// From the first decision to the last: `busy / (decided - 1)` is the
    /// steady-state time per frame, free of model loading and warm-up.
    pub busy: Duration,
    /// From `started` to the first decision.
    pub first_decision: Option<Duration>,
    /// Final decide state (rules and label states).
    pub decider: Decider,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    Corrupt,
    Engine,
    /// Not processed because a stop was asked for; not counted as a drop.
    Stopping,
}

/// A frame ready for a worker (or the news that it was dropped), in sequence order.
enum Job {
    Ready { seq: u64, t_ms: u64, input: InputTensor, times: StageTimes },
    Dropped { seq: u64, t_ms: u64, why: Dropped },
}

/// One frame's result, travelling from a worker to the decide thread.
struct Done {
    seq: u64,
    t_ms: u64,
    scores: Vec<f32>,
    result: Result<(), Dropped>,
    times: StageTimes,
}

/// Logs at most one line per period and says how many it held back.
pub struct LogLimiter {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter allowing one line per `period`.
    pub fn new(period: Duration) -> LogLimiter {
        LogLimiter { period, last: None, suppressed: 0 }
    }

    /// Log `msg` at warn level unless one was logged within the period.
    pub fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < self.period) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!("{msg} ({} similar message(s) suppressed)", self.suppressed);
        } else {
            log::warn!("{msg}");
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

impl Pipeline {
    /// Run until the source ends or `stop` is raised; then flush the sinks.
    pub fn run(self) -> Result<RunSummary, EngineError> {
        let Pipeline {
            mut source,
            engine,
            input,
            mut decider,
            mut sinks,
            workers,
            status_interval,
            stop,
            started,
            console,
            thresholds_file,
            health,
        } = self;
        let workers = workers.max(1);
        // Sizes: the source and `prepare` may each run a frame ahead; every worker can hold
        // a tensor while `prepare` fills more; score buffers bound the reorder ring.
        let frame_pool = 3;
        let input_pool = workers + 2;
        let score_pool = workers * 2 + 1;
        let mut engine_workers: Vec<Box<dyn InferenceWorker>> =
            (0..workers).map(|_| engine.new_worker()).collect::<Result<_, _>>()?;
        let labels = decider.labels().len();

        let (frame_tx, frame_rx) = bounded::<Frame>(frame_pool);
        let (free_frame_tx, free_frame_rx) = bounded::<Frame>(frame_pool);
        let (job_tx, job_rx) = bounded::<Job>(input_pool);
        let (free_input_tx, free_input_rx) = bounded::<InputTensor>(input_pool);
        let (scores_tx, scores_rx) = bounded::<Vec<f32>>(score_pool);
        let (done_tx, done_rx) = bounded::<Done>(score_pool);
        for _ in 0..frame_pool {
            free_frame_tx.send(Frame::empty()).expect("pool channel has room");
        }
        for _ in 0..input_pool {
            free_input_tx.send(engine.new_input()?).expect("pool channel has room");
        }
        for _ in 0..score_pool {
            scores_tx.send(vec![0.0; labels]).expect("pool channel has room");
        }
        let source_dropped = Arc::new(AtomicU64::new(0));

        std::thread::scope(|scope| {
            {
                let (stop, source_dropped) = (stop.clone(), Arc::clone(&source_dropped));
                let source = &mut source;
                std::thread::Builder::new()
                    .name("source".into())
                    .spawn_scoped(scope, move || {
                        let mut seq = 0u64;
                        while let Ok(mut frame) = free_frame_rx.recv() {
                            loop {
                                match source.next_frame(&mut frame, &stop) {
                                    Next::Frame => break,
                                    Next::Dropped => {
                                        source_dropped.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Next::End | Next::Stopped => return,
                                }
                            }
                            frame.seq = seq;
                            seq += 1;
                            if frame_tx.send(frame).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn source thread");
            }
            {
                let (stop, free_input_tx) = (stop.clone(), free_input_tx.clone());
                let input = &input;
                std::thread::Builder::new()
                    .name("prepare".into())
                    .spawn_scoped(scope, move || {
                        let mut pre = Preprocessor::new(input);
                        let mut corrupt_log = LogLimiter::new(Duration::from_secs(5));
                        while let Ok(frame) = frame_rx.recv() {
                            let (seq, t_ms) = (frame.seq, frame.t_ms);
                            let job = if stop.is_stopped() {
                                Job::Dropped { seq, t_ms, why: Dropped::Stopping }
                            } else {
                                let Ok(mut tensor) = free_input_rx.recv() else { return };
                                match pre.run(&frame, tensor.as_mut_slice()) {
                                    Ok(pt) => {
                                        let times = StageTimes {
                                            decode: pt.decode,
                                            prepare: pt.prepare,
                                            ..StageTimes::default()
                                        };
                                        Job::Ready { seq, t_ms, input: tensor, times }
                                    }
                                    Err(e) => {
                                        corrupt_log.warn(format_args!(
                                            "frame {seq} ({}) dropped: {e}",
                                            frame.origin_display()
                                        ));
                                        let _ = free_input_tx.send(tensor);
                                        Job::Dropped { seq, t_ms, why: Dropped::Corrupt }
                                    }
                                }
                            };
                            let _ = free_frame_tx.send(frame);
                            if job_tx.send(job).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn prepare thread");
            }
            for (i, mut worker) in engine_workers.drain(..).enumerate() {
                let (job_rx, free_input_tx, scores_rx, done_tx) =
                    (job_rx.clone(), free_input_tx.clone(), scores_rx.clone(), done_tx.clone());
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("infer-{i}"))
                    .spawn_scoped(scope, move || {
                        let mut engine_log = LogLimiter::new(Duration::from_secs(5));
                        // Take a score buffer before a job: see the module comment.
                        while let Ok(mut scores) = scores_rx.recv() {
                            let Ok(job) = job_rx.recv() else { return };
                            let done = match job {
                                Job::Dropped { seq, t_ms, why } => {
                                    Done { seq, t_ms, scores, result: Err(why), times: StageTimes::default() }
                                }
                                Job::Ready { seq, t_ms, mut input, mut times } => {
                                    let result = if stop.is_stopped() {
                                        Err(Dropped::Stopping)
                                    } else {
                                        let t0 = Instant::now();
                                        let r = worker.infer(&mut input, &mut scores);
                                        times.infer = t0.elapsed();
                                        r.map_err(|e| {
                                            engine_log.warn(format_args!("frame {seq} dropped: {e}"));
                                            Dropped::Engine
                                        })
                                    };
                                    let _ = free_input_tx.send(input);
                                    Done { seq, t_ms, scores, result, times }
                                }
                            };
                            if done_tx.send(done).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn inference worker");
            }
            drop((job_rx, free_input_tx, scores_rx, done_tx));

            let mut decide = DecideLoop {
                ring: (0..score_pool).map(|_| None).collect(),
                next_seq: 0,
                events: Vec::with_capacity(labels),
                latencies: LatencyRing::default(),
                counters: Counters::default(),
                stages: StageTimes::default(),
                first_decision_at: None,
                last_decision: None,
                first_decision: None,
                started,
                frames_at_status: (0, Instant::now()),
                health: &health,
                watchers: Vec::new(),
                changed: vec![false; labels],
                thresholds_file: thresholds_file.as_deref(),
                shown: Vec::with_capacity(labels),
            };
            let never = crossbeam_channel::never();
            let console = console.as_ref().unwrap_or(&never);
            let mut status_due = status_interval.map(|i| Instant::now() + i);
            loop {
                let wait =
                    status_due.map_or(Duration::from_millis(200), |d| d.saturating_duration_since(Instant::now()));
                crossbeam_channel::select! {
                    recv(done_rx) -> done => match done {
                        Ok(done) => {
                            let slot = done.seq as usize % decide.ring.len();
                            debug_assert!(decide.ring[slot].is_none(), "ring slot reused before decided");
                            decide.ring[slot] = Some(done);
                            decide.drain(&mut decider, &mut sinks, &scores_tx);
                        }
                        Err(_) => break,
                    },
                    recv(console) -> request => {
                        if let Ok(request) = request {
                            decide.counters.dropped_source = source_dropped.load(Ordering::Relaxed);
                            decide.console(request, &mut decider);
                        }
                    },
                    default(wait) => {},
                }
                if let (Some(due), Some(interval)) = (status_due, status_interval)
                    && Instant::now() >= due
                {
                    decide.counters.dropped_source = source_dropped.load(Ordering::Relaxed);
                    decide.emit_status(&decider, &mut sinks);
                    status_due = Some(due + interval);
                }
            }
            decide.counters.dropped_source = source_dropped.load(Ordering::Relaxed);
            if status_interval.is_some() {
                decide.emit_status(&decider, &mut sinks);
            }
            for sink in &mut sinks {
                sink.flush(FLUSH_BUDGET);
            }
            let busy = match (decide.first_decision_at, decide.last_decision) {
                (Some(a), Some(b)) => b - a,
                _ => Duration::ZERO,
            };
            Ok(RunSummary {
                counters: decide.counters,
                stages: decide.stages,
                busy,
                first_decision: decide.first_decision,
                decider,
            })
        })
    }
}

/// State of the decide thread.
struct DecideLoop<'a> {
    ring: Vec<Option<Done>>,
    next_seq: u64,
    events: Vec<Event>,
    latencies: LatencyRing,
    counters: Counters,
    stages: StageTimes,
    first_decision_at: Option<Instant>,
    last_decision: Option<Instant>,
    first_decision: Option<Duration>,
    started: Instant,
    /// Frames decided and when, at the last status line (for its fps).
    frames_at_status: (u64, Instant),
    health: &'a Health,
    /// Serial ports that asked for `watch on`.
    watchers: Vec<Arc<SerialShared>>,
    /// Labels whose thresholds the console changed (what `save` writes).
    changed: Vec<bool>,
    thresholds_file: Option<&'a Path>,
    /// Scratch for `scores` and `watch`.
    shown: Vec<(usize, f32)>,
}

impl DecideLoop<'_> {
    /// Decide every result that is next in sequence.
    fn drain(
        &mut self,
        decider: &mut Decider,
        sinks: &mut [Box<dyn Sink>],
        scores_tx: &crossbeam_channel::Sender<Vec<f32>>,
    ) {
        loop {
            let slot = self.next_seq as usize % self.ring.len();
            let Some(mut done) = self.ring[slot].take() else { return };
            self.next_seq += 1;
            match done.result {
                Ok(()) => {
                    let t0 = Instant::now();
                    self.events.clear();
                    decider.update(done.seq, done.t_ms, &done.scores, &mut self.events);
                    let t1 = Instant::now();
                    for e in &self.events {
                        let line = EventLine {
                            seq: e.seq,
                            t_ms: e.t_ms,
                            label: &decider.labels()[e.label],
                            label_index: e.label,
                            on: e.on,
                            score: e.score,
                        };
                        for sink in sinks.iter_mut() {
                            sink.event(&line);
                        }
                    }
                    if !self.watchers.is_empty() {
                        self.stream_scores(done.seq, decider);
                    }
                    done.times.decide = t1 - t0;
                    done.times.emit = t1.elapsed();
                    self.counters.decided += 1;
                    self.counters.events += self.events.len() as u64;
                    self.stages.add(&done.times);
                    self.latencies.push(done.times.infer.as_secs_f32() * 1000.0);
                    self.first_decision.get_or_insert_with(|| self.started.elapsed());
                    self.first_decision_at.get_or_insert(t1);
                    self.last_decision = Some(t1);
                    self.health.frames.store(self.counters.decided, Ordering::Relaxed);
                    self.health.engine_failing.store(false, Ordering::Relaxed);
                }
                Err(Dropped::Corrupt) => self.counters.dropped_corrupt += 1,
                Err(Dropped::Engine) => {
                    self.counters.dropped_engine += 1;
                    self.health.engine_failing.store(true, Ordering::Relaxed);
                }
                Err(Dropped::Stopping) => {}
            }
            let _ = scores_tx.send(done.scores);
        }
    }

    /// The status line as of now; `fps` over the period since the last status line.
    fn status_line<'l>(&mut self, labels_on: &'l [&'l str]) -> StatusLine<'l> {
        let fps = (self.counters.decided - self.frames_at_status.0) as f64
            / self.frames_at_status.1.elapsed().as_secs_f64().max(1e-9);
        // Rounded: a status line is for people and dashboards, not for timing analysis.
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        StatusLine {
            uptime_s: round(self.started.elapsed().as_secs_f64(), 1),
            frames: self.counters.decided,
            fps: round(fps, 2),
            infer_ms_p50: round(self.latencies.quantile(0.5), 2),
            infer_ms_p99: round(self.latencies.quantile(0.99), 2),
            dropped: self.counters.dropped(),
            source: if self.health.source_lost.load(Ordering::Relaxed) { "lost" } else { "ok" },
            outages: self.health.source_outages.load(Ordering::Relaxed),
            labels_on,
        }
    }

    fn emit_status(&mut self, decider: &Decider, sinks: &mut [Box<dyn Sink>]) {
        let labels_on: Vec<&str> = decider.on_labels().map(|i| decider.labels()[i].as_str()).collect();
        let status = self.status_line(&labels_on);
        self.frames_at_status = (self.counters.decided, Instant::now());
        for sink in sinks.iter_mut() {
            sink.status(&status);
        }
    }

    /// One `$VGSCR` line per watching port (droppable: a slow line keeps up by skipping).
    fn stream_scores(&mut self, seq: u64, decider: &Decider) {
        console::shown_labels(decider.states().iter().map(|s| s.last_score), &mut self.shown);
        for w in &self.watchers {
            let mut out = Vec::with_capacity(32 + 24 * self.shown.len());
            let mut r = Reply::scores(&mut out, w.format(), seq);
            for &(i, score) in &self.shown {
                r.field(format_args!("{}={score:.4}", decider.labels()[i]));
            }
            r.finish();
            w.push(out, true);
        }
    }

    /// Run one console command between two frames and reply to its port.
    fn console(&mut self, request: ConsoleRequest, decider: &mut Decider) {
        let ConsoleRequest { command, reply_to } = request;
        let mut out = Vec::with_capacity(256);
        let mut ok = |fields: &mut dyn FnMut(&mut Reply<'_>)| {
            let mut r = Reply::new(&mut out, reply_to.format(), command.name(), true);
            fields(&mut r);
            r.finish();
        };
        match &command {
            Command::Help => ok(&mut |r| {
                for c in console::HELP.split(';') {
                    r.field(format_args!("{c}"));
                }
            }),
            Command::Version => ok(&mut |r| {
                r.field(format_args!("vigil {}", env!("CARGO_PKG_VERSION")));
            }),
            Command::Status => {
                let labels_on: Vec<&str> = decider.on_labels().map(|i| decider.labels()[i].as_str()).collect();
                let s = self.status_line(&labels_on);
                let on = labels_on.join(";");
                ok(&mut |r| {
                    r.field(format_args!("uptime_s={:.0}", s.uptime_s))
                        .field(format_args!("frames={}", s.frames))
                        .field(format_args!("fps={:.1}", s.fps))
                        .field(format_args!("infer_ms_p50={:.1}", s.infer_ms_p50))
                        .field(format_args!("infer_ms_p99={:.1}", s.infer_ms_p99))
                        .field(format_args!("dropped={}", s.dropped))
                        .field(format_args!("source={}", s.source))
                        .field(format_args!("outages={}", s.outages))
                        .field(format_args!("labels_on={on}"));
                })
            }
            Command::Scores => {
                console::shown_labels(decider.states().iter().map(|s| s.last_score), &mut self.shown);
                let (shown, labels, seq) = (&self.shown, decider.labels(), self.next_seq);
                ok(&mut |r| {
                    r.field(format_args!("seq={}", seq.saturating_sub(1)));
                    for &(i, score) in shown {
                        r.field(format_args!("{}={score:.4}", labels[i]));
                    }
                })
            }
            Command::Watch(on) => {
                self.watchers.retain(|w| !Arc::ptr_eq(w, &reply_to));
                if *on {
                    self.watchers.push(Arc::clone(&reply_to));
                }
                ok(&mut |r| {
                    r.field(format_args!("{}", if *on { "on" } else { "off" }));
                })
            }
            Command::GetThresholds => {
                // Many labels (ImageNet's 1000) would take seconds at 9600 baud: list those whose
                // rule differs from the common one, then the common rule once.
                let (rules, labels) = (decider.rules(), decider.labels());
                let common = (labels.len() > console::MAX_THRESHOLDS_SHOWN).then(|| rules[0]);
                ok(&mut |r| {
                    let listed = labels.iter().zip(rules).filter(|(_, rule)| common.is_none_or(|c| **rule != c));
                    for (label, rule) in listed.take(console::MAX_THRESHOLDS_SHOWN) {
                        r.field(format_args!("{label}:on={}:off={}", rule.on, rule.off));
                    }
                    if let Some(c) = common {
                        r.field(format_args!("others:on={}:off={}", c.on, c.off));
                    }
                })
            }
            Command::SetThreshold { label, on, off } => match console::set_threshold(decider, label, *on, *off) {
                Ok((index, rule)) => {
                    self.changed[index] = true;
                    let name = &decider.labels()[index];
                    log::info!(
                        "console: {name} thresholds set to on={} off={} from frame {}",
                        rule.on,
                        rule.off,
                        self.next_seq
                    );
                    let seq = self.next_seq;
                    ok(&mut |r| {
                        r.field(format_args!("{name}"))
                            .field(format_args!("on={}", rule.on))
                            .field(format_args!("off={}", rule.off))
                            .field(format_args!("from_seq={seq}"));
                    })
                }
                Err(why) => return reply_to.push_error(command.name(), &why),
            },
            Command::Save => {
                let Some(path) = self.thresholds_file else {
                    return reply_to.push_error("save", "no thresholds file: set `thresholds` in the config's [model]");
                };
                let changed: Vec<(&str, LabelRule)> = (0..self.changed.len())
                    .filter(|&i| self.changed[i])
                    .map(|i| (decider.labels()[i].as_str(), decider.rules()[i]))
                    .collect();
                match console::save_thresholds(path, &changed) {
                    Ok(()) => {
                        log::info!("console: saved {} threshold change(s) to {}", changed.len(), path.display());
                        let n = changed.len();
                        ok(&mut |r| {
                            r.field(format_args!("{}", path.display())).field(format_args!("labels={n}"));
                        })
                    }
                    Err(why) => return reply_to.push_error("save", &why),
                }
            }
        }
        reply_to.push(out, false);
    }
}
