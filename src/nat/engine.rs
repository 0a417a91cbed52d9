//! The NAT itself, sans I/O: `(packet, side, now) -> verdict`. It rewrites
//! the packet in place, keeps its tables, counts everything, and queues the
//! few packets it makes itself (echo replies, time exceeded, fragments
//! released late) for [`Nat::poll_transmit`]. No sockets, no clock: time is
//! an argument, so tests drive it with byte vectors and a fake clock.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::Side;
use super::alg::{self, AlgState, Algs, Claim, Connection};
use super::counters::{Counters, DropReason};
use super::first_packet::{FirstPackets, Flow};
use super::frag::{Bounds as FragBounds, DatagramKey, FragmentTarget, Fragments, Piece};
use super::profile::{Profile, Protocol};
use super::table::{Class, Endpoint, MapError, MappingInfo, Table, TcpState};
use super::tcp::Seg;
pub use super::translate::L4Checksum;
use super::translate::{Ports, Rewritten, check_options, is_echo_request, read_ports, rewrite, rewrite_icmp_ident};
use crate::wire::{icmp, ipv4};

/// What to do with a packet after [`Nat::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) packet on `side` to `next_hop`.
    Forward {
        /// The interface.
        side: Side,
        /// The neighbour to hand it to.
        next_hop: Ipv4Addr,
    },
    /// The NAT kept the packet (a fragment waiting for its first one).
    Consumed,
    /// Drop it; the reason is counted.
    Drop(DropReason),
}

/// A packet the NAT made or released itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The interface.
    pub side: Side,
    /// The neighbour to hand it to.
    pub next_hop: Ipv4Addr,
    /// The IPv4 packet.
    pub packet: Vec<u8>,
}

/// Addresses and behaviour of a NAT.
#[derive(Debug, Clone)]
pub struct Config {
    /// The NAT's LAN address and the LAN's prefix.
    pub lan: Ipv4Net,
    /// The NAT's public address and the WAN's prefix.
    pub wan: Ipv4Net,
    /// Where WAN traffic off the WAN prefix goes.
    pub gateway: Option<Ipv4Addr>,
    /// Behaviour.
    pub profile: Profile,
    /// Where the NAT's random choices start (random port allocation): the
    /// `nat` command draws it afresh at every start, as a rebooted router
    /// would; tests and fuzz targets fix it, so every run repeats.
    pub seed: u64,
}

/// Mappings looked at per [`Nat::handle_timeout`].
const SWEEP_BUDGET: usize = 4096;
/// TTL of packets the NAT makes.
const OWN_TTL: u8 = 64;

/// The NAT.
pub struct Nat {
    cfg: Config,
    lan_addr: [u8; 4],
    wan_addr: [u8; 4],
    table: Table,
    frags: Fragments,
    /// VPN flows seen, for `drop_first_vpn_packet`.
    first_packets: FirstPackets,
    counters: Counters,
    out: VecDeque<Transmit>,
    ident: u16,
    algs: Algs,
    /// Tokens for ICMP the NAT makes, LAN and WAN.
    icmp_rate: [TokenBucket; 2],
}

mod icmp_messages;

use icmp_messages::TokenBucket;

