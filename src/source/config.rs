//! `[source]` as written in a run config, and the check that turns it into one
//! kind's settings. Each kind checks its own keys in its own file
//! ([`super::files`], [`super::pipe`], [`super::v4l2`]); here is only what they
//! share: the keys as read (every one optional, with its position in the file),
//! and the refusal of a key that belongs to another kind.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::command::CommandSpec;
use super::files::FilesSpec;
use super::pipe::{OnEnd, PipeSpec};
use super::v4l2::V4l2Spec;
use crate::frame::{Matrix, PixelFormat};
use crate::tomlfile::{SettingsError, TomlFile};

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
    /// A camera program vigil runs and supervises, read from its stdout (rpicam-vid,
    /// gst-launch-1.0, ffmpeg).
    Command,
}

impl SourceKind {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Files => "files",
            SourceKind::Pipe => "pipe",
            SourceKind::V4l2 => "v4l2",
            SourceKind::Command => "command",
        }
    }
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
    pub fn raw(self) -> Option<PixelFormat> {
        use PixelFormat as P;
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

/// `[source]` as written: every kind's keys, each optional and with its position,
/// so that each kind can say exactly which key is missing, wrong or misplaced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The kind of source.
    pub kind: SourceKind,
    /// Files: a file, a directory or a glob pattern. Pipe: a FIFO or file, or `-` for stdin.
    pub path: Option<Spanned<String>>,
    /// Files: frames per second to replay at (0 = as fast as the pipeline takes them).
    /// V4L2: the frame rate to ask the camera for (0 = the camera's own).
    pub fps: Option<Spanned<f64>>,
    /// Files: start again after the last file.
    #[serde(rename = "loop")]
    pub looped: Option<Spanned<bool>>,
    /// V4L2: the device node, e.g. `/dev/video0` or a `/dev/v4l/by-id/...` link.
    pub device: Option<Spanned<String>>,
    /// Command: the camera program and its arguments.
    pub argv: Option<Spanned<Vec<String>>>,
    /// Pipe and command: the stream format (required). V4L2: the pixel format (default `auto`).
    pub format: Option<Spanned<SourceFormat>>,
    /// Pipe (raw formats, required) and V4L2 (optional): frame width.
    pub width: Option<Spanned<u32>>,
    /// Pipe (raw formats, required) and V4L2 (optional): frame height.
    pub height: Option<Spanned<u32>>,
    /// Pipe, YUV formats: code range of the samples (default `limited`; V4L2 cameras say theirs).
    pub range: Option<Spanned<crate::frame::Range>>,
    /// Pipe, YUV formats: matrix (default `bt601`).
    pub matrix: Option<Spanned<Matrix>>,
    /// Pipe: at the end of the stream, `stop` (default) or `reopen` (a FIFO: wait for the next writer).
    pub on_end: Option<Spanned<OnEnd>>,
    /// Pipe and V4L2: seconds without a frame before the source counts as lost (default 2).
    pub watchdog_s: Option<Spanned<f64>>,
}

/// A checked `[source]`: one kind, with the settings that kind uses.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// Image files replayed.
    Files(FilesSpec),
    /// A stream on a pipe, with its watchdog period.
    Pipe(PipeSpec, Duration),
    /// A V4L2 camera, with its watchdog period.
    V4l2(V4l2Spec, Duration),
    /// A supervised camera program, with its watchdog period.
    Command(CommandSpec, Duration),
}

/// Which kinds each key applies to, for the message when it is given to another kind.
const KEYS: [(&str, &str); 13] = [
    ("path", "files and pipe"),
    ("fps", "files and v4l2"),
    ("loop", "files"),
    ("device", "v4l2"),
    ("argv", "command"),
    ("format", "pipe, command and v4l2"),
    ("width", "pipe, command and v4l2"),
    ("height", "pipe, command and v4l2"),
    ("range", "pipe and command"),
    ("matrix", "pipe and command"),
    ("on_end", "pipe"),
    ("watchdog_s", "pipe, command and v4l2"),
    ("kind", "every kind"),
];

impl SourceSection {
    /// Check the section for its kind: required keys present, keys of other kinds
    /// absent, values in range; paths resolved against the config's folder.
    pub fn check(&self, file: &TomlFile) -> Result<SourceConfig, SettingsError> {
        let applies = |key: &str| KEYS.iter().find(|(k, _)| *k == key).map_or("", |(_, kinds)| kinds);
        for (key, span) in self.keys_given() {
            if !applies(key).contains(self.kind.name()) && applies(key) != "every kind" {
                return Err(file.error_at(
                    span,
                    format!("source.{key}"),
                    format!("does not apply to a {} source ({} only)", self.kind.name(), applies(key)),
                ));
            }
        }
        match self.kind {
            SourceKind::Files => FilesSpec::from_section(self, file).map(SourceConfig::Files),
            SourceKind::Pipe => Ok(SourceConfig::Pipe(PipeSpec::from_section(self, file)?, self.watchdog(file)?)),
            SourceKind::V4l2 => Ok(SourceConfig::V4l2(V4l2Spec::from_section(self, file)?, self.watchdog(file)?)),
            SourceKind::Command => {
                Ok(SourceConfig::Command(CommandSpec::from_section(self, file)?, self.watchdog(file)?))
            }
        }
    }

    /// The keys present in the file, with their positions.
    fn keys_given(&self) -> Vec<(&'static str, Range<usize>)> {
        fn at<T>(key: &'static str, v: &Option<Spanned<T>>) -> Option<(&'static str, Range<usize>)> {
            v.as_ref().map(|s| (key, s.span()))
        }
        [
            at("path", &self.path),
            at("fps", &self.fps),
            at("loop", &self.looped),
            at("device", &self.device),
            at("argv", &self.argv),
            at("format", &self.format),
            at("width", &self.width),
            at("height", &self.height),
            at("range", &self.range),
            at("matrix", &self.matrix),
            at("on_end", &self.on_end),
            at("watchdog_s", &self.watchdog_s),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `fps`, checked: 0 (as fast as possible, or the camera's own rate) or 0.01 to 1000.
    pub(crate) fn fps(&self, file: &TomlFile) -> Result<f64, SettingsError> {
        let Some(fps) = &self.fps else { return Ok(0.0) };
        file.number(
            fps,
            "source.fps",
            0.01..=1000.0,
            "frames per second",
            Some("as fast as possible, or the camera's own rate"),
        )
    }

    /// `watchdog_s` of a live source (default 2 s), checked: 0.1 to 3600 seconds without a
    /// frame before the source counts as lost.
    fn watchdog(&self, file: &TomlFile) -> Result<Duration, SettingsError> {
        let Some(w) = &self.watchdog_s else { return Ok(Duration::from_secs(2)) };
        let v = file.number(w, "source.watchdog_s", 0.1..=3600.0, "seconds without a frame", None)?;
        Ok(Duration::from_secs_f64(v))
    }

    /// `width` and `height`, each checked to be 1 to [`crate::preprocess::MAX_SIDE`].
    pub(crate) fn size(&self, file: &TomlFile) -> Result<Option<(u32, u32)>, SettingsError> {
        for (key, v) in [("width", &self.width), ("height", &self.height)] {
            if let Some(v) = v {
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
        Ok(self.width.as_ref().zip(self.height.as_ref()).map(|(w, h)| (*w.get_ref(), *h.get_ref())))
    }
}
