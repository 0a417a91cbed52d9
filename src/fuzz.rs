//! The bodies of the fuzz targets in `fuzz/`: each takes any bytes, returns
//! when it is done with them, and panics only when an invariant breaks. The
//! `cargo fuzz` binaries are one-liners calling these, and `tests/fuzz.rs`
//! runs them on stable Rust over the seeds and mutations of them, so they
//! are built and exercised by `cargo test` and cannot rot.
//!
//! What each target feeds and checks is in `fuzz/README.md`. In short:
//!
//! - [`nat`]: a profile (presets, behaviours, small limits and timeouts), an
//!   addressing and a gateway, then a stream of packets from both sides
//!   (built from the input with their checksums repaired so that they reach
//!   deep code, or raw), ARP, fragments, ICMP errors and a fake clock,
//!   through [`Nat::process`] or through [`Link::on_frame`] with or without
//!   virtio-net headers. After every packet: nothing from a stranger reached
//!   the LAN, nothing leaked a LAN address to the WAN, the checksums that
//!   were right stayed right, the counters add up, and every table is within
//!   its bound.
//! - [`pptp`], [`l2tp`]: streams of one protocol's messages, with the same
//!   checks.
//! - [`profile`]: profile TOML, then the NAT run with the profile.
//! - [`ppp`]: PPP frames to a session, as server or client, alone or with an
//!   honest peer whose frames the input corrupts.
//! - [`scenario`], [`topology`], [`pcap`]: the parsers of scenario files,
//!   topology files and captures.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::capture::facts::{Facts, classify};
use crate::capture::pcap::{self, Pcap};
use crate::nat::counters::ProtocolCounts;
use crate::nat::link::{FrameVerdict, Interface, Link, LinkLimits, Offload};
use crate::nat::profile::{CallIdChoice, IpsecMode, L2tpMode, PRESETS, PptpMode, SharedRemote};
use crate::nat::socket::{VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use crate::nat::{Behaviour, Config, DropReason, L4Checksum, Nat, Profile, Protocol, Side, Verdict};
use crate::ppp::hdlc;
use crate::ppp::session::{self, AuthProto, Event, Secret, Session};
use crate::wire::{arp, checksum, esp, ethernet, gre, icmp, ike, ipv4, l2tp, tcp, udp};

// ---- Input ------------------------------------------------------------------

/// Reads the fuzz input front to back; past its end every read is zero.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// A length byte, then that many bytes.
    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }
}

/// An invariant broke: the message says which, with what the NAT did.
#[track_caller]
fn broken(what: &str, detail: impl std::fmt::Display) -> ! {
    panic!("invariant broken: {what}: {detail}")
}

/// Whether `FUZZ_TRACE` is set: then every packet and verdict is printed
/// (to replay a failing input and see what happened).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

fn ip4(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

// ---- Checksums -------------------------------------------------------------

/// One's-complement equality: 0x0000 and 0xffff are both zero.
fn ones_eq(a: u16, b: u16) -> bool {
    a == b || (matches!(a, 0 | 0xffff) && matches!(b, 0 | 0xffff))
}

/// Whether the TCP, UDP or ICMP checksum of a whole (unfragmented) IPv4
/// packet is right, read as `csum` says (`Partial`: the field holds the
/// folded pseudo-header sum, as Linux CHECKSUM_PARTIAL leaves it; ICMP is
/// never offloaded). `None` when there is no such checksum to check: not
/// IPv4, a fragment, another protocol, too short to hold the header.
fn l4_ok(pkt: &[u8], csum: L4Checksum) -> Option<bool> {
    let ip = ipv4::Packet::new_checked(pkt).ok()?;
    if ip.is_fragment() {
        return None;
    }
    let l4 = ip.payload();
    let (src, dst, proto) = (ip.src_bytes(), ip.dst_bytes(), ip.protocol());
    let pseudo = checksum::pseudo_header(src, dst, proto, l4.len() as u16);
    let full = || checksum::fold(checksum::add(pseudo, l4)) == 0xffff;
    let field = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let partial = |at: usize| ones_eq(field(at), checksum::fold(pseudo));
    match proto {
        ipv4::PROTO_TCP if l4.len() >= 20 => Some(match csum {
            L4Checksum::Full => full(),
            L4Checksum::Partial => partial(16),
        }),
        // A UDP checksum of 0 is "none".
        ipv4::PROTO_UDP if l4.len() >= 8 => Some(
            field(6) == 0
                || match csum {
                    L4Checksum::Full => full(),
                    L4Checksum::Partial => partial(6),
                },
        ),
        ipv4::PROTO_ICMP if l4.len() >= 8 => Some(checksum::fold(checksum::add(0, l4)) == 0xffff),
        _ => None,
    }
}

/// Makes the IPv4 header checksum right and, unless the packet is a
/// fragment, the TCP/UDP/ICMP checksum (`Partial`: the pseudo-header sum a
/// sender leaves for its hardware). Bytes that are not IPv4 stay as they are.
fn repair(pkt: &mut [u8], csum: L4Checksum) {
    let Ok(ip) = ipv4::Packet::new_checked(&*pkt) else { return };
    let (hl, total, frag) = (ip.header_len(), ip.total_len(), ip.more_frags() || ip.frag_offset() != 0);
    let (src, dst, proto) = (ip.src_bytes(), ip.dst_bytes(), ip.protocol());
    if !frag || ip.frag_offset() == 0 {
        let l4 = &mut pkt[hl..total];
        let at = match proto {
            ipv4::PROTO_TCP if l4.len() >= 20 => Some(16),
            ipv4::PROTO_UDP if l4.len() >= 8 => Some(6),
            ipv4::PROTO_ICMP if l4.len() >= 8 => Some(2),
            _ => None,
        };
        if let Some(at) = at {
            l4[at..at + 2].copy_from_slice(&[0, 0]);
            let pseudo = checksum::pseudo_header(src, dst, proto, l4.len() as u16);
            let c = match (proto, csum) {
                (ipv4::PROTO_ICMP, _) => checksum::of(l4),
                (_, L4Checksum::Full) => !checksum::fold(checksum::add(pseudo, l4)),
                (_, L4Checksum::Partial) => checksum::fold(pseudo),
            };
            let c = if proto == ipv4::PROTO_UDP && c == 0 { 0xffff } else { c };
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
    ipv4::Packet::new_unchecked(&mut *pkt).fill_checksum();
}

// ---- Packet building -------------------------------------------------------

/// An IPv4 packet; `frag` is the flags and offset word, `opts` a multiple of
/// 4 bytes (at most 40). [`repair`] decides what stays right.
#[allow(clippy::too_many_arguments)]
fn ip_packet(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8], ident: u16, ttl: u8, opts: &[u8], frag: u16) -> Vec<u8> {
    ipv4::emit(&ipv4::Header { ttl, ident, frag, ..ipv4::Header::new(src, dst, proto) }, opts, l4)
}

fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp::Header { seq, ack, window: 0xffff, ..tcp::Header::new(sport, dport, flags) }.emit(payload)
}

fn icmp_msg(kind: u8, code: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let [a, b] = ident.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    icmp::emit(kind, code, [a, b, c, d], payload)
}

/// What an ICMP error quotes: the header and the first 8 bytes of payload.
fn quote(pkt: &[u8]) -> &[u8] {
    let hl = pkt.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
    &pkt[..pkt.len().min(hl + 8)]
}

// ---- The NAT's invariants --------------------------------------------------

/// The stricter of two RFC 4787 behaviours.
fn rank(b: Behaviour) -> u8 {
    match b {
        Behaviour::EndpointIndependent => 0,
        Behaviour::AddressDependent => 1,
        Behaviour::AddressAndPortDependent => 2,
    }
}

/// A packet a LAN host sent: protocol, source, destination, and the ports
/// (ICMP: the identifier and 0) when it has them.
#[derive(Clone, Copy)]
struct Sent {
    proto: u8,
    host: [u8; 4],
    remote: [u8; 4],
    ports: Option<(u16, u16)>,
}

/// What LAN hosts sent in this run, and the rules every packet the NAT
/// sends must follow.
///
/// Nothing from a stranger reaches the LAN: a packet the NAT delivers to
/// LAN host H from R must come from a remote H talked to, as far as the
/// profile's behaviours say. For TCP, UDP and ICMP queries, the stricter of
/// the mapping and filtering behaviours decides: endpoint-independent, H
/// sent from that port (or ICMP identifier) with that protocol;
/// address-dependent, H sent from it to R's address; address-and-port-
/// dependent, to R's address and port. Protocols mapped by address only
/// (GRE, ESP, others) come only from an address H sent that protocol to.
/// Traffic the passthrough ALGs steer (L2TP to port 1701 and IKE to 500 with
/// their ALGs, PPTP's GRE with the Call ID ALG, ESP with the SPI ALG or the ESP tracker) comes
/// from an address H sent something to (the server may answer from another
/// port), or follows the rules of an ordinary mapping. Later fragments come
/// from an address H sent something to (under endpoint-independent rules:
/// to a host that sent something). An ICMP
/// error must quote a packet that H sent (its source is H) and whose
/// destination passes the same rules; an error the NAT makes itself (TTL
/// exceeded, from the NAT's LAN address) quotes H's own packet.
///
/// "Sent" means any packet the LAN host gave the NAT, whatever the NAT did
/// with it.
struct Watch {
    lan: Ipv4Net,
    lan_addr: [u8; 4],
    wan_addr: [u8; 4],
    strength: u8,
    alg_udp_ports: Vec<u16>,
    gre_alg: bool,
    esp_alg: bool,
    /// The profile's `bad_gre_checksum`: GRE leaves with the checksum it
    /// came with.
    bad_gre_checksum: bool,
    /// What LAN hosts sent, one record per packet (scanned only when a
    /// packet to the LAN is checked).
    sent: Vec<Sent>,
    /// Every IPv4 packet given to the NAT had right checksums (those
    /// [`l4_ok`] reads).
    all_valid: bool,
}

impl Watch {
    fn new(cfg: &Config) -> Watch {
        let p = &cfg.profile;
        let alg_udp_ports = crate::nat::alg::Algs::new(p).reserved_udp_ports();
        Watch {
            lan: cfg.lan,
            lan_addr: cfg.lan.addr().octets(),
            wan_addr: cfg.wan.addr().octets(),
            strength: rank(p.mapping).max(rank(p.filtering)),
            alg_udp_ports,
            gre_alg: p.pptp == PptpMode::CallId,
            esp_alg: matches!(p.ipsec, IpsecMode::Spi | IpsecMode::Tracker),
            bad_gre_checksum: p.bad_gre_checksum,
            sent: Vec::new(),
            all_valid: true,
        }
    }

    /// Notes what a LAN host sends, before the NAT sees it.
    fn lan_sent(&mut self, pkt: &[u8]) {
        if pkt.len() < ipv4::MIN_HEADER_LEN || pkt[0] >> 4 != 4 {
            return;
        }
        let hl = usize::from(pkt[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]])).min(pkt.len());
        let (proto, host, remote) = (pkt[9], addr(pkt, 12), addr(pkt, 16));
        let offset = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
        let l4 = pkt.get(hl..total.max(hl)).unwrap_or_default();
        let ports = match proto {
            _ if offset != 0 => None,
            ipv4::PROTO_TCP | ipv4::PROTO_UDP if l4.len() >= 4 => Some((be16(l4, 0), be16(l4, 2))),
            ipv4::PROTO_ICMP if l4.len() >= 6 => Some((be16(l4, 4), 0)),
            _ => None,
        };
        self.sent.push(Sent { proto, host, remote, ports });
    }

    /// The rule for TCP, UDP and ICMP queries: host endpoint `(h, port)`
    /// receives from `(r, rport)`.
    fn ported(&self, proto: u8, h: [u8; 4], port: u16, r: [u8; 4], rport: u16) -> Result<(), String> {
        let ok = self.sent.iter().any(|s| {
            s.proto == proto
                && s.host == h
                && s.ports.is_some_and(|(p, rp)| {
                    p == port
                        && match self.strength {
                            0 => true,
                            1 => s.remote == r,
                            _ => s.remote == r && rp == rport,
                        }
                })
        });
        if ok {
            return Ok(());
        }
        let rule = ["never sent from that endpoint", "never sent to that address", "never sent to that endpoint"];
        Err(format!(
            "protocol {proto} from {}:{rport} to {}:{port}, which {}",
            ip4(r),
            ip4(h),
            rule[usize::from(self.strength)]
        ))
    }

    fn any(&self, h: [u8; 4], r: [u8; 4]) -> Result<(), String> {
        if self.sent.iter().any(|s| s.host == h && s.remote == r) {
            Ok(())
        } else {
            Err(format!("from {} to {}, which never sent anything to it", ip4(r), ip4(h)))
        }
    }

    fn by_address(&self, proto: u8, h: [u8; 4], r: [u8; 4]) -> Result<(), String> {
        if self.sent.iter().any(|s| s.proto == proto && s.host == h && s.remote == r) {
            Ok(())
        } else {
            Err(format!("protocol {proto} from {} to {}, which never sent it there", ip4(r), ip4(h)))
        }
    }

    /// Nothing from a stranger reaches the LAN (see [`Watch`]).
    fn check_peer(&self, pkt: &[u8]) -> Result<(), String> {
        let ip = ipv4::Packet::new_unchecked(pkt);
        let (h, r, proto) = (ip.dst_bytes(), ip.src_bytes(), ip.protocol());
        let l4 = ip.payload();
        if ip.frag_offset() != 0 {
            return if self.strength == 0 {
                if self.sent.iter().any(|s| s.host == h) {
                    Ok(())
                } else {
                    Err(format!("a fragment to {}, which never sent", ip4(h)))
                }
            } else {
                self.any(h, r)
            };
        }
        match proto {
            ipv4::PROTO_TCP | ipv4::PROTO_UDP => {
                if l4.len() < 4 {
                    return Err("a TCP/UDP packet without ports".into());
                }
                let (sport, dport) = (be16(l4, 0), be16(l4, 2));
                let mapped = self.ported(proto, h, dport, r, sport);
                if proto == ipv4::PROTO_UDP && self.alg_udp_ports.contains(&dport) {
                    // Steered by an ALG, or an ordinary mapping of that port.
                    mapped.or_else(|e| self.any(h, r).map_err(|_| e))
                } else {
                    mapped
                }
            }
            ipv4::PROTO_ICMP => {
                let Ok(m) = icmp::Message::new_checked(l4) else {
                    return Err("a truncated ICMP message".into());
                };
                if m.is_query() {
                    self.ported(proto, h, m.ident(), r, 0)
                } else if m.is_error() {
                    self.check_error(h, r, m.payload())
                } else {
                    Err(format!("ICMP type {} (neither query nor error)", m.msg_type()))
                }
            }
            ipv4::PROTO_GRE if self.gre_alg => self.any(h, r),
            ipv4::PROTO_ESP if self.esp_alg => self.any(h, r),
            _ => self.by_address(proto, h, r),
        }
    }

    fn check_error(&self, h: [u8; 4], r: [u8; 4], quoted: &[u8]) -> Result<(), String> {
        let readable = quoted.len() >= ipv4::MIN_HEADER_LEN
            && quoted[0] >> 4 == 4
            && usize::from(quoted[0] & 0x0f) * 4 >= ipv4::MIN_HEADER_LEN
            && quoted.len() >= usize::from(quoted[0] & 0x0f) * 4 + 8;
        if r == self.lan_addr {
            // Made by the NAT: the LAN host's own packet, to where it sent it.
            if quoted.len() >= ipv4::MIN_HEADER_LEN && (addr(quoted, 12) != h || self.any(h, addr(quoted, 16)).is_err())
            {
                return Err(format!("the NAT's ICMP error to {} quotes a packet it did not send", ip4(h)));
            }
            return Ok(());
        }
        if !readable {
            return Err(format!("an ICMP error from {} quoting no readable packet", ip4(r)));
        }
        let hl = usize::from(quoted[0] & 0x0f) * 4;
        let (proto, src, dst) = (quoted[9], addr(quoted, 12), addr(quoted, 16));
        if src != h {
            return Err(format!("an ICMP error to {} quotes a packet from {}", ip4(h), ip4(src)));
        }
        let l4 = &quoted[hl..];
        let w = |at: usize| be16(l4, at);
        let rule = match proto {
            ipv4::PROTO_TCP | ipv4::PROTO_UDP => self.ported(proto, h, w(0), dst, w(2)),
            ipv4::PROTO_ICMP => self.ported(proto, h, w(4), dst, 0),
            _ => self.by_address(proto, h, dst),
        };
        rule.map_err(|e| format!("an ICMP error from {} quoting {e}", ip4(r)))
    }

    /// Checks a packet the NAT sends on `side`. `expect_valid`: its L4
    /// checksum was right when it came in (or the NAT made it).
    fn sent(&self, side: Side, pkt: &[u8], csum: L4Checksum, expect_valid: bool) {
        let Ok(ip) = ipv4::Packet::new_checked(pkt) else {
            broken("the NAT sends IPv4", format!("{side:?}: {}", hex(pkt)));
        };
        let bad_allowed = self.bad_gre_checksum && ip.protocol() == ipv4::PROTO_GRE;
        if !(ip.verify_checksum() || bad_allowed) {
            broken("the IPv4 header checksum stays right", format!("{side:?}: {}", hex(pkt)));
        }
        if expect_valid && l4_ok(pkt, csum) == Some(false) {
            broken("a right TCP/UDP/ICMP checksum stays right", format!("{side:?} {csum:?}: {}", hex(pkt)));
        }
        let (src, dst) = (ip.src_bytes(), ip.dst_bytes());
        match side {
            Side::Wan => {
                if src != self.wan_addr || self.lan.contains(&ip4(dst)) {
                    broken(
                        "the WAN sees only the public address",
                        format!("{} -> {}: {}", ip4(src), ip4(dst), hex(pkt)),
                    );
                }
            }
            Side::Lan => {
                if !self.lan.contains(&ip4(dst)) || dst == self.lan_addr {
                    broken("the NAT delivers to LAN hosts", format!("to {}: {}", ip4(dst), hex(pkt)));
                }
                if self.lan.contains(&ip4(src)) && src != self.lan_addr {
                    broken("LAN hosts see no LAN host's address as source", format!("from {}", ip4(src)));
                }
                if let Err(e) = self.check_peer(pkt) {
                    broken("nothing from a stranger reaches the LAN", format!("{e}: {}", hex(pkt)));
                }
            }
        }
    }
}

