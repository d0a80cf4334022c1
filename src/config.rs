//! The run configuration (`vigil run --config FILE`), read from TOML and
//! checked before anything starts. Paths in the file are relative to the file.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::bundle::Variant;
use crate::protocol::LineFormat;
use crate::thresholds::ThresholdsSpec;
use crate::tomlfile::{SettingsError, TomlFile};

/// Most inference workers a config may ask for.
pub const MAX_WORKERS: usize = 64;

/// `[model]`: which bundle to run and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Bundle directory.
    pub bundle: Spanned<String>,
    /// `fp32` (default) or `int8`.
    #[serde(default = "default_variant")]
    pub variant: Variant,
    /// Inference worker threads (default 1).
    #[serde(default = "default_workers")]
    pub workers: Spanned<usize>,
}

fn default_variant() -> Variant {
    Variant::Fp32
}

fn default_workers() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

/// Kinds of frame source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Image files: one file, a directory, or a glob.
    Files,
}

/// `[source]`: where frames come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The kind of source.
    pub kind: SourceKind,
    /// Files: a file, a directory or a glob pattern.
    pub path: Option<Spanned<String>>,
    /// Frames per second to replay at; 0 = as fast as the pipeline takes them.
    #[serde(default = "zero")]
    pub fps: Spanned<f64>,
    /// Files: start again after the last file.
    #[serde(default, rename = "loop")]
    pub looped: bool,
}

/// `[stdout]`: decisions on standard output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSection {
    /// Write to stdout at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `json` (default) or `text`.
    #[serde(default)]
    pub format: LineFormat,
}

impl Default for StdoutSection {
    fn default() -> Self {
        StdoutSection { enabled: true, format: LineFormat::Json }
    }
}

fn yes() -> bool {
    true
}

/// `[serial]`: decisions on a serial line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSection {
    /// Device path, e.g. `/dev/ttyAMA0`, `/dev/serial0`, `/dev/ttyUSB0`.
    pub device: Spanned<String>,
    /// Baud rate (default 115200).
    #[serde(default = "default_baud")]
    pub baud: Spanned<u32>,
    /// `text` (default: checksummed, compact) or `json`.
    #[serde(default = "text_format")]
    pub format: LineFormat,
}

fn default_baud() -> Spanned<u32> {
    Spanned::new(0..0, 115_200)
}

fn text_format() -> LineFormat {
    LineFormat::Text
}

/// `[status]`: the periodic status line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSection {
    /// Seconds between status lines; 0 turns them off (default 10).
    #[serde(default = "default_interval")]
    pub interval_s: Spanned<f64>,
}

impl Default for StatusSection {
    fn default() -> Self {
        StatusSection { interval_s: default_interval() }
    }
}

fn zero() -> Spanned<f64> {
    Spanned::new(0..0, 0.0)
}

fn default_interval() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    model: ModelSection,
    source: SourceSection,
    #[serde(default)]
    thresholds: ThresholdsSpec,
    #[serde(default)]
    stdout: StdoutSection,
    serial: Option<SerialSection>,
    #[serde(default)]
    status: StatusSection,
}

/// A parsed and checked run config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages pointing into it).
    pub file: TomlFile,
    /// Bundle directory, resolved against the config's folder.
    pub bundle_dir: PathBuf,
    /// `[model]`.
    pub model: ModelSection,
    /// `[source]`, with `path` resolved.
    pub source: SourceSection,
    /// Resolved source path (files).
    pub source_path: Option<PathBuf>,
    /// `[thresholds]`: overrides the bundle's.
    pub thresholds: ThresholdsSpec,
    /// `[stdout]`.
    pub stdout: StdoutSection,
    /// `[serial]`.
    pub serial: Option<SerialSection>,
    /// `[status]`.
    pub status: StatusSection,
}

impl Config {
    /// Read and check `path`. Thresholds are checked against the model's
    /// labels later, when the bundle is loaded ([`crate::thresholds::resolve`]).
    pub fn load(path: &std::path::Path) -> Result<Config, SettingsError> {
        let file = TomlFile::read(path)?;
        let c: ConfigFile = file.parse()?;
        let bundle_dir = file.resolve(c.model.bundle.get_ref());
        if !bundle_dir.is_dir() {
            return Err(file.error_at(
                c.model.bundle.span(),
                "model.bundle",
                format!("model bundle `{}` not found: expected a directory holding model.toml", bundle_dir.display()),
            ));
        }
        let workers = *c.model.workers.get_ref();
        if workers == 0 || workers > MAX_WORKERS {
            return Err(file.error_at(
                c.model.workers.span(),
                "model.workers",
                format!("{workers}: expected 1 to {MAX_WORKERS}"),
            ));
        }
        let fps = *c.source.fps.get_ref();
        if !fps.is_finite() || fps < 0.0 {
            return Err(file.error_at(
                c.source.fps.span(),
                "source.fps",
                format!("{fps}: expected 0 (as fast as possible) or a positive rate"),
            ));
        }
        let source_path = match c.source.kind {
            SourceKind::Files => {
                let Some(p) = &c.source.path else {
                    return Err(file.error(
                        Some("source.path".into()),
                        "missing: a files source needs `path` (a file, a directory or a glob)",
                    ));
                };
                let resolved = file.resolve(p.get_ref());
                if let Err(e) = crate::source::files::resolve_files(&resolved.to_string_lossy()) {
                    return Err(file.error_at(p.span(), "source.path", e.to_string()));
                }
                Some(resolved)
            }
        };
        let interval = *c.status.interval_s.get_ref();
        if !interval.is_finite() || interval < 0.0 {
            return Err(file.error_at(
                c.status.interval_s.span(),
                "status.interval_s",
                format!("{interval}: expected 0 (off) or a positive number of seconds"),
            ));
        }
        if let Some(s) = &c.serial {
            if s.device.get_ref().is_empty() {
                return Err(file.error_at(
                    s.device.span(),
                    "serial.device",
                    "empty: expected a device path such as /dev/ttyUSB0",
                ));
            }
            if *s.baud.get_ref() == 0 {
                return Err(file.error_at(
                    s.baud.span(),
                    "serial.baud",
                    "0: expected a baud rate such as 9600 or 115200",
                ));
            }
        }
        Ok(Config {
            file,
            bundle_dir,
            model: c.model,
            source: c.source,
            source_path,
            thresholds: c.thresholds,
            stdout: c.stdout,
            serial: c.serial,
            status: c.status,
        })
    }

    /// The status period, if status lines are on.
    pub fn status_interval(&self) -> Option<std::time::Duration> {
        let s = *self.status.interval_s.get_ref();
        (s > 0.0).then(|| std::time::Duration::from_secs_f64(s))
    }
}
