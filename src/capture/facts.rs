//! What a capture shows, as typed facts: for each IPv4 packet its
//! addresses and what it carried of the VPN protocols (PPTP Call IDs, L2TP
//! Tunnel and Session IDs, IKE SPIs and ports, ESP SPIs and sequence
//! numbers), for assertions on each side of a router.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::wire::{esp, ethernet, gre, ike, ipv4, l2tp, pptp};

use super::pcap::{LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, Pcap};

/// One IPv4 packet as seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// Capture time, since the epoch.
    pub time: Duration,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// What it carried.
    pub what: What,
    /// Bytes of transport payload: after the TCP or UDP header, or the
    /// whole IP payload of other protocols (as the IP header states it).
    pub payload: u16,
    /// The IPv4 header checksum is right (a receiving host drops the
    /// packet otherwise).
    pub header_checksum_ok: bool,
}

/// What a packet carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum What {
    /// Enhanced GRE (PPTP data) for the receiver's Call ID.
    Gre {
        /// The Call ID in the key field.
        call_id: u16,
        /// The addresses of the IPv4 packet inside the PPP frame, if it
        /// carried one: whose tunnel traffic this really is.
        inner: Option<(Ipv4Addr, Ipv4Addr)>,
    },
    /// A PPTP control message on TCP 1723.
    PptpControl {
        /// TCP ports.
        sport: u16,
        /// TCP ports.
        dport: u16,
        /// Control message type (RFC 2637).
        message: u16,
        /// The sender's Call ID, if the message has one.
        call_id: Option<u16>,
        /// The receiver's Call ID, if the message has one.
        peer_call_id: Option<u16>,
    },
    /// L2TPv2 on UDP.
    L2tp {
        /// UDP ports.
        sport: u16,
        /// UDP ports.
        dport: u16,
        /// The receiver's Tunnel ID.
        tunnel_id: u16,
        /// The receiver's Session ID.
        session_id: u16,
        /// The control message type, for control messages.
        control: Option<u16>,
    },
    /// IKE on UDP 500, or on 4500 after the non-ESP marker.
    Ike {
        /// UDP ports.
        sport: u16,
        /// UDP ports.
        dport: u16,
        /// Initiator's SPI.
        initiator_spi: u64,
        /// Responder's SPI (0 in the first message).
        responder_spi: u64,
    },
    /// ESP (IP protocol 50), or ESP in UDP 4500 when the ports are given.
    Esp {
        /// UDP ports for ESP in UDP.
        ports: Option<(u16, u16)>,
        /// SPI.
        spi: u32,
        /// Sequence number.
        seq: u32,
    },
    /// A NAT-T keepalive (one 0xFF byte on UDP 4500).
    NatTKeepalive {
        /// UDP ports.
        sport: u16,
        /// UDP ports.
        dport: u16,
    },
    /// Other UDP.
    Udp {
        /// UDP ports.
        sport: u16,
        /// UDP ports.
        dport: u16,
    },
    /// Other TCP.
    Tcp {
        /// TCP ports.
        sport: u16,
        /// TCP ports.
        dport: u16,
    },
    /// ICMP.
    Icmp {
        /// Type.
        kind: u8,
        /// Code.
        code: u8,
    },
    /// A later fragment (no transport header).
    Fragment {
        /// IP protocol.
        proto: u8,
    },
    /// Another protocol, or a header too short to read.
    Other {
        /// IP protocol.
        proto: u8,
    },
}

impl What {
    /// (protocol, source port, destination port) of a packet with ports.
    pub fn ports(&self) -> Option<(u8, u16, u16)> {
        match *self {
            What::PptpControl { sport, dport, .. } | What::Tcp { sport, dport } => Some((6, sport, dport)),
            What::L2tp { sport, dport, .. }
            | What::Ike { sport, dport, .. }
            | What::NatTKeepalive { sport, dport }
            | What::Udp { sport, dport } => Some((17, sport, dport)),
            What::Esp { ports: Some((sport, dport)), .. } => Some((17, sport, dport)),
            _ => None,
        }
    }
}

/// Everything a capture saw, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The IPv4 packets.
    pub packets: Vec<Seen>,
    /// Records that were not IPv4 (ARP, IPv6).
    pub not_ipv4: usize,
    /// Packets the kernel dropped before the capture read them: a fact
    /// that something did *not* cross holds only when this is 0.
    pub capture_drops: u64,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