fn addr(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Bytes as hex, for messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every table of the NAT is within the profile's bounds.
fn check_bounds(nat: &Nat) {
    if let Some(over) = nat.over_bounds() {
        broken("state stays within its bounds", over);
    }
}

/// Each LAN host holds at most its share, each mapping at most its remotes.
/// A table is looked at only when its total could hide a share exceeded.
fn check_shares(nat: &Nat, now: Duration) {
    let l = &nat.config().profile.limits;
    let s = nat.state_sizes();
    let host = |s: &str| s.split(':').next().unwrap_or_default().to_string();
    let count = |what: &str, hosts: Vec<String>, max: usize| {
        let mut per: HashMap<String, usize> = HashMap::new();
        for h in hosts {
            *per.entry(h).or_default() += 1;
        }
        if let Some((h, n)) = per.into_iter().find(|(_, n)| *n > max) {
            broken("a LAN host holds at most its share", format!("{h}: {n} {what}, {max} allowed"));
        }
    };
    if s.mappings > l.mappings_per_host || s.sessions > l.remotes_per_mapping {
        let mappings = nat.mappings(now);
        if let Some(m) = mappings.iter().find(|m| m.remotes.len() > l.remotes_per_mapping) {
            broken("a mapping keeps at most its remotes", format!("{m:?}"));
        }
        count("mappings", mappings.iter().map(|m| host(&m.internal)).collect(), l.mappings_per_host);
    }
    if s.pptp_calls > l.pptp_calls_per_host
        || s.l2tp_tunnels > l.l2tp_tunnels_per_host
        || s.ipsec_sas > l.ipsec_sas_per_host
    {
        let alg = nat.alg_state();
        count("PPTP calls", alg.pptp_calls.iter().map(|c| host(&c.client)).collect(), l.pptp_calls_per_host);
        count("L2TP tunnels", alg.l2tp_tunnels.iter().map(|t| host(&t.client)).collect(), l.l2tp_tunnels_per_host);
        count("IPsec SAs", alg.ipsec_sas.iter().map(|s| host(&s.client)).collect(), l.ipsec_sas_per_host);
    }
}

/// The counters the per-packet accounting compares.
#[derive(Clone, Copy)]
struct Snap {
    p: [ProtocolCounts; 6],
    generated: u64,
    created: u64,
    waiting: usize,
}

impl Snap {
    fn of(nat: &Nat) -> Snap {
        let c = nat.counters();
        Snap {
            p: Protocol::ALL.map(|p| c.protocol(p)),
            generated: c.icmp_generated,
            created: c.mappings_created,
            waiting: nat.state_sizes().fragments_waiting,
        }
    }

    fn translated(&self) -> u64 {
        self.p.iter().map(|c| c.outbound + c.inbound + c.hairpinned).sum()
    }

    fn dropped(&self) -> u64 {
        self.p.iter().map(|c| c.dropped).sum()
    }
}

fn slot(p: Protocol) -> usize {
    Protocol::ALL.iter().position(|x| *x == p).unwrap_or(5)
}

// ---- Driving the NAT --------------------------------------------------------

const LAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Ops per input, at most.
const MAX_OPS: usize = 400;
/// The fake clock never passes this (a year): realistic uptimes only.
const MAX_NOW_MS: u64 = 365 * 24 * 3600 * 1000;

/// A host's MAC address, from its IPv4 address.
fn mac_of(a: [u8; 4]) -> [u8; 6] {
    [0x02, 0x10, a[0], a[1], a[2], a[3]]
}

/// An outbound flow the NAT translated, seen on the WAN: replies go to
/// its public endpoint.
#[derive(Clone, Copy)]
struct Flow {
    proto: u8,
    public: u16,
    remote: [u8; 4],
    rport: u16,
}

/// How packets reach the NAT.
#[derive(Clone, Copy)]
struct Driver {
    /// Through [`Link::on_frame`] (Ethernet, ARP) rather than [`Nat::process`].
    link: bool,
    /// Frames carry a virtio-net header.
    vnet: bool,
    /// ARP requests the NAT sends are answered at once.
    answer_arp: bool,
    /// Bounds of the neighbour tables.
    link_limits: LinkLimits,
}

enum Engine {
    Nat(Box<Nat>),
    Link(Box<Link>),
}

/// One run: the NAT, what was sent, and the accounting.
struct Run {
    engine: Engine,
    watch: Watch,
    driver: Driver,
    now_ms: u64,
    lan_addr: [u8; 4],
    wan_addr: [u8; 4],
    hosts: [[u8; 4]; 4],
    remotes: [[u8; 4]; 8],
    flows: Vec<Flow>,
    /// Packets recently delivered to LAN hosts, for their ICMP errors.
    delivered: Vec<Vec<u8>>,
    /// Drops by reason, as verdicts told them (direct mode).
    drops: HashMap<DropReason, u64>,
    consumed: u64,
    released: u64,
    translations: u64,
    /// What the tables held when the shares were last checked.
    shares_seen: [u64; 5],
}

/// Addresses `n` hosts into `net`.
fn host_in(net: Ipv4Net, n: u32) -> [u8; 4] {
    (u32::from(net.network()).wrapping_add(n)).to_be_bytes()
}

impl Run {
    fn new(cfg: Config, driver: Driver) -> Run {
        let (lan, wan) = (cfg.lan, cfg.wan);
        let watch = Watch::new(&cfg);
        let nat = match Nat::new(cfg) {
            Ok(n) => n,
            Err(e) => broken("a valid configuration makes a NAT", e),
        };
        let engine = if driver.link {
            let lan_if = Interface { mac: LAN_MAC, addr: lan.addr() };
            let wan_if = Interface { mac: WAN_MAC, addr: wan.addr() };
            Engine::Link(Box::new(Link::with_limits(nat, lan_if, wan_if, driver.link_limits)))
        } else {
            Engine::Nat(Box::new(nat))
        };
        Run {
            engine,
            watch,
            driver,
            now_ms: 0,
            lan_addr: lan.addr().octets(),
            wan_addr: wan.addr().octets(),
            hosts: [host_in(lan, 10), host_in(lan, 11), host_in(lan, 2), host_in(lan, 12)],
            remotes: [
                host_in(wan, 2),
                host_in(wan, 3),
                host_in(wan, 4),
                [203, 0, 113, 7],
                [203, 0, 113, 8],
                host_in(wan, 5),
                wan.addr().octets(),
                lan.addr().octets(),
            ],
            flows: Vec::new(),
            delivered: Vec::new(),
            drops: HashMap::new(),
            consumed: 0,
            released: 0,
            translations: 0,
            shares_seen: [0; 5],
        }
    }

    /// Bounds after every packet; shares whenever a table grew.
    fn check(&mut self) {
        let now = self.now();
        let nat = self.nat();
        check_bounds(nat);
        let s = nat.state_sizes();
        let seen = [
            nat.counters().mappings_created,
            s.sessions as u64,
            s.pptp_calls as u64,
            s.l2tp_tunnels as u64,
            s.ipsec_sas as u64,
        ];
        let grew = seen.iter().zip(self.shares_seen).any(|(a, b)| *a > b);
        self.shares_seen = seen;
        if grew {
            check_shares(self.nat(), now);
        }
    }

    fn nat(&self) -> &Nat {
        match &self.engine {
            Engine::Nat(n) => n,
            Engine::Link(l) => l.nat(),
        }
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms)
    }

    /// Learns from what the NAT sent: flows to answer, packets to complain
    /// about; then checks it.
    fn sent(&mut self, side: Side, pkt: &[u8], csum: L4Checksum, expect_valid: bool) {
        self.watch.sent(side, pkt, csum, expect_valid);
        let ip = ipv4::Packet::new_unchecked(pkt);
        match side {
            Side::Wan if ip.frag_offset() == 0 => {
                let l4 = ip.payload();
                let flow = match ip.protocol() {
                    p @ (ipv4::PROTO_TCP | ipv4::PROTO_UDP) if l4.len() >= 4 => {
                        Some(Flow { proto: p, public: be16(l4, 0), remote: ip.dst_bytes(), rport: be16(l4, 2) })
                    }
                    ipv4::PROTO_ICMP if l4.len() >= 8 && l4[0] == icmp::ECHO_REQUEST => {
                        Some(Flow { proto: ipv4::PROTO_ICMP, public: be16(l4, 4), remote: ip.dst_bytes(), rport: 0 })
                    }
                    p @ (ipv4::PROTO_GRE | ipv4::PROTO_ESP) => {
                        Some(Flow { proto: p, public: 0, remote: ip.dst_bytes(), rport: 0 })
                    }
                    _ => None,
                };
                if let Some(f) = flow {
                    if !self
                        .flows
                        .iter()
                        .any(|g| (g.proto, g.public, g.remote, g.rport) == (f.proto, f.public, f.remote, f.rport))
                    {
                        if self.flows.len() >= 16 {
                            self.flows.remove(0);
                        }
                        self.flows.push(f);
                    }
                }
            }
            Side::Lan => {
                if self.delivered.len() >= 4 {
                    self.delivered.remove(0);
                }
                self.delivered.push(ip.packet()[..ip.total_len().min(64)].to_vec());
            }
            Side::Wan => {}
        }
    }

    /// A packet from `side`: to the NAT directly, or in a frame.
    fn packet(&mut self, side: Side, pkt: Vec<u8>, csum: L4Checksum, to_nat: bool) {
        match self.engine {
            Engine::Nat(_) => self.process(side, pkt, csum),
            Engine::Link(_) => {
                let (mac, src_mac) = match side {
                    Side::Lan => (LAN_MAC, mac_of(addr_or_zero(&pkt, 12))),
                    Side::Wan => (WAN_MAC, mac_of(addr_or_zero(&pkt, 12))),
                };
                let mut frame = Vec::with_capacity(ethernet::HEADER_LEN + pkt.len());
                frame.extend_from_slice(if to_nat { &mac } else { &ethernet::BROADCAST });
                frame.extend_from_slice(&src_mac);
                frame.extend_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
                frame.extend_from_slice(&pkt);
                let offload = if self.driver.vnet {
                    let mut hdr = [0u8; VNET_HDR_LEN];
                    let hl = pkt.first().map_or(20, |b| usize::from(b & 0x0f) * 4);
                    let at = match pkt.get(9) {
                        Some(&ipv4::PROTO_TCP) => Some(16u16),
                        Some(&ipv4::PROTO_UDP) => Some(6),
                        _ => None,
                    };
                    match (csum, at) {
                        (L4Checksum::Partial, Some(off)) => {
                            hdr[0] = VNET_F_NEEDS_CSUM;
                            hdr[6..8].copy_from_slice(&((ethernet::HEADER_LEN + hl) as u16).to_le_bytes());
                            hdr[8..10].copy_from_slice(&off.to_le_bytes());
                        }
                        _ => hdr[0] = VNET_F_DATA_VALID,
                    }
                    crate::nat::run::offload_of(&hdr, &frame)
                } else {
                    Offload::NONE
                };
                self.frame(side, frame, offload);
            }
        }
    }

    /// [`Nat::process`], with the per-packet accounting.
    fn process(&mut self, side: Side, mut pkt: Vec<u8>, csum: L4Checksum) {
        if side == Side::Lan {
            self.watch.lan_sent(&pkt);
        }
        let parsed = ipv4::Packet::new_checked(&pkt[..])
            .ok()
            .map(|ip| (slot(Protocol::of(ip.protocol())), ip.ttl(), ip.verify_checksum(), ip.is_fragment()));
        let valid = l4_ok(&pkt, csum);
        if parsed.is_some_and(|p| p.2) && valid == Some(false) {
            self.watch.all_valid = false;
        }
        let now = self.now();
        let Engine::Nat(nat) = &mut self.engine else { return };
        let before = Snap::of(nat);
        let input = if tracing() { hex(&pkt) } else { String::new() };
        let verdict = nat.process(side, &mut pkt, csum, now);
        if tracing() {
            eprintln!("{now:?} {side:?} {csum:?} {input}\n  -> {verdict:?} {}", hex(&pkt));
        }
        let mut out = Vec::new();
        while let Some(t) = nat.poll_transmit() {
            out.push(t);
        }
        let after = Snap::of(nat);
        let nat: &Nat = nat;
        let what = || format!("{side:?} {verdict:?}: {}", hex(&pkt));
        if after.created > before.created + 1 {
            broken("a packet makes at most one mapping", what());
        }
        let same_p = |skip: Option<usize>| (0..6).all(|i| Some(i) == skip || after.p[i] == before.p[i]);
        match verdict {
            Verdict::Drop(reason) => {
                *self.drops.entry(reason).or_default() += 1;
                if nat.counters().dropped(reason) != self.drops[&reason] {
                    broken("every drop is counted once under its reason", what());
                }
                match parsed {
                    Some((i, ..)) => {
                        let (b, a) = (before.p[i], after.p[i]);
                        if a.dropped != b.dropped + 1
                            || (a.outbound, a.inbound, a.hairpinned) != (b.outbound, b.inbound, b.hairpinned)
                            || !same_p(Some(i))
                        {
                            broken("a dropped packet is counted once, as dropped, under its protocol", what());
                        }
                    }
                    None if !same_p(None) => broken("a packet that is not IPv4 counts under no protocol", what()),
                    None => {}
                }
                let made = after.generated - before.generated;
                if made != out.len() as u64 || (made > 0 && reason != DropReason::TtlExceeded) || made > 1 {
                    broken("only a TTL running out makes an ICMP error, one", what());
                }
            }
            Verdict::Consumed => {
                self.consumed += 1;
                if !same_p(None) || after.generated != before.generated || !out.is_empty() {
                    broken("a fragment kept is not counted yet", what());
                }
                if after.waiting != before.waiting + 1 {
                    broken("a fragment kept waits", what());
                }
            }
            Verdict::Forward { side: to, .. } => {
                let Some((i, ttl, _, _)) = parsed else { broken("only IPv4 is forwarded", what()) };
                if after.dropped() != before.dropped() {
                    broken("a forwarded packet is not counted as dropped", what());
                }
                let (b, a) = (before.p[i], after.p[i]);
                let router = after.generated == before.generated + 1;
                let ok = if to != side {
                    let released = out.len() as u64;
                    self.released += released;
                    self.translations += 1;
                    let more = |x: u64, y: u64, n: u64| y == x + n;
                    after.generated == before.generated
                        && same_p(Some(i))
                        && match to {
                            Side::Wan => more(b.outbound, a.outbound, 1) && a.inbound == b.inbound && released == 0,
                            Side::Lan => more(b.inbound, a.inbound, 1 + released) && more(b.outbound, a.outbound, 0),
                        }
                        && a.hairpinned == b.hairpinned
                        && out.iter().all(|t| t.side == Side::Lan)
                } else if router {
                    // Answered by the NAT (an echo request to it).
                    after.translated() == before.translated() && out.is_empty()
                } else {
                    self.translations += 1;
                    side == Side::Lan
                        && after.generated == before.generated
                        && a.hairpinned == b.hairpinned + 1
                        && same_p(Some(i))
                        && (a.outbound, a.inbound) == (b.outbound, b.inbound)
                        && out.is_empty()
                };
                if !ok {
                    broken(
                        "a forwarded packet is counted once, as translated, under its protocol and direction",
                        what(),
                    );
                }
                let out_ttl = pkt[8];
                if !router && out_ttl.wrapping_add(1) != ttl {
                    broken("a forwarded packet's TTL goes down by one", what());
                }
                if router
                    && (pkt[9] != ipv4::PROTO_ICMP
                        || pkt.get(ipv4::Packet::new_unchecked(&pkt[..]).header_len()) != Some(&icmp::ECHO_REPLY))
                {
                    broken("the NAT answers only echo requests", what());
                }
                let expect = valid == Some(true);
                self.sent(to, &pkt, csum, expect);
            }
        }
        for t in out {
            self.sent(t.side, &t.packet, L4Checksum::Full, true);
        }
        self.check();
    }

    /// [`Link::on_frame`], then what the link layer sends.
    fn frame(&mut self, side: Side, mut frame: Vec<u8>, offload: Offload) {
        let me = match side {
            Side::Lan => LAN_MAC,
            Side::Wan => WAN_MAC,
        };
        let ipv4_to_us = frame.len() > ethernet::HEADER_LEN
            && frame[0..6] == me
            && frame[12..14] == ethernet::ETHERTYPE_IPV4.to_be_bytes();
        let mut valid = None;
        if ipv4_to_us {
            let pkt = &frame[ethernet::HEADER_LEN..];
            if side == Side::Lan {
                self.watch.lan_sent(pkt);
            }
            valid = l4_ok(pkt, offload.csum);
            if ipv4::Packet::new_checked(pkt).is_ok_and(|ip| ip.verify_checksum()) && valid == Some(false) {
                self.watch.all_valid = false;
            }
        }
        let ttl = frame.get(ethernet::HEADER_LEN + 8).copied();
        let now = self.now();
        let Engine::Link(link) = &mut self.engine else { return };
        let input = if tracing() { hex(&frame) } else { String::new() };
        let verdict = link.on_frame(side, &mut frame, offload, now);
        if tracing() {
            eprintln!("{now:?} {side:?} {offload:?} {input}\n  -> {verdict:?} {}", hex(&frame));
        }
        match verdict {
            FrameVerdict::Send(to) => {
                if !ipv4_to_us {
                    broken("the link layer forwards only IPv4 frames to it", hex(&frame));
                }
                let mac = match to {
                    Side::Lan => LAN_MAC,
                    Side::Wan => WAN_MAC,
                };
                if frame[6..12] != mac || frame[0] & 1 != 0 {
                    broken("a forwarded frame goes from the NAT's MAC to a unicast MAC", hex(&frame));
                }
                let pkt = frame[ethernet::HEADER_LEN..].to_vec();
                let ip = ipv4::Packet::new_unchecked(&pkt[..]);
                let own = ip.protocol() == ipv4::PROTO_ICMP && [self.lan_addr, self.wan_addr].contains(&ip.src_bytes());
                if !own && ttl.is_some_and(|t| pkt[8].wrapping_add(1) != t) {
                    broken("a forwarded packet's TTL goes down by one", hex(&frame));
                }
                self.sent(to, &pkt, offload.csum, valid == Some(true));
            }
            FrameVerdict::Drop(reason) => {
                if link.nat().counters().dropped(reason) == 0 {
                    broken("a dropped frame is counted", format!("{reason:?}"));
                }
            }
            FrameVerdict::Consumed => {}
        }
        self.drain();
    }

    /// What the link layer made or released: checked, ARP answered.
    fn drain(&mut self) {
        for _ in 0..64 {
            let Engine::Link(link) = &mut self.engine else { return };
            let mut frames = Vec::new();
            while let Some(f) = link.poll_frame() {
                frames.push(f);
            }
            if frames.is_empty() {
                break;
            }
            let mut answers = Vec::new();
            for f in frames {
                if tracing() {
                    eprintln!("  out {:?} {:?} {}", f.side, f.offload, hex(&f.frame));
                }
                let mac = match f.side {
                    Side::Lan => LAN_MAC,
                    Side::Wan => WAN_MAC,
                };
                if f.frame.len() < ethernet::HEADER_LEN || f.frame[6..12] != mac {
                    broken("the NAT sends from its own MAC address", hex(&f.frame));
                }
                match u16::from_be_bytes([f.frame[12], f.frame[13]]) {
                    ethernet::ETHERTYPE_IPV4 => {
                        let expect = self.watch.all_valid;
                        self.sent(f.side, &f.frame[ethernet::HEADER_LEN..], f.offload.csum, expect);
                    }
                    ethernet::ETHERTYPE_ARP => {
                        let Ok(a) = arp::Packet::new_checked(&f.frame[ethernet::HEADER_LEN..]) else {
                            broken("the NAT's ARP is well formed", hex(&f.frame));
                        };
                        if a.oper() == arp::OP_REQUEST && self.driver.answer_arp {
                            let who = a.tpa();
                            let mut reply = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
                            reply[0..6].copy_from_slice(&mac);
                            reply[6..12].copy_from_slice(&mac_of(who));
                            reply[12..14].copy_from_slice(&ethernet::ETHERTYPE_ARP.to_be_bytes());
                            arp::emit(
                                &mut reply[ethernet::HEADER_LEN..],
                                arp::OP_REPLY,
                                mac_of(who),
                                who,
                                mac,
                                a.spa(),
                            );
                            answers.push((f.side, reply));
                        }
                    }
                    other => broken("the NAT sends only IPv4 and ARP", format!("ethertype {other:#06x}")),
                }
            }
            for (side, reply) in answers {
                let now = self.now();
                if let Engine::Link(link) = &mut self.engine {
                    link.on_frame(side, &mut reply.clone(), Offload::NONE, now);
                }
            }
        }
        if let Engine::Link(link) = &self.engine {
            let l = link.limits();
            for side in [Side::Lan, Side::Wan] {
                let s = link.neighbour_stats(side);
                if s.known > l.neighbours
                    || s.resolving > l.resolving
                    || s.queued_bytes > l.queued_bytes
                    || s.queued_frames > l.resolving * l.frames_per_neighbour
                {
                    broken("the neighbour tables stay within their bounds", format!("{side:?}: {s:?} {l:?}"));
                }
            }
        }
        self.check();
    }

    /// The clock moves on; timers run.
    fn advance(&mut self, ms: u64) {
        self.now_ms = (self.now_ms + ms).min(MAX_NOW_MS);
        let now = self.now();
        match &mut self.engine {
            Engine::Nat(nat) => {
                let before = Snap::of(nat);
                let unmatched = nat.counters().dropped(DropReason::FragmentUnmatched);
                nat.handle_timeout(now);
                let after = Snap::of(nat);
                let expired = (before.waiting - after.waiting) as u64;
                *self.drops.entry(DropReason::FragmentUnmatched).or_default() += expired;
                if nat.counters().dropped(DropReason::FragmentUnmatched) != unmatched + expired
                    || after.p != before.p
                    || nat.poll_transmit().is_some()
                {
                    broken("timers count only the fragments that gave up", format!("{expired} expired"));
                }
                check_bounds(nat);
            }
            Engine::Link(link) => {
                link.handle_timeout(now);
                self.drain();
            }
        }
    }

    /// The end of a run: the totals add up.
    fn finish(&mut self) {
        let now = self.now();
        let nat = self.nat();
        check_shares(nat, now);
        let c = nat.counters();
        let s = nat.state_sizes();
        if c.mappings_created < c.mappings_expired + s.mappings as u64 {
            broken(
                "mappings made >= mappings expired + mappings held",
                format!("{} < {} + {}", c.mappings_created, c.mappings_expired, s.mappings),
            );
        }
        let per_reason: u64 = c.drops().iter().map(|(_, n)| n).sum();
        if per_reason < Snap::of(nat).dropped() {
            broken("drops by reason include drops by protocol", per_reason);
        }
        if let Engine::Nat(nat) = &self.engine {
            let expected: u64 = self.drops.values().sum();
            if per_reason != expected {
                broken("the drop counters add up to the drops", format!("{per_reason} counted, {expected} dropped"));
            }
            let unmatched = self.drops.get(&DropReason::FragmentUnmatched).copied().unwrap_or(0);
            if self.consumed != self.released + unmatched + s.fragments_waiting as u64 {
                broken(
                    "every fragment kept is released, given up or still waiting",
                    format!(
                        "{} kept, {} released, {unmatched} gave up, {} wait",
                        self.consumed, self.released, s.fragments_waiting
                    ),
                );
            }
            if Snap::of(nat).translated() != self.translations + self.released {
                broken("the translation counters add up to the packets forwarded", "");
            }
        }
    }
}

