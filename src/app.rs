//! Builds a ready-to-run pipeline from a config file: the one place that
//! knows how config sections map onto stages. `vigil run` and `vigil check`
//! both go through [`prepare`], so `check` refuses exactly what `run` would.

use std::sync::Arc;
use std::time::Instant;

use crate::Error;
use crate::bundle::Bundle;
use crate::config::{Config, OnEnd, SourceFormat, SourceKind, ThresholdsFile};
use crate::decide::{Decider, LabelRule};
use crate::engine::{InferenceEngine, TractEngine};
use crate::frame::YuvColour;
use crate::pipeline::Pipeline;
use crate::sink::gpio::OutputLine;
use crate::sink::{GpioLineSpec, GpioSink, LabelOutput, OutputMode, SerialSink, Sink, StdoutSink};
use crate::source::live::Capture;
use crate::source::pipe::{PipeCapture, PipeSpec, StreamFormat};
use crate::source::v4l2::{V4l2Capture, V4l2Spec, Want};
use crate::source::{FilesSource, FrameSource, LiveSource, SourceError};
use crate::stats::Health;
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
    /// GPIO lines, requested (and so checked) at start.
    pub gpio: Option<GpioLines>,
    /// Live health (source lost, engine failing), shared with the pipeline and fault outputs.
    pub health: Arc<Health>,
}

/// The requested GPIO lines of a config's `[gpio]`.
pub struct GpioLines {
    /// One per `[[gpio.outputs]]`.
    pub outputs: Vec<LabelOutput>,
    /// The heartbeat line.
    pub heartbeat: Option<OutputLine>,
    /// The fault line.
    pub fault: Option<OutputLine>,
}

/// Request one line; on failure, an error naming the config key.
fn request_line(config: &Config, key: &str, spec: GpioLineSpec, consumer: &str) -> Result<OutputLine, Error> {
    let pin = spec
        .request(consumer)
        .map_err(|e| Error::Settings(config.file.error(Some(key.to_string()), format!("{}: {e}", spec.describe()))))?;
    let consumer = consumer.to_string();
    let again = spec.clone();
    let reopen: crate::sink::gpio::Reopen = Box::new(move || again.request(&consumer));
    Ok(OutputLine::new(format!("{key} ({})", spec.describe()), pin, spec.active_low, Some(reopen)))
}

/// Check `[gpio]` against the model's labels and request every line.
fn request_gpio(config: &Config, bundle: &Bundle) -> Result<Option<GpioLines>, Error> {
    let Some(g) = &config.gpio else { return Ok(None) };
    let mut outputs = Vec::new();
    for (i, o) in g.outputs.iter().enumerate() {
        let key = format!("gpio.outputs[{i}]");
        let label = bundle.labels.iter().position(|l| l == o.label.get_ref()).ok_or_else(|| {
            Error::Settings(config.file.error_at(
                o.label.span(),
                format!("{key}.label"),
                format!("unknown label `{}`: expected one of the model's labels", o.label.get_ref()),
            ))
        })?;
        let mode = match o.mode {
            crate::config::GpioMode::Level => OutputMode::Level,
            crate::config::GpioMode::Pulse => {
                let ms = *o.pulse_ms.get_ref();
                if ms == 0 || ms > 60_000 {
                    return Err(Error::Settings(config.file.error_at(
                        o.pulse_ms.span(),
                        format!("{key}.pulse_ms"),
                        format!("{ms}: expected 1 to 60000 ms"),
                    )));
                }
                OutputMode::Pulse(std::time::Duration::from_millis(ms))
            }
        };
        let spec = GpioLineSpec { chip: o.chip.clone(), line: o.line.clone(), active_low: o.active_low };
        outputs.push(LabelOutput { label, mode, line: request_line(config, &key, spec, &g.consumer)? });
    }
    let single = |key: &str, c: &Option<crate::config::GpioLineConfig>| -> Result<Option<OutputLine>, Error> {
        c.as_ref()
            .map(|c| {
                let spec = GpioLineSpec { chip: c.chip.clone(), line: c.line.clone(), active_low: c.active_low };
                request_line(config, key, spec, &g.consumer)
            })
            .transpose()
    };
    let heartbeat = single("gpio.heartbeat", &g.heartbeat)?;
    let fault = single("gpio.fault", &g.fault)?;
    Ok(Some(GpioLines { outputs, heartbeat, fault }))
}

/// Merge a bundle's and (optionally) a config's thresholds into rules, with
/// the config's `[model] thresholds` file, if any, between the two.
pub fn rules_for(bundle: &Bundle, config: Option<&Config>) -> Result<Vec<LabelRule>, Error> {
    rules_with(bundle, config.and_then(|c| c.thresholds_file.as_ref()), config)
}

