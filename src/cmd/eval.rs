//! `vigil eval` and `vigil calibrate`: the labelled-set evaluation of
//! [`vigil::evaluate`], with a progress bar and the report printed.

use std::path::Path;

use super::{EXIT_OK, Error};
use vigil::evaluate::{self, CalibrateOptions, EvalOptions};

/// Evaluate; optionally write the report files into `report`.
pub fn eval(opts: &EvalOptions, json: bool, report: Option<&Path>) -> Result<i32, Error> {
    let result = evaluate::evaluate(opts, &progress_bar("scoring"))?;
    if let Some(dir) = report {
        evaluate::report::write_report(dir, &result)?;
        log::info!("report written to {}", dir.join("report.md").display());
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
    } else {
        out!("{result}");
    }
    Ok(EXIT_OK)
}

/// Calibrate and print what changed.
pub fn calibrate(opts: &CalibrateOptions, json: bool) -> Result<i32, Error> {
    let result = evaluate::calibrate(opts, &progress_bar("scoring"))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
    } else {
        out!("{result}");
    }
    Ok(EXIT_OK)
}

/// `--workers` for eval/calibrate: one per core by default; 0 is refused.
pub fn scoring_workers(asked: Option<usize>) -> Result<usize, Error> {
    match asked {
        Some(0) => Err(Error::Usage("--workers 0: expected 1 or more scoring threads".into())),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// A progress bar on stderr; indicatif hides it when stderr is not a terminal.
struct Bar(indicatif::ProgressBar);

impl evaluate::Progress for Bar {
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
