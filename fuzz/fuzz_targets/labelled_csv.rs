//! Fuzz target `labelled_csv`: see `vigil::fuzz::labelled_csv`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::labelled_csv(data));
