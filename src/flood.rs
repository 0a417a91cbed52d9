//! Hostile traffic for labs: a repeatable stream of Ethernet frames that
//! attacks a NAT from its LAN or its WAN side, and a sender that puts them
//! on a lab host's interface through a packet socket.
//!
//! The mix ([`KINDS`]): flows from spoofed sources, SYNs, GRE with made-up
//! Call IDs, ESP with made-up SPIs, L2TP with made-up Tunnel IDs (StopCCN
//! guesses among them), IKE with made-up SPIs, PPTP control guesses (RSTs
//! from a server's port 1723 from the WAN, calls on control connections
//! never opened from the LAN), gratuitous ARP claiming other hosts'
//! addresses, malformed packets (cut headers, wrong lengths, bad checksums)
//! and echo requests to the NAT cut short. From the WAN the
//! GRE, ESP, L2TP, IKE and RSTs claim to come from the real servers; from
//! the LAN, sources are spoofed across and beyond the LAN prefix. Frames go
//! only to the NAT's MAC address (or broadcast, for ARP) on the lab's link.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use nix::libc;

pub use crate::nat::Side;
use crate::wire::{arp, checksum, esp, ethernet, gre, icmp, ike, ipv4, l2tp, pptp, tcp, udp};

/// Where the frames go and whom they claim to be.
#[derive(Debug, Clone)]
pub struct Aim {
    /// The side the hostile host is on: on the LAN it spoofs LAN hosts and
    /// opens state towards the servers, on the WAN it spoofs the servers
    /// and strangers towards the public address.
    pub side: Side,
    /// The hostile host's own MAC address.
    pub own_mac: [u8; 6],
    /// The NAT's MAC address on this side.
    pub nat_mac: [u8; 6],
    /// The NAT's address on this side (its public address on the WAN).
    pub nat_addr: Ipv4Addr,
    /// The LAN prefix.
    pub lan: Ipv4Net,
    /// The servers: impersonated from the WAN, aimed at from the LAN.
    pub servers: Vec<Ipv4Addr>,
}

/// The kinds of frame, in the order [`Flood::counts`] reports them.
pub const KINDS: [&str; 10] =
    ["udp-flow", "syn", "gre", "esp", "l2tp", "ike", "pptp-guess", "arp-poison", "malformed", "short-icmp"];

/// An endless, repeatable stream of hostile frames.
pub struct Flood {
    aim: Aim,
    rng: crate::rng::Rng,
    counts: [u64; KINDS.len()],
}

impl Flood {
    /// A stream for `aim`, the same for the same `seed`.
    pub fn new(aim: Aim, seed: u64) -> Flood {
        Flood { aim, rng: crate::rng::Rng::new(seed), counts: [0; KINDS.len()] }
    }

