//! Fuzz target `thresholds_file`: see `vigil::fuzz::thresholds_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::thresholds_file(data));
