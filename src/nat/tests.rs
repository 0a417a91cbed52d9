//! The NAT core driven with byte vectors and a fake clock.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::Side;
use super::counters::DropReason;
use super::engine::{Config, L4Checksum, Nat, Verdict};
use super::profile::{Behaviour, PortAllocation, PortRange, Profile, Protocol};
use crate::wire::{WireError, checksum, gre, icmp, ipv4, tcp, udp};

pub(crate) const C1: [u8; 4] = [192, 168, 1, 10];
pub(crate) const C2: [u8; 4] = [192, 168, 1, 11];
pub(crate) const LAN: [u8; 4] = [192, 168, 1, 1];
pub(crate) const WAN: [u8; 4] = [198, 51, 100, 1];
pub(crate) const S1: [u8; 4] = [198, 51, 100, 2];
pub(crate) const S2: [u8; 4] = [198, 51, 100, 3];
pub(crate) const FAR: [u8; 4] = [203, 0, 113, 9];
pub(crate) const GW: [u8; 4] = [198, 51, 100, 254];

pub(crate) fn t(secs: u64) -> Duration {
    Duration::from_secs(1000 + secs)
}

pub(crate) fn nat_with(f: impl FnOnce(&mut Profile)) -> Nat {
    nat_seeded(1, f)
}

/// A NAT whose random choices start from `seed`.
pub(crate) fn nat_seeded(seed: u64, f: impl FnOnce(&mut Profile)) -> Nat {
    let mut profile = Profile::default();
    f(&mut profile);
    Nat::new(Config {
        lan: "192.168.1.1/24".parse().expect("lan"),
        wan: "198.51.100.1/24".parse().expect("wan"),
        gateway: Some(Ipv4Addr::from(GW)),
        profile,
        seed,
    })
    .expect("valid config")
}

pub(crate) fn nat() -> Nat {
    nat_with(|_| {})
}

pub(crate) use crate::wire::ipv4::packet as ip_packet;

/// 0 when the TCP or UDP checksum of `p` is right.
pub(crate) fn l4_checksum(p: &[u8]) -> u16 {
    ipv4::transport_checksum_residue(p).expect("a TCP or UDP packet")
}

pub(crate) use crate::wire::ipv4::fill_transport_checksum as fill_l4_checksum;

pub(crate) fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, data: &[u8]) -> Vec<u8> {
    ip_packet(src, dst, ipv4::PROTO_UDP, &udp::emit(sport, dport, data))
}

pub(crate) fn tcp_seg(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let header = tcp::Header { seq: 7, ..tcp::Header::new(sport, dport, flags) };
    ip_packet(src, dst, ipv4::PROTO_TCP, &header.emit(&[]))
}

pub(crate) fn echo(src: [u8; 4], dst: [u8; 4], ident: u16, request: bool) -> Vec<u8> {
    ip_packet(src, dst, ipv4::PROTO_ICMP, &icmp::emit_echo(request, ident, 1, b"pingdata"))
}

/// An ICMP error quoting `about` whole (as Linux does) or its first
/// `quote` bytes (header + 8, as RFC 792 requires at least).
pub(crate) fn icmp_error(src: [u8; 4], dst: [u8; 4], kind: u8, code: u8, about: &[u8], quote: usize) -> Vec<u8> {
    let quoted = &about[..about.len().min(quote)];
    ip_packet(src, dst, ipv4::PROTO_ICMP, &icmp::emit(kind, code, [0; 4], quoted))
}

/// An L2TP control message to `tunnel` with its sequence numbers.
pub(crate) fn l2tp_ctl(tunnel: u16, kind: u16, ns: u16, nr: u16, avps: &[(u16, u16)]) -> Vec<u8> {
    let mut m = crate::wire::l2tp::emit_control(tunnel, 0, kind, avps);
    m[8..10].copy_from_slice(&ns.to_be_bytes());
    m[10..12].copy_from_slice(&nr.to_be_bytes());
    m
}

pub(crate) fn ports(p: &[u8]) -> (u16, u16) {
    (u16::from_be_bytes([p[20], p[21]]), u16::from_be_bytes([p[22], p[23]]))
}

pub(crate) fn addrs(p: &[u8]) -> ([u8; 4], [u8; 4]) {
    ([p[12], p[13], p[14], p[15]], [p[16], p[17], p[18], p[19]])
}

pub(crate) fn assert_checksums(p: &[u8]) {
    let ip = ipv4::Packet::new_checked(p).expect("valid ipv4");
    assert!(ip.verify_checksum(), "ipv4 header checksum");
    match ip.protocol() {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => assert_eq!(l4_checksum(p), 0, "l4 checksum"),
        ipv4::PROTO_ICMP => assert_eq!(checksum::of(ip.payload()), 0, "icmp checksum"),
        _ => {}
    }
}

pub(crate) fn forward(side: Side, hop: [u8; 4]) -> Verdict {
    Verdict::Forward { side, next_hop: Ipv4Addr::from(hop) }
}

pub(crate) fn out(nat: &mut Nat, p: &mut [u8], now: Duration) -> Verdict {
    nat.process(Side::Lan, p, L4Checksum::Full, now)
}

pub(crate) fn inb(nat: &mut Nat, p: &mut [u8], now: Duration) -> Verdict {
    nat.process(Side::Wan, p, L4Checksum::Full, now)
}