fn addr_or_zero(pkt: &[u8], at: usize) -> [u8; 4] {
    if pkt.len() >= at + 4 { addr(pkt, at) } else { [0; 4] }
}

/// Checksum state of a built packet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sum {
    /// Right, complete.
    Full,
    /// Right, left to hardware.
    Partial,
    /// Wrong L4 checksum (IPv4 header right).
    BadL4,
    /// Wrong IPv4 header checksum.
    BadIp,
}

impl Sum {
    fn of(b: u8) -> Sum {
        match b & 7 {
            0..=3 => Sum::Full,
            4 | 5 => Sum::Partial,
            6 => Sum::BadL4,
            _ => Sum::BadIp,
        }
    }

    fn csum(self) -> L4Checksum {
        if self == Sum::Partial { L4Checksum::Partial } else { L4Checksum::Full }
    }

    fn apply(self, pkt: &mut [u8]) {
        repair(pkt, self.csum());
        match self {
            Sum::BadL4 => {
                if let Ok(ip) = ipv4::Packet::new_checked(&*pkt) {
                    let at = ip.header_len() + 2;
                    if at < ip.total_len() {
                        pkt[at] ^= 0x5a;
                    }
                }
            }
            Sum::BadIp if pkt.len() > 11 => pkt[11] ^= 0x01,
            _ => {}
        }
    }
}

