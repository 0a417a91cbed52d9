//! The passthrough ALGs driven with byte vectors through the NAT, in every
//! mode: PPTP control messages and enhanced GRE, L2TP, IKE and raw ESP.

use crate::nat::Side;
use crate::nat::counters::DropReason;
use crate::nat::engine::{L4Checksum, Nat, Verdict};
use crate::nat::profile::{CallIdChoice, PptpMode};
use crate::nat::tests::{
    C1, C2, S1, S2, WAN, addrs, assert_checksums, forward, inb, ip_packet, nat_with, out, ports, t,
};
use crate::wire::{checksum, esp, gre, ipv4, pptp as msg, tcp};

const PPTP: u16 = 1723;

/// A TCP segment carrying `payload` with sequence number `seq`.
fn seg(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let header = tcp::Header { seq, ..tcp::Header::new(sport, dport, flags) };
    ip_packet(src, dst, ipv4::PROTO_TCP, &header.emit(payload))
}

/// Enhanced GRE with `call` in the key, optionally with sequence and
/// acknowledgment numbers.
fn gre(src: [u8; 4], dst: [u8; 4], call: u16, seq: bool, ack: bool) -> Vec<u8> {
    let g = gre::emit_pptp(call, seq.then_some(7), ack.then_some(3), b"ppp!");
    ip_packet(src, dst, ipv4::PROTO_GRE, &g)
}

fn gre_call(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[26], p[27]])
}

fn field(p: &[u8], at: usize) -> u16 {
    let data = 40 + at;
    u16::from_be_bytes([p[data], p[data + 1]])
}

/// A control connection of one client, with its sequence numbers.
struct Conn {
    client: [u8; 4],
    port: u16,
    server: [u8; 4],
    out_seq: u32,
    in_seq: u32,
    public_port: u16,
}

impl Conn {
    fn open(n: &mut Nat, client: [u8; 4], port: u16, server: [u8; 4]) -> Conn {
        let mut syn = seg(client, port, server, PPTP, 99, tcp::SYN, b"");
        assert!(matches!(out(n, &mut syn, t(0)), Verdict::Forward { .. }));
        let public_port = ports(&syn).0;
        let mut synack = seg(server, PPTP, WAN, public_port, 499, tcp::SYN | tcp::ACK, b"");
        assert!(matches!(inb(n, &mut synack, t(0)), Verdict::Forward { .. }));
        Conn { client, port, server, out_seq: 100, in_seq: 500, public_port }
    }

    /// Sends `payload` from the client; returns the segment as it left.
    fn send(&mut self, n: &mut Nat, payload: &[u8]) -> (Verdict, Vec<u8>) {
        let mut p = seg(self.client, self.port, self.server, PPTP, self.out_seq, tcp::ACK, payload);
        self.out_seq += payload.len() as u32;
        let v = out(n, &mut p, t(1));
        (v, p)
    }

    /// Sends `payload` from the server; returns the segment as it arrived.
    fn recv(&mut self, n: &mut Nat, payload: &[u8]) -> (Verdict, Vec<u8>) {
        let mut p = seg(self.server, PPTP, WAN, self.public_port, self.in_seq, tcp::ACK, payload);
        self.in_seq += payload.len() as u32;
        let v = inb(n, &mut p, t(1));
        (v, p)
    }
}

fn full() -> Nat {
    nat_with(|_| {})
}

/// Sets up a call: the client asks (OCRQ with `call`), the server answers
/// (OCRP with its own `server_call`). Returns the public Call ID.
fn call(n: &mut Nat, c: &mut Conn, call: u16, server_call: u16) -> u16 {
    let (v, sent) = c.send(n, &msg::emit(msg::OCRQ, Some(call), None));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_checksums(&sent);
    let public = field(&sent, 12);
    let (v, got) = c.recv(n, &msg::emit(msg::OCRP, Some(server_call), Some(public)));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_checksums(&got);
    assert_eq!(field(&got, 14), call, "the Peer's Call ID is the client's own again");
    assert_eq!(field(&got, 12), server_call, "the server's Call ID is left alone");
    public
}

#[test]
fn two_clients_with_one_call_id_get_two_public_ones_and_their_own_gre() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let mut b = Conn::open(&mut n, C2, 40000, S1);
    let pa = call(&mut n, &mut a, 0, 0x100);
    let pb = call(&mut n, &mut b, 0, 0x101);
    assert_eq!(pa, 0, "the first keeps its Call ID");
    assert_ne!(pb, 0, "the second cannot");
    assert_eq!(pb & 0xff00, 0, "a public Call ID keeps the high byte");
    for (public, client) in [(pa, C1), (pb, C2)] {
        let mut g = gre(S1, WAN, public, true, true);
        assert_eq!(inb(&mut n, &mut g, t(2)), forward(Side::Lan, client));
        assert_eq!(gre_call(&g), 0, "the key is the client's Call ID again");
        assert_checksums(&g);
    }
    // Outbound GRE keeps the server's Call ID and changes only the address.
    let mut g = gre(C2, S1, 0x101, false, false);
    assert_eq!(out(&mut n, &mut g, t(2)), forward(Side::Wan, S1));
    assert_eq!((addrs(&g).0, gre_call(&g)), (WAN, 0x101));
    assert_eq!(n.alg_state().pptp_calls.len(), 2);
}

#[test]
fn three_clients_colliding_all_come_through() {
    let mut n = full();
    let clients = [C1, C2, [192, 168, 1, 12]];
    let mut publics = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let mut conn = Conn::open(&mut n, *c, 40000 + i as u16, S1);
        publics.push(call(&mut n, &mut conn, 1, 0x200 + i as u16));
    }
    publics.sort();
    publics.dedup();
    assert_eq!(publics.len(), 3);
    for (i, c) in clients.iter().enumerate() {
        let p = n.alg_state().pptp_calls.iter().find(|x| x.client.starts_with(&ipv4str(*c))).map(|x| x.public_call_id);
        let mut g = gre(S1, WAN, p.expect("a call"), false, true);
        assert_eq!(inb(&mut n, &mut g, t(3)), forward(Side::Lan, *c), "client {i}");
        assert_eq!(gre_call(&g), 1);
    }
}

fn ipv4str(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}:", a[0], a[1], a[2], a[3])
}

#[test]
fn a_message_split_inside_its_call_id_is_still_rewritten() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 0x0005, 1);
    // A second client with the same Call ID: its OCRQ arrives in three
    // segments, the Call ID's two bytes in different ones.
    let mut b = Conn::open(&mut n, C2, 40001, S1);
    let m = msg::emit(msg::OCRQ, Some(0x0005), None);
    let (v1, s1) = b.send(&mut n, &m[..13]);
    let (v2, s2) = b.send(&mut n, &m[13..60]);
    let (v3, s3) = b.send(&mut n, &m[60..]);
    for (v, s) in [(v1, &s1), (v2, &s2), (v3, &s3)] {
        assert!(matches!(v, Verdict::Forward { .. }));
        assert_checksums(s);
    }
    assert_eq!(s1[40 + 12], 0x00, "the high byte passes unchanged");
    assert_ne!(s2[40], 0x05, "the low byte is rewritten in the next segment");
    let public = u16::from_be_bytes([0x00, s2[40]]);
    let (_, got) = b.recv(&mut n, &msg::emit(msg::OCRP, Some(2), Some(public)));
    assert_eq!(field(&got, 14), 0x0005);
}

#[test]
fn a_call_id_high_byte_left_in_an_earlier_segment_is_never_written_by_its_old_place() {
    // With the control port as public Call ID the high byte changes too.
    // When it left in an earlier segment, where it was in that segment is
    // no place in the next one: the NAT drops the segment it cannot
    // rewrite.
    let mut n = nat_with(|p| p.pptp_call_ids = CallIdChoice::ControlPort);
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let m = msg::emit(msg::OCRQ, Some(0x0005), None);
    let (v1, _) = a.send(&mut n, &m[..13]);
    assert!(matches!(v1, Verdict::Forward { .. }), "{v1:?}");
    let (v2, _) = a.send(&mut n, &m[13..20]);
    assert_eq!(v2, Verdict::Drop(DropReason::PptpSplitField));
}

#[test]
fn a_control_segment_in_ip_fragments_is_dropped_both_ways() {
    // The ALG would read the first fragment only: a Call ID in a later one
    // would cross as it is, and the server's GRE for it reach another call.
    let mut n = full();
    let a = Conn::open(&mut n, C1, 40000, S1);
    let ocrq = msg::emit(msg::OCRQ, Some(0x0005), None);
    let whole = seg(C1, 40000, S1, PPTP, a.out_seq, tcp::ACK, &ocrq);
    let (mut first, _) = ipv4::split(&whole, 32).expect("splits");
    assert_eq!(out(&mut n, &mut first, t(1)), Verdict::Drop(DropReason::PptpFragmented));
    assert!(n.alg_state().pptp_calls.is_empty(), "no call from a fragment");
    let ocrp = msg::emit(msg::OCRP, Some(1), Some(0x0005));
    let whole = seg(S1, PPTP, WAN, a.public_port, a.in_seq, tcp::ACK, &ocrp);
    let (mut first, _) = ipv4::split(&whole, 32).expect("splits");
    assert_eq!(inb(&mut n, &mut first, t(1)), Verdict::Drop(DropReason::PptpFragmented));
    // Whole, the same message goes through.
    let mut again = seg(C1, 40000, S1, PPTP, a.out_seq, tcp::ACK, &ocrq);
    assert!(matches!(out(&mut n, &mut again, t(1)), Verdict::Forward { .. }));
    assert_eq!(n.alg_state().pptp_calls.len(), 1);
}

#[test]
fn messages_sharing_a_segment_are_all_parsed() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 7, 1);
    let mut b = Conn::open(&mut n, C2, 40001, S1);
    let mut both = msg::emit(msg::ECHO_RQ, None, None);
    both.extend(msg::emit(msg::OCRQ, Some(7), None));
    let (v, sent) = b.send(&mut n, &both);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_ne!(field(&sent, 16 + 12), 7, "the OCRQ after the echo was rewritten");
    assert_checksums(&sent);
}

#[test]
fn a_retransmission_is_rewritten_as_the_first_time() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 3, 1);
    let mut b = Conn::open(&mut n, C2, 40001, S1);
    let m = msg::emit(msg::OCRQ, Some(3), None);
    let (_, first) = b.send(&mut n, &m);
    b.out_seq -= m.len() as u32;
    let (v, again) = b.send(&mut n, &m);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(field(&again, 12), field(&first, 12));
    assert_checksums(&again);
}

