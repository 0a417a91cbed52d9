#![no_main]

//! Any bytes as a pcap file. The body and its invariants:
//! `vpn_passthrough::fuzz::pcap`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_passthrough::fuzz::pcap(data));
