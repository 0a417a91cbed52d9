//! The ICMP the NAT speaks itself: echo replies for its own addresses,
//! time exceeded, the errors it carries across (their quoted packets
//! translated like the packets they quote, RFC 5508), and the rate limit
//! on what it makes.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::super::counters::DropReason;
use super::super::profile::Protocol;
use super::super::table::{Class, Endpoint};
use super::super::translate::{Quoted, Rewritten, is_echo_request, is_icmp_error};
use super::{Nat, OWN_TTL, Side, Transmit, Verdict};
use crate::wire::{icmp, ipv4};

/// A token bucket refilled at a rate per second, holding one second's worth.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TokenBucket {
    tokens: f64,
    last: Option<Duration>,
}

impl TokenBucket {
    fn take(&mut self, per_second: u32, now: Duration) -> bool {
        let cap = f64::from(per_second);
        let elapsed = self.last.map_or(cap, |l| now.saturating_sub(l).as_secs_f64() * cap);
        self.tokens = (self.tokens + elapsed).min(cap);
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Nat {
    /// Takes a token for an ICMP message the NAT makes on `side`; `false`
    /// when the rate is spent.
    fn icmp_token(&mut self, side: Side, now: Duration) -> bool {
        let rate = self.cfg.profile.limits.icmp_per_second;
        self.icmp_rate[match side {
            Side::Lan => 0,
            Side::Wan => 1,
        }]
        .take(rate, now)
    }

    /// Packets addressed to the NAT: it answers echo requests, nothing else,
    /// and no faster than its ICMP rate.
    pub(super) fn for_router(&mut self, side: Side, pkt: &mut [u8], proto: Protocol, now: Duration) -> Verdict {
        if proto != Protocol::Icmp || !is_echo_request(pkt) {
            return self.drop(Some(proto), DropReason::ToRouter);
        }
        let ip = ipv4::Packet::new_unchecked(&*pkt);
        let (hl, total, src, dst) = (ip.header_len(), ip.total_len(), ip.src_bytes(), ip.dst_bytes());
        if ip.is_fragment() {
            return self.drop(Some(proto), DropReason::ToRouter);
        }
        let Some(next_hop) = self.next_hop(side, src) else {
            return self.drop(Some(proto), DropReason::NotRouted);
        };
        if !self.icmp_token(side, now) {
            return self.drop(Some(proto), DropReason::IcmpRateLimited);
        }
        {
            let Ok(mut msg) = icmp::Message::new_checked(&mut pkt[hl..total]) else {
                return self.drop(Some(proto), DropReason::Icmp(crate::wire::WireError::Truncated));
            };
            if !msg.verify_checksum() {
                return self.drop(Some(proto), DropReason::IcmpChecksum);
            }
            msg.set_msg_type(icmp::ECHO_REPLY);
            // Summed afresh: an update of the old sum gives 0x0000 for a
            // reply whose other bytes are all zero, where 0xffff is right.
            msg.fill_checksum();
        }
        let mut ip = ipv4::Packet::new_unchecked(&mut *pkt);
        ip.set_src(dst);
        ip.set_dst(src);
        ip.set_ttl(OWN_TTL);
        self.counters.icmp_generated += 1;
        Verdict::Forward { side, next_hop }
    }

    /// Drops a packet whose TTL ran out here and tells its sender (RFC 1812
    /// §5.3.1), unless it is itself an ICMP error or a later fragment.
    pub(super) fn ttl_exceeded(&mut self, side: Side, pkt: &[u8], proto: Protocol, now: Duration) -> Verdict {
        let ip = ipv4::Packet::new_unchecked(pkt);
        let quiet = ip.frag_offset() != 0 || (proto == Protocol::Icmp && is_icmp_error(pkt));
        if !quiet && !self.icmp_token(side, now) {
            self.counters.icmp_errors_suppressed += 1;
        } else if !quiet {
            if let Some(next_hop) = self.next_hop(side, ip.src_bytes()) {
                let me = match side {
                    Side::Lan => self.lan_addr,
                    Side::Wan => self.wan_addr,
                };
                let packet = self.icmp_error(me, ip.src_bytes(), icmp::TIME_EXCEEDED, 0, ip.packet());
                self.out.push_back(Transmit { side, next_hop, packet });
                self.counters.icmp_generated += 1;
            }
        }
        self.drop(Some(proto), DropReason::TtlExceeded)
    }

    /// An ICMP error from `src` to `dst` quoting `original` (its header and
    /// the first 8 bytes of its payload).
    fn icmp_error(&mut self, src: [u8; 4], dst: [u8; 4], kind: u8, code: u8, original: &[u8]) -> Vec<u8> {
        let hl = ipv4::Packet::new_unchecked(original).header_len();
        let quoted = &original[..original.len().min(hl + 8)];
        self.ident = self.ident.wrapping_add(1);
        let header = ipv4::Header { ttl: OWN_TTL, ident: self.ident, ..ipv4::Header::new(src, dst, ipv4::PROTO_ICMP) };
        ipv4::emit(&header, &[], &icmp::emit(kind, code, [0; 4], quoted))
    }

    /// An ICMP error from the WAN about a packet we sent out: the quoted
    /// packet's source is the public endpoint; it becomes the LAN host's,
    /// with every checksum kept right (RFC 5508 §4.2).
    pub(super) fn inbound_icmp_error(&mut self, pkt: &mut [u8], now: Duration) -> Verdict {
        let (hl, total) = {
            let ip = ipv4::Packet::new_unchecked(&*pkt);
            (ip.header_len(), ip.total_len())
        };
        let Some(q) = Quoted::read(&pkt[hl + icmp::HEADER_LEN..total]) else {
            return self.drop(Some(Protocol::Icmp), DropReason::IcmpErrorUnmatched);
        };
        if q.src != self.wan_addr {
            return self.drop(Some(Protocol::Icmp), DropReason::IcmpErrorUnmatched);
        }
        let (class, public, remote) = q.keys(Rewritten::Source);
        let Some(id) = self.table.inbound(q.proto, class, public, remote, now) else {
            return self.drop(Some(Protocol::Icmp), DropReason::IcmpErrorUnmatched);
        };
        // The quoted packet must be one the mapping sent: its destination
        // passes the mapping's filter, as the remote's own packets must.
        if !self.table.admits(id, remote, now) {
            return self.drop(Some(Protocol::Icmp), DropReason::Filtered);
        }
        let Some(internal) = self.table.get(id).map(|m| m.internal) else {
            return self.drop(Some(Protocol::Icmp), DropReason::IcmpErrorUnmatched);
        };
        q.rewrite(&mut pkt[hl + icmp::HEADER_LEN..total], Rewritten::Source, internal);
        icmp::Message::new_unchecked(&mut pkt[hl..total]).fill_checksum();
        let mut ip = ipv4::Packet::new_unchecked(&mut *pkt);
        ip.set_dst(internal.addr);
        ip.decrement_ttl();
        self.counters.protocol_mut(Protocol::Icmp).inbound += 1;
        Verdict::Forward { side: Side::Lan, next_hop: Ipv4Addr::from(internal.addr) }
    }

    /// An ICMP error a LAN host sends about a packet it got through us: the
    /// quoted packet's destination is the LAN host; it becomes the public
    /// endpoint.
    pub(super) fn outbound_icmp_error(&mut self, pkt: &mut [u8], next_hop: Ipv4Addr, now: Duration) -> Verdict {
        let (hl, total) = {
            let ip = ipv4::Packet::new_unchecked(&*pkt);
            (ip.header_len(), ip.total_len())
        };
        let Some(q) = Quoted::read(&pkt[hl + icmp::HEADER_LEN..total]) else {
            return self.drop(Some(Protocol::Icmp), DropReason::IcmpErrorUnmatched);
        };
        let class = q.class();
        let internal = Endpoint::new(q.dst, if class == Class::Ported { q.dst_port } else { 0 });
        let remote = Endpoint::new(q.src, if class == Class::Ported { q.src_port } else { 0 });
        let Some(id) = self.table.find_outbound(q.proto, class, internal, remote, now) else {
            return self.drop(Some(Protocol::Icmp), DropReason::IcmpErrorUnmatched);
        };
        let public = Endpoint::new(self.wan_addr, self.table.get(id).map_or(0, |m| m.public_port));
        q.rewrite(&mut pkt[hl + icmp::HEADER_LEN..total], Rewritten::Destination, public);
        icmp::Message::new_unchecked(&mut pkt[hl..total]).fill_checksum();
        let mut ip = ipv4::Packet::new_unchecked(&mut *pkt);
        ip.set_src(self.wan_addr);
        ip.decrement_ttl();
        self.counters.protocol_mut(Protocol::Icmp).outbound += 1;
        Verdict::Forward { side: Side::Wan, next_hop }
    }
}