#[test]
fn a_segment_after_a_gap_waits_for_the_gap() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    a.out_seq += 50; // 50 bytes that never came
    let (v, _) = a.send(&mut n, &msg::emit(msg::OCRQ, Some(1), None));
    assert_eq!(v, Verdict::Drop(DropReason::PptpOutOfOrder));
}

#[test]
fn incoming_calls_and_every_message_with_a_call_id() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 9, 0x300);
    let mut b = Conn::open(&mut n, C2, 40001, S1);
    // The server calls in: ICRQ (its Call ID), ICRP (the client's, made
    // public), ICCN (the client's again, made private).
    let (v, _) = b.recv(&mut n, &msg::emit(msg::ICRQ, Some(0x301), None));
    assert!(matches!(v, Verdict::Forward { .. }));
    let (_, icrp) = b.send(&mut n, &msg::emit(msg::ICRP, Some(9), Some(0x301)));
    let public = field(&icrp, 12);
    assert_ne!(public, 9, "call 9 is taken at this server");
    assert_eq!(field(&icrp, 14), 0x301);
    for t in [msg::ICCN, msg::WEN, msg::SLI] {
        let (v, got) = b.recv(&mut n, &msg::emit(t, None, Some(public)));
        assert!(matches!(v, Verdict::Forward { .. }), "{}", msg::name(t));
        assert_eq!(field(&got, 12), 9, "{} names the client's own Call ID", msg::name(t));
        assert_checksums(&got);
    }
    let (_, wen) = b.send(&mut n, &msg::emit(msg::SLI, None, Some(0x301)));
    assert_eq!(field(&wen, 12), 0x301, "the server's Call ID goes out untouched");
    let (_, ccrq) = b.send(&mut n, &msg::emit(msg::CCRQ, Some(9), None));
    assert_eq!(field(&ccrq, 12), public, "clearing names the public Call ID");
    // Clearing ends the call: its GRE is no longer let in.
    let mut g = gre(S1, WAN, public, false, false);
    assert_eq!(inb(&mut n, &mut g, t(4)), Verdict::Drop(DropReason::PptpGreUnmatched));
    assert_eq!(n.alg_state().pptp_calls.len(), 1, "the other client's call remains");
    // The server's CDN that answers it passes, naming only its own Call ID.
    let (v, _) = b.recv(&mut n, &msg::emit(msg::CDN, Some(0x301), None));
    assert!(matches!(v, Verdict::Forward { .. }));
}

#[test]
fn a_server_disconnect_ends_the_call() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let p = call(&mut n, &mut a, 3, 0x33);
    a.recv(&mut n, &msg::emit(msg::CDN, Some(0x33), None));
    let mut g = gre(S1, WAN, p, false, false);
    assert_eq!(inb(&mut n, &mut g, t(4)), Verdict::Drop(DropReason::PptpGreUnmatched));
}

#[test]
fn several_calls_share_one_control_connection() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let p0 = call(&mut n, &mut a, 0, 0x10);
    let p1 = call(&mut n, &mut a, 1, 0x11);
    assert_ne!(p0, p1);
    for (p, lan) in [(p0, 0), (p1, 1)] {
        let mut g = gre(S1, WAN, p, false, false);
        assert_eq!(inb(&mut n, &mut g, t(2)), forward(Side::Lan, C1));
        assert_eq!(gre_call(&g), lan);
    }
}

#[test]
fn linux_like_call_ids_allow_one_call_per_control_connection() {
    let mut n = nat_with(|p| {
        p.pptp_call_ids = CallIdChoice::ControlPort;
        p.port_preservation = false;
    });
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let p0 = call(&mut n, &mut a, 0, 0x10);
    assert_eq!(p0, a.public_port, "the Call ID is the control connection's public port");
    let (_, sent) = a.send(&mut n, &msg::emit(msg::OCRQ, Some(1), None));
    assert_eq!(field(&sent, 12), p0, "a second call gets the same public Call ID");
    let mut g = gre(S1, WAN, p0, false, false);
    inb(&mut n, &mut g, t(2));
    assert_eq!(gre_call(&g), 0, "so the second call's GRE reaches the first call");
}

#[test]
fn stop_control_connection_and_reset_end_every_call() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let p = call(&mut n, &mut a, 4, 0x40);
    a.recv(&mut n, &msg::emit(msg::STOP_CCRQ, None, None));
    assert!(n.alg_state().pptp_calls.is_empty());
    let mut g = gre(S1, WAN, p, false, false);
    assert_eq!(inb(&mut n, &mut g, t(2)), Verdict::Drop(DropReason::PptpGreUnmatched));

    let mut b = Conn::open(&mut n, C2, 40001, S1);
    call(&mut n, &mut b, 5, 0x50);
    let mut rst = seg(C2, 40001, S1, PPTP, b.out_seq, tcp::RST, b"");
    out(&mut n, &mut rst, t(3));
    assert!(n.alg_state().pptp_calls.is_empty(), "a reset control connection ends its calls");
}

#[test]
fn idle_calls_expire() {
    let mut n = nat_with(|p| {
        p.timeouts.other = 30;
        p.timeouts.tcp_established = 60;
    });
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 4, 0x40);
    n.handle_timeout(t(100));
    assert!(n.alg_state().pptp_calls.is_empty());
}

#[test]
fn spoofed_gre_from_anyone_but_the_server_gets_nothing() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let p = call(&mut n, &mut a, 0, 0x10);
    let mut spoof = gre(S2, WAN, p, false, false);
    assert_eq!(inb(&mut n, &mut spoof, t(2)), Verdict::Drop(DropReason::PptpGreUnmatched));
    let mut guess = gre(S1, WAN, p.wrapping_add(1), false, false);
    assert_eq!(inb(&mut n, &mut guess, t(2)), Verdict::Drop(DropReason::PptpGreUnmatched));
    assert_eq!(n.counters().dropped(DropReason::PptpGreUnmatched), 2);
}

#[test]
fn malformed_control_messages_are_dropped_and_counted() {
    let good = msg::emit(msg::OCRQ, Some(1), None);
    let mut cases: Vec<Vec<u8>> = Vec::new();
    let mut bad_magic = good.clone();
    bad_magic[4] ^= 0xff;
    cases.push(bad_magic);
    let mut short_len = good.clone();
    short_len[0..2].copy_from_slice(&3u16.to_be_bytes());
    cases.push(short_len);
    let mut huge_len = good.clone();
    huge_len[0..2].copy_from_slice(&60000u16.to_be_bytes());
    cases.push(huge_len);
    let mut bad_type = good.clone();
    bad_type[8..10].copy_from_slice(&99u16.to_be_bytes());
    cases.push(bad_type);
    let mut not_control = good.clone();
    not_control[2..4].copy_from_slice(&2u16.to_be_bytes());
    cases.push(not_control);
    let mut too_short_for_fields = msg::emit(msg::OCRP, Some(1), Some(2));
    too_short_for_fields[0..2].copy_from_slice(&14u16.to_be_bytes());
    cases.push(too_short_for_fields);
    for (i, m) in cases.iter().enumerate() {
        let mut n = full();
        let mut a = Conn::open(&mut n, C1, 40000, S1);
        let (v, _) = a.send(&mut n, m);
        assert_eq!(v, Verdict::Drop(DropReason::PptpMalformed), "case {i}");
        assert_eq!(n.counters().dropped(DropReason::PptpMalformed), 1, "case {i}");
    }
}

#[test]
fn off_drops_pptp_and_naive_hands_gre_to_the_last_sender() {
    let mut off = nat_with(|p| p.pptp = PptpMode::Off);
    let mut syn = seg(C1, 40000, S1, PPTP, 1, tcp::SYN, b"");
    assert_eq!(out(&mut off, &mut syn, t(0)), Verdict::Drop(DropReason::PptpOff));
    assert_eq!(out(&mut off, &mut gre(C1, S1, 1, false, false), t(0)), Verdict::Drop(DropReason::PptpOff));
    assert_eq!(inb(&mut off, &mut gre(S1, WAN, 1, false, false), t(0)), Verdict::Drop(DropReason::PptpOff));
    // Only PPTP: other TCP, and UDP to port 1723, still cross.
    let mut web = seg(C1, 40001, S1, 80, 1, tcp::SYN, b"");
    assert!(matches!(out(&mut off, &mut web, t(0)), Verdict::Forward { .. }));
    let mut udp_1723 = crate::nat::tests::udp(C1, 40002, S1, PPTP, b"x");
    assert!(matches!(out(&mut off, &mut udp_1723, t(0)), Verdict::Forward { .. }));

    let mut naive = nat_with(|p| p.pptp = PptpMode::Naive);
    let mut a = Conn::open(&mut naive, C1, 40000, S1);
    let (_, sent) = a.send(&mut naive, &msg::emit(msg::OCRQ, Some(0), None));
    assert_eq!(field(&sent, 12), 0, "naive: the Call ID goes out as it is");
    out(&mut naive, &mut gre(C1, S1, 0x10, false, false), t(1));
    out(&mut naive, &mut gre(C2, S1, 0x11, false, false), t(1));
    let mut g = gre(S1, WAN, 0, false, false);
    assert_eq!(inb(&mut naive, &mut g, t(2)), forward(Side::Lan, C2), "the last sender gets the first client's GRE");
}

#[test]
fn partial_checksums_are_left_to_the_hardware() {
    // A control segment whose checksum is left to hardware: the Call ID
    // changes, the field (a pseudo-header sum) only follows the addresses.
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 0, 1);
    let b = Conn::open(&mut n, C2, 40001, S1);
    let m = msg::emit(msg::OCRQ, Some(0), None);
    let mut p = seg(C2, 40001, S1, PPTP, b.out_seq, tcp::ACK, &m);
    let pseudo = |p: &[u8]| {
        let (s, d) = addrs(p);
        checksum::fold(checksum::pseudo_header(s, d, 6, (p.len() - 20) as u16))
    };
    let f = pseudo(&p);
    p[36..38].copy_from_slice(&f.to_be_bytes());
    let v = n.process(Side::Lan, &mut p, L4Checksum::Partial, t(1));
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_ne!(field(&p, 12), 0);
    assert_eq!(u16::from_be_bytes([p[36], p[37]]), pseudo(&p));
}

#[test]
fn the_dump_names_calls() {
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 6, 0x66);
    let calls = n.alg_state().pptp_calls;
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].lan_call_id, calls[0].server_call_id), (6, Some(0x66)));
    assert!(calls[0].client.starts_with("192.168.1.10:"));
}

