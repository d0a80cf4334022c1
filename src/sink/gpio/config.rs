//! `[gpio]` in a run config: one line per label, a heartbeat and a fault line;
//! checked against the model's labels and requested from the kernel at start,
//! so a wrong chip, line or label is refused before anything runs.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::line::{GpioLineSpec, LineRef, OutputLine, Reopen};
use super::{LabelOutput, OutputMode};
use crate::tomlfile::{SettingsError, TomlFile};

/// Where a GPIO line is, in the config: chip and line, as in [`GpioLineSpec`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioLineConfig {
    /// `/dev/gpiochip0`, `gpiochip0`, or a chip label such as `pinctrl-rp1`.
    pub chip: String,
    /// Line offset (`17`) or name (`"GPIO17"`).
    pub line: LineRef,
    /// The line is active when low.
    #[serde(default)]
    pub active_low: bool,
}

/// How a label's line follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GpioMode {
    /// Active while the label is on.
    #[default]
    Level,
    /// A pulse of `pulse_ms` each time the label switches on.
    Pulse,
}

/// `[[gpio.outputs]]`: one label's line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioOutputConfig {
    /// The label (as in the model's labels).
    pub label: Spanned<String>,
    /// Chip path, name or label.
    pub chip: String,
    /// Line offset or name.
    pub line: LineRef,
    /// The line is active when low.
    #[serde(default)]
    pub active_low: bool,
    /// `level` (default) or `pulse`.
    #[serde(default)]
    pub mode: GpioMode,
    /// Pulse length in ms (mode `pulse`; default 200).
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: Spanned<u64>,
}

fn default_pulse_ms() -> Spanned<u64> {
    Spanned::new(0..0, 200)
}

/// Longest pulse a label line may be asked for.
pub const MAX_PULSE_MS: u64 = 60_000;

/// `[gpio]`: label lines, heartbeat and fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioSection {
    /// Consumer name shown by `gpioinfo` (default `vigil`).
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Toggles every 0.5 s while frames flow.
    pub heartbeat: Option<GpioLineConfig>,
    /// Active while the camera is lost or inference fails.
    pub fault: Option<GpioLineConfig>,
    /// One line per label.
    #[serde(default)]
    pub outputs: Vec<GpioOutputConfig>,
}

fn default_consumer() -> String {
    "vigil".into()
}

/// The requested lines of a `[gpio]` section, ready for [`super::GpioSink::start`].
pub struct GpioLines {
    /// One per `[[gpio.outputs]]`.
    pub outputs: Vec<LabelOutput>,
    /// The heartbeat line.
    pub heartbeat: Option<OutputLine>,
    /// The fault line.
    pub fault: Option<OutputLine>,
}

impl GpioSection {
    /// Check the values that need no model (pulse lengths).
    pub fn check(&self, file: &TomlFile) -> Result<(), SettingsError> {
        for (i, o) in self.outputs.iter().enumerate() {
            let ms = *o.pulse_ms.get_ref();
            if o.mode == GpioMode::Pulse && (ms == 0 || ms > MAX_PULSE_MS) {
                return Err(file.error_at(
                    o.pulse_ms.span(),
                    format!("gpio.outputs[{i}].pulse_ms"),
                    format!("{ms}: expected 1 to {MAX_PULSE_MS} ms"),
                ));
            }
        }
        Ok(())
    }

    /// Check every output's label against the model's `labels` and request every
    /// line; a failure names the config key and the line.
    pub fn request(&self, file: &TomlFile, labels: &[String]) -> Result<GpioLines, SettingsError> {
        let mut outputs = Vec::new();
        for (i, o) in self.outputs.iter().enumerate() {
            let key = format!("gpio.outputs[{i}]");
            let label = labels.iter().position(|l| l == o.label.get_ref()).ok_or_else(|| {
                file.error_at(
                    o.label.span(),
                    format!("{key}.label"),
                    format!("unknown label `{}`: expected one of the model's labels", o.label.get_ref()),
                )
            })?;
            let mode = match o.mode {
                GpioMode::Level => OutputMode::Level,
                GpioMode::Pulse => OutputMode::Pulse(Duration::from_millis(*o.pulse_ms.get_ref())),
            };
            let spec = GpioLineSpec { chip: o.chip.clone(), line: o.line.clone(), active_low: o.active_low };
            outputs.push(LabelOutput { label, mode, line: self.request_line(file, &key, spec)? });
        }
        let single = |key: &str, c: &Option<GpioLineConfig>| -> Result<Option<OutputLine>, SettingsError> {
            c.as_ref()
                .map(|c| {
                    let spec = GpioLineSpec { chip: c.chip.clone(), line: c.line.clone(), active_low: c.active_low };
                    self.request_line(file, key, spec)
                })
                .transpose()
        };
        let heartbeat = single("gpio.heartbeat", &self.heartbeat)?;
        let fault = single("gpio.fault", &self.fault)?;
        Ok(GpioLines { outputs, heartbeat, fault })
    }

    /// Request one line; on failure, an error naming the config key.
    fn request_line(&self, file: &TomlFile, key: &str, spec: GpioLineSpec) -> Result<OutputLine, SettingsError> {
        let pin = spec
            .request(&self.consumer)
            .map_err(|e| file.error(Some(key.to_string()), format!("{}: {e}", spec.describe())))?;
        let consumer = self.consumer.clone();
        let again = spec.clone();
        let reopen: Reopen = Box::new(move || again.request(&consumer));
        Ok(OutputLine::new(format!("{key} ({})", spec.describe()), pin, spec.active_low, Some(reopen)))
    }
}
