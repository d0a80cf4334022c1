//! The `vigil` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use vigil::bundle::{Bundle, Variant};
use vigil::classify::Classifier;
use vigil::config::Config;
use vigil::engine::{InferenceEngine, TractEngine};
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
            let config = Config::load(&config)?;
            let prepared = vigil::app::prepare(config, process_start)?;
            log::info!("model: {}", prepared.engine.describe());
            log::info!("source: {}", prepared.source.describe());
            let stop = StopFlag::new();
            stop.register_signals().map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
            let summary = prepared.into_pipeline(stop.clone(), process_start).run()?;
            let c = summary.counters;
            log::info!(
                "{} after {} frames decided, {} dropped, {} events",
                if stop.is_stopped() { "stopped" } else { "source ended" },
                c.decided,
                c.dropped(),
                c.events
            );
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
            println!("source: {}", prepared.source.describe());
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
    }
}