#[test]
fn the_state_sizes_count_pptp_control_connections_and_calls() {
    // What the bounds are checked against: every followed control
    // connection and every call, until they end.
    let mut n = full();
    let sizes = |n: &Nat| (n.state_sizes().pptp_controls, n.state_sizes().pptp_calls);
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let mut b = Conn::open(&mut n, C2, 40001, S1);
    assert_eq!(sizes(&n), (2, 0));
    call(&mut n, &mut a, 1, 0x10);
    call(&mut n, &mut a, 2, 0x11);
    call(&mut n, &mut b, 1, 0x12);
    assert_eq!(sizes(&n), (2, 3));
    a.recv(&mut n, &msg::emit(msg::STOP_CCRQ, None, None));
    assert_eq!(sizes(&n), (1, 1), "a stopped control connection takes its calls along");
}

#[test]
fn a_call_refused_for_want_of_room_goes_through_when_retransmitted_after_room_frees_up() {
    // A refused call drops its segment without moving the stream on: the
    // client's retransmission is parsed from the message's start, not from
    // where the refusal stopped.
    let mut n = nat_with(|p| p.limits.pptp_calls = 1);
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 1, 0x10);
    let mut b = Conn::open(&mut n, C2, 40001, S1);
    let m = msg::emit(msg::OCRQ, Some(1), None);
    let (v, _) = b.send(&mut n, &m);
    assert_eq!(v, Verdict::Drop(DropReason::PptpCallsFull));
    // C1 hangs up; C2's TCP sends the OCRQ again.
    a.send(&mut n, &msg::emit(msg::CCRQ, Some(1), None));
    b.out_seq -= m.len() as u32;
    let (v, sent) = b.send(&mut n, &m);
    assert_eq!(v, forward(Side::Wan, S1));
    let public = field(&sent, 12);
    let (v, got) = b.recv(&mut n, &msg::emit(msg::OCRP, Some(0x20), Some(public)));
    assert_eq!(v, forward(Side::Lan, C2));
    assert_eq!(field(&got, 14), 1);
    let mut g = gre(S1, WAN, public, false, false);
    assert_eq!(inb(&mut n, &mut g, t(2)), forward(Side::Lan, C2), "the server's GRE reaches C2");
    assert_eq!(n.counters().dropped(DropReason::PptpCallsFull), 1);
    assert_eq!(n.counters().dropped(DropReason::PptpMalformed), 0);
}

#[test]
fn ending_a_call_leaves_the_server_able_to_end_another_call_with_the_same_server_call_id() {
    // A server numbering its calls per control connection gives one client's
    // two calls the same Call ID: when the first ends, the server's
    // Call-Disconnect-Notify still ends the second.
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let mut b = Conn::open(&mut n, C1, 40001, S1);
    call(&mut n, &mut a, 1, 0x50);
    let pb = call(&mut n, &mut b, 2, 0x50);
    a.send(&mut n, &msg::emit(msg::CCRQ, Some(1), None));
    assert_eq!(n.state_sizes().pptp_calls, 1);
    b.recv(&mut n, &msg::emit(msg::CDN, Some(0x50), None));
    assert_eq!(n.state_sizes().pptp_calls, 0, "the server hung up the second call");
    let mut g = gre(S1, WAN, pb, false, false);
    assert_eq!(inb(&mut n, &mut g, t(2)), Verdict::Drop(DropReason::PptpGreUnmatched));
}

#[test]
fn a_call_without_gre_lives_as_long_as_its_control_connection_and_no_longer() {
    // The call timeout is for calls left without a control connection: a
    // call whose control connection is up stays however long its GRE is
    // idle, and ends when the control connection times out.
    let mut n = nat_with(|p| {
        p.timeouts.other = 30;
        p.timeouts.tcp_established = 600;
    });
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let p = call(&mut n, &mut a, 4, 0x40); // at t(1)
    n.handle_timeout(t(100));
    n.handle_timeout(t(600));
    assert_eq!((n.state_sizes().pptp_controls, n.state_sizes().pptp_calls), (1, 1));
    let mut g = gre(S1, WAN, p, false, false);
    assert_eq!(inb(&mut n, &mut g, t(600)), forward(Side::Lan, C1));
    n.handle_timeout(t(601));
    assert_eq!((n.state_sizes().pptp_controls, n.state_sizes().pptp_calls), (0, 0));
}

#[test]
fn no_call_outlives_its_control_connection() {
    // Calls live as long as their control connection. A client that stops
    // its control connection and starts a call in the same segment would
    // leave a call behind it: the segment is refused and no call is made.
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    let mut both = msg::emit(msg::STOP_CCRQ, None, None);
    both.extend(msg::emit(msg::ICRP, Some(5), Some(0x77)));
    let (v, _) = a.send(&mut n, &both);
    assert_eq!(v, Verdict::Drop(DropReason::PptpMalformed));
    assert_eq!((n.state_sizes().pptp_controls, n.state_sizes().pptp_calls), (0, 0));
    let mut g = gre(C1, S1, 0x77, false, false);
    out(&mut n, &mut g, t(2));
    assert!(n.alg_state().pptp_calls.is_empty(), "its GRE makes no call either");
}

#[test]
fn a_retransmission_of_several_rewritten_messages_is_rewritten_as_the_first_time() {
    // Every rewritten byte of a segment is remembered, not only the last.
    let mut n = full();
    let mut a = Conn::open(&mut n, C1, 40000, S1);
    call(&mut n, &mut a, 3, 1);
    call(&mut n, &mut a, 4, 2);
    let mut b = Conn::open(&mut n, C2, 40001, S1);
    let mut m = msg::emit(msg::OCRQ, Some(3), None);
    m.extend(msg::emit(msg::OCRQ, Some(4), None));
    let (_, first) = b.send(&mut n, &m);
    let publics = (field(&first, 12), field(&first, 168 + 12));
    assert!(publics.0 != 3 && publics.1 != 4, "{publics:?}");
    b.out_seq -= m.len() as u32;
    let (v, again) = b.send(&mut n, &m);
    assert_eq!(v, forward(Side::Wan, S1));
    assert_eq!((field(&again, 12), field(&again, 168 + 12)), publics);
    assert_checksums(&again);
}

// ---- L2TP -------------------------------------------------------------

use crate::nat::profile::{IpsecMode, L2tpMode};
use crate::nat::tests::{assert_checksums as checksums_ok, l2tp_ctl, udp};
use crate::wire::{ike, l2tp};

const C3: [u8; 4] = [192, 168, 1, 12];

fn l2tp_out(n: &mut Nat, client: [u8; 4], server: [u8; 4], dport: u16, m: &[u8]) -> (Verdict, Vec<u8>) {
    l2tp_out_at(n, client, server, dport, m, 1)
}

/// `m` from `client`:1701 to `server`:`dport`, at `t(at)`.
fn l2tp_out_at(n: &mut Nat, client: [u8; 4], server: [u8; 4], dport: u16, m: &[u8], at: u64) -> (Verdict, Vec<u8>) {
    let mut p = udp(client, l2tp::PORT, server, dport, m);
    let v = out(n, &mut p, t(at));
    (v, p)
}

fn l2tp_in(n: &mut Nat, server: [u8; 4], sport: u16, m: &[u8]) -> (Verdict, Vec<u8>) {
    l2tp_in_at(n, server, sport, m, 1)
}

/// `m` from `server`:`sport` to the public port 1701, at `t(at)`.
fn l2tp_in_at(n: &mut Nat, server: [u8; 4], sport: u16, m: &[u8], at: u64) -> (Verdict, Vec<u8>) {
    let mut p = udp(server, sport, WAN, l2tp::PORT, m);
    let v = inb(n, &mut p, t(at));
    (v, p)
}

/// A StopCCN to `to` from the holder of Tunnel ID `own`.
fn stop_ccn(to: u16, own: u16, ns: u16, nr: u16) -> Vec<u8> {
    l2tp_ctl(to, l2tp::STOP_CCN, ns, nr, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, own)])
}

fn sccrq(tunnel: u16) -> Vec<u8> {
    l2tp::emit_control(0, 0, l2tp::SCCRQ, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, tunnel)])
}

fn sccrp(to: u16, own: u16) -> Vec<u8> {
    l2tp::emit_control(to, 0, l2tp::SCCRP, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, own)])
}

/// The Assigned Tunnel ID AVP of an SCCRQ as it left (offset in the UDP
/// payload: header 12, message type AVP 8, then 6 of AVP header).
fn assigned(p: &[u8]) -> u16 {
    let at = 28 + 12 + 8 + 6;
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn header_tunnel(p: &[u8]) -> u16 {
    l2tp::Message::new_checked(&p[28..]).expect("l2tp").tunnel_id()
}

#[test]
fn l2tp_clients_keep_port_1701_and_are_told_apart_by_tunnel_id() {
    let mut n = full();
    let (va, a) = l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(0x100));
    let (vb, b) = l2tp_out(&mut n, C2, S1, l2tp::PORT, &sccrq(0x200));
    assert!(matches!(va, Verdict::Forward { .. }) && matches!(vb, Verdict::Forward { .. }));
    assert_eq!((ports(&a).0, ports(&b).0), (l2tp::PORT, l2tp::PORT), "both keep 1701");
    checksums_ok(&a);
    for (tunnel, client) in [(0x100, C1), (0x200, C2)] {
        let (v, got) = l2tp_in(&mut n, S1, l2tp::PORT, &sccrp(tunnel, 0x900));
        assert_eq!(v, forward(Side::Lan, client));
        assert_eq!(header_tunnel(&got), tunnel);
        checksums_ok(&got);
    }
    // Data both ways, with and without the length field.
    for with_length in [true, false] {
        let (v, got) = l2tp_in(&mut n, S1, l2tp::PORT, &l2tp::emit_data(0x200, 1, with_length, b"ppp"));
        assert_eq!(v, forward(Side::Lan, C2));
        checksums_ok(&got);
        let (v, sent) = l2tp_out(&mut n, C2, S1, l2tp::PORT, &l2tp::emit_data(0x900, 2, with_length, b"ppp"));
        assert!(matches!(v, Verdict::Forward { .. }));
        assert_eq!(header_tunnel(&sent), 0x900, "the server's Tunnel ID goes out as it is");
    }
    assert_eq!(n.alg_state().l2tp_tunnels.len(), 2);
}

