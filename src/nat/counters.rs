//! What the NAT did, counted: packets per protocol and direction, and drops
//! per named reason.

use std::fmt;

use serde::Serialize;

use super::profile::Protocol;
use crate::wire::WireError;

/// Why a packet was dropped. Each reason has a stable name for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The IPv4 header is not valid.
    Ipv4(WireError),
    /// The IPv4 header checksum is wrong.
    Ipv4Checksum,
    /// An IPv4 option is malformed.
    Ipv4BadOption,
    /// A source-route option (LSRR/SSRR), which routers refuse (RFC 7126).
    Ipv4SourceRoute,
    /// The TCP header is not valid.
    Tcp(WireError),
    /// The UDP header is not valid.
    Udp(WireError),
    /// The ICMP header is not valid.
    Icmp(WireError),
    /// An echo request to the NAT whose ICMP checksum is wrong.
    IcmpChecksum,
    /// An ICMP error quotes a packet the NAT cannot read or did not send.
    IcmpErrorUnmatched,
    /// An ICMP type that is neither a query nor an error (redirects,
    /// router advertisements…), which a NAT does not pass.
    IcmpUnsupported,
    /// The TTL ran out here.
    TtlExceeded,
    /// Nothing maps this inbound packet to a LAN host.
    Unsolicited,
    /// A mapping exists but its filter refuses this remote endpoint.
    Filtered,
    /// The mapping table is full (`max_mappings`).
    TableFull,
    /// No public port (or ICMP identifier) is free.
    PortsExhausted,
    /// Another LAN host already talks this address-only protocol to the
    /// same server and keeps it.
    RemoteTaken,
    /// The profile blocks the protocol.
    Blocked,
    /// The destination is on the side the packet came from, or nowhere.
    NotRouted,
    /// Addressed to the NAT itself and not something it answers.
    ToRouter,
    /// A fragment whose datagram's first fragment never came.
    FragmentUnmatched,
    /// Too many fragments waiting for their first fragment.
    FragmentQueueFull,
    /// A fragment, dropped because the profile drops every fragment
    /// (`drop_fragments`).
    FragmentDropped,
    /// Removed by the profile's impairment (loss).
    ImpairedLoss,
    /// The first packet of a new VPN flow from the LAN
    /// (`drop_first_vpn_packet`).
    FirstPacketDropped,
    /// Not an IPv4 or ARP frame (IPv6, VLAN tags, other EtherTypes).
    NotIpv4,
    /// An Ethernet frame shorter than its header.
    Ethernet,
    /// An ARP packet that is not Ethernet/IPv4 or is truncated.
    Arp,
    /// No ARP answer for the next hop.
    NoNeighbour,
    /// The interface's transmit queue was full (or refused the frame).
    TxQueueFull,
    /// PPTP traffic while the profile turns PPTP passthrough off.
    PptpOff,
    /// A PPTP control message that is not one (length, cookie, type).
    PptpMalformed,
    /// A PPTP control segment after a gap in the stream (TCP sends the
    /// missing bytes again; this one follows them).
    PptpOutOfOrder,
    /// A Call ID whose first byte left in an earlier segment could not be
    /// rewritten (the control-port Call ID choice only).
    PptpSplitField,
    /// A PPTP control segment in IP fragments: the ALG would read only the
    /// first, and a Call ID in a later one would cross unrewritten.
    PptpFragmented,
    /// Enhanced GRE from the WAN with a Call ID no live call of that server
    /// has (or from a host that is not the server).
    PptpGreUnmatched,
    /// L2TP traffic while the profile turns L2TP passthrough off.
    L2tpOff,
    /// Not an L2TPv2 message (header, length or AVPs).
    L2tpMalformed,
    /// L2TP from the WAN naming a tunnel no client of that server has.
    L2tpUnknownTunnel,
    /// A hidden Assigned Tunnel ID AVP, which the NAT cannot read.
    L2tpHiddenTunnelId,
    /// IKE or ESP while the profile turns IPsec passthrough off.
    IpsecOff,
    /// UDP 4500 while the profile turns NAT traversal off.
    NatTOff,
    /// Not an IKE message.
    IkeMalformed,
    /// IKE from the WAN for an initiator SPI no client used with that server.
    IkeUnknownSpi,
    /// A second client used an initiator SPI another client already uses
    /// with the same server.
    IkeSpiTaken,
    /// ESP shorter than its SPI and sequence number.
    EspMalformed,
    /// ESP from the WAN with an SPI no client has and no client waiting.
    EspUnknownSpi,
    /// ESP from a LAN host when the ESP tracker's table is full.
    EspTrackerFull,
    /// ESP from a LAN host off the prefixes the ESP tracker serves.
    EspTrackerLan,
    /// A source address that cannot be on the side the packet came from:
    /// off the LAN prefix from the LAN; the LAN prefix or the NAT's own
    /// address from the WAN.
    SpoofedSource,
    /// An echo request to the NAT beyond its ICMP rate.
    IcmpRateLimited,
    /// A TCP RST or FIN outside the connection's window: not from the
    /// peer, which knows the sequence numbers.
    TcpOutOfWindow,
    /// The mapping keeps as many remote sessions as the profile allows.
    RemotesFull,
    /// The table holds as many sessions as the profile allows.
    SessionsFull,
    /// The LAN host holds its whole share of a table.
    HostQuota,
    /// The PPTP ALG follows as many control connections as it may.
    PptpControlsFull,
    /// No public Call ID is free for a new call (or the calls table is full).
    PptpCallsFull,
    /// No public Tunnel ID is free for a new tunnel (or the table is full).
    L2tpTunnelsFull,
    /// The IPsec ALG holds as many SAs as it may.
    IpsecTableFull,
    /// Too many fragmented datagrams followed at once.
    FragmentTableFull,
    /// A bound of the neighbour table (`LinkLimits` in `link`) was
    /// reached: too many neighbours known or being resolved, or too many
    /// frames waiting for ARP.
    NeighbourTableFull,
}

