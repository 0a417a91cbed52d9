//! The quirk of passthrough firmware that drops the first packet of every
//! new VPN flow from the LAN (`drop_first_vpn_packet`): the flow's state is
//! set up on its first packet, which is lost, and the VPN comes up on its
//! daemons' retransmissions, one round later.
//!
//! A VPN flow is a LAN host's PPTP control connection (TCP to 1723), its
//! GRE or raw ESP to a server, or its UDP to IKE (500), NAT-T (4500) or
//! L2TP (1701). The flows seen are kept, bounded; past the bound a new
//! flow's first packet passes (the quirk must not let a flood cost others
//! more), and a flow idle for its protocol's timeout is new again.

use std::collections::HashMap;
use std::time::Duration;

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
        let ip = ipv4::Packet::new_checked(pkt).ok()?;
        if ip.frag_offset() != 0 {
            return None;
        }
        let l4 = pkt.get(ip.header_len()..)?;
        let port = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
        let ports = match ip.protocol() {
            ipv4::PROTO_GRE | ipv4::PROTO_ESP => (0, 0),
            ipv4::PROTO_TCP if port(2)? == PPTP_PORT => (port(0)?, PPTP_PORT),
            ipv4::PROTO_UDP if [ike::PORT, ike::NAT_T_PORT, l2tp::PORT].contains(&port(2)?) => (port(0)?, port(2)?),
            _ => return None,
        };
        Some(Flow { proto: ip.protocol(), src: ip.src_bytes(), dst: ip.dst_bytes(), ports })
    }
}

/// The VPN flows seen, each with when it was last seen and how long it may
/// stay idle.
pub struct FirstPackets {
    seen: HashMap<Flow, (Duration, Duration)>,
    bound: usize,
}

impl FirstPackets {
    /// No flow seen; at most `bound` kept.
    pub fn new(bound: usize) -> FirstPackets {
        FirstPackets { seen: HashMap::new(), bound }
    }

    /// Notes a packet of `flow` at `now`, idle for `timeout` at most: `true`
    /// when it is the flow's first (and to be dropped).
    pub fn first(&mut self, flow: Flow, now: Duration, timeout: Duration) -> bool {
        if let Some(seen) = self.seen.get_mut(&flow) {
            *seen = (now, timeout);
            return false;
        }
        if self.seen.len() >= self.bound {
            return false;
        }
        self.seen.insert(flow, (now, timeout));
        true
    }

    /// Forgets flows idle past their timeout.
    pub fn expire(&mut self, now: Duration) {
        self.seen.retain(|_, (at, timeout)| *at + *timeout > now);
    }

    /// Flows kept.
    pub fn flows(&self) -> usize {
        self.seen.len()
    }
}
