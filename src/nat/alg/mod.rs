//! Application-level gateways: what a NAT must understand of PPTP, L2TP
//! and IPsec to let more than one LAN host use them with one server.
//!
//! Every ALG implements [`Alg`], and the engine asks them, through
//! [`Algs`], at three fixed points of a packet's way:
//!
//! 1. [`Alg::refuses`]: a passthrough the profile turns off (PPTP's TCP
//!    1723 and GRE, L2TP's UDP 1701, IPsec's IKE, NAT-T and ESP) is dropped
//!    before any ALG claims it or NAPT maps it (later fragments, which
//!    follow their first, never reach the ALGs).
//! 2. [`Alg::claim`]: before plain NAPT, an ALG may take a UDP packet or
//!    one of another IP protocol (GRE, ESP) as its own; TCP is never
//!    owned (NAPT keeps no TCP port for an ALG). Going out, an owned
//!    packet keeps its ports and only its source address becomes public;
//!    coming in, it goes to the LAN host the ALG names, ports unchanged.
//!    An ALG rewrites a packet's data only when it owns it, through
//!    [`Packet`], which keeps the checksums right.
//! 3. [`Alg::segment`]: after NAPT translated a TCP segment's headers, and
//!    only for a segment inside the connection's window, an ALG that
//!    follows a control connection reads and rewrites its data. The
//!    packet's addresses and ports are then the translated ones: the
//!    [`Connection`] says who is who.
//!
//! A quirk of an ALG stays in its module. A new ALG is a module here and
//! its place in [`Algs`]; ARCHITECTURE.md lists what else it touches (its
//! profile fields, counters, bounds).

pub mod ipsec;
pub mod l2tp;
pub mod pptp;

use std::time::Duration;

use super::Side;
use super::counters::{Counters, DropReason};
use super::profile::{Profile, Protocol};
use super::table::{Endpoint, TcpState};
use super::translate::{L4Checksum, Patch, Ports, patch_byte, patch_u16};
use crate::wire::{ipv4, tcp, udp};

/// What an ALG does with a packet it was asked to [`claim`](Alg::claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not the ALG's: the next ALG is asked, then plain NAPT translates it.
    Pass,
    /// The ALG's, for the LAN host `lan_host` (its sender going out, its
    /// receiver coming in: an address on the LAN, or the engine drops the
    /// packet).
    Own {
        /// The LAN host.
        lan_host: [u8; 4],
    },
    /// Refused; the reason is counted.
    Drop(DropReason),
}

/// A TCP connection through the NAT, as NAPT translated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Connection {
    /// The LAN host's endpoint.
    pub lan: Endpoint,
    /// The remote endpoint (the server).
    pub remote: Endpoint,
    /// The public port NAPT gave the connection.
    pub public_port: u16,
}

/// What an ALG gets besides the packet: the time, and the counters for
/// what it does that is not a drop.
pub struct Context<'a> {
    /// Now.
    pub now: Duration,
    /// The NAT's counters.
    pub counters: &'a mut Counters,
}

/// A packet an ALG looks at: its addresses and ports, and its data (UDP's
/// payload, TCP's data, or everything after the IPv4 header for another
/// protocol) to read and to rewrite with every checksum that covers it.
pub struct Packet<'a> {
    /// The IPv4 packet, up to its total length.
    buf: &'a mut [u8],
    data_at: usize,
    patch: Patch,
    /// The protocol.
    pub proto: Protocol,
    /// The source address.
    pub src: [u8; 4],
    /// The destination address.
    pub dst: [u8; 4],
    /// TCP and UDP: the ports, and what TCP tracking read.
    pub(crate) ports: Option<Ports>,
    /// The whole datagram is here (it is no first fragment of a larger
    /// one): its data is complete.
    pub whole: bool,
}

