//! `vigil eval` and `vigil calibrate`: run a bundle over a labelled image set
//! with the daemon's preprocessing and engine, and judge or tune it.
//!
//! - [`dataset`]: the labelled-set formats (CSV or a directory per label).
//! - [`metrics`]: AP, mAP, precision/recall/F1, micro/macro/samples F1,
//!   Hamming loss, subset accuracy, co-occurrence, as scikit-learn defines them.
//! - [`calibrate`]: per-label `on`/`off` thresholds by objective, written
//!   atomically into the manifest or a separate thresholds file.
//! - [`report`]: the terminal tables, and `--report DIR` (Markdown, HTML, SVG plots).
//!
//! Images are scored on several threads, each with its own
//! [`Preprocessor`](crate::preprocess::Preprocessor), tract worker and input
//! tensor over the engine's one shared plan, exactly as the daemon's workers.
//! Metrics cover the labels the set declares unless told otherwise
//! ([`LabelChoice`]): scoring 1000 ImageNet labels on a set that names nine
//! would drown the nine in labels nobody labelled.

pub mod calibrate;
pub mod dataset;
pub mod metrics;
pub mod report;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::bundle::{Activation, Bundle, MANIFEST, Variant};
use crate::classify::Classifier;
use crate::decide::LabelRule;
use crate::engine::{self, EngineChoice, EngineError, InferenceEngine};
use crate::preprocess::Preprocessor;
use crate::thresholds::{self, RuleUpdate, ThresholdsFile, ThresholdsLayer, ThresholdsSpec, WriteError};
use crate::tomlfile::{SettingsError, TomlFile};
use crate::util::{Written, write_atomically};

pub use calibrate::{Choice, Objective};
pub use dataset::{LabelledSet, SetError, SetFormat};
pub use metrics::{Metrics, ScoreTable};

/// Why an evaluation or calibration stopped.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The bundle's manifest or a thresholds file was refused.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The model could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The labelled set was refused (format, unknown label, missing file, empty).
    #[error(transparent)]
    Set(#[from] SetError),
    /// An option's value was refused (e.g. an unknown label in `--labels`).
    #[error("{0}")]
    Usage(String),
    /// Some images could not be read or decoded; no metrics were computed.
    #[error("{}", images_message(.0))]
    Images(Vec<ImageFailure>),
    /// A file (thresholds, report) could not be written; an old one is left untouched.
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl From<WriteError> for EvalError {
    fn from(e: WriteError) -> EvalError {
        EvalError::Write { path: e.path, reason: e.reason }
    }
}

/// An image of the set that could not be scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFailure {
    /// The image file.
    pub path: PathBuf,
    /// Where the set lists it (`set.csv:4`).
    pub origin: String,
    /// Why (cannot read, cannot decode, inference failed).
    pub reason: String,
}

fn images_message(failures: &[ImageFailure]) -> String {
    let mut s = format!("{} image(s) of the set could not be scored, so no metrics were computed:", failures.len());
    for f in failures.iter().take(20) {
        s.push_str(&format!("\n  {}: {}: {}", f.origin, f.path.display(), f.reason));
    }
    if failures.len() > 20 {
        s.push_str(&format!("\n  … and {} more", failures.len() - 20));
    }
    s
}

/// Told how far scoring has got; the CLI draws a progress bar with it.
pub trait Progress: Sync {
    /// `total` images are about to be scored.
    fn start(&self, _total: usize) {}
    /// One more image is done (called from the worker threads).
    fn advance(&self) {}
    /// Scoring is over.
    fn finish(&self) {}
}

/// No progress reporting.
pub struct Quiet;

impl Progress for Quiet {}

/// Which labels the metrics cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChoice {
    /// The labels the set declares (default).
    Set,
    /// Every label of the model.
    All,
    /// These labels, in this order.
    Named(Vec<String>),
}

impl FromStr for LabelChoice {
    type Err = String;

