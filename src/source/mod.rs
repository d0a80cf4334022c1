//! Frame sources: where frames come from. Each source fills pooled [`Frame`]s.
//!
//! `[source]` in a run config names one kind ([`config`]); [`open`] starts it.
//! Files are replayed on the pipeline's source thread; live sources (pipes,
//! camera commands, V4L2 cameras) capture on a thread of their own ([`live`]).

pub mod command;
pub mod config;
pub mod files;
pub mod live;
pub mod pipe;
pub mod v4l2;
pub mod v4l2_ring;

pub use config::{SourceConfig, SourceFormat, SourceKind, SourceSection};
pub use files::{FilesSource, FilesSpec};
pub use live::LiveSource;

use std::sync::Arc;
use std::time::Instant;

use crate::frame::Frame;
use crate::stats::Health;
use crate::stop::StopFlag;

/// Start the source `config` describes, for a model taking `model_size` (width,
/// height) frames. Live sources open here, so a camera that cannot do what the
/// config asks is refused at start; one that is merely absent is retried in the
/// background (and `health` says it is lost meanwhile).
pub fn open(
    config: &SourceConfig,
    model_size: (u32, u32),
    health: &Arc<Health>,
    started: Instant,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let (capture, watchdog): (Box<dyn live::Capture>, _) = match config {
        SourceConfig::Files(spec) => return Ok(Box::new(FilesSource::new(spec, started)?)),
        SourceConfig::Pipe(spec, watchdog) => (Box::new(pipe::PipeCapture::new(spec.clone())), *watchdog),
        SourceConfig::Command(spec, watchdog) => (Box::new(command::CommandCapture::new(spec.clone())), *watchdog),
        SourceConfig::V4l2(spec, watchdog) => {
            let mut spec = spec.clone();
            spec.want.model = model_size;
            (Box::new(v4l2::V4l2Capture::new(spec)), *watchdog)
        }
    };
    let live = LiveSource::start(capture, watchdog, Arc::clone(health), started)
        .map_err(|e| SourceError::Open(e.to_string()))?;
    Ok(Box::new(live))
}

/// What a call to [`FrameSource::next_frame`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// `frame` holds a new frame.
    Frame,
    /// A frame was lost (unreadable file, vanished device); the source goes on.
    Dropped,
    /// The stream ended (all files replayed, pipe closed).
    End,
    /// The stop flag was raised while waiting.
    Stopped,
    /// The source broke for good (its capture thread died on a bug): the run must end
    /// with an error, never wait on a source that will not deliver again.
    Failed(String),
}

/// Errors a source cannot recover from by itself.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The configured path, directory or glob matched no image file.
    #[error("source `{0}`: no image files found (expected a file, a directory of .jpg/.jpeg/.png, or a glob)")]
    NoFiles(String),
    /// The glob pattern could not be parsed.
    #[error("source `{pattern}`: bad glob pattern: {source}")]
    BadGlob {
        /// The pattern as configured.
        pattern: String,
        /// Why it was refused.
        source: glob::PatternError,
    },
    /// A pipe or camera cannot be used as configured (unsupported format or size).
    #[error("source: {0}")]
    Open(String),
    /// Reading a directory failed.
    #[error("source `{path}`: {source}")]
    Io {
        /// The path that failed.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A stream of frames. Implementations pace themselves (a camera by its clock,
/// a replay by its configured fps) and must return [`Next::Stopped`] promptly
/// (within ~50 ms) once `stop` is raised.
pub trait FrameSource: Send {
    /// Fill `frame` (reusing its buffer) with the next frame.
    fn next_frame(&mut self, frame: &mut Frame, stop: &StopFlag) -> Next;
    /// A one-line description for logs and `vigil check`.
    fn describe(&self) -> String;
}
