//! One GPIO output line: where it is (chip and line, by number or name), how it
//! is requested from the kernel's GPIO character device (v2 uAPI, `gpiocdev`),
//! and the state vigil wants on it, with retries when it fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// A failed line is re-requested this often.
pub const RETRY: Duration = Duration::from_secs(1);

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
    /// Whether the line is wanted active.
    pub(super) active: bool,
    retry_at: Option<Instant>,
}

impl OutputLine {
    /// A line driven through `pin`; `reopen` re-requests it after a failure (none: retry the same pin).
    pub fn new(name: impl Into<String>, pin: Box<dyn Pin>, active_low: bool, reopen: Option<Reopen>) -> OutputLine {
        OutputLine { name: name.into(), active_low, pin: Some(pin), reopen, active: false, retry_at: None }
    }

    /// Want the line active (`true`) or inactive, and drive it now if it is up.
    pub(super) fn drive(&mut self, active: bool) {
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
    pub(super) fn retry(&mut self, now: Instant) {
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
