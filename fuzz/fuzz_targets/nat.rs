#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vpn_passthrough::nat::{Behaviour, Config, L4Checksum, Nat, Profile, Side};

// Any bytes from either side, in any checksum state: a verdict, never a
// panic. The first byte picks side, checksum state and clock; the rest is
// a sequence of packets separated by their own 2-byte lengths.
fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else { return };
    let profile = Profile { filtering: Behaviour::EndpointIndependent, ..Profile::default() };
    let cfg = Config {
        lan: "192.168.1.1/24".parse().expect("static"),
        wan: "198.51.100.1/24".parse().expect("static"),
        gateway: None,
        profile,
    };
    let Ok(mut nat) = Nat::new(cfg) else { return };
    let mut t = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 1600;
        rest = &rest[2..];
        let take = len.min(rest.len());
        let mut packet = rest[..take].to_vec();
        rest = &rest[take..];
        let side = if (ctl ^ take as u8) & 1 == 0 { Side::Lan } else { Side::Wan };
        let csum = if ctl & 2 == 0 { L4Checksum::Full } else { L4Checksum::Partial };
        t += u64::from(ctl >> 4);
        let _ = nat.process(side, &mut packet, csum, Duration::from_secs(t));
        while nat.poll_transmit().is_some() {}
        nat.handle_timeout(Duration::from_secs(t));
    }
});
