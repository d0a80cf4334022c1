//! Live sources (cameras, pipes): capture on its own thread, latest frame wins,
//! and a watchdog that notices when frames stop and brings the source back.
//!
//! ```text
//! capture thread: Capture::read ──▶ back frame ──swap──▶ slot ──swap──▶ pipeline's frame (next_frame)
//! ```
//! The capture thread always fills its own `back` frame, then swaps it into a
//! one-frame slot. If the slot still holds a frame the pipeline has not taken,
//! that frame is stale: it is overwritten and counted, never queued. The
//! pipeline's `next_frame` swaps its pooled frame with the slot's, so frame
//! buffers circulate (capture ⇄ slot ⇄ pipeline pool) and a warm capture
//! allocates nothing.
//!
//! Watchdog: no good frame for `watchdog` (default 2 s), or a read that fails
//! (device unplugged, FIFO writer gone), marks the source *lost*: one warning,
//! [`Health::source_lost`] raised (status line, fault GPIO), an outage counted.
//! A source that [`Capture::reopen_on_stall`] is then closed and reopened with
//! capped exponential backoff (log lines per state change, not per attempt);
//! the first good frame clears the state and says how long the outage lasted.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{FrameSource, Next};
use crate::frame::Frame;
use crate::stats::Health;
use crate::stop::StopFlag;
use crate::util::{Backoff, LogLimiter, panic_message};

/// How long one [`Capture::read`] may wait, so the capture thread sees a stop promptly.
pub const READ_SLICE: Duration = Duration::from_millis(100);

/// What one [`Capture::read`] produced.
#[derive(Debug)]
pub enum Read {
    /// `frame` holds a new frame.
    Frame,
    /// Nothing arrived within the timeout.
    Timeout,
    /// A frame arrived but is unusable (truncated, wrong size, flagged by the driver);
    /// the stream goes on.
    Bad(String),
    /// The stream ended for good (a pipe or file reached its end).
    End,
    /// The device or stream failed (unplugged, writer gone): close and reopen.
    Failed(String),
}

/// Why a capture could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not there now (no device node, busy, no writer): retried with backoff.
    #[error("{0}")]
    Unavailable(String),
    /// There, but it cannot do what the config asks (format, size): not retried.
    #[error("{0}")]
    Unsupported(String),
}

/// A device or stream that yields frames: a V4L2 camera, a pipe.
pub trait Capture: Send {
    /// Open (or reopen) the device or stream.
    fn open(&mut self) -> Result<(), OpenError>;
    /// Wait at most `timeout` for the next frame and fill `frame` with it.
    fn read(&mut self, frame: &mut Frame, timeout: Duration) -> Read;
    /// Close the device or stream (reads fail until the next `open`).
    fn close(&mut self);
    /// Whether a stall (frames stop, the device still open) is cured by closing and
    /// reopening. True for cameras; false for pipes, whose writer would get EPIPE.
    fn reopen_on_stall(&self) -> bool;
    /// A one-line description for logs and `vigil check`.
    fn describe(&self) -> String;
}

/// The one-frame hand-over between the capture thread and the pipeline.
struct Slot {
    frame: Frame,
    /// `frame` is new and not yet taken.
    fresh: bool,
    /// Frames dropped (stale or bad) not yet reported through `next_frame`.
    dropped: u64,
    ended: bool,
    /// The capture thread died (a panic, with its message): the source is done for.
    failed: Option<String>,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    quit: AtomicBool,
}

impl Shared {
    /// The slot, even if a thread panicked while holding it (its fields stay consistent:
    /// each is set in one store), so that a capture thread's death is reported, not repeated.
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A [`FrameSource`] over a [`Capture`] running on its own thread.
pub struct LiveSource {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    description: String,
}

impl LiveSource {
    /// Start capturing from `capture`. The first open happens here: a source that
    /// cannot do what is asked is refused; one that is merely absent is retried on
    /// the capture thread (reported lost until it appears).
    pub fn start(
        mut capture: Box<dyn Capture>,
        watchdog: Duration,
        health: Arc<Health>,
        started: Instant,
    ) -> Result<LiveSource, OpenError> {
        let opened = match capture.open() {
            Ok(()) => true,
            Err(e @ OpenError::Unsupported(_)) => return Err(e),
            Err(OpenError::Unavailable(why)) => {
                log::warn!("source {}: not available at start ({why}); retrying with backoff", capture.describe());
                health.lose_source(started.elapsed().as_millis() as u64);
                false
            }
        };
        let description = capture.describe();
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot { frame: Frame::empty(), fresh: false, dropped: 0, ended: false, failed: None }),
            ready: Condvar::new(),
            quit: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let mut watch = Watchdog::new(description.clone(), watchdog, Arc::clone(&health), opened, started);
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || {
                    let run = std::panic::catch_unwind(AssertUnwindSafe(|| watch.run(capture.as_mut(), &shared)));
                    if let Err(payload) = run {
                        // A bug met on some input: say so, raise the fault line, and end the
                        // run through `next_frame` rather than look like a camera that is fine.
                        let why = format!("the capture thread panicked: {}", panic_message(&*payload));
                        log::error!("source {}: {why}", watch.description);
                        health.source_lost.store(true, Ordering::Relaxed);
                        shared.slot().failed = Some(why);
                        shared.ready.notify_all();
                    }
                })
                .expect("spawn capture thread")
        };
        Ok(LiveSource { shared, thread: Some(thread), description })
    }
}

