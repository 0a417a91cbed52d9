//! The NAT under attack, with byte vectors: each test is one way a stranger
//! on either side could crash it, grow its state, tear down someone else's
//! state, or take another host's share.

use super::Side;
use super::alg::tests::esp_seq;
use super::counters::DropReason;
use super::engine::{Nat, Verdict};
use super::profile::{Behaviour, Profile};
use super::tests::{
    C1, C2, FAR, LAN, S1, S2, WAN, echo, fill_l4_checksum, forward, icmp_error, inb, ip_packet, l2tp_ctl, nat_with,
    out, ports, t, udp,
};
use crate::wire::{checksum, gre, icmp, ipv4, l2tp, pptp as msg, tcp};

/// An echo request whose ICMP part is cut to `icmp_len` bytes.
fn short_echo(src: [u8; 4], dst: [u8; 4], icmp_len: usize) -> Vec<u8> {
    let mut m = vec![0u8; icmp_len];
    m[0] = icmp::ECHO_REQUEST;
    ip_packet(src, dst, ipv4::PROTO_ICMP, &m)
}

#[test]
fn an_echo_request_cut_short_is_dropped_on_either_side() {
    let mut n = nat_with(|_| {});
    for len in 1..icmp::HEADER_LEN {
        for (side, src, dst) in [(Side::Wan, S1, WAN), (Side::Lan, C1, LAN), (Side::Lan, C1, WAN)] {
            let mut p = short_echo(src, dst, len);
            let v = match side {
                Side::Lan => out(&mut n, &mut p, t(1)),
                Side::Wan => inb(&mut n, &mut p, t(1)),
            };
            assert!(matches!(v, Verdict::Drop(_)), "{len} bytes of ICMP from the {side:?}: {v:?}");
        }
    }
    let mut whole = echo(S1, WAN, 7, true);
    assert_eq!(inb(&mut n, &mut whole, t(2)), forward(Side::Wan, S1), "a whole one is still answered");
}

/// A full-cone NAT with a mapping of C1's port 5000 to S1.
fn full_cone_with_mapping(f: impl FnOnce(&mut Profile)) -> (Nat, u16) {
    let mut n = nat_with(|p| {
        p.filtering = Behaviour::EndpointIndependent;
        f(p);
    });
    let mut p = udp(C1, 5000, S1, 9000, b"hello");
    assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
    (n, ports(&p).0)
}

#[test]
fn a_spray_at_a_full_cone_mapping_gets_in_but_makes_no_state() {
    let (mut n, public) = full_cone_with_mapping(|_| {});
    for port in 1..=20_000u16 {
        let mut p = udp(S2, port, WAN, public, b"spray");
        assert_eq!(inb(&mut n, &mut p, t(1)), forward(Side::Lan, C1));
    }
    assert_eq!(n.state_sizes().sessions, 1, "only the LAN host's own session");
    assert_eq!(n.mappings(t(1))[0].remotes.len(), 1);
}

#[test]
fn a_lan_socket_talking_to_many_peers_stops_at_its_bound() {
    let mut n = nat_with(|p| {
        p.limits.remotes_per_mapping = 8;
        p.limits.sessions = 12;
    });
    let send = |n: &mut Nat, src: [u8; 4], sport: u16, port: u16, at: u64| {
        let mut p = udp(src, sport, S1, port, b"x");
        out(n, &mut p, t(at))
    };
    for port in 1..=8 {
        assert!(matches!(send(&mut n, C1, 5000, port, 0), Verdict::Forward { .. }));
    }
    assert_eq!(send(&mut n, C1, 5000, 9, 0), Verdict::Drop(DropReason::RemotesFull));
    for sport in 1..=4 {
        assert!(matches!(send(&mut n, C2, sport, 1, 0), Verdict::Forward { .. }));
    }
    assert_eq!(send(&mut n, C2, 5, 1, 0), Verdict::Drop(DropReason::SessionsFull), "the table's bound");
    assert_eq!(n.state_sizes().sessions, 12);
    // Expired sessions make room.
    assert!(matches!(send(&mut n, C1, 5000, 9, 400), Verdict::Forward { .. }));
    assert!(n.over_bounds().is_none());
}

#[test]
fn one_lan_host_cannot_take_the_whole_table() {
    let mut n = nat_with(|p| {
        p.max_mappings = 10;
        p.limits.mappings_per_host = 4;
    });
    for sport in 1..=4 {
        let mut p = udp(C1, sport, S1, 53, b"q");
        assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
    }
    let mut p = udp(C1, 5, S1, 53, b"q");
    assert_eq!(out(&mut n, &mut p, t(0)), Verdict::Drop(DropReason::HostQuota));
    let mut p = udp(C2, 5, S1, 53, b"q");
    assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }), "another host still gets in");
}

/// A TCP segment with every field given.
fn tcp_full(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    ip_packet(src, dst, ipv4::PROTO_TCP, &tcp::Header { seq, ack, ..tcp::Header::new(sport, dport, flags) }.emit(&[]))
}

