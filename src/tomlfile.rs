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

/// A TOML file's text, kept so that later checks can point at lines.
#[derive(Debug, Clone)]
pub struct TomlFile {
    /// Path as given (used in messages).
    pub path: PathBuf,
    /// The whole text.
    pub text: String,
}

impl TomlFile {
    /// Read `path`; a missing or unreadable file is a [`SettingsError`] naming it.
    pub fn read(path: &Path) -> Result<TomlFile, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError {
            file: path.to_path_buf(),
            position: None,
            key: None,
            message: format!("cannot read file: {e}"),
        })?;
        Ok(TomlFile { path: path.to_path_buf(), text })
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
