#![no_main]

//! Packets from both sides of the NAT, through the engine or the link layer.
//! The body and its invariants: `vpn_passthrough::fuzz::nat`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_passthrough::fuzz::nat(data));