impl FrameSource for LiveSource {
    fn next_frame(&mut self, frame: &mut Frame, stop: &StopFlag) -> Next {
        let mut slot = self.shared.slot();
        loop {
            if stop.is_stopped() {
                return Next::Stopped;
            }
            if let Some(why) = &slot.failed {
                return Next::Failed(why.clone());
            }
            if slot.dropped > 0 {
                slot.dropped -= 1;
                return Next::Dropped;
            }
            if slot.fresh {
                std::mem::swap(frame, &mut slot.frame);
                slot.fresh = false;
                return Next::Frame;
            }
            if slot.ended {
                return Next::End;
            }
            slot = self
                .shared
                .ready
                .wait_timeout(slot, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The capture thread's state: open or not, lost or not, and when to try again.
struct Watchdog {
    description: String,
    timeout: Duration,
    health: Arc<Health>,
    open: bool,
    /// When the source was declared lost (None while frames flow).
    lost_since: Option<Instant>,
    last_frame: Instant,
    reopen: Backoff,
    started: Instant,
    bad_log: LogLimiter,
}

impl Watchdog {
    fn new(description: String, timeout: Duration, health: Arc<Health>, open: bool, started: Instant) -> Watchdog {
        let now = Instant::now();
        Watchdog {
            lost_since: (!open).then_some(now),
            description,
            timeout,
            health,
            open,
            last_frame: now,
            reopen: Backoff::default(),
            started,
            bad_log: LogLimiter::new(Duration::from_secs(5)),
        }
    }

    fn run(&mut self, capture: &mut dyn Capture, shared: &Shared) {
        let mut back = Frame::empty();
        while !shared.quit.load(Ordering::Relaxed) {
            if !self.open {
                let wait = self.reopen.wait();
                if !wait.is_zero() {
                    std::thread::sleep(wait.min(READ_SLICE));
                    continue;
                }
                match capture.open() {
                    Ok(()) => {
                        log::info!("source {}: reopened; waiting for frames", self.description);
                        self.open = true;
                        self.last_frame = Instant::now();
                    }
                    Err(e) => {
                        log::debug!("source {}: reopen failed: {e}", self.description);
                        self.reopen.failed();
                        continue;
                    }
                }
            }
            match capture.read(&mut back, READ_SLICE) {
                Read::Frame => {
                    back.t_ms = self.started.elapsed().as_millis() as u64;
                    self.frame_arrived();
                    let mut slot = shared.slot();
                    if slot.fresh {
                        slot.dropped += 1; // stale: the pipeline was busy; the newer frame wins
                    }
                    std::mem::swap(&mut back, &mut slot.frame);
                    slot.fresh = true;
                    drop(slot);
                    shared.ready.notify_all();
                }
                Read::Timeout => {
                    if self.last_frame.elapsed() >= self.timeout {
                        let why = format!("no frame for {:.1} s", self.last_frame.elapsed().as_secs_f64());
                        self.lose(&why);
                        if capture.reopen_on_stall() {
                            capture.close();
                            self.open = false;
                            self.reopen.failed();
                        } else {
                            // Keep waiting on the same stream; look again after another period.
                            self.last_frame = Instant::now();
                        }
                    }
                }
                Read::Bad(why) => {
                    self.bad_log.warn(format_args!("source {}: frame dropped: {why}", self.description));
                    shared.slot().dropped += 1;
                    shared.ready.notify_all();
                }
                Read::Failed(why) => {
                    self.lose(&why);
                    capture.close();
                    self.open = false;
                    self.reopen.failed();
                }
                Read::End => {
                    log::info!("source {}: end of stream", self.description);
                    shared.slot().ended = true;
                    shared.ready.notify_all();
                    return;
                }
            }
        }
        capture.close();
    }

    fn frame_arrived(&mut self) {
        self.last_frame = Instant::now();
        self.reopen.succeeded();
        if let Some(since) = self.lost_since.take() {
            log::warn!("source {}: frames again after {:.1} s lost", self.description, since.elapsed().as_secs_f64());
            self.health.source_lost.store(false, Ordering::Relaxed);
        }
    }

    /// Declare the source lost (once per outage).
    fn lose(&mut self, why: &str) {
        if self.lost_since.is_none() {
            log::warn!(
                "source {}: lost ({why}); {}",
                self.description,
                "reconnecting with backoff; detections resume when frames return"
            );
            self.lost_since = Some(Instant::now());
            self.health.lose_source(self.started.elapsed().as_millis() as u64);
        }
    }
}
