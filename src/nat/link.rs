//! The NAT at the link layer, still sans I/O: Ethernet frames in, frames
//! out. It answers ARP for its own addresses, resolves next hops itself (a
//! few frames wait per unresolved neighbour), puts the right MAC addresses on
//! every frame it forwards, and applies the profile's impairments.
//!
//! The neighbour table is what any host of a segment can write to, so it
//! believes ARP the way a careful router does:
//!
//! - A MAC address is learned from the answer to a request the NAT sent
//!   (the first answer wins), and from a request addressed to the NAT, for
//!   its sender, as Linux does: the sender is about to talk to the NAT, and
//!   learning it spares a request. Nothing is learned from ARP between other
//!   hosts, from unsolicited replies or from gratuitous ARP (Linux's default
//!   `arp_accept = 0` does not create entries from them either).
//! - A known neighbour is never overwritten by ARP the NAT did not ask for
//!   (Linux updates it after a second's lock time, which is what ARP
//!   poisoning uses). Before a neighbour in use expires, the NAT asks it
//!   again by unicast, as Linux probes a stale entry; only its own MAC
//!   address can confirm it. When it stays silent the entry goes, and the
//!   next frame asks everyone: a gateway that moved to another MAC address
//!   is found again within [`NEIGHBOUR_TTL`].
//! - Only addresses a neighbour can have are learned or asked for: inside
//!   the interface's prefix (not its network or broadcast address, not the
//!   NAT's own), or the configured gateway on the WAN.
//! - The table is bounded ([`LinkLimits`]): known neighbours, neighbours
//!   being resolved, frames and bytes waiting. A request that would go past
//!   a bound is refused and counted (`neighbour-table-full`); the answer to
//!   a request the NAT sent makes room by forgetting the neighbour that
//!   expires first.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use super::Side;
use super::counters::DropReason;
use super::engine::{L4Checksum, Nat, Verdict};
use super::impair::Impairer;
use crate::wire::{arp, ethernet};

/// One of the NAT's two interfaces.
#[derive(Debug, Clone, Copy)]
pub struct Interface {
    /// Its MAC address.
    pub mac: [u8; 6],
    /// The NAT's address on it.
    pub addr: Ipv4Addr,
}

/// Offload state that travels with a frame: the L4 checksum state and the
/// packet socket's virtio-net header, passed back unchanged on transmit
/// (the NAT never changes header lengths, so its offsets stay right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
    /// Whether the L4 checksum is complete or left to hardware.
    pub csum: L4Checksum,
    /// The virtio-net header, if the socket uses one.
    pub vnet: Option<[u8; 10]>,
}

impl Offload {
    /// A plain frame: full checksum, no virtio-net header.
    pub const NONE: Offload = Offload { csum: L4Checksum::Full, vnet: None };
}

/// What to do with a frame after [`Link::on_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    /// Send the rewritten frame on this side.
    Send(Side),
    /// Kept (waiting for ARP, delayed by impairment, or answered).
    Consumed,
    /// Dropped; counted.
    Drop(DropReason),
}

/// A frame the link layer made or released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    /// Where to send it.
    pub side: Side,
    /// The Ethernet frame.
    pub frame: Vec<u8>,
    /// Its offload state.
    pub offload: Offload,
}

/// How long after the NAT learned an answer another answer to the same
/// request still counts as one (and contests the address).
const ANSWER_WINDOW: Duration = Duration::from_secs(2);
/// How long a neighbour's MAC address is used without being confirmed.
pub const NEIGHBOUR_TTL: Duration = Duration::from_secs(60);
/// A neighbour in use is asked again (by unicast) this long before its
/// entry expires.
const CONFIRM_BEFORE: Duration = Duration::from_secs(5);
const ARP_RETRY: Duration = Duration::from_secs(1);
const ARP_TRIES: u32 = 3;

/// Default of [`LinkLimits::neighbours`].
pub const DEFAULT_MAX_NEIGHBOURS: usize = 1024;
/// Default of [`LinkLimits::resolving`].
pub const DEFAULT_MAX_RESOLVING: usize = 256;
/// Default of [`LinkLimits::frames_per_neighbour`].
pub const DEFAULT_MAX_FRAMES_PER_NEIGHBOUR: usize = 32;
/// Default of [`LinkLimits::queued_bytes`].
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 4 << 20;

/// Bounds on what the link layer keeps, per interface. Going past one is a
/// drop counted as `neighbour-table-full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LinkLimits {
    /// Neighbours whose MAC address is known (default
    /// [`DEFAULT_MAX_NEIGHBOURS`]). Past it, a request to the NAT teaches
    /// nothing new, and the answer to the NAT's own request replaces the
    /// entry that expires first (with 0 nothing is remembered; what waited
    /// for the answer still goes).
    pub neighbours: usize,
    /// Neighbours being resolved or confirmed at once, each with its ARP
    /// requests (default [`DEFAULT_MAX_RESOLVING`]). Past it, a frame for a
    /// new next hop is dropped without asking.
    pub resolving: usize,
    /// Frames that may wait for one neighbour's answer (default
    /// [`DEFAULT_MAX_FRAMES_PER_NEIGHBOUR`]).
    pub frames_per_neighbour: usize,
    /// Bytes of frames that may wait for answers, all neighbours of the
    /// interface together (default [`DEFAULT_MAX_QUEUED_BYTES`]; a frame
    /// can be a 64 KB GSO packet).
    pub queued_bytes: usize,
}

impl Default for LinkLimits {
    fn default() -> LinkLimits {
        LinkLimits {
            neighbours: DEFAULT_MAX_NEIGHBOURS,
            resolving: DEFAULT_MAX_RESOLVING,
            frames_per_neighbour: DEFAULT_MAX_FRAMES_PER_NEIGHBOUR,
            queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
        }
    }
}

/// What the link layer holds and ignored on one interface, for the dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NeighbourStats {
    /// Neighbours whose MAC address is known.
    pub known: usize,
    /// Neighbours being resolved or confirmed.
    pub resolving: usize,
    /// Frames waiting for an answer.
    pub queued_frames: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// ARP packets not learned from: replies to nothing the NAT asked,
    /// gratuitous ARP, senders that cannot be neighbours (off the prefix,
    /// a multicast MAC address).
    pub arp_ignored: u64,
    /// ARP packets that gave a known neighbour's address (or the NAT's own)
    /// another MAC address; ignored.
    pub arp_conflicts: u64,
    /// Known neighbours forgotten to make room for one the NAT asked for.
    pub evicted: u64,
}

