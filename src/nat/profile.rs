//! A NAT's behaviour profile: RFC 4787 mapping and filtering, port
//! preservation and range, timeouts, table size, blocked protocols, and
//! impairments (loss, delay, reordering, duplication) per direction, since
//! the kernel here has no netem. Loadable from TOML; named presets.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// RFC 4787 §4.1 (mapping) and §5 (filtering) behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// One mapping (or filter) for every remote endpoint.
    EndpointIndependent,
    /// Per remote address.
    AddressDependent,
    /// Per remote address and port.
    AddressAndPortDependent,
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        })
    }
}

/// What the NAT does for PPTP (TCP 1723 and enhanced GRE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PptpMode {
    /// TCP 1723 and GRE are dropped (counted).
    Off,
    /// TCP 1723 is plain NAPT; GRE is translated by address only and goes
    /// back to the last LAN host that sent GRE to that server.
    Naive,
    /// A Call ID ALG: the control stream is parsed, Call IDs are rewritten
    /// so that every call to a server is unique, GRE comes back by Call ID.
    CallId,
}

/// How the PPTP ALG picks the public Call ID of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallIdChoice {
    /// Unique per server and public address, the LAN host's own when free.
    Unique,
    /// The control connection's public TCP port, as Linux's nf_nat_pptp
    /// does: one call per control connection.
    ControlPort,
}

/// What the NAT does for L2TP (UDP 1701).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum L2tpMode {
    /// UDP 1701 is dropped (counted).
    Off,
    /// Plain NAPT: a second client sourcing from 1701 gets another port.
    Naive,
    /// Clients keep public port 1701; inbound is told apart by the Tunnel
    /// ID each client assigned; the LNS may answer from another port.
    TunnelId,
}

/// What the NAT does for IPsec (IKE on 500 and 4500, ESP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpsecMode {
    /// UDP 500, UDP 4500 and ESP are dropped (counted).
    Off,
    /// IKE is NAPT'd; raw ESP goes by address (one client per server).
    Naive,
    /// IKE keeps port 500 and is told apart by the initiator's SPI; raw ESP
    /// is told apart by SPI, learned as servers first answer.
    Spi,
    /// IKE is NAPT'd; raw ESP goes through a router SoC vendor's ESP
    /// tracker, set up by `[esp_tracker]`: a server's first ESP goes to the
    /// client that has waited longest for that server.
    Tracker,
}

/// The ESP tracker that router SoC vendors ship (`nf_conntrack_proto_esp`
/// ports), for `ipsec = "tracker"`. A client's ESP to a server makes an
/// entry with the client's outbound SPI; ESP from that server with an SPI
/// no entry has is bound to the oldest of its entries no server answered
/// yet, for good. Its quirks are fields, so that each field failure can be
/// shown alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EspTracker {
    /// Entries in its table, for all clients; a new client's ESP past them
    /// is dropped (`esp-tracker-full`). Vendor tables hold 8 to 64.
    pub entries: usize,
    /// Seconds an entry that no server answered lives after its client's
    /// last ESP (vendors: 30 to 60). Answered entries live `timeouts.other`.
    pub unreplied_timeout: u64,
    /// The LAN prefixes whose hosts get ESP passthrough; other hosts' ESP
    /// is dropped (`esp-tracker-lan`). Empty: every LAN host.
    pub lans: Vec<ipnet::Ipv4Net>,
    /// A client's ESP with an SPI it has not sent before makes a new entry,
    /// so a rekey's new SPIs are learned. `false`: a client's ESP to a
    /// server matches its entry by addresses alone, and the entry keeps
    /// the server's old SPI, so after a rekey the server's ESP is dropped.
    pub follows_rekey: bool,
}

impl Default for EspTracker {
    fn default() -> EspTracker {
        EspTracker { entries: 64, unreplied_timeout: 60, lans: Vec::new(), follows_rekey: true }
    }
}

