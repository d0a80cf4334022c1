//! The run configuration (`vigil run --config FILE`), read from TOML and
//! checked before anything starts. Paths in the file are relative to the file.
//!
//! Each section's keys are defined, and checked, beside the stage that uses
//! them: `[source]` in [`crate::source::config`] (each kind in its own file),
//! `[thresholds]` in [`crate::thresholds`], `[stdout]`, `[serial]` and `[gpio]`
//! beside their sinks. Here are `[model]` and `[status]`, and the file as a whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::bundle::{Bundle, Variant};
use crate::decide::LabelRule;
use crate::engine::{EngineChoice, EngineKind, OnnxRuntimeSection};
use crate::sink::{GpioSection, MetricsSection, MqttSection, MqttSettings, SerialSection, StdoutSection};
use crate::snapshots::{SnapshotSettings, SnapshotsSection};
use crate::source::{SourceConfig, SourceSection};
use crate::thresholds::{self, RuleSource, ThresholdsFile, ThresholdsLayer, ThresholdsSpec};
use crate::tomlfile::{SettingsError, TomlFile};

/// Most inference workers a config may ask for.
pub const MAX_WORKERS: usize = 64;

/// `[model]`: which bundle to run and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Bundle directory.
    pub bundle: Spanned<String>,
    /// `fp32` (default) or `int8`.
    #[serde(default = "default_variant")]
    pub variant: Variant,
    /// Inference worker threads (default 1).
    #[serde(default = "default_workers")]
    pub workers: Spanned<usize>,
    /// `tract` (default) or `onnxruntime` (the `[onnxruntime]` section; cargo feature `npu`).
    #[serde(default)]
    pub engine: Option<Spanned<EngineKind>>,
    /// A thresholds file (e.g. from `vigil calibrate --output`) layered between
    /// the manifest's `[thresholds]` and this config's.
    #[serde(default)]
    pub thresholds: Option<Spanned<String>>,
}

fn default_variant() -> Variant {
    Variant::Fp32
}

fn default_workers() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

/// `[status]`: the periodic status line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSection {
    /// Seconds between status lines; 0 turns them off (default 10).
    #[serde(default = "default_interval")]
    pub interval_s: Spanned<f64>,
}

impl Default for StatusSection {
    fn default() -> Self {
        StatusSection { interval_s: default_interval() }
    }
}

fn default_interval() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    model: ModelSection,
    source: SourceSection,
    #[serde(default)]
    thresholds: ThresholdsSpec,
    #[serde(default)]
    stdout: StdoutSection,
    serial: Option<SerialSection>,
    gpio: Option<GpioSection>,
    #[serde(default)]
    status: StatusSection,
    metrics: Option<MetricsSection>,
    mqtt: Option<MqttSection>,
    snapshots: Option<SnapshotsSection>,
    onnxruntime: Option<OnnxRuntimeSection>,
}

/// A parsed and checked run config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages pointing into it).
    pub file: TomlFile,
    /// Bundle directory, resolved against the config's folder.
    pub bundle_dir: PathBuf,
    /// `[model]`.
    pub model: ModelSection,
    /// `[model] engine` and `[onnxruntime]`, checked: which engine runs the model.
    pub engine: EngineChoice,
    /// `[source]`, checked for its kind, paths resolved.
    pub source: SourceConfig,
    /// `[thresholds]`: overrides the bundle's.
    pub thresholds: ThresholdsSpec,
    /// `[model] thresholds`: a thresholds file between the bundle's and this config's.
    pub thresholds_file: Option<ThresholdsFile>,
    /// `[stdout]`.
    pub stdout: StdoutSection,
    /// `[serial]`.
    pub serial: Option<SerialSection>,
    /// `[gpio]`.
    pub gpio: Option<GpioSection>,
    /// `[status]`.
    pub status: StatusSection,
    /// `[metrics] textfile`, resolved and checked: the status as Prometheus metrics.
    pub metrics_file: Option<PathBuf>,
    /// `[mqtt]`, checked (password and certificates read): events, states and status to a broker.
    pub mqtt: Option<MqttSettings>,
    /// `[snapshots]`, checked: the frame of each switch-on saved as a JPEG.
    pub snapshots: Option<SnapshotSettings>,
}