struct Known {
    mac: [u8; 6],
    expires: Duration,
    /// Learned from the answer to the NAT's own request, rather than from
    /// a request the neighbour sent: only such an entry is confirmed by
    /// unicast.
    resolved: bool,
    /// When it was learned.
    learned: Duration,
    /// Another MAC address claimed the address too, in a request to the NAT
    /// or an answer to its request: no guard for it.
    contested: bool,
}

struct Waiting {
    frames: Vec<(Vec<u8>, Offload)>,
    last_request: Duration,
    tries: u32,
    /// Confirming a known neighbour: asked by unicast, and only this MAC
    /// address may answer.
    confirm: Option<[u8; 6]>,
}

impl Waiting {
    fn bytes(&self) -> usize {
        self.frames.iter().map(|(f, _)| f.len()).sum()
    }
}

/// Looked up for every forwarded frame: keyed with the table's fast hasher.
use super::table::FxMap;

#[derive(Default)]
struct Neighbours {
    known: FxMap<Ipv4Addr, Known>,
    waiting: FxMap<Ipv4Addr, Waiting>,
    queued_bytes: usize,
    arp_ignored: u64,
    arp_conflicts: u64,
    evicted: u64,
}

/// The NAT with its two links.
pub struct Link {
    nat: Nat,
    lan: Interface,
    wan: Interface,
    limits: LinkLimits,
    neighbours: [Neighbours; 2],
    impair: [Impairer<(Vec<u8>, Offload)>; 2],
    out: VecDeque<OutFrame>,
}

fn slot(side: Side) -> usize {
    match side {
        Side::Lan => 0,
        Side::Wan => 1,
    }
}

/// A MAC address a neighbour can have: not multicast or broadcast, not zero.
fn unicast(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac != [0; 6]
}

impl Link {
    /// The NAT `nat` on interfaces `lan` and `wan`, with the default
    /// [`LinkLimits`] but for the neighbours its profile allows
    /// (`limits.neighbours`).
    pub fn new(nat: Nat, lan: Interface, wan: Interface) -> Link {
        let limits = LinkLimits { neighbours: nat.config().profile.limits.neighbours, ..LinkLimits::default() };
        Link::with_limits(nat, lan, wan, limits)
    }

    /// The NAT `nat` on interfaces `lan` and `wan`, its neighbour tables
    /// bounded by `limits`.
    pub fn with_limits(nat: Nat, lan: Interface, wan: Interface, limits: LinkLimits) -> Link {
        let i = &nat.config().profile.impair;
        let impair = [Impairer::new(i.inbound.clone(), i.seed), Impairer::new(i.outbound.clone(), i.seed ^ 0x5555)];
        Link { nat, lan, wan, limits, neighbours: Default::default(), impair, out: VecDeque::new() }
    }

    /// The NAT.
    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    /// The bounds of the neighbour tables.
    pub fn limits(&self) -> LinkLimits {
        self.limits
    }

    /// What the neighbour table of `side` holds, and what it ignored.
    pub fn neighbour_stats(&self, side: Side) -> NeighbourStats {
        let n = &self.neighbours[slot(side)];
        NeighbourStats {
            known: n.known.len(),
            resolving: n.waiting.len(),
            queued_frames: n.waiting.values().map(|w| w.frames.len()).sum(),
            queued_bytes: n.queued_bytes,
            arp_ignored: n.arp_ignored,
            arp_conflicts: n.arp_conflicts,
            evicted: n.evicted,
        }
    }

    /// Forgets every neighbour of `side`, as Linux does when a link goes
    /// down: behind it may be another cable, another switch, another
    /// device. Frames waiting for an answer are dropped (`no-neighbour`).
    pub fn forget_neighbours(&mut self, side: Side) {
        let n = &mut self.neighbours[slot(side)];
        n.known.clear();
        n.queued_bytes = 0;
        let waiting: usize = n.waiting.drain().map(|(_, w)| w.frames.len()).sum();
        for _ in 0..waiting {
            self.nat.count_drop(DropReason::NoNeighbour);
        }
    }

    /// Gives interface `side` another MAC address (its device was replaced).
    pub fn set_mac(&mut self, side: Side, mac: [u8; 6]) {
        match side {
            Side::Lan => self.lan.mac = mac,
            Side::Wan => self.wan.mac = mac,
        }
    }

    fn iface(&self, side: Side) -> Interface {
        match side {
            Side::Lan => self.lan,
            Side::Wan => self.wan,
        }
    }

    /// Whether `addr` can be a neighbour on `side`: a host address of the
    /// interface's prefix other than the NAT's, or the configured gateway.
    fn on_link(&self, side: Side, addr: Ipv4Addr) -> bool {
        let cfg = self.nat.config();
        let net = match side {
            Side::Lan => cfg.lan,
            Side::Wan => cfg.wan,
        };
        if addr == self.iface(side).addr
            || addr.is_unspecified()
            || addr.is_loopback()
            || addr.is_multicast()
            || addr.is_broadcast()
        {
            return false;
        }
        let host =
            net.contains(&addr) && (net.prefix_len() >= 31 || (addr != net.network() && addr != net.broadcast()));
        host || (side == Side::Wan && cfg.gateway == Some(addr))
    }

    /// Handles a frame received on `side`, rewriting it in place when it is
    /// forwarded at once.
    pub fn on_frame(&mut self, side: Side, frame: &mut [u8], offload: Offload, now: Duration) -> FrameVerdict {
        let Ok(eth) = ethernet::Frame::new_checked(&*frame) else {
            return self.drop(DropReason::Ethernet);
        };
        let me = self.iface(side);
        let dst = eth.dst();
        if dst != me.mac && dst != ethernet::BROADCAST {
            // Flooded by a switch to every port, or multicast: not ours.
            return FrameVerdict::Consumed;
        }
        match eth.ethertype() {
            ethernet::ETHERTYPE_ARP => {
                self.on_arp(side, &frame[ethernet::HEADER_LEN..], now);
                FrameVerdict::Consumed
            }
            ethernet::ETHERTYPE_IPV4 if dst == me.mac => {
                if side == Side::Lan && self.claims_a_neighbour(&frame[..], now) {
                    return self.drop(DropReason::SpoofedSource);
                }
                let verdict = self.nat.process(side, &mut frame[ethernet::HEADER_LEN..], offload.csum, now);
                let out = match verdict {
                    Verdict::Forward { side, next_hop } => self.deliver(side, next_hop, frame, offload, now),
                    Verdict::Consumed => FrameVerdict::Consumed,
                    Verdict::Drop(reason) => FrameVerdict::Drop(reason),
                };
                self.drain_nat(now);
                out
            }
            ethernet::ETHERTYPE_IPV4 => FrameVerdict::Consumed,
            _ => self.drop(DropReason::NotIpv4),
        }
    }