impl Nat {
    /// A NAT with empty tables.
    pub fn new(cfg: Config) -> Result<Nat, String> {
        cfg.profile.check()?;
        if cfg.lan.contains(&cfg.wan.addr()) || cfg.wan.contains(&cfg.lan.addr()) {
            return Err(format!("the LAN {} and the WAN {} overlap", cfg.lan, cfg.wan));
        }
        let l = &cfg.profile.limits;
        let frags = Fragments::new(
            Duration::from_secs(cfg.profile.timeouts.fragment),
            FragBounds {
                waiting: l.fragments_waiting,
                datagrams: l.fragment_datagrams,
                per_source: l.fragment_datagrams_per_source,
            },
        );
        let algs = Algs::new(&cfg.profile);
        Ok(Nat {
            lan_addr: cfg.lan.addr().octets(),
            wan_addr: cfg.wan.addr().octets(),
            table: Table::new(&cfg.profile, algs.reserved_udp_ports(), cfg.seed),
            algs,
            frags,
            first_packets: FirstPackets::new(cfg.profile.limits.vpn_flows, cfg.profile.limits.vpn_flows_per_host),
            counters: Counters::default(),
            out: VecDeque::new(),
            ident: 0,
            icmp_rate: Default::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counts a drop decided outside the core (by the packet I/O layer).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.counters.drop(None, reason);
    }

    /// The live mappings.
    pub fn mappings(&self, now: Duration) -> Vec<MappingInfo> {
        self.table.snapshot(now)
    }

    /// How many mappings the table holds.
    pub fn mapping_count(&self) -> usize {
        self.table.len()
    }

    /// How much state each table holds, to compare with the profile's
    /// bounds.
    pub fn state_sizes(&self) -> StateSizes {
        StateSizes {
            mappings: self.table.len(),
            sessions: self.table.sessions(),
            pptp_controls: self.algs.pptp.controls(),
            pptp_calls: self.algs.pptp.calls(),
            l2tp_tunnels: self.algs.l2tp.len(),
            ipsec_sas: self.algs.ipsec.len(),
            fragment_datagrams: self.frags.known(),
            fragments_waiting: self.frags.waiting(),
            first_packet_flows: self.first_packets.flows(),
        }
    }

    /// The first table holding more than the profile allows, if any.
    pub fn over_bounds(&self) -> Option<String> {
        let s = self.state_sizes();
        let l = &self.cfg.profile.limits;
        [
            ("max_mappings", s.mappings, self.cfg.profile.max_mappings),
            ("limits.sessions", s.sessions, l.sessions),
            ("limits.pptp_controls", s.pptp_controls, l.pptp_controls),
            ("limits.pptp_calls", s.pptp_calls, l.pptp_calls),
            ("limits.l2tp_tunnels", s.l2tp_tunnels, l.l2tp_tunnels),
            ("limits.ipsec_sas", s.ipsec_sas, l.ipsec_sas),
            ("limits.fragment_datagrams", s.fragment_datagrams, l.fragment_datagrams),
            ("limits.fragments_waiting", s.fragments_waiting, l.fragments_waiting),
            ("limits.vpn_flows", s.first_packet_flows, l.vpn_flows),
        ]
        .into_iter()
        .find(|(_, n, max)| n > max)
        .map(|(name, n, max)| format!("{name}: {n} held, {max} allowed"))
    }

    /// A packet the NAT made or released, to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// What the ALGs know, for the dump.
    pub fn alg_state(&self) -> AlgState {
        self.algs.snapshot()
    }

    /// Expires mappings and waiting fragments. Call it every second or so.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.counters.mappings_expired += self.table.sweep(now, SWEEP_BUDGET) as u64;
        self.algs.expire(now);
        self.first_packets.expire(now);
        for _ in 0..self.frags.expire(now) {
            self.counters.drop(None, DropReason::FragmentUnmatched);
        }
    }

    fn drop(&mut self, proto: Option<Protocol>, reason: DropReason) -> Verdict {
        self.counters.drop(proto, reason);
        Verdict::Drop(reason)
    }

    /// Translates an IPv4 packet that arrived on `side`, in place.
    pub fn process(&mut self, side: Side, pkt: &mut [u8], csum: L4Checksum, now: Duration) -> Verdict {
        // The quirk of firmware that rewrites GRE's addresses and leaves
        // the IPv4 header checksum as it came.
        // Only then is the header read here: every packet comes this way.
        let bad_gre_checksum = if self.cfg.profile.bad_gre_checksum {
            ipv4::Packet::new_checked(&*pkt).ok().filter(|ip| ip.protocol() == ipv4::PROTO_GRE).map(|ip| ip.checksum())
        } else {
            None
        };
        let verdict = self.process_packet(side, pkt, csum, now);
        if let (Some(c), Verdict::Forward { .. }) = (bad_gre_checksum, &verdict) {
            ipv4::Packet::new_unchecked(&mut *pkt).set_checksum(c);
        }
        // A VPN flow the server keeps talking on stays known.
        if let (true, Side::Wan, Verdict::Forward { side: Side::Lan, .. }) =
            (self.cfg.profile.drop_first_vpn_packet, side, &verdict)
            && let Some(flow) = Flow::answered_by(pkt)
        {
            self.first_packets.answered(flow, now);
        }
        verdict
    }

    fn process_packet(&mut self, side: Side, pkt: &mut [u8], csum: L4Checksum, now: Duration) -> Verdict {
        let ip = match ipv4::Packet::new_checked(&*pkt) {
            Ok(ip) => ip,
            Err(e) => return self.drop(None, DropReason::Ipv4(e)),
        };
        let proto = Protocol::of(ip.protocol());
        if !ip.verify_checksum() {
            return self.drop(Some(proto), DropReason::Ipv4Checksum);
        }
        if ip.header_len() > ipv4::MIN_HEADER_LEN {
            if let Err(reason) = check_options(&pkt[ipv4::MIN_HEADER_LEN..ip.header_len()]) {
                return self.drop(Some(proto), reason);
            }
        }
        if self.cfg.profile.blocked.contains(&proto) {
            return self.drop(Some(proto), DropReason::Blocked);
        }
        if self.cfg.profile.drop_fragments && (ip.more_frags() || ip.frag_offset() != 0) {
            return self.drop(Some(proto), DropReason::FragmentDropped);
        }
        let dst = ip.dst_bytes();
        let ttl = ip.ttl();
        if !self.source_allowed(side, ip.src_bytes()) {
            return self.drop(Some(proto), DropReason::SpoofedSource);
        }
        match side {
            Side::Lan if dst == self.lan_addr => self.for_router(side, pkt, proto, now),
            Side::Lan if dst == self.wan_addr => {
                if self.cfg.profile.hairpinning && matches!(proto, Protocol::Tcp | Protocol::Udp) {
                    if ttl <= 1 {
                        return self.ttl_exceeded(side, pkt, proto, now);
                    }
                    self.hairpin(pkt, proto, csum, now)
                } else {
                    self.for_router(side, pkt, proto, now)
                }
            }
            Side::Lan if self.cfg.lan.contains(&Ipv4Addr::from(dst)) => self.drop(Some(proto), DropReason::NotRouted),
            Side::Lan => {
                if ttl <= 1 {
                    return self.ttl_exceeded(side, pkt, proto, now);
                }
                if self.cfg.profile.drop_first_vpn_packet
                    && let Some(flow) = Flow::of(pkt)
                    && self.first_packets.is_new(flow, now, self.timeout(proto, TcpState::Established))
                {
                    return self.drop(Some(proto), DropReason::FirstPacketDropped);
                }
                self.outbound(pkt, proto, csum, now)
            }
            Side::Wan if dst == self.wan_addr => {
                if proto == Protocol::Icmp && is_echo_request(pkt) {
                    return self.for_router(side, pkt, proto, now);
                }
                if ttl <= 1 {
                    return self.ttl_exceeded(side, pkt, proto, now);
                }
                self.inbound(pkt, proto, csum, now)
            }
            Side::Wan => self.drop(Some(proto), DropReason::NotRouted),
        }
    }

    /// Whether a packet from `src` can have come from `side` (RFC 3704
    /// ingress filtering): a LAN host's own address on the LAN prefix; from
    /// the WAN, nothing that claims to be the LAN, the NAT, this host, or a
    /// group.
    fn source_allowed(&self, side: Side, src: [u8; 4]) -> bool {
        let a = Ipv4Addr::from(src);
        match side {
            Side::Lan => {
                self.cfg.lan.contains(&a)
                    && src != self.lan_addr
                    && a != self.cfg.lan.network()
                    && a != self.cfg.lan.broadcast()
            }
            Side::Wan => {
                !self.cfg.lan.contains(&a)
                    && src != self.wan_addr
                    && !a.is_unspecified()
                    && !a.is_loopback()
                    && !a.is_multicast()
                    && !a.is_broadcast()
            }
        }
    }

    fn next_hop(&self, side: Side, dst: [u8; 4]) -> Option<Ipv4Addr> {
        let dst = Ipv4Addr::from(dst);
        match side {
            Side::Lan => self.cfg.lan.contains(&dst).then_some(dst),
            Side::Wan if self.cfg.wan.contains(&dst) => Some(dst),
            Side::Wan => self.cfg.gateway,
        }
    }

    fn timeout(&self, proto: Protocol, tcp: TcpState) -> Duration {
        let t = &self.cfg.profile.timeouts;
        Duration::from_secs(match (proto, tcp) {
            (Protocol::Tcp, TcpState::Established) => t.tcp_established,
            (Protocol::Tcp, _) => t.tcp_transitory,
            (Protocol::Udp, _) => t.udp,
            (Protocol::Icmp, _) => t.icmp,
            _ => t.other,
        })
    }

    /// LAN to WAN.
    fn outbound(&mut self, pkt: &mut [u8], proto: Protocol, csum: L4Checksum, now: Duration) -> Verdict {
        let ip = ipv4::Packet::new_unchecked(&*pkt);
        let (hl, total, src, dst) = (ip.header_len(), ip.total_len(), ip.src_bytes(), ip.dst_bytes());
        let number = ip.protocol();
        let (later_fragment, first_fragment) = (ip.frag_offset() != 0, ip.more_frags() && ip.frag_offset() == 0);
        let Some(next_hop) = self.next_hop(Side::Wan, dst) else {
            return self.drop(Some(proto), DropReason::NotRouted);
        };
        if later_fragment {
            // The ports were in the first fragment; only the address changes.
            let mut ip = ipv4::Packet::new_unchecked(&mut *pkt);
            ip.set_src(self.wan_addr);
            ip.decrement_ttl();
            self.counters.protocol_mut(proto).outbound += 1;
            return Verdict::Forward { side: Side::Wan, next_hop };
        }
        let l4 = &pkt[hl..total];
        match proto {
            Protocol::Tcp | Protocol::Udp => {
                let ports = match read_ports(l4, proto, first_fragment) {
                    Ok(p) => p,
                    Err(reason) => return self.drop(Some(proto), reason),
                };
                match self.claim(Side::Lan, &mut pkt[..total], hl, Some(ports), csum, now) {
                    Claim::Pass => {}
                    Claim::Drop(reason) => return self.drop(Some(proto), reason),
                    Claim::Own { .. } => {
                        // The ALG's: the LAN host keeps its port.
                        rewrite(pkt, hl, Rewritten::Source, self.wan_addr, ports, ports.src, csum);
                        return self.finish_out(pkt, proto, next_hop);
                    }
                }
                let remote = Endpoint::new(dst, ports.dst);
                let timeout = self.timeout(proto, TcpState::Opening);
                let id = match self.table.outbound(
                    ip_proto(proto),
                    Class::Ported,
                    Endpoint::new(src, ports.src),
                    remote,
                    now,
                    timeout,
                ) {
                    Ok((id, new)) => self.created(id, new),
                    Err(e) => return self.map_error(proto, e),
                };
                let mut followed = None;
                if proto == Protocol::Tcp {
                    // The LAN host's own RST or FIN: a guess outside the
                    // window moves nothing, but it is the host's to send.
                    followed = self.track_tcp(id, remote, ports.tcp, true, now).ok();
                } else {
                    let t = self.timeout(proto, TcpState::None);
                    self.table.refresh(id, remote, now, t);
                }
                let public = self.table.get(id).map_or(0, |m| m.public_port);
                rewrite(pkt, hl, Rewritten::Source, self.wan_addr, ports, public, csum);
                if proto == Protocol::Tcp {
                    let conn = Connection { lan: Endpoint::new(src, ports.src), remote, public_port: public };
                    let translated = Ports { src: public, ..ports };
                    let mut p = alg::Packet::new(&mut pkt[..total], hl, Some(translated), csum);
                    let mut cx = alg::Context { now, counters: &mut self.counters };
                    if let Err(reason) = self.algs.segment(Side::Lan, conn, followed.flatten(), &mut p, &mut cx) {
                        return self.drop(Some(proto), reason);
                    }
                }
            }
            Protocol::Icmp => {
                let msg = match icmp::Message::new_checked(l4) {
                    Ok(m) => m,
                    Err(e) => return self.drop(Some(proto), DropReason::Icmp(e)),
                };
                if msg.is_error() {
                    return self.outbound_icmp_error(pkt, next_hop, now);
                }
                if !msg.is_query() {
                    return self.drop(Some(proto), DropReason::IcmpUnsupported);
                }
                let ident = msg.ident();
                let timeout = self.timeout(proto, TcpState::None);
                let id = match self.table.outbound(
                    ipv4::PROTO_ICMP,
                    Class::Ported,
                    Endpoint::new(src, ident),
                    Endpoint::new(dst, 0),
                    now,
                    timeout,
                ) {
                    Ok((id, new)) => self.created(id, new),
                    Err(e) => return self.map_error(proto, e),
                };
                let public = self.table.get(id).map_or(0, |m| m.public_port);
                rewrite_icmp_ident(&mut pkt[hl..total], public);
                ipv4::Packet::new_unchecked(&mut *pkt).set_src(self.wan_addr);
            }
            Protocol::Gre | Protocol::Esp | Protocol::Other => {
                match self.claim(Side::Lan, &mut pkt[..total], hl, None, csum, now) {
                    Claim::Pass => {}
                    Claim::Drop(reason) => return self.drop(Some(proto), reason),
                    Claim::Own { .. } => {
                        ipv4::Packet::new_unchecked(&mut *pkt).set_src(self.wan_addr);
                        return self.finish_out(pkt, proto, next_hop);
                    }
                }
                let timeout = self.timeout(proto, TcpState::None);
                let made = self.table.outbound(
                    number,
                    Class::AddressOnly,
                    Endpoint::new(src, 0),
                    Endpoint::new(dst, 0),
                    now,
                    timeout,
                );
                match made {
                    Ok((id, new)) => self.created(id, new),
                    Err(e) => return self.map_error(proto, e),
                };
                ipv4::Packet::new_unchecked(&mut *pkt).set_src(self.wan_addr);
            }
        }
        self.finish_out(pkt, proto, next_hop)
    }

    /// The end of every outbound translation: TTL, count, forward.
    fn finish_out(&mut self, pkt: &mut [u8], proto: Protocol, next_hop: Ipv4Addr) -> Verdict {
        ipv4::Packet::new_unchecked(&mut *pkt).decrement_ttl();
        self.counters.protocol_mut(proto).outbound += 1;
        Verdict::Forward { side: Side::Wan, next_hop }
    }

    /// WAN to LAN, addressed to the public address.
    fn inbound(&mut self, pkt: &mut [u8], proto: Protocol, csum: L4Checksum, now: Duration) -> Verdict {
        let ip = ipv4::Packet::new_unchecked(&*pkt);
        let (hl, total, src) = (ip.header_len(), ip.total_len(), ip.src_bytes());
        let key = DatagramKey { src, dst: ip.dst_bytes(), proto: ip.protocol(), ident: ip.ident() };
        let (later_fragment, first_fragment) = (ip.frag_offset() != 0, ip.more_frags() && ip.frag_offset() == 0);
        if later_fragment {
            let piece = Piece { offset: ip.frag_offset(), len: total.saturating_sub(hl), more: ip.more_frags() };
            return match self.frags.passes(&key, piece, now) {
                Some(rw) => {
                    let mut ip = ipv4::Packet::new_unchecked(&mut *pkt);
                    ip.set_dst(rw.dst);
                    ip.decrement_ttl();
                    self.counters.protocol_mut(proto).inbound += 1;
                    Verdict::Forward { side: Side::Lan, next_hop: Ipv4Addr::from(rw.dst) }
                }
                None if self.frags.hold(key, pkt, now) => Verdict::Consumed,
                None => self.drop(Some(proto), DropReason::FragmentQueueFull),
            };
        }
        let l4 = &pkt[hl..total];
        let internal = match proto {
            Protocol::Tcp | Protocol::Udp => {
                let ports = match read_ports(l4, proto, first_fragment) {
                    Ok(p) => p,
                    Err(reason) => return self.drop(Some(proto), reason),
                };
                match self.claim(Side::Wan, &mut pkt[..total], hl, Some(ports), csum, now) {
                    Claim::Pass => {}
                    Claim::Drop(reason) => return self.drop(Some(proto), reason),
                    Claim::Own { lan_host } if !self.source_allowed(Side::Lan, lan_host) => {
                        return self.drop(Some(proto), DropReason::NotRouted);
                    }
                    Claim::Own { lan_host } => {
                        // The ALG's: to the LAN host it names, on the port
                        // it sent from.
                        rewrite(pkt, hl, Rewritten::Destination, lan_host, ports, ports.dst, csum);
                        let internal = Endpoint::new(lan_host, ports.dst);
                        return self.finish_in(pkt, proto, internal, key, first_fragment, now);
                    }
                }
                let remote = Endpoint::new(src, ports.src);
                let id = match self.admit(proto, ip_proto(proto), Class::Ported, ports.dst, remote, now) {
                    Ok(id) => id,
                    Err(v) => return v,
                };
                let mut followed = None;
                if proto == Protocol::Tcp {
                    match self.track_tcp(id, remote, ports.tcp, false, now) {
                        Ok(f) => followed = f,
                        Err(reason) => return self.drop(Some(proto), reason),
                    }
                } else {
                    let t = self.timeout(proto, TcpState::None);
                    self.table.refresh(id, remote, now, t);
                }
                let Some(internal) = self.table.get(id).map(|m| m.internal) else {
                    return self.drop(Some(proto), DropReason::Unsolicited);
                };
                rewrite(pkt, hl, Rewritten::Destination, internal.addr, ports, internal.port, csum);
                if proto == Protocol::Tcp {
                    let conn = Connection { lan: internal, remote, public_port: ports.dst };
                    let translated = Ports { dst: internal.port, ..ports };
                    let mut p = alg::Packet::new(&mut pkt[..total], hl, Some(translated), csum);
                    let mut cx = alg::Context { now, counters: &mut self.counters };
                    if let Err(reason) = self.algs.segment(Side::Wan, conn, followed, &mut p, &mut cx) {
                        return self.drop(Some(proto), reason);
                    }
                }
                internal
            }
            Protocol::Icmp => {
                let msg = match icmp::Message::new_checked(l4) {
                    Ok(m) => m,
                    Err(e) => return self.drop(Some(proto), DropReason::Icmp(e)),
                };
                if msg.is_error() {
                    return self.inbound_icmp_error(pkt, now);
                }
                if !msg.is_query() || msg.is_request() {
                    return self.drop(Some(proto), DropReason::IcmpUnsupported);
                }
                let remote = Endpoint::new(src, 0);
                let id = match self.admit(proto, ipv4::PROTO_ICMP, Class::Ported, msg.ident(), remote, now) {
                    Ok(id) => id,
                    Err(v) => return v,
                };
                let Some(internal) = self.table.get(id).map(|m| m.internal) else {
                    return self.drop(Some(proto), DropReason::Unsolicited);
                };
                rewrite_icmp_ident(&mut pkt[hl..total], internal.port);
                ipv4::Packet::new_unchecked(&mut *pkt).set_dst(internal.addr);
                internal
            }
            Protocol::Gre | Protocol::Esp | Protocol::Other => {
                match self.claim(Side::Wan, &mut pkt[..total], hl, None, csum, now) {
                    Claim::Pass => {}
                    Claim::Drop(reason) => return self.drop(Some(proto), reason),
                    Claim::Own { lan_host } if !self.source_allowed(Side::Lan, lan_host) => {
                        return self.drop(Some(proto), DropReason::NotRouted);
                    }
                    Claim::Own { lan_host } => {
                        ipv4::Packet::new_unchecked(&mut *pkt).set_dst(lan_host);
                        let internal = Endpoint::new(lan_host, 0);
                        return self.finish_in(pkt, proto, internal, key, first_fragment, now);
                    }
                }
                let remote = Endpoint::new(src, 0);
                let id = match self.admit(proto, key.proto, Class::AddressOnly, 0, remote, now) {
                    Ok(id) => id,
                    Err(v) => return v,
                };
                let t = self.timeout(proto, TcpState::None);
                self.table.refresh(id, remote, now, t);
                let Some(internal) = self.table.get(id).map(|m| m.internal) else {
                    return self.drop(Some(proto), DropReason::Unsolicited);
                };
                ipv4::Packet::new_unchecked(&mut *pkt).set_dst(internal.addr);
                internal
            }
        };
        self.finish_in(pkt, proto, internal, key, first_fragment, now)
    }

    /// The end of every inbound translation: TTL, count, the datagram's
    /// waiting fragments released, forward.
    fn finish_in(
        &mut self,
        pkt: &mut [u8],
        proto: Protocol,
        internal: Endpoint,
        key: DatagramKey,
        first_fragment: bool,
        now: Duration,
    ) -> Verdict {
        if first_fragment && !self.frags.can_learn(&key, now) {
            return self.drop(Some(proto), DropReason::FragmentTableFull);
        }
        ipv4::Packet::new_unchecked(&mut *pkt).decrement_ttl();
        self.counters.protocol_mut(proto).inbound += 1;
        if first_fragment {
            let ip = ipv4::Packet::new_unchecked(&*pkt);
            let first = Piece { offset: 0, len: ip.total_len().saturating_sub(ip.header_len()), more: true };
            for mut late in self.frags.learn(key, FragmentTarget { dst: internal.addr }, first, now) {
                if let Ok(mut ip) = ipv4::Packet::new_checked(&mut late[..]) {
                    ip.set_dst(internal.addr);
                    ip.decrement_ttl();
                    self.counters.protocol_mut(proto).inbound += 1;
                    self.out.push_back(Transmit {
                        side: Side::Lan,
                        next_hop: Ipv4Addr::from(internal.addr),
                        packet: late,
                    });
                }
            }
        }
        Verdict::Forward { side: Side::Lan, next_hop: Ipv4Addr::from(internal.addr) }
    }

    /// The mapping of an inbound packet, if there is one and its filter
    /// lets the remote in.
    fn admit(
        &mut self,
        proto: Protocol,
        number: u8,
        class: Class,
        public_port: u16,
        remote: Endpoint,
        now: Duration,
    ) -> Result<u32, Verdict> {
        let Some(id) = self.table.inbound(number, class, public_port, remote, now) else {
            return Err(self.drop(Some(proto), DropReason::Unsolicited));
        };
        if !self.table.admits(id, remote, now) {
            return Err(self.drop(Some(proto), DropReason::Filtered));
        }
        Ok(id)
    }

    /// LAN to the public address: to another LAN host through its mapping.
    fn hairpin(&mut self, pkt: &mut [u8], proto: Protocol, csum: L4Checksum, now: Duration) -> Verdict {
        let ip = ipv4::Packet::new_unchecked(&*pkt);
        let (hl, total, src) = (ip.header_len(), ip.total_len(), ip.src_bytes());
        if ip.is_fragment() {
            return self.drop(Some(proto), DropReason::NotRouted);
        }
        let ports = match read_ports(&pkt[hl..total], proto, false) {
            Ok(p) => p,
            Err(reason) => return self.drop(Some(proto), reason),
        };
        let number = ip_proto(proto);
        // The sender's own mapping, as if it talked to the public endpoint.
        let timeout = self.timeout(proto, TcpState::Opening);
        let target = Endpoint::new(self.wan_addr, ports.dst);
        let mine = match self.table.outbound(number, Class::Ported, Endpoint::new(src, ports.src), target, now, timeout)
        {
            Ok((id, new)) => self.created(id, new),
            Err(e) => return self.map_error(proto, e),
        };
        let my_public = Endpoint::new(self.wan_addr, self.table.get(mine).map_or(0, |m| m.public_port));
        let id = match self.admit(proto, number, Class::Ported, ports.dst, my_public, now) {
            Ok(id) => id,
            Err(v) => return v,
        };
        let Some(internal) = self.table.get(id).map(|m| m.internal) else {
            return self.drop(Some(proto), DropReason::Unsolicited);
        };
        let t = self.timeout(proto, TcpState::Established);
        self.table.refresh(mine, target, now, t);
        self.table.refresh(id, my_public, now, t);
        rewrite(pkt, hl, Rewritten::Source, self.wan_addr, ports, my_public.port, csum);
        let moved = Ports { src: my_public.port, ..ports };
        rewrite(pkt, hl, Rewritten::Destination, internal.addr, moved, internal.port, csum);
        ipv4::Packet::new_unchecked(&mut *pkt).decrement_ttl();
        self.counters.protocol_mut(proto).hairpinned += 1;
        Verdict::Forward { side: Side::Lan, next_hop: Ipv4Addr::from(internal.addr) }
    }

    /// Counts and logs a mapping if it is new; returns its slot.
    fn created(&mut self, id: u32, new: bool) -> u32 {
        if new {
            self.counters.mappings_created += 1;
            if let Some(m) = self.table.get(id) {
                tracing::debug!(
                    "new mapping {} {} -> public port {}",
                    Protocol::of(m.proto).name(),
                    m.internal,
                    m.public_port
                );
            }
        }
        id
    }

    /// Asks the ALGs whether a packet from `from` (cut to its total
    /// length) is theirs, before plain NAPT; a TCP segment only whether
    /// its passthrough is turned off.
    fn claim(
        &mut self,
        from: Side,
        pkt: &mut [u8],
        hl: usize,
        ports: Option<Ports>,
        csum: L4Checksum,
        now: Duration,
    ) -> Claim {
        let mut p = alg::Packet::new(pkt, hl, ports, csum);
        if p.proto == Protocol::Tcp {
            return self.algs.refuses(from, &p).map_or(Claim::Pass, Claim::Drop);
        }
        self.algs.claim(from, &mut p, &mut alg::Context { now, counters: &mut self.counters })
    }

    fn map_error(&mut self, proto: Protocol, e: MapError) -> Verdict {
        let reason = match e {
            MapError::TableFull => DropReason::TableFull,
            MapError::PortsExhausted => DropReason::PortsExhausted,
            MapError::RemoteTaken => DropReason::RemoteTaken,
            MapError::HostQuota => DropReason::HostQuota,
            MapError::RemotesFull => DropReason::RemotesFull,
            MapError::SessionsFull => DropReason::SessionsFull,
        };
        self.drop(Some(proto), reason)
    }

    /// Follows a TCP connection's state and sets its session's timeout
    /// (RFC 5382: long while established, short while opening or closing).
    /// `None` for a segment outside the window (or a remote without a
    /// session); a RST outside the window is a stranger's: `Err`, to drop.
    fn track_tcp(
        &mut self,
        id: u32,
        remote: Endpoint,
        seg: Seg,
        outbound: bool,
        now: Duration,
    ) -> Result<Option<TcpState>, DropReason> {
        let t = self.cfg.profile.timeouts.clone();
        let timeout = |s: TcpState| {
            Duration::from_secs(if s == TcpState::Established { t.tcp_established } else { t.tcp_transitory })
        };
        self.table.track_tcp(id, remote, seg, outbound, now, timeout).map_err(|_| DropReason::TcpOutOfWindow)
    }
}

fn ip_proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => ipv4::PROTO_TCP,
        Protocol::Udp => ipv4::PROTO_UDP,
        Protocol::Icmp => ipv4::PROTO_ICMP,
        Protocol::Gre => ipv4::PROTO_GRE,
        Protocol::Esp => ipv4::PROTO_ESP,
        Protocol::Other => 0,
    }
}

/// How much state the NAT holds, table by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateSizes {
    /// Mappings.
    pub mappings: usize,
    /// Sessions (mapping and remote pairs).
    pub sessions: usize,
    /// PPTP control connections followed.
    pub pptp_controls: usize,
    /// PPTP calls.
    pub pptp_calls: usize,
    /// L2TP tunnels.
    pub l2tp_tunnels: usize,
    /// IKE SAs and ESP SPIs.
    pub ipsec_sas: usize,
    /// Fragmented datagrams followed.
    pub fragment_datagrams: usize,
    /// Fragments waiting for their first one.
    pub fragments_waiting: usize,
    /// VPN flows seen (`drop_first_vpn_packet`).
    pub first_packet_flows: usize,
}