    /// How many frames of each kind were made, by name.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        KINDS.iter().copied().zip(self.counts).collect()
    }

    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A source address: on the WAN a stranger outside our prefixes, on the
    /// LAN anything across and beyond the LAN prefix.
    fn spoofed_source(&mut self) -> [u8; 4] {
        let r = self.u32();
        match self.aim.side {
            Side::Wan => [203, 0, 113, (r & 0xff) as u8],
            Side::Lan if r & 3 == 0 => [10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8],
            Side::Lan => {
                let base = u32::from(self.aim.lan.network());
                let host = (r >> 8) & !u32::from(self.aim.lan.netmask());
                Ipv4Addr::from(base | host).octets()
            }
        }
    }

    fn server(&mut self) -> [u8; 4] {
        let n = self.aim.servers.len().max(1);
        let i = (self.u32() as usize) % n;
        self.aim.servers.get(i).map_or([198, 51, 100, 2], |a| a.octets())
    }

    /// Source and destination of an IP packet towards the NAT: from a
    /// server (WAN) or spoofed LAN host (LAN), to the public address (WAN)
    /// or a server (LAN).
    fn ends(&mut self, from_server: bool) -> ([u8; 4], [u8; 4]) {
        match self.aim.side {
            Side::Wan if from_server => (self.server(), self.aim.nat_addr.octets()),
            Side::Wan => (self.spoofed_source(), self.aim.nat_addr.octets()),
            Side::Lan => (self.spoofed_source(), self.server()),
        }
    }

    fn frame(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        ethernet::emit(self.aim.own_mac, self.aim.nat_mac, ethertype, payload)
    }

    fn ip(&mut self, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let header = ipv4::Header { ident: self.u16(), ..ipv4::Header::new(src, dst, proto) };
        self.frame(ethernet::ETHERTYPE_IPV4, &ipv4::emit(&header, &[], l4))
    }

    fn udp(&mut self, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, data: &[u8]) -> Vec<u8> {
        self.ip(src, dst, ipv4::PROTO_UDP, &udp::emit(sport, dport, data))
    }

    fn tcp(&mut self, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
        let header = tcp::Header { seq: self.u32(), ack: self.u32(), ..tcp::Header::new(sport, dport, flags) };
        self.ip(src, dst, ipv4::PROTO_TCP, &header.emit(data))
    }

    fn make(&mut self, kind: usize) -> Vec<u8> {
        let lan = self.aim.side == Side::Lan;
        match kind {
            0 => {
                let (src, dst) = self.ends(false);
                let (sport, dport) = (self.u16() | 1, self.u16() | 1);
                self.udp(src, sport, dst, dport, b"flood")
            }
            1 => {
                let (src, dst) = self.ends(false);
                let (sport, dport) = (self.u16() | 1, if lan { 1723 } else { self.u16() | 1 });
                self.tcp(src, sport, dst, dport, 0x02, b"")
            }
            2 => {
                let (src, dst) = self.ends(true);
                let g = gre::emit_pptp(self.u16(), None, None, b"ppp!");
                self.ip(src, dst, ipv4::PROTO_GRE, &g)
            }
            3 => {
                let (src, dst) = self.ends(true);
                let e = esp::emit(self.u32(), self.u32() & 0xff, b"ciphertext");
                self.ip(src, dst, ipv4::PROTO_ESP, &e)
            }
            4 => {
                let (src, dst) = self.ends(true);
                let kinds = [l2tp::STOP_CCN, l2tp::SCCRQ, l2tp::HELLO, l2tp::CDN];
                let k = kinds[(self.u32() % 4) as usize];
                let mut m = l2tp::emit_control(self.u16(), 0, k, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, self.u16())]);
                let (ns, nr) = (self.u16() & 7, self.u16() & 7);
                m[8..10].copy_from_slice(&ns.to_be_bytes());
                m[10..12].copy_from_slice(&nr.to_be_bytes());
                let sport = if lan || self.u32() & 1 == 0 { l2tp::PORT } else { self.u16() | 1 };
                self.udp(src, sport, dst, l2tp::PORT, &m)
            }
            5 => {
                let (src, dst) = self.ends(true);
                let m = ike::emit(self.next_u64(), self.next_u64() & 1, b"sa-init");
                self.udp(src, ike::PORT, dst, ike::PORT, &m)
            }
            6 => {
                let (src, dst) = self.ends(true);
                if lan {
                    // A LAN host's control connection, opened and fed a call.
                    let sport = self.u16() | 1;
                    let ocrq = pptp::emit(pptp::OCRQ, Some(self.u16()), None);
                    self.tcp(src, sport, dst, 1723, 0x10, &ocrq)
                } else {
                    let dport = self.u16() | 1;
                    self.tcp(src, 1723, dst, dport, 0x04, b"")
                }
            }
            7 => {
                // Gratuitous ARP: a server's or a spoofed LAN host's address
                // claimed by this host.
                let claimed = if lan { self.spoofed_source() } else { self.server() };
                let mut a = vec![0u8; arp::LEN];
                let op = if self.u32() & 1 == 0 { arp::OP_REPLY } else { arp::OP_REQUEST };
                arp::emit(&mut a, op, self.aim.own_mac, claimed, [0; 6], claimed);
                let mut f = self.frame(ethernet::ETHERTYPE_ARP, &a);
                if op == arp::OP_REQUEST {
                    f[..6].copy_from_slice(&ethernet::BROADCAST);
                }
                f
            }
            8 => {
                let (src, dst) = self.ends(false);
                let mut f = self.udp(src, 9, dst, 9, &[0u8; 16]);
                let r = self.u32();
                let ip = &mut f[ethernet::HEADER_LEN..];
                match r % 4 {
                    0 => ip[0] = 0x41,                                // header length below 20
                    1 => ip[2..4].copy_from_slice(&[0xff, 0xff]),     // total length past the frame
                    2 => ip[20 + 4..20 + 6].copy_from_slice(&[0, 3]), // UDP length below its header
                    _ => ip[10] ^= 0x55,                              // header checksum wrong
                }
                if r % 4 != 3 {
                    // Summed over 20 bytes whatever the length field says.
                    ip[10..12].copy_from_slice(&[0, 0]);
                    let c = checksum::of(&ip[..ipv4::MIN_HEADER_LEN]);
                    ip[10..12].copy_from_slice(&c.to_be_bytes());
                }
                f
            }
            _ => {
                // An echo request to the NAT with 1 to 7 bytes of ICMP.
                let (src, _) = self.ends(false);
                let len = 1 + (self.u32() % 7) as usize;
                let mut m = vec![0u8; len];
                m[0] = icmp::ECHO_REQUEST;
                let dst = self.aim.nat_addr.octets();
                self.ip(src, dst, ipv4::PROTO_ICMP, &m)
            }
        }
    }
}