    /// `set`, `all`, or `;`-separated label names (`tabby;espresso`).
    fn from_str(s: &str) -> Result<LabelChoice, String> {
        match s.trim() {
            "set" => Ok(LabelChoice::Set),
            "all" => Ok(LabelChoice::All),
            list => {
                let names: Vec<String> =
                    list.split(';').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
                if names.is_empty() {
                    Err("expected `set`, `all` or label names separated by `;`".into())
                } else {
                    Ok(LabelChoice::Named(names))
                }
            }
        }
    }
}

/// What to run over which set.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Bundle directory.
    pub model: PathBuf,
    /// fp32 or int8.
    pub variant: Variant,
    /// The labelled set (CSV or directory).
    pub data: PathBuf,
    /// A thresholds file layered over the manifest's (as a run config's `[model] thresholds`).
    pub thresholds: Option<PathBuf>,
    /// Which labels to evaluate.
    pub labels: LabelChoice,
    /// Scoring threads (at least 1).
    pub workers: usize,
    /// Which engine scores the images.
    pub engine: EngineChoice,
}

/// How long scoring took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    /// Images scored.
    pub images: usize,
    /// Threads used.
    pub workers: usize,
    /// Wall-clock seconds for reading, preprocessing and inference of the whole set.
    pub elapsed_s: f64,
    /// Wall-clock milliseconds per image (`elapsed_s / images`; with N workers, about N times less than one image's latency).
    pub ms_per_image: f64,
    /// Images per second.
    pub images_per_s: f64,
}

/// A bundle, its current rules and a labelled set, scored.
struct Scored {
    bundle: Bundle,
    rules: Vec<LabelRule>,
    set: LabelledSet,
    /// Model label index of each column of `table`.
    columns: Vec<usize>,
    table: ScoreTable,
    timing: Timing,
    notes: Vec<String>,
}

/// What `vigil eval` found.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Bundle directory.
    pub model: PathBuf,
    /// Which model file ran.
    pub variant: String,
    /// The labelled set.
    pub data: PathBuf,
    /// Its layout.
    pub format: SetFormat,
    /// Files the thresholds came from, general first.
    pub thresholds_from: Vec<PathBuf>,
    /// Scoring time.
    pub timing: Timing,
    /// The labels evaluated (metrics columns).
    pub labels: Vec<String>,
    /// The numbers.
    pub metrics: Metrics,
    /// Images having both labels, in `labels` order; the diagonal is each label's support.
    pub cooccurrence: Vec<Vec<usize>>,
    /// What the numbers cover and leave out.
    pub notes: Vec<String>,
    /// Truth and scores per image (for plots; not in the JSON).
    #[serde(skip)]
    pub table: ScoreTable,
}

/// Run the model over the set and compute every metric at the current thresholds.
pub fn evaluate(opts: &EvalOptions, progress: &dyn Progress) -> Result<EvalReport, EvalError> {
    let file = opts.thresholds.as_deref().map(ThresholdsFile::load).transpose()?;
    let s = score(opts, file.as_ref(), progress)?;
    let on: Vec<f32> = s.columns.iter().map(|&c| s.rules[c].on).collect();
    let mut thresholds_from = vec![s.bundle.manifest.path.clone()];
    thresholds_from.extend(file.map(|f| f.file.path));
    Ok(EvalReport {
        model: opts.model.clone(),
        variant: opts.variant.to_string(),
        data: opts.data.clone(),
        format: s.set.format,
        thresholds_from,
        timing: s.timing,
        labels: s.table.labels.clone(),
        metrics: metrics::compute(&s.table, &on),
        cooccurrence: metrics::cooccurrence(&s.table),
        notes: s.notes,
        table: s.table,
    })
}