/// An established connection from C1:40000 to S1:80: its public port, and
/// the next sequence numbers of the client and the server.
fn established(n: &mut Nat) -> (u16, u32, u32) {
    let mut syn = tcp_full(C1, 40000, S1, 80, tcp::SYN, 1000, 0);
    out(n, &mut syn, t(0));
    let public = ports(&syn).0;
    let mut synack = tcp_full(S1, 80, WAN, public, tcp::SYN | tcp::ACK, 7000, 1001);
    assert!(matches!(inb(n, &mut synack, t(0)), Verdict::Forward { .. }));
    let mut ack = tcp_full(C1, 40000, S1, 80, tcp::ACK, 1001, 7001);
    out(n, &mut ack, t(0));
    (public, 1001, 7001)
}

fn tcp_state(n: &Nat) -> String {
    n.mappings(t(1)).iter().find(|m| m.protocol == "tcp").map(|m| m.remotes[0].clone()).unwrap_or_default()
}

#[test]
fn a_guessed_rst_or_fin_leaves_a_connection_alone_and_the_peers_rst_ends_it() {
    let mut n = nat_with(|_| {});
    let (public, _, server_seq) = established(&mut n);
    let mut dropped = 0;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..5000 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let guess = (x >> 32) as u32;
        let mut rst = tcp_full(S1, 80, WAN, public, tcp::RST, guess, 0);
        if inb(&mut n, &mut rst, t(1)) == Verdict::Drop(DropReason::TcpOutOfWindow) {
            dropped += 1;
        }
        let mut fin = tcp_full(S1, 80, WAN, public, tcp::FIN | tcp::ACK, guess ^ 0x8000_0000, 1001);
        inb(&mut n, &mut fin, t(1));
    }
    assert!(dropped >= 4990, "{dropped} of 5000 guesses dropped");
    assert!(tcp_state(&n).contains("established"), "{}", tcp_state(&n));
    assert!(n.mappings(t(1))[0].expires_in_s > 7000, "still on the established timeout");
    let mut rst = tcp_full(S1, 80, WAN, public, tcp::RST, server_seq, 0);
    assert_eq!(inb(&mut n, &mut rst, t(2)), forward(Side::Lan, C1));
    assert!(tcp_state(&n).contains("closing"));
}

#[test]
fn a_guessed_rst_on_the_pptp_control_connection_leaves_the_calls_up() {
    let mut n = nat_with(|_| {});
    let mut syn = tcp_full(C1, 40000, S1, 1723, tcp::SYN, 99, 0);
    out(&mut n, &mut syn, t(0));
    let public = ports(&syn).0;
    let mut synack = tcp_full(S1, 1723, WAN, public, tcp::SYN | tcp::ACK, 499, 100);
    inb(&mut n, &mut synack, t(0));
    let ocrq = msg::emit(msg::OCRQ, Some(7), None);
    let mut p = tcp_payload(C1, 40000, S1, 1723, 100, 500, &ocrq);
    assert!(matches!(out(&mut n, &mut p, t(1)), Verdict::Forward { .. }));
    let public_call = u16::from_be_bytes([p[40 + 12], p[40 + 13]]);
    let ocrp = msg::emit(msg::OCRP, Some(0x44), Some(public_call));
    let mut p = tcp_payload(S1, 1723, WAN, public, 500, 100 + ocrq.len() as u32, &ocrp);
    assert!(matches!(inb(&mut n, &mut p, t(1)), Verdict::Forward { .. }));
    for i in 0..2000u32 {
        let mut rst = tcp_full(S1, 1723, WAN, public, tcp::RST, i.wrapping_mul(2_654_435_761), 0);
        inb(&mut n, &mut rst, t(2));
    }
    assert_eq!(n.alg_state().pptp_calls.len(), 1, "the call survives the guesses");
    let mut g = ip_packet(S1, WAN, ipv4::PROTO_GRE, &gre_key(public_call));
    ipv4::Packet::new_checked(&mut g[..]).expect("gre").fill_checksum();
    assert_eq!(inb(&mut n, &mut g, t(3)), forward(Side::Lan, C1));
}

fn gre_key(call: u16) -> Vec<u8> {
    gre::emit_pptp(call, None, None, b"ppp!")
}

fn tcp_payload(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
    let header = tcp::Header { seq, ack, ..tcp::Header::new(sport, dport, tcp::ACK) };
    ip_packet(src, dst, ipv4::PROTO_TCP, &header.emit(data))
}

fn l2tp_zlb(tunnel: u16, ns: u16, nr: u16) -> Vec<u8> {
    let mut m = vec![0xc8, 0x02, 0, 12];
    m.extend_from_slice(&tunnel.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&ns.to_be_bytes());
    m.extend_from_slice(&nr.to_be_bytes());
    m
}

