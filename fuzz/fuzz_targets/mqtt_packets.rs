//! Fuzz target `mqtt_packets`: see `vigil::fuzz::mqtt_packets`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::mqtt_packets(data));
