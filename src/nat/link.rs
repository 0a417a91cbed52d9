//! The NAT at the link layer, still sans I/O: Ethernet frames in, frames
//! out. It answers ARP for its own addresses, resolves next hops itself (a
//! few frames wait per unresolved neighbour), puts the right MAC addresses on
//! every frame it forwards, and applies the profile's impairments.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use super::counters::DropReason;
use super::engine::{L4Checksum, Nat, Side, Verdict};
use super::impair::Impairer;
use super::wire::{arp, ethernet};

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

const NEIGHBOUR_TTL: Duration = Duration::from_secs(300);
const ARP_RETRY: Duration = Duration::from_secs(1);
const ARP_TRIES: u32 = 3;
const MAX_WAITING_PER_NEIGHBOUR: usize = 32;

struct Waiting {
    frames: Vec<(Vec<u8>, Offload)>,
    last_request: Duration,
    tries: u32,
}

/// Looked up for every forwarded frame: keyed with the table's fast hasher.
type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<super::table::FxHasher>>;

#[derive(Default)]
struct Neighbours {
    known: FxMap<Ipv4Addr, ([u8; 6], Duration)>,
    waiting: FxMap<Ipv4Addr, Waiting>,
}

/// The NAT with its two links.
pub struct Link {
    nat: Nat,
    lan: Interface,
    wan: Interface,
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

impl Link {
    /// The NAT `nat` on interfaces `lan` and `wan`.
    pub fn new(nat: Nat, lan: Interface, wan: Interface) -> Link {
        let i = &nat.config().profile.impair;
        let impair = [Impairer::new(i.inbound.clone(), i.seed), Impairer::new(i.outbound.clone(), i.seed ^ 0x5555)];
        Link { nat, lan, wan, neighbours: Default::default(), impair, out: VecDeque::new() }
    }

    /// The NAT.
    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    fn iface(&self, side: Side) -> Interface {
        match side {
            Side::Lan => self.lan,
            Side::Wan => self.wan,
        }
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
        let known = self.neighbours[slot(side)].known.get(&next_hop).filter(|(_, exp)| *exp > now).map(|(m, _)| *m);
        match known {
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

    /// Queues a frame for a neighbour whose MAC is unknown, asking for it.
    fn wait_for(&mut self, side: Side, next_hop: Ipv4Addr, frame: Vec<u8>, offload: Offload, now: Duration) {
        let n = &mut self.neighbours[slot(side)];
        let w =
            n.waiting.entry(next_hop).or_insert(Waiting { frames: Vec::new(), last_request: Duration::ZERO, tries: 0 });
        let ask = w.tries == 0;
        if w.frames.len() < MAX_WAITING_PER_NEIGHBOUR {
            w.frames.push((frame, offload));
        } else {
            self.nat.count_drop(DropReason::NoNeighbour);
        }
        if ask {
            self.arp_request(side, next_hop, now);
        }
    }

    fn arp_request(&mut self, side: Side, target: Ipv4Addr, now: Duration) {
        let me = self.iface(side);
        if let Some(w) = self.neighbours[slot(side)].waiting.get_mut(&target) {
            w.tries += 1;
            w.last_request = now;
        }
        let mut frame = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
        let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
        eth.set_addrs(me.mac, ethernet::BROADCAST);
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
        let (sha, spa) = (p.sha(), Ipv4Addr::from(p.spa()));
        if spa.is_unspecified() {
            return; // an address probe (RFC 5227): nothing to learn
        }
        self.learn(side, spa, sha, now);
        if p.oper() == arp::OP_REQUEST && Ipv4Addr::from(p.tpa()) == me.addr {
            let mut frame = vec![0u8; ethernet::HEADER_LEN + arp::LEN];
            let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
            eth.set_addrs(me.mac, sha);
            eth.set_ethertype(ethernet::ETHERTYPE_ARP);
            arp::emit(eth.payload_mut(), arp::OP_REPLY, me.mac, me.addr.octets(), sha, spa.octets());
            self.out.push_back(OutFrame { side, frame, offload: Offload::NONE });
        }
    }

    fn learn(&mut self, side: Side, addr: Ipv4Addr, mac: [u8; 6], now: Duration) {
        let n = &mut self.neighbours[slot(side)];
        n.known.insert(addr, (mac, now + NEIGHBOUR_TTL));
        if let Some(w) = n.waiting.remove(&addr) {
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

    /// The next time [`Link::handle_timeout`] has something to do.
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
                    if let Some(w) = self.neighbours[slot(side)].waiting.remove(&addr) {
                        for _ in w.frames {
                            self.nat.count_drop(DropReason::NoNeighbour);
                        }
                    }
                } else {
                    self.arp_request(side, addr, now);
                }
            }
            self.neighbours[slot(side)].known.retain(|_, (_, exp)| *exp > now);
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
    use crate::nat::wire::{checksum, ipv4};

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
        let mut f = vec![0u8; 14 + 20 + 8 + 4];
        let mut eth = ethernet::Frame::new_unchecked(&mut f[..]);
        eth.set_addrs(src_mac, dst_mac);
        eth.set_ethertype(ethernet::ETHERTYPE_IPV4);
        let ip = &mut f[14..];
        ipv4::emit_header(ip, src, dst, ipv4::PROTO_UDP, 12, 64, 1);
        ip[20..22].copy_from_slice(&5000u16.to_be_bytes());
        ip[22..24].copy_from_slice(&53u16.to_be_bytes());
        ip[24..26].copy_from_slice(&12u16.to_be_bytes());
        ip[28..32].copy_from_slice(b"ping");
        let sum = checksum::pseudo_header(src, dst, 17, 12);
        let c = !checksum::fold(checksum::add(sum, &ip[20..32]));
        ip[26..28].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn all_out(l: &mut Link) -> Vec<OutFrame> {
        std::iter::from_fn(|| l.poll_frame()).collect()
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
        let mut reply = arp_frame(arp::OP_REPLY, S1_MAC, [198, 51, 100, 2], [198, 51, 100, 1], WAN_MAC);
        l.on_frame(Side::Wan, &mut reply, Offload::NONE, Duration::ZERO);
        let mut f = udp_frame(C1_MAC, LAN_MAC, [192, 168, 1, 10], [198, 51, 100, 2]);
        assert_eq!(l.on_frame(Side::Lan, &mut f, Offload::NONE, Duration::ZERO), FrameVerdict::Consumed);
        assert!(all_out(&mut l).is_empty());
        assert_eq!(l.next_timeout(), Some(Duration::from_millis(20)));
        l.handle_timeout(Duration::from_millis(20));
        let sent = all_out(&mut l);
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0].frame[0..6], &S1_MAC);
    }
}