#[test]
fn udp_goes_out_and_its_reply_comes_back() {
    let mut n = nat();
    let mut p = udp(C1, 40000, S1, 53, b"query");
    assert_eq!(out(&mut n, &mut p, t(0)), forward(Side::Wan, S1));
    assert_eq!(addrs(&p), (WAN, S1));
    assert_eq!(ports(&p), (40000, 53), "the port is preserved");
    assert_eq!(p[8], 63, "TTL decremented");
    assert_checksums(&p);

    let mut r = udp(S1, 53, WAN, 40000, b"answer");
    assert_eq!(inb(&mut n, &mut r, t(1)), forward(Side::Lan, C1));
    assert_eq!(addrs(&r), (S1, C1));
    assert_eq!(ports(&r), (53, 40000));
    assert_checksums(&r);
    let c = n.counters().protocol(Protocol::Udp);
    assert_eq!((c.outbound, c.inbound), (1, 1));
    assert_eq!(n.counters().mappings_created, 1);
    // Any port but those an ALG keeps (1701, 500), the lowest too.
    let mut low = udp(C2, 1, S1, 53, b"query");
    assert_eq!(out(&mut n, &mut low, t(0)), forward(Side::Wan, S1));
    assert_eq!(ports(&low), (1, 53), "port 1 is preserved");
}

#[test]
fn off_link_destinations_go_to_the_gateway() {
    let mut n = nat();
    let mut p = udp(C1, 40000, FAR, 53, b"q");
    assert_eq!(out(&mut n, &mut p, t(0)), forward(Side::Wan, GW));
}

#[test]
fn unsolicited_inbound_is_dropped_and_counted() {
    let mut n = nat();
    let mut p = udp(S1, 53, WAN, 40000, b"hello?");
    assert_eq!(inb(&mut n, &mut p, t(0)), Verdict::Drop(DropReason::Unsolicited));
    let mut p = tcp_seg(S1, 5555, WAN, 22, tcp::SYN);
    assert_eq!(inb(&mut n, &mut p, t(0)), Verdict::Drop(DropReason::Unsolicited));
    assert_eq!(n.counters().dropped(DropReason::Unsolicited), 2);
    assert_eq!(n.counters().protocol(Protocol::Tcp).dropped, 1);
}

fn filtering_case(filtering: Behaviour) -> [bool; 3] {
    let mut n = nat_with(|p| p.filtering = filtering);
    out(&mut n, &mut udp(C1, 40000, S1, 3478, b"x"), t(0));
    let mut ok = |src, sport| {
        let mut p = udp(src, sport, WAN, 40000, b"y");
        matches!(inb(&mut n, &mut p, t(1)), Verdict::Forward { .. })
    };
    [ok(S1, 3478), ok(S1, 3479), ok(S2, 3478)]
}

#[test]
fn each_filtering_behaviour_admits_what_rfc4787_says() {
    assert_eq!(filtering_case(Behaviour::EndpointIndependent), [true, true, true]);
    assert_eq!(filtering_case(Behaviour::AddressDependent), [true, true, false]);
    assert_eq!(filtering_case(Behaviour::AddressAndPortDependent), [true, false, false]);
}

#[test]
fn a_filtered_packet_is_counted_apart_from_unsolicited() {
    let mut n = nat();
    out(&mut n, &mut udp(C1, 40000, S1, 3478, b"x"), t(0));
    assert_eq!(inb(&mut n, &mut udp(S2, 3478, WAN, 40000, b"y"), t(1)), Verdict::Drop(DropReason::Filtered));
    assert_eq!(n.counters().dropped(DropReason::Filtered), 1);
}

fn mapping_case(mapping: Behaviour, preserve: bool) -> (u16, u16, u16, usize) {
    let mut n = nat_with(|p| {
        p.mapping = mapping;
        p.port_preservation = preserve;
    });
    let mut public = |dst, dport| {
        let mut p = udp(C1, 40000, dst, dport, b"x");
        out(&mut n, &mut p, t(0));
        ports(&p).0
    };
    let (a, b, c) = (public(S1, 3478), public(S1, 3479), public(S2, 3478));
    (a, b, c, n.mapping_count())
}

#[test]
fn each_mapping_behaviour_reuses_what_rfc4787_says() {
    // With port preservation too: a mapping per destination gets a public
    // port of its own, not the internal port again (RFC 4787 §4.1).
    for preserve in [false, true] {
        let (a, b, c, n) = mapping_case(Behaviour::EndpointIndependent, preserve);
        assert!(a == b && b == c && n == 1, "EIM: one mapping for every destination");
        let (a, b, c, n) = mapping_case(Behaviour::AddressDependent, preserve);
        assert!(a == b && a != c && n == 2, "ADM: one mapping per destination address ({a} {b} {c})");
        let (a, b, c, n) = mapping_case(Behaviour::AddressAndPortDependent, preserve);
        assert!(a != b && a != c && b != c && n == 3, "APDM: one per destination endpoint ({a} {b} {c})");
        assert_eq!(a == 40000, preserve, "the first mapping keeps the internal port only with preservation");
    }
}