impl Iterator for Flood {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        // Weights: flows and SYNs most, then the passthrough protocols.
        const WEIGHTS: [u32; KINDS.len()] = [25, 15, 8, 8, 10, 6, 10, 4, 8, 6];
        let total: u32 = WEIGHTS.iter().sum();
        let mut pick = self.u32() % total;
        let mut kind = 0;
        while pick >= WEIGHTS[kind] {
            pick -= WEIGHTS[kind];
            kind += 1;
        }
        self.counts[kind] += 1;
        Some(self.make(kind))
    }
}

/// What a sender did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Frames the interface took.
    pub frames: u64,
    /// Frames it refused (its queue full).
    pub refused: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Sends `count` frames of `frames` on interface `ifname` of the calling
/// thread's namespace, at most `per_second` a second, adding each frame
/// sent to `progress` (so another thread can see the flood is on).
pub fn send(
    ifname: &str,
    frames: impl Iterator<Item = Vec<u8>>,
    count: u64,
    per_second: u64,
    progress: &AtomicU64,
) -> io::Result<Sent> {
    let index = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
    // SAFETY: a packet socket for raw frames, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields set below are
    // what sendto needs.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    let start = Instant::now();
    let mut sent = Sent::default();
    for (i, frame) in frames.take(count as usize).enumerate() {
        // SAFETY: frame and addr outlive the call; the lengths are theirs.
        let rc = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            sent.refused += 1;
        } else {
            sent.frames += 1;
            progress.fetch_add(1, Ordering::Relaxed);
        }
        // Keep to the rate: ahead of it, wait until the schedule catches up.
        if per_second > 0 && i % 256 == 255 {
            let due = Duration::from_secs_f64((i + 1) as f64 / per_second as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    sent.elapsed = start.elapsed();
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aim(side: Side) -> Aim {
        Aim {
            side,
            own_mac: [2, 0, 0, 0, 0, 9],
            nat_mac: [2, 0, 0, 0, 0, 1],
            nat_addr: Ipv4Addr::new(198, 51, 100, 1),
            lan: "192.168.1.0/24".parse().expect("lan"),
            servers: vec![Ipv4Addr::new(198, 51, 100, 2)],
        }
    }

    #[test]
    fn the_stream_repeats_for_a_seed_and_mixes_every_kind() {
        let a: Vec<Vec<u8>> = Flood::new(aim(Side::Wan), 7).take(2000).collect();
        let b: Vec<Vec<u8>> = Flood::new(aim(Side::Wan), 7).take(2000).collect();
        assert_eq!(a, b);
        let mut f = Flood::new(aim(Side::Lan), 7);
        f.by_ref().take(5000).for_each(drop);
        assert!(f.counts().iter().all(|(_, n)| *n > 100), "{:?}", f.counts());
    }

    #[test]
    fn wan_frames_go_to_the_nat_and_claim_the_server_or_a_stranger() {
        for f in Flood::new(aim(Side::Wan), 1).take(3000) {
            let eth = ethernet::Frame::new_checked(&f[..]).expect("ethernet");
            assert!(eth.dst() == [2, 0, 0, 0, 0, 1] || eth.dst() == ethernet::BROADCAST);
            if eth.ethertype() == ethernet::ETHERTYPE_IPV4 && f.len() >= 34 {
                let src = [f[26], f[27], f[28], f[29]];
                assert!(src == [198, 51, 100, 2] || src[..3] == [203, 0, 113], "{src:?}");
            }
        }
    }
}
