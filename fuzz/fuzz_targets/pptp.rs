#![no_main]

//! PPTP control streams in any segmentation, with GRE between. The body and its
//! invariants: `vpn_passthrough::fuzz::pptp`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_passthrough::fuzz::pptp(data));
