//! Per-label decision rules as written in TOML (a bundle manifest's
//! `[thresholds]`, a run config's `[thresholds]`), merged and validated into
//! the [`LabelRule`]s the decide stage runs.
//!
//! Precedence, field by field (later wins): built-in defaults, the manifest's
//! `default`, the thresholds file's `default` (a run config's `[model]
//! thresholds`, e.g. from `vigil calibrate --output`), the config's `default`,
//! the manifest's per-label entry, the thresholds file's per-label entry, the
//! config's per-label entry. Specific beats general; at the same level the
//! deployment (config) beats the calibration file, which beats the model's manifest.
//!
//! Everything about thresholds lives here: the TOML format ([`ThresholdsSpec`]),
//! merging and validation ([`resolve`], [`rules_for`]), thresholds files
//! ([`ThresholdsFile`]) and the one writer that both the console's `save` and
//! `vigil calibrate` use ([`file::save`]).

pub mod file;

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::bundle::Bundle;
use crate::decide::LabelRule;
use crate::tomlfile::{SettingsError, TomlFile};

pub use file::{RuleUpdate, ThresholdsFile, WriteError};

/// The longest N-of-M window the decide stage tracks (one bit per frame in a u64).
pub const MAX_WINDOW: u32 = 64;

/// One label's rule, every field optional so layers can be merged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Score at or above which a frame counts towards switching on.
    pub on: Option<Spanned<f32>>,
    /// Score below which the label starts cooling down towards off.
    pub off: Option<Spanned<f32>>,
    /// How many frames in the window must be at or above `on` to switch on.
    pub min_frames: Option<Spanned<u32>>,
    /// Window length M for N-of-M; defaults to `min_frames` (N consecutive frames).
    pub window: Option<Spanned<u32>>,
    /// How long the score must stay below `off` before switching off.
    pub hold_ms: Option<Spanned<u64>>,
}

/// A `[thresholds]` table: a default rule and per-label rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsSpec {
    /// Applies to every label.
    #[serde(default)]
    pub default: RuleSpec,
    /// Per label name.
    #[serde(default)]
    pub labels: BTreeMap<String, RuleSpec>,
}

/// A `[thresholds]` table together with the file it came from (for messages).
#[derive(Debug, Clone, Copy)]
pub struct ThresholdsLayer<'a> {
    /// The table.
    pub spec: &'a ThresholdsSpec,
    /// Its file.
    pub file: &'a TomlFile,
    /// The key prefix of the table in that file (`thresholds`).
    pub prefix: &'a str,
}

/// Where a merged field's value came from, so errors can point at it.
#[derive(Clone)]
struct Origin<'a> {
    file: Option<&'a TomlFile>,
    span: std::ops::Range<usize>,
    key: String,
}

impl Origin<'_> {
    /// `file:line:col (key)`, or the built-in default's name.
    fn describe(&self) -> String {
        match self.file {
            Some(f) => {
                let (line, col) = f.line_col(self.span.start);
                format!("{}:{line}:{col} {}", f.path.display(), self.key)
            }
            None => self.key.clone(),
        }
    }
}

/// Where a label's `on` and `off` came from: `file:line:col key`, or `(built-in default on)`.
/// `vigil check` prints it, so that a config default shadowed by a manifest's per-label
/// value is visible rather than silently doing nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSource {
    /// Where `on` was set.
    pub on: String,
    /// Where `off` was set.
    pub off: String,
}

struct Field<'a, T> {
    value: T,
    origin: Origin<'a>,
}

impl<'a, T: Copy> Field<'a, T> {
    fn builtin(value: T, name: &str) -> Self {
        Field { value, origin: Origin { file: None, span: 0..0, key: format!("(built-in default {name})") } }
    }

    fn take(&mut self, from: &Option<Spanned<T>>, file: &'a TomlFile, key: String) {
        if let Some(s) = from {
            self.value = *s.get_ref();
            self.origin = Origin { file: Some(file), span: s.span(), key };
        }
    }

    fn error(&self, message: String) -> SettingsError {
        match self.origin.file {
            Some(f) => f.error_at(self.origin.span.clone(), self.origin.key.clone(), message),
            None => {
                SettingsError { file: "(built-in)".into(), position: None, key: Some(self.origin.key.clone()), message }
            }
        }
    }
}

impl<'a> ThresholdsLayer<'a> {
    /// The `[thresholds]` table `spec` of `file`.
    pub fn new(spec: &'a ThresholdsSpec, file: &'a TomlFile) -> ThresholdsLayer<'a> {
        ThresholdsLayer { spec, file, prefix: "thresholds" }
    }
}

/// One rule per label of `bundle`, merged in precedence order: its manifest's
/// `[thresholds]`, then a thresholds `file` (a config's `[model] thresholds`, or
/// `vigil eval --thresholds`), then a run config's own `[thresholds]` (`config`).
pub fn rules_for(
    bundle: &Bundle,
    file: Option<&ThresholdsFile>,
    config: Option<ThresholdsLayer<'_>>,
) -> Result<Vec<LabelRule>, SettingsError> {
    Ok(rules_for_traced(bundle, file, config)?.into_iter().map(|(rule, _)| rule).collect())
}

/// [`rules_for`], with where each label's `on` and `off` came from.
pub fn rules_for_traced(
    bundle: &Bundle,
    file: Option<&ThresholdsFile>,
    config: Option<ThresholdsLayer<'_>>,
) -> Result<Vec<(LabelRule, RuleSource)>, SettingsError> {
    let mut layers = vec![ThresholdsLayer::new(&bundle.thresholds, &bundle.manifest)];
    layers.extend(file.map(|f| ThresholdsLayer::new(&f.spec, &f.file)));
    layers.extend(config);
    resolve_traced(&bundle.labels, &layers)
}

