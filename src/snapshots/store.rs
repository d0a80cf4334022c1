//! The snapshot directory: file names (time, label, seq), atomic writes, and what happens at
//! the limits on count and total size: `[snapshots]` deletes the oldest ([`WhenFull::DeleteOldest`]),
//! `vigil record` keeps what it saved and takes no more ([`WhenFull::Stop`]). Only files vigil
//! named are ever deleted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// `YYYYMMDDTHHMMSS.mmmZ` (UTC) of `unix_ms`, written into `out`.
pub fn push_utc(out: &mut String, unix_ms: u64) {
    use std::fmt::Write as _;
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let _ =
        write!(out, "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, unix_ms % 1000);
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A snapshot's file name: `<utc>_<label>_<seq>.jpg`, or `<utc>_<seq>.jpg` for a frame saved
/// for no label (`vigil record --every`); the label with anything but ASCII letters, digits and
/// `-` as `_` (so names sort by capture time and need no quoting).
pub fn file_name(out: &mut String, unix_ms: u64, label: Option<&str>, seq: u64) {
    use std::fmt::Write as _;
    out.clear();
    push_utc(out, unix_ms);
    if let Some(label) = label {
        out.push('_');
        out.extend(label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }));
    }
    let _ = write!(out, "_{seq}.jpg");
}

/// Whether `name` is one of vigil's snapshot names (retention deletes only those).
fn is_snapshot_name(name: &str) -> bool {
    let b = name.as_bytes();
    name.ends_with(".jpg") && b.len() > 21 && b[..8].iter().all(u8::is_ascii_digit) && b[8] == b'T' && b[19] == b'Z'
}

/// What a full store does with the next snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Delete the oldest until the new one fits (`[snapshots]`: the newest matter).
    DeleteOldest,
    /// Keep every file, refuse the new one (`vigil record`: a data set is never thinned behind
    /// the user's back).
    Stop,
}

/// Why a snapshot was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// [`WhenFull::Stop`] and the file would go past a limit.
    #[error("the limit of {files} files or {mib} MiB is reached")]
    Full {
        /// The file limit.
        files: usize,
        /// The size limit, MiB.
        mib: u64,
    },
    /// The file system refused it.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The directory and the snapshots in it, oldest first.
pub struct Store {
    dir: PathBuf,
    files: VecDeque<(String, u64)>,
    bytes: u64,
    max_files: usize,
    max_bytes: u64,
    when_full: WhenFull,
}