/// Where the Debian package installs model bundles. A relative `[model] bundle` that is not
/// beside the config (a profile copied to /etc/vigil, say) is looked up here by its last
/// component, its bundle name. `VIGIL_MODELS` names another such folder.
pub const PACKAGED_MODELS: &str = "/usr/share/vigil/models";

/// The bundle directory `[model] bundle` names: resolved against the config's folder, then (a
/// relative path) by its name in the packaged models folder.
fn find_bundle(file: &TomlFile, written: &Spanned<String>) -> Result<PathBuf, SettingsError> {
    let beside = file.resolve(written.get_ref());
    let mut tried = vec![beside.clone()];
    let name = Path::new(written.get_ref()).file_name().filter(|_| Path::new(written.get_ref()).is_relative());
    if let Some(name) = name {
        let packaged = std::env::var_os("VIGIL_MODELS").map_or_else(|| PathBuf::from(PACKAGED_MODELS), PathBuf::from);
        tried.push(packaged.join(name));
    }
    match tried.iter().position(|p| p.is_dir()) {
        Some(0) => Ok(beside),
        Some(i) => {
            log::info!(
                "model.bundle `{}`: not beside {}; using the installed {}",
                written.get_ref(),
                file.path.display(),
                tried[i].display()
            );
            Ok(tried.swap_remove(i))
        }
        None => Err(file.error_at(
            written.span(),
            "model.bundle",
            format!(
                "model bundle `{}` not found: expected a directory holding model.toml (looked in {})",
                written.get_ref(),
                tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

impl Config {
    /// Read and check `path`. Thresholds are checked against the model's
    /// labels later, when the bundle is loaded ([`Config::rules`]).
    pub fn load(path: &Path) -> Result<Config, SettingsError> {
        Config::from_file(TomlFile::read(path)?)
    }

    /// Parse and check an already-read file.
    pub fn from_file(file: TomlFile) -> Result<Config, SettingsError> {
        let c: ConfigFile = file.parse()?;
        let bundle_dir = find_bundle(&file, &c.model.bundle)?;
        let thresholds_file = match &c.model.thresholds {
            Some(t) => {
                let path = file.resolve(t.get_ref());
                if path.exists() {
                    Some(ThresholdsFile::load(&path)?)
                } else if path.parent().is_some_and(Path::is_dir) {
                    // Not written yet: the console's `save` creates it. Until then it adds nothing.
                    log::info!(
                        "thresholds file {} does not exist yet; the console's `save` creates it",
                        path.display()
                    );
                    Some(ThresholdsFile::from_file(TomlFile { path, text: String::new() })?)
                } else {
                    return Err(file.error_at(
                        t.span(),
                        "model.thresholds",
                        format!(
                            "the folder of thresholds file `{}` does not exist: expected a TOML file with a [thresholds] table, \
                             or a new one in an existing folder (paths are relative to this config)",
                            path.display()
                        ),
                    ));
                }
            }
            None => None,
        };
        let workers = *c.model.workers.get_ref();
        if workers == 0 || workers > MAX_WORKERS {
            return Err(file.error_at(
                c.model.workers.span(),
                "model.workers",
                format!("{workers}: expected 1 to {MAX_WORKERS}"),
            ));
        }
        let source = c.source.check(&file)?;
        // A lower bound too: a tiny period turned the status line into a busy loop.
        file.number(&c.status.interval_s, "status.interval_s", 0.01..=86_400.0, "seconds", Some("off"))?;
        if let Some(s) = &c.serial {
            s.check(&file)?;
        }
        if let Some(g) = &c.gpio {
            g.check(&file)?;
        }
        let metrics_file = c.metrics.as_ref().map(|m| m.path(&file)).transpose()?;
        if let Some(m) = &c.metrics
            && *c.status.interval_s.get_ref() == 0.0
        {
            return Err(file.error_at(
                m.textfile.span(),
                "metrics.textfile",
                "the metrics file is written at every status line, and `[status] interval_s` is 0 (off): expected a status period",
            ));
        }
        let mqtt = c.mqtt.as_ref().map(|m| m.check(&file)).transpose()?;
        let snapshots = c.snapshots.as_ref().map(|s| s.check(&file, mqtt.is_some())).transpose()?;
        let engine = EngineChoice::from_config(&file, c.model.engine.as_ref(), c.onnxruntime.as_ref())?;
        Ok(Config {
            file,
            bundle_dir,
            engine,
            model: c.model,
            source,
            thresholds: c.thresholds,
            thresholds_file,
            stdout: c.stdout,
            serial: c.serial,
            gpio: c.gpio,
            status: c.status,
            metrics_file,
            mqtt,
            snapshots,
        })
    }

    /// One rule per label of `bundle`: its manifest's thresholds, then this
    /// config's thresholds file, then this config's `[thresholds]`.
    pub fn rules(&self, bundle: &Bundle) -> Result<Vec<LabelRule>, SettingsError> {
        Ok(self.rules_traced(bundle)?.into_iter().map(|(rule, _)| rule).collect())
    }

    /// [`Config::rules`] with where each label's `on` and `off` came from (for `vigil check`).
    pub fn rules_traced(&self, bundle: &Bundle) -> Result<Vec<(LabelRule, RuleSource)>, SettingsError> {
        thresholds::rules_for_traced(
            bundle,
            self.thresholds_file.as_ref(),
            Some(ThresholdsLayer::new(&self.thresholds, &self.file)),
        )
    }

    /// The status period, if status lines are on.
    pub fn status_interval(&self) -> Option<Duration> {
        let s = *self.status.interval_s.get_ref();
        (s > 0.0).then(|| Duration::from_secs_f64(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::pipe::StreamFormat;

    fn models() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
    }

    /// A config file at the repository's root (so `models/...` resolves), with `body` after `[model]`.
    fn config(body: &str) -> Result<Config, SettingsError> {
        let text = format!("[model]\nbundle = \"models/elpv-solar\"\n{body}");
        Config::from_file(TomlFile { path: Path::new(env!("CARGO_MANIFEST_DIR")).join("test.toml"), text })
    }

    fn refused(body: &str) -> String {
        config(body).map(|_| ()).expect_err("expected the config to be refused").to_string()
    }

    #[test]
    fn a_files_config_resolves_paths_against_its_folder() {
        let c =
            config("workers = 2\n[source]\nkind = \"files\"\npath = \"models/elpv-solar/samples\"\nfps = 4\n").unwrap();
        assert_eq!(c.bundle_dir, models().parent().unwrap().join("models/elpv-solar"));
        let SourceConfig::Files(f) = &c.source else { panic!("{:?}", c.source) };
        assert!(f.pattern.ends_with("models/elpv-solar/samples") && Path::new(&f.pattern).is_absolute(), "{f:?}");
        assert_eq!((f.fps, f.looped), (4.0, false));
        assert_eq!(*c.model.workers.get_ref(), 2);
        assert_eq!(c.status_interval(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_pipe_config_gets_its_defaults() {
        let c =
            config("[source]\nkind = \"pipe\"\npath = \"-\"\nformat = \"i420\"\nwidth = 64\nheight = 48\n").unwrap();
        let SourceConfig::Pipe(p, watchdog) = &c.source else { panic!("{:?}", c.source) };
        assert_eq!(
            (p.path.as_str(), p.stream.format, p.stream.width, p.stream.height),
            ("-", StreamFormat::Raw(crate::frame::PixelFormat::I420), 64, 48)
        );
        assert!(!p.reopen_at_end);
        assert_eq!(*watchdog, Duration::from_secs(2));
    }

    #[test]
    fn keys_of_another_kind_are_refused_naming_the_kind() {
        let e = refused("[source]\nkind = \"pipe\"\npath = \"-\"\nformat = \"mjpeg\"\nloop = true\n");
        assert!(
            e.contains("test.toml:7:8")
                && e.contains("source.loop")
                && e.contains("does not apply to a pipe source (files only)"),
            "{e}"
        );
        let e = refused("[source]\nkind = \"files\"\npath = \"models\"\nwatchdog_s = 3\n");
        assert!(e.contains("source.watchdog_s") && e.contains("files source (pipe, command and v4l2 only)"), "{e}");
    }

    #[test]
    fn values_out_of_range_are_refused_with_their_key() {
        let src = "[source]\nkind = \"files\"\npath = \"models/elpv-solar/samples\"\n";
        assert!(refused(&format!("workers = 0\n{src}")).contains("model.workers"));
        assert!(refused(&format!("{src}fps = -1\n")).contains("source.fps"));
        assert!(refused(&format!("{src}[status]\ninterval_s = -2\n")).contains("status.interval_s"));
        assert!(refused(&format!("{src}[serial]\ndevice = \"\"\n")).contains("serial.device"));
        assert!(refused(&format!("{src}[serial]\ndevice = \"/dev/ttyS9\"\nbaud = 0\n")).contains("serial.baud"));
        let pulse =
            "[[gpio.outputs]]\nlabel = \"defective\"\nchip = \"gpiochip0\"\nline = 1\nmode = \"pulse\"\npulse_ms = 0\n";
        assert!(refused(&format!("{src}{pulse}")).contains("gpio.outputs[0].pulse_ms"));
        let e = refused("[source]\nkind = \"pipe\"\npath = \"-\"\nformat = \"grey\"\nwidth = 0\nheight = 4\n");
        assert!(e.contains("source.width") && e.contains("expected 1 to"), "{e}");
    }

    #[test]
    fn missing_bundle_and_thresholds_file_are_refused() {
        let e = Config::from_file(TomlFile {
            path: "x.toml".into(),
            text: "[model]\nbundle = \"/nonexistent\"\n[source]\nkind = \"files\"\npath = \"a\"\n".into(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.toml:2:10") && e.contains("model.bundle"), "{e}");
        let e = refused("thresholds = \"no-such-folder/t.toml\"\n[source]\nkind = \"files\"\npath = \"models\"\n");
        assert!(e.contains("model.thresholds") && e.contains("does not exist"), "{e}");
    }

    #[test]
    fn thresholds_are_checked_where_written_even_when_a_later_layer_shadows_them() {
        // elpv-solar's manifest sets every label, so the config's default applies to none of
        // them: a NaN there, or off above on, passed before and waited for the day it mattered.
        let src = "[source]\nkind = \"files\"\npath = \"models/elpv-solar/samples\"\n";
        let rules_refused = |extra: &str| {
            let c = config(&format!("{src}{extra}")).unwrap();
            let bundle = Bundle::load(&c.bundle_dir).unwrap();
            c.rules(&bundle).expect_err("expected the thresholds to be refused").to_string()
        };
        let e = rules_refused("[thresholds]\ndefault = { on = nan }\n");
        assert!(e.contains("thresholds.default.on") && e.contains("outside [0, 1]"), "{e}");
        let e = rules_refused("[thresholds]\ndefault = { on = 0.3, off = 0.6 }\n");
        assert!(e.contains("thresholds.default.off") && e.contains("expected off <= on"), "{e}");
        let e = rules_refused("[thresholds.labels.defective]\non = 1.5\n");
        assert!(e.contains("thresholds.labels.defective.on"), "{e}");
    }

    #[test]
    fn a_thresholds_file_not_written_yet_is_accepted_for_save_to_create() {
        // The packaged config's commented example names one; start-up must not need it to exist.
        let c = config(
            "thresholds = \"not-saved-yet.toml\"\n[source]\nkind = \"files\"\npath = \"models/elpv-solar/samples\"\n",
        )
        .unwrap();
        let t = c.thresholds_file.as_ref().expect("a thresholds file to save into");
        assert!(t.file.path.ends_with("not-saved-yet.toml") && !t.file.path.exists());
        let bundle = Bundle::load(&c.bundle_dir).unwrap();
        assert_eq!(c.rules(&bundle).unwrap(), thresholds::rules_for(&bundle, None, None).unwrap(), "it adds nothing");
    }

    #[test]
    fn rules_layer_the_config_over_the_manifest() {
        let c = config("[source]\nkind = \"files\"\npath = \"models/elpv-solar/samples\"\n[thresholds.labels.defective]\non = 0.8\n").unwrap();
        let bundle = Bundle::load(&c.bundle_dir).unwrap();
        let rules = c.rules(&bundle).unwrap();
        let i = bundle.labels.iter().position(|l| l == "defective").unwrap();
        assert_eq!(rules[i].on, 0.8);
        let manifest = thresholds::rules_for(&bundle, None, None).unwrap();
        assert_eq!(rules[i].off, manifest[i].off, "fields not set in the config come from the manifest");
    }
}