    fn drop(&mut self, reason: DropReason) -> FrameVerdict {
        self.nat.count_drop(reason);
        FrameVerdict::Drop(reason)
    }

    /// Whether a LAN frame's IPv4 source is a neighbour the NAT knows at
    /// another MAC address: another host on the LAN speaking in its name
    /// (IP source guard). Sources the NAT has not met, or whose address two
    /// MAC addresses claimed, pass to the NAT's own checks.
    fn claims_a_neighbour(&self, frame: &[u8], now: Duration) -> bool {
        let Some(src) = frame.get(ethernet::HEADER_LEN + 12..ethernet::HEADER_LEN + 16) else {
            return false;
        };
        let src = Ipv4Addr::new(src[0], src[1], src[2], src[3]);
        let from: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        self.neighbours[slot(Side::Lan)]
            .known
            .get(&src)
            .is_some_and(|k| k.expires > now && !k.contested && k.mac != from)
    }

    /// Addresses a frame to `next_hop` on `side`: at once if its MAC is
    /// known and no impairment applies, otherwise through a queue.
    fn deliver(
        &mut self,
        side: Side,
        next_hop: Ipv4Addr,
        frame: &mut [u8],
        offload: Offload,
        now: Duration,
    ) -> FrameVerdict {
        let src = self.iface(side).mac;
        let known = self.neighbours[slot(side)]
            .known
            .get(&next_hop)
            .filter(|k| k.expires > now)
            .map(|k| (k.mac, k.expires, k.resolved));
        // Only what the NAT resolved itself is confirmed by unicast: an
        // entry a request taught expires and is asked for by broadcast.
        if let Some((mac, expires, true)) = known
            && expires <= now + CONFIRM_BEFORE
        {
            self.confirm(side, next_hop, mac, now);
        }
        match known.map(|(mac, _, _)| mac) {
            Some(mac) if self.impair[slot(side)].is_none() => {
                let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
                eth.set_addrs(src, mac);
                FrameVerdict::Send(side)
            }
            Some(mac) => {
                let mut owned = frame.to_vec();
                ethernet::Frame::new_unchecked(&mut owned[..]).set_addrs(src, mac);
                self.impaired(side, owned, offload, now);
                FrameVerdict::Consumed
            }
            None => {
                self.wait_for(side, next_hop, frame.to_vec(), offload, now);
                FrameVerdict::Consumed
            }
        }
    }

    fn impaired(&mut self, side: Side, frame: Vec<u8>, offload: Offload, now: Duration) {
        if !self.impair[slot(side)].push((frame, offload), now) {
            self.nat.count_drop(DropReason::ImpairedLoss);
        }
        self.release_impaired(now);
    }

    fn release_impaired(&mut self, now: Duration) {
        for side in [Side::Lan, Side::Wan] {
            while let Some((frame, offload)) = self.impair[slot(side)].pop(now) {
                self.out.push_back(OutFrame { side, frame, offload });
            }
        }
    }

    /// Asks a known neighbour in use, by unicast, to confirm its address
    /// before its entry expires (once at a time).
    fn confirm(&mut self, side: Side, addr: Ipv4Addr, mac: [u8; 6], now: Duration) {
        let n = &mut self.neighbours[slot(side)];
        if n.waiting.contains_key(&addr) || n.waiting.len() >= self.limits.resolving {
            return;
        }
        n.waiting.insert(addr, Waiting { frames: Vec::new(), last_request: now, tries: 0, confirm: Some(mac) });
        self.arp_request(side, addr, now);
    }

    /// Queues a frame for a neighbour whose MAC is unknown, asking for it.
    fn wait_for(&mut self, side: Side, next_hop: Ipv4Addr, frame: Vec<u8>, offload: Offload, now: Duration) {
        if !self.on_link(side, next_hop) {
            // Nobody may answer for it: never ask.
            self.nat.count_drop(DropReason::NoNeighbour);
            return;
        }
        let limits = self.limits;
        let n = &mut self.neighbours[slot(side)];
        if !n.waiting.contains_key(&next_hop) && n.waiting.len() >= limits.resolving {
            self.nat.count_drop(DropReason::NeighbourTableFull);
            return;
        }
        let w = n.waiting.entry(next_hop).or_insert(Waiting {
            frames: Vec::new(),
            last_request: Duration::ZERO,
            tries: 0,
            confirm: None,
        });
        let ask = w.tries == 0;
        if w.frames.len() < limits.frames_per_neighbour && n.queued_bytes + frame.len() <= limits.queued_bytes {
            n.queued_bytes += frame.len();
            w.frames.push((frame, offload));
        } else {
            self.nat.count_drop(DropReason::NeighbourTableFull);
        }
        if ask {
            self.arp_request(side, next_hop, now);
        }
    }

    fn arp_request(&mut self, side: Side, target: Ipv4Addr, now: Duration) {
        let me = self.iface(side);
        let mut unicast_to = None;
        if let Some(w) = self.neighbours[slot(side)].waiting.get_mut(&target) {
            w.tries += 1;
            w.last_request = now;
            unicast_to = w.confirm;
        }
        let mut frame = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
        let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
        eth.set_addrs(me.mac, unicast_to.unwrap_or(ethernet::BROADCAST));
        eth.set_ethertype(ethernet::ETHERTYPE_ARP);
        arp::emit(eth.payload_mut(), arp::OP_REQUEST, me.mac, me.addr.octets(), [0; 6], target.octets());
        self.out.push_back(OutFrame { side, frame, offload: Offload::NONE });
    }

