//! Fuzz target `pipe_stream`: see `vigil::fuzz::pipe_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::pipe_stream(data));
