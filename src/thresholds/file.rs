//! Thresholds files, and the one writer of thresholds into TOML files.
//!
//! A thresholds file holds only a `[thresholds]` table, in the format of a
//! manifest's or a run config's; a run config layers it with `[model]
//! thresholds = "FILE"`. Two things write thresholds: the console's `save` (into
//! that file) and `vigil calibrate` (into it, or into a bundle's `model.toml`).
//! Both go through [`edit`] and [`save`]: the rest of the file is kept, comments
//! and layout included; values are written as the shortest decimal that reads
//! back as the same f32 (`0.9`, not `0.8999999761581421`); the file is replaced
//! atomically and the previous version kept as `NAME.bak`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml_edit::{DocumentMut, Item, Table, value};

use super::ThresholdsSpec;
use crate::tomlfile::{SettingsError, TomlFile};
use crate::util::file::{MAX_TEXT_BYTES, ReadError, read_regular_vec};
use crate::util::{Written, write_atomically};

/// A thresholds file: TOML holding only a `[thresholds]` table.
#[derive(Debug, Clone)]
pub struct ThresholdsFile {
    /// The file, for messages pointing into it.
    pub file: TomlFile,
    /// Its `[thresholds]` table.
    pub spec: ThresholdsSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdsFileToml {
    #[serde(default)]
    thresholds: ThresholdsSpec,
}

impl ThresholdsFile {
    /// Read and parse `path`; its labels are checked when layered ([`super::resolve`]).
    pub fn load(path: &Path) -> Result<ThresholdsFile, SettingsError> {
        ThresholdsFile::from_file(TomlFile::read(path)?)
    }

    /// Parse an already-read file.
    pub fn from_file(file: TomlFile) -> Result<ThresholdsFile, SettingsError> {
        let t: ThresholdsFileToml = file.parse()?;
        Ok(ThresholdsFile { file, spec: t.thresholds })
    }
}

/// One label's new `on`/`off`, to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleUpdate {
    /// Label name.
    pub label: String,
    /// New `on`.
    pub on: f32,
    /// New `off`.
    pub off: f32,
}

/// A thresholds file could not be written; the old one is untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write {}: {reason}", path.display())]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

/// An f32 as the f64 of its shortest decimal form, so TOML shows `0.4`, not `0.4000000059604645`.
pub fn as_decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The current text of `path`, or `None` when there is no such file yet.
pub fn read_existing(path: &Path) -> Result<Option<String>, WriteError> {
    let fail = |reason: String| WriteError { path: path.to_path_buf(), reason };
    match read_regular_vec(path, MAX_TEXT_BYTES, "the limit for a TOML file") {
        Ok(bytes) => {
            String::from_utf8(bytes).map(Some).map_err(|_| fail("it is not UTF-8 text, left unchanged".into()))
        }
        Err(ReadError::NotFound) => Ok(None),
        Err(e) => Err(fail(format!("it {e}, left unchanged"))),
    }
}

/// The TOML text of `existing` (the current text of `path`), or of a new file
/// headed by `comment`, with each update set as `[thresholds.labels."NAME"] on/off`.
/// Everything else in the file, comments and layout included, is kept.
pub fn edit(path: &Path, existing: Option<&str>, updates: &[RuleUpdate], comment: &str) -> Result<String, WriteError> {
    let fail = |reason: String| WriteError { path: path.to_path_buf(), reason };
    let mut doc = match existing {
        Some(text) => text
            .parse::<DocumentMut>()
            .map_err(|e| fail(format!("not valid TOML, left unchanged: {}", e.to_string().trim())))?,
        None => {
            let mut doc = DocumentMut::new();
            doc.decor_mut().set_prefix(comment.lines().map(|l| format!("# {l}\n")).collect::<String>() + "\n");
            doc
        }
    };
    let not_a_table = |key: &str| fail(format!("`{key}` is not a table: expected `[{key}]`, left unchanged"));
    let root = doc.as_table_mut();
    if !root.contains_key("thresholds") {
        let mut t = Table::new();
        t.set_implicit(true);
        root.insert("thresholds", Item::Table(t));
    }
    let thresholds =
        root.get_mut("thresholds").and_then(Item::as_table_like_mut).ok_or_else(|| not_a_table("thresholds"))?;
    if !thresholds.contains_key("labels") {
        let mut t = Table::new();
        // Only the per-label tables get headers; no empty `[thresholds.labels]`.
        t.set_implicit(true);
        thresholds.insert("labels", Item::Table(t));
    }
    let labels = thresholds
        .get_mut("labels")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| not_a_table("thresholds.labels"))?;
    for u in updates {
        if !labels.contains_key(&u.label) {
            labels.insert(&u.label, Item::Table(Table::new()));
        }
        let entry = labels
            .get_mut(&u.label)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| not_a_table(&format!("thresholds.labels.\"{}\"", u.label)))?;
        entry.insert("on", value(as_decimal(u.on)));
        entry.insert("off", value(as_decimal(u.off)));
    }
    Ok(doc.to_string())
}