#[test]
fn a_port_held_under_dependent_mapping_is_free_again_once_its_mapping_expires() {
    let mut n = nat_with(|p| p.mapping = Behaviour::AddressAndPortDependent);
    let mut first = udp(C1, 40000, S1, 3478, b"x");
    out(&mut n, &mut first, t(0));
    assert_eq!(ports(&first).0, 40000);
    let later = t(Profile::default().timeouts.udp + 1);
    let mut again = udp(C1, 40000, S2, 3478, b"x");
    out(&mut n, &mut again, later);
    assert_eq!(ports(&again).0, 40000, "the expired mapping no longer holds the port");
}

#[test]
fn two_clients_on_one_source_port_get_distinct_public_ports() {
    let mut n = nat();
    let mut a = udp(C1, 5000, S1, 5000, b"a");
    let mut b = udp(C2, 5000, S1, 5000, b"b");
    out(&mut n, &mut a, t(0));
    out(&mut n, &mut b, t(0));
    assert_eq!(ports(&a).0, 5000, "the first keeps its port");
    assert_ne!(ports(&b).0, 5000, "the second cannot");
    assert!(PortRange::default().contains(ports(&b).0));
    // Replies find their way to each.
    let mut ra = udp(S1, 5000, WAN, 5000, b"ra");
    let mut rb = udp(S1, 5000, WAN, ports(&b).0, b"rb");
    assert_eq!(inb(&mut n, &mut ra, t(1)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut rb, t(1)), forward(Side::Lan, C2));
    assert_eq!(ports(&rb).1, 5000);
}

#[test]
fn without_port_preservation_ports_come_from_the_range() {
    let mut n = nat_with(|p| {
        p.port_preservation = false;
        p.port_range = PortRange { low: 20000, high: 20001 };
    });
    let mut got = Vec::new();
    for (c, port) in [(C1, 5000), (C2, 5000)] {
        let mut p = udp(c, port, S1, 53, b"x");
        assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
        got.push(ports(&p).0);
    }
    got.sort();
    assert_eq!(got, vec![20000, 20001]);
    let mut third = udp([192, 168, 1, 12], 5000, S1, 53, b"x");
    assert_eq!(out(&mut n, &mut third, t(0)), Verdict::Drop(DropReason::PortsExhausted));
}

#[test]
fn a_full_range_is_searched_at_most_once_a_second_until_a_mapping_goes() {
    // Address-and-port-dependent mapping: each destination takes a port.
    let mut n = nat_with(|p| {
        p.mapping = Behaviour::AddressAndPortDependent;
        p.port_preservation = false;
        p.port_range = PortRange { low: 20000, high: 20001 };
    });
    for dport in [1, 2] {
        assert!(matches!(out(&mut n, &mut udp(C1, 5000, S1, dport, b"x"), t(0)), Verdict::Forward { .. }));
    }
    // Just before they expire, a third destination finds the range full.
    let expiry = Duration::from_secs(Profile::default().timeouts.udp);
    let full = t(0) + expiry - Duration::from_millis(200);
    assert_eq!(out(&mut n, &mut udp(C1, 5000, S1, 3, b"x"), full), Verdict::Drop(DropReason::PortsExhausted));
    // They expire; within a second of that search the range is not searched
    // again, after it the search finds their ports free.
    let soon = full + Duration::from_millis(500);
    assert_eq!(out(&mut n, &mut udp(C1, 5000, S1, 4, b"x"), soon), Verdict::Drop(DropReason::PortsExhausted));
    let later = full + Duration::from_millis(1100);
    let v = out(&mut n, &mut udp(C1, 5000, S1, 5, b"x"), later);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
}