#[test]
fn l2tp_clients_with_one_tunnel_id_are_made_distinct() {
    let mut n = full();
    let clients = [C1, C2, C3];
    let mut public = Vec::new();
    for c in clients {
        let (v, sent) = l2tp_out(&mut n, c, S1, l2tp::PORT, &sccrq(5));
        assert!(matches!(v, Verdict::Forward { .. }));
        checksums_ok(&sent);
        public.push(assigned(&sent));
    }
    assert_eq!(n.counters().l2tp_tunnel_ids_rewritten, 2, "the SCCRQs of the second and third clients");
    assert_eq!(public[0], 5);
    assert!(public[1] != 5 && public[2] != 5 && public[1] != public[2] && public.iter().all(|p| *p != 0));
    for (p, c) in public.iter().zip(clients) {
        let (v, got) = l2tp_in(&mut n, S1, l2tp::PORT, &sccrp(*p, 0x77));
        assert_eq!(v, forward(Side::Lan, c));
        assert_eq!(header_tunnel(&got), 5, "each client sees its own Tunnel ID");
        checksums_ok(&got);
    }
    assert_eq!(n.counters().l2tp_tunnel_ids_rewritten, 2, "restoring them coming back is no new rewrite");
}

#[test]
fn an_lns_may_answer_from_a_new_port() {
    let mut n = full();
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(0x10));
    let (v, _) = l2tp_in(&mut n, S1, 40000, &sccrp(0x10, 0x20));
    assert_eq!(v, forward(Side::Lan, C1));
    let (v, sent) = l2tp_out(&mut n, C1, S1, 40000, &l2tp::emit_control(0x20, 0, l2tp::SCCCN, &[]));
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(ports(&sent), (l2tp::PORT, 40000), "the client keeps 1701 towards the new port");
    assert!(n.alg_state().l2tp_tunnels[0].server.ends_with(":40000"));
}

#[test]
fn stop_ccn_ends_a_tunnel_and_strangers_get_nothing() {
    let mut n = full();
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(0x10));
    let (v, _) = l2tp_in(&mut n, S2, l2tp::PORT, &sccrp(0x10, 1));
    assert_eq!(v, Verdict::Drop(DropReason::L2tpUnknownTunnel), "same Tunnel ID from another host");
    let (v, _) = l2tp_in(&mut n, S1, l2tp::PORT, &l2tp::emit_data(0x11, 0, false, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::L2tpUnknownTunnel), "a tunnel nobody has");
    let stop = l2tp::emit_control(0x10, 0, l2tp::STOP_CCN, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, 0x20)]);
    let (v, _) = l2tp_in(&mut n, S1, l2tp::PORT, &stop);
    assert_eq!(v, forward(Side::Lan, C1));
    // The tunnel stays a grace period, for the StopCCN's acknowledgment.
    n.handle_timeout(t(3));
    assert_eq!(n.alg_state().l2tp_tunnels.len(), 1);
    n.handle_timeout(t(7));
    assert!(n.alg_state().l2tp_tunnels.is_empty());
    let (v, _) = l2tp_in(&mut n, S1, l2tp::PORT, &l2tp::emit_data(0x10, 0, false, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::L2tpUnknownTunnel));
}

#[test]
fn malformed_l2tp_is_dropped_and_counted() {
    let good = sccrq(1);
    let mut v3 = good.clone();
    v3[1] = 3;
    let mut bad_avp = good.clone();
    bad_avp[12..14].copy_from_slice(&(0x8000u16 | 2).to_be_bytes());
    let mut hidden = good.clone();
    hidden[20] |= 0x40; // H bit on the Assigned Tunnel ID AVP
    // A bad AVP after a good Message Type, and good AVPs of which the
    // first is not the Message Type: either fault alone is malformed.
    let mut bad_last_avp = l2tp::emit_control(0, 0, l2tp::HELLO, &[]);
    bad_last_avp.extend_from_slice(&[0x80, 4, 0, 0]); // shorter than an AVP header
    let len = bad_last_avp.len() as u16;
    bad_last_avp[2..4].copy_from_slice(&len.to_be_bytes());
    let mut untyped = good.clone();
    untyped[16..18].copy_from_slice(&l2tp::AVP_ASSIGNED_SESSION_ID.to_be_bytes());
    for (m, reason) in [
        (v3, DropReason::L2tpMalformed),
        (good[..5].to_vec(), DropReason::L2tpMalformed),
        (bad_avp, DropReason::L2tpMalformed),
        (bad_last_avp, DropReason::L2tpMalformed),
        (untyped, DropReason::L2tpMalformed),
        (hidden, DropReason::L2tpHiddenTunnelId),
    ] {
        let mut n = full();
        let (v, _) = l2tp_out(&mut n, C1, S1, l2tp::PORT, &m);
        assert_eq!(v, Verdict::Drop(reason));
        assert_eq!(n.counters().dropped(reason), 1);
    }
}

#[test]
fn l2tp_off_drops_and_naive_breaks_the_second_client() {
    let mut off = nat_with(|p| p.l2tp = L2tpMode::Off);
    assert_eq!(l2tp_out(&mut off, C1, S1, l2tp::PORT, &sccrq(1)).0, Verdict::Drop(DropReason::L2tpOff));
    // Only L2TP: other UDP, and TCP to port 1701, still cross.
    assert!(matches!(out(&mut off, &mut udp(C1, 5353, S1, 53, b"q"), t(0)), Verdict::Forward { .. }));
    let mut tcp_1701 = crate::nat::tests::tcp_seg(C1, 40000, S1, l2tp::PORT, tcp::SYN);
    assert!(matches!(out(&mut off, &mut tcp_1701, t(0)), Verdict::Forward { .. }));

    let mut naive = nat_with(|p| p.l2tp = L2tpMode::Naive);
    let (_, a) = l2tp_out(&mut naive, C1, S1, l2tp::PORT, &sccrq(1));
    let (_, b) = l2tp_out(&mut naive, C2, S1, l2tp::PORT, &sccrq(2));
    assert_eq!(ports(&a).0, l2tp::PORT);
    assert_ne!(ports(&b).0, l2tp::PORT, "naive: the second client is moved off 1701");
    // A server that answers to 1701 whatever the port: C2's answer reaches C1.
    let (v, _) = l2tp_in(&mut naive, S1, l2tp::PORT, &sccrp(2, 9));
    assert_eq!(v, forward(Side::Lan, C1));
}

#[test]
fn the_state_sizes_count_live_l2tp_tunnels() {
    // `state_sizes()` (what `over_bounds` and the fuzzer hold against
    // limits.l2tp_tunnels) follows the tunnels as they open and expire.
    let mut n = full();
    assert_eq!(n.state_sizes().l2tp_tunnels, 0);
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(0x10));
    l2tp_out(&mut n, C2, S1, l2tp::PORT, &sccrq(0x20));
    assert_eq!(n.state_sizes().l2tp_tunnels, 2);
    n.handle_timeout(t(1 + 300));
    assert_eq!(n.state_sizes().l2tp_tunnels, 0);
}

#[test]
fn other_udp_from_port_1701_is_l2tp_only_while_the_client_has_a_tunnel_with_that_server() {
    // A LAN host's UDP from 1701 to a port other than 1701 goes to the L2TP
    // ALG only while the host has a tunnel with that server (whose LNS may
    // answer from any port), and is plain NAPT before and once the last
    // tunnel has ended.
    let mut n = full();
    let dns = |n: &mut Nat, at: u64| {
        let mut p = udp(C1, l2tp::PORT, S1, 53, b"not l2tp");
        (out(n, &mut p, t(at)), ports(&p).0)
    };
    let (v, port) = dns(&mut n, 1);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_ne!(port, l2tp::PORT, "plain NAPT, which keeps 1701 for L2TP");
    // A tunnel whose LNS answers from port 40000.
    l2tp_out_at(&mut n, C1, S1, l2tp::PORT, &sccrq(0x10), 2);
    assert_eq!(l2tp_in_at(&mut n, S1, 40000, &sccrp(0x10, 0x20), 2).0, forward(Side::Lan, C1));
    let (_, sent) = l2tp_out_at(&mut n, C1, S1, 40000, &l2tp_ctl(0x20, l2tp::SCCCN, 1, 1, &[]), 2);
    assert_eq!(ports(&sent).0, l2tp::PORT);
    assert_eq!(dns(&mut n, 3).0, Verdict::Drop(DropReason::L2tpMalformed), "the server's ports are L2TP now");
    // The LNS stops the tunnel, in sequence; the grace passes.
    assert_eq!(l2tp_in_at(&mut n, S1, 40000, &stop_ccn(0x10, 0x20, 1, 2), 4).0, forward(Side::Lan, C1));
    n.handle_timeout(t(4 + 5));
    assert!(n.alg_state().l2tp_tunnels.is_empty());
    let (v, port) = dns(&mut n, 10);
    assert!(matches!(v, Verdict::Forward { .. }), "plain NAPT again: {v:?}");
    assert_ne!(port, l2tp::PORT);
}

#[test]
fn a_hosts_tunnel_quota_frees_up_when_a_tunnel_stops_or_expires() {
    // A tunnel that ends, by an in-sequence StopCCN after its grace or by
    // idling out, gives its place in its host's quota back.
    let mut n = nat_with(|p| p.limits.l2tp_tunnels_per_host = 1);
    assert!(matches!(l2tp_out_at(&mut n, C1, S1, l2tp::PORT, &sccrq(0x10), 1).0, Verdict::Forward { .. }));
    let (v, _) = l2tp_out_at(&mut n, C1, S2, l2tp::PORT, &sccrq(0x11), 1);
    assert_eq!(v, Verdict::Drop(DropReason::HostQuota), "one tunnel per host");
    assert_eq!(n.counters().dropped(DropReason::HostQuota), 1);
    // The LNS refuses, with a StopCCN as its first message.
    assert_eq!(l2tp_in_at(&mut n, S1, l2tp::PORT, &stop_ccn(0x10, 0x20, 0, 1), 2).0, forward(Side::Lan, C1));
    n.handle_timeout(t(2 + 5));
    let (v, _) = l2tp_out_at(&mut n, C1, S2, l2tp::PORT, &sccrq(0x11), 8);
    assert!(matches!(v, Verdict::Forward { .. }), "the stopped tunnel's place is free: {v:?}");
    n.handle_timeout(t(8 + 300));
    let (v, _) = l2tp_out_at(&mut n, C1, S1, l2tp::PORT, &sccrq(0x12), 309);
    assert!(matches!(v, Verdict::Forward { .. }), "the idle tunnel's place is free: {v:?}");
    assert_eq!(n.counters().dropped(DropReason::HostQuota), 1);
}

