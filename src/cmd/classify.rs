//! `vigil classify`: score image files with a bundle and print the best labels
//! and what each label's `on` threshold decides, as a table or JSON lines.

use std::path::PathBuf;

use super::{EXIT_OK, EXIT_RUNTIME, Error};
use vigil::bundle::{Bundle, Variant};
use vigil::classify::Classifier;
use vigil::engine::{self, EngineChoice};
use vigil::preprocess::Preprocessor;
use vigil::thresholds;

/// What `vigil classify` was asked for.
pub struct Options {
    /// Bundle directory.
    pub model: PathBuf,
    /// Which model of the bundle.
    pub variant: Variant,
    /// How many of the best scores to show.
    pub top: usize,
    /// One JSON object per image.
    pub json: bool,
    /// With `json`, every label's score.
    pub all_scores: bool,
    /// The image files.
    pub images: Vec<PathBuf>,
    /// Which engine runs the model.
    pub engine: EngineChoice,
}

/// Classify every image; exit 1 if any could not be read or decoded.
pub fn run(o: &Options) -> Result<i32, Error> {
    let bundle = Bundle::load(&o.model)?;
    let rules = thresholds::rules_for(&bundle, None, None)?;
    let engine = engine::load(&bundle, o.variant, &o.engine)?.engine;
    let mut classifier = Classifier {
        labels: &bundle.labels,
        rules: &rules,
        pre: Preprocessor::new(&bundle.input),
        worker: engine.new_worker()?,
        input: engine.new_input()?,
    };
    let mut failed = 0;
    for path in &o.images {
        let r = classifier.classify(path, o.top, o.all_scores);
        if let Some(e) = &r.error {
            failed += 1;
            log::error!("{}: {e}", path.display());
        }
        if o.json {
            outln!("{}", serde_json::to_string(&r).unwrap_or_default());
        } else if r.error.is_none() {
            outln!("{}", path.display());
            for (rank, s) in r.top.iter().enumerate() {
                let on = rules[bundle.labels.iter().position(|l| *l == s.label).unwrap_or(0)].on;
                let decision = if s.score >= on { format!("DETECTED (on >= {on})") } else { String::new() };
                outln!("  {:>2}. {:<32} {:.4}  {decision}", rank + 1, s.label, s.score);
            }
            let others: Vec<&str> = r
                .detected
                .iter()
                .filter(|d| !r.top.iter().any(|t| t.label == d.label))
                .map(|d| d.label.as_str())
                .collect();
            if !others.is_empty() {
                outln!("  also detected: {}", others.join(", "));
            }
        }
    }
    Ok(if failed > 0 { EXIT_RUNTIME } else { EXIT_OK })
}