/// Write `updates` into the TOML file at `path` (created, headed by `comment`,
/// if missing): [`edit`], then replaced atomically with a `.bak` of the old one.
pub fn save(path: &Path, updates: &[RuleUpdate], comment: &str) -> Result<Written, WriteError> {
    let existing = read_existing(path)?;
    let text = edit(path, existing.as_deref(), updates, comment)?;
    write_atomically(path, &text).map_err(|e| WriteError { path: path.to_path_buf(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_keeps_the_rest_of_the_file() {
        let text = "# top\nname = \"m\"\n\n[thresholds]\ndefault = { on = 0.5, off = 0.35 }\n\n[thresholds.labels.\"tabby\"]\nmin_frames = 2 # keep\n\n[provenance]\nsource = \"x\"\n";
        let updates = vec![
            RuleUpdate { label: "tabby".into(), on: 0.2, off: 0.1 },
            RuleUpdate { label: "Egyptian cat".into(), on: 0.7, off: 0.6 },
        ];
        let out = edit(Path::new("m.toml"), Some(text), &updates, "").unwrap();
        assert!(out.starts_with("# top\nname = \"m\""), "{out}");
        assert!(out.contains("min_frames = 2 # keep"), "{out}");
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        let labels = &parsed["thresholds"]["labels"];
        assert_eq!(labels["tabby"]["on"].as_float(), Some(0.2));
        assert_eq!(labels["tabby"]["min_frames"].as_integer(), Some(2));
        assert_eq!(labels["Egyptian cat"]["off"].as_float(), Some(0.6));
        assert_eq!(parsed["provenance"]["source"].as_str(), Some("x"));
        let fresh = edit(Path::new("new.toml"), None, &updates[..1], "made by a test").unwrap();
        assert!(fresh.starts_with("# made by a test\n"), "{fresh}");
        assert!(!fresh.contains("[thresholds]\n") && !fresh.contains("[thresholds.labels]\n"), "{fresh}");
        assert!(fresh.contains("[thresholds.labels.tabby]\non = 0.2\noff = 0.1\n"), "{fresh}");
    }

    #[test]
    fn values_read_back_as_the_same_f32() {
        for x in [0.9999f32, 0.05, 0.1, 0.35, 1.0, 0.0, 0.123_456_7] {
            assert_eq!(as_decimal(x) as f32, x);
        }
        assert_eq!(as_decimal(0.9).to_string(), "0.9");
    }

    #[test]
    fn save_creates_then_updates_with_a_backup_and_is_readable_as_a_thresholds_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("thresholds.toml");
        let first = save(&p, &[RuleUpdate { label: "car".into(), on: 0.7, off: 0.6 }], "by a test").unwrap();
        assert_eq!(first.backup, None);
        let second = save(&p, &[RuleUpdate { label: "bus".into(), on: 0.8, off: 0.5 }], "ignored").unwrap();
        assert!(second.backup.is_some());
        let file = ThresholdsFile::load(&p).unwrap();
        assert_eq!(file.spec.labels["car"].on.as_ref().map(|v| *v.get_ref()), Some(0.7));
        assert_eq!(file.spec.labels["bus"].off.as_ref().map(|v| *v.get_ref()), Some(0.5));
        assert!(file.file.text.starts_with("# by a test\n"));
    }

    #[test]
    fn save_into_a_missing_directory_fails_and_names_the_file() {
        let e = save(Path::new("/nonexistent-vigil-dir/t.toml"), &[], "").unwrap_err();
        assert!(e.to_string().contains("/nonexistent-vigil-dir/t.toml"), "{e}");
    }
}