#[test]
fn random_allocation_gives_a_restarted_nat_new_ports_and_still_fills_the_range() {
    let random = |p: &mut Profile| {
        p.port_preservation = false;
        p.port_allocation = PortAllocation::Random;
    };
    // The same flow through NATs that start afresh with new seeds, as the
    // `nat` command does after a reboot; the same seed repeats its choice.
    let first = |seed| {
        let mut n = nat_seeded(seed, random);
        let mut p = udp(C1, 5000, S1, 53, b"x");
        assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
        ports(&p).0
    };
    assert_eq!(first(3), first(3));
    let firsts: std::collections::BTreeSet<u16> = (0..8)
        .map(|seed| {
            let mut n = nat_seeded(seed, random);
            let mut p = udp(C1, 5000, S1, 53, b"x");
            assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
            ports(&p).0
        })
        .collect();
    assert!(firsts.len() > 1, "eight restarts, one port: {firsts:?}");
    assert!(firsts.iter().all(|p| *p >= 1024));
    let sequential: std::collections::BTreeSet<u16> = (0..3)
        .map(|_| {
            let mut n = nat_with(|p| p.port_preservation = false);
            let mut p = udp(C1, 5000, S1, 53, b"x");
            assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
            ports(&p).0
        })
        .collect();
    assert_eq!(sequential.len(), 1, "a sequential NAT hands the same port out after a restart");
    let mut n = nat_with(|p| {
        random(p);
        p.port_range = PortRange { low: 20000, high: 20001 };
    });
    let mut got: Vec<u16> = [C1, C2]
        .into_iter()
        .map(|c| {
            let mut p = udp(c, 5000, S1, 53, b"x");
            assert!(matches!(out(&mut n, &mut p, t(0)), Verdict::Forward { .. }));
            ports(&p).0
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![20000, 20001], "a random start still finds every free port");
}

#[test]
fn the_table_has_a_size_limit() {
    let mut n = nat_with(|p| p.max_mappings = 2);
    for port in [1000, 1001] {
        assert!(matches!(out(&mut n, &mut udp(C1, port, S1, 53, b"x"), t(0)), Verdict::Forward { .. }));
    }
    assert_eq!(out(&mut n, &mut udp(C1, 1002, S1, 53, b"x"), t(0)), Verdict::Drop(DropReason::TableFull));
}

#[test]
fn udp_mappings_expire_after_their_timeout() {
    let mut n = nat_with(|p| p.timeouts.udp = 30);
    out(&mut n, &mut udp(C1, 40000, S1, 53, b"x"), t(0));
    assert!(matches!(inb(&mut n, &mut udp(S1, 53, WAN, 40000, b"y"), t(29)), Verdict::Forward { .. }));
    // The reply refreshed it: still alive 29 s after the reply.
    assert!(matches!(inb(&mut n, &mut udp(S1, 53, WAN, 40000, b"y"), t(58)), Verdict::Forward { .. }));
    n.handle_timeout(t(89));
    assert_eq!(n.mapping_count(), 0, "swept");
    assert_eq!(inb(&mut n, &mut udp(S1, 53, WAN, 40000, b"y"), t(89)), Verdict::Drop(DropReason::Unsolicited));
    assert_eq!(n.counters().mappings_expired, 1);
}

#[test]
fn tcp_timeouts_follow_the_connection_state() {
    let mut n = nat_with(|p| {
        p.timeouts.tcp_established = 1000;
        p.timeouts.tcp_transitory = 10;
    });
    let go = |n: &mut Nat, side: Side, flags: u8, at: u64| {
        let mut p = match side {
            Side::Lan => tcp_seg(C1, 40000, S1, 80, flags),
            Side::Wan => tcp_seg(S1, 80, WAN, 40000, flags),
        };
        n.process(side, &mut p, L4Checksum::Full, t(at))
    };
    assert!(matches!(go(&mut n, Side::Lan, tcp::SYN, 0), Verdict::Forward { .. }));
    assert!(matches!(go(&mut n, Side::Wan, tcp::SYN | tcp::ACK, 1), Verdict::Forward { .. }));
    assert!(matches!(go(&mut n, Side::Lan, tcp::ACK, 2), Verdict::Forward { .. }));
    // Established: idle for 500 s is fine.
    assert!(matches!(go(&mut n, Side::Wan, tcp::ACK, 500), Verdict::Forward { .. }));
    // Closing: both FINs, then the short timeout applies.
    assert!(matches!(go(&mut n, Side::Lan, tcp::FIN | tcp::ACK, 501), Verdict::Forward { .. }));
    assert!(matches!(go(&mut n, Side::Wan, tcp::FIN | tcp::ACK, 502), Verdict::Forward { .. }));
    assert_eq!(go(&mut n, Side::Wan, tcp::ACK, 520), Verdict::Drop(DropReason::Unsolicited));
    // A half-open connection (SYN only) also lives only the short time.
    let mut syn = tcp_seg(C2, 41000, S1, 80, tcp::SYN);
    out(&mut n, &mut syn, t(600));
    let mut late = tcp_seg(S1, 80, WAN, 41000, tcp::SYN | tcp::ACK);
    assert_eq!(inb(&mut n, &mut late, t(611)), Verdict::Drop(DropReason::Unsolicited));
}

#[test]
fn tcp_checksums_stay_right_both_ways() {
    let mut n = nat();
    let mut p = tcp_seg(C1, 40000, S1, 443, tcp::SYN);
    out(&mut n, &mut p, t(0));
    assert_checksums(&p);
    let mut r = tcp_seg(S1, 443, WAN, 40000, tcp::SYN | tcp::ACK);
    inb(&mut n, &mut r, t(0));
    assert_checksums(&r);
}

#[test]
fn partial_checksums_move_with_the_pseudo_header_only() {
    // What a sender with checksum offload hands over: the folded
    // pseudo-header sum in the TCP checksum field.
    let mut n = nat_with(|p| p.port_preservation = false);
    let mut p = tcp_seg(C1, 40000, S1, 443, tcp::ACK);
    let partial = |p: &[u8]| {
        let (s, d) = addrs(p);
        checksum::fold(checksum::pseudo_header(s, d, ipv4::PROTO_TCP, 20))
    };
    let field = partial(&p);
    p[36..38].copy_from_slice(&field.to_be_bytes());
    n.process(Side::Lan, &mut p, L4Checksum::Partial, t(0));
    assert_ne!(ports(&p).0, 40000, "the port was rewritten");
    assert_eq!(u16::from_be_bytes([p[36], p[37]]), partial(&p), "field is the new pseudo-header sum");
}

#[test]
fn icmp_echo_is_mapped_by_identifier() {
    let mut n = nat();
    let mut a = echo(C1, S1, 7, true);
    let mut b = echo(C2, S1, 7, true);
    assert_eq!(out(&mut n, &mut a, t(0)), forward(Side::Wan, S1));
    out(&mut n, &mut b, t(0));
    assert_checksums(&a);
    let (ida, idb) = (u16::from_be_bytes([a[24], a[25]]), u16::from_be_bytes([b[24], b[25]]));
    assert_ne!(ida, idb, "two hosts with one identifier get two");
    let mut ra = echo(S1, WAN, ida, false);
    let mut rb = echo(S1, WAN, idb, false);
    assert_eq!(inb(&mut n, &mut ra, t(1)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut rb, t(1)), forward(Side::Lan, C2));
    assert_eq!(u16::from_be_bytes([rb[24], rb[25]]), 7);
    assert_checksums(&ra);
    assert_checksums(&rb);
}

#[test]
fn the_router_answers_pings_to_its_own_addresses() {
    let mut n = nat();
    let mut p = echo(C1, LAN, 9, true);
    assert_eq!(out(&mut n, &mut p, t(0)), forward(Side::Lan, C1));
    assert_eq!(p[20], icmp::ECHO_REPLY);
    assert_eq!(addrs(&p), (LAN, C1));
    assert_checksums(&p);
    let mut p = echo(S1, WAN, 9, true);
    assert_eq!(inb(&mut n, &mut p, t(0)), forward(Side::Wan, S1));
    assert_checksums(&p);
    let mut p = udp(C1, 5000, LAN, 53, b"dns?");
    assert_eq!(out(&mut n, &mut p, t(0)), Verdict::Drop(DropReason::ToRouter));
}

#[test]
fn inbound_icmp_errors_reach_the_host_with_every_checksum_right() {
    let mut n = nat_with(|p| p.port_preservation = false);
    let mut sent = udp(C1, 40000, S1, 9999, b"anyone?");
    out(&mut n, &mut sent, t(0));
    let public = ports(&sent).0;
    // The server says port unreachable, quoting what it got.
    let mut err = icmp_error(S1, WAN, icmp::DEST_UNREACHABLE, 3, &sent, usize::MAX);
    assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C1));
    assert_checksums(&err);
    let quoted = &err[28..];
    assert_eq!(addrs(quoted), (C1, S1), "quoted source is the LAN host again");
    assert_eq!(ports(quoted).0, 40000);
    assert_ne!(public, 40000);
    assert!(ipv4::Packet::new_checked(quoted).expect("quoted header").verify_checksum());
    assert_eq!(l4_checksum(quoted), 0, "quoted UDP checksum kept right");
}

