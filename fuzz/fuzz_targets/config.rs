//! Fuzz target `config`: see `vigil::fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::config(data));
