//! The decide thread: puts the workers' results back in frame order, decides,
//! writes events to the sinks, a status line every period, and runs commands
//! ([`super::Control`]) between frames.

use crate::board::BoardHealth;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::pools::DecideEnds;
use super::threads::{Done, Dropped, SourceCounts, ThreadFailed};
use super::{Decisions, RunSummary, RunView};
use crate::console::Request;
use crate::decide::Event;
use crate::protocol::{EventLine, StatusLine};
use crate::stats::{Counters, LatencyRing, StageTimes};

/// How long sinks get to write out what was decided once a stop is asked for.
pub const FLUSH_BUDGET: Duration = Duration::from_millis(500);

/// What the last status line saw, for the next one's `fps`.
struct AtStatus {
    /// Frames decided by then.
    decided: u64,
    /// When it was written.
    at: Instant,
    /// When the last frame before it was decided.
    last_decision: Option<Instant>,
}

/// The decide thread's state.
pub struct DecideLoop {
    out: Decisions,
    /// Results waiting for an earlier frame, at `seq % len`.
    ring: Vec<Option<Done>>,
    /// The next frame to decide.
    next_seq: u64,
    events: Vec<Event>,
    latencies: LatencyRing,
    counters: Counters,
    stages: StageTimes,
    first_decision_at: Option<Instant>,
    last_decision: Option<Instant>,
    first_decision: Option<Duration>,
    started: Instant,
    /// At the last status line (for the next one's fps).
    at_status: AtStatus,
    /// Where this board's temperature and throttling flags are (found once).
    board: BoardHealth,
    /// What the source thread counts (frames lost, frames numbered).
    source: Arc<SourceCounts>,
    /// The source was seen lost: forget the labels once the frames numbered before are decided.
    forget_at: Option<u64>,
    /// The source is lost and the labels were (or will be) forgotten.
    lost: bool,
    /// Once the labels were forgotten for a loss, when it happened (frames' clock): frames
    /// captured by then are late.
    late_until_ms: Option<u64>,
}

impl DecideLoop {
    /// A loop deciding into `out`, with a reorder ring of `ring` slots (the score pool's size).
    pub fn new(out: Decisions, ring: usize, started: Instant, source: Arc<SourceCounts>) -> DecideLoop {
        let labels = out.decider.labels().len();
        let first_seq = out.first_seq;
        DecideLoop {
            out,
            ring: (0..ring).map(|_| None).collect(),
            next_seq: first_seq,
            events: Vec::with_capacity(labels),
            latencies: LatencyRing::default(),
            counters: Counters::default(),
            stages: StageTimes::default(),
            first_decision_at: None,
            last_decision: None,
            first_decision: None,
            started,
            at_status: AtStatus { decided: 0, at: Instant::now(), last_decision: None },
            board: BoardHealth::find(),
            source,
            forget_at: None,
            lost: false,
            late_until_ms: None,
        }
    }

