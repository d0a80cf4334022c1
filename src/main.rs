//! The `vigil` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use vigil::bundle::{Bundle, Variant};
use vigil::classify::Classifier;
use vigil::config::Config;
use vigil::engine::{InferenceEngine, TractEngine};
use vigil::evaluate::{CalibrateOptions, EvalOptions, LabelChoice, Objective};
use vigil::preprocess::Preprocessor;
use vigil::stop::StopFlag;
use vigil::{EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, Error};

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
        /// The model bundle directory.
        #[arg(long, short)]
        model: PathBuf,
        /// The labelled set: a CSV file, or a directory with one subdirectory per label.
        #[arg(long, short)]
        data: PathBuf,
        /// Which model of the bundle to run.
        #[arg(long, value_enum, default_value = "fp32")]
        variant: VariantArg,
        /// A thresholds file layered over the manifest's, as `[model] thresholds` in a run config.
        #[arg(long)]
        thresholds: Option<PathBuf>,
        /// Labels to evaluate: `set` (those the set names), `all` (every model label), or names separated by `;`.
        #[arg(long, default_value = "set")]
        labels: LabelChoice,
        /// Scoring threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
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
        /// The model bundle directory.
        #[arg(long, short)]
        model: PathBuf,
        /// The labelled set: a CSV file, or a directory with one subdirectory per label.
        #[arg(long, short)]
        data: PathBuf,
        /// Which model of the bundle to run.
        #[arg(long, value_enum, default_value = "fp32")]
        variant: VariantArg,
        /// What to optimise per label: `f1`, `precision>=P` or `recall>=R`.
        #[arg(long, default_value = "f1")]
        objective: Objective,
        /// How far `off` sits below `on` (hysteresis).
        #[arg(long, default_value_t = 0.1)]
        margin: f32,
        /// Write a thresholds file here instead of editing the bundle's model.toml.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Labels to calibrate: `set` (those the set names), `all`, or names separated by `;`.
        #[arg(long, default_value = "set")]
        labels: LabelChoice,
        /// Scoring threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Report what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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
            vigil::daemon::run(&config, process_start)?;
            Ok(EXIT_OK)
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            let serial = config.serial.clone();
            let prepared = vigil::app::prepare(config, process_start)?;
            println!("config: {} ok", prepared.config.file.path.display());
            println!(
                "bundle: {} ({} labels, {})",
                prepared.bundle.dir.display(),
                prepared.bundle.labels.len(),
                prepared.bundle.provenance.licence
            );
            println!("model: {}", prepared.engine.describe());
            if prepared.health.source_lost.load(std::sync::atomic::Ordering::Relaxed) {
                println!(
                    "source: {} NOT AVAILABLE now (a run keeps retrying; see the warning above)",
                    prepared.source.describe()
                );
            } else {
                println!("source: {}", prepared.source.describe());
            }
            if let Some(t) = &prepared.config.thresholds_file {
                println!("thresholds: {} (between the bundle's and this config's)", t.file.path.display());
            }
            if let Some(s) = serial {
                let device = s.device.get_ref();
                if !std::path::Path::new(device).exists() {
                    return Err(Error::Settings(prepared.config.file.error_at(
                        s.device.span(),
                        "serial.device",
                        format!(
                            "device `{device}` does not exist: expected a serial device (is the adapter plugged in?)"
                        ),
                    )));
                }
                println!("serial: {device} at {} baud, {:?}", s.baud.get_ref(), s.format);
            }
            Ok(EXIT_OK)
        }
        Command::Classify { model, variant, top, json, all_scores, images } => {
            let bundle = Bundle::load(&model)?;
            let rules = vigil::app::rules_for(&bundle, None)?;
            let engine = TractEngine::load(&bundle, variant.into())?;
            let mut classifier = Classifier {
                labels: &bundle.labels,
                rules: &rules,
                pre: Preprocessor::new(&bundle.input),
                worker: engine.new_worker()?,
                input: engine.new_input()?,
            };
            let mut failed = 0;
            for path in &images {
                let r = classifier.classify(path, top, all_scores);
                if let Some(e) = &r.error {
                    failed += 1;
                    log::error!("{}: {e}", path.display());
                }
                if json {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                } else if r.error.is_none() {
                    println!("{}", path.display());
                    for (rank, s) in r.top.iter().enumerate() {
                        let on = rules[bundle.labels.iter().position(|l| *l == s.label).unwrap_or(0)].on;
                        let decision = if s.score >= on { format!("DETECTED (on >= {on})") } else { String::new() };
                        println!("  {:>2}. {:<32} {:.4}  {decision}", rank + 1, s.label, s.score);
                    }
                    let others: Vec<&str> = r
                        .detected
                        .iter()
                        .filter(|d| !r.top.iter().any(|t| t.label == d.label))
                        .map(|d| d.label.as_str())
                        .collect();
                    if !others.is_empty() {
                        println!("  also detected: {}", others.join(", "));
                    }
                }
            }
            Ok(if failed > 0 { EXIT_RUNTIME } else { EXIT_OK })
        }
        Command::Monitor { port, baud } => monitor(&port, baud),
        Command::Cameras => {
            let cameras = vigil::source::v4l2::list_cameras();
            if cameras.is_empty() {
                println!("no V4L2 capture devices found (/dev/video*)");
            }
            for c in cameras {
                println!("{}: {} ({})", c.path.display(), c.card, c.driver);
                for f in &c.formats {
                    println!("  {}", vigil::source::v4l2::describe_offer(f));
                }
            }
            Ok(EXIT_OK)
        }
        Command::Inspect { model, variant, nodes } => {
            let bundle = Bundle::load(&model)?;
            let engine = TractEngine::load(&bundle, variant.into())?;
            println!("{}", engine.describe());
            let graph = engine.optimized_nodes();
            let mut counts = std::collections::BTreeMap::new();
            for n in &graph {
                if nodes {
                    println!("  {:<24} {:<40} {} -> {}", n.op, n.name, n.input_types.join(","), n.output_type);
                }
                *counts.entry(format!("{} ({} -> {})", n.op, n.input_types.join(","), n.output_type)).or_insert(0) += 1;
            }
            println!("{} nodes:", graph.len());
            for (k, v) in counts {
                println!("  {v:>4} x {k}");
            }
            Ok(EXIT_OK)
        }
        Command::Bench { model, variant, images, frames, workers, json } => {
            if workers.is_empty() || workers.contains(&0) {
                log::error!("--workers: expected worker counts of 1 or more, e.g. 1,2");
                return Ok(EXIT_CONFIG);
            }
            let opts = vigil::bench::BenchOptions { bundle: model, variant: variant.into(), images, frames, workers };
            let report = vigil::bench::run(&opts, process_start)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                println!("{report}");
            }
            Ok(EXIT_OK)
        }
        Command::Eval { model, data, variant, thresholds, labels, workers, json, report } => {
            let Some(workers) = scoring_workers(workers) else { return Ok(EXIT_CONFIG) };
            let opts = EvalOptions { model, variant: variant.into(), data, thresholds, labels, workers };
            let result = vigil::evaluate::evaluate(&opts, &progress_bar("scoring"))?;
            if let Some(dir) = &report {
                vigil::evaluate::report::write_report(dir, &result)?;
                log::info!("report written to {}", dir.join("report.md").display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
            } else {
                print!("{result}");
            }
            Ok(EXIT_OK)
        }
        Command::Calibrate { model, data, variant, objective, margin, output, labels, workers, dry_run, json } => {
            let Some(workers) = scoring_workers(workers) else { return Ok(EXIT_CONFIG) };
            let eval = EvalOptions { model, variant: variant.into(), data, thresholds: None, labels, workers };
            let opts = CalibrateOptions { eval, objective, margin, output, dry_run };
            let result = vigil::evaluate::calibrate(&opts, &progress_bar("scoring"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
            } else {
                print!("{result}");
            }
            Ok(EXIT_OK)
        }
    }
}