    fn on_arp(&mut self, side: Side, payload: &[u8], now: Duration) {
        let Ok(p) = arp::Packet::new_checked(payload) else {
            self.nat.count_drop(DropReason::Arp);
            return;
        };
        let me = self.iface(side);
        let (op, sha, spa, tpa) = (p.oper(), p.sha(), Ipv4Addr::from(p.spa()), Ipv4Addr::from(p.tpa()));
        if spa.is_unspecified() {
            return; // an address probe (RFC 5227): nothing to learn
        }
        let for_us = tpa == me.addr;
        if spa == me.addr {
            // Someone else claims the NAT's address.
            if sha != me.mac {
                self.neighbours[slot(side)].arp_conflicts += 1;
            }
            return;
        }
        if !unicast(sha) || !self.on_link(side, spa) {
            self.neighbours[slot(side)].arp_ignored += 1;
            return;
        }
        if op == arp::OP_REQUEST && for_us {
            let mut frame = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
            let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
            eth.set_addrs(me.mac, sha);
            eth.set_ethertype(ethernet::ETHERTYPE_ARP);
            arp::emit(eth.payload_mut(), arp::OP_REPLY, me.mac, me.addr.octets(), sha, spa.octets());
            self.out.push_back(OutFrame { side, frame, offload: Offload::NONE });
        }
        let n = &mut self.neighbours[slot(side)];
        let known = n.known.get(&spa).filter(|k| k.expires > now).map(|k| k.mac);
        let asked = n.waiting.get(&spa).map(|w| w.confirm);
        match (for_us, asked) {
            // The answer to a broadcast request: the first one wins.
            (true, Some(None)) => self.learn(side, spa, sha, now),
            // Confirming a known neighbour: only its own MAC address.
            (true, Some(Some(mac))) if mac == sha => self.learn(side, spa, sha, now),
            (true, Some(Some(_))) => n.arp_conflicts += 1,
            // A request to the NAT teaches its sender, if new.
            (true, None) if op == arp::OP_REQUEST => match known {
                Some(mac) if mac == sha => {}
                Some(_) => {
                    n.arp_conflicts += 1;
                    self.contest(side, spa, now);
                }
                None if n.known.len() < self.limits.neighbours || n.known.contains_key(&spa) => {
                    let k = Known {
                        mac: sha,
                        expires: now + NEIGHBOUR_TTL,
                        resolved: false,
                        learned: now,
                        contested: false,
                    };
                    n.known.insert(spa, k);
                }
                None => self.nat.count_drop(DropReason::NeighbourTableFull),
            },
            // Unsolicited: replies to nothing asked, gratuitous ARP, ARP
            // between other hosts. Learned from never.
            _ => match known {
                // A second answer to the NAT's request contests the address;
                // a gratuitous claim is counted, and changes nothing.
                Some(mac) if mac != sha => {
                    n.arp_conflicts += 1;
                    let late_answer = op == arp::OP_REPLY
                        && for_us
                        && n.known.get(&spa).is_some_and(|k| k.resolved && k.learned + ANSWER_WINDOW > now);
                    if late_answer {
                        self.contest(side, spa, now);
                    }
                }
                _ if op == arp::OP_REPLY || spa == tpa => n.arp_ignored += 1,
                _ => {}
            },
        }
    }

    /// Two MAC addresses claim `addr`. An entry a request taught is
    /// forgotten and the address asked for by broadcast (so the first to
    /// claim it does not keep it); one the NAT resolved keeps its MAC
    /// address but guards the address no more.
    fn contest(&mut self, side: Side, addr: Ipv4Addr, now: Duration) {
        let n = &mut self.neighbours[slot(side)];
        match n.known.get_mut(&addr) {
            Some(k) if k.resolved => k.contested = true,
            Some(_) => {
                n.known.remove(&addr);
                if !n.waiting.contains_key(&addr) && n.waiting.len() < self.limits.resolving {
                    n.waiting.insert(addr, Waiting { frames: Vec::new(), last_request: now, tries: 0, confirm: None });
                    self.arp_request(side, addr, now);
                }
            }
            None => {}
        }
    }

    /// Learns a neighbour the NAT asked for (making room if it must) and
    /// sends what waited for it.
    fn learn(&mut self, side: Side, addr: Ipv4Addr, mac: [u8; 6], now: Duration) {
        let limit = self.limits.neighbours;
        let n = &mut self.neighbours[slot(side)];
        if !n.known.contains_key(&addr) && n.known.len() >= limit {
            n.known.retain(|_, k| k.expires > now);
            if n.known.len() >= limit
                && let Some(first) = n.known.iter().min_by_key(|(_, k)| k.expires).map(|(a, _)| *a)
            {
                n.known.remove(&first);
                n.evicted += 1;
            }
        }
        if limit > 0 {
            // A second answer to the same request contests the address.
            let contested = n
                .known
                .get(&addr)
                .filter(|k| k.expires > now)
                .is_some_and(|k| k.contested || (k.resolved && k.mac != mac));
            n.known.insert(addr, Known { mac, expires: now + NEIGHBOUR_TTL, resolved: true, learned: now, contested });
        }
        if let Some(w) = n.waiting.remove(&addr) {
            n.queued_bytes -= w.bytes();
            let src = self.iface(side).mac;
            for (mut frame, offload) in w.frames {
                ethernet::Frame::new_unchecked(&mut frame[..]).set_addrs(src, mac);
                if self.impair[slot(side)].is_none() {
                    self.out.push_back(OutFrame { side, frame, offload });
                } else {
                    self.impaired(side, frame, offload, now);
                }
            }
        }
    }

    /// Packets the NAT made or released get their Ethernet header here.
    fn drain_nat(&mut self, now: Duration) {
        while let Some(t) = self.nat.poll_transmit() {
            let mut frame = vec![0u8; ethernet::HEADER_LEN + t.packet.len()];
            ethernet::Frame::new_unchecked(&mut frame[..]).set_ethertype(ethernet::ETHERTYPE_IPV4);
            frame[ethernet::HEADER_LEN..].copy_from_slice(&t.packet);
            if let FrameVerdict::Send(side) = self.deliver(t.side, t.next_hop, &mut frame, Offload::NONE, now) {
                self.out.push_back(OutFrame { side, frame, offload: Offload::NONE });
            }
        }
    }

    /// A frame to send.
    pub fn poll_frame(&mut self) -> Option<OutFrame> {
        self.out.pop_front()
    }

    /// When the next impaired frame is due. ARP retries and the NAT's
    /// expiry need [`Link::handle_timeout`] called every so often besides
    /// (the packet loop does it every turn, at least every 200 ms).
    pub fn next_timeout(&self) -> Option<Duration> {
        self.impair.iter().filter_map(Impairer::next_release).min()
    }

