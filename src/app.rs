//! Builds a ready-to-run pipeline from a config file: the one place that
//! knows how config sections map onto stages. `vigil run` and `vigil check`
//! both go through [`prepare`], so `check` refuses exactly what `run` would.

use std::sync::Arc;
use std::time::Instant;

use crate::Error;
use crate::bundle::Bundle;
use crate::config::{Config, SourceKind};
use crate::decide::{Decider, LabelRule};
use crate::engine::{InferenceEngine, TractEngine};
use crate::pipeline::Pipeline;
use crate::sink::{SerialSink, Sink, StdoutSink};
use crate::source::{FilesSource, FrameSource};
use crate::stop::StopFlag;
use crate::thresholds::{self, ThresholdsLayer};

/// A config with everything it names loaded and checked.
pub struct Prepared {
    /// The config.
    pub config: Config,
    /// Its bundle.
    pub bundle: Bundle,
    /// The loaded, optimised model.
    pub engine: Arc<TractEngine>,
    /// One rule per label, merged from bundle and config.
    pub rules: Vec<LabelRule>,
    /// The frame source.
    pub source: Box<dyn FrameSource>,
}

/// Merge a bundle's and (optionally) a config's thresholds into rules.
pub fn rules_for(bundle: &Bundle, config: Option<&Config>) -> Result<Vec<LabelRule>, Error> {
    let mut layers = vec![ThresholdsLayer { spec: &bundle.thresholds, file: &bundle.manifest, prefix: "thresholds" }];
    if let Some(c) = config {
        layers.push(ThresholdsLayer { spec: &c.thresholds, file: &c.file, prefix: "thresholds" });
    }
    Ok(thresholds::resolve(&bundle.labels, &layers)?)
}

/// Load `config`'s bundle, rules, model and source.
pub fn prepare(config: Config, started: Instant) -> Result<Prepared, Error> {
    let bundle = Bundle::load(&config.bundle_dir)?;
    let rules = rules_for(&bundle, Some(&config))?;
    let engine = Arc::new(TractEngine::load(&bundle, config.model.variant)?);
    let source: Box<dyn FrameSource> = match config.source.kind {
        SourceKind::Files => {
            let path = config.source_path.as_ref().expect("files source has a path");
            Box::new(FilesSource::new(
                &path.to_string_lossy(),
                *config.source.fps.get_ref(),
                config.source.looped,
                started,
            )?)
        }
    };
    Ok(Prepared { config, bundle, engine, rules, source })
}

impl Prepared {
    /// Open the sinks and assemble the pipeline.
    pub fn into_pipeline(self, stop: StopFlag, started: Instant) -> Pipeline {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if self.config.stdout.enabled {
            sinks.push(Box::new(StdoutSink::stdout(self.config.stdout.format)));
        }
        if let Some(s) = &self.config.serial {
            sinks.push(Box::new(SerialSink::start(s.device.get_ref(), *s.baud.get_ref(), s.format)));
        }
        let status_interval = self.config.status_interval();
        let workers = *self.config.model.workers.get_ref();
        let engine: Arc<dyn InferenceEngine> = self.engine;
        Pipeline {
            source: self.source,
            engine,
            input: self.bundle.input.clone(),
            decider: Decider::new(Arc::clone(&self.bundle.labels), self.rules),
            sinks,
            workers,
            status_interval,
            stop,
            started,
        }
    }
}