/// C1 opens tunnel 0x10 with S1, which answers from `port` as tunnel 0x20.
fn l2tp_tunnel(n: &mut Nat, port: u16) {
    let tid = |v| [(l2tp::AVP_ASSIGNED_TUNNEL_ID, v)];
    let mut p = udp(C1, 1701, S1, 1701, &l2tp_ctl(0, l2tp::SCCRQ, 0, 0, &tid(0x10)));
    assert!(matches!(out(n, &mut p, t(0)), Verdict::Forward { .. }));
    let mut p = udp(S1, port, WAN, 1701, &l2tp_ctl(0x10, l2tp::SCCRP, 0, 1, &tid(0x20)));
    assert_eq!(inb(n, &mut p, t(0)), forward(Side::Lan, C1));
    let mut p = udp(C1, 1701, S1, port, &l2tp_ctl(0x20, l2tp::SCCCN, 1, 1, &[]));
    assert!(matches!(out(n, &mut p, t(0)), Verdict::Forward { .. }));
    let mut p = udp(S1, port, WAN, 1701, &l2tp_zlb(0x10, 1, 2));
    assert_eq!(inb(n, &mut p, t(0)), forward(Side::Lan, C1));
}

#[test]
fn a_guessed_stop_ccn_passes_to_the_client_and_ends_nothing() {
    let mut n = nat_with(|_| {});
    l2tp_tunnel(&mut n, 1701);
    let stop = |ns: u16, nr: u16| l2tp_ctl(0x10, l2tp::STOP_CCN, ns, nr, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, 0x20)]);
    // Wrong Ns, an Nr acknowledging what the client never sent, another port.
    for (port, ns, nr) in [(1701, 0, 2), (1701, 7, 2), (1701, 1, 9), (40000, 1, 2), (1702, 1, 2)] {
        let mut p = udp(S1, port, WAN, 1701, &stop(ns, nr));
        assert_eq!(inb(&mut n, &mut p, t(1)), forward(Side::Lan, C1), "the client judges it");
    }
    n.handle_timeout(t(30));
    assert_eq!(n.alg_state().l2tp_tunnels.len(), 1, "no guess ended the tunnel");
    let mut p = udp(S1, 1701, WAN, 1701, &stop(1, 2));
    inb(&mut n, &mut p, t(31));
    n.handle_timeout(t(37));
    assert!(n.alg_state().l2tp_tunnels.is_empty(), "the server's own StopCCN ends it after the grace");
}

#[test]
fn an_outbound_stop_ccn_of_a_rewritten_tunnel_is_rewritten_too() {
    let mut n = nat_with(|_| {});
    let tid = |v| [(l2tp::AVP_ASSIGNED_TUNNEL_ID, v)];
    let mut a = udp(C1, 1701, S1, 1701, &l2tp_ctl(0, l2tp::SCCRQ, 0, 0, &tid(0x10)));
    out(&mut n, &mut a, t(0));
    let mut b = udp(C2, 1701, S1, 1701, &l2tp_ctl(0, l2tp::SCCRQ, 0, 0, &tid(0x10)));
    out(&mut n, &mut b, t(0));
    let public_b = u16::from_be_bytes([b[28 + 26], b[28 + 27]]);
    assert_ne!(public_b, 0x10, "the second client's Tunnel ID is rewritten");
    let mut stop = udp(C2, 1701, S1, 1701, &l2tp_ctl(0x30, l2tp::STOP_CCN, 1, 0, &tid(0x10)));
    out(&mut n, &mut stop, t(1));
    assert_eq!(u16::from_be_bytes([stop[28 + 26], stop[28 + 27]]), public_b, "its StopCCN names the public one");
}

#[test]
fn spoofed_esp_before_the_servers_answer_takes_nothing_from_the_client() {
    let mut n = nat_with(|_| {});
    assert!(matches!(out(&mut n, &mut esp_seq(C1, S1, 0x1001, 1), t(0)), Verdict::Forward { .. }));
    // A stranger, spoofing the server, sprays made-up SPIs first.
    for spi in 0..1000u32 {
        inb(&mut n, &mut esp_seq(S1, WAN, 0xdead_0000 | spi, spi.wrapping_mul(7919)), t(1));
    }
    for seq in 1..=3 {
        let v = inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, seq), t(2));
        assert_eq!(v, forward(Side::Lan, C1), "the server's ESP, packet {seq}");
    }
    assert!(n.state_sizes().ipsec_sas <= 3, "{:?}", n.state_sizes());
    // Bound now: further junk finds nobody waiting.
    let v = inb(&mut n, &mut esp_seq(S1, WAN, 0xbeef, 1), t(3));
    assert_eq!(v, Verdict::Drop(DropReason::EspUnknownSpi));
}