impl Store {
    /// The store in `dir`, with the snapshots already there (from earlier runs); with
    /// [`WhenFull::DeleteOldest`] the limits apply to those at once.
    pub fn open(dir: &Path, max_files: usize, max_bytes: u64, when_full: WhenFull) -> Store {
        let mut found: Vec<(String, u64)> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let meta = e.metadata().ok()?;
                    (meta.is_file() && is_snapshot_name(&name)).then_some((name, meta.len()))
                })
                .collect(),
            Err(e) => {
                log::warn!("snapshots: cannot list {} ({e}); retention counts only new snapshots", dir.display());
                Vec::new()
            }
        };
        found.sort();
        let bytes = found.iter().map(|(_, len)| len).sum();
        let mut store = Store { dir: dir.to_path_buf(), files: found.into(), bytes, max_files, max_bytes, when_full };
        store.enforce();
        store
    }

    /// Whether [`WhenFull::Stop`] refuses any further snapshot: the file count is at its limit.
    pub fn is_full(&self) -> bool {
        self.when_full == WhenFull::Stop && self.files.len() >= self.max_files
    }

    /// Write `jpeg` as `name` (a temporary file, then renamed: a reader never sees half a
    /// picture), then delete the oldest while over a limit ([`WhenFull::DeleteOldest`]); with
    /// [`WhenFull::Stop`], refuse it if it would go past a limit.
    pub fn write(&mut self, name: &str, jpeg: &[u8]) -> Result<(), WriteError> {
        let len = jpeg.len() as u64;
        if self.when_full == WhenFull::Stop && (self.is_full() || self.bytes + len > self.max_bytes) {
            return Err(WriteError::Full { files: self.max_files, mib: self.max_bytes >> 20 });
        }
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let written = std::fs::write(&temporary, jpeg).and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(e.into());
        }
        self.files.push_back((name.to_string(), len));
        self.bytes += len;
        self.enforce();
        Ok(())
    }

    fn enforce(&mut self) {
        if self.when_full == WhenFull::Stop {
            return;
        }
        while self.files.len() > self.max_files || (self.bytes > self.max_bytes && self.files.len() > 1) {
            let (name, len) = self.files.pop_front().expect("not empty");
            self.bytes -= len;
            if let Err(e) = std::fs::remove_file(self.dir.join(&name))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("snapshots: cannot delete the old {name} ({e})");
            }
        }
    }

    /// Snapshots kept now, and their bytes.
    pub fn kept(&self) -> (usize, u64) {
        (self.files.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_utc_time_label_and_seq_and_sort_by_time() {
        let mut name = String::new();
        // 2026-12-03 05:55:01.123 UTC
        file_name(&mut name, 1_796_277_301_123, Some("traffic light"), 42);
        assert_eq!(name, "20261203T055501.123Z_traffic_light_42.jpg");
        assert!(is_snapshot_name(&name));
        file_name(&mut name, 951_782_400_000, Some("x"), 0); // 2000-02-29, a leap day
        assert_eq!(name, "20000229T000000.000Z_x_0.jpg");
        file_name(&mut name, 951_782_400_000, None, 7);
        assert_eq!(name, "20000229T000000.000Z_7.jpg");
        assert!(is_snapshot_name(&name));
        assert!(!is_snapshot_name("holiday.jpg"));
    }

    #[test]
    fn retention_deletes_the_oldest_of_its_own_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep-me.jpg"), b"not ours").unwrap();
        let mut store = Store::open(dir.path(), 3, 1 << 20, WhenFull::DeleteOldest);
        let mut name = String::new();
        for i in 0..5u64 {
            file_name(&mut name, 1_796_277_301_000 + i * 1000, Some("person"), i);
            store.write(&name, &[0xff, 0xd8, i as u8]).unwrap();
        }
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left.len(), 4, "{left:?}");
        assert_eq!(left[0], "20261203T055503.000Z_person_2.jpg");
        assert!(left.contains(&"keep-me.jpg".to_string()));
        // A reopen counts what is there; a tighter size limit applies at once.
        let store = Store::open(dir.path(), 100, 7, WhenFull::DeleteOldest);
        assert_eq!(store.kept(), (2, 6));
    }

    #[test]
    fn a_store_that_stops_when_full_keeps_every_file_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut name = String::new();
        let mut store = Store::open(dir.path(), 3, 1 << 20, WhenFull::Stop);
        for i in 0..3u64 {
            file_name(&mut name, 1_796_277_301_000 + i * 1000, None, i);
            store.write(&name, &[0xff, 0xd8, i as u8]).unwrap();
        }
        assert!(store.is_full());
        file_name(&mut name, 1_796_277_309_000, None, 9);
        assert!(matches!(store.write(&name, &[0xff]), Err(WriteError::Full { files: 3, .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "nothing deleted, nothing added");
        // Reopened with a tighter limit: the files stay, nothing more goes in.
        let mut store = Store::open(dir.path(), 2, 1 << 20, WhenFull::Stop);
        assert_eq!(store.kept(), (3, 9));
        assert!(store.write(&name, &[0xff]).is_err());
        // The size limit: a file that would go past it is refused, a smaller one is not.
        let mut store = Store::open(dir.path(), 100, 12, WhenFull::Stop);
        assert!(matches!(store.write(&name, &[0; 4]), Err(WriteError::Full { .. })));
        store.write(&name, &[0; 3]).unwrap();
        assert_eq!(store.kept(), (4, 12));
    }
}