/// The most entries an ESP tracker may have (it is searched entry by entry,
/// as vendors' are).
pub const MAX_ESP_TRACKER_ENTRIES: usize = 1024;

/// Who gets an address-only protocol's packets when two LAN hosts talk it
/// to the same server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharedRemote {
    /// The last host to send (cheap firmware).
    NewestWins,
    /// The first host keeps it until it expires; the second host's packets
    /// are dropped (Linux conntrack without a helper).
    OldestKeeps,
}

/// A protocol the profile can block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
    /// GRE (IP protocol 47).
    Gre,
    /// ESP (IP protocol 50).
    Esp,
    /// Any other IP protocol.
    Other,
}

impl Protocol {
    /// The protocol of an IP protocol number.
    pub fn of(number: u8) -> Protocol {
        match number {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            47 => Protocol::Gre,
            50 => Protocol::Esp,
            _ => Protocol::Other,
        }
    }

    /// Every protocol, in counter order.
    pub const ALL: [Protocol; 6] =
        [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Gre, Protocol::Esp, Protocol::Other];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Gre => "gre",
            Protocol::Esp => "esp",
            Protocol::Other => "other",
        }
    }
}

/// Idle timeouts in seconds, 1 s to a year (short values let scenarios
/// watch expiry). The ALGs' state follows them too: PPTP calls `other`
/// and their control connections `tcp_established`, L2TP tunnels `udp`,
/// IKE SAs and ESP SPIs `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// UDP mapping (RFC 4787 REQ-5: at least 120 s; 300 recommended).
    pub udp: u64,
    /// Established TCP connection (RFC 5382 REQ-5: at least 2 h 4 min).
    pub tcp_established: u64,
    /// TCP connection opening or closing (RFC 5382: 4 min).
    pub tcp_transitory: u64,
    /// ICMP query mapping (RFC 5508 REQ-1: at least 60 s).
    pub icmp: u64,
    /// GRE, ESP and other protocols, mapped by address.
    pub other: u64,
    /// Fragments waiting for the first fragment of their datagram.
    pub fragment: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { udp: 300, tcp_established: 7440, tcp_transitory: 240, icmp: 60, other: 300, fragment: 5 }
    }
}

impl Timeouts {
    /// A timeout in seconds as a duration.
    pub fn secs(v: u64) -> Duration {
        Duration::from_secs(v)
    }
}

/// The longest timeout a profile may set: a year, in seconds.
pub const MAX_TIMEOUT_S: u64 = 365 * 24 * 3600;

/// How a NAT picks a public port when it does not keep the internal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortAllocation {
    /// The next free port after the last one handed out: a NAT that
    /// restarts hands the same ports out again.
    #[default]
    Sequential,
    /// A random free port for every new mapping whose internal port is not
    /// kept (with `port_preservation = false`, as Linux with
    /// `--random-fully`): a flow whose mapping was forgotten gets a new
    /// public port.
    Random,
}

/// The public ports a NAT may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    /// Lowest port.
    pub low: u16,
    /// Highest port.
    pub high: u16,
}

impl Default for PortRange {
    fn default() -> PortRange {
        PortRange { low: 1024, high: 65535 }
    }
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// How many ports the range holds.
    pub fn len(&self) -> u32 {
        u32::from(self.high) - u32::from(self.low) + 1
    }

    /// Whether the range is empty (never, once checked).
    pub fn is_empty(&self) -> bool {
        self.high < self.low
    }
}

/// Impairments of one direction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Impairment {
    /// Percent of packets dropped.
    pub loss_percent: f64,
    /// Fixed delay in milliseconds.
    pub delay_ms: u64,
    /// Random extra delay, uniform in 0..=jitter, in milliseconds.
    pub jitter_ms: u64,
    /// Percent of packets held back behind the next one.
    pub reorder_percent: f64,
    /// Percent of packets sent twice.
    pub duplicate_percent: f64,
}

