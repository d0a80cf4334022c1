//! Builds a ready-to-run pipeline from a config file: the one place that
//! knows how config sections map onto stages. `vigil run` and `vigil check`
//! both go through [`prepare`], so `check` refuses exactly what `run` would;
//! the soak test (`tests/integration/soak.rs`) goes through it too, so what it
//! measures is the daemon's own assembly.

use std::sync::Arc;
use std::time::Instant;

use crate::bundle::Bundle;
use crate::config::Config;
use crate::console::Console;
use crate::decide::{Decider, LabelRule};
use crate::engine::{self, EngineError, InferenceEngine, LoadedEngine};
use crate::pipeline::{self, Control, Decisions, Model, RunError, RunSummary};
use crate::sink::serial::DevicePresence;
use crate::sink::{GpioLines, GpioSink, MetricsSink, MqttSink, SerialSink, Sink, StdoutSink};
use crate::snapshots::Snapshots;
use crate::source::{self, FrameSource, SourceError};
use crate::stats::Health;
use crate::stop::StopFlag;
use crate::tomlfile::SettingsError;

/// Why a config could not be made ready to run: every problem found, not just the first.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The config, its bundle's manifest, its thresholds or a device section was refused.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The model could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The frame source could not be set up.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Several problems found at once (`check` lists them all), one per line.
    #[error("{} problems:\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Several(Vec<SetupError>),
}

impl SetupError {
    /// `problems` as one error: itself when there is one.
    fn all(mut problems: Vec<SetupError>) -> SetupError {
        if problems.len() == 1 { problems.remove(0) } else { SetupError::Several(problems) }
    }
}

/// A config with everything it names loaded and checked.
pub struct Prepared {
    /// The config.
    pub config: Config,
    /// Its bundle.
    pub bundle: Bundle,
    /// The loaded, optimised model, on the engine the config chose (or its fallback).
    pub engine: Arc<dyn InferenceEngine>,
    /// When `[onnxruntime] fallback = "tract"` was taken: why ONNX Runtime could not run.
    pub engine_fell_back: Option<EngineError>,
    /// One rule per label, merged from bundle and config.
    pub rules: Vec<LabelRule>,
    /// The frame source.
    pub source: Box<dyn FrameSource>,
    /// GPIO lines, requested (and so checked) at start.
    pub gpio: Option<GpioLines>,
    /// Live health (source lost, engine failing), shared with the pipeline and fault outputs.
    pub health: Arc<Health>,
    /// Whether the serial device is there now (`None` without a `[serial]` section).
    pub serial: Option<DevicePresence>,
}

/// Load `config`'s bundle, rules, model, source, GPIO lines and serial device. Once the bundle
/// is loaded (everything else needs its labels), every part is checked even when an earlier one
/// failed, so that `check` (and a refused `run`) lists every problem at once.
///
/// The device policy, the same for `check` and `run` (README, "Devices"): a camera or serial
/// adapter that is absent now is reported and retried at run time; a device that is there but
/// cannot do what is asked (a camera without the format, a serial path that is not a terminal,
/// a GPIO chip or line that is missing or taken) is refused.
pub fn prepare(config: Config, started: Instant) -> Result<Prepared, SetupError> {
    let bundle = Bundle::load(&config.bundle_dir)?;
    let rules = config.rules(&bundle).map_err(SetupError::from);
    let engine = engine::load(&bundle, config.model.variant, &config.engine).map_err(SetupError::from);
    let health = Arc::new(Health::default());
    let model_size = (bundle.input.width, bundle.input.height);
    let source = source::open(&config.source, model_size, &health, started).map_err(SetupError::from);
    let gpio =
        config.gpio.as_ref().map(|g| g.request(&config.file, &bundle.labels)).transpose().map_err(SetupError::from);
    let serial = match &config.serial {
        Some(s) => s.check_device(&config.file).map(Some).map_err(SetupError::from),
        None => Ok(None),
    };
    match (rules, engine, source, gpio, serial) {
        (Ok(rules), Ok(LoadedEngine { engine, fell_back: engine_fell_back, .. }), Ok(source), Ok(gpio), Ok(serial)) => {
            if let (Some(s), Some(DevicePresence::Absent)) = (&config.serial, serial) {
                log::warn!(
                    "serial {}: not there now (adapter unplugged?); a run keeps retrying with backoff",
                    s.device.get_ref()
                );
            }
            Ok(Prepared { config, bundle, engine, engine_fell_back, rules, source, gpio, health, serial })
        }
        (rules, engine, source, gpio, serial) => {
            let mut problems: Vec<SetupError> = Vec::new();
            problems.extend(rules.err());
            problems.extend(engine.err());
            problems.extend(source.err());
            problems.extend(gpio.err());
            problems.extend(serial.err());
            Err(SetupError::all(problems))
        }
    }
}

