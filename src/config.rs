//! The run configuration (`vigil run --config FILE`), read from TOML and
//! checked before anything starts. Paths in the file are relative to the file.

use std::ops::Range;
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
    /// A thresholds file (e.g. from `vigil calibrate --output`) layered between
    /// the manifest's `[thresholds]` and this config's.
    #[serde(default)]
    pub thresholds: Option<Spanned<String>>,
}

/// A thresholds file: TOML holding only a `[thresholds]` table, in the same
/// format as a manifest's or a run config's (written by `vigil calibrate --output`).
#[derive(Debug, Clone)]
pub struct ThresholdsFile {
    /// The file, for messages pointing into it.
    pub file: TomlFile,
    /// Its `[thresholds]` table.
    pub spec: ThresholdsSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdsFileToml {
    #[serde(default)]
    thresholds: ThresholdsSpec,
}

impl ThresholdsFile {
    /// Read and parse `path`; its labels are checked when layered ([`crate::thresholds::resolve`]).
    pub fn load(path: &std::path::Path) -> Result<ThresholdsFile, SettingsError> {
        ThresholdsFile::from_file(TomlFile::read(path)?)
    }

    /// Parse an already-read file.
    pub fn from_file(file: TomlFile) -> Result<ThresholdsFile, SettingsError> {
        let t: ThresholdsFileToml = file.parse()?;
        Ok(ThresholdsFile { file, spec: t.thresholds })
    }
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
    /// A stream on stdin, a FIFO or a file (rpicam-vid, gst-launch-1.0, ffmpeg).
    Pipe,
    /// A V4L2 capture device (USB webcam, CSI bridge).
    V4l2,
}

/// Pixel or stream format of a pipe or camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// V4L2: the best the device offers.
    Auto,
    /// Planar 4:2:0 (yuv420p, YU12).
    I420,
    /// Semi-planar 4:2:0.
    Nv12,
    /// Packed 4:2:2.
    Yuyv,
    /// Packed 8-bit RGB.
    Rgb24,
    /// 8-bit luma.
    Grey,
    /// JPEG frames back to back.
    Mjpeg,
    /// YUV4MPEG2 (pipe only).
    Y4m,
}

impl SourceFormat {
    /// The raw frame layout of this format, if it is raw.
    pub fn raw(self) -> Option<crate::frame::PixelFormat> {
        use crate::frame::PixelFormat as P;
        match self {
            SourceFormat::I420 => Some(P::I420),
            SourceFormat::Nv12 => Some(P::Nv12),
            SourceFormat::Yuyv => Some(P::Yuyv),
            SourceFormat::Rgb24 => Some(P::Rgb24),
            SourceFormat::Grey => Some(P::Grey),
            SourceFormat::Auto | SourceFormat::Mjpeg | SourceFormat::Y4m => None,
        }
    }

    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Auto => "auto",
            SourceFormat::I420 => "i420",
            SourceFormat::Nv12 => "nv12",
            SourceFormat::Yuyv => "yuyv",
            SourceFormat::Rgb24 => "rgb24",
            SourceFormat::Grey => "grey",
            SourceFormat::Mjpeg => "mjpeg",
            SourceFormat::Y4m => "y4m",
        }
    }
}

/// What a pipe source does when its writer closes the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEnd {
    /// End the run cleanly (exit 0).
    #[default]
    Stop,
    /// Reopen the FIFO and wait for the next writer (the source counts as lost meanwhile).
    Reopen,
}

