//! The NAT itself, sans I/O: `(packet, side, now) -> verdict`. It rewrites
//! the packet in place, keeps its tables, counts everything, and queues the
//! few packets it makes itself (echo replies, time exceeded, fragments
//! released late) for [`Nat::poll_transmit`]. No sockets, no clock: time is
//! an argument, so tests drive it with byte vectors and a fake clock.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::alg::ipsec::{Bounds as IpsecBounds, Ipsec, SaInfo};
use super::alg::l2tp::{L2tp, TunnelInfo};
use super::alg::pptp::{Bounds as PptpBounds, CallInfo, Control, Direction, Pptp};
use super::counters::{Counters, DropReason};
use super::frag::{Bounds as FragBounds, DatagramKey, FragmentTarget, Fragments};
use super::profile::{IpsecMode, L2tpMode, PptpMode, Profile, Protocol};
use super::table::{Class, Endpoint, MapError, MappingInfo, Table, TcpState};
use super::tcp::Seg;
pub use super::translate::L4Checksum;
use super::translate::{
    Patch, Ports, Rewritten, check_options, is_echo_request, patch_u16, read_ports, rewrite, rewrite_icmp_ident,
};
use crate::wire::{esp, gre, icmp, ike, ipv4, l2tp, tcp, udp};

/// Which interface a packet came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The private side.
    Lan,
    /// The public side.
    Wan,
}

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
    counters: Counters,
    out: VecDeque<Transmit>,
    ident: u16,
    pptp: Pptp,
    l2tp: L2tp,
    ipsec: Ipsec,
    /// Tokens for ICMP the NAT makes, LAN and WAN.
    icmp_rate: [TokenBucket; 2],
}

