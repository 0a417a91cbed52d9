#![no_main]

//! Any text as a profile TOML, then traffic through a NAT with it. The body and
//! its invariants: `vpn_passthrough::fuzz::profile`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_passthrough::fuzz::profile(data));
