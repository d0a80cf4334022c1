//! vigil's integration tests, in one binary so that it links tract once: a
//! module per area. (The allocation-counting test is its own binary,
//! `tests/alloc.rs`: its global allocator would count every test's threads.)

mod common;

mod boards;
mod bundles;
mod camera;
mod command_source;
mod daemon;
mod decide;
mod docs_commands;
mod emulated_board;
mod eval;
mod faults;
mod fuzz_replay;
mod gpio;
mod jpeg_scaling;
mod metrics;
mod model;
mod mqtt;
mod onnxruntime;
mod record;
mod road_scene;
mod snapshots;
mod soak;