impl Impairment {
    /// Whether this direction is impaired at all.
    pub fn is_none(&self) -> bool {
        *self == Impairment::default()
    }
}

/// Impairments per direction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Impairments {
    /// LAN to WAN.
    pub outbound: Impairment,
    /// WAN to LAN.
    pub inbound: Impairment,
    /// Seed of the random choices, so a run can be repeated.
    pub seed: u64,
}

/// Bounds on what the NAT keeps. Every table has one, and a LAN host may
/// fill only its share of the shared ones. Reaching a bound drops the new
/// packet and counts it; state that is already there is never evicted to make
/// room, so a flood cannot take a live tunnel's state away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Mappings one LAN host may hold (of `max_mappings`).
    pub mappings_per_host: usize,
    /// Remote endpoints one mapping keeps a session with (filtering and
    /// TCP state). A full-cone mapping that hears from more is still
    /// reached, without a session for the newcomer.
    pub remotes_per_mapping: usize,
    /// Sessions (mapping and remote endpoint pairs) in the whole table.
    pub sessions: usize,
    /// PPTP control connections the ALG follows.
    pub pptp_controls: usize,
    /// PPTP control connections one LAN host may have.
    pub pptp_controls_per_host: usize,
    /// PPTP calls.
    pub pptp_calls: usize,
    /// PPTP calls one LAN host may have.
    pub pptp_calls_per_host: usize,
    /// L2TP tunnels.
    pub l2tp_tunnels: usize,
    /// L2TP tunnels one LAN host may have.
    pub l2tp_tunnels_per_host: usize,
    /// IPsec state: IKE SAs on port 500 and ESP SPIs, both ways.
    pub ipsec_sas: usize,
    /// IPsec state one LAN host may have.
    pub ipsec_sas_per_host: usize,
    /// Fragmented datagrams whose first fragment was seen (later ones
    /// follow it).
    pub fragment_datagrams: usize,
    /// The same, per sender.
    pub fragment_datagrams_per_source: usize,
    /// Fragments that may wait for their first one.
    pub fragments_waiting: usize,
    /// VPN flows a `drop_first_vpn_packet` router remembers (past it a new
    /// flow's first packet passes).
    pub vpn_flows: usize,
    /// The same, per LAN host.
    pub vpn_flows_per_host: usize,
    /// ARP neighbours remembered, per side.
    pub neighbours: usize,
    /// ICMP messages the NAT makes itself (echo replies, time exceeded)
    /// per second, per side.
    pub icmp_per_second: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            mappings_per_host: 16384,
            remotes_per_mapping: 1024,
            sessions: 262_144,
            pptp_controls: 4096,
            pptp_controls_per_host: 64,
            pptp_calls: 4096,
            pptp_calls_per_host: 256,
            l2tp_tunnels: 4096,
            l2tp_tunnels_per_host: 64,
            ipsec_sas: 16384,
            ipsec_sas_per_host: 512,
            fragment_datagrams: 4096,
            fragment_datagrams_per_source: 256,
            fragments_waiting: 256,
            vpn_flows: 16384,
            vpn_flows_per_host: 256,
            neighbours: 1024,
            icmp_per_second: 100,
        }
    }
}