#[test]
fn two_spoofed_esp_packets_in_sequence_leave_a_client_deaf_only_until_they_stop() {
    let mut n = nat_with(|_| {});
    out(&mut n, &mut esp_seq(C1, S1, 0x1001, 1), t(0));
    // The stranger's pair wins the binding before the server answers.
    for seq in 1..=2 {
        assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0xbad, seq), t(0)), forward(Side::Lan, C1));
    }
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 1), t(1)), Verdict::Drop(DropReason::EspUnknownSpi));
    // C1 keeps sending and hears nothing from the server: it waits again,
    // and the server's SPI binds.
    for s in 2..=7 {
        out(&mut n, &mut esp_seq(C1, S1, 0x1001, s as u32), t(s));
    }
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 2), t(7)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 3), t(7)), forward(Side::Lan, C1));
}

#[test]
fn a_full_block_of_call_ids_refuses_the_next_call_and_keeps_the_others() {
    let mut n = nat_with(|p| {
        p.limits.pptp_calls_per_host = 1000;
        p.limits.pptp_controls_per_host = 1000;
    });
    let mut publics = Vec::new();
    for i in 0..257u16 {
        let port = 40000 + i;
        let mut syn = tcp_full(C1, port, S1, 1723, tcp::SYN, 99, 0);
        out(&mut n, &mut syn, t(0));
        let ocrq = msg::emit(msg::OCRQ, Some(0x0500), None);
        let mut p = tcp_payload(C1, port, S1, 1723, 100, 0, &ocrq);
        let v = out(&mut n, &mut p, t(0));
        if i < 256 {
            assert!(matches!(v, Verdict::Forward { .. }), "call {i}: {v:?}");
            publics.push(u16::from_be_bytes([p[40 + 12], p[40 + 13]]));
        } else {
            assert_eq!(v, Verdict::Drop(DropReason::PptpCallsFull), "the 257th call");
        }
    }
    publics.sort();
    publics.dedup();
    assert_eq!(publics.len(), 256, "every call its own public Call ID");
    assert_eq!(n.alg_state().pptp_calls.len(), 256);
}

#[test]
fn pptp_calls_and_controls_are_bounded_per_host_and_in_all() {
    let mut n = nat_with(|p| {
        p.limits.pptp_calls_per_host = 2;
        p.limits.pptp_controls = 4;
        p.limits.pptp_controls_per_host = 3;
    });
    let open = |n: &mut Nat, host: [u8; 4], port: u16, call: u16| {
        let mut syn = tcp_full(host, port, S1, 1723, tcp::SYN, 99, 0);
        let v = out(n, &mut syn, t(0));
        if v != forward(Side::Wan, S1) {
            return v;
        }
        let mut p = tcp_payload(host, port, S1, 1723, 100, 0, &msg::emit(msg::OCRQ, Some(call), None));
        out(n, &mut p, t(0))
    };
    assert!(matches!(open(&mut n, C1, 40000, 1), Verdict::Forward { .. }));
    assert!(matches!(open(&mut n, C1, 40001, 2), Verdict::Forward { .. }));
    assert_eq!(open(&mut n, C1, 40002, 3), Verdict::Drop(DropReason::HostQuota), "C1's share of calls");
    assert_eq!(open(&mut n, C1, 40004, 5), Verdict::Drop(DropReason::HostQuota), "C1's share of controls");
    assert!(matches!(open(&mut n, C2, 40003, 4), Verdict::Forward { .. }));
    assert_eq!(open(&mut n, [192, 168, 1, 12], 40005, 6), Verdict::Drop(DropReason::PptpControlsFull));
}

#[test]
fn segments_from_port_1723_to_a_mapping_no_control_connection_made_make_no_state() {
    let mut n = nat_with(|p| p.filtering = Behaviour::EndpointIndependent);
    let mut web = tcp_full(C1, 40000, S1, 80, tcp::SYN, 99, 0);
    out(&mut n, &mut web, t(0));
    let public = ports(&web).0;
    // A full-cone mapping lets the server's port 1723 in, but C1 never
    // opened a control connection: the ALG keeps nothing for it.
    let mut stray = tcp_payload(S1, 1723, WAN, public, 5, 0, &msg::emit(msg::OCRP, Some(9), Some(1)));
    assert_eq!(inb(&mut n, &mut stray, t(0)), forward(Side::Lan, C1));
    assert_eq!((n.state_sizes().pptp_controls, n.state_sizes().pptp_calls), (0, 0));
}

#[test]
fn l2tp_tunnels_are_bounded_and_never_overwritten() {
    let mut n = nat_with(|p| {
        p.limits.l2tp_tunnels = 3;
        p.limits.l2tp_tunnels_per_host = 2;
    });
    let sccrq = |tunnel: u16| l2tp_ctl(0, l2tp::SCCRQ, 0, 0, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, tunnel)]);
    let send = |n: &mut Nat, host: [u8; 4], tunnel: u16| {
        let mut p = udp(host, 1701, S1, 1701, &sccrq(tunnel));
        out(n, &mut p, t(0))
    };
    assert!(matches!(send(&mut n, C1, 1), Verdict::Forward { .. }));
    assert!(matches!(send(&mut n, C1, 2), Verdict::Forward { .. }));
    assert_eq!(send(&mut n, C1, 3), Verdict::Drop(DropReason::HostQuota));
    assert!(matches!(send(&mut n, C2, 1), Verdict::Forward { .. }), "same Tunnel ID, another public one");
    assert_eq!(send(&mut n, [192, 168, 1, 12], 9), Verdict::Drop(DropReason::L2tpTunnelsFull));
    let tunnels = n.alg_state().l2tp_tunnels;
    assert_eq!(tunnels.len(), 3);
    assert_eq!(tunnels.iter().filter(|t| t.client == "192.168.1.10").count(), 2, "C1's tunnels are intact");
}

