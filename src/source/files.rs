//! Replays image files (one file, a directory, or a glob), optionally looped, at a set rate.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::SourceSection;
use super::{FrameSource, Next, SourceError};
use crate::frame::{Frame, PixelFormat};
use crate::stop::StopFlag;
use crate::tomlfile::{SettingsError, TomlFile};

/// File extensions replayed when the source names a directory.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// A files source as configured (`kind = "files"`).
#[derive(Debug, Clone, PartialEq)]
pub struct FilesSpec {
    /// A file, a directory or a glob pattern (resolved against the config's folder).
    pub pattern: String,
    /// Frames per second to replay at; 0 replays as fast as the pipeline takes frames.
    pub fps: f64,
    /// Start again after the last file.
    pub looped: bool,
}

impl FilesSpec {
    /// The files keys of `[source]` (`path`, `fps`, `loop`), checked; the path must
    /// name at least one image now.
    pub fn from_section(s: &SourceSection, file: &TomlFile) -> Result<FilesSpec, SettingsError> {
        let Some(p) = &s.path else {
            return Err(file.error(
                Some("source.path".into()),
                "missing: a files source needs `path` (a file, a directory or a glob)",
            ));
        };
        let pattern = file.resolve(p.get_ref()).to_string_lossy().into_owned();
        if let Err(e) = resolve_files(&pattern) {
            return Err(file.error_at(p.span(), "source.path", e.to_string()));
        }
        Ok(FilesSpec { pattern, fps: s.fps(file)?, looped: s.looped.as_ref().is_some_and(|l| *l.get_ref()) })
    }
}

/// Replays still images as a frame stream.
pub struct FilesSource {
    spec: String,
    files: Vec<Arc<Path>>,
    next_index: usize,
    looped: bool,
    interval: Option<Duration>,
    next_due: Option<Instant>,
    started: Instant,
}

impl FilesSource {
    /// Resolve `spec.pattern` (a file, a directory, or a glob pattern) into a sorted file list.
    pub fn new(spec: &FilesSpec, started: Instant) -> Result<FilesSource, SourceError> {
        let files = resolve_files(&spec.pattern)?;
        let interval = (spec.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / spec.fps));
        Ok(FilesSource {
            spec: spec.pattern.clone(),
            files: files.into_iter().map(Arc::from).collect(),
            next_index: 0,
            looped: spec.looped,
            interval,
            next_due: None,
            started,
        })
    }

    /// The files this source replays, in order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|p| &**p)
    }
}

/// Expand a source spec into the files it names, sorted by path.
pub fn resolve_files(spec: &str) -> Result<Vec<PathBuf>, SourceError> {
    let path = Path::new(spec);
    let mut files = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| SourceError::Io { path: spec.to_string(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| SourceError::Io { path: spec.to_string(), source })?;
            let p = entry.path();
            let is_image = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if is_image && p.is_file() {
                files.push(p);
            }
        }
    } else if path.is_file() {
        files.push(path.to_path_buf());
    } else {
        let paths = glob::glob(spec).map_err(|source| SourceError::BadGlob { pattern: spec.to_string(), source })?;
        files.extend(paths.filter_map(Result::ok).filter(|p| p.is_file()));
    }
    files.sort();
    if files.is_empty() {
        return Err(SourceError::NoFiles(spec.to_string()));
    }
    Ok(files)
}

/// Largest image file replayed: a 4K PNG is a few tens of MB.
pub const MAX_IMAGE_FILE: u64 = 64 << 20;

/// Read the image file at `path` into `buf`, refusing what is not a regular file of at most
/// [`MAX_IMAGE_FILE`] bytes. The open does not block: an entry swapped for a FIFO would
/// otherwise wait for a writer forever, and no stop could end the run.
pub fn read_image_file(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!("{}, expected a regular file", crate::tomlfile::file_kind(&meta))));
    }
    if meta.len() > MAX_IMAGE_FILE {
        return Err(std::io::Error::other(format!("{} bytes, over the {MAX_IMAGE_FILE}-byte limit", meta.len())));
    }
    file.take(MAX_IMAGE_FILE).read_to_end(buf)?;
    Ok(())
}

impl FrameSource for FilesSource {
    fn next_frame(&mut self, frame: &mut Frame, stop: &StopFlag) -> Next {
        if self.next_index == self.files.len() {
            if !self.looped {
                return Next::End;
            }
            self.next_index = 0;
        }
        if let Some(interval) = self.interval {
            let due = self.next_due.unwrap_or_else(Instant::now);
            if !stop.sleep_until(due) {
                return Next::Stopped;
            }
            // Keep a steady cadence, but never try to catch up a backlog in a burst.
            self.next_due = Some((due + interval).max(Instant::now()));
        } else if stop.is_stopped() {
            return Next::Stopped;
        }
        let path = Arc::clone(&self.files[self.next_index]);
        self.next_index += 1;
        frame.data.clear();
        if let Err(e) = read_image_file(&path, &mut frame.data) {
            log::warn!("source: cannot read {}: {e}; frame dropped", path.display());
            return Next::Dropped;
        }
        frame.format = PixelFormat::Encoded;
        frame.width = 0;
        frame.height = 0;
        frame.t_ms = self.started.elapsed().as_millis() as u64;
        frame.origin = Some(path);
        Next::Frame
    }

    fn describe(&self) -> String {
        format!(
            "files `{}` ({} files{}{})",
            self.spec,
            self.files.len(),
            if self.looped { ", looped" } else { "" },
            match self.interval {
                Some(i) => format!(", {:.2} fps", 1.0 / i.as_secs_f64()),
                None => String::from(", as fast as possible"),
            }
        )
    }
}