#[test]
fn time_exceeded_from_a_router_on_the_way_quotes_tcp() {
    let mut n = nat();
    let mut sent = tcp_seg(C1, 40000, FAR, 443, tcp::SYN);
    out(&mut n, &mut sent, t(0));
    // An intermediate router (the gateway) reports it, quoting 28 bytes:
    // the TCP checksum itself is not quoted.
    let mut err = icmp_error(GW, WAN, icmp::TIME_EXCEEDED, 0, &sent, 28);
    assert_eq!(inb(&mut n, &mut err, t(1)), forward(Side::Lan, C1));
    assert_checksums(&err);
    assert_eq!(addrs(&err[28..]), (C1, FAR));
}

#[test]
fn errors_about_nothing_we_sent_are_dropped() {
    let mut n = nat();
    let stranger = udp(WAN, 7, S1, 9, b"never sent");
    let mut err = icmp_error(S1, WAN, icmp::DEST_UNREACHABLE, 3, &stranger, usize::MAX);
    assert_eq!(inb(&mut n, &mut err, t(0)), Verdict::Drop(DropReason::IcmpErrorUnmatched));
    let mut short = icmp_error(S1, WAN, icmp::DEST_UNREACHABLE, 3, &stranger, 20);
    assert_eq!(inb(&mut n, &mut short, t(0)), Verdict::Drop(DropReason::IcmpErrorUnmatched));
}

#[test]
fn outbound_icmp_errors_quote_the_public_endpoint() {
    let mut n = nat_with(|p| {
        p.port_preservation = false;
        p.filtering = Behaviour::EndpointIndependent;
    });
    let mut sent = udp(C1, 40000, S1, 53, b"x");
    out(&mut n, &mut sent, t(0));
    let public = ports(&sent).0;
    let mut got = udp(S1, 53, WAN, public, b"late answer");
    inb(&mut n, &mut got, t(1));
    // The host has closed the socket: port unreachable, quoting what it got.
    let mut err = icmp_error(C1, S1, icmp::DEST_UNREACHABLE, 3, &got, usize::MAX);
    assert_eq!(out(&mut n, &mut err, t(2)), forward(Side::Wan, S1));
    assert_checksums(&err);
    assert_eq!(addrs(&err), (WAN, S1));
    assert_eq!(addrs(&err[28..]), (S1, WAN));
    assert_eq!(ports(&err[28..]).1, public);
    assert_eq!(l4_checksum(&err[28..]), 0);
}

#[test]
fn hairpinning_turns_a_packet_to_the_public_address_around() {
    let mut n = nat_with(|p| {
        p.filtering = Behaviour::EndpointIndependent;
        p.port_preservation = false;
    });
    let mut c1 = udp(C1, 40000, S1, 3478, b"x");
    out(&mut n, &mut c1, t(0));
    let c1_public = ports(&c1).0;
    let mut p = udp(C2, 50000, WAN, c1_public, b"hi neighbour");
    assert_eq!(out(&mut n, &mut p, t(1)), forward(Side::Lan, C1));
    assert_eq!(addrs(&p), (WAN, C1), "the source is C2's public endpoint (RFC 4787 REQ-9)");
    assert_eq!(ports(&p).1, 40000);
    assert_checksums(&p);
    assert_eq!(n.counters().protocol(Protocol::Udp).hairpinned, 1);
    // Off: the public address is the router's own.
    let mut off = nat_with(|p| p.hairpinning = false);
    let mut p = udp(C2, 50000, WAN, c1_public, b"x");
    assert_eq!(out(&mut off, &mut p, t(1)), Verdict::Drop(DropReason::ToRouter));
}