impl Run {
    /// An L4 segment of `proto` with payload and fields from the input.
    fn l4(&self, r: &mut Input, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        match proto {
            ipv4::PROTO_TCP => {
                let (flags, seq, ack) = (r.u8(), r.u32(), r.u32());
                tcp(sport, dport, seq, ack, flags, r.chunk())
            }
            ipv4::PROTO_UDP => udp::emit(sport, dport, r.chunk()),
            ipv4::PROTO_ICMP => {
                let kind = match r.u8() {
                    k @ 0..=15 => [8, 0, 8, 0, 13, 14, 3, 11, 5, 9, 12, 4, 8, 0, 17, 30][usize::from(k)],
                    k => k,
                };
                let code = r.u8();
                let seq = r.u16();
                icmp_msg(kind, code, sport, seq, r.chunk())
            }
            ipv4::PROTO_GRE => {
                let b = r.u8();
                let call = if b & 1 == 0 { dport } else { r.u16() };
                let mut g = gre::emit_pptp(call, (b & 2 != 0).then(|| u32::from(b)), None, r.chunk());
                if b & 0x80 != 0 {
                    // Other flags and versions, as the input says.
                    g[0] = r.u8();
                    g[1] = r.u8();
                }
                g
            }
            ipv4::PROTO_ESP => {
                let (spi, seq) = (r.u32(), r.u32());
                esp::emit(spi, seq, r.chunk())
            }
            _ => r.chunk().to_vec(),
        }
    }

