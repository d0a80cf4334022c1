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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, bounded};

use crate::bundle::InputSpec;
use crate::decide::{Decider, Event};
use crate::engine::{EngineError, InferenceEngine, InferenceWorker, InputTensor};
use crate::frame::Frame;
use crate::preprocess::Preprocessor;
use crate::protocol::{EventLine, StatusLine};
use crate::sink::Sink;
use crate::source::{FrameSource, Next};
use crate::stats::{Counters, LatencyRing, StageTimes};
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
        let Pipeline { mut source, engine, input, mut decider, mut sinks, workers, status_interval, stop, started } =
            self;
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
            };
            let mut status_due = status_interval.map(|i| Instant::now() + i);
            let mut frames_at_status = (0u64, Instant::now());
            loop {
                let wait =
                    status_due.map_or(Duration::from_millis(200), |d| d.saturating_duration_since(Instant::now()));
                match done_rx.recv_timeout(wait) {
                    Ok(done) => {
                        let slot = done.seq as usize % decide.ring.len();
                        debug_assert!(decide.ring[slot].is_none(), "ring slot reused before decided");
                        decide.ring[slot] = Some(done);
                        decide.drain(&mut decider, &mut sinks, &scores_tx);
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if let (Some(due), Some(interval)) = (status_due, status_interval)
                    && Instant::now() >= due
                {
                    decide.counters.dropped_source = source_dropped.load(Ordering::Relaxed);
                    let fps = (decide.counters.decided - frames_at_status.0) as f64
                        / frames_at_status.1.elapsed().as_secs_f64().max(1e-9);
                    frames_at_status = (decide.counters.decided, Instant::now());
                    decide.emit_status(&decider, &mut sinks, fps);
                    status_due = Some(due + interval);
                }
            }
            decide.counters.dropped_source = source_dropped.load(Ordering::Relaxed);
            if status_interval.is_some() {
                let fps = (decide.counters.decided - frames_at_status.0) as f64
                    / frames_at_status.1.elapsed().as_secs_f64().max(1e-9);
                decide.emit_status(&decider, &mut sinks, fps);
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
struct DecideLoop {
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
}

impl DecideLoop {
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
                            on: e.on,
                            score: e.score,
                        };
                        for sink in sinks.iter_mut() {
                            sink.event(&line);
                        }
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
                }
                Err(Dropped::Corrupt) => self.counters.dropped_corrupt += 1,
                Err(Dropped::Engine) => self.counters.dropped_engine += 1,
                Err(Dropped::Stopping) => {}
            }
            let _ = scores_tx.send(done.scores);
        }
    }

    fn emit_status(&mut self, decider: &Decider, sinks: &mut [Box<dyn Sink>], fps: f64) {
        let labels_on: Vec<&str> = decider.on_labels().map(|i| decider.labels()[i].as_str()).collect();
        // Rounded: a status line is for people and dashboards, not for timing analysis.
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        let status = StatusLine {
            uptime_s: round(self.started.elapsed().as_secs_f64(), 1),
            frames: self.counters.decided,
            fps: round(fps, 2),
            infer_ms_p50: round(self.latencies.quantile(0.5), 2),
            infer_ms_p99: round(self.latencies.quantile(0.99), 2),
            dropped: self.counters.dropped(),
            labels_on: &labels_on,
        };
        for sink in sinks.iter_mut() {
            sink.status(&status);
        }
    }
}
