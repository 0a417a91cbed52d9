//! The quirk of passthrough firmware that drops the first packet of every
//! new VPN flow from the LAN (`drop_first_vpn_packet`): the flow's state is
//! set up on its first packet, which is lost, and the VPN comes up on its
//! daemons' retransmissions, one round later.
//!
//! A VPN flow is a LAN host's PPTP control connection (TCP to 1723), its
//! GRE or raw ESP to a server, or its UDP to IKE (500), NAT-T (4500) or
//! L2TP (1701). The flows seen are kept, bounded in all (`limits.vpn_flows`)
//! and per LAN host (`limits.vpn_flows_per_host`); past a bound a new flow's
//! first packet passes (the quirk must not let a flood cost others more),
//! and a flow idle both ways for its protocol's timeout is new again.

use std::collections::HashMap;
use std::time::Duration;

use super::quota::PerHost;
use crate::nat::alg::pptp::PORT as PPTP_PORT;
use crate::wire::{ike, ipv4, l2tp};

/// A flow from the LAN: protocol, source, destination, and the ports of
/// TCP and UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
}

impl Flow {
    /// The VPN flow an outbound IPv4 packet (checked by the engine) belongs
    /// to; `None` for other traffic and for later fragments.
    pub fn of(pkt: &[u8]) -> Option<Flow> {
        Flow::read(pkt, 2)
    }

    /// The VPN flow a translated inbound packet (from the server to a LAN
    /// host) answers.
    pub fn answered_by(pkt: &[u8]) -> Option<Flow> {
        let answer = Flow::read(pkt, 0)?;
        Some(Flow { src: answer.dst, dst: answer.src, ports: (answer.ports.1, answer.ports.0), ..answer })
    }

    /// A packet of a VPN flow as it goes (source, destination), the
    /// server's port being the one at `server_port_at` in the TCP or UDP
    /// header.
    fn read(pkt: &[u8], server_port_at: usize) -> Option<Flow> {
        let ip = ipv4::Packet::new_checked(pkt).ok()?;
        if ip.frag_offset() != 0 {
            return None;
        }
        let l4 = pkt.get(ip.header_len()..ip.total_len())?;
        let port = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
        let ports = match ip.protocol() {
            ipv4::PROTO_GRE | ipv4::PROTO_ESP => (0, 0),
            ipv4::PROTO_TCP if port(server_port_at)? == PPTP_PORT => (port(0)?, port(2)?),
            ipv4::PROTO_UDP if [ike::PORT, ike::NAT_T_PORT, l2tp::PORT].contains(&port(server_port_at)?) => {
                (port(0)?, port(2)?)
            }
            _ => return None,
        };
        Some(Flow { proto: ip.protocol(), src: ip.src_bytes(), dst: ip.dst_bytes(), ports })
    }
}

/// The VPN flows seen, each with when it was last seen (either way) and
/// how long it may stay idle.
pub struct FirstPackets {
    seen: HashMap<Flow, (Duration, Duration)>,
    bound: usize,
    per_host: PerHost,
}

impl FirstPackets {
    /// No flow seen; at most `bound` kept, `per_host` of one LAN host's.
    pub fn new(bound: usize, per_host: usize) -> FirstPackets {
        FirstPackets { seen: HashMap::new(), bound, per_host: PerHost::new(per_host) }
    }

    /// Notes an outbound packet of `flow` at `now`, idle for `timeout` at
    /// most: `true` when the flow is new (and the packet to be dropped).
    pub fn is_new(&mut self, flow: Flow, now: Duration, timeout: Duration) -> bool {
        if let Some(seen) = self.seen.get_mut(&flow) {
            *seen = (now, timeout);
            return false;
        }
        if self.seen.len() >= self.bound || !self.per_host.has_room(flow.src) {
            return false;
        }
        self.per_host.add(flow.src);
        self.seen.insert(flow, (now, timeout));
        true
    }

    /// Notes an answer on `flow` at `now`: a flow the server keeps talking
    /// on is not idle.
    pub fn answered(&mut self, flow: Flow, now: Duration) {
        if let Some((at, _)) = self.seen.get_mut(&flow) {
            *at = now;
        }
    }

    /// Forgets flows idle past their timeout.
    pub fn expire(&mut self, now: Duration) {
        let per_host = &mut self.per_host;
        self.seen.retain(|flow, (at, timeout)| {
            let live = *at + *timeout > now;
            if !live {
                per_host.release(flow.src);
            }
            live
        });
    }

    /// Flows kept.
    pub fn flows(&self) -> usize {
        self.seen.len()
    }
}