    /// IP-level extras from one input byte: TTL, options, fragment bits.
    fn wrap(&self, r: &mut Input, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let b = r.u8();
        let ttl = if b & 1 != 0 { 1 + (b >> 7) } else { 64 };
        let opts: Vec<u8> = match (b >> 1) & 3 {
            0 | 1 => Vec::new(),
            // Record route: a well-formed option the NAT passes.
            2 => vec![7, 7, 4, 0, 0, 0, 0, 1],
            // Whatever the input says (loose source route, garbage).
            _ => {
                let n = 4 * usize::from(r.u8() % 3 + 1);
                r.bytes(n).to_vec()
            }
        };
        let frag = match (b >> 3) & 7 {
            0..=4 => 0,
            5 => 0x4000,           // don't fragment
            6 => 0x2000,           // a first fragment
            _ => r.u16() & 0x3fff, // any offset, with or without more
        };
        ip_packet(src, dst, proto, l4, u16::from(b) << 4 | 1, ttl, &opts, frag)
    }

    /// A port from the input: a fixed per-host one, a well-known one, one
    /// the NAT gave out, or any.
    fn port(&self, r: &mut Input, i: usize) -> u16 {
        match r.u8() % 8 {
            0 | 1 => 40000 + i as u16,
            2 => l2tp::PORT,
            3 => ike::PORT,
            4 => ike::NAT_T_PORT,
            5 => 1723,
            6 if !self.flows.is_empty() => {
                let f = self.flows[usize::from(r.u8()) % self.flows.len()];
                f.public
            }
            _ => r.u16(),
        }
    }

    fn proto(b: u8) -> u8 {
        [
            ipv4::PROTO_UDP,
            ipv4::PROTO_TCP,
            ipv4::PROTO_ICMP,
            ipv4::PROTO_UDP,
            ipv4::PROTO_GRE,
            ipv4::PROTO_ESP,
            ipv4::PROTO_TCP,
            132,
        ][usize::from(b & 7)]
    }

    /// A LAN host sends.
    fn lan_sends(&mut self, r: &mut Input) {
        let sel = r.u8();
        let hi = usize::from(sel & 3);
        let (host, remote) = (self.hosts[hi], self.remotes[usize::from(sel >> 2) & 7]);
        let src = if sel & 0x80 != 0 && r.u8() < 32 { addr_or_zero(r.bytes(4), 0) } else { host };
        let proto = Run::proto(r.u8());
        let (sport, dport) = (self.port(r, hi), self.port(r, hi + 8));
        let l4 = self.l4(r, proto, sport, dport);
        let sum = Sum::of(r.u8());
        let mut pkt = self.wrap(r, src, remote, proto, &l4);
        sum.apply(&mut pkt);
        self.packet(Side::Lan, pkt, sum.csum(), true);
    }

    /// A WAN host sends to the public address (or elsewhere).
    fn wan_sends(&mut self, r: &mut Input) {
        let sel = r.u8();
        let src = match sel & 0x0f {
            0..=5 => self.remotes[usize::from(sel & 7)],
            6 | 7 => [203, 0, 113, 9],
            _ => addr_or_zero(r.bytes(4), 0),
        };
        let dst = match sel >> 6 {
            0 | 1 => self.wan_addr,
            2 => self.hosts[usize::from(sel >> 4) & 3],
            _ => addr_or_zero(r.bytes(4), 0),
        };
        let proto = Run::proto(r.u8());
        let (sport, dport) = (self.port(r, 0), self.port(r, 1));
        let l4 = self.l4(r, proto, sport, dport);
        let sum = Sum::of(r.u8());
        let mut pkt = self.wrap(r, src, dst, proto, &l4);
        sum.apply(&mut pkt);
        self.packet(Side::Wan, pkt, sum.csum(), true);
    }

    /// The remote of a flow answers (or a stranger, pretending).
    fn reply(&mut self, r: &mut Input) {
        if self.flows.is_empty() {
            return self.wan_sends(r);
        }
        let f = self.flows[usize::from(r.u8()) % self.flows.len()];
        let how = r.u8();
        let (src, sport) = match how & 3 {
            0 | 1 => (f.remote, f.rport),
            2 => (f.remote, f.rport.wrapping_add(1)),
            _ => ([203, 0, 113, 66], f.rport),
        };
        let l4 = match f.proto {
            ipv4::PROTO_ICMP => {
                let seq = r.u16();
                icmp_msg(icmp::ECHO_REPLY, 0, f.public, seq, r.chunk())
            }
            p => self.l4(r, p, sport, f.public),
        };
        let sum = Sum::of(how >> 2);
        let mut pkt = ip_packet(src, self.wan_addr, f.proto, &l4, u16::from(how), 60, &[], 0);
        sum.apply(&mut pkt);
        self.packet(Side::Wan, pkt, sum.csum(), true);
    }

    /// An ICMP error: from the WAN about a flow (from its remote or a
    /// router on the way), or from a LAN host about what it was sent.
    fn icmp_error(&mut self, r: &mut Input) {
        let b = r.u8();
        let (kind, code) = ([3, 11, 4, 12][usize::from(b & 3)], r.u8() % 5);
        if b & 4 == 0 && !self.flows.is_empty() {
            let f = self.flows[usize::from(r.u8()) % self.flows.len()];
            // The packet as it left: from the public endpoint to the remote.
            let inner_l4 = match f.proto {
                ipv4::PROTO_TCP => tcp(f.public, f.rport, r.u32(), 0, 0x02, &[]),
                ipv4::PROTO_UDP => udp::emit(f.public, f.rport, r.bytes(4)),
                ipv4::PROTO_ICMP => icmp_msg(icmp::ECHO_REQUEST, 0, f.public, 1, r.bytes(4)),
                _ => r.bytes(8).to_vec(),
            };
            let mut inner = ip_packet(self.wan_addr, f.remote, f.proto, &inner_l4, 7, 1, &[], 0);
            repair(&mut inner, L4Checksum::Full);
            let from = match b >> 6 {
                0 | 1 => f.remote,
                2 => [203, 0, 113, 1],
                _ => addr_or_zero(r.bytes(4), 0),
            };
            let cut = if b & 8 != 0 { &inner[..] } else { quote(&inner) };
            let l4 = icmp_msg(kind, code, 0, 0, cut);
            let mut pkt = ip_packet(from, self.wan_addr, ipv4::PROTO_ICMP, &l4, 9, 64, &[], 0);
            repair(&mut pkt, L4Checksum::Full);
            self.packet(Side::Wan, pkt, L4Checksum::Full, true);
        } else if let Some(got) = self.delivered.get(usize::from(r.u8()) % self.delivered.len().max(1)).cloned() {
            let ip = ipv4::Packet::new_unchecked(&got[..]);
            let (host, peer) = (ip.dst_bytes(), ip.src_bytes());
            let l4 = icmp_msg(kind, code, 0, 0, quote(&got));
            let mut pkt = ip_packet(host, peer, ipv4::PROTO_ICMP, &l4, 10, 64, &[], 0);
            repair(&mut pkt, L4Checksum::Full);
            self.packet(Side::Lan, pkt, L4Checksum::Full, true);
        }
    }

    /// A datagram in fragments, in an order the input picks.
    fn fragments(&mut self, r: &mut Input) {
        let b = r.u8();
        let side = if b & 1 == 0 { Side::Wan } else { Side::Lan };
        let (src, dst, proto, l4) = match (side, self.flows.is_empty()) {
            (Side::Wan, false) => {
                let f = self.flows[usize::from(r.u8()) % self.flows.len()];
                let l4 = match f.proto {
                    ipv4::PROTO_TCP | ipv4::PROTO_UDP => self.l4(r, f.proto, f.rport, f.public),
                    ipv4::PROTO_ICMP => icmp_msg(icmp::ECHO_REPLY, 0, f.public, 1, r.chunk()),
                    p => self.l4(r, p, 0, 0),
                };
                (f.remote, self.wan_addr, f.proto, l4)
            }
            _ => {
                let hi = usize::from(b >> 1) & 3;
                let (host, remote) = (self.hosts[hi], self.remotes[usize::from(b >> 3) % 6]);
                let proto = Run::proto(r.u8());
                let (sport, dport) = (self.port(r, hi), self.port(r, hi + 8));
                let l4 = self.l4(r, proto, sport, dport);
                let (s, d) = if side == Side::Lan { (host, remote) } else { (remote, self.wan_addr) };
                (s, d, proto, l4)
            }
        };
        let mut whole = ip_packet(src, dst, proto, &l4, r.u16(), 64, &[], 0);
        repair(&mut whole, L4Checksum::Full);
        let l4 = &whole[ipv4::MIN_HEADER_LEN..];
        let ident = be16(&whole, 4);
        // Cut points at multiples of 8 bytes.
        let first = (8 * (1 + usize::from(r.u8() % 4))).min(l4.len());
        let second = (first + 8 * (1 + usize::from(r.u8() % 8))).min(l4.len());
        let mut parts = Vec::new();
        for (from, to) in [(0, first), (first, second), (second, l4.len())] {
            if to > from || from == 0 {
                let more = if to < l4.len() { 0x2000 } else { 0 };
                let word = more | (from / 8) as u16;
                let mut p = ip_packet(src, dst, proto, &l4[from..to], ident, 64, &[], word);
                repair(&mut p, L4Checksum::Full);
                parts.push(p);
            }
        }
        let order = r.u8();
        if order & 1 != 0 {
            parts.reverse();
        }
        if order & 2 != 0 && parts.len() > 2 {
            parts.swap(0, 1);
        }
        if order & 4 != 0 {
            let dup = parts[0].clone();
            parts.push(dup);
        }
        for p in parts {
            self.packet(side, p, L4Checksum::Full, true);
        }
    }

    /// Bytes as a packet from either side, checksums repaired or not.
    fn raw(&mut self, r: &mut Input, side: Side) {
        let how = r.u8();
        let n = usize::from(r.u16() % 1600);
        let mut pkt = r.bytes(n).to_vec();
        let csum = match how & 3 {
            0 => {
                repair(&mut pkt, L4Checksum::Full);
                L4Checksum::Full
            }
            1 => {
                repair(&mut pkt, L4Checksum::Partial);
                L4Checksum::Partial
            }
            2 => L4Checksum::Partial,
            _ => L4Checksum::Full,
        };
        self.packet(side, pkt, csum, how & 4 == 0);
    }

