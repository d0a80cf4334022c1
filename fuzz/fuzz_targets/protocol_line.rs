//! Fuzz target `protocol_line`: see `vigil::fuzz::protocol_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::protocol_line(data));