/// The IPv4 packet inside a link-layer record.
fn ipv4_of(linktype: u32, data: &[u8]) -> Option<&[u8]> {
    let (ethertype, at) = match linktype {
        LINKTYPE_ETHERNET => {
            let t = be16(data, 12)?;
            if t == ethernet::ETHERTYPE_VLAN { (be16(data, 16)?, 18) } else { (t, ethernet::HEADER_LEN) }
        }
        LINKTYPE_LINUX_SLL => (be16(data, 14)?, 16),
        _ => return None,
    };
    (ethertype == ethernet::ETHERTYPE_IPV4).then(|| data.get(at..)).flatten()
}

/// What one IPv4 packet carried. Transport headers are read from what was
/// captured even when the datagram is a first fragment.
pub fn classify(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, What)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ip = ipv4::Packet::new_unchecked(packet);
    let hl = ip.header_len();
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    let end = ip.total_len().min(packet.len());
    let l4 = packet.get(hl..end.max(hl))?;
    if ip.frag_offset() != 0 {
        return Some((src, dst, What::Fragment { proto }));
    }
    let other = What::Other { proto };
    let what = match proto {
        ipv4::PROTO_TCP => tcp(l4).unwrap_or(other),
        ipv4::PROTO_UDP => udp(l4).unwrap_or(other),
        ipv4::PROTO_GRE => gre::Packet::new_checked(l4)
            .ok()
            .filter(|g| g.version() == 1 && g.has_key())
            .map(|g| What::Gre { call_id: g.call_id(), inner: l4.get(g.header_len()..).and_then(ppp_ipv4) })
            .unwrap_or(other),
        ipv4::PROTO_ESP => {
            esp::Packet::new_checked(l4).map(|e| What::Esp { ports: None, spi: e.spi(), seq: e.seq() }).unwrap_or(other)
        }
        ipv4::PROTO_ICMP => match l4 {
            [kind, code, ..] => What::Icmp { kind: *kind, code: *code },
            _ => other,
        },
        _ => other,
    };
    Some((src, dst, what))
}

/// Whether an IPv4 packet's header checksum is right (`true` for a header
/// cut short by the capture: nothing can be said of it).
fn header_checksum_ok(packet: &[u8]) -> bool {
    if packet.len() < 20 {
        return true;
    }
    let ip = ipv4::Packet::new_unchecked(packet);
    ip.header_len() > packet.len() || ip.verify_checksum()
}

/// The transport payload length an IPv4 packet's headers state (TCP and
/// UDP headers taken off in first fragments and whole datagrams).
fn payload_len(packet: &[u8]) -> u16 {
    if packet.len() < 20 {
        return 0;
    }
    let ip = ipv4::Packet::new_unchecked(packet);
    let ip_payload = ip.total_len().saturating_sub(ip.header_len());
    let transport = match ip.protocol() {
        _ if ip.frag_offset() != 0 => 0,
        ipv4::PROTO_TCP => packet.get(ip.header_len() + 12).map_or(0, |b| usize::from(b >> 4) * 4),
        ipv4::PROTO_UDP => 8,
        _ => 0,
    };
    u16::try_from(ip_payload.saturating_sub(transport)).unwrap_or(u16::MAX)
}

/// The addresses of the IPv4 packet in a PPP frame (address and control
/// fields and a two-byte protocol, either possibly compressed).
fn ppp_ipv4(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let f = frame.strip_prefix(&[0xff, 0x03]).unwrap_or(frame);
    let ip = f.strip_prefix(&[0x00, 0x21]).or_else(|| f.strip_prefix(&[0x21]))?;
    (ip.len() >= 20 && ip[0] >> 4 == 4).then(|| {
        let p = ipv4::Packet::new_unchecked(ip);
        (p.src(), p.dst())
    })
}

fn tcp(l4: &[u8]) -> Option<What> {
    let (sport, dport) = (be16(l4, 0)?, be16(l4, 2)?);
    let data = l4.get(usize::from(l4.get(12)? >> 4) * 4..)?;
    if (sport == pptp::PORT || dport == pptp::PORT)
        && data.len() >= pptp::HEADER_LEN
        && be32(data, 4) == Some(pptp::MAGIC)
    {
        let message = be16(data, 8)?;
        let f = pptp::fields(message);
        let at = |o: Option<usize>| o.and_then(|o| be16(data, o));
        return Some(What::PptpControl {
            sport,
            dport,
            message,
            call_id: at(f.and_then(|f| f.own)),
            peer_call_id: at(f.and_then(|f| f.peer)),
        });
    }
    Some(What::Tcp { sport, dport })
}