pub(crate) fn fragments(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> (Vec<u8>, Vec<u8>) {
    // A UDP datagram of 8 + 24 bytes split after 16 bytes of payload.
    ipv4::split(&udp(src, sport, dst, dport, &[0xab; 24]), 16).expect("splits")
}

#[test]
fn every_fragment_of_a_datagram_is_translated_alike() {
    let mut n = nat_with(|p| p.port_preservation = false);
    let (mut f1, mut f2) = fragments(C1, S1, 5500, 5500);
    assert_eq!(out(&mut n, &mut f1, t(0)), forward(Side::Wan, S1));
    assert_eq!(out(&mut n, &mut f2, t(0)), forward(Side::Wan, S1));
    assert_eq!(addrs(&f1).0, WAN);
    assert_eq!(addrs(&f2).0, WAN);
    let public = ports(&f1).0;
    // The reassembled datagram's checksum must hold: sum both parts.
    let mut whole = f1.clone();
    whole.extend_from_slice(&f2[20..]);
    let len = whole.len() as u16;
    whole[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(l4_checksum(&whole), 0);

    // Inbound, the later fragment first: it waits, then follows the first.
    let (mut g1, mut g2) = fragments(S1, WAN, 5500, public);
    assert_eq!(inb(&mut n, &mut g2, t(1)), Verdict::Consumed);
    assert_eq!(inb(&mut n, &mut g1, t(1)), forward(Side::Lan, C1));
    let released = n.poll_transmit().expect("the waiting fragment");
    assert_eq!(released.side, Side::Lan);
    assert_eq!(addrs(&released.packet).1, C1);
    assert!(ipv4::Packet::new_checked(&released.packet[..]).expect("valid").verify_checksum());
    assert_eq!(n.poll_transmit(), None);
}

#[test]
fn a_router_that_drops_fragments_drops_every_part_and_counts_them() {
    let mut n = nat_with(|p| p.drop_fragments = true);
    let (mut f1, mut f2) = fragments(C1, S1, 5500, 5500);
    assert_eq!(out(&mut n, &mut f1, t(0)), Verdict::Drop(DropReason::FragmentDropped));
    assert_eq!(out(&mut n, &mut f2, t(0)), Verdict::Drop(DropReason::FragmentDropped));
    let (_, mut g2) = fragments(S1, WAN, 5500, 5500);
    assert_eq!(inb(&mut n, &mut g2, t(0)), Verdict::Drop(DropReason::FragmentDropped));
    assert_eq!(n.counters().dropped(DropReason::FragmentDropped), 3);
    let mut whole = udp(C1, 5500, S1, 5500, b"whole");
    assert_eq!(out(&mut n, &mut whole, t(0)), forward(Side::Wan, S1), "a whole datagram still crosses");
}

#[test]
fn a_lone_later_fragment_gives_up() {
    let mut n = nat();
    let (_, mut f2) = fragments(S1, WAN, 500, 500);
    assert_eq!(inb(&mut n, &mut f2, t(0)), Verdict::Consumed);
    n.handle_timeout(t(60));
    assert_eq!(n.counters().dropped(DropReason::FragmentUnmatched), 1);
}

#[test]
fn malformed_packets_are_dropped_with_their_reason() {
    let mut n = nat();
    let good = udp(C1, 40000, S1, 53, b"fine");
    let mut cases: Vec<(Vec<u8>, DropReason)> = Vec::new();
    cases.push((good[..10].to_vec(), DropReason::Ipv4(WireError::Truncated)));
    let mut b = good.clone();
    b[0] = 0x43;
    cases.push((b, DropReason::Ipv4(WireError::BadHeaderLength)));
    let mut b = good.clone();
    b[0] = 0x65;
    cases.push((b, DropReason::Ipv4(WireError::BadVersion)));
    let mut b = good.clone();
    b[2..4].copy_from_slice(&500u16.to_be_bytes());
    cases.push((b, DropReason::Ipv4(WireError::BadLength)));
    let mut b = good.clone();
    b[10] ^= 0xff;
    cases.push((b, DropReason::Ipv4Checksum));
    let mut b = good.clone();
    b[24..26].copy_from_slice(&300u16.to_be_bytes()); // UDP length beyond the packet
    cases.push((b, DropReason::Udp(WireError::BadLength)));
    let mut b = tcp_seg(C1, 1, S1, 2, tcp::SYN);
    b[32] = 0x20; // data offset 8 bytes
    cases.push((b, DropReason::Tcp(WireError::BadHeaderLength)));
    let mut b = ip_packet(C1, S1, ipv4::PROTO_TCP, &[0; 12]);
    ipv4::Packet::new_checked(&mut b[..]).expect("valid").fill_checksum();
    cases.push((b, DropReason::Tcp(WireError::Truncated)));
    let mut b = ip_packet(C1, S1, ipv4::PROTO_ICMP, &[8, 0, 0]);
    ipv4::Packet::new_checked(&mut b[..]).expect("valid").fill_checksum();
    cases.push((b, DropReason::Icmp(WireError::Truncated)));
    for (mut p, reason) in cases {
        assert_eq!(out(&mut n, &mut p, t(0)), Verdict::Drop(reason), "{reason}");
        assert_eq!(n.counters().dropped(reason), 1, "{reason} counted once");
    }
}

fn with_options(opts: &[u8]) -> Vec<u8> {
    ipv4::emit(&ipv4::Header::new(C1, S1, ipv4::PROTO_UDP), opts, &udp::emit(40000, 53, b"opt"))
}

#[test]
fn options_pass_unless_malformed_or_source_routed() {
    let mut n = nat();
    let mut nops = with_options(&[1, 1, 1, 0]);
    assert!(matches!(out(&mut n, &mut nops, t(0)), Verdict::Forward { .. }));
    assert_checksums(&nops);
    let mut lsrr = with_options(&[0x83, 7, 4, 10, 0, 0, 1, 0]);
    assert_eq!(out(&mut n, &mut lsrr, t(0)), Verdict::Drop(DropReason::Ipv4SourceRoute));
    let mut bad = with_options(&[0x44, 40, 5, 0]);
    assert_eq!(out(&mut n, &mut bad, t(0)), Verdict::Drop(DropReason::Ipv4BadOption));
}

#[test]
fn an_expiring_ttl_is_reported_to_the_sender() {
    let mut n = nat();
    let mut p = udp(C1, 40000, S1, 33434, b"traceroute");
    p[8] = 1;
    ipv4::Packet::new_checked(&mut p[..]).expect("valid").fill_checksum();
    assert_eq!(out(&mut n, &mut p, t(0)), Verdict::Drop(DropReason::TtlExceeded));
    let sent = n.poll_transmit().expect("time exceeded");
    assert_eq!(sent.side, Side::Lan);
    assert_eq!(addrs(&sent.packet), (LAN, C1));
    assert_eq!(sent.packet[20], icmp::TIME_EXCEEDED);
    assert_checksums(&sent.packet);
}

#[test]
fn blocked_protocols_are_dropped() {
    let mut n = nat_with(|p| {
        p.blocked.insert(Protocol::Udp);
    });
    assert_eq!(out(&mut n, &mut udp(C1, 1, S1, 2, b"x"), t(0)), Verdict::Drop(DropReason::Blocked));
    assert!(matches!(out(&mut n, &mut tcp_seg(C1, 1, S1, 2, tcp::SYN), t(0)), Verdict::Forward { .. }));
}

#[test]
fn gre_is_mapped_by_address_and_the_newest_sender_wins() {
    let mut n = nat();
    let gre = |src, dst| {
        // Plain GRE (version 0, IPv4 inside): no ALG knows it.
        let mut p = ip_packet(src, dst, ipv4::PROTO_GRE, &[0x00, 0x00, 0x08, 0x00, b'i', b'p', b'v', b'4']);
        ipv4::Packet::new_checked(&mut p[..]).expect("valid").fill_checksum();
        p
    };
    let mut a = gre(C1, S1);
    assert_eq!(out(&mut n, &mut a, t(0)), forward(Side::Wan, S1));
    assert_eq!(addrs(&a).0, WAN);
    assert_eq!(inb(&mut n, &mut gre(S1, WAN), t(1)), forward(Side::Lan, C1));
    out(&mut n, &mut gre(C2, S1), t(2));
    assert_eq!(inb(&mut n, &mut gre(S1, WAN), t(3)), forward(Side::Lan, C2), "the second client takes it over");
    assert_eq!(inb(&mut n, &mut gre(S2, WAN), t(3)), Verdict::Drop(DropReason::Unsolicited));
}

#[test]
fn nothing_routes_back_where_it_came_from() {
    let mut n = nat();
    assert_eq!(out(&mut n, &mut udp(C1, 1, C2, 2, b"x"), t(0)), Verdict::Drop(DropReason::NotRouted));
    assert_eq!(inb(&mut n, &mut udp(S1, 1, S2, 2, b"x"), t(0)), Verdict::Drop(DropReason::NotRouted));
    assert_eq!(inb(&mut n, &mut udp(S1, 1, C1, 2, b"x"), t(0)), Verdict::Drop(DropReason::NotRouted));
}

#[test]
fn the_mapping_dump_lists_live_mappings() {
    let mut n = nat();
    out(&mut n, &mut tcp_seg(C1, 40000, S1, 80, tcp::SYN), t(0));
    out(&mut n, &mut udp(C2, 5000, S1, 53, b"q"), t(0));
    let dump = n.mappings(t(1));
    assert_eq!(dump.len(), 2);
    assert!(dump.iter().any(|m| m.protocol == "tcp" && m.internal == "192.168.1.10:40000"));
    assert!(dump.iter().any(|m| m.remotes.iter().any(|r| r.contains("opening"))));
}

#[test]
fn mutated_packets_never_panic_and_always_get_a_verdict() {
    // A fixed seed: every run tries the same 30 000 packets.
    let mut rng = crate::rng::Rng::new(1);
    let mut next = move || rng.next_u64();
    let pptp_call = {
        let ocrq = crate::wire::pptp::emit(crate::wire::pptp::OCRQ, Some(0), None);
        ip_packet(
            C1,
            S1,
            ipv4::PROTO_TCP,
            &tcp::Header { seq: 7, ..tcp::Header::new(40000, 1723, tcp::ACK) }.emit(&ocrq),
        )
    };
    let l2tp_start = crate::wire::l2tp::emit_control(0, 0, crate::wire::l2tp::SCCRQ, &[(9, 5)]);
    let esp_in = {
        let mut p = ip_packet(S1, WAN, ipv4::PROTO_ESP, &[0, 0, 0x20, 1, 0, 0, 0, 1, 9, 9]);
        ipv4::Packet::new_checked(&mut p[..]).expect("valid").fill_checksum();
        p
    };
    let seeds = [
        udp(C1, 40000, S1, 53, b"seed"),
        tcp_seg(C1, 40000, S1, 80, tcp::SYN),
        echo(C1, S1, 3, true),
        icmp_error(S1, WAN, icmp::DEST_UNREACHABLE, 3, &udp(WAN, 40000, S1, 53, b"q"), usize::MAX),
        fragments(S1, WAN, 1, 2).1,
        pptp_call,
        udp(C1, 1701, S1, 1701, &l2tp_start),
        udp(S1, 1701, WAN, 1701, &l2tp_start),
        udp(C1, 500, S1, 500, &crate::wire::ike::emit(7, 0, b"x")),
        esp_in,
    ];
    let mut n = nat_with(|p| p.filtering = Behaviour::EndpointIndependent);
    for i in 0..30_000u64 {
        let mut p = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() % p.len() as u64) as usize;
            p[at] = next() as u8;
        }
        if next() % 8 == 0 {
            p.truncate((next() % (p.len() as u64 + 1)) as usize);
        }
        let side = if next() % 2 == 0 { Side::Lan } else { Side::Wan };
        let csum = if next() % 4 == 0 { L4Checksum::Partial } else { L4Checksum::Full };
        let _ = n.process(side, &mut p, csum, t(i / 100));
        while n.poll_transmit().is_some() {}
        if i % 1000 == 0 {
            n.handle_timeout(t(i / 100));
        }
    }
}

