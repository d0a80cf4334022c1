//! The pipeline's producer threads: the source and the workers (each decodes,
//! prepares and infers its own frames). Each is one loop over its channel ends ([`super::pools`]); each
//! ends when its input channel closes or its output's receiver is gone, so the
//! whole pipeline winds down from the source's end (or a stop) without a
//! special shutdown message.
//!
//! Each thread's loop runs under [`guarded`]: a panic (a bug met on some input, in
//! a decoder or in tract) is caught, reported as [`ThreadFailed`] to the decide
//! loop, and raises the stop flag, so the run ends with that error instead of
//! hanging on a buffer the dead thread took with it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use super::pools::{SourceEnds, WorkerEnds};
use crate::bundle::InputSpec;
use crate::engine::{InferenceWorker, InputTensor};
use crate::preprocess::Preprocessor;
use crate::snapshots::FrameRing;
use crate::source::{FrameSource, Next};
use crate::stats::StageTimes;
use crate::stop::StopFlag;
use crate::util::{LogLimiter, panic_message};
use crossbeam_channel::Sender;

/// Why a frame produced no scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// It could not be decoded, or had the wrong size.
    Corrupt,
    /// Inference failed on it.
    Engine,
    /// Not processed because a stop was asked for; not counted as a drop.
    Stopping,
}

/// One frame's result, travelling from a worker to the decide thread.
pub struct Done {
    /// Frame sequence number.
    pub seq: u64,
    /// Capture time.
    pub t_ms: u64,
    /// One score per label (valid when `result` is `Ok`).
    pub scores: Vec<f32>,
    /// Whether the frame was scored.
    pub result: Result<(), Dropped>,
    /// Per-stage times.
    pub times: StageTimes,
}

/// How often a thread may log the same kind of per-frame failure.
const LOG_PERIOD: Duration = Duration::from_secs(5);

/// What the source thread counts, shared with the decide loop.
#[derive(Debug, Default)]
pub struct SourceCounts {
    /// Frames the source lost (unreadable, stale).
    pub dropped: AtomicU64,
    /// The sequence number the next frame will get: every frame below it was captured.
    pub next_seq: AtomicU64,
}

/// A pipeline thread that died, and why: the run ends with this error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline's `{thread}` thread failed: {why}")]
pub struct ThreadFailed {
    /// The thread's name (`source`, `infer-N`, `decide`).
    pub thread: String,
    /// What it died of (the panic's message, or the source's report).
    pub why: String,
}

/// Report `thread`'s failure to the decide loop and stop the run.
fn report(thread: &str, why: String, failed: &Sender<ThreadFailed>, stop: &StopFlag) {
    log::error!("pipeline: the `{thread}` thread failed: {why}; stopping the run");
    // Unbounded, and each thread reports at most once: never blocks.
    let _ = failed.send(ThreadFailed { thread: thread.into(), why });
    stop.stop();
}

/// Run `body`, the loop of pipeline thread `thread`; a panic in it is caught and
/// [`report`]ed. (The buffers the thread held are lost with it, which is why a
/// failure stops the run rather than carrying on with smaller pools.)
pub fn guarded(thread: &str, failed: &Sender<ThreadFailed>, stop: &StopFlag, body: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(body)) {
        report(thread, panic_message(&*payload), failed, stop);
    }
}

/// The source thread: fill free frames from `source`, number them from `first_seq`, send them on.
/// Frames the source lost are counted in `dropped`.
pub fn spawn_source<'s>(
    scope: &'s Scope<'s, '_>,
    source: &'s mut dyn FrameSource,
    ends: SourceEnds,
    stop: StopFlag,
    first_seq: u64,
    counts: Arc<SourceCounts>,
    failed: Sender<ThreadFailed>,
) -> ScopedJoinHandle<'s, ()> {
    std::thread::Builder::new()
        .name("source".into())
        .spawn_scoped(scope, move || {
            guarded("source", &failed, &stop, || source_loop(source, first_seq, &ends, &stop, &counts, &failed))
        })
        .expect("spawn source thread")
}

