//! The commands of the `vigil` binary, one file each (part of the binary, not of
//! the library: they print for people). They assemble the stages from a config
//! or from command-line options and run them; `main.rs` only defines the
//! arguments and calls them.
//!
//! Every stage returns its own error type; [`Error`] gathers them at this level,
//! and only here does an error become an exit code ([`Error::exit_code`]).

#[macro_use]
pub mod out;

pub mod bench;
pub mod cameras;
pub mod check;
pub mod classify;
pub mod eval;
pub mod inspect;
pub mod monitor;
pub mod record;
pub mod run;

use vigil::engine::EngineError;
use vigil::evaluate::EvalError;
use vigil::pipeline::RunError;
use vigil::setup::SetupError;
use vigil::source::SourceError;
use vigil::tomlfile::SettingsError;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a failure while running (device, I/O, inference).
pub const EXIT_RUNTIME: i32 = 1;
/// Exit code: bad usage, config, manifest or model; refused before running.
pub const EXIT_CONFIG: i32 = 2;

/// Everything that can end a command, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file or manifest was refused.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The model could not be loaded, or failed at run time.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The pipeline could not start, or one of its threads died.
    #[error(transparent)]
    Pipeline(#[from] RunError),
    /// The frame source could not be set up.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// `vigil eval` / `vigil calibrate`: a refused labelled set, unreadable images, a failed write.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// A command-line option was refused.
    #[error("{0}")]
    Usage(String),
    /// Anything else that failed while running.
    #[error("{0}")]
    Runtime(String),
    /// A config could not be made ready to run (`run`, `check`): every problem found.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

impl Error {
    /// The process exit code: 2 for what was refused before running, 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        fn engine(e: &EngineError) -> i32 {
            match e {
                EngineError::Run(_) => EXIT_RUNTIME,
                _ => EXIT_CONFIG,
            }
        }
        fn setup(e: &SetupError) -> i32 {
            match e {
                SetupError::Settings(_) | SetupError::Source(_) => EXIT_CONFIG,
                SetupError::Engine(e) => engine(e),
                // Refused before running if any of them is; a failure while running otherwise.
                SetupError::Several(all) => all.iter().map(setup).max().unwrap_or(EXIT_CONFIG),
            }
        }
        match self {
            Error::Settings(_) | Error::Source(_) | Error::Usage(_) => EXIT_CONFIG,
            Error::Engine(e) => engine(e),
            Error::Pipeline(RunError::Engine(e)) => engine(e),
            Error::Pipeline(RunError::Thread(_)) => EXIT_RUNTIME,
            Error::Eval(e) => match e {
                EvalError::Settings(_) | EvalError::Set(_) | EvalError::Usage(_) => EXIT_CONFIG,
                EvalError::Engine(e) => engine(e),
                EvalError::Images(_) | EvalError::Write { .. } => EXIT_RUNTIME,
            },
            Error::Runtime(_) => EXIT_RUNTIME,
            Error::Setup(e) => setup(e),
        }
    }
}
