//! Reading TOML files (the run config and bundle manifests) with errors that
//! name the file, the line and column, the key path, and what was expected.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_path_to_error::{Path as KeyPath, Segment};

use crate::util::file::{MAX_TEXT_BYTES, read_regular_vec};

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

/// A TOML file's text, kept so that later checks can point at lines.
#[derive(Debug, Clone)]
pub struct TomlFile {
    /// Path as given (used in messages).
    pub path: PathBuf,
    /// The whole text.
    pub text: String,
}

impl TomlFile {
    /// Read `path`; a missing or unreadable file, one that is not a regular file
    /// (a FIFO, a directory, a device) or is larger than
    /// [`MAX_TEXT_BYTES`](crate::util::file::MAX_TEXT_BYTES), and text that is not
    /// UTF-8 (with the line and column of the first bad byte) are each a
    /// [`SettingsError`] naming the file. Never blocks.
    pub fn read(path: &Path) -> Result<TomlFile, SettingsError> {
        let bytes = read_regular_vec(path, MAX_TEXT_BYTES, "the limit for a TOML file").map_err(|e| SettingsError {
            file: path.to_path_buf(),
            position: None,
            key: None,
            message: e.to_string(),
        })?;
        TomlFile::from_bytes(path, bytes)
    }

    /// The text of `bytes` read from `path`; not UTF-8 is refused at the first bad byte.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<TomlFile, SettingsError> {
        match String::from_utf8(bytes) {
            Ok(text) => Ok(TomlFile { path: path.to_path_buf(), text }),
            Err(e) => {
                let good = e.utf8_error().valid_up_to();
                // The valid prefix is text; count lines and columns in it.
                let prefix = TomlFile {
                    path: path.to_path_buf(),
                    text: String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned(),
                };
                Err(SettingsError {
                    file: path.to_path_buf(),
                    position: Some(prefix.line_col(good)),
                    key: None,
                    message: format!(
                        "byte 0x{:02x} is not valid UTF-8: expected a UTF-8 text file",
                        e.as_bytes()[good]
                    ),
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
            let key = key_path(e.path());
            self.toml_error(e.inner(), key)
        })
    }

    fn toml_error(&self, e: &toml::de::Error, key: Option<String>) -> SettingsError {
        let mut message = e.message().trim().to_string();
        if message == "duplicate key"
            && let Some(name) = e.span().and_then(|s| self.text.get(s)).map(str::trim).filter(|n| !n.is_empty())
        {
            // toml says only "duplicate key"; its span is the key as written, so name it.
            message = format!("duplicate key `{name}`: each key may be given once per table");
        }
        SettingsError { file: self.path.clone(), position: e.span().map(|s| self.line_col(s.start)), key, message }
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
        let mut end = offset.min(self.text.len());
        // A span never splits a character, but an offset from elsewhere might: never panic on it.
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.text[..end];
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

/// A dotted key path (`thresholds.labels."traffic light".on`, `gpio.outputs[0].pulse_ms`) from
/// the deserializer's path, without the segments `toml::Spanned` adds
/// (`$__serde_spanned_private_value`), which name no key a user wrote.
fn key_path(path: &KeyPath) -> Option<String> {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with("$__serde_spanned_private") {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Segment::Unknown => {}
        }
    }
    (!out.is_empty()).then_some(out)
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        section: Option<Section>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        n: Option<toml::Spanned<u32>>,
        list: Option<Vec<toml::Spanned<u32>>>,
        name: Option<String>,
    }

    fn refused(text: &str) -> SettingsError {
        TomlFile { path: "t.toml".into(), text: text.into() }.parse::<Doc>().unwrap_err()
    }

    #[test]
    fn key_paths_name_only_what_the_user_wrote() {
        let e = refused("[section]\nn = \"x\"\n");
        assert_eq!(e.key.as_deref(), Some("section.n"), "{e}");
        assert!(!e.to_string().contains("serde_spanned"), "{e}");
        assert_eq!(e.position, Some((2, 5)), "{e}");
        let e = refused("[section]\nlist = [1, \"x\"]\n");
        assert_eq!(e.key.as_deref(), Some("section.list[1]"), "{e}");
        assert!(!e.to_string().contains("serde_spanned"), "{e}");
    }

    #[test]
    fn a_duplicate_key_is_named() {
        let e = refused("[section]\nname = \"a\"\nname = \"b\"\n").to_string();
        assert!(e.contains("t.toml:3:1") && e.contains("duplicate key `name`"), "{e}");
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_at_its_line_and_column() {
        let e = TomlFile::from_bytes(Path::new("t.toml"), b"a = 1\nb = \"\xe9t\xe9\"\n".to_vec()).unwrap_err();
        assert_eq!(e.position, Some((2, 6)), "{e}");
        assert!(e.to_string().starts_with("t.toml:2:6: byte 0xe9 is not valid UTF-8"), "{e}");
    }

    #[test]
    fn reading_refuses_what_is_not_a_regular_file_and_says_what_it_is() {
        let d = tempfile::tempdir().unwrap();
        let e = TomlFile::read(d.path()).unwrap_err().to_string();
        assert!(e.ends_with(": is a directory, expected a regular file"), "{e}");
        let e = TomlFile::read(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(e, "/dev/zero: is a character device, expected a regular file");
        let e = TomlFile::read(&d.path().join("absent.toml")).unwrap_err().to_string();
        assert!(e.ends_with("absent.toml: not found"), "{e}");
        let big = d.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_TEXT_BYTES as usize + 1]).unwrap();
        let e = TomlFile::read(&big).unwrap_err().to_string();
        assert!(e.contains("is larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn line_col_never_splits_a_character() {
        let f = TomlFile { path: "x.toml".into(), text: "é = 1".into() };
        assert_eq!(f.line_col(1), (1, 1));
    }
}
