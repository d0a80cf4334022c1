//! Replays image files (one file, a directory, or a glob), optionally looped, at a set rate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::SourceSection;
use super::{FrameSource, Next, SourceError};
use crate::frame::{Frame, PixelFormat};
use crate::stop::StopFlag;
use crate::tomlfile::{SettingsError, TomlFile};
use crate::util::file::{MAX_IMAGE_FILE_BYTES, read_regular};

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
        // The list was made at start; an entry may since have been swapped for a FIFO, a
        // directory or a huge file. Each is a dropped frame: opening never waits for a FIFO's
        // writer (the stop would wait with it), and the read is bounded.
        if let Err(e) = read_regular(&path, MAX_IMAGE_FILE_BYTES, "the limit for an image file", &mut frame.data) {
            log::warn!("source: {} {e}; frame dropped", path.display());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    fn sample() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/elpv-solar/samples/cell0002.128.png")
    }

    #[test]
    fn an_entry_swapped_for_a_fifo_or_a_directory_is_a_dropped_frame_not_a_hang() {
        let d = tempfile::tempdir().unwrap();
        for name in ["a.png", "b.png", "c.png"] {
            std::fs::copy(sample(), d.path().join(name)).unwrap();
        }
        let spec = FilesSpec { pattern: d.path().to_string_lossy().into_owned(), fps: 0.0, looped: false };
        let mut source = FilesSource::new(&spec, Instant::now()).unwrap();
        // After the list is made: a.png becomes a FIFO nobody writes to, b.png a directory.
        let a = d.path().join("a.png");
        std::fs::remove_file(&a).unwrap();
        let c = CString::new(a.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::fs::remove_file(d.path().join("b.png")).unwrap();
        std::fs::create_dir(d.path().join("b.png")).unwrap();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let stop = StopFlag::new();
            let mut frame = Frame::empty();
            let got: Vec<Next> = (0..4).map(|_| source.next_frame(&mut frame, &stop)).collect();
            let _ = done.send((got, frame.data.len()));
        });
        let (got, last_len) = result.recv_timeout(Duration::from_secs(5)).expect("the source blocked on a FIFO");
        assert_eq!(got, [Next::Dropped, Next::Dropped, Next::Frame, Next::End]);
        assert_eq!(last_len as u64, std::fs::metadata(sample()).unwrap().len());
    }
}