/// What to calibrate and where to write it.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// The set to run (its `thresholds` field is ignored: see `output`).
    pub eval: EvalOptions,
    /// What to optimise.
    pub objective: Objective,
    /// `off = on - margin` (clamped at 0).
    pub margin: f32,
    /// Write a separate thresholds file instead of the bundle's manifest. If it
    /// exists, its thresholds are the "before" and it is updated in place.
    pub output: Option<PathBuf>,
    /// Compute and report, write nothing.
    pub dry_run: bool,
}

/// One label's calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelCalibration {
    /// Label name.
    pub label: String,
    /// Images with the label.
    pub support: usize,
    /// `on` before.
    pub before_on: f32,
    /// `off` before.
    pub before_off: f32,
    /// `on` after (unchanged when not calibrated).
    pub on: f32,
    /// `off` after.
    pub off: f32,
    /// Whether a threshold was chosen (false: no positives in the set).
    pub calibrated: bool,
    /// Whether the objective's constraint is met; `None` when not calibrated.
    pub objective_met: Option<bool>,
}

/// What `vigil calibrate` did.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrateReport {
    /// Bundle directory.
    pub model: PathBuf,
    /// Which model file ran.
    pub variant: String,
    /// The labelled set.
    pub data: PathBuf,
    /// The objective.
    pub objective: Objective,
    /// `on - off`.
    pub margin: f32,
    /// Scoring time.
    pub timing: Timing,
    /// The labels calibrated and evaluated.
    pub labels: Vec<String>,
    /// Per label, before and after.
    pub thresholds: Vec<LabelCalibration>,
    /// Metrics at the old thresholds.
    pub before: Metrics,
    /// Metrics at the new thresholds, on the same set (in-sample).
    pub after: Metrics,
    /// The file written; `None` on a dry run or when nothing changed.
    pub written: Option<Written>,
    /// What the numbers cover and leave out.
    pub notes: Vec<String>,
}

/// Any `[thresholds]` table in a TOML file that may hold other tables (a manifest).
#[derive(Deserialize)]
struct AnyThresholds {
    #[serde(default)]
    thresholds: ThresholdsSpec,
}

/// Choose thresholds on the set, write them (unless a dry run), report before and after.
pub fn calibrate(opts: &CalibrateOptions, progress: &dyn Progress) -> Result<CalibrateReport, EvalError> {
    if !opts.margin.is_finite() || !(0.0..=1.0).contains(&opts.margin) {
        return Err(EvalError::Usage(format!("--margin {}: expected a number from 0 to 1", opts.margin)));
    }
    let existing = match &opts.output {
        Some(p) if p.exists() => Some(ThresholdsFile::load(p)?),
        _ => None,
    };
    let s = score(&opts.eval, existing.as_ref(), progress)?;
    let mut changes = Vec::new();
    let mut updates = Vec::new();
    for (j, &c) in s.columns.iter().enumerate() {
        let rule = s.rules[c];
        let choice = calibrate::choose(&s.table.truth_column(j), &s.table.score_column(j), opts.objective);
        let (on, off) = match choice {
            Some(ch) => (ch.on, calibrate::off_below(ch.on, opts.margin)),
            None => (rule.on, rule.off),
        };
        if choice.is_some() {
            updates.push(RuleUpdate { label: s.table.labels[j].clone(), on, off });
        }
        changes.push(LabelCalibration {
            label: s.table.labels[j].clone(),
            support: s.table.truth.iter().filter(|row| row[j]).count(),
            before_on: rule.on,
            before_off: rule.off,
            on,
            off,
            calibrated: choice.is_some(),
            objective_met: choice.map(|c| c.met),
        });
    }
    let before_on: Vec<f32> = changes.iter().map(|c| c.before_on).collect();
    let after_on: Vec<f32> = changes.iter().map(|c| c.on).collect();
    let mut notes = s.notes;
    notes.push(
        "before and after are measured on the set the thresholds were chosen on (in-sample); \
         check them on images the calibration did not see with `vigil eval`"
            .into(),
    );
    let skipped: Vec<&str> = changes.iter().filter(|c| !c.calibrated).map(|c| c.label.as_str()).collect();
    if !skipped.is_empty() {
        notes.push(format!("kept the thresholds of labels with no positives in the set: {}", skipped.join(", ")));
    }
    let target = opts.output.clone().unwrap_or_else(|| s.bundle.dir.join(MANIFEST));
    let written = if updates.is_empty() {
        notes.push("no label had positives: nothing written".into());
        None
    } else {
        let text = updated_text(&s.bundle, &target, opts, &updates, s.set.images.len())?;
        if opts.dry_run {
            notes.push(format!("dry run: {} left unchanged", target.display()));
            None
        } else {
            let written = write_atomically(&target, &text)
                .map_err(|e| EvalError::Write { path: target.clone(), reason: e.to_string() })?;
            Some(written)
        }
    };
    Ok(CalibrateReport {
        model: opts.eval.model.clone(),
        variant: opts.eval.variant.to_string(),
        data: opts.eval.data.clone(),
        objective: opts.objective,
        margin: opts.margin,
        timing: s.timing,
        labels: s.table.labels.clone(),
        before: metrics::compute(&s.table, &before_on),
        after: metrics::compute(&s.table, &after_on),
        thresholds: changes,
        written,
        notes,
    })
}

