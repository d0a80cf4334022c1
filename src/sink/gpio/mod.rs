//! Decisions on GPIO lines: one line per label (level or pulse), a heartbeat
//! line that toggles while frames flow, and a fault line asserted while the
//! camera is lost or the engine fails.
//!
//! Lines are driven through embedded-hal's `OutputPin`, so any HAL can stand
//! behind them; on Linux, vigil requests them from the GPIO character device
//! with `gpiocdev` (the kernel's v2 uAPI: see docs/gpio.md for why not the
//! deprecated v1 API of `gpio-cdev`/`linux-embedded-hal`, nor sysfs).
//!
//! Active-low is applied here, not by the kernel, so that what an `OutputPin`
//! sees is the physical level. All lines go to their inactive level when the
//! sink starts and when it stops. Timing (pulses, heartbeat) and retries run
//! on the sink's own thread, so a slow or failing line never holds up the
//! pipeline; a line that fails is logged once and re-requested every second.

pub mod config;
pub mod line;

pub use config::{GpioLines, GpioSection};
pub use line::{GpioLineSpec, LineRef, OutputLine, Pin, Reopen};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::Sink;
use crate::protocol::{EventLine, StatusLine};
use crate::stats::Health;

/// Heartbeat half-period while frames flow.
pub const HEARTBEAT_TOGGLE: Duration = Duration::from_millis(500);
/// No new frame for this long and the heartbeat stops (held inactive).
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(2);
/// The sink thread's timing resolution (pulse lengths are accurate to this).
const TICK: Duration = Duration::from_millis(5);

/// How a label's line follows the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// The line is active exactly while the label is on.
    Level,
    /// A pulse of this length each time the label switches on.
    Pulse(Duration),
}

/// A label's line.
pub struct LabelOutput {
    /// Index of the label in the model's labels.
    pub label: usize,
    /// Level or pulse.
    pub mode: OutputMode,
    /// The line.
    pub line: OutputLine,
}

enum Msg {
    Event { label: usize, on: bool },
}

/// The GPIO sink: hands events to its thread.
pub struct GpioSink {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl GpioSink {
    /// Drive `lines` from the decide stage's events (label lines) and `health`
    /// (heartbeat and fault).
    pub fn start(lines: GpioLines, health: Arc<Health>) -> GpioSink {
        let GpioLines { outputs, heartbeat, fault } = lines;
        let (tx, rx) = crossbeam_channel::bounded(256);
        let thread = std::thread::Builder::new()
            .name("gpio".into())
            .spawn(move || Driver { outputs, heartbeat, fault, health, pulse_until: Vec::new() }.run(&rx))
            .expect("spawn gpio thread");
        GpioSink { tx: Some(tx), thread: Some(thread) }
    }
}

impl Sink for GpioSink {
    fn event(&mut self, event: &EventLine<'_>) {
        if let Some(tx) = &self.tx
            && tx.try_send(Msg::Event { label: event.label_index, on: event.on }).is_err()
        {
            log::warn!("gpio: event queue full; {} {} not signalled", event.label, if event.on { "on" } else { "off" });
        }
    }

    fn status(&mut self, _status: &StatusLine<'_>) {}

    fn labels_already_on(&mut self, labels: &[usize]) {
        for &label in labels {
            if let Some(tx) = &self.tx
                && tx.try_send(Msg::Event { label, on: true }).is_err()
            {
                log::warn!("gpio: event queue full; label {label} not driven on after the reload");
            }
        }
    }

    fn flush(&mut self, _budget: Duration) {
        self.tx = None; // the thread drives every line inactive and ends
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GpioSink {
    fn drop(&mut self) {
        self.flush(Duration::ZERO);
    }
}

struct Driver {
    outputs: Vec<LabelOutput>,
    heartbeat: Option<OutputLine>,
    fault: Option<OutputLine>,
    health: Arc<Health>,
    /// Per output: when its running pulse ends.
    pulse_until: Vec<Option<Instant>>,
}

impl Driver {
    fn lines(&mut self) -> impl Iterator<Item = &mut OutputLine> {
        self.outputs.iter_mut().map(|o| &mut o.line).chain(self.heartbeat.as_mut()).chain(self.fault.as_mut())
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        self.pulse_until = vec![None; self.outputs.len()];
        self.lines().for_each(|l| l.drive(false));
        let (mut frames, mut frames_changed) = (self.health.frames.load(Ordering::Relaxed), Instant::now());
        let mut next_toggle = Instant::now() + HEARTBEAT_TOGGLE;
        let mut beat = false;
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Msg::Event { label, on }) => {
                    let now = Instant::now();
                    for (i, o) in self.outputs.iter_mut().enumerate().filter(|(_, o)| o.label == label) {
                        match o.mode {
                            OutputMode::Level => o.line.drive(on),
                            OutputMode::Pulse(len) if on => {
                                o.line.drive(true);
                                self.pulse_until[i] = Some(now + len);
                            }
                            OutputMode::Pulse(_) => {}
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            for (o, until) in self.outputs.iter_mut().zip(&mut self.pulse_until) {
                if until.is_some_and(|t| now >= t) {
                    o.line.drive(false);
                    *until = None;
                }
            }
            let f = self.health.frames.load(Ordering::Relaxed);
            if f != frames {
                (frames, frames_changed) = (f, now);
            }
            if let Some(hb) = self.heartbeat.as_mut() {
                if now - frames_changed > HEARTBEAT_STALE {
                    if beat {
                        beat = false;
                        hb.drive(false);
                    }
                } else if now >= next_toggle {
                    beat = !beat;
                    hb.drive(beat);
                    next_toggle = now + HEARTBEAT_TOGGLE;
                }
            }
            let fault = self.health.fault();
            if let Some(fl) = self.fault.as_mut()
                && fl.active != fault
            {
                fl.drive(fault);
            }
            self.lines().for_each(|l| l.retry(now));
        }
        self.lines().for_each(|l| l.drive(false));
    }
}