impl Limits {
    /// Each bound by its TOML name, for checks and messages.
    fn named(&self) -> [(&'static str, usize); 18] {
        [
            ("mappings_per_host", self.mappings_per_host),
            ("remotes_per_mapping", self.remotes_per_mapping),
            ("sessions", self.sessions),
            ("pptp_controls", self.pptp_controls),
            ("pptp_controls_per_host", self.pptp_controls_per_host),
            ("pptp_calls", self.pptp_calls),
            ("pptp_calls_per_host", self.pptp_calls_per_host),
            ("l2tp_tunnels", self.l2tp_tunnels),
            ("l2tp_tunnels_per_host", self.l2tp_tunnels_per_host),
            ("ipsec_sas", self.ipsec_sas),
            ("ipsec_sas_per_host", self.ipsec_sas_per_host),
            ("fragment_datagrams", self.fragment_datagrams),
            ("fragment_datagrams_per_source", self.fragment_datagrams_per_source),
            ("fragments_waiting", self.fragments_waiting),
            ("vpn_flows", self.vpn_flows),
            ("vpn_flows_per_host", self.vpn_flows_per_host),
            ("neighbours", self.neighbours),
            ("icmp_per_second", self.icmp_per_second as usize),
        ]
    }
}

/// A whole profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// A name for reports.
    pub name: String,
    /// Mapping behaviour (RFC 4787 §4.1).
    pub mapping: Behaviour,
    /// Filtering behaviour (RFC 4787 §5).
    pub filtering: Behaviour,
    /// Keep the internal source port as the public port when it is free.
    pub port_preservation: bool,
    /// Public ports to hand out.
    pub port_range: PortRange,
    /// How a public port is picked when the internal one is not kept.
    pub port_allocation: PortAllocation,
    /// Let LAN hosts reach each other through the public address (RFC 4787 REQ-9).
    pub hairpinning: bool,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Most mappings at once; new flows past it are dropped and counted.
    pub max_mappings: usize,
    /// Bounds on every other table, and per-LAN-host shares.
    pub limits: Limits,
    /// Protocols dropped in both directions.
    pub blocked: BTreeSet<Protocol>,
    /// Drop every IP fragment, both ways (a router that never reassembles
    /// nor forwards fragments).
    pub drop_fragments: bool,
    /// Send translated GRE with the IPv4 header checksum it came with
    /// (firmware that rewrites the addresses and not the checksum): every
    /// host drops it.
    pub bad_gre_checksum: bool,
    /// Drop the first packet of every new VPN flow from the LAN (TCP to
    /// 1723, GRE, ESP, UDP to 500, 4500 or 1701): the VPN comes up on
    /// retransmissions.
    pub drop_first_vpn_packet: bool,
    /// Loss, delay, reordering and duplication.
    pub impair: Impairments,
    /// PPTP passthrough.
    pub pptp: PptpMode,
    /// How the PPTP ALG picks public Call IDs.
    pub pptp_call_ids: CallIdChoice,
    /// L2TP passthrough.
    pub l2tp: L2tpMode,
    /// IPsec passthrough.
    pub ipsec: IpsecMode,
    /// The ESP tracker, with `ipsec = "tracker"`.
    pub esp_tracker: EspTracker,
    /// NAT traversal (IKE and ESP on UDP 4500); `false` drops UDP 4500.
    pub nat_t: bool,
    /// GRE, ESP and other protocols without ports: who gets a server's
    /// packets when two LAN hosts talk to it.
    pub shared_remote: SharedRemote,
}

impl Default for Profile {
    fn default() -> Profile {
        Profile {
            name: "default".into(),
            mapping: Behaviour::EndpointIndependent,
            filtering: Behaviour::AddressAndPortDependent,
            port_preservation: true,
            port_range: PortRange::default(),
            port_allocation: PortAllocation::Sequential,
            hairpinning: true,
            timeouts: Timeouts::default(),
            max_mappings: 65536,
            limits: Limits::default(),
            blocked: BTreeSet::new(),
            drop_fragments: false,
            bad_gre_checksum: false,
            drop_first_vpn_packet: false,
            impair: Impairments::default(),
            pptp: PptpMode::CallId,
            pptp_call_ids: CallIdChoice::Unique,
            l2tp: L2tpMode::TunnelId,
            ipsec: IpsecMode::Spi,
            esp_tracker: EspTracker::default(),
            nat_t: true,
            shared_remote: SharedRemote::NewestWins,
        }
    }
}

/// The names of the presets.
pub const PRESETS: &[&str] = &[
    "default",
    "full-cone",
    "restricted-cone",
    "port-restricted-cone",
    "symmetric",
    "passthrough-off",
    "naive",
    "full",
    "linux-like",
    "port-randomising",
    "fragment-dropping",
    "soc-esp-tracker",
    "bad-gre-checksum",
    "first-packet-dropping",
];