/// The new text of `target` with `updates`, checked the way the daemon will read it.
fn updated_text(
    bundle: &Bundle,
    target: &Path,
    opts: &CalibrateOptions,
    updates: &[RuleUpdate],
    images: usize,
) -> Result<String, EvalError> {
    let current = thresholds::file::read_existing(target)?;
    let comment = format!(
        "Per-label thresholds chosen by `vigil calibrate` (objective {}, margin {}) on {} ({images} images).\n\
         Use it from a run config with `[model] thresholds = \"FILE\"`, or `vigil eval --thresholds FILE`.",
        opts.objective,
        opts.margin,
        opts.eval.data.display()
    );
    let text = thresholds::file::edit(target, current.as_deref(), updates, &comment)?;
    // Refuse to write anything the daemon would refuse to read.
    let file = TomlFile { path: target.to_path_buf(), text };
    if opts.output.is_some() {
        let layer = ThresholdsFile::from_file(file.clone())?;
        thresholds::rules_for(bundle, Some(&layer), None)?;
    } else {
        let spec = file.parse::<AnyThresholds>()?.thresholds;
        thresholds::resolve(&bundle.labels, &[ThresholdsLayer::new(&spec, &file)])?;
    }
    Ok(file.text)
}

/// Load the bundle, its rules (with `file` layered over the manifest) and the
/// set; score every image on `opts.workers` threads.
fn score(opts: &EvalOptions, file: Option<&ThresholdsFile>, progress: &dyn Progress) -> Result<Scored, EvalError> {
    let bundle = Bundle::load(&opts.model)?;
    let rules = thresholds::rules_for(&bundle, file, None)?;
    let set = LabelledSet::load(&opts.data, &bundle.labels)?;
    let mut notes = Vec::new();
    let columns: Vec<usize> = match &opts.labels {
        LabelChoice::Set => {
            if set.declared.is_empty() {
                return Err(EvalError::Set(SetError {
                    set: set.source.clone(),
                    problems: vec![dataset::Problem {
                        at: set.source.display().to_string(),
                        message: "no image has a label: expected at least one label in the set (or name the labels to evaluate with --labels)".into(),
                    }],
                }));
            }
            notes.push(format!(
                "metrics cover the {} labels the set names (of the model's {}); the model's scores for other labels are not counted",
                set.declared.len(),
                bundle.labels.len()
            ));
            set.declared.clone()
        }
        LabelChoice::All => (0..bundle.labels.len()).collect(),
        LabelChoice::Named(names) => {
            names
                .iter()
                .map(|n| {
                    bundle.labels.iter().position(|l| l == n).ok_or_else(|| {
                        EvalError::Usage(format!("--labels: {}", dataset::unknown_label(n, &bundle.labels)))
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    if bundle.activation == Activation::Softmax {
        notes.push(
            "the model is single-label (softmax): its scores share one unit of probability per image, so a multi-label image splits it"
                .into(),
        );
    }
    let engine = engine::load(&bundle, opts.variant, &opts.engine)?.engine;
    let started = Instant::now();
    progress.start(set.images.len());
    let rows = score_images(engine.as_ref(), &bundle, &rules, &set, &columns, opts.workers.max(1), progress);
    progress.finish();
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    let mut table =
        ScoreTable { labels: columns.iter().map(|&c| bundle.labels[c].clone()).collect(), ..ScoreTable::default() };
    for (image, row) in set.images.iter().zip(rows) {
        match row {
            Ok(scores) => {
                table.truth.push(columns.iter().map(|c| image.labels.contains(c)).collect());
                table.scores.push(scores);
            }
            Err(reason) => {
                failures.push(ImageFailure { path: image.path.clone(), origin: image.origin.clone(), reason })
            }
        }
    }
    if !failures.is_empty() {
        return Err(EvalError::Images(failures));
    }
    let n = set.images.len();
    let with_positives = (0..columns.len()).filter(|&j| table.truth.iter().any(|r| r[j])).count();
    if with_positives < columns.len() {
        let none: Vec<&str> = (0..columns.len())
            .filter(|&j| !table.truth.iter().any(|r| r[j]))
            .map(|j| table.labels[j].as_str())
            .take(10)
            .collect();
        notes.push(format!(
            "{} of {} labels have no positives in the set (AP null; they count as 0 in macro precision/recall/F1): {}{}",
            columns.len() - with_positives,
            columns.len(),
            none.join(", "),
            if columns.len() - with_positives > none.len() { ", …" } else { "" }
        ));
    }
    notes.push(format!("mAP is the mean AP over the {with_positives} labels with at least one positive"));
    let timing = Timing {
        images: n,
        workers: opts.workers.max(1).min(n),
        elapsed_s,
        ms_per_image: elapsed_s * 1000.0 / n as f64,
        images_per_s: n as f64 / elapsed_s.max(1e-9),
    };
    Ok(Scored { bundle, rules, set, columns, table, timing, notes })
}

/// One image's scores (the evaluated labels only), or why it could not be scored.
type Row = Result<Vec<f32>, String>;

/// Score every image of `set` (only the `columns` labels are kept) on
/// `workers` threads. Each thread owns a [`Classifier`] (preprocessor, tract
/// worker, input tensor) over the engine's shared plan and takes the next
/// unscored image, so slow images do not hold the others up.
fn score_images(
    engine: &dyn InferenceEngine,
    bundle: &Bundle,
    rules: &[LabelRule],
    set: &LabelledSet,
    columns: &[usize],
    workers: usize,
    progress: &dyn Progress,
) -> Vec<Row> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Row>>> = Mutex::new(vec![None; set.images.len()]);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(set.images.len()) {
            scope.spawn(|| {
                let worker = engine.new_worker().and_then(|w| Ok((w, engine.new_input()?)));
                let mut classifier = match worker {
                    Ok((worker, input)) => Some(Classifier {
                        labels: &bundle.labels,
                        rules,
                        pre: Preprocessor::new(&bundle.input),
                        worker,
                        input,
                    }),
                    Err(e) => {
                        log::error!("cannot start a scoring worker: {e}");
                        None
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(image) = set.images.get(i) else { break };
                    let row = match &mut classifier {
                        Some(c) => {
                            let r = c.classify(&image.path, 0, true);
                            match r.error {
                                Some(e) => Err(e),
                                None => Ok(columns.iter().map(|&c| r.scores[c]).collect()),
                            }
                        }
                        None => Err("no scoring worker could be started".to_string()),
                    };
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(row);
                    progress.advance();
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not scored".into())))
        .collect()
}