impl<'a> Packet<'a> {
    /// The view of `pkt` (an IPv4 packet the engine has checked, cut to
    /// its total length) with a header of `hl` bytes; `ports` as read for
    /// TCP and UDP; `csum` as the packet I/O layer got the L4 checksum.
    pub(crate) fn new(pkt: &'a mut [u8], hl: usize, ports: Option<Ports>, csum: L4Checksum) -> Packet<'a> {
        debug_assert!(hl <= pkt.len(), "the engine checked the header length");
        let ip = ipv4::Packet::new_unchecked(&*pkt);
        let (proto, src, dst, whole) = (Protocol::of(ip.protocol()), ip.src_bytes(), ip.dst_bytes(), !ip.more_frags());
        let full = csum == L4Checksum::Full;
        let (data_at, patch) = match proto {
            Protocol::Tcp => {
                // The data is what the ports' reading counted past the TCP
                // header: the segment is not parsed again.
                let data_len = ports.map_or(0, |p| p.tcp.len as usize);
                let checksum_at = full.then_some(hl + tcp::CHECKSUM_OFFSET);
                (pkt.len().saturating_sub(data_len), Patch { l4_start: hl, checksum_at, udp: false })
            }
            Protocol::Udp => {
                let checksum_at = ports.and_then(|p| p.checksum_at).filter(|_| full).map(|at| hl + at);
                (hl + udp::HEADER_LEN, Patch { l4_start: hl, checksum_at, udp: true })
            }
            _ => (hl, Patch { l4_start: hl, checksum_at: None, udp: false }),
        };
        let data_at = data_at.min(pkt.len());
        Packet { buf: pkt, data_at, patch, proto, src, dst, ports, whole }
    }

    /// The data.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.data_at..]
    }

    /// The data to change in place, for what no checksum the NAT must keep
    /// covers: GRE's and ESP's (a GRE checksum, which enhanced GRE never
    /// has, is the ALG's to check), and TCP's or UDP's when the checksum is
    /// absent or left to hardware. `None` when a TCP or UDP checksum covers
    /// it: change it with [`Packet::patch_byte`] and [`Packet::patch_u16`].
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        self.patch.checksum_at.is_none().then(|| &mut self.buf[self.data_at..])
    }

    /// Changes the data's byte `at`, and the checksum that covers it;
    /// `false` (and nothing changed) when `at` is past the data.
    #[must_use]
    pub fn patch_byte(&mut self, at: usize, new: u8) -> bool {
        let fits = at < self.data().len();
        if fits {
            patch_byte(self.buf, self.data_at + at, new, self.patch);
        }
        fits
    }

    /// Changes the data's 16-bit field at `at` (aligned or not), and the
    /// checksum that covers it; `false` (and nothing changed) when the
    /// field is not all in the data.
    #[must_use]
    pub fn patch_u16(&mut self, at: usize, new: u16) -> bool {
        let fits = at.checked_add(2).is_some_and(|end| end <= self.data().len());
        if fits {
            patch_u16(self.buf, self.data_at + at, new, self.patch);
        }
        fits
    }

    /// The port on the server's side: the destination port of a packet
    /// from the LAN, the source port of one from the WAN.
    pub fn server_port(&self, from: Side) -> Option<u16> {
        self.ports.map(|p| match from {
            Side::Lan => p.dst,
            Side::Wan => p.src,
        })
    }
}

/// An application-level gateway, asked by the engine at fixed points of a
/// packet's way (see the module's documentation).
pub trait Alg {
    /// The public UDP port the ALG keeps for itself, which plain NAPT never
    /// hands out.
    fn reserved_udp_port(&self) -> Option<u16> {
        None
    }

    /// Why a packet from `from` is dropped, when the profile turns its
    /// passthrough off.
    fn refuses(&self, _from: Side, _p: &Packet) -> Option<DropReason> {
        None
    }

    /// Whether the packet from `from` (UDP, or an IP protocol other than
    /// TCP, UDP and ICMP) is the ALG's, before plain NAPT.
    fn claim(&mut self, _from: Side, _p: &mut Packet, _cx: &mut Context) -> Claim {
        Claim::Pass
    }