#[test]
fn ipsec_state_is_bounded_per_host_and_in_all() {
    let mut n = nat_with(|p| {
        p.limits.ipsec_sas = 6;
        p.limits.ipsec_sas_per_host = 4;
    });
    for spi in 1..=4 {
        assert!(matches!(out(&mut n, &mut esp_seq(C1, S1, spi, 1), t(0)), Verdict::Forward { .. }));
    }
    assert_eq!(out(&mut n, &mut esp_seq(C1, S1, 5, 1), t(0)), Verdict::Drop(DropReason::HostQuota));
    for spi in 6..=7 {
        assert!(matches!(out(&mut n, &mut esp_seq(C2, S1, spi, 1), t(0)), Verdict::Forward { .. }));
    }
    assert_eq!(out(&mut n, &mut esp_seq(C2, S1, 8, 1), t(0)), Verdict::Drop(DropReason::IpsecTableFull));
    assert!(n.over_bounds().is_none());
    n.handle_timeout(t(1000));
    assert_eq!(n.state_sizes().ipsec_sas, 0, "expired state frees its room");
    assert!(matches!(out(&mut n, &mut esp_seq(C1, S1, 5, 1), t(1000)), Verdict::Forward { .. }));
}

#[test]
fn followed_fragmented_datagrams_are_bounded() {
    let mut n = nat_with(|p| p.limits.fragment_datagrams = 4);
    let mut p = udp(C1, 5000, S1, 9000, b"hello");
    out(&mut n, &mut p, t(0));
    let public = ports(&p).0;
    let first = |ident: u16| {
        let mut f = udp(S1, 9000, WAN, public, &[7u8; 64]);
        f[4..6].copy_from_slice(&ident.to_be_bytes());
        f[6] = 0x20; // more fragments
        ipv4::Packet::new_checked(&mut f[..]).expect("ip").fill_checksum();
        f
    };
    for ident in 0..4 {
        assert_eq!(inb(&mut n, &mut first(ident), t(1)), forward(Side::Lan, C1));
    }
    assert_eq!(inb(&mut n, &mut first(4), t(1)), Verdict::Drop(DropReason::FragmentTableFull));
    assert!(n.over_bounds().is_none());
}

#[test]
fn a_bulk_stream_of_fragmented_datagrams_is_not_held_up_by_the_bound() {
    // A tunnel's bulk transfer: every datagram in two fragments, many more
    // within a fragment timeout than the table follows. Each datagram is
    // forgotten once both its fragments passed, so none is refused.
    let mut n = nat_with(|p| {
        p.limits.fragment_datagrams = 4;
        p.limits.fragment_datagrams_per_source = 2;
    });
    let mut p = udp(C1, 5000, S1, 9000, b"hello");
    out(&mut n, &mut p, t(0));
    let public = ports(&p).0;
    for ident in 0..100u16 {
        let mut whole = udp(S1, 9000, WAN, public, &[7u8; 64]);
        whole[4..6].copy_from_slice(&ident.to_be_bytes());
        ipv4::Packet::new_checked(&mut whole[..]).expect("ip").fill_checksum();
        let (mut first, mut last) = ipv4::split(&whole, 40).expect("two fragments");
        assert_eq!(inb(&mut n, &mut first, t(1)), forward(Side::Lan, C1), "datagram {ident}'s first fragment");
        assert_eq!(inb(&mut n, &mut last, t(1)), forward(Side::Lan, C1), "datagram {ident}'s last fragment");
    }
    assert_eq!(n.state_sizes().fragment_datagrams, 0, "every datagram passed whole and was forgotten");
}

#[test]
fn a_later_fragment_at_the_smallest_offset_is_not_a_first_one() {
    let mut n = nat_with(|_| {});
    let mut p = udp(C1, 5000, S1, 9000, b"hello");
    out(&mut n, &mut p, t(0));
    let public = ports(&p).0;
    // Offset 1 (8 bytes): its first 8 bytes are data, not a UDP header
    // naming the public port.
    let mut later = ip_packet(S1, WAN, ipv4::PROTO_UDP, &[0x23, 0x28, (public >> 8) as u8, public as u8, 0, 16, 0, 0]);
    later[6..8].copy_from_slice(&1u16.to_be_bytes());
    ipv4::Packet::new_checked(&mut later[..]).expect("ip").fill_checksum();
    assert_eq!(inb(&mut n, &mut later, t(1)), Verdict::Consumed, "it waits for its first fragment");
}