/// The PPTP control port.
const PPTP_PORT: u16 = 1723;

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
        let t = &cfg.profile.timeouts;
        let bounds = PptpBounds {
            controls: l.pptp_controls,
            controls_per_host: l.pptp_controls_per_host,
            calls: l.pptp_calls,
            calls_per_host: l.pptp_calls_per_host,
        };
        let pptp = Pptp::new(cfg.profile.pptp_call_ids, Duration::from_secs(t.tcp_established), bounds);
        let l2tp = L2tp::new(Duration::from_secs(t.udp), l.l2tp_tunnels, l.l2tp_tunnels_per_host);
        let ipsec =
            Ipsec::new(Duration::from_secs(t.other), IpsecBounds { sas: l.ipsec_sas, per_host: l.ipsec_sas_per_host });
        Ok(Nat {
            pptp,
            l2tp,
            ipsec,
            lan_addr: cfg.lan.addr().octets(),
            wan_addr: cfg.wan.addr().octets(),
            table: Table::new(&cfg.profile, super::alg::reserved_udp_ports(&cfg.profile)),
            frags,
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
            pptp_controls: self.pptp.controls(),
            pptp_calls: self.pptp.calls(),
            l2tp_tunnels: self.l2tp.len(),
            ipsec_sas: self.ipsec.len(),
            fragment_datagrams: self.frags.known(),
            fragments_waiting: self.frags.waiting(),
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
        AlgState {
            pptp_calls: self.pptp.snapshot(),
            l2tp_tunnels: self.l2tp.snapshot(),
            ipsec_sas: self.ipsec.snapshot(),
        }
    }

    /// Expires mappings and waiting fragments. Call it every second or so.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.counters.mappings_expired += self.table.sweep(now, SWEEP_BUDGET) as u64;
        self.pptp.expire(now);
        self.l2tp.expire(now);
        self.ipsec.expire(now);
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
                if let Some(reason) = self.passthrough_off(proto, ports.dst) {
                    return self.drop(Some(proto), reason);
                }
                if proto == Protocol::Udp {
                    match self.udp_alg_out(pkt, hl, total, src, dst, ports, csum, now) {
                        Some(Ok(())) => return self.finish_out(pkt, proto, next_hop),
                        Some(Err(reason)) => return self.drop(Some(proto), reason),
                        None => {}
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
                if proto == Protocol::Tcp && ports.dst == PPTP_PORT && self.cfg.profile.pptp == PptpMode::CallId {
                    let control = Control { client: Endpoint::new(src, ports.src), server: dst, public_port: public };
                    if let Err(reason) =
                        self.pptp_control(Direction::Out, control, followed.flatten(), pkt, hl, total, csum, now)
                    {
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
            Protocol::Gre if self.cfg.profile.pptp == PptpMode::Off => {
                return self.drop(Some(proto), DropReason::PptpOff);
            }
            Protocol::Gre if self.cfg.profile.pptp == PptpMode::CallId && pptp_gre(l4).is_some() => {
                // Enhanced GRE carries the server's Call ID out: only the
                // address changes.
                ipv4::Packet::new_unchecked(&mut *pkt).set_src(self.wan_addr);
            }
            Protocol::Esp if self.cfg.profile.ipsec == IpsecMode::Off => {
                return self.drop(Some(proto), DropReason::IpsecOff);
            }
            Protocol::Esp if self.cfg.profile.ipsec == IpsecMode::Spi => {
                let Ok(e) = esp::Packet::new_checked(l4) else {
                    return self.drop(Some(proto), DropReason::EspMalformed);
                };
                if let Err(reason) = self.ipsec.esp_outbound(src, dst, e.spi(), now) {
                    return self.drop(Some(proto), reason);
                }
                ipv4::Packet::new_unchecked(&mut *pkt).set_src(self.wan_addr);
            }
            Protocol::Gre | Protocol::Esp | Protocol::Other => {
                let timeout = self.timeout(proto, TcpState::None);
                let number = ip.protocol();
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
            return match self.frags.lookup(&key, now) {
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
                if let Some(reason) = self.passthrough_off(proto, ports.src) {
                    return self.drop(Some(proto), reason);
                }
                if proto == Protocol::Udp {
                    match self.udp_alg_in(pkt, hl, total, src, ports, csum, now) {
                        Some(Ok(internal)) => return self.finish_in(pkt, proto, internal, key, first_fragment, now),
                        Some(Err(reason)) => return self.drop(Some(proto), reason),
                        None => {}
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
                if proto == Protocol::Tcp && ports.src == PPTP_PORT && self.cfg.profile.pptp == PptpMode::CallId {
                    let control = Control { client: internal, server: src, public_port: ports.dst };
                    if let Err(reason) = self.pptp_control(Direction::In, control, followed, pkt, hl, total, csum, now)
                    {
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
            Protocol::Gre if self.cfg.profile.pptp == PptpMode::Off => {
                return self.drop(Some(proto), DropReason::PptpOff);
            }
            Protocol::Gre if self.cfg.profile.pptp == PptpMode::CallId && pptp_gre(l4).is_some() => {
                let call = pptp_gre(l4).unwrap_or(0);
                let Some((client, lan_call)) = self.pptp.inbound_gre(src, call) else {
                    return self.drop(Some(proto), DropReason::PptpGreUnmatched);
                };
                if let Ok(mut gre) = gre::Packet::new_checked(&mut pkt[hl..total]) {
                    gre.set_call_id(lan_call);
                }
                ipv4::Packet::new_unchecked(&mut *pkt).set_dst(client);
                Endpoint::new(client, 0)
            }
            Protocol::Esp if self.cfg.profile.ipsec == IpsecMode::Off => {
                return self.drop(Some(proto), DropReason::IpsecOff);
            }
            Protocol::Esp if self.cfg.profile.ipsec == IpsecMode::Spi => {
                let Ok(e) = esp::Packet::new_checked(l4) else {
                    return self.drop(Some(proto), DropReason::EspMalformed);
                };
                let target = match self.ipsec.esp_inbound(src, e.spi(), e.seq(), now) {
                    Ok(t) => t,
                    Err(reason) => return self.drop(Some(proto), reason),
                };
                if target.ambiguous {
                    self.counters.esp_ambiguous_bindings += 1;
                }
                ipv4::Packet::new_unchecked(&mut *pkt).set_dst(target.client);
                Endpoint::new(target.client, 0)
            }
            Protocol::Gre | Protocol::Esp | Protocol::Other => {
                let remote = Endpoint::new(src, 0);
                let id = match self.admit(proto, ip.protocol(), Class::AddressOnly, 0, remote, now) {
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
            for mut late in self.frags.learn(key, FragmentTarget { dst: internal.addr }, now) {
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

    /// A passthrough the profile turns off, by the server's port.
    fn passthrough_off(&self, proto: Protocol, port: u16) -> Option<DropReason> {
        let p = &self.cfg.profile;
        match (proto, port) {
            (Protocol::Tcp, PPTP_PORT) if p.pptp == PptpMode::Off => Some(DropReason::PptpOff),
            (Protocol::Udp, l2tp::PORT) if p.l2tp == L2tpMode::Off => Some(DropReason::L2tpOff),
            (Protocol::Udp, ike::PORT | ike::NAT_T_PORT) if p.ipsec == IpsecMode::Off => Some(DropReason::IpsecOff),
            (Protocol::Udp, ike::NAT_T_PORT) if !p.nat_t => Some(DropReason::NatTOff),
            _ => None,
        }
    }

    /// UDP the L2TP or IPsec ALG owns, from the LAN: the client keeps its
    /// port (1701, 500) and the ALG learns what tells it apart. `None`: not
    /// the ALGs' business.
    #[allow(clippy::too_many_arguments)]
    fn udp_alg_out(
        &mut self,
        pkt: &mut [u8],
        hl: usize,
        total: usize,
        src: [u8; 4],
        dst: [u8; 4],
        ports: Ports,
        csum: L4Checksum,
        now: Duration,
    ) -> Option<Result<(), DropReason>> {
        let p = &self.cfg.profile;
        let payload_at = hl + udp::HEADER_LEN;
        let l2tp_flow = p.l2tp == L2tpMode::TunnelId
            && ports.src == l2tp::PORT
            && (ports.dst == l2tp::PORT || self.l2tp.has_tunnel(src, dst));
        let ike_flow = p.ipsec == IpsecMode::Spi && ports.src == ike::PORT && ports.dst == ike::PORT;
        if l2tp_flow {
            let whole = !ipv4::Packet::new_unchecked(&*pkt).more_frags();
            let r = match self.l2tp.outbound(src, dst, &pkt[payload_at..total], whole, now) {
                Ok(r) => r,
                Err(reason) => return Some(Err(reason)),
            };
            if let Some((at, _, new)) = r.field {
                patch_u16(pkt, payload_at + at, new, udp_patch(hl, ports, csum));
                self.counters.l2tp_tunnel_ids_rewritten += 1;
            }
        } else if ike_flow {
            if let Err(reason) = self.ipsec.ike_outbound(src, dst, &pkt[payload_at..total], now) {
                return Some(Err(reason));
            }
        } else {
            return None;
        }
        rewrite(pkt, hl, Rewritten::Source, self.wan_addr, ports, ports.src, csum);
        Some(Ok(()))
    }

    /// UDP to a port an ALG owns (1701, 500), from the WAN: the LAN host
    /// its ALG names.
    #[allow(clippy::too_many_arguments)]
    fn udp_alg_in(
        &mut self,
        pkt: &mut [u8],
        hl: usize,
        total: usize,
        src: [u8; 4],
        ports: Ports,
        csum: L4Checksum,
        now: Duration,
    ) -> Option<Result<Endpoint, DropReason>> {
        let p = &self.cfg.profile;
        let payload_at = hl + udp::HEADER_LEN;
        let client = if p.l2tp == L2tpMode::TunnelId && ports.dst == l2tp::PORT {
            let whole = !ipv4::Packet::new_unchecked(&*pkt).more_frags();
            let r = match self.l2tp.inbound(src, ports.src, &pkt[payload_at..total], whole, now) {
                Ok(r) => r,
                Err(reason) => return Some(Err(reason)),
            };
            if let Some((at, _, new)) = r.field {
                patch_u16(pkt, payload_at + at, new, udp_patch(hl, ports, csum));
            }
            r.client
        } else if p.ipsec == IpsecMode::Spi && ports.dst == ike::PORT {
            match self.ipsec.ike_inbound(src, &pkt[payload_at..total], now) {
                Ok(c) => c,
                Err(reason) => return Some(Err(reason)),
            }
        } else {
            return None;
        };
        rewrite(pkt, hl, Rewritten::Destination, client, ports, ports.dst, csum);
        Some(Ok(Endpoint::new(client, ports.dst)))
    }

    /// A segment of a PPTP control connection, after TCP tracking said what
    /// it was (`followed`: the state after it, `None` outside the window):
    /// the ALG reads it only while the connection is open and the segment
    /// in its window, and the connection's calls end when it closes.
    #[allow(clippy::too_many_arguments)]
    fn pptp_control(
        &mut self,
        dir: Direction,
        control: Control,
        followed: Option<TcpState>,
        pkt: &mut [u8],
        hl: usize,
        total: usize,
        csum: L4Checksum,
        now: Duration,
    ) -> Result<(), DropReason> {
        match followed {
            Some(TcpState::Closing) => {
                self.pptp.close(control);
                Ok(())
            }
            Some(_) => self.pptp_segment(dir, control, pkt, hl, total, csum, now),
            None => Ok(()),
        }
    }

    /// Runs a PPTP control segment through the ALG.
    #[allow(clippy::too_many_arguments)]
    fn pptp_segment(
        &mut self,
        dir: Direction,
        control: Control,
        pkt: &mut [u8],
        hl: usize,
        total: usize,
        csum: L4Checksum,
        now: Duration,
    ) -> Result<(), DropReason> {
        let (seq, data_at, syn) = match tcp::Segment::new_checked(&pkt[hl..total]) {
            Ok(seg) => (seg.seq(), hl + seg.header_len(), seg.flags() & tcp::SYN != 0),
            Err(e) => return Err(DropReason::Tcp(e)),
        };
        let patch = Patch {
            l4_start: hl,
            checksum_at: (csum == L4Checksum::Full).then_some(hl + tcp::CHECKSUM_OFFSET),
            udp: false,
        };
        self.pptp.segment(dir, control, &mut pkt[..total], data_at, seq, syn, patch, now)
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

/// The Call ID of an enhanced (PPTP) GRE packet, if it is one.
fn pptp_gre(l4: &[u8]) -> Option<u16> {
    let g = gre::Packet::new_checked(l4).ok()?;
    (g.version() == 1 && g.protocol() == gre::PROTO_PPP).then(|| g.call_id())
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
}

/// What the ALGs know, for the dump.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlgState {
    /// PPTP calls.
    pub pptp_calls: Vec<CallInfo>,
    /// L2TP tunnels.
    pub l2tp_tunnels: Vec<TunnelInfo>,
    /// IKE SAs on port 500 and ESP SPIs.
    pub ipsec_sas: Vec<SaInfo>,
}

/// How a UDP payload change reaches the UDP checksum.
fn udp_patch(hl: usize, ports: Ports, csum: L4Checksum) -> Patch {
    let checksum_at = match (csum, ports.checksum_at) {
        (L4Checksum::Full, Some(at)) => Some(hl + at),
        _ => None,
    };
    Patch { l4_start: hl, checksum_at, udp: true }
}