impl DropReason {
    /// The reason's stable name.
    pub fn name(&self) -> String {
        let w = |layer: &str, e: &WireError| {
            let kind = match e {
                WireError::Truncated => "truncated",
                WireError::BadVersion => "bad-version",
                WireError::BadHeaderLength => "bad-header-length",
                WireError::BadLength => "bad-length",
            };
            format!("{layer}-{kind}")
        };
        match self {
            DropReason::Ipv4(e) => w("ipv4", e),
            DropReason::Ipv4Checksum => "ipv4-bad-checksum".into(),
            DropReason::Ipv4BadOption => "ipv4-bad-option".into(),
            DropReason::Ipv4SourceRoute => "ipv4-source-route".into(),
            DropReason::Tcp(e) => w("tcp", e),
            DropReason::Udp(e) => w("udp", e),
            DropReason::Icmp(e) => w("icmp", e),
            DropReason::IcmpChecksum => "icmp-bad-checksum".into(),
            DropReason::IcmpErrorUnmatched => "icmp-error-unmatched".into(),
            DropReason::IcmpUnsupported => "icmp-unsupported".into(),
            DropReason::TtlExceeded => "ttl-exceeded".into(),
            DropReason::Unsolicited => "unsolicited".into(),
            DropReason::Filtered => "filtered".into(),
            DropReason::TableFull => "table-full".into(),
            DropReason::PortsExhausted => "ports-exhausted".into(),
            DropReason::RemoteTaken => "remote-taken".into(),
            DropReason::Blocked => "blocked-by-profile".into(),
            DropReason::NotRouted => "not-routed".into(),
            DropReason::ToRouter => "to-router".into(),
            DropReason::FragmentUnmatched => "fragment-unmatched".into(),
            DropReason::FragmentQueueFull => "fragment-queue-full".into(),
            DropReason::FragmentDropped => "fragment-dropped".into(),
            DropReason::ImpairedLoss => "impaired-loss".into(),
            DropReason::FirstPacketDropped => "first-packet-dropped".into(),
            DropReason::NotIpv4 => "not-ipv4".into(),
            DropReason::Ethernet => "ethernet-truncated".into(),
            DropReason::Arp => "arp-malformed".into(),
            DropReason::NoNeighbour => "no-neighbour".into(),
            DropReason::TxQueueFull => "tx-queue-full".into(),
            DropReason::PptpOff => "pptp-off".into(),
            DropReason::PptpMalformed => "pptp-control-malformed".into(),
            DropReason::PptpOutOfOrder => "pptp-control-out-of-order".into(),
            DropReason::PptpSplitField => "pptp-call-id-split".into(),
            DropReason::PptpFragmented => "pptp-control-fragmented".into(),
            DropReason::PptpGreUnmatched => "pptp-gre-unmatched".into(),
            DropReason::L2tpOff => "l2tp-off".into(),
            DropReason::L2tpMalformed => "l2tp-malformed".into(),
            DropReason::L2tpUnknownTunnel => "l2tp-unknown-tunnel".into(),
            DropReason::L2tpHiddenTunnelId => "l2tp-hidden-tunnel-id".into(),
            DropReason::IpsecOff => "ipsec-off".into(),
            DropReason::NatTOff => "nat-t-off".into(),
            DropReason::IkeMalformed => "ike-malformed".into(),
            DropReason::IkeUnknownSpi => "ike-unknown-spi".into(),
            DropReason::IkeSpiTaken => "ike-spi-taken".into(),
            DropReason::EspMalformed => "esp-malformed".into(),
            DropReason::EspUnknownSpi => "esp-unknown-spi".into(),
            DropReason::EspTrackerFull => "esp-tracker-full".into(),
            DropReason::EspTrackerLan => "esp-tracker-lan".into(),
            DropReason::SpoofedSource => "spoofed-source".into(),
            DropReason::IcmpRateLimited => "icmp-rate-limited".into(),
            DropReason::TcpOutOfWindow => "tcp-out-of-window".into(),
            DropReason::RemotesFull => "mapping-remotes-full".into(),
            DropReason::SessionsFull => "sessions-full".into(),
            DropReason::HostQuota => "host-quota".into(),
            DropReason::PptpControlsFull => "pptp-controls-full".into(),
            DropReason::PptpCallsFull => "pptp-calls-full".into(),
            DropReason::L2tpTunnelsFull => "l2tp-tunnels-full".into(),
            DropReason::IpsecTableFull => "ipsec-table-full".into(),
            DropReason::FragmentTableFull => "fragment-table-full".into(),
            DropReason::NeighbourTableFull => "neighbour-table-full".into(),
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Packet counts of one protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProtocolCounts {
    /// Translated LAN to WAN.
    pub outbound: u64,
    /// Translated WAN to LAN.
    pub inbound: u64,
    /// Turned around from LAN to LAN (hairpinning).
    pub hairpinned: u64,
    /// Dropped, whatever the reason.
    pub dropped: u64,
}

/// All the counters of a NAT.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    protocols: [ProtocolCounts; 6],
    drops: Vec<(DropReason, u64)>,
    /// Mappings created.
    pub mappings_created: u64,
    /// Mappings expired.
    pub mappings_expired: u64,
    /// ICMP messages the NAT answered or generated.
    pub icmp_generated: u64,
    /// Inbound ESP SPIs bound to a client while several clients waited
    /// for the same server (see `alg::ipsec`).
    pub esp_ambiguous_bindings: u64,
    /// L2TP Tunnel IDs rewritten because two clients of one server
    /// assigned the same one.
    pub l2tp_tunnel_ids_rewritten: u64,
    /// ICMP errors (time exceeded) the NAT did not send: over its rate.
    pub icmp_errors_suppressed: u64,
}

fn slot(p: Protocol) -> usize {
    Protocol::ALL.iter().position(|x| *x == p).unwrap_or(5)
}

impl Counters {
    /// Counts a drop.
    pub fn drop(&mut self, protocol: Option<Protocol>, reason: DropReason) {
        if let Some(p) = protocol {
            self.protocols[slot(p)].dropped += 1;
        }
        match self.drops.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.drops.push((reason, 1)),
        }
    }

    /// The counts of one protocol.
    pub fn protocol(&self, p: Protocol) -> ProtocolCounts {
        self.protocols[slot(p)]
    }

    /// The counts of one protocol, mutable.
    pub fn protocol_mut(&mut self, p: Protocol) -> &mut ProtocolCounts {
        &mut self.protocols[slot(p)]
    }

    /// How many packets were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }

    /// Every drop reason seen, with its count, by name.
    pub fn drops(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.drops.iter().map(|(r, n)| (r.name(), *n)).collect();
        v.sort();
        v
    }

    /// Per-protocol counts by name.
    pub fn protocols(&self) -> Vec<(&'static str, ProtocolCounts)> {
        Protocol::ALL.iter().map(|p| (p.name(), self.protocols[slot(*p)])).collect()
    }
}