    /// Retries ARP, gives up on silent neighbours, releases delayed frames,
    /// expires NAT state.
    pub fn handle_timeout(&mut self, now: Duration) {
        for side in [Side::Lan, Side::Wan] {
            let due: Vec<Ipv4Addr> = self.neighbours[slot(side)]
                .waiting
                .iter()
                .filter(|(_, w)| now >= w.last_request + ARP_RETRY)
                .map(|(a, _)| *a)
                .collect();
            for addr in due {
                let tries = self.neighbours[slot(side)].waiting.get(&addr).map_or(0, |w| w.tries);
                if tries >= ARP_TRIES {
                    let n = &mut self.neighbours[slot(side)];
                    if let Some(w) = n.waiting.remove(&addr) {
                        n.queued_bytes -= w.bytes();
                        if let Some(mac) = w.confirm
                            && n.known.get(&addr).is_some_and(|k| k.mac == mac)
                        {
                            // Silent at its MAC address: ask everyone next time.
                            n.known.remove(&addr);
                        }
                        for _ in w.frames {
                            self.nat.count_drop(DropReason::NoNeighbour);
                        }
                    }
                } else {
                    self.arp_request(side, addr, now);
                }
            }
            self.neighbours[slot(side)].known.retain(|_, k| k.expires > now);
        }
        self.release_impaired(now);
        self.nat.handle_timeout(now);
    }

    /// Gives the NAT's table and counters to a reader (the control socket).
    pub fn nat_mut(&mut self) -> &mut Nat {
        &mut self.nat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::engine::Config;
    use crate::nat::profile::Profile;
    use crate::wire::{ipv4, udp};

    const LAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const C1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 10];
    const S1_MAC: [u8; 6] = [2, 0, 0, 0, 2, 2];

    fn link(profile: Profile) -> Link {
        let nat = Nat::new(Config {
            lan: "192.168.1.1/24".parse().expect("lan"),
            wan: "198.51.100.1/24".parse().expect("wan"),
            gateway: None,
            profile,
            seed: 1,
        })
        .expect("valid");
        Link::new(
            nat,
            Interface { mac: LAN_MAC, addr: Ipv4Addr::new(192, 168, 1, 1) },
            Interface { mac: WAN_MAC, addr: Ipv4Addr::new(198, 51, 100, 1) },
        )
    }