/// Merge thresholds in precedence order: the bundle's manifest, then a
/// thresholds file, then a config's own `[thresholds]` (see [`thresholds`]).
pub fn rules_with(
    bundle: &Bundle,
    file: Option<&ThresholdsFile>,
    config: Option<&Config>,
) -> Result<Vec<LabelRule>, Error> {
    let mut layers = vec![ThresholdsLayer { spec: &bundle.thresholds, file: &bundle.manifest, prefix: "thresholds" }];
    if let Some(f) = file {
        layers.push(ThresholdsLayer { spec: &f.spec, file: &f.file, prefix: "thresholds" });
    }
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
    let health = Arc::new(Health::default());
    let source = open_source(&config, &bundle, &health, started)?;
    let gpio = request_gpio(&config, &bundle)?;
    Ok(Prepared { config, bundle, engine, rules, source, gpio, health })
}

/// The frame source `config` names. Live sources (pipe, V4L2) open here, so a
/// camera that cannot do what the config asks is refused at start; one that is
/// merely absent is retried in the background.
fn open_source(
    config: &Config,
    bundle: &Bundle,
    health: &Arc<Health>,
    started: Instant,
) -> Result<Box<dyn FrameSource>, Error> {
    let s = &config.source;
    let capture: Box<dyn Capture> = match s.kind {
        SourceKind::Files => {
            let path = config.source_path.as_ref().expect("files source has a path");
            return Ok(Box::new(FilesSource::new(&path.to_string_lossy(), *s.fps.get_ref(), s.looped, started)?));
        }
        SourceKind::Pipe => {
            let format = *s.format.as_ref().expect("checked: pipe has a format").get_ref();
            let path =
                config.source_path.as_ref().map_or_else(|| "-".to_string(), |p| p.to_string_lossy().into_owned());
            Box::new(PipeCapture::new(PipeSpec {
                path,
                format: match format {
                    SourceFormat::Mjpeg => StreamFormat::Mjpeg,
                    SourceFormat::Y4m => StreamFormat::Y4m,
                    raw => StreamFormat::Raw(raw.raw().expect("checked: pipe format is raw, mjpeg or y4m")),
                },
                width: s.width.as_ref().map_or(0, |w| *w.get_ref()),
                height: s.height.as_ref().map_or(0, |h| *h.get_ref()),
                colour: YuvColour { matrix: s.matrix.unwrap_or_default(), range: s.range.unwrap_or_default() },
                reopen_at_end: s.on_end == OnEnd::Reopen,
            }))
        }
        SourceKind::V4l2 => {
            let device = s.device.as_ref().expect("checked: v4l2 has a device").get_ref().clone();
            let format = s.format.as_ref().map(|f| *f.get_ref()).filter(|f| *f != SourceFormat::Auto);
            let size = s.width.as_ref().zip(s.height.as_ref()).map(|(w, h)| (*w.get_ref(), *h.get_ref()));
            let fps = *s.fps.get_ref();
            Box::new(V4l2Capture::new(V4l2Spec {
                device,
                want: Want {
                    format: format.map(|f| f.name().to_string()),
                    size,
                    model: (bundle.input.width, bundle.input.height),
                },
                fps: (fps > 0.0).then(|| fps.round() as u32),
            }))
        }
    };
    let live = LiveSource::start(capture, config.watchdog(), Arc::clone(health), started)
        .map_err(|e| SourceError::Open(e.to_string()))?;
    Ok(Box::new(live))
}

impl Prepared {
    /// Open the sinks and assemble the pipeline.
    pub fn into_pipeline(self, stop: StopFlag, started: Instant) -> Pipeline {
        let health = self.health;
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if self.config.stdout.enabled {
            sinks.push(Box::new(StdoutSink::stdout(self.config.stdout.format)));
        }
        let mut console = None;
        if let Some(s) = &self.config.serial {
            let (tx, rx) = crossbeam_channel::bounded(16);
            console = Some(rx);
            sinks.push(Box::new(SerialSink::start(s.device.get_ref(), *s.baud.get_ref(), s.format, Some(tx))));
        }
        if let Some(g) = self.gpio {
            sinks.push(Box::new(GpioSink::start(g.outputs, g.heartbeat, g.fault, Arc::clone(&health))));
        }
        let thresholds_file = self.config.thresholds_file.as_ref().map(|f| f.file.path.clone());
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
            console,
            thresholds_file,
            health,
        }
    }
}
