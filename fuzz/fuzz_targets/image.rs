//! Fuzz target `image`: see `vigil::fuzz::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::image(data));