/// `[source]`: where frames come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The kind of source.
    pub kind: SourceKind,
    /// Files: a file, a directory or a glob pattern. Pipe: a FIFO or file, or `-` for stdin.
    pub path: Option<Spanned<String>>,
    /// Files: frames per second to replay at (0 = as fast as the pipeline takes them).
    /// V4L2: the frame rate to ask the camera for (0 = the camera's own).
    #[serde(default = "zero")]
    pub fps: Spanned<f64>,
    /// Files: start again after the last file.
    #[serde(default, rename = "loop")]
    pub looped: bool,
    /// V4L2: the device node, e.g. `/dev/video0` or a `/dev/v4l/by-id/...` link.
    pub device: Option<Spanned<String>>,
    /// Pipe: the stream format (required). V4L2: the pixel format (default `auto`).
    pub format: Option<Spanned<SourceFormat>>,
    /// Pipe (raw formats, required) and V4L2 (optional): frame width.
    pub width: Option<Spanned<u32>>,
    /// Pipe (raw formats, required) and V4L2 (optional): frame height.
    pub height: Option<Spanned<u32>>,
    /// Pipe, YUV formats: code range of the samples (default `limited`; V4L2 cameras say theirs).
    pub range: Option<crate::frame::Range>,
    /// Pipe, YUV formats: matrix (default `bt601`).
    pub matrix: Option<crate::frame::Matrix>,
    /// Pipe: at the end of the stream, `stop` (default) or `reopen` (a FIFO: wait for the next writer).
    #[serde(default)]
    pub on_end: OnEnd,
    /// Pipe and V4L2: seconds without a frame before the source counts as lost (default 2).
    #[serde(default = "default_watchdog")]
    pub watchdog_s: Spanned<f64>,
}

fn default_watchdog() -> Spanned<f64> {
    Spanned::new(0..0, 2.0)
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

/// Where a GPIO line is, in the config: chip and line, as in [`crate::sink::GpioLineSpec`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioLineConfig {
    /// `/dev/gpiochip0`, `gpiochip0`, or a chip label such as `pinctrl-rp1`.
    pub chip: String,
    /// Line offset (`17`) or name (`"GPIO17"`).
    pub line: crate::sink::LineRef,
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
    pub line: crate::sink::LineRef,
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
    gpio: Option<GpioSection>,
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
    /// Resolved source path (files; pipe unless stdin).
    pub source_path: Option<PathBuf>,
    /// `[thresholds]`: overrides the bundle's.
    pub thresholds: ThresholdsSpec,
    /// `[model] thresholds`: a thresholds file between the bundle's and this config's.
    pub thresholds_file: Option<ThresholdsFile>,
    /// `[stdout]`.
    pub stdout: StdoutSection,
    /// `[serial]`.
    pub serial: Option<SerialSection>,
    /// `[gpio]`.
    pub gpio: Option<GpioSection>,
    /// `[status]`.
    pub status: StatusSection,
}