#[test]
fn drop_first_vpn_packet_drops_each_new_vpn_flows_first_packet_only() {
    let mut n = nat_with(|p| {
        p.drop_first_vpn_packet = true;
        p.timeouts.udp = 30;
    });
    let first = Verdict::Drop(DropReason::FirstPacketDropped);
    let ike = |n: &mut Nat, sport: u16, at: u64| {
        let dport = if sport == 500 { 500 } else { 4500 };
        out(n, &mut udp(C1, sport, S1, dport, &crate::wire::ike::emit(7, 0, b"sa-init")), t(at))
    };
    assert_eq!(ike(&mut n, 500, 0), first, "a new flow's first packet");
    assert_eq!(ike(&mut n, 500, 1), forward(Side::Wan, S1), "its retransmission");
    assert_eq!(ike(&mut n, 4500, 1), first, "another port is another flow");
    assert_eq!(out(&mut n, &mut udp(C1, 5353, S1, 53, b"dns"), t(1)), forward(Side::Wan, S1), "not a VPN flow");
    assert_eq!(out(&mut n, &mut tcp_seg(C1, 40000, S1, 1723, tcp::SYN), t(1)), first, "PPTP control");
    let gre = ip_packet(C1, S1, ipv4::PROTO_GRE, &gre::emit_pptp(1, Some(1), None, b"x"));
    assert_eq!(out(&mut n, &mut gre.clone(), t(1)), first, "GRE");
    assert_eq!(out(&mut n, &mut gre.clone(), t(1)), forward(Side::Wan, S1));
    // A flow the server answers on stays known past the timeout counted
    // from the client's last packet; idle both ways for its protocol's
    // timeout, a flow is new again.
    let answer = |n: &mut Nat, at: u64| inb(n, &mut udp(S1, 500, WAN, 500, &crate::wire::ike::emit(7, 1, b"r")), t(at));
    assert_eq!(answer(&mut n, 20), forward(Side::Lan, C1));
    n.handle_timeout(t(31));
    assert_eq!(ike(&mut n, 500, 31), forward(Side::Wan, S1), "answered at 20 s: still known");
    n.handle_timeout(t(61));
    assert_eq!(ike(&mut n, 500, 61), first);
    assert_eq!(n.counters().dropped(DropReason::FirstPacketDropped), 5);
    assert_eq!(n.state_sizes().first_packet_flows, 3);
    // Past its bound a new flow's first packet passes: a flood cannot make
    // the quirk cost other hosts more.
    let mut small = nat_with(|p| {
        p.drop_first_vpn_packet = true;
        p.limits.vpn_flows = 1;
    });
    let sa_init = |spi: u64| crate::wire::ike::emit(spi, 0, b"sa-init");
    assert_eq!(out(&mut small, &mut udp(C1, 500, S1, 500, &sa_init(1)), t(0)), first);
    assert_eq!(out(&mut small, &mut udp(C2, 500, S1, 500, &sa_init(2)), t(0)), forward(Side::Wan, S1));
    assert!(small.over_bounds().is_none());
    // Without the quirk nothing is dropped.
    assert_eq!(ike(&mut nat(), 500, 0), forward(Side::Wan, S1));
}
