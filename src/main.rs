//! The `vigil` command line: the arguments of each command; the commands
//! themselves are in `cmd/`.

#[macro_use]
mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};

use cmd::{EXIT_OK, Error};
use vigil::bundle::Variant;
use vigil::engine::{EngineChoice, OnnxRuntimeSettings, Provider};
use vigil::evaluate::{CalibrateOptions, EvalOptions, LabelChoice, Objective};

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Camera frames in, per-label decisions out: a multi-label classifier daemon for edge boards."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    Fp32,
    Int8,
}

impl From<VariantArg> for Variant {
    fn from(v: VariantArg) -> Variant {
        match v {
            VariantArg::Fp32 => Variant::Fp32,
            VariantArg::Int8 => Variant::Int8,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineArg {
    Tract,
    Onnxruntime,
}

/// The engine options of `classify`, `bench`, `eval` and `calibrate`.
#[derive(Args)]
struct EngineArgs {
    /// Which engine runs the model: `tract`, or `onnxruntime` (a build with `--features npu`).
    #[arg(long, value_enum, default_value = "tract")]
    engine: EngineArg,
    /// With --engine onnxruntime: the ONNX Runtime library (default: $ORT_DYLIB_PATH).
    #[arg(long, value_name = "PATH")]
    ort_library: Option<PathBuf>,
    /// With --engine onnxruntime: execution providers in order, comma-separated (tensorrt, cuda, acl, xnnpack, openvino, cpu).
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    ort_providers: Vec<String>,
    /// With --engine onnxruntime: intra-op threads per worker.
    #[arg(long, default_value_t = 1)]
    ort_threads: usize,
}

impl EngineArgs {
    fn choice(self) -> Result<EngineChoice, Error> {
        match self.engine {
            EngineArg::Tract => Ok(EngineChoice::Tract),
            EngineArg::Onnxruntime => {
                let mut settings = OnnxRuntimeSettings::cpu(self.ort_library);
                settings.providers = self
                    .ort_providers
                    .iter()
                    .map(|p| Provider::from_name(p.trim()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| Error::Usage(format!("--ort-providers: {e}")))?;
                if !(1..=64).contains(&self.ort_threads) {
                    return Err(Error::Usage(format!("--ort-threads {}: expected 1 to 64", self.ort_threads)));
                }
                settings.threads = self.ort_threads;
                Ok(EngineChoice::OnnxRuntime(settings))
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: capture, classify, decide, and report until stopped (SIGINT/SIGTERM) or the source ends.
    #[command(after_help = "Example:\n  vigil run --config boards/default.toml\n\n\
SIGHUP reloads the config (a bad one is refused and the running one kept). Under systemd (Type=notify) it reports READY and pings the watchdog while frames flow.\n\
Exit codes: 0 ran to the end or was stopped; 2 the config, bundle or model was refused; 1 a failure while running.")]
    Run {
        /// The run config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Save frames from a config's source as JPEGs named by capture time: one every --every seconds and/or each switch-on (for models/train/adapt.sh).
    #[command(after_help = "Examples:\n  vigil record --config /etc/vigil/vigil.toml --out frames --every 5\n  \
vigil record --config boards/rpi4.toml --out frames --every 30 --on-switch --max-mib 4096\n\n\
Runs the config's source and model as `vigil run` would, without its serial, GPIO, MQTT and metrics outputs (stop the daemon first: \
one program can hold the camera). Files are `<UTC capture time>_<seq>.jpg`, and `<time>_<label>_<seq>.jpg` for a switch-on, so they \
sort in capture order as adapt.sh needs. JPEG frames are saved as they came; others are encoded at quality 90. Frames already in \
the folder count toward the limits; at a limit the recording stops and nothing is deleted. Skipped frames are logged and counted.\n\n\
Exit codes: 0 stopped (a limit, the end of the source, SIGINT/SIGTERM); 2 an option, the config or the model was refused; 1 a failure while running.")]
    Record {
        /// The run config (TOML) whose source is recorded.
        #[arg(long, short)]
        config: PathBuf,
        /// The folder the JPEGs go into (made if missing).
        #[arg(long, short)]
        out: PathBuf,
        /// Save one frame every this many seconds of capture time (0: every frame).
        #[arg(long, value_name = "SECONDS")]
        every: Option<f64>,
        /// Save the frame of each switch-on (the config's model and thresholds decide).
        #[arg(long)]
        on_switch: bool,
        /// Stop once the folder holds this many recorded frames.
        #[arg(long, default_value_t = 100_000)]
        max_files: usize,
        /// Stop before the recorded frames would take more than this many MiB.
        #[arg(long, default_value_t = 2048)]
        max_mib: u64,
    },
    /// Check a config, its model bundle, model and devices without running anything.
    #[command(
        after_help = "Example:\n  vigil check --config boards/default.toml\n\nExit codes: 0 all good; 2 something was refused (the message names the file, line and key)."
    )]
    Check {
        /// The run config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Classify image files with a model bundle and print scores and per-label decisions.
    #[command(
        after_help = "Examples:\n  vigil classify --model models/mobilenetv2-imagenet models/mobilenetv2-imagenet/samples/*.jpg\n  \
vigil classify --model models/mobilenetv2-imagenet --json --variant int8 photo.png\n\n\
A label is shown as detected when its score reaches its `on` threshold. Exit codes: 0 every image classified; 1 some image could not be read or decoded; 2 the bundle or model was refused."
    )]
    Classify {
        /// The model bundle directory.
        #[arg(long, short)]
        model: PathBuf,
        /// Which model of the bundle to run.
        #[arg(long, value_enum, default_value = "fp32")]
        variant: VariantArg,
        /// How many of the best scores to show.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Print one JSON object per image instead of a table.
        #[arg(long)]
        json: bool,
        /// With --json, include every label's score.
        #[arg(long)]
        all_scores: bool,
        #[command(flatten)]
        engine: EngineArgs,
        /// Image files (JPEG or PNG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Read a vigil serial line: check every checksum and print events, status and replies readably.
    #[command(after_help = "Example:\n  vigil monitor /dev/ttyUSB0 --baud 115200\n\n\
Runs until interrupted. Corrupt lines are reported and counted; the port is reopened if it goes away.")]
    Monitor {
        /// The serial device.
        port: String,
        /// Baud rate.
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
    },
    /// List V4L2 cameras with the formats and frame sizes they offer.
    #[command(after_help = "Example:\n  vigil cameras\n\n\
Use a device path (or its stable /dev/v4l/by-id link) as [source] device, with kind = \"v4l2\".\n\
Raspberry Pi CSI cameras on Bookworm give raw Bayer here: use a pipe source (docs/cameras.md).")]
    Cameras,
    /// Show a bundle's optimised tract graph: every node's op and types, and a count per op.
    #[command(after_help = "Example:\n  vigil inspect --model models/mobilenetv2-imagenet --variant int8\n\n\
An INT8 model that runs on integer kernels shows OptMatMul nodes with I8/U8 inputs; one that tract runs in float shows only F32 matmuls.")]
    Inspect {
        /// The model bundle directory.
        #[arg(long, short)]
        model: PathBuf,
        /// Which model of the bundle to inspect.
        #[arg(long, value_enum, default_value = "fp32")]
        variant: VariantArg,
        /// Print every node, not just the counts.
        #[arg(long)]
        nodes: bool,
    },
    /// Measure per-stage times, end-to-end throughput, overhead over raw inference, worker scaling, memory and cold start.
    #[command(
        after_help = "Example:\n  vigil bench --model models/mobilenetv2-imagenet --images models/mobilenetv2-imagenet/samples --frames 200"
    )]
    Bench {
        /// The model bundle directory.
        #[arg(long, short)]
        model: PathBuf,
        /// Which model of the bundle to run.
        #[arg(long, value_enum, default_value = "fp32")]
        variant: VariantArg,
        /// Images to replay (a file, a directory or a glob), looped.
        #[arg(long)]
        images: String,
        /// Frames per measurement.
        #[arg(long, default_value_t = 200)]
        frames: u64,
        /// Worker counts to compare, comma-separated; the first is the baseline.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        #[command(flatten)]
        engine: EngineArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a bundle on labelled images: AP, mAP, per-label precision/recall/F1 at its thresholds, micro/macro/samples F1, Hamming loss, subset accuracy, label frequencies and co-occurrence.
    #[command(
        after_help = "Examples:\n  vigil eval --model models/mobilenetv2-imagenet --data tests/data/samples.csv\n  \
vigil eval --model my-bundle --data val/ --thresholds calibrated.toml --report eval-report --json\n\n\
The set is a CSV (`path,label1;label2`, or a `path` column and one 0/1 column per label; paths are relative to the CSV) \
or a directory with one subdirectory per label (`_none/` for images with no label); see docs/eval.md. \
Metrics cover the labels the set names unless --labels says otherwise.\n\n\
Exit codes: 0 evaluated; 2 the set, an option, the bundle or the model was refused (the message names the file, line and what was expected); \
1 an image could not be read or decoded, or the report could not be written."
    )]
    Eval {
        #[command(flatten)]
        set: SetArgs,
        /// A thresholds file layered over the manifest's, as `[model] thresholds` in a run config.
        #[arg(long)]
        thresholds: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also write report.md, report.html, pr_curves.svg and cooccurrence.svg into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Choose each label's on/off thresholds on labelled images and write them into the bundle's model.toml or a thresholds file.
    #[command(after_help = "Examples:\n  vigil calibrate --model my-bundle --data val.csv\n  \
vigil calibrate --model my-bundle --data val/ --objective 'precision>=0.9' --margin 0.05 --output thresholds.toml\n\n\
Objectives: f1 (default; best F1), precision>=P (most recall with at least that precision), recall>=R (most precision with \
at least that recall). off = on - margin, clamped at 0. Labels with no positives in the set keep their thresholds.\n\
Without --output, the bundle's model.toml gets the new [thresholds.labels.\"NAME\"] entries in place (atomically; the previous \
file is kept as model.toml.bak). With --output FILE, FILE gets them (created, or updated in place with a FILE.bak); a run \
config uses it with `[model] thresholds = \"FILE\"`. Before/after metrics are on the same set (in-sample).\n\n\
Exit codes: as for `vigil eval`.")]
    Calibrate {
        #[command(flatten)]
        set: SetArgs,
        /// What to optimise per label: `f1`, `precision>=P` or `recall>=R`.
        #[arg(long, default_value = "f1")]
        objective: Objective,
        /// How far `off` sits below `on` (hysteresis).
        #[arg(long, default_value_t = 0.1)]
        margin: f32,
        /// Write a thresholds file here instead of editing the bundle's model.toml.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Report what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `eval` and `calibrate` both take: a bundle and a labelled set to score it on.
#[derive(Args)]
struct SetArgs {
    /// The model bundle directory.
    #[arg(long, short)]
    model: PathBuf,
    /// The labelled set: a CSV file, or a directory with one subdirectory per label.
    #[arg(long, short)]
    data: PathBuf,
    /// Which model of the bundle to run.
    #[arg(long, value_enum, default_value = "fp32")]
    variant: VariantArg,
    /// Labels to evaluate or calibrate: `set` (those the set names), `all` (every model label), or names separated by `;`.
    #[arg(long, default_value = "set")]
    labels: LabelChoice,
    /// Scoring threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    engine: EngineArgs,
}

impl SetArgs {
    fn options(self, thresholds: Option<PathBuf>) -> Result<EvalOptions, Error> {
        let workers = cmd::eval::scoring_workers(self.workers)?;
        Ok(EvalOptions {
            model: self.model,
            variant: self.variant.into(),
            data: self.data,
            thresholds,
            labels: self.labels,
            workers,
            engine: self.engine.choice()?,
        })
    }
}

fn main() -> ExitCode {
    let process_start = Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let code = match run(cli.command, process_start) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            e.exit_code()
        }
    };
    ExitCode::from(code as u8)
}

fn run(command: Command, process_start: Instant) -> Result<i32, Error> {
    match command {
        Command::Run { config } => {
            cmd::run::run(&config, process_start)?;
            Ok(EXIT_OK)
        }
        Command::Check { config } => cmd::check::run(&config, process_start),
        Command::Record { config, out, every, on_switch, max_files, max_mib } => cmd::record::run(
            &cmd::record::Options { config, out, every_s: every, on_switch, max_files, max_mib },
            process_start,
        ),
        Command::Classify { model, variant, top, json, all_scores, engine, images } => {
            cmd::classify::run(&cmd::classify::Options {
                model,
                variant: variant.into(),
                top,
                json,
                all_scores,
                images,
                engine: engine.choice()?,
            })
        }
        Command::Monitor { port, baud } => cmd::monitor::run(&port, baud),
        Command::Cameras => cmd::cameras::run(),
        Command::Inspect { model, variant, nodes } => cmd::inspect::run(&model, variant.into(), nodes),
        Command::Bench { model, variant, images, frames, workers, engine, json } => {
            let opts = cmd::bench::BenchOptions {
                bundle: model,
                variant: variant.into(),
                images,
                frames,
                workers,
                engine: engine.choice()?,
            };
            let report = cmd::bench::run(&opts, process_start)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                outln!("{report}");
            }
            Ok(EXIT_OK)
        }
        Command::Eval { set, thresholds, json, report } => {
            cmd::eval::eval(&set.options(thresholds)?, json, report.as_deref())
        }
        Command::Calibrate { set, objective, margin, output, dry_run, json } => {
            let opts = CalibrateOptions { eval: set.options(None)?, objective, margin, output, dry_run };
            cmd::eval::calibrate(&opts, json)
        }
    }
}
