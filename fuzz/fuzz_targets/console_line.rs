//! Fuzz target `console_line`: see `vigil::fuzz::console_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::console_line(data));