#[test]
fn sources_that_cannot_be_on_a_side_are_dropped() {
    let mut n = nat_with(|_| {});
    for src in [[10, 0, 0, 5], LAN, [192, 168, 1, 0], [192, 168, 1, 255], S1] {
        let mut p = udp(src, 5000, S1, 53, b"q");
        assert_eq!(out(&mut n, &mut p, t(0)), Verdict::Drop(DropReason::SpoofedSource), "{src:?} from the LAN");
    }
    for src in [C1, WAN, [127, 0, 0, 1], [224, 0, 0, 1], [0, 0, 0, 0], [255, 255, 255, 255]] {
        let mut p = udp(src, 53, WAN, 5000, b"a");
        assert_eq!(inb(&mut n, &mut p, t(0)), Verdict::Drop(DropReason::SpoofedSource), "{src:?} from the WAN");
    }
    let mut p = udp(C1, 5000, FAR, 53, b"q");
    assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
}

#[test]
fn the_nat_makes_icmp_no_faster_than_its_rate() {
    let mut n = nat_with(|p| p.limits.icmp_per_second = 10);
    let answered =
        (0..50).filter(|_| matches!(inb(&mut n, &mut echo(S1, WAN, 1, true), t(1)), Verdict::Forward { .. })).count();
    assert_eq!(answered, 10, "one second's worth");
    assert_eq!(n.counters().dropped(DropReason::IcmpRateLimited), 40);
    assert!(matches!(inb(&mut n, &mut echo(S1, WAN, 1, true), t(2)), Verdict::Forward { .. }), "refilled");
    for _ in 0..50 {
        let mut p = udp(C1, 5000, S1, 53, b"q");
        p[8] = 1;
        ipv4::Packet::new_checked(&mut p[..]).expect("ip").fill_checksum();
        out(&mut n, &mut p, t(5));
    }
    let sent = std::iter::from_fn(|| n.poll_transmit()).count();
    assert_eq!(sent, 10, "time exceeded too");
    assert_eq!(n.counters().icmp_errors_suppressed, 40);
}

#[test]
fn an_icmp_error_about_a_packet_the_mapping_never_sent_is_filtered() {
    let mut n = nat_with(|_| {});
    let mut p = udp(C1, 5000, S1, 9000, b"hello");
    out(&mut n, &mut p, t(0));
    let public = ports(&p).0;
    // A stranger quotes a packet from the mapping to itself.
    let forged = udp(WAN, public, S2, 9000, b"hello");
    let mut err = icmp_error(S2, WAN, icmp::DEST_UNREACHABLE, 3, &forged, 28);
    assert_eq!(inb(&mut n, &mut err, t(1)), Verdict::Drop(DropReason::Filtered));
    let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 3, &p, 28);
    assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C1), "about a packet it did send");
}

#[test]
fn a_strangers_syn_neither_restarts_a_pptp_control_connection_nor_speaks_in_it() {
    let mut n = nat_with(|_| {});
    let mut syn = tcp_full(C1, 40000, S1, 1723, tcp::SYN, 99, 0);
    out(&mut n, &mut syn, t(0));
    let public = ports(&syn).0;
    let mut synack = tcp_full(S1, 1723, WAN, public, tcp::SYN | tcp::ACK, 499, 100);
    inb(&mut n, &mut synack, t(0));
    let ocrq = msg::emit(msg::OCRQ, Some(7), None);
    let mut p = tcp_payload(C1, 40000, S1, 1723, 100, 500, &ocrq);
    out(&mut n, &mut p, t(1));
    let public_call = u16::from_be_bytes([p[40 + 12], p[40 + 13]]);
    let ocrp = msg::emit(msg::OCRP, Some(0x44), Some(public_call));
    let mut p = tcp_payload(S1, 1723, WAN, public, 500, 100 + ocrq.len() as u32, &ocrp);
    inb(&mut n, &mut p, t(1));
    // A SYN "from the server" carrying a Stop-Control-Connection-Request at
    // a sequence number of the stranger's choosing, then a RST after it.
    let stop = msg::emit(msg::STOP_CCRQ, None, None);
    let mut l4 = tcp_full(S1, 1723, WAN, public, tcp::SYN, 3_000_000_000, 0)[20..].to_vec();
    l4.extend_from_slice(&stop);
    let mut forged = ip_packet(S1, WAN, ipv4::PROTO_TCP, &l4);
    fill_l4_checksum(&mut forged);
    inb(&mut n, &mut forged, t(2));
    let mut rst = tcp_full(S1, 1723, WAN, public, tcp::RST, 3_000_000_001 + stop.len() as u32, 0);
    assert_eq!(inb(&mut n, &mut rst, t(2)), Verdict::Drop(DropReason::TcpOutOfWindow));
    assert_eq!(n.alg_state().pptp_calls.len(), 1, "the call is still up");
    // The server's next real message is still read in sequence.
    let sli = msg::emit(msg::SLI, None, Some(public_call));
    let mut p = tcp_payload(S1, 1723, WAN, public, 500 + ocrp.len() as u32, 100 + ocrq.len() as u32, &sli);
    assert_eq!(inb(&mut n, &mut p, t(3)), forward(Side::Lan, C1));
    assert_eq!(u16::from_be_bytes([p[40 + 12], p[40 + 13]]), 7, "its Call ID is the client's own again");
}