/// Check `[source]` for its kind: required keys present, keys of other kinds absent,
/// values in range. Returns the resolved path.
fn check_source(file: &TomlFile, s: &SourceSection) -> Result<Option<PathBuf>, SettingsError> {
    let kind = match s.kind {
        SourceKind::Files => "files",
        SourceKind::Pipe => "pipe",
        SourceKind::V4l2 => "v4l2",
    };
    let not_here = |key: &str, span: Range<usize>, applies: &str| {
        file.error_at(span, format!("source.{key}"), format!("does not apply to a {kind} source ({applies} only)"))
    };
    let fps = *s.fps.get_ref();
    if !fps.is_finite() || fps < 0.0 {
        return Err(file.error_at(
            s.fps.span(),
            "source.fps",
            format!("{fps}: expected 0 (as fast as possible, or the camera's own rate) or a positive rate"),
        ));
    }
    let watchdog = *s.watchdog_s.get_ref();
    if !watchdog.is_finite() || watchdog < 0.1 {
        return Err(file.error_at(
            s.watchdog_s.span(),
            "source.watchdog_s",
            format!("{watchdog}: expected seconds without a frame before the camera counts as lost, at least 0.1"),
        ));
    }
    if s.kind != SourceKind::V4l2
        && let Some(d) = &s.device
    {
        return Err(not_here("device", d.span(), "v4l2"));
    }
    if s.kind == SourceKind::Files {
        for (key, v) in
            [("format", s.format.as_ref().map(Spanned::span)), ("width", s.width.as_ref().map(Spanned::span))]
        {
            if let Some(span) = v {
                return Err(not_here(key, span, "pipe and v4l2"));
            }
        }
    }
    if let (Some(w), Some(h)) = (&s.width, &s.height) {
        for (key, v) in [("width", w), ("height", h)] {
            let side = *v.get_ref();
            if side == 0 || side > crate::preprocess::MAX_SIDE {
                return Err(file.error_at(
                    v.span(),
                    format!("source.{key}"),
                    format!("{side}: expected 1 to {}", crate::preprocess::MAX_SIDE),
                ));
            }
        }
    }
    match s.kind {
        SourceKind::Files => {
            let Some(p) = &s.path else {
                return Err(file.error(
                    Some("source.path".into()),
                    "missing: a files source needs `path` (a file, a directory or a glob)",
                ));
            };
            let resolved = file.resolve(p.get_ref());
            if let Err(e) = crate::source::files::resolve_files(&resolved.to_string_lossy()) {
                return Err(file.error_at(p.span(), "source.path", e.to_string()));
            }
            Ok(Some(resolved))
        }
        SourceKind::Pipe => {
            let Some(p) = &s.path else {
                return Err(file.error(
                    Some("source.path".into()),
                    "missing: a pipe source needs `path` (a FIFO or file, or \"-\" for standard input)",
                ));
            };
            let Some(format) = &s.format else {
                return Err(file.error(
                    Some("source.format".into()),
                    "missing: a pipe source needs `format` (i420, nv12, yuyv, rgb24, grey, mjpeg or y4m)",
                ));
            };
            if *format.get_ref() == SourceFormat::Auto {
                return Err(file.error_at(
                    format.span(),
                    "source.format",
                    "`auto` is for v4l2 cameras: a pipe needs i420, nv12, yuyv, rgb24, grey, mjpeg or y4m",
                ));
            }
            if format.get_ref().raw().is_some() && (s.width.is_none() || s.height.is_none()) {
                return Err(file.error(
                    Some("source.width".into()),
                    format!(
                        "missing: a raw `{}` pipe needs `width` and `height` (the frame size the writer sends)",
                        format.get_ref().name()
                    ),
                ));
            }
            if p.get_ref() == "-" {
                if s.on_end == OnEnd::Reopen {
                    return Err(file.error(
                        Some("source.on_end".into()),
                        "`reopen` needs a FIFO path: standard input cannot be reopened",
                    ));
                }
                return Ok(None);
            }
            Ok(Some(file.resolve(p.get_ref())))
        }
        SourceKind::V4l2 => {
            if s.device.is_none() {
                return Err(file.error(
                    Some("source.device".into()),
                    "missing: a v4l2 source needs `device` (e.g. \"/dev/video0\"; `vigil cameras` lists them)",
                ));
            }
            if let Some(p) = &s.path {
                return Err(not_here("path", p.span(), "files and pipe"));
            }
            if let Some(f) = &s.format
                && *f.get_ref() == SourceFormat::Y4m
            {
                return Err(file.error_at(
                    f.span(),
                    "source.format",
                    "`y4m` is a pipe format: a camera gives auto, yuyv, nv12, i420, rgb24, grey or mjpeg",
                ));
            }
            if s.width.is_some() != s.height.is_some() {
                return Err(file.error(Some("source.width".into()), "give both `width` and `height`, or neither"));
            }
            Ok(None)
        }
    }
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
        let thresholds_file = match &c.model.thresholds {
            Some(t) => {
                let path = file.resolve(t.get_ref());
                if !path.is_file() {
                    return Err(file.error_at(
                        t.span(),
                        "model.thresholds",
                        format!(
                            "thresholds file `{}` not found: expected a TOML file with a [thresholds] table (paths are relative to this config)",
                            path.display()
                        ),
                    ));
                }
                Some(ThresholdsFile::load(&path)?)
            }
            None => None,
        };
        let workers = *c.model.workers.get_ref();
        if workers == 0 || workers > MAX_WORKERS {
            return Err(file.error_at(
                c.model.workers.span(),
                "model.workers",
                format!("{workers}: expected 1 to {MAX_WORKERS}"),
            ));
        }
        let source_path = check_source(&file, &c.source)?;
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
            thresholds_file,
            stdout: c.stdout,
            serial: c.serial,
            gpio: c.gpio,
            status: c.status,
        })
    }

    /// The source's watchdog period.
    pub fn watchdog(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(*self.source.watchdog_s.get_ref())
    }

    /// The status period, if status lines are on.
    pub fn status_interval(&self) -> Option<std::time::Duration> {
        let s = *self.status.interval_s.get_ref();
        (s > 0.0).then(|| std::time::Duration::from_secs_f64(s))
    }
}