fn udp(l4: &[u8]) -> Option<What> {
    let (sport, dport) = (be16(l4, 0)?, be16(l4, 2)?);
    let data = l4.get(8..)?;
    let ports = |p: u16| sport == p || dport == p;
    if ports(l2tp::PORT)
        && let Ok(m) = l2tp::Message::new_checked_prefix(data)
    {
        let control = if m.is_control() { m.message_type() } else { None };
        return Some(What::L2tp { sport, dport, tunnel_id: m.tunnel_id(), session_id: m.session_id(), control });
    }
    if ports(ike::NAT_T_PORT) {
        if data == [0xff] {
            return Some(What::NatTKeepalive { sport, dport });
        }
        if data.len() >= 8 && be32(data, 0) == Some(0) {
            return ike_message(sport, dport, &data[4..]).or(Some(What::Udp { sport, dport }));
        }
        if let Ok(e) = esp::Packet::new_checked(data) {
            return Some(What::Esp { ports: Some((sport, dport)), spi: e.spi(), seq: e.seq() });
        }
    }
    if ports(ike::PORT)
        && let Some(w) = ike_message(sport, dport, data)
    {
        return Some(w);
    }
    Some(What::Udp { sport, dport })
}

fn ike_message(sport: u16, dport: u16, data: &[u8]) -> Option<What> {
    let m = ike::Message::new_checked(data).ok()?;
    Some(What::Ike { sport, dport, initiator_spi: m.initiator_spi(), responder_spi: m.responder_spi() })
}

impl Facts {
    /// The facts of a parsed capture.
    pub fn from_pcap(p: &Pcap) -> Facts {
        let mut f = Facts::default();
        for r in &p.records {
            match ipv4_of(p.linktype, &r.data).and_then(classify) {
                Some((src, dst, what)) => {
                    let packet = ipv4_of(p.linktype, &r.data).unwrap_or_default();
                    let (payload, header_checksum_ok) = (payload_len(packet), header_checksum_ok(packet));
                    f.packets.push(Seen { time: r.time, src, dst, what, payload, header_checksum_ok })
                }
                None => f.not_ipv4 += 1,
            }
        }
        f
    }

    /// The hosts that GRE packets carrying tunnel traffic for the inner
    /// address `inner_dst` were sent to.
    pub fn gre_carrying_to(&self, inner_dst: Ipv4Addr) -> BTreeSet<Ipv4Addr> {
        self.packets
            .iter()
            .filter_map(|s| match s.what {
                What::Gre { inner: Some((_, d)), .. } if d == inner_dst => Some(s.dst),
                _ => None,
            })
            .collect()
    }

    /// The Call IDs that PPTP Outgoing-Call-Requests from `src` carried.
    pub fn pptp_outgoing_calls(&self, src: Option<Ipv4Addr>) -> Vec<u16> {
        self.matching(src, None)
            .filter_map(|s| match s.what {
                What::PptpControl { message: pptp::OCRQ, call_id, .. } => call_id,
                _ => None,
            })
            .collect()
    }

    /// The SPIs of ESP (raw or in UDP) from `src` to `dst`.
    pub fn esp_spis(&self, src: Option<Ipv4Addr>, dst: Option<Ipv4Addr>) -> BTreeSet<u32> {
        self.matching(src, dst)
            .filter_map(|s| match s.what {
                What::Esp { spi, .. } => Some(spi),
                _ => None,
            })
            .collect()
    }

    /// How many packets from `src` to `dst` match `what`.
    pub fn count(&self, src: Option<Ipv4Addr>, dst: Option<Ipv4Addr>, what: impl Fn(&What) -> bool) -> usize {
        self.matching(src, dst).filter(|s| what(&s.what)).count()
    }