#[test]
fn another_lan_host_naming_a_tunnel_cannot_stop_it() {
    let mut n = nat_with(|_| {});
    l2tp_tunnel(&mut n, 1701);
    // C2, with no tunnel of its own, sends StopCCNs naming C1's Tunnel ID
    // with every small Ns and Nr.
    for ns in 0..4u16 {
        for nr in 0..4u16 {
            let stop = l2tp_ctl(0x20, l2tp::STOP_CCN, ns, nr, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, 0x10)]);
            let mut p = udp(C2, 1701, S1, 1701, &stop);
            out(&mut n, &mut p, t(1));
        }
    }
    n.handle_timeout(t(10));
    assert_eq!(n.alg_state().l2tp_tunnels.len(), 1, "C1's tunnel is still there");
}

#[test]
fn an_echo_reply_is_summed_afresh_and_a_bad_request_is_not_answered() {
    let mut n = nat_with(|_| {});
    // An echo request whose other bytes are all zero: updating its sum
    // would give 0x0000 where 0xffff is right.
    let mut req = ip_packet(S1, WAN, ipv4::PROTO_ICMP, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
    assert_eq!(inb(&mut n, &mut req, t(1)), forward(Side::Wan, S1));
    assert_eq!(&req[20..24], &[0, 0, 0xff, 0xff], "a zero reply sums to all ones");
    let mut bad = ip_packet(S1, WAN, ipv4::PROTO_ICMP, &[8, 0, 0x12, 0x34, 0, 0, 0, 0]);
    assert_eq!(inb(&mut n, &mut bad, t(1)), Verdict::Drop(DropReason::IcmpChecksum));
}

#[test]
fn an_echo_reply_that_becomes_all_zero_sums_to_all_ones() {
    let mut n = nat_with(|_| {});
    // Identifier 0, sequence 0, no data: the reply to it is all zero once
    // its identifier is given back.
    let mut req = ip_packet(C1, S1, ipv4::PROTO_ICMP, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
    assert_eq!(out(&mut n, &mut req, t(0)), forward(Side::Wan, S1));
    let public = [req[24], req[25]];
    assert_ne!(public, [0, 0], "the premise: the reply's identifier is rewritten");
    let mut m = [0, 0, 0, 0, public[0], public[1], 0, 0];
    let sum = checksum::of(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut reply = ip_packet(S1, WAN, ipv4::PROTO_ICMP, &m);
    assert_eq!(inb(&mut n, &mut reply, t(1)), forward(Side::Lan, C1));
    assert_eq!(&reply[20..28], &[0, 0, 0xff, 0xff, 0, 0, 0, 0], "an all-zero reply sums to all ones");
}

#[test]
fn no_icmp_error_is_made_about_an_icmp_error() {
    let mut n = nat_with(|_| {});
    let about = udp(S1, 53, C1, 5000, b"x");
    let mut error = icmp_error(C1, S1, icmp::DEST_UNREACHABLE, 3, &about, 28);
    error[8] = 1;
    ipv4::Packet::new_checked(&mut error[..]).expect("ip").fill_checksum();
    assert_eq!(out(&mut n, &mut error, t(0)), Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!(n.poll_transmit(), None, "an error about an error would never end");
    let mut ping = echo(C1, S1, 9, true);
    ping[8] = 1;
    ipv4::Packet::new_checked(&mut ping[..]).expect("ip").fill_checksum();
    out(&mut n, &mut ping, t(0));
    assert!(n.poll_transmit().is_some(), "a query gets its time exceeded");
}

#[test]
fn an_icmp_error_quoting_a_malformed_packet_is_dropped() {
    let mut n = nat_with(|_| {});
    let mut p = udp(C1, 5000, S1, 9000, b"hello");
    out(&mut n, &mut p, t(0));
    let mut v6 = p.clone();
    v6[0] = 0x65;
    let mut short_ihl = p.clone();
    short_ihl[0] = 0x44;
    for (quote, what) in [
        (&p[..27], "7 bytes after the header"),
        (&p[..19], "a cut header"),
        (&v6[..28], "not IPv4"),
        (&short_ihl[..28], "IHL below 5"),
        (&p[..0], "nothing quoted"),
    ] {
        let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 3, quote, quote.len());
        assert_eq!(inb(&mut n, &mut err, t(1)), Verdict::Drop(DropReason::IcmpErrorUnmatched), "{what}");
    }
    let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 3, &p, 28);
    assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C1), "a whole quote");
}

