//! Fuzz target `mqtt_outbox`: see `vigil::fuzz::mqtt_outbox`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil::fuzz::mqtt_outbox(data));
