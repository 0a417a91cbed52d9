#![no_main]

//! PPP frames to a session, as server or client, alone or with a peer. The body
//! and its invariants: `vpn_passthrough::fuzz::ppp`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_passthrough::fuzz::ppp(data));
