#![no_main]

//! L2TP datagrams of any bytes on UDP 1701 from three clients and two
//! servers (one answering from a new port): a verdict for each, never a
//! panic.

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vpn_passthrough::nat::wire::{checksum, ipv4};
use vpn_passthrough::nat::{Config, L4Checksum, Nat, Profile, Side};

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut p = vec![0u8; 20 + len];
    ipv4::emit_header(&mut p, src, dst, ipv4::PROTO_UDP, len, 64, 1);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&(len as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    let sum = checksum::pseudo_header(src, dst, 17, len as u16);
    let c = !checksum::fold(checksum::add(sum, &p[20..]));
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        lan: "192.168.1.1/24".parse().expect("static"),
        wan: "198.51.100.1/24".parse().expect("static"),
        gateway: None,
        profile: Profile::default(),
    };
    let Ok(mut nat) = Nat::new(cfg) else { return };
    let clients = [[192, 168, 1, 10], [192, 168, 1, 11], [192, 168, 1, 12]];
    let servers = [[198, 51, 100, 2], [198, 51, 100, 3]];
    let mut rest = data;
    let mut t = 0u64;
    while rest.len() >= 2 {
        let (ctl, len) = (rest[0], usize::from(rest[1]));
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (payload, tail) = rest.split_at(take);
        rest = tail;
        let client = clients[usize::from(ctl >> 2) % 3];
        let server = servers[usize::from(ctl >> 4) & 1];
        let port = if ctl & 0x40 != 0 { 40000 } else { 1701 };
        t += u64::from(ctl >> 7) * 30;
        let now = Duration::from_secs(t);
        if ctl & 1 == 0 {
            let _ = nat.process(Side::Lan, &mut udp(client, 1701, server, port, payload), L4Checksum::Full, now);
        } else {
            let _ = nat.process(Side::Wan, &mut udp(server, port, [198, 51, 100, 1], 1701, payload), L4Checksum::Full, now);
        }
        while nat.poll_transmit().is_some() {}
        nat.handle_timeout(now);
    }
    let _ = nat.alg_state();
});
