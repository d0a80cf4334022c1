//! vigil: camera frames in, per-label decisions out.
//!
//! ```text
//! source ──frames──▶ preprocess ──tensor──▶ engine ──scores──▶ decide ──events──▶ sinks
//! ```
//! Each stage is a module behind a small trait ([`source::FrameSource`],
//! [`engine::InferenceEngine`], [`sink::Sink`]) or a plain struct
//! ([`preprocess::Preprocessor`], [`decide::Decider`]); [`pipeline`] runs them
//! on threads and [`app`] builds a pipeline from a config file.

pub mod app;
pub mod bench;
pub mod bundle;
pub mod classify;
pub mod config;
pub mod console;
pub mod convert;
pub mod daemon;
pub mod decide;
pub mod engine;
pub mod evaluate;
pub mod frame;
pub mod monitor;
pub mod notify;
pub mod pipeline;
pub mod preprocess;
pub mod protocol;
pub mod sink;
pub mod source;
pub mod stats;
pub mod stop;
pub mod thresholds;
pub mod tomlfile;

/// Everything that can stop vigil, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file or manifest was refused.
    #[error(transparent)]
    Settings(#[from] tomlfile::SettingsError),
    /// The model could not be loaded, or failed at run time.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// The frame source could not be set up.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// `vigil eval` / `vigil calibrate`: a refused labelled set, unreadable images, a failed write.
    #[error(transparent)]
    Eval(#[from] evaluate::EvalError),
    /// Anything else that failed while running.
    #[error("{0}")]
    Runtime(String),
}

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a failure while running (device, I/O, inference).
pub const EXIT_RUNTIME: i32 = 1;
/// Exit code: bad usage, config, manifest or model; refused before running.
pub const EXIT_CONFIG: i32 = 2;

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Settings(_) | Error::Source(_) => EXIT_CONFIG,
            Error::Engine(engine::EngineError::Run(_)) => EXIT_RUNTIME,
            Error::Engine(_) => EXIT_CONFIG,
            Error::Eval(e) => e.exit_code(),
            Error::Runtime(_) => EXIT_RUNTIME,
        }
    }
}
