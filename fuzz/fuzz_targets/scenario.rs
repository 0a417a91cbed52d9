#![no_main]

//! Any text as a scenario file. The body and its invariants:
//! `vpn_passthrough::fuzz::scenario`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_passthrough::fuzz::scenario(data));