#[test]
fn when_one_of_two_tunnels_with_a_server_ends_the_other_keeps_port_1701() {
    // The client's count of tunnels with a server: while one is left, its
    // messages to the LNS's new port stay with the ALG and keep 1701.
    let mut n = full();
    for (lan, theirs) in [(0x10, 0x20), (0x11, 0x21)] {
        l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(lan));
        assert_eq!(l2tp_in(&mut n, S1, 40000, &sccrp(lan, theirs)).0, forward(Side::Lan, C1));
    }
    // The LNS stops the first one, in sequence; the grace passes.
    assert_eq!(l2tp_in_at(&mut n, S1, 40000, &stop_ccn(0x10, 0x20, 1, 1), 2).0, forward(Side::Lan, C1));
    n.handle_timeout(t(2 + 5));
    assert_eq!(n.alg_state().l2tp_tunnels.len(), 1);
    let (v, sent) = l2tp_out_at(&mut n, C1, S1, 40000, &l2tp::emit_data(0x21, 1, false, b"ppp"), 8);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(ports(&sent), (l2tp::PORT, 40000), "still the tunnel's: 1701 kept");
}

#[test]
fn an_sccrp_out_of_sequence_does_not_change_the_servers_tunnel_id() {
    // Only the SCCRP that is the server's next message teaches its Tunnel
    // ID: a replayed or spoofed one with another ID passes to the client
    // but leaves the client's messages on their tunnel, so the client's
    // own StopCCN still ends it.
    let mut n = full();
    let tid = |v| [(l2tp::AVP_ASSIGNED_TUNNEL_ID, v)];
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(0x10));
    l2tp_in(&mut n, S1, l2tp::PORT, &l2tp_ctl(0x10, l2tp::SCCRP, 0, 1, &tid(0x20)));
    let (v, _) = l2tp_in(&mut n, S1, l2tp::PORT, &l2tp_ctl(0x10, l2tp::SCCRP, 0, 1, &tid(0x66)));
    assert_eq!(v, forward(Side::Lan, C1), "the client judges it");
    assert_eq!(n.alg_state().l2tp_tunnels[0].server_tunnel_id, Some(0x20));
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &l2tp_ctl(0x20, l2tp::SCCCN, 1, 1, &[]));
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &stop_ccn(0x20, 0x10, 2, 1));
    n.handle_timeout(t(1 + 5));
    assert!(n.alg_state().l2tp_tunnels.is_empty(), "the client's StopCCN ended it");
}

#[test]
fn a_clients_stop_ccn_out_of_sequence_ends_nothing_even_before_the_answer() {
    // The client's side of a tunnel follows its sequence numbers from the
    // SCCRQ on: a StopCCN with another Ns, or acknowledging what the server
    // never sent, is one the LNS discards, so the tunnel stays for the
    // server's answer; the next one in sequence ends it.
    let mut n = full();
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(0x10));
    for (ns, nr) in [(0, 0), (5, 0), (1, 3)] {
        let (v, _) = l2tp_out(&mut n, C1, S1, l2tp::PORT, &stop_ccn(0, 0x10, ns, nr));
        assert!(matches!(v, Verdict::Forward { .. }), "Ns {ns}, Nr {nr}: {v:?}");
    }
    n.handle_timeout(t(1 + 5));
    let answer = l2tp_ctl(0x10, l2tp::SCCRP, 0, 1, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, 0x20)]);
    assert_eq!(l2tp_in_at(&mut n, S1, l2tp::PORT, &answer, 6).0, forward(Side::Lan, C1), "the tunnel stayed");
    l2tp_out_at(&mut n, C1, S1, l2tp::PORT, &stop_ccn(0x20, 0x10, 1, 1), 6);
    n.handle_timeout(t(6 + 5));
    assert!(n.alg_state().l2tp_tunnels.is_empty(), "the StopCCN in sequence ended it");
}

#[test]
fn before_the_lns_answers_a_stop_ccn_from_another_of_its_ports_ends_nothing() {
    // Until the server's SCCRP says which port its control messages come
    // from, they count only from 1701: a StopCCN from another port (its
    // Ns 0 and Nr 1 anyone can guess) passes to the client, which judges
    // it, and the tunnel stays for the real answer, from whatever port.
    let mut n = full();
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(0x10));
    let (v, _) = l2tp_in(&mut n, S1, 40000, &stop_ccn(0x10, 0x20, 0, 1));
    assert_eq!(v, forward(Side::Lan, C1), "the client judges it");
    n.handle_timeout(t(1 + 5));
    let answer = l2tp_ctl(0x10, l2tp::SCCRP, 0, 1, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, 0x20)]);
    assert_eq!(l2tp_in_at(&mut n, S1, 40001, &answer, 6).0, forward(Side::Lan, C1), "the tunnel stayed");
}

// ---- IPsec ------------------------------------------------------------

fn ike_out(n: &mut Nat, client: [u8; 4], sport: u16, server: [u8; 4], dport: u16, spi: u64) -> (Verdict, Vec<u8>) {
    let mut p = udp(client, sport, server, dport, &ike::emit(spi, 0, b"sa-init"));
    let v = out(n, &mut p, t(1));
    (v, p)
}

fn ike_in(n: &mut Nat, server: [u8; 4], dport: u16, spi: u64) -> Verdict {
    let mut p = udp(server, ike::PORT, WAN, dport, &ike::emit(spi, 0xabc, b"sa-init-reply"));
    let v = inb(n, &mut p, t(1));
    if matches!(v, Verdict::Forward { .. }) {
        checksums_ok(&p);
    }
    v
}

fn esp(src: [u8; 4], dst: [u8; 4], spi: u32) -> Vec<u8> {
    esp_seq(src, dst, spi, 1)
}

/// ESP with sequence number `seq`.
pub(crate) fn esp_seq(src: [u8; 4], dst: [u8; 4], spi: u32, seq: u32) -> Vec<u8> {
    ip_packet(src, dst, ipv4::PROTO_ESP, &esp::emit(spi, seq, b"ciphertext"))
}

#[test]
fn a_clients_outbound_esp_spi_is_forgotten_at_the_timeout_and_not_before() {
    // What a client sent ESP with lives `timeouts.other` after its last
    // packet: still there a second before, gone at the timeout.
    let mut n = nat_with(|p| p.timeouts.other = 30);
    assert_eq!(out(&mut n, &mut esp(C1, S1, 0x1001), t(1)), forward(Side::Wan, S1));
    assert_eq!(n.state_sizes().ipsec_sas, 1);
    n.handle_timeout(t(30));
    assert_eq!(n.state_sizes().ipsec_sas, 1, "idle 29 s");
    n.handle_timeout(t(31));
    assert_eq!(n.state_sizes().ipsec_sas, 0, "idle 30 s");
}

#[test]
fn port_500_is_kept_for_ike_only_in_the_spi_mode() {
    // In the SPI mode every client's IKE shares public port 500, so plain
    // NAPT never hands it out; in the other modes a LAN host's port 500 is
    // preserved like any other port.
    let other = |n: &mut Nat| {
        let mut p = udp(C1, ike::PORT, S1, 53, b"not ike");
        let v = out(n, &mut p, t(1));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        ports(&p).0
    };
    assert_ne!(other(&mut full()), ike::PORT, "spi: 500 is IKE's");
    assert_eq!(other(&mut nat_with(|p| p.ipsec = IpsecMode::Naive)), ike::PORT, "naive: preserved");
}

#[test]
fn ike_clients_keep_port_500_and_are_told_apart_by_initiator_spi() {
    let mut n = full();
    let (_, a) = ike_out(&mut n, C1, 500, S1, 500, 0xaaaa);
    let (_, b) = ike_out(&mut n, C2, 500, S1, 500, 0xbbbb);
    let (_, c) = ike_out(&mut n, C3, 500, S1, 500, 0xcccc);
    assert!([&a, &b, &c].iter().all(|p| ports(p).0 == 500), "all keep 500");
    assert_eq!(ike_in(&mut n, S1, 500, 0xbbbb), forward(Side::Lan, C2));
    assert_eq!(ike_in(&mut n, S1, 500, 0xaaaa), forward(Side::Lan, C1));
    assert_eq!(ike_in(&mut n, S1, 500, 0xcccc), forward(Side::Lan, C3));
    assert_eq!(ike_in(&mut n, S1, 500, 0xdddd), Verdict::Drop(DropReason::IkeUnknownSpi));
    assert_eq!(ike_in(&mut n, S2, 500, 0xaaaa), Verdict::Drop(DropReason::IkeUnknownSpi), "another host");
    let (v, _) = ike_out(&mut n, C2, 500, S1, 500, 0xaaaa);
    assert_eq!(v, Verdict::Drop(DropReason::IkeSpiTaken));
    assert_eq!(n.alg_state().ipsec_sas.iter().filter(|s| s.kind == "ike").count(), 3);
}

#[test]
fn nat_t_on_4500_is_plain_napt_refreshed_by_keepalives() {
    let mut n = nat_with(|p| p.timeouts.udp = 20);
    let (_, a) = ike_out(&mut n, C1, 4500, S1, 4500, 1);
    let (_, b) = ike_out(&mut n, C2, 4500, S1, 4500, 2);
    assert_eq!(ports(&a).0, 4500);
    assert_ne!(ports(&b).0, 4500, "the second client gets another port");
    // NAT-T keepalives (one 0xFF byte) every 15 s keep the mapping past its 20 s timeout.
    for s in [15, 30, 45] {
        let mut k = udp(C2, 4500, S1, 4500, &[0xff]);
        assert!(matches!(out(&mut n, &mut k, t(s)), Verdict::Forward { .. }));
    }
    let mut reply = udp(S1, 4500, WAN, ports(&b).0, &[0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(inb(&mut n, &mut reply, t(50)), forward(Side::Lan, C2));
    let mut no_nat_t = nat_with(|p| p.nat_t = false);
    assert_eq!(ike_out(&mut no_nat_t, C1, 4500, S1, 4500, 1).0, Verdict::Drop(DropReason::NatTOff));
    assert!(matches!(ike_out(&mut no_nat_t, C1, 500, S1, 500, 1).0, Verdict::Forward { .. }));
}

#[test]
fn esp_spis_are_learned_as_the_server_first_answers() {
    let mut n = full();
    assert_eq!(out(&mut n, &mut esp(C1, S1, 0x1001), t(1)), forward(Side::Wan, S1));
    let mut back = esp(S1, WAN, 0x2001);
    assert_eq!(inb(&mut n, &mut back, t(1)), forward(Side::Lan, C1));
    assert_checksums(&back);
    out(&mut n, &mut esp(C2, S1, 0x1002), t(2));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2002), t(2)), forward(Side::Lan, C2));
    // Both keep working by SPI, in any order.
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2001), t(3)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2002), t(3)), forward(Side::Lan, C2));
    assert_eq!(n.counters().esp_ambiguous_bindings, 0);
}