/// `--workers` for eval/calibrate: one per core by default; 0 is refused (None, after logging why).
fn scoring_workers(asked: Option<usize>) -> Option<usize> {
    match asked {
        Some(0) => {
            log::error!("--workers 0: expected 1 or more scoring threads");
            None
        }
        Some(n) => Some(n),
        None => Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// A progress bar on stderr; indicatif hides it when stderr is not a terminal.
struct Bar(indicatif::ProgressBar);

impl vigil::evaluate::Progress for Bar {
    fn start(&self, total: usize) {
        self.0.set_length(total as u64);
        self.0.reset();
    }

    fn advance(&self) {
        self.0.inc(1);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn progress_bar(what: &str) -> Bar {
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images, {per_sec}, eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Bar(bar)
}

/// `vigil monitor`: print what a vigil serial line says until interrupted.
fn monitor(port: &str, baud: u32) -> Result<i32, Error> {
    use std::io::Read;
    let stop = StopFlag::new();
    stop.register_signals().map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
    let (mut good, mut bad) = (0u64, 0u64);
    let mut pending = Vec::new();
    let mut buf = [0u8; 512];
    while !stop.is_stopped() {
        let mut p = match serialport::new(port, baud).timeout(std::time::Duration::from_millis(200)).open() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("{port}: {e}; retrying");
                stop.sleep_until(Instant::now() + std::time::Duration::from_secs(1));
                continue;
            }
        };
        while !stop.is_stopped() {
            match p.read(&mut buf) {
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => {
                    log::warn!("{port}: {e}; reopening");
                    break;
                }
            }
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                match vigil::monitor::describe(&String::from_utf8_lossy(&line)) {
                    Ok(text) => {
                        good += 1;
                        println!("{text}");
                    }
                    Err(why) => {
                        bad += 1;
                        println!("BAD    {why}");
                    }
                }
            }
        }
    }
    eprintln!("{good} good line(s), {bad} corrupt");
    Ok(EXIT_OK)
}
