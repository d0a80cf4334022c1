//! Reading TOML files (the run config and bundle manifests) with errors that
//! name the file, the line and column, the key path, and what was expected.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A refused settings file: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The file that was refused.
    pub file: PathBuf,
    /// 1-based line and column of the offending value, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted key path (`thresholds.labels.cat.on`), when known.
    pub key: Option<String>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SettingsError {}

/// Largest settings file (config, manifest, thresholds file) read: far above any real one.
pub const MAX_SETTINGS_FILE: u64 = 1 << 20;

/// What a non-regular file is, for messages.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// A TOML file's text, kept so that later checks can point at lines.
#[derive(Debug, Clone)]
pub struct TomlFile {
    /// Path as given (used in messages).
    pub path: PathBuf,
    /// The whole text.
    pub text: String,
}

impl TomlFile {
    /// Read `path`; a missing, unreadable, oversized or non-UTF-8 file, or one that is not a
    /// regular file (a FIFO would block the read, a device like /dev/zero never end), is a
    /// [`SettingsError`] naming it and saying what was expected.
    pub fn read(path: &Path) -> Result<TomlFile, SettingsError> {
        let refuse = |message: String| SettingsError { file: path.to_path_buf(), position: None, key: None, message };
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => refuse("not found".into()),
            _ => refuse(format!("cannot read file: {e}")),
        })?;
        if !meta.is_file() {
            return Err(refuse(format!("is {}: expected a regular file", file_kind(&meta))));
        }
        if meta.len() > MAX_SETTINGS_FILE {
            return Err(refuse(format!(
                "is {} bytes: a settings file is at most {MAX_SETTINGS_FILE} bytes",
                meta.len()
            )));
        }
        // Read at most one byte past the limit, in case the file grows between the two calls.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_SETTINGS_FILE + 1), &mut bytes))
            .map_err(|e| refuse(format!("cannot read file: {e}")))?;
        if bytes.len() as u64 > MAX_SETTINGS_FILE {
            return Err(refuse(format!("is over {MAX_SETTINGS_FILE} bytes: a settings file is at most that")));
        }
        match String::from_utf8(bytes) {
            Ok(text) => Ok(TomlFile { path: path.to_path_buf(), text }),
            Err(e) => {
                let good = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned();
                let at = TomlFile { path: path.to_path_buf(), text }.line_col(good);
                Err(SettingsError {
                    position: Some(at),
                    ..refuse("not UTF-8 text here: expected a TOML file, which is UTF-8".into())
                })
            }
        }
    }

    /// Deserialize the whole file into `T`. Unknown keys (with
    /// `deny_unknown_fields`), wrong types and syntax errors come back with
    /// their line, column and key path.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, SettingsError> {
        let de = toml::Deserializer::parse(&self.text).map_err(|e| self.toml_error(&e, None))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = (!path.is_empty() && path != ".").then_some(path);
            self.toml_error(e.inner(), key)
        })
    }

    fn toml_error(&self, e: &toml::de::Error, key: Option<String>) -> SettingsError {
        SettingsError {
            file: self.path.clone(),
            position: e.span().map(|s| self.line_col(s.start)),
            key,
            message: e.message().trim().to_string(),
        }
    }

    /// An error about the value at `span` (from a `toml::Spanned` field).
    pub fn error_at(&self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> SettingsError {
        SettingsError {
            file: self.path.clone(),
            position: Some(self.line_col(span.start)),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// An error about the file as a whole, or a key that has no position.
    pub fn error(&self, key: Option<String>, message: impl Into<String>) -> SettingsError {
        SettingsError { file: self.path.clone(), position: None, key, message: message.into() }
    }

    /// A number read from this file, checked against its stated range (which NaN and the
    /// infinities never meet), or exactly 0 where `zero` says what 0 means ("off"). The one
    /// check every fractional key goes through, so that no value can overflow a `Duration`
    /// or make a loop spin, and every refusal reads the same: the value, the range, the unit.
    pub fn number(
        &self,
        value: &toml::Spanned<f64>,
        key: &str,
        range: std::ops::RangeInclusive<f64>,
        unit: &str,
        zero: Option<&str>,
    ) -> Result<f64, SettingsError> {
        let v = *value.get_ref();
        if range.contains(&v) || (zero.is_some() && v == 0.0) {
            return Ok(v);
        }
        let or_zero = zero.map_or(String::new(), |z| format!("0 ({z}) or "));
        Err(self.error_at(
            value.span(),
            key,
            format!("{v}: expected {or_zero}{} to {} {unit}", range.start(), range.end()),
        ))
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(before.chars().count(), |nl| before[nl + 1..].chars().count()) + 1;
        (line, col)
    }

    /// Resolve a path written in this file relative to the file's own folder.
    pub fn resolve(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() { p.to_path_buf() } else { self.path.parent().unwrap_or(Path::new(".")).join(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let f = TomlFile { path: "x.toml".into(), text: "a = 1\nbc = 2\n".into() };
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        assert_eq!(f.line_col(11), (2, 6));
    }
}