    /// ARP from a neighbour, or a raw Ethernet frame (the link only).
    fn link_frame(&mut self, r: &mut Input) {
        if !self.driver.link {
            return self.raw(r, Side::Lan);
        }
        let b = r.u8();
        let side = if b & 1 == 0 { Side::Lan } else { Side::Wan };
        let me = match side {
            Side::Lan => (LAN_MAC, self.lan_addr),
            Side::Wan => (WAN_MAC, self.wan_addr),
        };
        let frame = if b & 2 == 0 {
            let who = match (b >> 2) & 7 {
                0..=3 if side == Side::Lan => self.hosts[usize::from(b >> 2) & 3],
                0..=5 => self.remotes[usize::from(b >> 2) % 6],
                _ => addr_or_zero(r.bytes(4), 0),
            };
            let sha = if b & 0x20 == 0 { mac_of(who) } else { [2, 0x66, 0, 0, 0, r.u8()] };
            let tpa = if b & 0x40 == 0 { me.1 } else { addr_or_zero(r.bytes(4), 0) };
            let op = if b & 0x80 == 0 { arp::OP_REQUEST } else { arp::OP_REPLY };
            let mut f = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
            f[0..6].copy_from_slice(if op == arp::OP_REQUEST { &ethernet::BROADCAST } else { &me.0 });
            f[6..12].copy_from_slice(&sha);
            f[12..14].copy_from_slice(&ethernet::ETHERTYPE_ARP.to_be_bytes());
            arp::emit(&mut f[ethernet::HEADER_LEN..], op, sha, who, [0; 6], tpa);
            f
        } else {
            let n = usize::from(r.u16() % 1600);
            let mut f = r.bytes(n).to_vec();
            if b & 4 != 0 && f.len() >= 6 {
                f[0..6].copy_from_slice(&me.0);
            }
            if b & 8 != 0 && f.len() > ethernet::HEADER_LEN {
                repair(&mut f[ethernet::HEADER_LEN..], L4Checksum::Full);
            }
            f
        };
        let offload = if self.driver.vnet {
            let mut hdr = [0u8; VNET_HDR_LEN];
            hdr.copy_from_slice(&{
                let mut h = [0u8; VNET_HDR_LEN];
                let got = r.bytes(VNET_HDR_LEN);
                h[..got.len()].copy_from_slice(got);
                h
            });
            crate::nat::run::offload_of(&hdr, &frame)
        } else {
            Offload::NONE
        };
        self.frame(side, frame, offload);
    }

    /// Runs the ops of the input.
    fn play(&mut self, r: &mut Input) {
        for _ in 0..MAX_OPS {
            if r.is_empty() {
                break;
            }
            match r.u8() % 16 {
                0..=3 => self.lan_sends(r),
                4 | 5 => self.wan_sends(r),
                6 | 7 => self.reply(r),
                8 => self.raw(r, Side::Lan),
                9 => self.raw(r, Side::Wan),
                10 => {
                    let ms = u64::from(r.u8()) * 10;
                    self.advance(ms);
                }
                11 => {
                    let b = r.u8();
                    let ms = u64::from(b & 0x3f) * if b & 0x40 != 0 { 60_000 } else { 1000 };
                    self.advance(if b & 0x80 != 0 { ms * 100 } else { ms });
                }
                12 => self.link_frame(r),
                13 => self.fragments(r),
                14 => self.icmp_error(r),
                _ => self.link_frame(r),
            }
        }
        self.advance(0);
        self.finish();
    }
}

/// A profile from three input bytes (and more when they ask): a preset,
/// behaviour overrides, small limits and timeouts so that bounds and
/// expiry are reached, port ranges, ALG choices, blocked protocols,
/// impairments.
fn fuzz_profile(r: &mut Input) -> Profile {
    let a = r.u8();
    let mut p = Profile::preset(PRESETS[usize::from(a) % PRESETS.len()]).unwrap_or_default();
    let behaviour = |b: u8| {
        [Behaviour::EndpointIndependent, Behaviour::AddressDependent, Behaviour::AddressAndPortDependent]
            [usize::from(b % 3)]
    };
    let b = r.u8();
    if b & 1 != 0 {
        p.mapping = behaviour(a >> 4);
    }
    if b & 2 != 0 {
        p.filtering = behaviour(a >> 6);
    }
    if b & 4 != 0 {
        p.port_preservation = !p.port_preservation;
    }
    if b & 8 != 0 {
        p.hairpinning = !p.hairpinning;
    }
    if b & 0x10 != 0 {
        let low = 1024 + r.u16() % 60000;
        p.port_range.low = low;
        p.port_range.high = low.saturating_add(u16::from(r.u8() % 8));
    }
    if b & 0x20 != 0 {
        p.shared_remote = match p.shared_remote {
            SharedRemote::NewestWins => SharedRemote::OldestKeeps,
            SharedRemote::OldestKeeps => SharedRemote::NewestWins,
        };
        p.pptp_call_ids = match p.pptp_call_ids {
            CallIdChoice::Unique => CallIdChoice::ControlPort,
            CallIdChoice::ControlPort => CallIdChoice::Unique,
        };
    }
    if b & 0x40 != 0 {
        let m = r.u8();
        p.pptp = [PptpMode::Off, PptpMode::Naive, PptpMode::CallId][usize::from(m % 3)];
        p.l2tp = [L2tpMode::Off, L2tpMode::Naive, L2tpMode::TunnelId][usize::from((m >> 2) % 3)];
        p.ipsec = [IpsecMode::Off, IpsecMode::Naive, IpsecMode::Spi, IpsecMode::Tracker][usize::from((m >> 4) % 4)];
        p.nat_t = m & 0x40 == 0;
        if p.ipsec == IpsecMode::Tracker {
            // A small table with a short unreplied timeout, serving the
            // whole LAN or a prefix that leaves part of it out.
            let e = r.u8();
            p.esp_tracker.entries = 1 + usize::from(e % 4);
            p.esp_tracker.unreplied_timeout = 1 + u64::from(e >> 2 & 7);
            p.esp_tracker.follows_rekey = e & 0x20 == 0;
            if e & 0x40 != 0 {
                p.esp_tracker.lans = vec![Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 17).unwrap_or_default()];
            }
        }
        if m & 0x80 != 0 {
            p.blocked.insert(Protocol::ALL[usize::from(r.u8()) % 6]);
        }
    }
    let c = r.u8();
    if c & 1 != 0 {
        // Small bounds, so that every one of them is reached.
        let mut small = || 1 + usize::from(r.u8() % 4);
        p.max_mappings = small() + 2;
        let l = &mut p.limits;
        l.mappings_per_host = small();
        l.remotes_per_mapping = small();
        l.sessions = small() + 2;
        l.pptp_controls = small();
        l.pptp_calls = small();
        l.pptp_calls_per_host = small();
        l.l2tp_tunnels = small();
        l.l2tp_tunnels_per_host = small();
        l.ipsec_sas = small();
        l.ipsec_sas_per_host = small();
        l.fragment_datagrams = small();
        l.fragments_waiting = small();
        l.vpn_flows = small();
        l.vpn_flows_per_host = small();
        l.neighbours = small();
        l.icmp_per_second = 1 + u32::from(r.u8() % 4);
    }
    if c & 2 != 0 {
        // Short timeouts, so that state expires within a run.
        let mut short = || 1 + u64::from(r.u8() % 20);
        let t = &mut p.timeouts;
        (t.udp, t.tcp_established, t.tcp_transitory) = (short(), short(), short());
        (t.icmp, t.other, t.fragment) = (short(), short(), short());
    }
    if c & 4 != 0 {
        let i = &mut p.impair;
        let dir = if c & 8 != 0 { &mut i.inbound } else { &mut i.outbound };
        dir.loss_percent = f64::from(r.u8() % 51);
        dir.delay_ms = u64::from(r.u8());
        dir.jitter_ms = u64::from(r.u8() % 50);
        dir.reorder_percent = f64::from(r.u8() % 51);
        dir.duplicate_percent = f64::from(r.u8() % 51);
        i.seed = u64::from(r.u8());
    }
    p
}

/// Addressing and gateway from an input byte.
fn fuzz_net(b: u8) -> (Ipv4Net, Ipv4Net, Option<Ipv4Addr>) {
    let net = |s: &str| s.parse::<Ipv4Net>().unwrap_or_else(|_| broken("static addressing", s.to_string()));
    let (lan, wan) = match b & 3 {
        0 => (net("192.168.1.1/24"), net("198.51.100.1/24")),
        1 => (net("10.0.0.1/8"), net("198.51.100.1/30")),
        2 => (net("192.168.1.1/29"), net("198.51.100.0/31")),
        _ => (net("172.16.5.1/24"), net("100.64.0.1/10")),
    };
    let gateway = match (b >> 2) & 3 {
        0 => None,
        1 => Some(Ipv4Addr::from(host_in(wan, 254))),
        2 => Some(Ipv4Addr::new(203, 0, 113, 1)),
        _ => Some(Ipv4Addr::from(host_in(wan, 2))),
    };
    (lan, wan, gateway)
}

fn fuzz_driver(b: u8, r: &mut Input) -> Driver {
    let link_limits = if b & 8 != 0 {
        let v = r.u8();
        LinkLimits {
            neighbours: 1 + usize::from(v & 3),
            resolving: 1 + usize::from((v >> 2) & 3),
            frames_per_neighbour: 1 + usize::from((v >> 4) & 3),
            queued_bytes: 64 + 256 * usize::from(v >> 6),
        }
    } else {
        LinkLimits::default()
    };
    Driver { link: b & 1 != 0, vnet: b & 2 != 0, answer_arp: b & 4 == 0, link_limits }
}

/// The `nat` target. The input: a profile (see `fuzz_profile`), an
/// addressing and gateway byte, a driver byte (direct or through the link
/// layer, virtio-net headers, ARP answered, small neighbour tables), then
/// ops: packets from LAN hosts and WAN hosts built from the input with
/// their checksums repaired (or deliberately not), answers to the flows the
/// NAT opened and strangers pretending to be them, raw packets and frames,
/// ARP, fragments in any order, ICMP errors both ways, and a fake clock
/// that moves and runs the timers. Invariants: see [`Watch`] and
/// `fuzz/README.md`.
pub fn nat(data: &[u8]) {
    let mut r = Input::new(data);
    let profile = fuzz_profile(&mut r);
    let (lan, wan, gateway) = fuzz_net(r.u8());
    let d = r.u8();
    let driver = fuzz_driver(d, &mut r);
    let mut run = Run::new(Config { lan, wan, gateway, profile, seed: 1 }, driver);
    run.play(&mut r);
}

// ---- PPTP and L2TP ----------------------------------------------------------

fn lan_wan() -> (Ipv4Net, Ipv4Net) {
    let lan = "192.168.1.1/24".parse().unwrap_or_else(|_| broken("static", "lan"));
    let wan = "198.51.100.1/24".parse().unwrap_or_else(|_| broken("static", "wan"));
    (lan, wan)
}

