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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Deserialize;

use super::Sink;
use crate::protocol::{EventLine, StatusLine};
use crate::stats::Health;

/// Heartbeat half-period while frames flow.
pub const HEARTBEAT_TOGGLE: Duration = Duration::from_millis(500);
/// No new frame for this long and the heartbeat stops (held inactive).
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(2);
/// A failed line is re-requested this often.
const RETRY: Duration = Duration::from_secs(1);
/// The sink thread's timing resolution (pulse lengths are accurate to this).
const TICK: Duration = Duration::from_millis(5);

/// Something that drives one output line to a physical level.
pub trait Pin: Send {
    /// Drive the line high (`true`) or low.
    fn set(&mut self, high: bool) -> Result<(), String>;
}

impl<P: embedded_hal::digital::OutputPin + Send> Pin for P {
    fn set(&mut self, high: bool) -> Result<(), String> {
        let r = if high { self.set_high() } else { self.set_low() };
        r.map_err(|e| format!("{e:?}"))
    }
}

/// A line by offset on its chip, or by name (e.g. `GPIO17`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LineRef {
    /// Offset on the chip.
    Offset(u32),
    /// Line name as the chip reports it.
    Name(String),
}

impl std::fmt::Display for LineRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineRef::Offset(n) => write!(f, "line {n}"),
            LineRef::Name(n) => write!(f, "line `{n}`"),
        }
    }
}

/// Where a line is: chip (path, name or label) and line (offset or name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpioLineSpec {
    /// `/dev/gpiochip0`, `gpiochip0` or a chip label such as `pinctrl-rp1`.
    pub chip: String,
    /// Offset or name.
    pub line: LineRef,
    /// The line is active when low.
    pub active_low: bool,
}

impl GpioLineSpec {
    /// Find the chip's device path.
    pub fn chip_path(&self) -> Result<PathBuf, String> {
        let direct =
            if self.chip.starts_with('/') { PathBuf::from(&self.chip) } else { Path::new("/dev").join(&self.chip) };
        if direct.exists() {
            return Ok(direct);
        }
        let chips = gpiocdev::chip::chips().unwrap_or_default();
        let mut seen = Vec::new();
        for path in chips {
            if let Ok(info) = gpiocdev::Chip::from_path(&path).and_then(|c| c.info()) {
                if info.label == self.chip {
                    return Ok(path);
                }
                seen.push(format!("{} ({})", info.name, info.label));
            }
        }
        Err(format!(
            "no GPIO chip `{}`: expected a path, a name (gpiochip0) or a label (pinctrl-rp1); chips here: {}",
            self.chip,
            if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
        ))
    }

    /// Request the line as an output at its inactive level, for `consumer`.
    pub fn request(&self, consumer: &str) -> Result<Box<dyn Pin>, String> {
        let path = self.chip_path()?;
        let chip = gpiocdev::Chip::from_path(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let offset = match &self.line {
            LineRef::Offset(n) => {
                let lines = chip.info().map_err(|e| format!("{}: {e}", path.display()))?.num_lines;
                if *n >= lines {
                    return Err(format!("{}: no line {n} (the chip has {lines})", path.display()));
                }
                *n
            }
            LineRef::Name(name) => {
                chip.find_line_info(name).ok_or_else(|| format!("{}: no line named `{name}`", path.display()))?.offset
            }
        };
        let inactive = if self.active_low { gpiocdev::line::Value::Active } else { gpiocdev::line::Value::Inactive };
        let request = gpiocdev::Request::builder()
            .on_chip(&path)
            .with_consumer(consumer)
            .with_line(offset)
            .as_output(inactive)
            .request()
            .map_err(|e| format!("{} line {offset}: cannot request: {e}", path.display()))?;
        let pin = gpiocdev_embedded_hal::OutputPin::try_from(request).map_err(|e| format!("{e}"))?;
        Ok(Box::new(pin))
    }

    /// `gpiochip0 line 17`, for logs.
    pub fn describe(&self) -> String {
        format!("{} {}{}", self.chip, self.line, if self.active_low { " (active low)" } else { "" })
    }
}

/// Re-requests a line after a failure.
pub type Reopen = Box<dyn FnMut() -> Result<Box<dyn Pin>, String> + Send>;

/// One output line and the state vigil wants on it.
pub struct OutputLine {
    name: String,
    active_low: bool,
    pin: Option<Box<dyn Pin>>,
    reopen: Option<Reopen>,
    active: bool,
    retry_at: Option<Instant>,
}

impl OutputLine {
    /// A line driven through `pin`; `reopen` re-requests it after a failure (none: retry the same pin).
    pub fn new(name: impl Into<String>, pin: Box<dyn Pin>, active_low: bool, reopen: Option<Reopen>) -> OutputLine {
        OutputLine { name: name.into(), active_low, pin: Some(pin), reopen, active: false, retry_at: None }
    }

    /// Want the line active (`true`) or inactive, and drive it now if it is up.
    fn drive(&mut self, active: bool) {
        self.active = active;
        self.apply();
    }

    fn apply(&mut self) {
        let Some(pin) = self.pin.as_mut() else { return };
        if let Err(e) = pin.set(self.active != self.active_low) {
            if self.retry_at.is_none() {
                log::warn!("gpio {}: {e}; retrying every {RETRY:?}", self.name);
            }
            if self.reopen.is_some() {
                self.pin = None; // release it before re-requesting
            }
            self.retry_at = Some(Instant::now() + RETRY);
        } else if self.retry_at.take().is_some() {
            log::info!("gpio {}: working again", self.name);
        }
    }

    /// Retry a failed line when due.
    fn retry(&mut self, now: Instant) {
        if self.retry_at.is_none_or(|t| now < t) {
            return;
        }
        if self.pin.is_none() {
            match self.reopen.as_mut().map(|r| r()) {
                Some(Ok(pin)) => self.pin = Some(pin),
                Some(Err(_)) | None => {
                    self.retry_at = Some(now + RETRY);
                    return;
                }
            }
        }
        self.apply();
    }
}

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
    /// Drive `outputs`, `heartbeat` and `fault` from the decide stage's events and `health`.
    pub fn start(
        outputs: Vec<LabelOutput>,
        heartbeat: Option<OutputLine>,
        fault: Option<OutputLine>,
        health: Arc<Health>,
    ) -> GpioSink {
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