#[test]
fn simultaneous_esp_starts_are_resolved_first_come_first_served_and_counted() {
    let mut n = full();
    out(&mut n, &mut esp(C1, S1, 0x1001), t(1));
    out(&mut n, &mut esp(C2, S1, 0x1002), t(2));
    out(&mut n, &mut esp(C3, S1, 0x1003), t(3));
    // The server's answers: each unknown SPI goes to the longest waiter.
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2001), t(4)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2002), t(4)), forward(Side::Lan, C2));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2003), t(4)), forward(Side::Lan, C3));
    assert_eq!(n.counters().esp_ambiguous_bindings, 2, "two of the three were guesses");
    // Each binding holds once its next packet follows; then nobody waits.
    for spi in [0x2001, 0x2002, 0x2003] {
        assert!(matches!(inb(&mut n, &mut esp_seq(S1, WAN, spi, 2), t(5)), Verdict::Forward { .. }));
    }
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2004), t(5)), Verdict::Drop(DropReason::EspUnknownSpi));
}

#[test]
fn esp_rekeying_keeps_working() {
    let mut n = full();
    out(&mut n, &mut esp(C1, S1, 0x1001), t(1));
    inb(&mut n, &mut esp(S1, WAN, 0x2001), t(1));
    // Rekey: new SPIs both ways; the old pair still works meanwhile.
    out(&mut n, &mut esp(C1, S1, 0x1011), t(10));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2001), t(10)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2011), t(11)), forward(Side::Lan, C1));
}

#[test]
fn spoofed_esp_from_a_stranger_gets_nothing() {
    let mut n = full();
    out(&mut n, &mut esp(C1, S1, 0x1001), t(1));
    inb(&mut n, &mut esp(S1, WAN, 0x2001), t(1));
    assert_eq!(inb(&mut n, &mut esp(S2, WAN, 0x2001), t(2)), Verdict::Drop(DropReason::EspUnknownSpi));
    let mut short = ip_packet(S1, WAN, ipv4::PROTO_ESP, &[0, 0, 1]);
    ipv4::Packet::new_checked(&mut short[..]).expect("valid").fill_checksum();
    assert_eq!(inb(&mut n, &mut short, t(2)), Verdict::Drop(DropReason::EspMalformed));
}

#[test]
fn ipsec_off_naive_and_linux_like() {
    let mut off = nat_with(|p| p.ipsec = IpsecMode::Off);
    assert_eq!(out(&mut off, &mut esp(C1, S1, 1), t(1)), Verdict::Drop(DropReason::IpsecOff));
    assert_eq!(ike_out(&mut off, C1, 500, S1, 500, 1).0, Verdict::Drop(DropReason::IpsecOff));
    assert_eq!(ike_out(&mut off, C1, 4500, S1, 4500, 1).0, Verdict::Drop(DropReason::IpsecOff));

    // Naive: ESP by address, the last sender takes the server's ESP.
    let mut naive = nat_with(|p| p.ipsec = IpsecMode::Naive);
    out(&mut naive, &mut esp(C1, S1, 1), t(1));
    out(&mut naive, &mut esp(C2, S1, 2), t(1));
    assert_eq!(inb(&mut naive, &mut esp(S1, WAN, 9), t(2)), forward(Side::Lan, C2));
    let (_, a) = ike_out(&mut naive, C1, 500, S1, 500, 1);
    let (_, b) = ike_out(&mut naive, C2, 500, S1, 500, 2);
    assert_ne!(ports(&a).0, ports(&b).0, "naive: IKE is plain NAPT");

    // Linux-like: the first host keeps the server; the second's ESP is dropped.
    let mut linux = nat_with(|p| *p = crate::nat::profile::Profile::preset("linux-like").expect("preset"));
    out(&mut linux, &mut esp(C1, S1, 1), t(1));
    assert_eq!(out(&mut linux, &mut esp(C2, S1, 2), t(1)), Verdict::Drop(DropReason::RemoteTaken));
    assert_eq!(inb(&mut linux, &mut esp(S1, WAN, 9), t(2)), forward(Side::Lan, C1));
}

/// IKE from `client`:500 to `S1`:500 with initiator SPI `spi`, at `t(at)`.
fn ike_out_at(n: &mut Nat, client: [u8; 4], spi: u64, at: u64) -> Verdict {
    out(n, &mut udp(client, ike::PORT, S1, ike::PORT, &ike::emit(spi, 0, b"sa-init")), t(at))
}

/// `S1`'s IKE answer naming initiator SPI `spi`, at `t(at)`.
fn ike_in_at(n: &mut Nat, spi: u64, at: u64) -> Verdict {
    inb(n, &mut udp(S1, ike::PORT, WAN, ike::PORT, &ike::emit(spi, 0xabc, b"sa-init-reply")), t(at))
}

#[test]
fn a_retransmitted_ike_message_from_the_same_client_passes_and_keeps_its_sa() {
    // IKE retransmits until answered: the same client sending the same
    // initiator SPI again is no collision, and it keeps the SA alive.
    let mut n = nat_with(|p| p.timeouts.other = 30);
    assert_eq!(ike_out_at(&mut n, C1, 0x1e, 0), forward(Side::Wan, S1));
    assert_eq!(ike_out_at(&mut n, C1, 0x1e, 20), forward(Side::Wan, S1), "the retransmission passes");
    assert_eq!(n.counters().dropped(DropReason::IkeSpiTaken), 0);
    n.handle_timeout(t(40));
    assert_eq!(ike_in_at(&mut n, 0x1e, 40), forward(Side::Lan, C1), "the retransmission kept the SA alive");
}

#[test]
fn an_idle_ike_sa_expires_at_the_timeout_and_not_before() {
    // An IKE SA lives `timeouts.other` without traffic: the server's answer
    // a second before that still reaches the client; once it is up, the
    // answer finds no SA.
    let mut n = nat_with(|p| p.timeouts.other = 30);
    ike_out_at(&mut n, C1, 0x1e, 0);
    n.handle_timeout(t(29));
    assert_eq!(ike_in_at(&mut n, 0x1e, 29), forward(Side::Lan, C1), "29 s idle: still there");
    n.handle_timeout(t(59));
    assert_eq!(ike_in_at(&mut n, 0x1e, 59), Verdict::Drop(DropReason::IkeUnknownSpi), "30 s idle: gone");
}

#[test]
fn ike_sas_and_esp_spis_fill_one_ipsec_table() {
    // `limits.ipsec_sas` bounds IKE SAs and ESP SPIs both ways together:
    // one of each fills a table of three, so a new IKE SA is refused and
    // counted, and the state already there keeps working.
    let mut n = nat_with(|p| p.limits.ipsec_sas = 3);
    assert_eq!(ike_out_at(&mut n, C1, 0x1e, 1), forward(Side::Wan, S1));
    assert_eq!(out(&mut n, &mut esp(C1, S1, 0x1001), t(1)), forward(Side::Wan, S1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2001), t(1)), forward(Side::Lan, C1));
    assert_eq!(ike_out_at(&mut n, C2, 0x2e, 2), Verdict::Drop(DropReason::IpsecTableFull));
    assert_eq!(n.counters().dropped(DropReason::IpsecTableFull), 1);
    assert_eq!(ike_in_at(&mut n, 0x1e, 2), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 2), t(2)), forward(Side::Lan, C1));
}

/// C1 sends ESP with SPI 0x1001 to S1 at `t(1)`; the server answers with
/// SPI 0x2001 twice in sequence, which confirms the binding.
fn confirmed_esp(n: &mut Nat) {
    out(n, &mut esp(C1, S1, 0x1001), t(1));
    for seq in 1..=2 {
        assert_eq!(inb(n, &mut esp_seq(S1, WAN, 0x2001, seq), t(1)), forward(Side::Lan, C1));
    }
}

#[test]
fn a_client_that_hears_its_server_does_not_wait_for_another_spi() {
    // With its binding confirmed and the server heard a second ago, C1's
    // further ESP on the same SPI does not make it wait again: a stranger's
    // ESP with an unknown SPI from the server's address is dropped.
    let mut n = full();
    confirmed_esp(&mut n);
    assert_eq!(out(&mut n, &mut esp_seq(C1, S1, 0x1001, 2), t(2)), forward(Side::Wan, S1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xbad), t(2)), Verdict::Drop(DropReason::EspUnknownSpi));
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 3), t(2)), forward(Side::Lan, C1));
}

#[test]
fn the_servers_esp_sa_lives_the_timeout_after_the_last_packet_either_way() {
    // An inbound SA lives `timeouts.other` after the later of its own last
    // packet and its client's last outbound ESP: still there a second
    // before, gone at the timeout.
    let mut n = nat_with(|p| p.timeouts.other = 30);
    confirmed_esp(&mut n); // at t(1)
    n.handle_timeout(t(30));
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 3), t(30)), forward(Side::Lan, C1), "idle 29 s");
    // The client's ESP at t(40) keeps it past t(60), the SA's own timeout.
    assert_eq!(out(&mut n, &mut esp_seq(C1, S1, 0x1001, 2), t(40)), forward(Side::Wan, S1));
    n.handle_timeout(t(69));
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 4), t(69)), forward(Side::Lan, C1), "kept by the client");
    n.handle_timeout(t(99));
    assert_eq!(n.state_sizes().ipsec_sas, 0, "idle 30 s both ways");
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 5), t(99)), Verdict::Drop(DropReason::EspUnknownSpi));
}

#[test]
fn hearing_its_server_survives_the_nats_timers() {
    // The NAT's timers do not forget too early that a client heard its
    // server: a second later, its further ESP does not make it wait again.
    let mut n = full();
    confirmed_esp(&mut n);
    n.handle_timeout(t(2));
    assert_eq!(out(&mut n, &mut esp_seq(C1, S1, 0x1001, 2), t(2)), forward(Side::Wan, S1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xbad), t(2)), Verdict::Drop(DropReason::EspUnknownSpi));
}

#[test]
fn a_client_waits_for_its_servers_spi_no_longer_than_the_timeout() {
    // A client that sent ESP waits for the server's new SPI `timeouts.other`:
    // an unknown SPI a second before binds to it, one at the timeout does
    // not.
    let early = |at: u64| {
        let mut n = nat_with(|p| p.timeouts.other = 30);
        out(&mut n, &mut esp(C1, S1, 0x1001), t(1));
        // Something else keeps the client's outbound SPI alive meanwhile.
        out(&mut n, &mut esp_seq(C1, S1, 0x1001, 2), t(at - 1));
        n.handle_timeout(t(at));
        inb(&mut n, &mut esp(S1, WAN, 0x2001), t(at))
    };
    assert_eq!(early(30), forward(Side::Lan, C1), "waited 29 s");
    assert_eq!(early(31), Verdict::Drop(DropReason::EspUnknownSpi), "waited 30 s");
}