    fn arp_frame(op: u16, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4], dst: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        let mut eth = ethernet::Frame::new_unchecked(&mut f[..]);
        eth.set_addrs(sha, dst);
        eth.set_ethertype(ethernet::ETHERTYPE_ARP);
        arp::emit(eth.payload_mut(), op, sha, spa, [0; 6], tpa);
        f
    }

    fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let ip = ipv4::packet(src, dst, ipv4::PROTO_UDP, &udp::emit(5000, 53, b"ping"));
        ethernet::emit(src_mac, dst_mac, ethernet::ETHERTYPE_IPV4, &ip)
    }

    fn all_out(l: &mut Link) -> Vec<OutFrame> {
        std::iter::from_fn(|| l.poll_frame()).collect()
    }

    const ATTACKER_MAC: [u8; 6] = [2, 0, 0, 0, 6, 6];
    const SERVER: [u8; 4] = [198, 51, 100, 2];
    const NAT_WAN: [u8; 4] = [198, 51, 100, 1];

    /// Sends a frame from c1 to the server through the NAT at `now`: where
    /// did it go, and what came out (ARP requests included)?
    fn to_server(l: &mut Link, now: Duration) -> (FrameVerdict, Vec<u8>, Vec<OutFrame>) {
        let mut f = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], SERVER);
        let v = l.on_frame(Side::Lan, &mut f, Offload::NONE, now);
        (v, f, all_out(l))
    }

    /// The server's MAC address, learned the proper way: a frame for it,
    /// the NAT's request, its reply.
    fn resolve_server(l: &mut Link, now: Duration) {
        let (v, _, asked) = to_server(l, now);
        assert_eq!(v, FrameVerdict::Consumed, "waits for ARP");
        assert!(asked.iter().any(|o| is_request_for(o, SERVER)), "asks for the server");
        let mut reply = arp_frame(arp::OP_REPLY, S1_MAC, SERVER, NAT_WAN, WAN_MAC);
        l.on_frame(Side::Wan, &mut reply, Offload::NONE, now);
        let sent = all_out(l);
        assert_eq!(sent.len(), 1, "the waiting frame goes");
        assert_eq!(&sent[0].frame[0..6], &S1_MAC);
    }

    fn is_request_for(o: &OutFrame, target: [u8; 4]) -> bool {
        o.frame[12..14] == ethernet::ETHERTYPE_ARP.to_be_bytes()
            && arp::Packet::new_checked(&o.frame[14..]).is_ok_and(|p| p.oper() == arp::OP_REQUEST && p.tpa() == target)
    }

    /// Where the next frame to the server goes at `now`: straight to a MAC
    /// address, or `None` when the NAT has to ask first.
    fn server_mac_in_use(l: &mut Link, now: Duration) -> Option<[u8; 6]> {
        match to_server(l, now) {
            (FrameVerdict::Send(Side::Wan), f, _) => Some(f[0..6].try_into().expect("mac")),
            _ => None,
        }
    }

    #[test]
    fn unsolicited_and_gratuitous_arp_teach_nothing() {
        let mut l = link(Profile::default());
        // A reply nobody asked for, a gratuitous reply and a gratuitous
        // request, all for the server's address.
        for (op, tpa, dst) in [
            (arp::OP_REPLY, NAT_WAN, WAN_MAC),
            (arp::OP_REPLY, SERVER, ethernet::BROADCAST),
            (arp::OP_REQUEST, SERVER, ethernet::BROADCAST),
        ] {
            let mut f = arp_frame(op, ATTACKER_MAC, SERVER, tpa, dst);
            l.on_frame(Side::Wan, &mut f, Offload::NONE, Duration::ZERO);
        }
        assert_eq!(l.neighbour_stats(Side::Wan).known, 0);
        assert_eq!(l.neighbour_stats(Side::Wan).arp_ignored, 3);
        let (v, _, out) = to_server(&mut l, Duration::from_millis(1));
        assert_eq!(v, FrameVerdict::Consumed, "the NAT asks rather than believe them");
        assert!(out.iter().any(|o| is_request_for(o, SERVER)));
    }

    #[test]
    fn a_known_neighbour_is_not_overwritten_by_arp_the_nat_did_not_ask_for() {
        let mut l = link(Profile::default());
        resolve_server(&mut l, Duration::ZERO);
        let t = Duration::from_secs(1);
        // The classic poisoning: unsolicited replies and gratuitous ARP
        // that give the server's (the next hop's) address another MAC.
        for (op, tpa, dst) in [
            (arp::OP_REPLY, NAT_WAN, WAN_MAC),
            (arp::OP_REQUEST, SERVER, ethernet::BROADCAST),
            (arp::OP_REPLY, SERVER, ethernet::BROADCAST),
            // A request to the NAT claiming the server's address.
            (arp::OP_REQUEST, NAT_WAN, ethernet::BROADCAST),
        ] {
            let mut f = arp_frame(op, ATTACKER_MAC, SERVER, tpa, dst);
            l.on_frame(Side::Wan, &mut f, Offload::NONE, t);
        }
        assert_eq!(server_mac_in_use(&mut l, t), Some(S1_MAC), "poisoned");
        assert_eq!(l.neighbour_stats(Side::Wan).arp_conflicts, 4);
    }

    #[test]
    fn a_request_to_the_nat_teaches_its_sender_only_on_the_subnet() {
        let mut l = link(Profile::default());
        // c1 asks for the NAT: answered, and c1 is known from then on.
        let mut req = arp_frame(arp::OP_REQUEST, C1_MAC, [192, 168, 1, 10], [192, 168, 1, 1], ethernet::BROADCAST);
        l.on_frame(Side::Lan, &mut req, Offload::NONE, Duration::ZERO);
        assert_eq!(all_out(&mut l).len(), 1, "the reply");
        assert_eq!(l.neighbour_stats(Side::Lan).known, 1);
        // Senders that cannot be neighbours on the LAN: off the prefix, its
        // broadcast and network addresses, a multicast MAC address.
        for (mac, spa) in [
            (C1_MAC, [10, 0, 0, 1]),
            (C1_MAC, [198, 51, 100, 7]),
            (C1_MAC, [192, 168, 1, 255]),
            (C1_MAC, [192, 168, 1, 0]),
            ([1, 0, 0x5e, 0, 0, 1], [192, 168, 1, 20]),
        ] {
            let mut req = arp_frame(arp::OP_REQUEST, mac, spa, [192, 168, 1, 1], ethernet::BROADCAST);
            l.on_frame(Side::Lan, &mut req, Offload::NONE, Duration::ZERO);
        }
        let stats = l.neighbour_stats(Side::Lan);
        assert_eq!((stats.known, stats.arp_ignored), (1, 5), "{stats:?}");
        // Nor does the NAT ask for what cannot be a neighbour.
        let mut to_bcast = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, 255]);
        l.on_frame(Side::Lan, &mut to_bcast, Offload::NONE, Duration::ZERO);
        assert!(all_out(&mut l).iter().all(|o| !is_request_for(o, [198, 51, 100, 255])));
    }

    #[test]
    fn the_neighbour_table_is_bounded_and_its_bounds_are_counted_drops() {
        let nat = Nat::new(Config {
            lan: "192.168.1.1/24".parse().expect("lan"),
            wan: "198.51.100.1/24".parse().expect("wan"),
            gateway: None,
            profile: Profile::default(),
            seed: 1,
        })
        .expect("valid");
        let limits = LinkLimits { neighbours: 4, resolving: 2, frames_per_neighbour: 3, queued_bytes: 1 << 20 };
        let mut l = Link::with_limits(
            nat,
            Interface { mac: LAN_MAC, addr: Ipv4Addr::new(192, 168, 1, 1) },
            Interface { mac: WAN_MAC, addr: Ipv4Addr::new(198, 51, 100, 1) },
            limits,
        );
        let full = |l: &Link| l.nat().counters().dropped(DropReason::NeighbourTableFull);
        // Twenty LAN hosts ask for the NAT: four are remembered.
        for i in 0..20u8 {
            let mac = [2, 0, 0, 1, 0, i];
            let mut req =
                arp_frame(arp::OP_REQUEST, mac, [192, 168, 1, 100 + i], [192, 168, 1, 1], ethernet::BROADCAST);
            l.on_frame(Side::Lan, &mut req, Offload::NONE, Duration::ZERO);
        }
        assert_eq!(l.neighbour_stats(Side::Lan).known, 4);
        assert_eq!(full(&l), 16);
        // Frames for five unknown WAN hosts: two are resolved at once, the
        // frames of the others are dropped without a request.
        for h in 2..7u8 {
            let mut f = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, h]);
            l.on_frame(Side::Lan, &mut f, Offload::NONE, Duration::ZERO);
        }
        let requests = all_out(&mut l).iter().filter(|o| o.side == Side::Wan).count();
        assert_eq!((requests, l.neighbour_stats(Side::Wan).resolving), (2, 2));
        assert_eq!(full(&l), 16 + 3);
        // Five frames for one of them: three wait.
        for _ in 0..3 {
            let mut f = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, 2]);
            l.on_frame(Side::Lan, &mut f, Offload::NONE, Duration::ZERO);
        }
        assert_eq!(l.neighbour_stats(Side::Wan).queued_frames, 3 + 1);
        assert_eq!(full(&l), 16 + 3 + 1);
        // The answers to the NAT's requests are always learned: the WAN
        // table fills up to its bound and then forgets the oldest.
        let mut reply = arp_frame(arp::OP_REPLY, S1_MAC, SERVER, NAT_WAN, WAN_MAC);
        l.on_frame(Side::Wan, &mut reply, Offload::NONE, Duration::from_millis(1));
        assert_eq!(all_out(&mut l).len(), 3, "what waited for the server");
        assert_eq!(l.neighbour_stats(Side::Wan).queued_frames, 1);
    }

    #[test]
    fn waiting_bytes_are_bounded() {
        let nat = Nat::new(Config {
            lan: "192.168.1.1/24".parse().expect("lan"),
            wan: "198.51.100.1/24".parse().expect("wan"),
            gateway: None,
            profile: Profile::default(),
            seed: 1,
        })
        .expect("valid");
        let frame_len = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], SERVER).len();
        let limits = LinkLimits { queued_bytes: 2 * frame_len, ..LinkLimits::default() };
        let mut l = Link::with_limits(
            nat,
            Interface { mac: LAN_MAC, addr: Ipv4Addr::new(192, 168, 1, 1) },
            Interface { mac: WAN_MAC, addr: Ipv4Addr::new(198, 51, 100, 1) },
            limits,
        );
        for h in 2..6u8 {
            let mut f = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, h]);
            l.on_frame(Side::Lan, &mut f, Offload::NONE, Duration::ZERO);
        }
        let s = l.neighbour_stats(Side::Wan);
        assert_eq!((s.queued_frames, s.queued_bytes), (2, 2 * frame_len));
        assert_eq!(l.nat().counters().dropped(DropReason::NeighbourTableFull), 2);
        // Given up: the bytes are free again.
        for t in 1..=4 {
            l.handle_timeout(Duration::from_secs(t));
        }
        assert_eq!(l.neighbour_stats(Side::Wan).queued_bytes, 0);
    }

    #[test]
    fn a_neighbour_in_use_is_confirmed_by_unicast_and_only_by_itself() {
        let mut l = link(Profile::default());
        resolve_server(&mut l, Duration::ZERO);
        // Shortly before the entry expires a frame is forwarded: the NAT
        // asks the server at its MAC address, and goes on using it.
        let t = NEIGHBOUR_TTL - Duration::from_secs(3);
        let (v, f, out) = to_server(&mut l, t);
        assert_eq!((v, &f[0..6]), (FrameVerdict::Send(Side::Wan), &S1_MAC[..]));
        let probe = out.iter().find(|o| is_request_for(o, SERVER)).expect("a confirmation request");
        assert_eq!(&probe.frame[0..6], &S1_MAC, "by unicast");
        // Another MAC address answering is not believed…
        let mut other = arp_frame(arp::OP_REPLY, ATTACKER_MAC, SERVER, NAT_WAN, WAN_MAC);
        l.on_frame(Side::Wan, &mut other, Offload::NONE, t);
        assert_eq!(l.neighbour_stats(Side::Wan).arp_conflicts, 1);
        // …the server's own answer renews the entry past its first expiry.
        let mut own = arp_frame(arp::OP_REPLY, S1_MAC, SERVER, NAT_WAN, WAN_MAC);
        l.on_frame(Side::Wan, &mut own, Offload::NONE, t);
        assert_eq!(server_mac_in_use(&mut l, NEIGHBOUR_TTL + Duration::from_secs(1)), Some(S1_MAC));
    }

    #[test]
    fn a_link_that_went_down_forgets_its_neighbours() {
        let mut l = link(Profile::default());
        resolve_server(&mut l, Duration::ZERO);
        let mut f = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, 9]);
        l.on_frame(Side::Lan, &mut f, Offload::NONE, Duration::ZERO);
        l.forget_neighbours(Side::Wan);
        let s = l.neighbour_stats(Side::Wan);
        assert_eq!((s.known, s.resolving, s.queued_frames, s.queued_bytes), (0, 0, 0, 0));
        assert_eq!(l.nat().counters().dropped(DropReason::NoNeighbour), 1, "the frame that waited");
        assert_eq!(server_mac_in_use(&mut l, Duration::from_millis(1)), None, "asked for again");
    }

    #[test]
    fn a_neighbour_silent_at_its_mac_address_is_asked_for_again() {
        let mut l = link(Profile::default());
        resolve_server(&mut l, Duration::ZERO);
        let t = NEIGHBOUR_TTL - Duration::from_secs(4);
        assert_eq!(server_mac_in_use(&mut l, t), Some(S1_MAC));
        for s in 1..=3 {
            l.handle_timeout(t + Duration::from_secs(s));
        }
        let probes = all_out(&mut l);
        assert_eq!(probes.len(), 2, "two more confirmation requests");
        assert!(probes.iter().all(|o| is_request_for(o, SERVER) && o.frame[0..6] == S1_MAC));
        // Three unanswered confirmations: forgotten before its time, so the
        // next frame asks everyone and a moved gateway is found.
        let now = t + Duration::from_secs(3) + Duration::from_millis(1);
        let (v, _, out) = to_server(&mut l, now);
        assert_eq!(v, FrameVerdict::Consumed);
        let ask = out.iter().find(|o| is_request_for(o, SERVER)).expect("a request");
        assert_eq!(&ask.frame[0..6], &ethernet::BROADCAST);
        let mut moved = arp_frame(arp::OP_REPLY, ATTACKER_MAC, SERVER, NAT_WAN, WAN_MAC);
        l.on_frame(Side::Wan, &mut moved, Offload::NONE, now);
        assert_eq!(server_mac_in_use(&mut l, now), Some(ATTACKER_MAC));
    }

    #[test]
    fn the_nat_answers_arp_for_its_own_address_only() {
        let mut l = link(Profile::default());
        let mut req = arp_frame(arp::OP_REQUEST, C1_MAC, [192, 168, 1, 10], [192, 168, 1, 1], ethernet::BROADCAST);
        assert_eq!(l.on_frame(Side::Lan, &mut req, Offload::NONE, Duration::ZERO), FrameVerdict::Consumed);
        let out = all_out(&mut l);
        assert_eq!(out.len(), 1);
        let reply = arp::Packet::new_checked(&out[0].frame[14..]).expect("arp");
        assert_eq!((reply.oper(), reply.sha(), reply.tpa()), (arp::OP_REPLY, LAN_MAC, [192, 168, 1, 10]));
        assert_eq!(&out[0].frame[0..6], &C1_MAC);
        let mut other = arp_frame(arp::OP_REQUEST, C1_MAC, [192, 168, 1, 10], [192, 168, 1, 77], ethernet::BROADCAST);
        l.on_frame(Side::Lan, &mut other, Offload::NONE, Duration::ZERO);
        assert!(all_out(&mut l).is_empty(), "not our address: no answer");
    }

    #[test]
    fn a_frame_waits_for_its_next_hop_then_goes_with_the_right_macs() {
        let mut l = link(Profile::default());
        let mut f = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, 2]);
        assert_eq!(l.on_frame(Side::Lan, &mut f, Offload::NONE, Duration::ZERO), FrameVerdict::Consumed);
        let asked = all_out(&mut l);
        assert_eq!(asked.len(), 1, "an ARP request for the server");
        assert_eq!(asked[0].side, Side::Wan);
        assert_eq!(arp::Packet::new_checked(&asked[0].frame[14..]).expect("arp").tpa(), [198, 51, 100, 2]);
        let mut reply = arp_frame(arp::OP_REPLY, S1_MAC, [198, 51, 100, 2], [198, 51, 100, 1], WAN_MAC);
        l.on_frame(Side::Wan, &mut reply, Offload::NONE, Duration::from_millis(1));
        let sent = all_out(&mut l);
        assert_eq!(sent.len(), 1, "the waiting frame");
        assert_eq!((&sent[0].frame[0..6], &sent[0].frame[6..12]), (&S1_MAC[..], &WAN_MAC[..]));
        assert_eq!(&sent[0].frame[26..30], &[198, 51, 100, 1], "translated");
        // Now the neighbour is known: the next frame goes at once, in place.
        let mut g = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, 2]);
        assert_eq!(
            l.on_frame(Side::Lan, &mut g, Offload::NONE, Duration::from_millis(2)),
            FrameVerdict::Send(Side::Wan)
        );
        assert_eq!(&g[0..6], &S1_MAC);
    }

    #[test]
    fn a_silent_neighbour_is_given_up_after_three_requests() {
        let mut l = link(Profile::default());
        let mut f = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, 9]);
        l.on_frame(Side::Lan, &mut f, Offload::NONE, Duration::ZERO);
        for s in 1..=4 {
            l.handle_timeout(Duration::from_secs(s));
        }
        let requests = all_out(&mut l).len();
        assert_eq!(requests, 3);
        assert_eq!(l.nat().counters().dropped(DropReason::NoNeighbour), 1);
    }

    #[test]
    fn frames_for_others_and_non_ipv4_are_not_forwarded() {
        let mut l = link(Profile::default());
        let mut f = udp_frame(C1_MAC, [2, 9, 9, 9, 9, 9], [192, 168, 1, 10], [198, 51, 100, 2]);
        assert_eq!(l.on_frame(Side::Lan, &mut f, Offload::NONE, Duration::ZERO), FrameVerdict::Consumed);
        let mut v6 = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, 2]);
        v6[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(
            l.on_frame(Side::Lan, &mut v6, Offload::NONE, Duration::ZERO),
            FrameVerdict::Drop(DropReason::NotIpv4)
        );
        let mut short = vec![0u8; 9];
        assert_eq!(
            l.on_frame(Side::Lan, &mut short, Offload::NONE, Duration::ZERO),
            FrameVerdict::Drop(DropReason::Ethernet)
        );
    }

    #[test]
    fn an_impaired_direction_delays_its_frames() {
        let mut p = Profile::default();
        p.impair.outbound.delay_ms = 20;
        let mut l = link(p);
        let (v, _, asked) = to_server(&mut l, Duration::ZERO);
        assert_eq!(v, FrameVerdict::Consumed);
        assert!(asked.iter().any(|o| is_request_for(o, SERVER)), "ARP itself is not delayed");
        let mut reply = arp_frame(arp::OP_REPLY, S1_MAC, SERVER, NAT_WAN, WAN_MAC);
        l.on_frame(Side::Wan, &mut reply, Offload::NONE, Duration::ZERO);
        assert!(all_out(&mut l).is_empty(), "the frame that waited is delayed");
        assert_eq!(l.next_timeout(), Some(Duration::from_millis(20)));
        l.handle_timeout(Duration::from_millis(20));
        let sent = all_out(&mut l);
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0].frame[0..6], &S1_MAC);
    }

    #[test]
    fn a_lan_host_speaking_in_a_known_neighbours_name_is_dropped_and_a_claim_locks_no_one_out() {
        let mut l = link(Profile::default());
        let t0 = Duration::from_secs(10);
        // The attacker claims c1's address first, in a request to the NAT.
        let mut claim =
            arp_frame(arp::OP_REQUEST, ATTACKER_MAC, [192, 168, 1, 10], [192, 168, 1, 1], ethernet::BROADCAST);
        l.on_frame(Side::Lan, &mut claim, Offload::NONE, t0);
        all_out(&mut l);
        // c1's own request contests the claim: the NAT asks by broadcast.
        let mut req = arp_frame(arp::OP_REQUEST, C1_MAC, [192, 168, 1, 10], [192, 168, 1, 1], ethernet::BROADCAST);
        l.on_frame(Side::Lan, &mut req, Offload::NONE, t0);
        let asked = all_out(&mut l);
        assert!(asked.iter().any(|o| is_request_for(o, [192, 168, 1, 10]) && o.frame[..6] == ethernet::BROADCAST));
        // The contested claim is forgotten: c1 is not locked out.
        let mut own = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], SERVER);
        assert_ne!(l.on_frame(Side::Lan, &mut own, Offload::NONE, t0), FrameVerdict::Drop(DropReason::SpoofedSource));
        // c1 answers the NAT's request: now its address is guarded.
        let mut answer = arp_frame(arp::OP_REPLY, C1_MAC, [192, 168, 1, 10], [192, 168, 1, 1], LAN_MAC);
        l.on_frame(Side::Lan, &mut answer, Offload::NONE, t0);
        all_out(&mut l);
        let mut spoofed = udp_frame(ATTACKER_MAC, LAN_MAC, [192, 168, 1, 10], SERVER);
        assert_eq!(
            l.on_frame(Side::Lan, &mut spoofed, Offload::NONE, t0),
            FrameVerdict::Drop(DropReason::SpoofedSource)
        );
        let mut own = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], SERVER);
        assert_ne!(l.on_frame(Side::Lan, &mut own, Offload::NONE, t0), FrameVerdict::Drop(DropReason::SpoofedSource));
        let mut unknown = udp_frame(ATTACKER_MAC, LAN_MAC, [192, 168, 1, 77], SERVER);
        assert_ne!(
            l.on_frame(Side::Lan, &mut unknown, Offload::NONE, t0),
            FrameVerdict::Drop(DropReason::SpoofedSource)
        );
        // A gratuitous claim later changes nothing.
        let later = t0 + Duration::from_secs(5);
        let mut gratuitous =
            arp_frame(arp::OP_REQUEST, ATTACKER_MAC, [192, 168, 1, 10], [192, 168, 1, 10], ethernet::BROADCAST);
        l.on_frame(Side::Lan, &mut gratuitous, Offload::NONE, later);
        let mut spoofed = udp_frame(ATTACKER_MAC, LAN_MAC, [192, 168, 1, 10], SERVER);
        assert_eq!(
            l.on_frame(Side::Lan, &mut spoofed, Offload::NONE, later),
            FrameVerdict::Drop(DropReason::SpoofedSource)
        );
        // A second answer to the NAT's request ends the guard (no lockout
        // of whichever answered second).
        let mut second = arp_frame(arp::OP_REPLY, ATTACKER_MAC, [192, 168, 1, 10], [192, 168, 1, 1], LAN_MAC);
        l.on_frame(Side::Lan, &mut second, Offload::NONE, t0);
        let mut spoofed = udp_frame(ATTACKER_MAC, LAN_MAC, [192, 168, 1, 10], SERVER);
        assert_ne!(
            l.on_frame(Side::Lan, &mut spoofed, Offload::NONE, t0),
            FrameVerdict::Drop(DropReason::SpoofedSource)
        );
    }
}