impl Profile {
    /// A named preset. Behaviour presets: `default` (endpoint-independent
    /// mapping, address-and-port-dependent filtering, port preservation,
    /// hairpinning, full passthrough: what RFC 4787 asks with the safest
    /// filtering), `full-cone`, `restricted-cone`, `port-restricted-cone`,
    /// `symmetric`. Passthrough presets, on the default behaviour:
    /// `passthrough-off`, `naive` (what cheap firmware does), `full` (every
    /// ALG), `linux-like` (what the Linux kernel does: a PPTP ALG with one
    /// call per control connection, nothing for L2TP or ESP). Field-failure
    /// presets, on `full`: `port-randomising` (no port preservation and a
    /// random public port per mapping: a flow forgotten in a reboot or flush
    /// comes back from a new public port), `fragment-dropping` (every IP
    /// fragment dropped, both ways), `soc-esp-tracker` (raw ESP through a
    /// SoC vendor's ESP tracker with every quirk: 8 entries, a 60 s
    /// unreplied timeout, 192.168.0.0/16 LANs only, rekeys not followed),
    /// `bad-gre-checksum` (translated GRE keeps the IPv4 header checksum it
    /// came with), `first-packet-dropping` (the first packet of every new
    /// VPN flow from the LAN dropped).
    pub fn preset(name: &str) -> Option<Profile> {
        use Behaviour::*;
        let base = Profile { name: name.to_string(), ..Profile::default() };
        let (mapping, filtering) = match name {
            "default" | "port-restricted-cone" | "full" => (EndpointIndependent, AddressAndPortDependent),
            "full-cone" => (EndpointIndependent, EndpointIndependent),
            "restricted-cone" => (EndpointIndependent, AddressDependent),
            "symmetric" => (AddressAndPortDependent, AddressAndPortDependent),
            "passthrough-off" => {
                return Some(Profile {
                    pptp: PptpMode::Off,
                    l2tp: L2tpMode::Off,
                    ipsec: IpsecMode::Off,
                    nat_t: false,
                    ..base
                });
            }
            "naive" => {
                return Some(Profile { pptp: PptpMode::Naive, l2tp: L2tpMode::Naive, ipsec: IpsecMode::Naive, ..base });
            }
            "linux-like" => {
                return Some(Profile {
                    pptp: PptpMode::CallId,
                    pptp_call_ids: CallIdChoice::ControlPort,
                    l2tp: L2tpMode::Naive,
                    ipsec: IpsecMode::Naive,
                    shared_remote: SharedRemote::OldestKeeps,
                    ..base
                });
            }
            "fragment-dropping" => return Some(Profile { drop_fragments: true, ..base }),
            "bad-gre-checksum" => return Some(Profile { bad_gre_checksum: true, ..base }),
            "first-packet-dropping" => return Some(Profile { drop_first_vpn_packet: true, ..base }),
            "soc-esp-tracker" => {
                let esp_tracker = EspTracker {
                    entries: 8,
                    unreplied_timeout: 60,
                    lans: vec![ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(192, 168, 0, 0), 16).ok()?],
                    follows_rekey: false,
                };
                return Some(Profile { ipsec: IpsecMode::Tracker, esp_tracker, ..base });
            }
            "port-randomising" => {
                return Some(Profile { port_preservation: false, port_allocation: PortAllocation::Random, ..base });
            }
            _ => return None,
        };
        Some(Profile { mapping, filtering, ..base })
    }

    /// Reads a profile from TOML text and checks it.
    pub fn from_toml(text: &str) -> Result<Profile, String> {
        let p: Profile = toml::from_str(text).map_err(|e| e.to_string())?;
        p.check()?;
        Ok(p)
    }

    /// A preset name or a TOML file.
    pub fn load(name_or_path: &str) -> Result<Profile, String> {
        if let Some(p) = Profile::preset(name_or_path) {
            return Ok(p);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(format!("profile '{name_or_path}' is neither a preset ({}) nor a file", PRESETS.join(", ")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
        Profile::from_toml(&text).map_err(|e| format!("profile {}: {e}", path.display()))
    }

    /// Checks values that serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.port_range.is_empty() || self.port_range.low == 0 {
            return Err(format!(
                "port_range {}..{} must be a non-empty range of non-zero ports",
                self.port_range.low, self.port_range.high
            ));
        }
        if self.max_mappings == 0 {
            return Err("max_mappings must be at least 1".into());
        }
        if let Some((name, _)) = self.limits.named().into_iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits.{name} must be at least 1"));
        }
        let t = &self.timeouts;
        if [t.udp, t.tcp_established, t.tcp_transitory, t.icmp, t.other, t.fragment].contains(&0) {
            return Err("timeouts must be at least 1 second".into());
        }
        if [t.udp, t.tcp_established, t.tcp_transitory, t.icmp, t.other, t.fragment].iter().any(|v| *v > MAX_TIMEOUT_S)
        {
            return Err(format!("timeouts must be at most {MAX_TIMEOUT_S} seconds (a year)"));
        }
        let e = &self.esp_tracker;
        if !(1..=MAX_ESP_TRACKER_ENTRIES).contains(&e.entries) {
            return Err(format!("esp_tracker.entries = {} must be 1 to {MAX_ESP_TRACKER_ENTRIES}", e.entries));
        }
        if !(1..=MAX_TIMEOUT_S).contains(&e.unreplied_timeout) {
            return Err(format!(
                "esp_tracker.unreplied_timeout = {} must be 1 to {MAX_TIMEOUT_S} seconds",
                e.unreplied_timeout
            ));
        }
        for (dir, i) in [("outbound", &self.impair.outbound), ("inbound", &self.impair.inbound)] {
            for (what, v) in [
                ("loss_percent", i.loss_percent),
                ("reorder_percent", i.reorder_percent),
                ("duplicate_percent", i.duplicate_percent),
            ] {
                if !(0.0..=100.0).contains(&v) {
                    return Err(format!("impair.{dir}.{what} = {v} is not a percentage"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_differ_where_they_should() {
        for name in PRESETS {
            let p = Profile::preset(name).expect("preset exists");
            p.check().expect("presets are valid");
        }
        let sym = Profile::preset("symmetric").expect("symmetric");
        let linux = Profile::preset("linux-like").expect("linux-like");
        assert_eq!(
            (linux.pptp, linux.pptp_call_ids, linux.l2tp),
            (PptpMode::CallId, CallIdChoice::ControlPort, L2tpMode::Naive)
        );
        let off = Profile::preset("passthrough-off").expect("off");
        assert!(off.pptp == PptpMode::Off && off.ipsec == IpsecMode::Off && !off.nat_t);
        let full = Profile::preset("full").expect("full");
        assert_eq!((full.pptp, full.l2tp, full.ipsec), (PptpMode::CallId, L2tpMode::TunnelId, IpsecMode::Spi));
        assert_eq!(sym.mapping, Behaviour::AddressAndPortDependent);
        assert_eq!(Profile::preset("full-cone").expect("full cone").filtering, Behaviour::EndpointIndependent);
        assert!(Profile::preset("nope").is_none());
        let random = Profile::preset("port-randomising").expect("port-randomising");
        assert!(!random.port_preservation && random.port_allocation == PortAllocation::Random);
        assert_eq!(random.ipsec, IpsecMode::Spi, "field-failure presets build on full");
        assert!(Profile::preset("fragment-dropping").expect("fragment-dropping").drop_fragments);
        let soc = Profile::preset("soc-esp-tracker").expect("soc-esp-tracker");
        assert_eq!((soc.ipsec, soc.esp_tracker.entries, soc.esp_tracker.follows_rekey), (IpsecMode::Tracker, 8, false));
        assert_eq!(soc.esp_tracker.lans.len(), 1);
        assert!(Profile::preset("bad-gre-checksum").expect("bad-gre-checksum").bad_gre_checksum);
        assert!(Profile::preset("first-packet-dropping").expect("first-packet-dropping").drop_first_vpn_packet);
        for name in PRESETS {
            assert!(Profile::preset(name).is_some(), "{name} is listed but not made");
        }
    }

    #[test]
    fn the_readme_example_profile_loads() {
        let readme = include_str!("../../README.md");
        let start = readme.find("name = \"lossy symmetric\"").expect("the README has the example");
        let text = &readme[start..];
        let text = &text[..text.find("```").expect("the example ends")];
        let p = Profile::from_toml(text).expect("the README's profile is valid");
        assert_eq!(p.mapping, Behaviour::AddressAndPortDependent);
        assert_eq!(p.impair.outbound.delay_ms, 20);
    }

    #[test]
    fn the_readme_lists_the_default_limits() {
        let readme = include_str!("../../README.md");
        let start = readme.find("[limits]                    # the defaults").expect("the README lists the limits");
        let text = &readme[start..];
        let text = &text[..text.find("```").expect("the block ends")];
        let p = Profile::from_toml(text).expect("the README's limits are valid");
        assert_eq!(p.limits, Limits::default());
        assert_eq!(text.lines().filter(|l| l.contains('=')).count(), Limits::default().named().len());
        let zero = Profile::from_toml("[limits]\nsessions = 0\n").expect_err("zero");
        assert!(zero.contains("limits.sessions"), "{zero}");
    }

    #[test]
    fn toml_profiles_are_checked() {
        let p = Profile::from_toml(
            r#"
            name = "short"
            mapping = "address-dependent"
            port_preservation = false
            port_range = { low = 20000, high = 20009 }
            blocked = ["gre", "esp"]
            pptp = "naive"
            l2tp = "off"
            ipsec = "spi"
            nat_t = false
            [timeouts]
            udp = 5
            [impair.outbound]
            loss_percent = 10.0
            delay_ms = 20
        "#,
        )
        .expect("valid profile");
        assert_eq!(p.mapping, Behaviour::AddressDependent);
        assert_eq!(p.timeouts.udp, 5);
        assert_eq!(p.timeouts.icmp, 60, "unset fields keep their defaults");
        assert!(p.blocked.contains(&Protocol::Gre));
        assert_eq!((p.pptp, p.l2tp, p.ipsec, p.nat_t), (PptpMode::Naive, L2tpMode::Off, IpsecMode::Spi, false));
        assert_eq!(p.port_range.len(), 10);
        let bad = Profile::from_toml("[impair.inbound]\nloss_percent = 140.0\n").expect_err("not a percentage");
        assert!(bad.contains("impair.inbound.loss_percent"), "{bad}");
        let typo = Profile::from_toml("maping = \"symmetric\"\n").expect_err("typo");
        assert!(typo.contains("maping"), "{typo}");
        assert!(Profile::from_toml("[timeouts]\nudp = 0\n").is_err());
        let t = Profile::from_toml("ipsec = \"tracker\"\n[esp_tracker]\nentries = 8\nlans = [\"10.0.0.0/8\"]\n")
            .expect("a tracker");
        assert_eq!((t.esp_tracker.entries, t.esp_tracker.unreplied_timeout), (8, 60));
        assert!(Profile::from_toml("[esp_tracker]\nentries = 0\n").expect_err("none").contains("esp_tracker.entries"));
        assert!(Profile::from_toml("[esp_tracker]\nlans = [\"10.0.0/8\"]\n").is_err(), "not a prefix");
        let huge = Profile::from_toml("[timeouts]\nudp = 18446744073709551\n").expect_err("past a year");
        assert!(huge.contains("at most"), "{huge}");
    }
}