    /// Decide until every worker has finished (the `done` channel closes) or a thread
    /// of the run failed (reported on `failures`); then a final status line and the
    /// sinks flushed, and the summary, or the failure that ended the run.
    pub fn run(mut self, ends: DecideEnds, failures: &Receiver<ThreadFailed>) -> Result<RunSummary, ThreadFailed> {
        let mut failure = None;
        // The control's channel (cloned, so that deciding can borrow the loop), or one that never delivers.
        let requests: Receiver<Request> =
            self.out.control.as_ref().map_or_else(crossbeam_channel::never, |c| c.requests().clone());
        let already_on: Vec<usize> = self.out.decider.on_labels().collect();
        if !already_on.is_empty() {
            for sink in &mut self.out.sinks {
                sink.labels_already_on(&already_on);
            }
        }
        let interval = self.out.status_interval;
        let mut status_due = interval.map(|i| Instant::now() + i);
        loop {
            let wait = status_due.map_or(Duration::from_millis(200), |d| d.saturating_duration_since(Instant::now()));
            crossbeam_channel::select! {
                recv(ends.done) -> done => match done {
                    Ok(done) => {
                        let slot = done.seq as usize % self.ring.len();
                        debug_assert!(self.ring[slot].is_none(), "ring slot reused before decided");
                        self.ring[slot] = Some(done);
                        self.drain(&ends);
                    }
                    Err(_) => break,
                },
                recv(requests) -> request => {
                    if let Ok(request) = request {
                        self.handle(request);
                    }
                },
                // A failed thread may hold the next frame in sequence: waiting for it would
                // hang. Stop deciding; the failure stays queued for `pipeline::run`.
                recv(failures) -> failed => {
                    failure = failed.ok();
                    break;
                }
                default(wait) => {},
            }
            self.follow_source();
            if let (Some(due), Some(interval)) = (status_due, interval)
                && Instant::now() >= due
            {
                self.emit_status();
                status_due = Some(due + interval);
            }
        }
        if interval.is_some() {
            self.emit_status();
        }
        // Snapshots first: one may still go out through the MQTT sink.
        if let Some(s) = &mut self.out.snapshots {
            s.finish(FLUSH_BUDGET);
        }
        for sink in &mut self.out.sinks {
            sink.flush(FLUSH_BUDGET);
        }
        self.counters.dropped_source = self.source.dropped.load(Ordering::Relaxed);
        let busy = match (self.first_decision_at, self.last_decision) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        };
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok(RunSummary {
            counters: self.counters,
            stages: self.stages,
            busy,
            first_decision: self.first_decision,
            decider: self.out.decider,
            next_seq: self.next_seq,
        })
    }

    /// When the source is lost, switch every label off (events to every sink, so label lines
    /// go to their inactive level) once the frames captured before are decided, and decide
    /// afresh from the frames that come after: a lost camera means the scene is unknown, not
    /// unchanged. Checked at least every 200 ms (the loop's tick) and after each frame.
    ///
    /// A frame captured just before the loss may be numbered only after this loop saw the loss
    /// (it sat in the capture slot): it comes after the forgetting and is dropped as late
    /// ([`Self::is_late`]), or it would switch a label back on for a camera that is gone.
    fn follow_source(&mut self) {
        let health = &self.out.health;
        // Acquire: pairs with `Health::lose_source`, so `source_lost_at_ms`, read once the
        // labels are forgotten, is this loss's time.
        let lost = health.source_lost.load(Ordering::Acquire);
        if lost && !self.lost {
            self.lost = true;
            self.forget_at = Some(self.source.next_seq.load(Ordering::Relaxed));
        } else if !lost {
            self.lost = false;
        }
        if self.forget_at.is_some_and(|at| self.next_seq >= at) {
            self.forget_at = None;
            self.late_until_ms = Some(self.out.health.source_lost_at_ms.load(Ordering::Relaxed));
            self.events.clear();
            let t_ms = self.started.elapsed().as_millis() as u64;
            // The events belong to the last frame decided: nothing newer was seen.
            let seq = self.next_seq.saturating_sub(1);
            self.out.decider.forget(seq, t_ms, &mut self.events);
            if !self.events.is_empty() {
                log::warn!("source lost: {} label(s) switched off until frames return", self.events.len());
            }
            self.write_events();
        }
    }

    /// Write `self.events` to every sink.
    fn write_events(&mut self) {
        let out = &mut self.out;
        for e in &self.events {
            // A label switching on: its frame is saved (off the decide thread) under this name.
            let snapshot = match &mut out.snapshots {
                Some(s) if e.on && s.saves_switch_ons() => Some(s.switched_on(e.seq, e.t_ms, e.label)),
                _ => None,
            };
            let line = EventLine {
                seq: e.seq,
                t_ms: e.t_ms,
                label: &out.decider.labels()[e.label],
                label_index: e.label,
                on: e.on,
                score: e.score,
                snapshot,
            };
            for sink in out.sinks.iter_mut() {
                sink.event(&line);
            }
        }
    }

    /// Decide every result that is next in sequence.
    fn drain(&mut self, ends: &DecideEnds) {
        loop {
            // A loss applies between the last frame captured before it and the first after.
            self.follow_source();
            let slot = self.next_seq as usize % self.ring.len();
            let Some(mut done) = self.ring[slot].take() else { return };
            self.next_seq += 1;
            match done.result {
                Ok(()) if self.is_late(&done) => self.counters.dropped_late += 1,
                Ok(()) => {
                    self.decide(&mut done);
                    self.out.health.engine_failing.store(false, Ordering::Relaxed);
                }
                Err(Dropped::Corrupt) => self.counters.dropped_corrupt += 1,
                Err(Dropped::Engine) => {
                    self.counters.dropped_engine += 1;
                    self.out.health.engine_failing.store(true, Ordering::Relaxed);
                }
                Err(Dropped::Stopping) => {}
            }
            let _ = ends.free_scores.send(done.scores);
        }
    }

    /// Whether `done` was captured before a loss whose labels were already switched off.
    fn is_late(&self, done: &Done) -> bool {
        self.late_until_ms.is_some_and(|t| done.t_ms <= t)
    }

    /// Decide one scored frame and write its events.
    fn decide(&mut self, done: &mut Done) {
        let out = &mut self.out;
        let t0 = Instant::now();
        self.events.clear();
        out.decider.update(done.seq, done.t_ms, &done.scores, &mut self.events);
        let t1 = Instant::now();
        self.write_events();
        let out = &mut self.out;
        if let Some(s) = out.snapshots.as_mut() {
            s.decided(done.seq, done.t_ms);
        }
        if let Some(c) = out.control.as_mut() {
            c.decided(done.seq, &out.decider);
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
        out.health.frames.store(self.counters.decided, Ordering::Relaxed);
    }

    /// The status line as of now; `fps` over the time since the last status line, or over the
    /// time its frames really took when that is longer: the final line of a run comes a moment
    /// after the previous one, and one frame in those few milliseconds is not 170 frames/s.
    fn status_line<'l>(&mut self, labels_on: &'l [&'l str]) -> StatusLine<'l> {
        self.counters.dropped_source = self.source.dropped.load(Ordering::Relaxed);
        let since = &self.at_status;
        let frames_took = match (since.last_decision, self.last_decision) {
            (Some(before), Some(last)) => last - before,
            _ => Duration::ZERO,
        };
        let covered = since.at.elapsed().max(frames_took).as_secs_f64().max(1e-9);
        let fps = (self.counters.decided - since.decided) as f64 / covered;
        // Rounded: a status line is for people and dashboards, not for timing analysis.
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        let health = &self.out.health;
        let board = self.board.read();
        StatusLine {
            uptime_s: round(self.started.elapsed().as_secs_f64(), 1),
            frames: self.counters.decided,
            fps: round(fps, 2),
            infer_ms_p50: round(self.latencies.quantile(0.5), 2),
            infer_ms_p99: round(self.latencies.quantile(0.99), 2),
            dropped: self.counters.dropped(),
            source: if health.source_lost.load(Ordering::Relaxed) { "lost" } else { "ok" },
            outages: health.source_outages.load(Ordering::Relaxed),
            labels_on,
            soc_temp_c: board.soc_temp_c,
            throttled: board.throttled,
        }
    }

    fn emit_status(&mut self) {
        let labels = Arc::clone(self.out.decider.labels());
        let labels_on: Vec<&str> = self.out.decider.on_labels().map(|i| labels[i].as_str()).collect();
        let status = self.status_line(&labels_on);
        self.at_status =
            AtStatus { decided: self.counters.decided, at: Instant::now(), last_decision: self.last_decision };
        for sink in self.out.sinks.iter_mut() {
            sink.status(&status);
        }
    }

    /// Run one command between two frames.
    fn handle(&mut self, request: Request) {
        let labels = Arc::clone(self.out.decider.labels());
        let labels_on: Vec<&str> = self.out.decider.on_labels().map(|i| labels[i].as_str()).collect();
        let status = self.status_line(&labels_on);
        let view = RunView { status: &status, next_seq: self.next_seq };
        if let Some(c) = self.out.control.as_mut() {
            c.handle(request, &mut self.out.decider, &view);
        }
    }
}
