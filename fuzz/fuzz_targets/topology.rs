#![no_main]

use libfuzzer_sys::fuzz_target;
use vpn_passthrough::lab::{Plan, Topology};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(topology) = Topology::from_toml(text) {
        if let Err(e) = Plan::new(&topology) {
            // Every error is printable.
            let _ = e.to_string();
        }
    }
});
