#![no_main]

//! PPTP control streams of any bytes, in any segmentation, both ways, with
//! retransmissions and GRE in between: the NAT gives every packet a verdict
//! and never panics.

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vpn_passthrough::nat::wire::{checksum, ipv4};
use vpn_passthrough::nat::{Config, L4Checksum, Nat, Profile, Side};

const CLIENT: [u8; 4] = [192, 168, 1, 10];
const SERVER: [u8; 4] = [198, 51, 100, 2];
const WAN: [u8; 4] = [198, 51, 100, 1];

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 20 + payload.len()];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[20..].copy_from_slice(payload);
    let mut p = vec![0u8; 20 + l4.len()];
    ipv4::emit_header(&mut p, src, dst, ipv4::PROTO_TCP, l4.len(), 64, 1);
    p[20..].copy_from_slice(&l4);
    let sum = checksum::pseudo_header(src, dst, 6, l4.len() as u16);
    let c = !checksum::fold(checksum::add(sum, &p[20..]));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

fn gre(src: [u8; 4], dst: [u8; 4], call: u16) -> Vec<u8> {
    let body = [0x20, 0x01, 0x88, 0x0b, 0, 0, (call >> 8) as u8, call as u8];
    let mut p = vec![0u8; 28];
    ipv4::emit_header(&mut p, src, dst, ipv4::PROTO_GRE, 8, 64, 2);
    p[20..].copy_from_slice(&body);
    p
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let mut profile = Profile::default();
    if mode & 1 == 1 {
        profile.pptp_call_ids = vpn_passthrough::nat::profile::CallIdChoice::ControlPort;
    }
    let cfg = Config {
        lan: "192.168.1.1/24".parse().expect("static"),
        wan: "198.51.100.1/24".parse().expect("static"),
        gateway: None,
        profile,
    };
    let Ok(mut nat) = Nat::new(cfg) else { return };
    let now = Duration::from_secs(1);
    let mut syn = tcp(CLIENT, 40000, SERVER, 1723, 99, 0x02, b"");
    let _ = nat.process(Side::Lan, &mut syn, L4Checksum::Full, now);
    let public = u16::from_be_bytes([syn[20], syn[21]]);
    let mut synack = tcp(SERVER, 1723, WAN, public, 499, 0x12, b"");
    let _ = nat.process(Side::Wan, &mut synack, L4Checksum::Full, now);
    let (mut out_seq, mut in_seq) = (100u32, 500u32);
    while rest.len() >= 2 {
        let (ctl, len) = (rest[0], usize::from(rest[1]));
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (payload, tail) = rest.split_at(take);
        rest = tail;
        let back = if ctl & 2 != 0 { take as u32 } else { 0 };
        let csum = if ctl & 8 != 0 { L4Checksum::Partial } else { L4Checksum::Full };
        if ctl & 1 == 0 {
            let seq = out_seq.wrapping_sub(back);
            let mut p = tcp(CLIENT, 40000, SERVER, 1723, seq, 0x10, payload);
            let _ = nat.process(Side::Lan, &mut p, csum, now);
            out_seq = out_seq.wrapping_add(take as u32 - back.min(take as u32));
        } else {
            let seq = in_seq.wrapping_sub(back);
            let mut p = tcp(SERVER, 1723, WAN, public, seq, 0x10, payload);
            let _ = nat.process(Side::Wan, &mut p, csum, now);
            in_seq = in_seq.wrapping_add(take as u32 - back.min(take as u32));
        }
        if ctl & 4 != 0 {
            let call = u16::from(ctl >> 4) | (u16::from(len as u8) << 4);
            let _ = nat.process(Side::Wan, &mut gre(SERVER, WAN, call), L4Checksum::Full, now);
            let _ = nat.process(Side::Lan, &mut gre(CLIENT, SERVER, call), L4Checksum::Full, now);
        }
        while nat.poll_transmit().is_some() {}
    }
    let _ = nat.alg_state();
    nat.handle_timeout(Duration::from_secs(100_000));
});