    /// A TCP segment from `from` on `conn`, inside the connection's window
    /// and its headers translated; `state` is the connection's state after
    /// it.
    fn segment(
        &mut self,
        _from: Side,
        _conn: Connection,
        _state: TcpState,
        _p: &mut Packet,
        _cx: &mut Context,
    ) -> Result<(), DropReason> {
        Ok(())
    }

    /// Forgets what has lived its time.
    fn expire(&mut self, now: Duration);
}

/// The ALGs of a NAT, in the order the engine asks them.
pub struct Algs {
    /// PPTP.
    pub pptp: pptp::Pptp,
    /// L2TP.
    pub l2tp: l2tp::L2tp,
    /// IKE and raw ESP.
    pub ipsec: ipsec::Ipsec,
}

impl Algs {
    /// The ALGs as `profile` sets them up (modes, timeouts, bounds).
    pub fn new(profile: &Profile) -> Algs {
        Algs { pptp: pptp::Pptp::new(profile), l2tp: l2tp::L2tp::new(profile), ipsec: ipsec::Ipsec::new(profile) }
    }

    fn each(&mut self) -> [&mut dyn Alg; 3] {
        [&mut self.pptp, &mut self.l2tp, &mut self.ipsec]
    }

    fn each_ref(&self) -> [&dyn Alg; 3] {
        [&self.pptp, &self.l2tp, &self.ipsec]
    }

    /// The public UDP ports the ALGs keep for themselves.
    pub fn reserved_udp_ports(&self) -> Vec<u16> {
        self.each_ref().iter().filter_map(|a| a.reserved_udp_port()).collect()
    }

    /// Why a packet is dropped, when the profile turns its passthrough off.
    pub fn refuses(&self, from: Side, p: &Packet) -> Option<DropReason> {
        self.each_ref().iter().find_map(|a| a.refuses(from, p))
    }

    /// A passthrough turned off drops the packet (UDP, or an IP protocol
    /// other than TCP, UDP and ICMP); else the first ALG that does not pass
    /// it decides.
    pub fn claim(&mut self, from: Side, p: &mut Packet, cx: &mut Context) -> Claim {
        debug_assert!(!matches!(p.proto, Protocol::Tcp | Protocol::Icmp), "TCP and ICMP are never owned");
        if let Some(reason) = self.refuses(from, p) {
            return Claim::Drop(reason);
        }
        for alg in self.each() {
            match alg.claim(from, p, cx) {
                Claim::Pass => {}
                decided => return decided,
            }
        }
        Claim::Pass
    }

    /// A translated TCP segment, through every ALG when it is inside its
    /// connection's window (`state` is `Some`); the first refusal drops it.
    pub fn segment(
        &mut self,
        from: Side,
        conn: Connection,
        state: Option<TcpState>,
        p: &mut Packet,
        cx: &mut Context,
    ) -> Result<(), DropReason> {
        let Some(state) = state else { return Ok(()) };
        self.each().into_iter().try_for_each(|alg| alg.segment(from, conn, state, p, cx))
    }

    /// Forgets what has lived its time, in every ALG.
    pub fn expire(&mut self, now: Duration) {
        for alg in self.each() {
            alg.expire(now);
        }
    }

    /// What the ALGs know, for the dump.
    pub fn snapshot(&self) -> AlgState {
        AlgState {
            pptp_calls: self.pptp.snapshot(),
            l2tp_tunnels: self.l2tp.snapshot(),
            ipsec_sas: self.ipsec.snapshot(),
        }
    }
}

/// What the ALGs know, for the dump.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlgState {
    /// PPTP calls.
    pub pptp_calls: Vec<pptp::CallInfo>,
    /// L2TP tunnels.
    pub l2tp_tunnels: Vec<l2tp::TunnelInfo>,
    /// IKE SAs on port 500 and ESP SPIs.
    pub ipsec_sas: Vec<ipsec::SaInfo>,
}

#[cfg(test)]
pub(crate) mod tests;
