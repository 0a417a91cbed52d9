//! How a NAT changes bytes: reading a packet's ports, rewriting an
//! address and port with every checksum that covers them (IPv4, TCP/UDP,
//! ICMP; complete or left to hardware), and the packet an ICMP error quotes.
//! The engine decides what to change; this module changes it.

use super::counters::DropReason;
use super::profile::Protocol;
use super::table::{Class, Endpoint};
use super::tcp::Seg;
use crate::wire::{checksum, icmp, ipv4, tcp, udp};

/// The state of a packet's TCP/UDP checksum, as the packet I/O layer got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Checksum {
    /// A complete checksum (or none, for UDP with 0).
    Full,
    /// Left to the sender's hardware (Linux CHECKSUM_PARTIAL): the field
    /// holds the folded pseudo-header sum.
    Partial,
}

/// The ports (or identifier) of a packet, and where they are.
#[derive(Clone, Copy)]
pub(crate) struct Ports {
    pub(super) src: u16,
    pub(super) dst: u16,
    /// Offset of the L4 checksum inside the L4 header, if the packet has one
    /// that covers addresses and ports.
    pub(super) checksum_at: Option<usize>,
    /// What TCP tracking needs (default for UDP).
    pub(super) tcp: Seg,
}

/// Options must be well formed; source routes are refused (RFC 7126).
pub(crate) fn check_options(opts: &[u8]) -> Result<(), DropReason> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return Ok(()),
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1).ok_or(DropReason::Ipv4BadOption)?);
                if len < 2 || i + len > opts.len() {
                    return Err(DropReason::Ipv4BadOption);
                }
                if kind == 0x83 || kind == 0x89 {
                    return Err(DropReason::Ipv4SourceRoute);
                }
                i += len;
            }
        }
    }
    Ok(())
}

pub(crate) fn read_ports(l4: &[u8], proto: Protocol, first_fragment: bool) -> Result<Ports, DropReason> {
    if proto == Protocol::Tcp {
        // A first fragment must still hold the whole header (RFC 1858).
        let seg = tcp::Segment::new_checked(l4).map_err(DropReason::Tcp)?;
        let tcp = Seg {
            flags: seg.flags(),
            seq: seg.seq(),
            ack: seg.ack(),
            window: seg.window(),
            len: (l4.len() - seg.header_len()) as u32,
        };
        return Ok(Ports { src: seg.src_port(), dst: seg.dst_port(), checksum_at: Some(tcp::CHECKSUM_OFFSET), tcp });
    }
    if first_fragment {
        if l4.len() < udp::HEADER_LEN {
            return Err(DropReason::Udp(crate::wire::WireError::Truncated));
        }
        let (src, dst) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
        let has_sum = l4[6] != 0 || l4[7] != 0;
        return Ok(Ports { src, dst, checksum_at: has_sum.then_some(udp::CHECKSUM_OFFSET), tcp: Seg::default() });
    }
    let d = udp::Datagram::new_checked(l4).map_err(DropReason::Udp)?;
    let has_sum = d.checksum() != 0;
    Ok(Ports {
        src: d.src_port(),
        dst: d.dst_port(),
        checksum_at: has_sum.then_some(udp::CHECKSUM_OFFSET),
        tcp: Seg::default(),
    })
}

/// Which endpoint of a packet is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rewritten {
    Source,
    Destination,
}