/// The `pptp` target: PPTP control streams of any bytes, in any
/// segmentation, both ways, with retransmissions (complete checksums or
/// left to hardware), and enhanced GRE both ways between. The input's
/// first byte picks the Call ID choice; then (control, length, payload)
/// records. Same invariants as [`nat`].
pub fn pptp(data: &[u8]) {
    const CLIENT: [u8; 4] = [192, 168, 1, 10];
    const SERVER: [u8; 4] = [198, 51, 100, 2];
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let mut profile = Profile::default();
    if mode & 1 == 1 {
        profile.pptp_call_ids = CallIdChoice::ControlPort;
    }
    if mode & 2 != 0 {
        profile.limits.pptp_calls = 2;
        profile.limits.pptp_calls_per_host = 1;
    }
    let (lan, wan) = lan_wan();
    let mut run = Run::new(
        Config { lan, wan, gateway: None, profile, seed: 1 },
        Driver { link: false, vnet: false, answer_arp: true, link_limits: LinkLimits::default() },
    );
    let wan_addr = run.wan_addr;
    let seg = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, flags: u8, payload: &[u8], csum| {
        let mut p = ip_packet(src, dst, ipv4::PROTO_TCP, &tcp(sport, dport, seq, 0, flags, payload), 1, 64, &[], 0);
        repair(&mut p, csum);
        p
    };
    run.process(Side::Lan, seg(CLIENT, 40000, SERVER, 1723, 99, 0x02, b"", L4Checksum::Full), L4Checksum::Full);
    let public = run.flows.first().map_or(40000, |f| f.public);
    run.process(Side::Wan, seg(SERVER, 1723, wan_addr, public, 499, 0x12, b"", L4Checksum::Full), L4Checksum::Full);
    let (mut out_seq, mut in_seq) = (100u32, 500u32);
    while rest.len() >= 2 {
        let (ctl, len) = (rest[0], usize::from(rest[1]));
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (payload, tail) = rest.split_at(take);
        rest = tail;
        let back = if ctl & 2 != 0 { take as u32 } else { 0 };
        let csum = if ctl & 8 != 0 { L4Checksum::Partial } else { L4Checksum::Full };
        if ctl & 1 == 0 {
            let p = seg(CLIENT, 40000, SERVER, 1723, out_seq.wrapping_sub(back), 0x18, payload, csum);
            run.process(Side::Lan, p, csum);
            out_seq = out_seq.wrapping_add(take as u32 - back.min(take as u32));
        } else {
            let p = seg(SERVER, 1723, wan_addr, public, in_seq.wrapping_sub(back), 0x18, payload, csum);
            run.process(Side::Wan, p, csum);
            in_seq = in_seq.wrapping_add(take as u32 - back.min(take as u32));
        }
        if ctl & 4 != 0 {
            let call = u16::from(ctl >> 4) | (u16::from(len as u8) << 4);
            let mut g = ip_packet(
                SERVER,
                wan_addr,
                ipv4::PROTO_GRE,
                &gre::emit_pptp(call, Some(1), None, b"\xff\x03"),
                2,
                64,
                &[],
                0,
            );
            repair(&mut g, L4Checksum::Full);
            run.process(Side::Wan, g, L4Checksum::Full);
            let mut g =
                ip_packet(CLIENT, SERVER, ipv4::PROTO_GRE, &gre::emit_pptp(call, None, None, b""), 2, 64, &[], 0);
            repair(&mut g, L4Checksum::Full);
            run.process(Side::Lan, g, L4Checksum::Full);
        }
    }
    run.advance(100_000_000);
    run.finish();
}

/// The `l2tp` target: L2TP datagrams of any bytes on UDP 1701 from three
/// clients and two servers (one answering from a new port), the clock
/// moving. Records: (control, length, payload). Same invariants as [`nat`].
pub fn l2tp(data: &[u8]) {
    let (lan, wan) = lan_wan();
    let mut profile = Profile::default();
    if data.first().is_some_and(|b| b & 0x08 != 0) {
        profile.limits.l2tp_tunnels = 2;
        profile.limits.l2tp_tunnels_per_host = 1;
    }
    let mut run = Run::new(
        Config { lan, wan, gateway: None, profile, seed: 1 },
        Driver { link: false, vnet: false, answer_arp: true, link_limits: LinkLimits::default() },
    );
    let clients = [[192, 168, 1, 10], [192, 168, 1, 11], [192, 168, 1, 12]];
    let servers = [[198, 51, 100, 2], [198, 51, 100, 3]];
    let mut rest = data;
    let mut t = 0u64;
    while rest.len() >= 2 {
        let (ctl, len) = (rest[0], usize::from(rest[1]));
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (payload, tail) = rest.split_at(take);
        rest = tail;
        let client = clients[usize::from(ctl >> 2) % 3];
        let server = servers[usize::from(ctl >> 4) & 1];
        let port = if ctl & 0x40 != 0 { 40000 } else { l2tp::PORT };
        t += u64::from(ctl >> 7) * 30;
        if t * 1000 > run.now_ms {
            run.advance(t * 1000 - run.now_ms);
        }
        let csum = if ctl & 2 != 0 { L4Checksum::Partial } else { L4Checksum::Full };
        let (side, mut p) = if ctl & 1 == 0 {
            (
                Side::Lan,
                ip_packet(client, server, ipv4::PROTO_UDP, &udp::emit(l2tp::PORT, port, payload), 1, 64, &[], 0),
            )
        } else {
            (
                Side::Wan,
                ip_packet(server, run.wan_addr, ipv4::PROTO_UDP, &udp::emit(port, l2tp::PORT, payload), 1, 64, &[], 0),
            )
        };
        repair(&mut p, csum);
        run.process(side, p, csum);
    }
    run.finish();
}

