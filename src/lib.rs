//! vigil: camera frames in, per-label decisions out.
//!
//! ```text
//! source ──frames──▶ preprocess ──tensor──▶ engine ──scores──▶ decide ──events──▶ sinks
//! ```
//! Each stage is a module behind a small trait ([`source::FrameSource`],
//! [`engine::InferenceEngine`], [`sink::Sink`]) or a plain struct
//! ([`preprocess::Preprocessor`], [`decide::Decider`]); [`pipeline`] runs them
//! on threads; [`console`] acts on the decide stage between frames; [`setup`]
//! builds a run's stages from a config. The binary's commands (`src/cmd/`, not
//! part of this library) call it and turn errors into exit codes. See `docs/architecture.md`.

pub mod board;
pub mod bundle;
pub mod classify;
pub mod config;
pub mod console;
pub mod convert;
pub mod decide;
pub mod engine;
pub mod evaluate;
pub mod frame;
pub mod fuzz;
pub mod jpeg;
pub mod notify;
pub mod pipeline;
pub mod preprocess;
pub mod protocol;
pub mod setup;
pub mod sink;
pub mod snapshots;
pub mod source;
pub mod stats;
pub mod stop;
pub mod thresholds;
pub mod tomlfile;
pub mod util;