/// Rewrites one address and its port, with the IPv4 and L4 checksums.
pub(crate) fn rewrite(
    pkt: &mut [u8],
    hl: usize,
    which: Rewritten,
    addr: [u8; 4],
    ports: Ports,
    port: u16,
    csum: L4Checksum,
) {
    let (addr_at, port_at, old_port) = match which {
        Rewritten::Source => (12, 0, ports.src),
        Rewritten::Destination => (16, 2, ports.dst),
    };
    let old_addr = [pkt[addr_at], pkt[addr_at + 1], pkt[addr_at + 2], pkt[addr_at + 3]];
    if let Some(at) = ports.checksum_at {
        let at = hl + at;
        let old = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
        let new = match csum {
            L4Checksum::Full => {
                let c = checksum::update16(checksum::update32(old, old_addr, addr), old_port, port);
                // UDP sends a computed zero as all ones (0 means "none").
                if c == 0 && ports.checksum_at == Some(udp::CHECKSUM_OFFSET) { 0xffff } else { c }
            }
            // The hardware sums the ports itself; only the pseudo header moves.
            L4Checksum::Partial => checksum::update_partial32(old, old_addr, addr),
        };
        pkt[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }
    pkt[hl + port_at..hl + port_at + 2].copy_from_slice(&port.to_be_bytes());
    let mut ip = ipv4::Packet::new_unchecked(&mut *pkt);
    match which {
        Rewritten::Source => ip.set_src(addr),
        Rewritten::Destination => ip.set_dst(addr),
    }
}

/// Rewrites an ICMP query's identifier and the ICMP checksum.
pub(crate) fn rewrite_icmp_ident(icmp_bytes: &mut [u8], ident: u16) {
    let mut msg = icmp::Message::new_unchecked(icmp_bytes);
    let check = checksum::update16(msg.checksum(), msg.ident(), ident);
    msg.set_ident(ident);
    // The update gives 0x0000 for a message that became all zero (an echo
    // reply with identifier 0, sequence 0 and no data), where only 0xffff
    // is right. ICMP has no pseudo header, so 0xffff is right whenever
    // 0x0000 is: both are zero in one's complement.
    msg.set_checksum(if check == 0 { 0xffff } else { check });
}

pub(crate) fn is_echo_request(pkt: &[u8]) -> bool {
    icmp_type(pkt) == Some(icmp::ECHO_REQUEST)
}

pub(crate) fn is_icmp_error(pkt: &[u8]) -> bool {
    matches!(
        icmp_type(pkt),
        Some(icmp::DEST_UNREACHABLE | icmp::SOURCE_QUENCH | icmp::TIME_EXCEEDED | icmp::PARAMETER_PROBLEM)
    )
}

/// The type of a whole ICMP message (its 8-byte header all there), if the
/// packet is one.
fn icmp_type(pkt: &[u8]) -> Option<u8> {
    let ip = ipv4::Packet::new_checked(pkt).ok()?;
    if ip.protocol() != ipv4::PROTO_ICMP || ip.frag_offset() != 0 {
        return None;
    }
    icmp::Message::new_checked(ip.payload()).ok().map(|m| m.msg_type())
}

/// The packet an ICMP error quotes: its IPv4 header and at least 8 bytes of
/// its payload (RFC 792), whose total length may exceed what is quoted.
pub(crate) struct Quoted {
    pub(super) hl: usize,
    pub(super) proto: u8,
    pub(super) src: [u8; 4],
    pub(super) dst: [u8; 4],
    pub(super) src_port: u16,
    pub(super) dst_port: u16,
    pub(super) len: usize,
}

impl Quoted {
    pub(super) fn read(b: &[u8]) -> Option<Quoted> {
        if b.len() < ipv4::MIN_HEADER_LEN || b[0] >> 4 != 4 {
            return None;
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        if hl < ipv4::MIN_HEADER_LEN || b.len() < hl + 8 {
            return None;
        }
        let proto = b[9];
        let w = |at: usize| u16::from_be_bytes([b[hl + at], b[hl + at + 1]]);
        let (src_port, dst_port) = match proto {
            ipv4::PROTO_TCP | ipv4::PROTO_UDP => (w(0), w(2)),
            // A quoted ICMP query: its identifier stands for both ports.
            ipv4::PROTO_ICMP => (w(4), w(4)),
            _ => (0, 0),
        };
        let addr = |at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
        Some(Quoted { hl, proto, src: addr(12), dst: addr(16), src_port, dst_port, len: b.len() })
    }

    pub(super) fn class(&self) -> Class {
        match self.proto {
            ipv4::PROTO_TCP | ipv4::PROTO_UDP | ipv4::PROTO_ICMP => Class::Ported,
            _ => Class::AddressOnly,
        }
    }

    /// (class, public port, remote) to find the mapping of a quoted packet
    /// whose `which` endpoint is the public one.
    pub(super) fn keys(&self, which: Rewritten) -> (Class, u16, Endpoint) {
        let class = self.class();
        let (public, remote) = match which {
            Rewritten::Source => (self.src_port, Endpoint::new(self.dst, self.dst_port)),
            Rewritten::Destination => (self.dst_port, Endpoint::new(self.src, self.src_port)),
        };
        match (class, self.proto) {
            (Class::AddressOnly, _) => (class, 0, Endpoint::new(remote.addr, 0)),
            (_, ipv4::PROTO_ICMP) => (class, public, Endpoint::new(remote.addr, 0)),
            _ => (class, public, remote),
        }
    }

    /// Rewrites the quoted packet's `which` endpoint to `to`: address,
    /// port (or ICMP identifier), the quoted IPv4 checksum, and the quoted
    /// L4 checksum when it is quoted whole.
    pub(super) fn rewrite(&self, b: &mut [u8], which: Rewritten, to: Endpoint) {
        let (addr_at, old_addr) = match which {
            Rewritten::Source => (12, self.src),
            Rewritten::Destination => (16, self.dst),
        };
        let hl = self.hl;
        let old_ip_sum = u16::from_be_bytes([b[10], b[11]]);
        b[addr_at..addr_at + 4].copy_from_slice(&to.addr);
        let s = checksum::update32(old_ip_sum, old_addr, to.addr);
        b[10..12].copy_from_slice(&s.to_be_bytes());
        match (self.class(), self.proto) {
            (Class::AddressOnly, _) => {}
            (_, ipv4::PROTO_ICMP) => {
                let old = self.src_port;
                b[hl + 4..hl + 6].copy_from_slice(&to.port.to_be_bytes());
                let at = hl + icmp::CHECKSUM_OFFSET;
                let c = checksum::update16(u16::from_be_bytes([b[at], b[at + 1]]), old, to.port);
                b[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
            _ => {
                let (port_at, old_port) = match which {
                    Rewritten::Source => (0, self.src_port),
                    Rewritten::Destination => (2, self.dst_port),
                };
                b[hl + port_at..hl + port_at + 2].copy_from_slice(&to.port.to_be_bytes());
                let sum_at =
                    hl + if self.proto == ipv4::PROTO_TCP { tcp::CHECKSUM_OFFSET } else { udp::CHECKSUM_OFFSET };
                if sum_at + 2 <= self.len {
                    let old = u16::from_be_bytes([b[sum_at], b[sum_at + 1]]);
                    if !(self.proto == ipv4::PROTO_UDP && old == 0) {
                        let c = checksum::update16(checksum::update32(old, old_addr, to.addr), old_port, to.port);
                        b[sum_at..sum_at + 2].copy_from_slice(&c.to_be_bytes());
                    }
                }
            }
        }
    }
}

/// Where the checksum of a changed payload byte lives.
#[derive(Debug, Clone, Copy)]
pub struct Patch {
    /// Offset of the L4 header in the packet.
    pub l4_start: usize,
    /// Offset of the L4 checksum in the packet, if it is complete (a
    /// checksum left to hardware, or a UDP checksum of 0, covers nothing
    /// here).
    pub checksum_at: Option<usize>,
    /// UDP: a computed 0 is sent as all ones.
    pub udp: bool,
}

/// Changes one payload byte and the checksum that covers it.
pub fn patch_byte(pkt: &mut [u8], at: usize, new: u8, patch: Patch) {
    let old = pkt[at];
    if old == new {
        return;
    }
    pkt[at] = new;
    if let Some(c) = patch.checksum_at {
        // The byte's 16-bit word, aligned from the start of the L4 header.
        let (old_word, new_word) = if (at - patch.l4_start) % 2 == 0 {
            (u16::from(old) << 8, u16::from(new) << 8)
        } else {
            (u16::from(old), u16::from(new))
        };
        let check = u16::from_be_bytes([pkt[c], pkt[c + 1]]);
        let mut updated = checksum::update16(check, old_word, new_word);
        if patch.udp && updated == 0 {
            updated = 0xffff;
        }
        pkt[c..c + 2].copy_from_slice(&updated.to_be_bytes());
    }
}

/// Changes a 16-bit payload field (aligned or not) and its checksum.
pub fn patch_u16(pkt: &mut [u8], at: usize, new: u16, patch: Patch) {
    let [hi, lo] = new.to_be_bytes();
    patch_byte(pkt, at, hi, patch);
    patch_byte(pkt, at + 1, lo, patch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_walked_to_their_end_and_source_routes_refused_wherever_they_are() {
        let bad = Err(DropReason::Ipv4BadOption);
        let route = Err(DropReason::Ipv4SourceRoute);
        for (opts, want) in [
            (&[1u8, 1, 1, 1][..], Ok(())),                 // NOPs to the very end, no EOL
            (&[0x44, 4, 0, 0][..], Ok(())),                // a timestamp that fills the space
            (&[0x44, 5, 0, 0][..], bad),                   // one byte past it
            (&[0x44, 1, 0, 0][..], bad),                   // a length below 2
            (&[0x1e, 2, 1, 1][..], Ok(())),                // a length of 2: the option alone
            (&[0x44][..], bad),                            // no length at all
            (&[0x83, 3, 4, 0][..], route),                 // loose source route
            (&[0x89, 3, 4, 0][..], route),                 // strict source route
            (&[0x07, 3, 4, 0x83, 3, 4, 0, 0][..], route),  // after a record route
            (&[0x07, 3, 4, 0x44, 4, 0, 0, 0][..], Ok(())), // two options, no route
            (&[0, 0x83, 3, 4][..], Ok(())),                // after EOL nothing counts
        ] {
            assert_eq!(check_options(opts), want, "{opts:02x?}");
        }
    }

    #[test]
    fn a_tcp_segments_length_is_its_data_alone() {
        let mut seg = vec![0u8; 20 + 7];
        seg[12] = 5 << 4;
        assert_eq!(read_ports(&seg, Protocol::Tcp, false).map(|p| p.tcp.len), Ok(7));
        let mut with_options = vec![0u8; 24 + 3];
        with_options[12] = 6 << 4;
        assert_eq!(read_ports(&with_options, Protocol::Tcp, false).map(|p| p.tcp.len), Ok(3));
    }

    #[test]
    fn a_udp_first_fragment_needs_its_header_and_says_whether_it_has_a_checksum() {
        let first = |l4: &[u8]| read_ports(l4, Protocol::Udp, true).map(|p| p.checksum_at);
        assert!(first(&[0, 53, 0, 53, 0, 8, 0]).is_err(), "7 bytes");
        assert_eq!(first(&[0, 53, 0, 53, 0, 8, 0, 0]), Ok(None), "no checksum");
        assert_eq!(first(&[0, 53, 0, 53, 0, 8, 0, 1]), Ok(Some(udp::CHECKSUM_OFFSET)));
        assert_eq!(first(&[0, 53, 0, 53, 0, 8, 1, 0]), Ok(Some(udp::CHECKSUM_OFFSET)));
    }
}