/// A short story in the op format of [`nat`] (after its header): a UDP
/// exchange, a TCP handshake, an echo and its reply, fragments arriving
/// last first, GRE, ESP, an L2TP SCCRQ, an IKE_SA_INIT, a packet whose TTL
/// runs out, a hairpinned one, an ICMP error about a flow, and time passing
/// far enough for everything to expire. The `profile` target plays it with
/// every profile it loads; seeds of the `nat` target start from it.
pub fn canned_ops() -> Vec<u8> {
    let sccrq = l2tp::emit_control(0, 0, l2tp::SCCRQ, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, 0x1234)]);
    let ike = ike::emit(0x1122_3344_5566_7788, 0, b"");
    let mut o: Vec<u8> = Vec::new();
    // UDP from host 0 to server 0 port 53, and the answer.
    o.extend([0, 0x00, 0, 0, 7, 0, 53, 4, b'd', b'n', b's', b'?', 0, 0]);
    o.extend([6, 0, 0, 2, b'o', b'k']);
    // TCP SYN from host 1 to port 80, and the SYN-ACK.
    o.extend([1, 0x01, 1, 0, 7, 0, 80, 0x02, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    o.extend([6, 1, 0, 0x12, 0, 0, 0, 9, 0, 0, 0, 2, 0]);
    // An echo request from host 2 to server 0, and the reply.
    o.extend([2, 0x02, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    o.extend([7, 2, 0, 0, 1, 0]);
    // Five seconds.
    o.extend([11, 5]);
    // A UDP answer to the first flow in three fragments, last first.
    o.extend([13, 0, 0, 40]);
    o.extend(0u8..40);
    o.extend([0x12, 0x34, 0, 1, 1]);
    // GRE and ESP from host 0.
    o.extend([0, 0x00, 4, 0, 5, 0, 0, 0, 0]);
    o.extend([0, 0x00, 5, 0, 0, 0, 0, 0x10, 1, 0, 0, 0, 1, 0, 0, 0]);
    // L2TP SCCRQ from host 0 (1701 to 1701), IKE from host 1 (500 to 500).
    o.extend([0, 0x00, 3, 2, 2, sccrq.len() as u8]);
    o.extend(&sccrq);
    o.extend([0, 0]);
    o.extend([0, 0x01, 0, 3, 3, ike.len() as u8]);
    o.extend(&ike);
    o.extend([0, 0]);
    // TTL 1; then host 1 to the public address (hairpin to flow 0).
    o.extend([0, 0x00, 0, 0, 0, 0, 0, 0x01]);
    o.extend([0, 0x19, 0, 0, 6, 0, 0, 0, 0]);
    // Port unreachable from server 0 about flow 0.
    o.extend([14, 0, 3, 0, 1, 2, 3, 4]);
    // Long enough for everything to expire.
    o.extend([11, 0xff, 10, 1]);
    o
}

/// The `profile` target: any text as a profile TOML. A profile that loads
/// passes its check, reads back the same after being written out, makes a
/// NAT, and the NAT keeps every invariant of [`nat`] through traffic: the
/// ops after a NUL byte in the input (an addressing byte, a driver byte,
/// then ops as in [`nat`]), or [`canned_ops`] through the link layer.
pub fn profile(data: &[u8]) {
    let (text, ops) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let p = match Profile::from_toml(text) {
        Ok(p) => p,
        Err(e) if e.is_empty() => broken("a refused profile says why", text),
        Err(_) => return,
    };
    if let Err(e) = p.check() {
        broken("a profile that loads passes its check", e);
    }
    match toml::to_string(&p).map(|back| Profile::from_toml(&back)) {
        Ok(Ok(q)) if q == p => {}
        other => broken("a profile written out reads back the same", format!("{other:?}")),
    }
    let canned;
    let mut r = match ops {
        Some(ops) => Input::new(ops),
        None => {
            canned = canned_ops();
            Input::new(&canned)
        }
    };
    let (lan, wan, gateway, driver) = if ops.is_some() {
        let (lan, wan, gateway) = fuzz_net(r.u8());
        let d = r.u8();
        (lan, wan, gateway, fuzz_driver(d, &mut r))
    } else {
        let (lan, wan) = lan_wan();
        (lan, wan, None, Driver { link: true, vnet: false, answer_arp: true, link_limits: LinkLimits::default() })
    };
    let mut run = Run::new(Config { lan, wan, gateway, profile: p, seed: 1 }, driver);
    run.play(&mut r);
}

// ---- PPP -------------------------------------------------------------------

const PPP_SECRET: &str = "Jq4-xV9w-7Lm2-Kd8z";
const PPP_SERVER_SECRET: &str = "Rt5-Wn3c-9Hb6-Qe1y";

fn secret(client: &str, server: &str, s: &str) -> Secret {
    Secret { client: client.into(), server: server.into(), secret: s.into() }
}

/// Our session's configuration and the honest peer's, by role.
fn ppp_configs(role: u8) -> (session::SessionConfig, session::SessionConfig) {
    let server = session::SessionConfig {
        name: "lns".into(),
        secrets: vec![secret("alice", "lns", PPP_SECRET)],
        local_ip: Some(Ipv4Addr::new(10, 97, 0, 1)),
        remote_ip: Some(Ipv4Addr::new(10, 97, 0, 100)),
        magic: 0x1111_1111,
        ..session::SessionConfig::default()
    };
    let client = session::SessionConfig {
        name: "alice".into(),
        user: Some("alice".into()),
        secret: Some(PPP_SECRET.into()),
        magic: 0x2222_2222,
        ..session::SessionConfig::default()
    };
    let with = |c: &session::SessionConfig, f: &dyn Fn(&mut session::SessionConfig)| {
        let mut c = c.clone();
        f(&mut c);
        c
    };
    // Both ends authenticate: the server with its own secret.
    let mutual_server = with(&server, &|c| {
        c.require = Some(AuthProto::ChapMd5);
        c.secret = Some(PPP_SERVER_SECRET.into());
    });
    let mutual_client = with(&client, &|c| {
        c.require = Some(AuthProto::ChapMd5);
        c.secrets = vec![secret("lns", "alice", PPP_SERVER_SECRET)];
    });
    match role % 8 {
        0 => (with(&server, &|c| c.require = Some(AuthProto::Pap)), client),
        1 => (with(&server, &|c| c.require = Some(AuthProto::ChapMd5)), client),
        2 => (with(&server, &|c| c.echo_interval = Some(Duration::from_secs(2))), client),
        3 => (client, with(&server, &|c| c.require = Some(AuthProto::Pap))),
        4 => (
            with(&client, &|c| {
                c.silent = true;
                c.local_ip = Some(Ipv4Addr::new(10, 97, 0, 100));
            }),
            with(&server, &|c| c.require = Some(AuthProto::ChapMd5)),
        ),
        5 => (
            with(&client, &|c| {
                c.passive = true;
                c.mru = 1400;
                c.echo_interval = Some(Duration::from_secs(1));
                c.echo_failure = 2;
            }),
            server,
        ),
        6 => (mutual_server, mutual_client),
        _ => (mutual_client, mutual_server),
    }
}

/// What a session has told, checked as it goes.
#[derive(Default)]
struct Told {
    up: bool,
    down: bool,
}

/// Polls a session's events: frames to send (checked, and to `wire`), link
/// state (checked against what was told before).
fn ppp_events(s: &mut Session, told: &mut Told, wire: &mut Vec<Vec<u8>>, who: &str) {
    let was_down = told.down;
    for n in 0.. {
        let Some(ev) = s.poll_event() else { break };
        if n > 1000 {
            broken("a session's events end", who);
        }
        match ev {
            Event::Send(frame, accm) => {
                if frame.len() < 4 || frame[0..2] != [0xff, 0x03] {
                    broken("a PPP frame has address, control and protocol", format!("{who}: {}", hex(&frame)));
                }
                let proto = u16::from_be_bytes([frame[2], frame[3]]);
                if matches!(proto, session::PROTO_LCP | session::PROTO_IPCP | session::PROTO_PAP | session::PROTO_CHAP)
                    && (frame.len() < 8 || usize::from(be16(&frame, 6)) != frame.len() - 4)
                {
                    broken("a control packet's length is its length", format!("{who}: {}", hex(&frame)));
                }
                if frame.len() + 2 <= hdlc::MAX_FRAME {
                    let mut line = Vec::new();
                    hdlc::encode(&frame, accm, &mut line);
                    if line[1..line.len() - 1].iter().any(|b| *b == hdlc::FLAG || (*b < 0x20 && accm & (1 << b) != 0)) {
                        broken("HDLC escapes flags and what the ACCM asks", hex(&line));
                    }
                    if hdlc::Decoder::new().feed(&line) != vec![Ok(frame.clone())] {
                        broken("a frame survives HDLC framing", hex(&frame));
                    }
                }
                if was_down {
                    broken("a dead session sends nothing", format!("{who}: {}", hex(&frame)));
                }
                wire.push(frame);
            }
            Event::Up { .. } => {
                if told.up || told.down {
                    broken("a link comes up once, before it goes down", who);
                }
                told.up = true;
            }
            Event::Ip(_) => {
                if !told.up || told.down {
                    broken("IP is delivered only while the link is up", who);
                }
            }
            Event::Down { why, .. } => {
                if told.down || why.is_empty() {
                    broken("a link goes down once, saying why", who);
                }
                told.down = true;
            }
        }
    }
    if told.down != s.is_dead() {
        broken("a session is dead when it said it went down", who);
    }
}

/// The `ppp` target: PPP frames to a session. The first byte picks the
/// role (server requiring PAP, CHAP or nothing; client plain, silent,
/// passive with echoes; both ends authenticating), the second whether an
/// honest peer answers and whether injected bytes go through an HDLC
/// decoder. Then ops: deliver the peer's next frame (as is, corrupted, or
/// not at all), exchange frames until both ends are quiet, inject frames,
/// let time pass, send IP, terminate. Invariants: frames are well formed
/// and survive HDLC framing; the link comes up at most once and before it
/// goes down, goes down once and says why; IP only while up; a dead session
/// sends nothing; a live session's timers move forward (a few calls at one
/// instant clear whatever is due); and without an honest peer, a session
/// that requires authentication never comes up (PAP: unless the input
/// holds the password).
pub fn ppp(data: &[u8]) {
    let mut r = Input::new(data);
    let role = r.u8();
    let mode = r.u8();
    let (ours, theirs) = ppp_configs(role);
    let requires = ours.require;
    let with_peer = mode & 1 != 0;
    let line = mode & 2 != 0;
    let mut us = Session::new(ours);
    let mut peer = Session::new(theirs);
    let (mut told, mut peer_told) = (Told::default(), Told::default());
    let (mut to_us, mut to_peer) = (Vec::new(), Vec::new());
    let mut decoder = hdlc::Decoder::new();
    let mut now = Duration::ZERO;
    us.start(now);
    if with_peer {
        peer.start(now);
    }
    for _ in 0..MAX_OPS {
        ppp_events(&mut us, &mut told, &mut to_peer, "ours");
        ppp_events(&mut peer, &mut peer_told, &mut to_us, "peer");
        if !with_peer {
            to_us.clear();
        }
        // The honest direction: our frames reach the peer.
        for f in to_peer.drain(..) {
            if with_peer {
                peer.on_frame(&f, now);
            }
        }
        if r.is_empty() {
            break;
        }
        match r.u8() % 8 {
            0 if !to_us.is_empty() => {
                let f = to_us.remove(0);
                us.on_frame(&f, now);
            }
            1 if !to_us.is_empty() => {
                let mut f = to_us.remove(0);
                let at = usize::from(r.u8()) % f.len().max(1);
                if let Some(b) = f.get_mut(at) {
                    *b ^= r.u8() | 1;
                }
                us.on_frame(&f, now);
            }
            2 if !to_us.is_empty() => {
                to_us.remove(0);
            }
            0..=3 => {
                let bytes = r.chunk();
                if line {
                    for f in decoder.feed(bytes).into_iter().flatten() {
                        us.on_frame(&f, now);
                    }
                } else {
                    us.on_frame(bytes, now);
                }
            }
            4 => {
                let b = r.u8();
                now += if b & 0x80 != 0 {
                    us.next_timeout().map_or(Duration::from_secs(1), |t| t.saturating_sub(now))
                } else {
                    Duration::from_millis(u64::from(b) * 50)
                };
                // Dead sessions too: a finished link's timers send nothing.
                us.handle_timeout(now);
                if with_peer {
                    peer.handle_timeout(now);
                }
                // The I/O loop calls again at once while something is due:
                // a few calls must clear it (no busy loop).
                for _ in 0..4 {
                    ppp_events(&mut us, &mut told, &mut to_peer, "ours");
                    if us.is_dead() || us.next_timeout().is_none_or(|t| t > now) {
                        break;
                    }
                    us.handle_timeout(now);
                }
                if !us.is_dead() && us.next_timeout().is_some_and(|t| t <= now) {
                    broken("a live session's timers move forward", format!("{:?} at {now:?}", us.next_timeout()));
                }
            }
            5 => {
                // Dead sessions too: a finished link sends no IP.
                let bytes = r.chunk();
                us.send_ip(bytes);
                if with_peer {
                    peer.send_ip(bytes);
                }
            }
            6 => {
                // A fast network: frames both ways until both ends are quiet
                // (delivering one op late, every Ack would miss its Request).
                for _ in 0..16 {
                    for f in std::mem::take(&mut to_us) {
                        us.on_frame(&f, now);
                    }
                    ppp_events(&mut us, &mut told, &mut to_peer, "ours");
                    for f in to_peer.drain(..) {
                        if with_peer {
                            peer.on_frame(&f, now);
                        }
                    }
                    ppp_events(&mut peer, &mut peer_told, &mut to_us, "peer");
                    if to_us.is_empty() {
                        break;
                    }
                }
            }
            _ => {
                if r.u8() & 1 == 0 {
                    us.terminate(now, "fuzz");
                } else {
                    peer.terminate(now, "fuzz");
                }
            }
        }
    }
    ppp_events(&mut us, &mut told, &mut to_peer, "ours");
    if !with_peer && told.up && requires.is_some() {
        let pap_with_password =
            requires == Some(AuthProto::Pap) && data.windows(PPP_SECRET.len()).any(|w| w == PPP_SECRET.as_bytes());
        if !pap_with_password {
            broken(
                "a session that requires authentication comes up only for who authenticated",
                format!("{requires:?}"),
            );
        }
    }
}

// ---- Parsers ---------------------------------------------------------------

/// The `scenario` target: any text as a scenario file. A file that loads
/// gives names, targets, expectations and a profile for each of its modes;
/// an error names the file. The helpers for its fields take any text.
pub fn scenario(data: &[u8]) {
    use crate::scenario::format::{self as f, Scenario};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("scenarios/fuzz/fuzzed.toml");
    match Scenario::parse(path, text) {
        Ok(s) => {
            for t in s.targets() {
                let _ = s.name(t);
                if let Some(e) = s.expectation(t) {
                    let _ = e.summary();
                }
            }
            for m in s.file.modes.clone() {
                if let Err(e) = s.profile(m) {
                    broken("a scenario that loads has a profile for each of its modes", e);
                }
            }
            for i in 1..=s.file.topology.clients {
                let _ = s.server_of(i);
            }
            let _ = s.file.topology.shape();
        }
        Err(e) => {
            if !e.starts_with("scenarios/fuzz/fuzzed.toml") {
                broken("a scenario's error names its file", e);
            }
        }
    }
    let _ = f::check_case(text);
    let _ = f::ClientRef::try_from(text.to_string());
    let _ = f::PortRef::try_from(text.to_string());
    let _ = f::CountWant::try_from(text.to_string());
}

/// The `topology` target: any text as a topology TOML gives a plan or an
/// error, and every error prints.
pub fn topology(data: &[u8]) {
    use crate::lab::{Plan, Topology};
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(topology) = Topology::from_toml(text) {
        if let Err(e) = Plan::new(&topology) {
            let _ = e.to_string();
        }
    }
}

/// Writes a capture as classic pcap (little-endian, nanoseconds).
fn write_pcap(p: &Pcap) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(0xa1b2_3c4du32.to_le_bytes());
    f.extend([2, 0, 4, 0]);
    f.extend([0u8; 8]);
    f.extend(65535u32.to_le_bytes());
    f.extend(p.linktype.to_le_bytes());
    for r in &p.records {
        f.extend((r.time.as_secs() as u32).to_le_bytes());
        f.extend(r.time.subsec_nanos().to_le_bytes());
        f.extend((r.data.len() as u32).to_le_bytes());
        f.extend(r.orig_len.to_le_bytes());
        f.extend_from_slice(&r.data);
    }
    f
}

/// The `pcap` target: any bytes as a pcap file. A file reads or is refused
/// (shorter than a header, or another magic number); what reads holds no
/// more than the file did, is written back and read again the same, and
/// gives one fact per record (IPv4 or not), which the queries agree with.
pub fn pcap(data: &[u8]) {
    let p = match pcap::parse(data) {
        Ok(p) => p,
        Err(e) => {
            let short = e == pcap::PcapError::TooShort;
            if short != (data.len() < 24) || e.to_string().is_empty() {
                broken("a pcap file is refused for its header only", format!("{e:?}"));
            }
            return;
        }
    };
    let held: usize = p.records.iter().map(|r| 16 + r.data.len()).sum();
    if 24 + held > data.len() {
        broken("a capture holds no more than its file", format!("{held} bytes of records in {}", data.len()));
    }
    if p.records.iter().all(|r| r.time.as_secs() <= u64::from(u32::MAX))
        && pcap::parse(&write_pcap(&p)).as_ref() != Ok(&p)
    {
        broken("a capture written out reads back the same", "");
    }
    let facts = Facts::from_pcap(&p);
    if facts.packets.len() + facts.not_ipv4 != p.records.len() {
        broken(
            "every record is one fact",
            format!("{} + {} != {}", facts.packets.len(), facts.not_ipv4, p.records.len()),
        );
    }
    if facts.count(None, None, |_| true) != facts.packets.len() {
        broken("counting everything counts every packet", "");
    }
    let _ = facts.esp_spis(None, None);
    let _ = facts.pptp_outgoing_calls(None);
    if let Some(s) = facts.packets.first() {
        let _ = facts.gre_carrying_to(s.dst);
        let _ = facts.count(Some(s.src), None, |_| true);
    }
    for r in &p.records {
        let _ = classify(&r.data);
    }
    let _ = serde_json::to_string(&facts);
}