#[test]
fn a_quote_with_a_header_shorter_than_20_bytes_is_not_read() {
    // Read with its IHL of 4, this quote's "ports" would be its destination
    // address, 198.51 and 100.2: the ports of a real mapping. It is
    // refused, not read.
    let mut n = nat_with(|p| p.port_preservation = true);
    let mut p = udp(C1, 50739, S1, 25602, b"x");
    assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
    assert_eq!(ports(&p).0, 50739, "the premise: the public port is the one the bytes spell");
    let mut quote = p.clone();
    quote[0] = 0x44;
    let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 3, &quote, 28);
    assert_eq!(inb(&mut n, &mut err, t(1)), Verdict::Drop(DropReason::IcmpErrorUnmatched));
}

#[test]
fn an_icmp_error_about_an_address_only_packet_changes_only_its_addresses() {
    // SCTP is mapped by address: the quote it comes back in gets its LAN
    // address again, and its bytes past the IPv4 header stay as sent.
    let mut n = nat_with(|_| {});
    let mut p = ip_packet(C1, S1, 132, &[0xab; 12]);
    assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
    let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 3, &p, 28);
    assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C1));
    let quote = &err[28..];
    assert_eq!(&quote[12..20], &[C1, S1].concat()[..], "the quoted addresses");
    assert_eq!(&quote[20..28], &[0xab; 8], "the quoted payload is untouched");
    assert_eq!(checksum::of(&quote[..20]), 0, "the quoted header's checksum");
}

#[test]
fn an_icmp_error_quoting_a_tcp_header_in_part_is_translated() {
    // RFC 792 asks only for 8 bytes of the quoted payload: a TCP header's
    // ports and sequence number, not its checksum, which then stays as is.
    let mut n = nat_with(|_| {});
    let mut p = tcp_full(C1, 40000, S1, 80, tcp::SYN, 1000, 0);
    out(&mut n, &mut p, t(0));
    for quoted in [28, 36] {
        // 36: the quote stops just before the checksum.
        let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 3, &p, quoted);
        assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C1), "{quoted}");
        assert_eq!(u16::from_be_bytes([err[48], err[49]]), 40000, "C1's own port is quoted back");
    }
}

#[test]
fn a_quoted_udp_datagram_without_a_checksum_keeps_none() {
    // A UDP checksum of 0 means "none": the quote it comes back in keeps 0
    // while its port changes back.
    let mut n = nat_with(|_| {});
    let mut p = udp(C1, 40000, S1, 53, b"no sum");
    p[26..28].copy_from_slice(&[0, 0]);
    out(&mut n, &mut p, t(0));
    assert_eq!(&p[26..28], &[0, 0], "the premise: it leaves without a checksum");
    let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 3, &p, p.len());
    assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C1));
    assert_eq!(u16::from_be_bytes([err[48], err[49]]), 40000);
    assert_eq!(&err[54..56], &[0, 0], "still no checksum in the quote");
}

#[test]
fn a_udp_checksum_that_comes_to_zero_is_sent_as_all_ones() {
    // Some public port turns the sum to 0, which UDP would read as "no
    // checksum": every port must give a checksum the receiver accepts.
    let p = udp(C1, 5000, S1, 9000, b"zero?");
    let ports = super::translate::read_ports(&p[20..], super::profile::Protocol::Udp, false).expect("ports");
    let mut zeros = 0;
    for public in 1..=u16::MAX {
        let mut q = p.clone();
        super::translate::rewrite(
            &mut q,
            20,
            super::translate::Rewritten::Source,
            WAN,
            ports,
            public,
            super::engine::L4Checksum::Full,
        );
        let sum = u16::from_be_bytes([q[26], q[27]]);
        assert_ne!(sum, 0, "port {public}");
        zeros += usize::from(sum == 0xffff);
        if sum == 0xffff {
            assert_eq!(super::tests::l4_checksum(&q), 0, "port {public}: all ones is right");
        }
    }
    assert!(zeros > 0, "some port sums to zero");
}

#[test]
fn an_icmp_error_about_an_echo_request_reaches_the_host_that_sent_it() {
    let mut n = nat_with(|_| {});
    let mut a = echo(C1, S1, 7, true);
    let mut b = echo(C2, S1, 7, true);
    out(&mut n, &mut a, t(0));
    out(&mut n, &mut b, t(0));
    // A router on the way says C2's echo request could not be delivered:
    // the quoted identifier, not a port, tells the hosts apart.
    let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 1, &b, 28);
    assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C2));
    assert_eq!(u16::from_be_bytes([err[28 + 24], err[28 + 25]]), 7, "C2's own identifier is quoted back");
    // Quoted whole, the echo request comes back with both its checksums
    // right.
    let mut err = icmp_error(FAR, WAN, icmp::DEST_UNREACHABLE, 1, &b, b.len());
    assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C2));
    let quote = &err[28..];
    assert_eq!(checksum::of(&quote[..20]), 0, "the quoted IPv4 header's checksum");
    assert_eq!(checksum::of(&quote[20..]), 0, "the quoted echo request's checksum");
}
