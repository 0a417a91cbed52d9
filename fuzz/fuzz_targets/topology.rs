#![no_main]

//! Any text as a topology file. The body and its invariants:
//! `vpn_passthrough::fuzz::topology`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_passthrough::fuzz::topology(data));
