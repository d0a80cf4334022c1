//! Reading a file that must be a regular file, with a size limit, without ever
//! blocking.
//!
//! Every file vigil reads whole (configs, manifests, thresholds files, label
//! lists, labelled-set CSVs, images) goes through [`read_regular`]. A path that
//! names a FIFO would block `open` until a writer appears and a device such as
//! `/dev/zero` never ends, so the path is checked with `stat` before it is
//! opened, opened with `O_NONBLOCK` (a FIFO swapped in between returns at once
//! instead of waiting for a writer) and checked again with `fstat` on the open
//! descriptor. The read itself stops one byte past the limit, so a file that
//! grows while it is read (or a `/proc` file that says it is empty) cannot
//! exceed it either.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest TOML file (run config, manifest, thresholds file) or label list read.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;
/// Largest labelled-set CSV read by `vigil eval` and `vigil calibrate`.
pub const MAX_CSV_BYTES: u64 = 64 << 20;
/// Largest encoded image file read (files source, `classify`, `eval`); the decoded
/// size has its own limit ([`crate::preprocess::MAX_DECODED`]).
pub const MAX_IMAGE_FILE_BYTES: u64 = 32 << 20;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing at the path.
    #[error("not found")]
    NotFound,
    /// Something other than a regular file at the path.
    #[error("is {kind}, expected a regular file")]
    NotRegular {
        /// What is there: "a directory", "a FIFO", "a character device", ...
        kind: &'static str,
    },
    /// The file is larger than the limit for its kind.
    #[error("is larger than {limit} bytes ({what}), refused")]
    TooLarge {
        /// The limit.
        limit: u64,
        /// What kind of file the limit is for.
        what: &'static str,
    },
    /// Any other I/O error (permissions, I/O failure).
    #[error("cannot read: {0}")]
    Io(std::io::Error),
}

/// "a directory", "a FIFO", ... for a file type that is not a regular file.
pub fn kind_name(t: FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn io(e: std::io::Error) -> ReadError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Io(e),
    }
}

fn regular(m: &Metadata) -> Result<(), ReadError> {
    if m.file_type().is_file() { Ok(()) } else { Err(ReadError::NotRegular { kind: kind_name(m.file_type()) }) }
}

/// Check that `path` names a regular file (following symbolic links), without opening it.
pub fn check_regular(path: &Path) -> Result<(), ReadError> {
    regular(&std::fs::metadata(path).map_err(io)?)
}

/// Open `path` for reading if it is a regular file; never blocks (see the module comment).
pub fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    check_regular(path)?;
    let file = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO swapped in after the stat opens at once instead of waiting for a
        // writer (regular files ignore the flag). O_NOCTTY: a terminal never becomes ours.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    regular(&meta)?;
    Ok((file, meta))
}

/// Read the whole regular file at `path` into `buf` (cleared first, its capacity
/// reused), refusing anything that is not a regular file or is larger than `limit`
/// bytes (`what` names the kind of file in the message).
pub fn read_regular(path: &Path, limit: u64, what: &'static str, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    buf.clear();
    let (file, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit, what });
    }
    // One byte past the limit tells a file that grew (or that stat called empty) from one that fits.
    file.take(limit + 1).read_to_end(buf).map_err(io)?;
    if buf.len() as u64 > limit {
        buf.clear();
        buf.shrink_to(limit as usize);
        return Err(ReadError::TooLarge { limit, what });
    }
    Ok(())
}

/// [`read_regular`] into a new buffer.
pub fn read_regular_vec(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    read_regular(path, limit, what, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        mkfifo(&p);
        let e = read_regular_vec(&p, 10, "test").unwrap_err();
        assert_eq!(e.to_string(), "is a FIFO, expected a regular file");
    }

    #[test]
    fn directories_devices_and_missing_files_say_what_they_are() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            read_regular_vec(d.path(), 10, "t").unwrap_err().to_string(),
            "is a directory, expected a regular file"
        );
        let e = read_regular_vec(Path::new("/dev/zero"), 10, "t").unwrap_err().to_string();
        assert_eq!(e, "is a character device, expected a regular file");
        assert!(matches!(read_regular_vec(&d.path().join("none"), 10, "t"), Err(ReadError::NotFound)));
    }

    #[test]
    fn the_limit_holds_for_files_whose_size_lies() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        std::fs::write(&p, vec![b'x'; 11]).unwrap();
        assert!(matches!(read_regular_vec(&p, 10, "t"), Err(ReadError::TooLarge { limit: 10, .. })));
        std::fs::write(&p, vec![b'x'; 10]).unwrap();
        assert_eq!(read_regular_vec(&p, 10, "t").unwrap().len(), 10);
        // /proc files report a size of 0 however much they hold.
        let e = read_regular_vec(Path::new("/proc/self/maps"), 10, "t").unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }), "{e}");
    }
}
