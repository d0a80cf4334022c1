//! Replacing a file so that a reader (or a crash) sees the old file or the new
//! one, never half of one; the previous version is kept as `NAME.bak`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What [`write_atomically`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    /// The file written.
    pub path: PathBuf,
    /// The previous version, copied aside (`None` when the file is new).
    pub backup: Option<PathBuf>,
}

/// Replace `path` with `text` atomically: copy the current file to `path.bak`
/// (if there is one), write a temporary file in the same directory, flush it to
/// disk, and rename it over `path`. On any failure the old file is untouched
/// and the temporary file removed.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<Written> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // The backup is replaced atomically too: a copy cut short (a full disk) must not
    // clobber the last good backup.
    let backup = if path.exists() {
        let b = dir.join(format!("{name}.bak"));
        if let Err(e) = std::fs::copy(path, &tmp).and_then(|_| std::fs::rename(&tmp, &b)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Some(b)
    } else {
        None
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Written { path: path.to_path_buf(), backup })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_backup_and_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        let first = write_atomically(&p, "a = 1\n").unwrap();
        assert_eq!(first.backup, None);
        let second = write_atomically(&p, "a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 2\n");
        assert_eq!(std::fs::read_to_string(second.backup.unwrap()).unwrap(), "a = 1\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing-dir").join("t.toml");
        assert!(write_atomically(&p, "x").is_err());
    }
}