#[test]
fn a_tentative_binding_survives_the_nats_timers_while_its_sa_lives() {
    // C1 and C2 wait for the same server; its first new SPI goes to C1 for
    // now. The timers keep that binding while its SA lives, so the server's
    // next new SPI goes to C2, the client still waiting without one.
    let mut n = full();
    out(&mut n, &mut esp(C1, S1, 0x1001), t(1));
    out(&mut n, &mut esp(C2, S1, 0x1002), t(2));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2001), t(3)), forward(Side::Lan, C1));
    n.handle_timeout(t(4));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2002), t(4)), forward(Side::Lan, C2));
}

#[test]
fn a_rekey_after_a_confirmed_binding_binds_the_servers_new_spi() {
    // A rekey shows as a new outbound SPI while the client hears its
    // server: the client waits again, so the server's new SPI reaches it.
    let mut n = full();
    confirmed_esp(&mut n);
    assert_eq!(out(&mut n, &mut esp(C1, S1, 0x1011), t(2)), forward(Side::Wan, S1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2011), t(2)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, 3), t(2)), forward(Side::Lan, C1), "the old SA still works");
}

#[test]
fn a_client_sending_more_esp_before_its_answer_waits_only_once() {
    // A client waiting for the server's first answer takes one new SPI,
    // however many packets it sends meanwhile: C1 sending twice must not
    // take C2's answer too.
    let mut n = full();
    out(&mut n, &mut esp_seq(C1, S1, 0x1001, 1), t(1));
    out(&mut n, &mut esp_seq(C1, S1, 0x1001, 2), t(2));
    out(&mut n, &mut esp(C2, S1, 0x1002), t(3));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2001), t(4)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2002), t(4)), forward(Side::Lan, C2), "C2 gets its own answer");
}

#[test]
fn confirming_one_clients_spi_leaves_the_other_clients_waiting() {
    // C1's binding holding ends only C1's wait: C2, waiting for the same
    // server, still gets the server's first answer to it.
    let mut n = full();
    out(&mut n, &mut esp(C1, S1, 0x1001), t(1));
    out(&mut n, &mut esp(C2, S1, 0x1002), t(2));
    for seq in 1..=2 {
        assert_eq!(inb(&mut n, &mut esp_seq(S1, WAN, 0x2001, seq), t(3)), forward(Side::Lan, C1));
    }
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2002), t(3)), forward(Side::Lan, C2));
}

#[test]
fn a_new_spi_when_every_waiting_client_has_a_tentative_binding_is_counted_as_a_guess() {
    // With C1 and C2 both waiting and both bound for now, a third unknown
    // SPI goes to the longest waiter (C1), but it could have been C2's: it
    // is counted in `esp_ambiguous_bindings` like any other guess.
    let mut n = full();
    out(&mut n, &mut esp(C1, S1, 0x1001), t(1));
    out(&mut n, &mut esp(C2, S1, 0x1002), t(2));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2001), t(3)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2002), t(3)), forward(Side::Lan, C2));
    assert_eq!(n.counters().esp_ambiguous_bindings, 1, "the first answer was a guess, the second not");
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0x2003), t(3)), forward(Side::Lan, C1));
    assert_eq!(n.counters().esp_ambiguous_bindings, 2, "the third answer was a guess too");
}

#[test]
fn fragmented_ike_follows_its_first_fragment() {
    // An IKE_AUTH with certificates: the server's answer comes in two
    // fragments, the second first.
    let mut n = full();
    ike_out(&mut n, C1, 500, S1, 500, 0x5151);
    let whole = udp(S1, ike::PORT, WAN, ike::PORT, &ike::emit(0x5151, 7, &[0x42; 1200]));
    let (mut first, mut second) = ipv4::split(&whole, 800).expect("splits");
    assert_eq!(inb(&mut n, &mut second, t(2)), Verdict::Consumed);
    assert_eq!(inb(&mut n, &mut first, t(2)), forward(Side::Lan, C1));
    let late = n.poll_transmit().expect("the waiting fragment");
    assert_eq!(addrs(&late.packet).1, C1);
}

#[test]
fn fragmented_l2tp_data_with_a_length_field_is_translated_both_ways() {
    // xl2tpd sets the L bit on data messages; a full-size PPP frame makes
    // the datagram larger than the path MTU, so its first fragment holds a
    // length field that reaches past the fragment.
    let mut n = full();
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(5));
    l2tp_in(&mut n, S1, l2tp::PORT, &sccrp(5, 0x99));
    let data = |tunnel: u16| {
        let mut ppp = vec![0xff, 0x03];
        ppp.extend(std::iter::repeat_n(0x21, 1400));
        l2tp::emit_data(tunnel, 7, true, &ppp)
    };
    let fragments = |whole: Vec<u8>| ipv4::split(&whole, 1200).expect("splits");
    let (mut first, mut second) = fragments(udp(C1, l2tp::PORT, S1, l2tp::PORT, &data(0x99)));
    assert!(matches!(out(&mut n, &mut first, t(2)), Verdict::Forward { side: Side::Wan, .. }));
    assert!(matches!(out(&mut n, &mut second, t(2)), Verdict::Forward { side: Side::Wan, .. }));
    let (mut first, mut second) = fragments(udp(S1, l2tp::PORT, WAN, l2tp::PORT, &data(5)));
    assert_eq!(inb(&mut n, &mut first, t(2)), forward(Side::Lan, C1));
    assert_eq!(inb(&mut n, &mut second, t(2)), forward(Side::Lan, C1));
    assert_eq!(n.counters().drops(), Vec::<(String, u64)>::new());
}

// ---- Three clients colliding, in every mode ------------------------------

use crate::nat::profile::Profile;

/// Where the server's traffic for each of three colliding clients ends
/// up: `Some(i)` for client i, `None` for dropped.
type Outcome = [Option<usize>; 3];

const CLIENTS: [[u8; 4]; 3] = [C1, C2, C3];

fn landed(v: Verdict) -> Option<usize> {
    match v {
        Verdict::Forward { side: Side::Lan, next_hop } => CLIENTS.iter().position(|c| next_hop.octets() == *c),
        _ => None,
    }
}

/// Three PPTP clients, each with Call ID 0 on its own control connection;
/// the server answers each call's GRE with the Call ID it was told.
fn pptp_collision(profile: Profile) -> Outcome {
    let mut n = nat_with(|p| *p = profile);
    let mut told = Vec::new();
    for (i, c) in CLIENTS.iter().enumerate() {
        let mut syn = seg(*c, 40000, S1, PPTP, 99, tcp::SYN, b"");
        if !matches!(out(&mut n, &mut syn, t(0)), Verdict::Forward { .. }) {
            told.push(None);
            continue;
        }
        let public_port = ports(&syn).0;
        let mut synack = seg(S1, PPTP, WAN, public_port, 499, tcp::SYN | tcp::ACK, b"");
        inb(&mut n, &mut synack, t(0));
        let mut conn = Conn { client: *c, port: 40000, server: S1, out_seq: 100, in_seq: 500, public_port };
        let (_, sent) = conn.send(&mut n, &msg::emit(msg::OCRQ, Some(0), None));
        let public = field(&sent, 12);
        conn.recv(&mut n, &msg::emit(msg::OCRP, Some(0x100 + i as u16), Some(public)));
        let mut g = gre(*c, S1, 0x100 + i as u16, false, false);
        out(&mut n, &mut g, t(1));
        told.push(Some(public));
    }
    let mut outcome = [None; 3];
    for (i, public) in told.iter().enumerate() {
        if let Some(p) = public {
            let mut g = gre(S1, WAN, *p, false, false);
            outcome[i] = landed(inb(&mut n, &mut g, t(2)));
        }
    }
    outcome
}

#[test]
fn pptp_collisions_in_every_mode() {
    let preset = |name| Profile::preset(name).expect("preset");
    assert_eq!(pptp_collision(preset("passthrough-off")), [None, None, None], "off: nothing passes");
    assert_eq!(pptp_collision(preset("naive")), [Some(2), Some(2), Some(2)], "naive: the last sender gets all GRE");
    assert_eq!(pptp_collision(preset("full")), [Some(0), Some(1), Some(2)], "call-id: each gets its own");
    assert_eq!(
        pptp_collision(preset("linux-like")),
        [Some(0), Some(1), Some(2)],
        "linux-like: one call per control connection is enough here"
    );
}

/// Three L2TP clients from port 1701 with Tunnel ID 5 each; a server that
/// answers every SCCRQ to port 1701 with the Tunnel ID it received.
fn l2tp_collision(profile: Profile) -> Outcome {
    let mut n = nat_with(|p| *p = profile);
    let mut told = Vec::new();
    for c in CLIENTS {
        let (v, sent) = l2tp_out(&mut n, c, S1, l2tp::PORT, &sccrq(5));
        told.push(matches!(v, Verdict::Forward { .. }).then(|| assigned(&sent)));
    }
    let mut outcome = [None; 3];
    for (i, t) in told.iter().enumerate() {
        if let Some(t) = t {
            outcome[i] = landed(l2tp_in(&mut n, S1, l2tp::PORT, &sccrp(*t, 0x50 + i as u16)).0);
        }
    }
    outcome
}

#[test]
fn l2tp_collisions_in_every_mode() {
    let preset = |name| Profile::preset(name).expect("preset");
    assert_eq!(l2tp_collision(preset("passthrough-off")), [None, None, None]);
    assert_eq!(
        l2tp_collision(preset("naive")),
        [Some(0), Some(0), Some(0)],
        "naive: the others were moved off 1701, and the server answers to 1701"
    );
    assert_eq!(l2tp_collision(preset("full")), [Some(0), Some(1), Some(2)], "tunnel-id: each gets its own");
}

#[test]
fn l2tp_sessions_follow_their_tunnel() {
    let mut n = full();
    l2tp_out(&mut n, C1, S1, l2tp::PORT, &sccrq(5));
    let (_, sent) = l2tp_out(&mut n, C2, S1, l2tp::PORT, &sccrq(5));
    let public = assigned(&sent);
    l2tp_in(&mut n, S1, l2tp::PORT, &sccrp(public, 0x99));
    // C2 starts a session (to the server's tunnel) and the server answers
    // (to C2's public tunnel): C2 sees its own Tunnel ID.
    let icrq = l2tp::emit_control(0x99, 0, l2tp::ICRQ, &[(l2tp::AVP_ASSIGNED_SESSION_ID, 7)]);
    let (v, sent) = l2tp_out(&mut n, C2, S1, l2tp::PORT, &icrq);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(header_tunnel(&sent), 0x99);
    let icrp = l2tp::emit_control(public, 7, l2tp::ICRP, &[(l2tp::AVP_ASSIGNED_SESSION_ID, 70)]);
    let (v, got) = l2tp_in(&mut n, S1, l2tp::PORT, &icrp);
    assert_eq!(v, forward(Side::Lan, C2));
    assert_eq!(header_tunnel(&got), 5);
    checksums_ok(&got);
}

