//! Fuzz target `manifest`: see `vigil::fuzz::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::manifest(data));