/// Every threshold a layer gives, on its own: a score in [0, 1], and `off <= on` where one
/// table gives both. Checked even where a later layer shadows the value, so that a bad
/// number in a file is refused where it is written, not silently kept for the day the
/// shadowing layer changes.
fn check_given(layer: &ThresholdsLayer<'_>) -> Result<(), SettingsError> {
    let tables = std::iter::once((format!("{}.default", layer.prefix), &layer.spec.default))
        .chain(layer.spec.labels.iter().map(|(name, r)| (format!("{}.labels.{name}", layer.prefix), r)));
    for (key, rule) in tables {
        for (name, value) in [("on", &rule.on), ("off", &rule.off)] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(v.get_ref())
            {
                return Err(layer.file.error_at(
                    v.span(),
                    format!("{key}.{name}"),
                    format!("threshold {} is outside [0, 1]: expected a score between 0 and 1", v.get_ref()),
                ));
            }
        }
        if let (Some(on), Some(off)) = (&rule.on, &rule.off)
            && off.get_ref() > on.get_ref()
        {
            return Err(layer.file.error_at(
                off.span(),
                format!("{key}.off"),
                format!(
                    "off threshold {} is above its on threshold {}: expected off <= on",
                    off.get_ref(),
                    on.get_ref()
                ),
            ));
        }
    }
    Ok(())
}

/// Built-in rule: 0.5 on, 0.4 off, switch on at the first frame, off at the first frame below.
pub const BUILTIN: LabelRule = LabelRule { on: 0.5, off: 0.4, min_frames: 1, window: 1, hold_ms: 0 };

/// Merge `layers` (in the documented precedence order: general layers first)
/// into one validated rule per label.
///
/// Per-label tables must name labels the model has; values must satisfy
/// `0 <= off <= on <= 1`, `1 <= min_frames <= window <= 64`.
pub fn resolve(labels: &[String], layers: &[ThresholdsLayer<'_>]) -> Result<Vec<LabelRule>, SettingsError> {
    Ok(resolve_traced(labels, layers)?.into_iter().map(|(rule, _)| rule).collect())
}

/// [`resolve`], with where each label's `on` and `off` came from.
pub fn resolve_traced(
    labels: &[String],
    layers: &[ThresholdsLayer<'_>],
) -> Result<Vec<(LabelRule, RuleSource)>, SettingsError> {
    for layer in layers {
        check_given(layer)?;
    }
    for layer in layers {
        for name in layer.spec.labels.keys() {
            if !labels.iter().any(|l| l == name) {
                let shown: Vec<&str> = labels.iter().take(8).map(String::as_str).collect();
                return Err(layer.file.error(
                    Some(format!("{}.labels.{name}", layer.prefix)),
                    format!(
                        "unknown label `{name}`: expected one of the model's {} labels ({}{})",
                        labels.len(),
                        shown.join(", "),
                        if labels.len() > shown.len() { ", …" } else { "" }
                    ),
                ));
            }
        }
    }
    labels
        .iter()
        .map(|label| {
            let mut on = Field::builtin(BUILTIN.on, "on");
            let mut off = Field::builtin(BUILTIN.off, "off");
            let mut min_frames = Field::builtin(BUILTIN.min_frames, "min_frames");
            let mut window: Option<Field<u32>> = None;
            let mut hold_ms = Field::builtin(BUILTIN.hold_ms, "hold_ms");
            let defaults = layers.iter().map(|l| (l, &l.spec.default, format!("{}.default", l.prefix)));
            let specific = layers
                .iter()
                .filter_map(|l| l.spec.labels.get(label).map(|r| (l, r, format!("{}.labels.{label}", l.prefix))));
            for (layer, rule, key) in defaults.chain(specific) {
                on.take(&rule.on, layer.file, format!("{key}.on"));
                off.take(&rule.off, layer.file, format!("{key}.off"));
                min_frames.take(&rule.min_frames, layer.file, format!("{key}.min_frames"));
                hold_ms.take(&rule.hold_ms, layer.file, format!("{key}.hold_ms"));
                if rule.window.is_some() {
                    let w = window.get_or_insert_with(|| Field::builtin(0, "window"));
                    w.take(&rule.window, layer.file, format!("{key}.window"));
                }
            }
            for f in [&on, &off] {
                if !(0.0..=1.0).contains(&f.value) {
                    return Err(
                        f.error(format!("threshold {} is outside [0, 1]: expected a score between 0 and 1", f.value))
                    );
                }
            }
            if off.value > on.value {
                return Err(off.error(format!(
                    "label `{label}`: off threshold {} is above its on threshold {}: expected off <= on",
                    off.value, on.value
                )));
            }
            if min_frames.value == 0 || min_frames.value > MAX_WINDOW {
                return Err(min_frames.error(format!("min_frames {} : expected 1 to {MAX_WINDOW}", min_frames.value)));
            }
            let window_value = match &window {
                Some(w) if w.value < min_frames.value || w.value > MAX_WINDOW => {
                    return Err(w.error(format!(
                        "label `{label}`: window {} : expected min_frames ({}) to {MAX_WINDOW}",
                        w.value, min_frames.value
                    )));
                }
                Some(w) => w.value,
                None => min_frames.value,
            };
            let rule = LabelRule {
                on: on.value,
                off: off.value,
                min_frames: min_frames.value,
                window: window_value,
                hold_ms: hold_ms.value,
            };
            Ok((rule, RuleSource { on: on.origin.describe(), off: off.origin.describe() }))
        })
        .collect()
}
