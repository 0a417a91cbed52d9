#![no_main]

//! L2TP datagrams on UDP 1701 from three clients and two servers. The body and
//! its invariants: `vpn_passthrough::fuzz::l2tp`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_passthrough::fuzz::l2tp(data));