/// What a run hands the next one across a reload (SIGHUP), so that the technician's work and
/// the consumers' view carry on: event `seq` keeps counting, a label that is on stays on
/// without a second ON event, and thresholds set from the console stay set.
pub struct Resume {
    /// The previous run's final decide state (rules as the console left them, label states).
    pub decider: Decider,
    /// The rules the previous config gave, before any console change.
    pub config_rules: Vec<LabelRule>,
    /// The sequence number the next frame gets.
    pub next_seq: u64,
}

impl Resume {
    /// Labels (by name) whose `on`/`off` the console changed from what the config gives.
    fn console_thresholds(&self) -> impl Iterator<Item = (&str, LabelRule)> {
        let rules = self.decider.rules().iter().zip(&self.config_rules);
        self.decider
            .labels()
            .iter()
            .zip(rules)
            .filter(|(_, (now, config))| (now.on, now.off) != (config.on, config.off))
            .map(|(label, (now, _))| (label.as_str(), *now))
    }
}

impl Prepared {
    /// Open the sinks (and the console on the serial line), then run the pipeline
    /// until the source ends or `stop` is raised; `resume` carries a reloaded run on.
    pub fn run(self, stop: &StopFlag, started: Instant, resume: Option<&Resume>) -> Result<RunSummary, RunError> {
        let Prepared { config, bundle, engine, rules, source, gpio, health, .. } = self;
        let mut decider = Decider::new(Arc::clone(&bundle.labels), rules);
        let mut carried = Vec::new();
        if let Some(resume) = resume {
            decider.take_states_from(&resume.decider);
            for (label, kept) in resume.console_thresholds() {
                let Some(i) = bundle.labels.iter().position(|l| l == label) else { continue };
                let mut rule = decider.rules()[i];
                (rule.on, rule.off) = (kept.on, kept.off);
                decider.set_rule(i, rule);
                carried.push(i);
                log::info!(
                    "reload: kept the thresholds set from the console for `{label}` (on {}, off {}); \
                     `save` writes them to the thresholds file",
                    kept.on,
                    kept.off
                );
            }
        }
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if config.stdout.enabled {
            sinks.push(Box::new(StdoutSink::stdout(config.stdout.format)));
        }
        // One console for every transport that takes commands: the serial line, and MQTT's
        // `<prefix>/cmd` when enabled.
        let mut control: Option<Box<dyn Control>> = None;
        let mut requests = None;
        if config.serial.is_some() || config.mqtt.as_ref().is_some_and(|m| m.commands) {
            let saves_to = config.thresholds_file.as_ref().map(|f| f.file.path.clone());
            let (mut console, tx) = Console::new(bundle.labels.len(), saves_to);
            for &i in &carried {
                console.carried_over(i);
            }
            control = Some(Box::new(console));
            requests = Some(tx);
        }
        if let Some(serial) = &config.serial {
            sinks.push(Box::new(SerialSink::start(serial, requests.clone())));
        }
        let mut publisher = None;
        if let Some(mqtt) = &config.mqtt {
            let labels = Arc::clone(&bundle.labels);
            let sink = MqttSink::start(mqtt, labels, &bundle.name, started, requests.clone());
            publisher = Some(sink.snapshot_publisher());
            sinks.push(Box::new(sink));
        }
        let workers = *config.model.workers.get_ref();
        let snapshots = config.snapshots.as_ref().map(|s| {
            let labels = Arc::clone(&bundle.labels);
            Snapshots::start(s, labels, started, pipeline::frames_in_flight(workers), publisher.clone(), stop.clone())
        });
        if let Some(lines) = gpio {
            sinks.push(Box::new(GpioSink::start(lines, Arc::clone(&health))));
        }
        if let Some(path) = &config.metrics_file {
            sinks.push(Box::new(MetricsSink::start(path.clone(), Arc::clone(&bundle.labels))));
        }
        let model = Model { engine, input: bundle.input.clone(), workers: *config.model.workers.get_ref() };
        let decisions = Decisions {
            decider,
            sinks,
            status_interval: config.status_interval(),
            control,
            health,
            first_seq: resume.map_or(0, |r| r.next_seq),
            snapshots,
        };
        pipeline::run(source, &model, decisions, stop, started)
    }
}