    fn matching(&self, src: Option<Ipv4Addr>, dst: Option<Ipv4Addr>) -> impl Iterator<Item = &Seen> {
        self.packets.iter().filter(move |s| src.is_none_or(|a| s.src == a) && dst.is_none_or(|a| s.dst == a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::tests::udp as udp_packet;
    use crate::wire::tcp;

    fn ip(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        ipv4::packet(src, dst, proto, l4)
    }

    const A: [u8; 4] = [192, 168, 1, 10];
    const B: [u8; 4] = [198, 51, 100, 2];

    #[test]
    fn vpn_packets_are_named_with_their_ids() {
        let inner = ip(ipv4::PROTO_ICMP, [10, 98, 0, 1], [10, 98, 0, 100], &[8, 0, 0, 0]);
        let mut ppp = vec![0xff, 0x03, 0x00, 0x21];
        ppp.extend(&inner);
        let g = gre::emit_pptp(7, Some(1), None, &ppp);
        let (_, _, w) = classify(&ip(ipv4::PROTO_GRE, A, B, &g)).expect("ipv4");
        let inner = Some((Ipv4Addr::new(10, 98, 0, 1), Ipv4Addr::new(10, 98, 0, 100)));
        assert_eq!(w, What::Gre { call_id: 7, inner });

        let esp = esp::emit(0xdead_beef, 3, &[9, 9]);
        let (_, _, w) = classify(&ip(ipv4::PROTO_ESP, A, B, &esp)).expect("ipv4");
        assert_eq!(w, What::Esp { ports: None, spi: 0xdead_beef, seq: 3 });

        let sccrq = l2tp::emit_control(0, 0, l2tp::SCCRQ, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, 5)]);
        let (_, _, w) = classify(&udp_packet(A, 1701, B, 1701, &sccrq)).expect("ipv4");
        assert_eq!(w, What::L2tp { sport: 1701, dport: 1701, tunnel_id: 0, session_id: 0, control: Some(l2tp::SCCRQ) });

        let mut nat_t = vec![0, 0, 0, 0];
        nat_t.extend(ike::emit(0x1122, 0x3344, &[]));
        let (_, _, w) = classify(&udp_packet(A, 4500, B, 4500, &nat_t)).expect("ipv4");
        assert_eq!(w, What::Ike { sport: 4500, dport: 4500, initiator_spi: 0x1122, responder_spi: 0x3344 });
        let (_, _, w) = classify(&udp_packet(A, 4500, B, 4500, &[0xff])).expect("ipv4");
        assert_eq!(w, What::NatTKeepalive { sport: 4500, dport: 4500 });
        let (_, _, w) = classify(&udp_packet(A, 4500, B, 4500, &esp)).expect("ipv4");
        assert_eq!(w, What::Esp { ports: Some((4500, 4500)), spi: 0xdead_beef, seq: 3 });
    }

    #[test]
    fn pptp_control_messages_give_their_call_ids() {
        let ocrq = pptp::emit(pptp::OCRQ, Some(0x0100), None);
        let seg = tcp::Header::new(40000, 1723, tcp::ACK).emit(&ocrq);
        let mut frame = vec![0u8; 12];
        frame.extend(ethernet::ETHERTYPE_IPV4.to_be_bytes());
        frame.extend(ip(ipv4::PROTO_TCP, A, B, &seg));
        let pcap = Pcap {
            linktype: LINKTYPE_ETHERNET,
            records: vec![super::super::pcap::Record { time: Duration::ZERO, orig_len: 0, data: frame }],
        };
        let f = Facts::from_pcap(&pcap);
        assert_eq!(f.pptp_outgoing_calls(Some(Ipv4Addr::from(A))), vec![0x0100]);
        assert_eq!(f.pptp_outgoing_calls(Some(Ipv4Addr::from(B))), Vec::<u16>::new());
    }

    #[test]
    fn truncated_and_strange_packets_are_other_never_a_panic() {
        for len in 0..40 {
            let p = ip(ipv4::PROTO_UDP, A, B, &[0x06, 0xa5, 0x06, 0xa5, 0, 40, 0, 0, 0xc8, 0x02, 0, 0x40]);
            let _ = classify(&p[..len.min(p.len())]);
        }
        let mut frag = ip(ipv4::PROTO_UDP, A, B, &[1, 2, 3]);
        frag[7] = 10;
        assert_eq!(classify(&frag).map(|c| c.2), Some(What::Fragment { proto: ipv4::PROTO_UDP }));
    }
}