/// Three clients starting ESP with one server at once (no NAT-T); the
/// server answers each with a new SPI, in the order they started.
fn esp_collision(profile: Profile) -> Outcome {
    let mut n = nat_with(|p| *p = profile);
    for (i, c) in CLIENTS.iter().enumerate() {
        out(&mut n, &mut esp(*c, S1, 0x1000 + i as u32), t(1 + i as u64));
    }
    let mut outcome = [None; 3];
    for (i, o) in outcome.iter_mut().enumerate() {
        *o = landed(inb(&mut n, &mut esp(S1, WAN, 0x2000 + i as u32), t(5)));
    }
    outcome
}

#[test]
fn esp_collisions_in_every_mode() {
    let preset = |name| Profile::preset(name).expect("preset");
    assert_eq!(esp_collision(preset("passthrough-off")), [None, None, None]);
    assert_eq!(esp_collision(preset("naive")), [Some(2), Some(2), Some(2)], "naive: the last sender gets all");
    assert_eq!(
        esp_collision(preset("linux-like")),
        [Some(0), Some(0), Some(0)],
        "linux-like: the first keeps the server"
    );
    assert_eq!(
        esp_collision(preset("full")),
        [Some(0), Some(1), Some(2)],
        "spi: first come, first served (the answers come in the order the clients started)"
    );
}

/// Three IKE clients from port 500.
fn ike_collision(profile: Profile) -> Outcome {
    let mut n = nat_with(|p| *p = profile);
    let mut public = Vec::new();
    for (i, c) in CLIENTS.iter().enumerate() {
        let (v, sent) = ike_out(&mut n, *c, 500, S1, 500, 0xa0 + i as u64);
        public.push(matches!(v, Verdict::Forward { .. }).then(|| ports(&sent).0));
    }
    let mut outcome = [None; 3];
    for (i, p) in public.iter().enumerate() {
        if let Some(p) = p {
            outcome[i] = landed(ike_in(&mut n, S1, *p, 0xa0 + i as u64));
        }
    }
    outcome
}

#[test]
fn ike_collisions_in_every_mode() {
    let preset = |name| Profile::preset(name).expect("preset");
    assert_eq!(ike_collision(preset("passthrough-off")), [None, None, None]);
    assert_eq!(ike_collision(preset("naive")), [Some(0), Some(1), Some(2)], "naive: NAPT gives each a port");
    assert_eq!(ike_collision(preset("full")), [Some(0), Some(1), Some(2)], "spi: all on 500, told apart by SPI");
}

mod packet {
    use crate::nat::alg::Packet;
    use crate::nat::engine::L4Checksum;
    use crate::nat::profile::Protocol;
    use crate::nat::tests::{C1, S1, assert_checksums, udp};
    use crate::nat::translate::read_ports;

    #[test]
    fn a_patch_past_the_data_changes_nothing_and_says_so() {
        let mut pkt = udp(C1, 1701, S1, 1701, b"abcd");
        let ports = read_ports(&pkt[20..], Protocol::Udp, false).ok();
        let before = pkt.clone();
        {
            let mut p = Packet::new(&mut pkt, 20, ports, L4Checksum::Full);
            assert_eq!(p.data(), b"abcd");
            assert!(p.data_mut().is_none(), "the UDP checksum covers the data");
            assert!(!p.patch_byte(4, 0xff), "one past the last byte");
            assert!(!p.patch_u16(3, 0xffff), "a field half past the end");
            assert!(!p.patch_u16(usize::MAX, 0xffff), "an offset that overflows");
        }
        assert_eq!(pkt, before, "nothing changed");
        let mut p = Packet::new(&mut pkt, 20, ports, L4Checksum::Full);
        assert!(p.patch_byte(3, b'D') && p.patch_u16(0, u16::from_be_bytes(*b"AB")));
        assert_eq!(p.data(), b"ABcD");
        assert_checksums(&pkt);
    }
}

/// A NAT whose raw ESP goes through the vendor ESP tracker, set up by `f`.
fn tracker(f: impl FnOnce(&mut crate::nat::profile::EspTracker)) -> Nat {
    nat_with(|p| {
        p.ipsec = IpsecMode::Tracker;
        f(&mut p.esp_tracker);
    })
}

#[test]
fn the_esp_tracker_binds_a_servers_first_esp_to_its_oldest_unanswered_client() {
    // Both clients wait for S1; S1 answers the younger (C2) first: the
    // tracker gives C2's answer to C1, and C1's later answer to C2.
    let mut n = tracker(|_| {});
    assert_eq!(out(&mut n, &mut esp(C1, S1, 0xa1), t(0)), forward(Side::Wan, S1));
    assert_eq!(out(&mut n, &mut esp(C2, S1, 0xa2), t(1)), forward(Side::Wan, S1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xc2), t(2)), forward(Side::Lan, C1), "the oldest waiter");
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xc1), t(2)), forward(Side::Lan, C2), "the only one left");
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xc2), t(3)), forward(Side::Lan, C1), "for good");
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xc9), t(3)), Verdict::Drop(DropReason::EspUnknownSpi), "nobody waits");
    // The SPI ALG in the same order guesses the same way but only for now
    // (see the ALG's own tests); the tracker's binding is in the dump.
    let dump = n.alg_state().ipsec_sas;
    assert!(dump.iter().any(|s| s.kind == "esp-tracked" && s.spi == "000000a1 in 000000c2"), "{dump:?}");
}

#[test]
fn the_esp_tracker_table_is_full_at_its_entries_and_frees_unanswered_ones_at_their_timeout() {
    let mut n = tracker(|e| {
        e.entries = 2;
        e.unreplied_timeout = 5;
    });
    out(&mut n, &mut esp(C1, S1, 1), t(0));
    out(&mut n, &mut esp(C2, S1, 2), t(0));
    let mut third = esp([192, 168, 1, 12], S1, 3);
    assert_eq!(out(&mut n, &mut third, t(1)), Verdict::Drop(DropReason::EspTrackerFull));
    assert_eq!(out(&mut n, &mut esp(C1, S1, 1), t(1)), forward(Side::Wan, S1), "a known entry still passes");
    // C1's answer keeps its entry (`other` timeout); C2's unanswered one
    // goes 5 s after its last ESP, and the third client gets its place.
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xc1), t(2)), forward(Side::Lan, C1));
    n.handle_timeout(t(4));
    assert_eq!(out(&mut n, &mut esp([192, 168, 1, 12], S1, 3), t(4)), Verdict::Drop(DropReason::EspTrackerFull));
    n.handle_timeout(t(5));
    assert_eq!(out(&mut n, &mut esp([192, 168, 1, 12], S1, 3), t(5)), forward(Side::Wan, S1));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xc1), t(6)), forward(Side::Lan, C1), "answered: still there");
    assert_eq!(n.state_sizes().ipsec_sas, 2);
}

#[test]
fn an_unanswered_esp_tracker_entry_is_gone_when_the_servers_first_answer_comes_late() {
    let mut n = tracker(|e| e.unreplied_timeout = 3);
    out(&mut n, &mut esp(C1, S1, 1), t(0));
    n.handle_timeout(t(3));
    assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xc1), t(3)), Verdict::Drop(DropReason::EspUnknownSpi));
    // The SPI ALG waits as long as an SA lives.
    let mut spi = nat_with(|_| {});
    out(&mut spi, &mut esp(C1, S1, 1), t(0));
    spi.handle_timeout(t(3));
    assert_eq!(inb(&mut spi, &mut esp(S1, WAN, 0xc1), t(3)), forward(Side::Lan, C1));
}

#[test]
fn the_esp_tracker_serves_only_its_lans_and_without_follows_rekey_keeps_the_old_binding() {
    let mut only = tracker(|e| e.lans = vec!["10.0.0.0/8".parse().expect("a prefix")]);
    assert_eq!(out(&mut only, &mut esp(C1, S1, 1), t(0)), Verdict::Drop(DropReason::EspTrackerLan));
    assert_eq!(only.counters().dropped(DropReason::EspTrackerLan), 1);

    for follows_rekey in [true, false] {
        let mut n = tracker(|e| e.follows_rekey = follows_rekey);
        out(&mut n, &mut esp(C1, S1, 1), t(0));
        assert_eq!(inb(&mut n, &mut esp(S1, WAN, 0xc1), t(0)), forward(Side::Lan, C1));
        // A rekey: new SPIs both ways.
        assert_eq!(out(&mut n, &mut esp(C1, S1, 2), t(1)), forward(Side::Wan, S1));
        let answer = inb(&mut n, &mut esp(S1, WAN, 0xc2), t(1));
        if follows_rekey {
            assert_eq!(answer, forward(Side::Lan, C1), "the new SPI is learned");
        } else {
            assert_eq!(answer, Verdict::Drop(DropReason::EspUnknownSpi), "the entry kept the old SPI");
        }
    }
}

#[test]
fn with_bad_gre_checksum_translated_gre_keeps_the_header_checksum_it_came_with() {
    for quirk in [false, true] {
        let mut n = nat_with(|p| {
            p.bad_gre_checksum = quirk;
            p.pptp = PptpMode::Naive;
        });
        let mut g = gre(C1, S1, 0x1234, true, false);
        let came_with = ipv4::Packet::new_unchecked(&g[..]).checksum();
        assert_eq!(out(&mut n, &mut g, t(0)), forward(Side::Wan, S1));
        let ip = ipv4::Packet::new_unchecked(&g[..]);
        assert_eq!(ip.src_bytes(), WAN, "translated");
        assert_eq!(ip.verify_checksum(), !quirk, "quirk {quirk}");
        if quirk {
            assert_eq!(ip.checksum(), came_with);
        }
        let mut back = gre(S1, WAN, 0x1234, true, false);
        assert_eq!(inb(&mut n, &mut back, t(1)), forward(Side::Lan, C1));
        assert_eq!(ipv4::Packet::new_unchecked(&back[..]).verify_checksum(), !quirk);
        // Other protocols keep right checksums.
        let mut e = esp(C1, S1, 7);
        out(&mut n, &mut e, t(1));
        assert_checksums(&e);
    }
}