fn source_loop(
    source: &mut dyn FrameSource,
    first_seq: u64,
    ends: &SourceEnds,
    stop: &StopFlag,
    counts: &SourceCounts,
    failed: &Sender<ThreadFailed>,
) {
    let mut seq = first_seq;
    counts.next_seq.store(seq, Ordering::Relaxed);
    while let Ok(mut frame) = ends.free_frames.recv() {
        loop {
            match source.next_frame(&mut frame, stop) {
                Next::Frame => break,
                Next::Dropped => {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Next::End | Next::Stopped => return,
                Next::Failed(why) => return report("source", why, failed, stop),
            }
        }
        frame.seq = seq;
        seq += 1;
        counts.next_seq.store(seq, Ordering::Relaxed);
        if ends.frames.send(frame).is_err() {
            return;
        }
    }
}

/// One inference worker thread per `workers` entry, each with its own preprocessor and
/// input tensor: take a score buffer, then a frame; decode and prepare it into the tensor,
/// hand the frame back (keeping its pixels in `snapshots`), run the model, send the result on.
/// Preprocessing in the workers is what lets it scale with them: N workers decode N frames at
/// once, where one `prepare` thread capped a run near its decode rate.
pub fn spawn_workers<'s>(
    scope: &'s Scope<'s, '_>,
    input: &'s InputSpec,
    workers: Vec<(Box<dyn InferenceWorker>, InputTensor)>,
    ends: WorkerEnds,
    snapshots: Option<Arc<FrameRing>>,
    stop: StopFlag,
    failed: Sender<ThreadFailed>,
) {
    for (i, (worker, tensor)) in workers.into_iter().enumerate() {
        let (ends, stop, failed, snapshots) = (ends.clone(), stop.clone(), failed.clone(), snapshots.clone());
        let name = format!("infer-{i}");
        std::thread::Builder::new()
            .name(name.clone())
            .spawn_scoped(scope, move || {
                let mut pre = Preprocessor::new(input);
                guarded(&name, &failed, &stop, || {
                    worker_loop(worker, tensor, &mut pre, &ends, snapshots.as_deref(), &stop)
                })
            })
            .expect("spawn inference worker");
    }
}

fn worker_loop(
    mut worker: Box<dyn InferenceWorker>,
    mut input: InputTensor,
    pre: &mut Preprocessor,
    ends: &WorkerEnds,
    snapshots: Option<&FrameRing>,
    stop: &StopFlag,
) {
    let mut corrupt_log = LogLimiter::new(LOG_PERIOD);
    let mut engine_log = LogLimiter::new(LOG_PERIOD);
    // Take a score buffer before a frame: at most the score pool's size of results
    // can then be undecided, which is what bounds the decide thread's reorder ring.
    while let Ok(mut scores) = ends.free_scores.recv() {
        let Ok(mut frame) = ends.frames.recv() else { return };
        let (seq, t_ms) = (frame.seq, frame.t_ms);
        let mut times = StageTimes::default();
        let prepared = if stop.is_stopped() {
            Err(Dropped::Stopping)
        } else {
            match pre.run(&frame, input.as_mut_slice()) {
                Ok(pt) => {
                    (times.decode, times.prepare) = (pt.decode, pt.prepare);
                    if let Some(ring) = snapshots {
                        // Its pixels stay for a snapshot; the frame goes back with the ring's older buffer.
                        ring.keep(&mut frame);
                    }
                    Ok(())
                }
                Err(e) => {
                    corrupt_log.warn(format_args!("frame {seq} ({}) dropped: {e}", frame.origin_display()));
                    Err(Dropped::Corrupt)
                }
            }
        };
        // The frame's pixels are in the tensor: the source may refill it while the model runs.
        let _ = ends.free_frames.send(frame);
        let result = prepared.and_then(|()| {
            if stop.is_stopped() {
                return Err(Dropped::Stopping);
            }
            let t0 = Instant::now();
            let r = worker.infer(&mut input, &mut scores);
            times.infer = t0.elapsed();
            r.map_err(|e| {
                engine_log.warn(format_args!("frame {seq} dropped: {e}"));
                Dropped::Engine
            })
        });
        if ends.done.send(Done { seq, t_ms, scores, result, times }).is_err() {
            return;
        }
    }
}
