//! IPv4 (RFC 791).

use std::net::Ipv4Addr;

use super::checksum;
use super::{WireError, addr, be16, put16};

/// Protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Protocol number of GRE.
pub const PROTO_GRE: u8 = 47;
/// Protocol number of ESP.
pub const PROTO_ESP: u8 = 50;
/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// A view of an IPv4 packet. `new_checked` guarantees version 4, a header
/// length of 20 bytes or more within the buffer, and a total length between
/// the header length and the buffer length; the buffer may hold trailing
/// bytes (Ethernet padding), which `payload` excludes.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps bytes already checked by `new_checked` (or built by us);
    /// accessors on anything shorter panic.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Checks the header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN || hl > b.len() {
            return Err(WireError::BadHeaderLength);
        }
        let total = usize::from(be16(b, 2));
        if total < hl || total > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buffer })
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }

    /// Total length field.
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 2))
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[6] & 0x40 != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[6] & 0x20 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 6) & 0x1fff) * 8
    }

    /// Whether this is a fragment (not a whole datagram).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 10)
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }

    /// Source address bytes.
    pub fn src_bytes(&self) -> [u8; 4] {
        addr(self.buffer.as_ref(), 12)
    }

    /// Destination address bytes.
    pub fn dst_bytes(&self) -> [u8; 4] {
        addr(self.buffer.as_ref(), 16)
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::add(0, &self.buffer.as_ref()[..self.header_len()])) == 0xffff
    }

    /// The payload (up to the total length).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }

    /// The header and payload, without trailing padding.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source address, updating the header checksum.
    pub fn set_src(&mut self, a: [u8; 4]) {
        self.set_addr(12, a);
    }

    /// Sets the destination address, updating the header checksum.
    pub fn set_dst(&mut self, a: [u8; 4]) {
        self.set_addr(16, a);
    }

    fn set_addr(&mut self, at: usize, a: [u8; 4]) {
        let old = addr(self.buffer.as_ref(), at);
        let check = checksum::update32(self.checksum(), old, a);
        let b = self.buffer.as_mut();
        b[at..at + 4].copy_from_slice(&a);
        put16(b, 10, check);
    }

    /// Sets the header checksum field as it is, right or not.
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), 10, check);
    }

    /// Sets the TTL, updating the header checksum.
    pub fn set_ttl(&mut self, ttl: u8) {
        let b = self.buffer.as_ref();
        let old = be16(b, 8);
        let new = u16::from(ttl) << 8 | (old & 0x00ff);
        let check = checksum::update16(be16(b, 10), old, new);
        let b = self.buffer.as_mut();
        put16(b, 8, new);
        put16(b, 10, check);
    }

    /// Decrements the TTL, updating the header checksum.
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_ref();
        let old = be16(b, 8);
        let new = old.wrapping_sub(0x0100);
        let check = checksum::update16(be16(b, 10), old, new);
        let b = self.buffer.as_mut();
        put16(b, 8, new);
        put16(b, 10, check);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        put16(b, 10, 0);
        let c = checksum::of(&b[..hl]);
        put16(b, 10, c);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[hl..total]
    }
}

/// The fields of an IPv4 header a sender chooses; lengths and the checksum
/// follow from what [`emit`] is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Protocol of the payload.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// The flags and fragment offset word (0: a whole datagram, DF clear).
    pub frag: u16,
}

impl Header {
    /// A header for a whole datagram with TTL 64 and identification 0.
    pub fn new(src: [u8; 4], dst: [u8; 4], protocol: u8) -> Header {
        Header { src, dst, protocol, ttl: 64, ident: 0, frag: 0 }
    }
}

/// A whole IPv4 packet: `header`, `options` (cut to a multiple of 4 bytes,
/// at most 40) and `payload` (cut so that the packet fits the 16-bit total
/// length), with the header checksum filled in and, for a TCP or UDP
/// payload that is not a fragment, the transport checksum too.
pub fn emit(header: &Header, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let options = &options[..options.len().min(40) / 4 * 4];
    let hl = MIN_HEADER_LEN + options.len();
    let total = (hl + payload.len()).min(usize::from(u16::MAX));
    let mut p = vec![0u8; total];
    p[0] = 0x40 | (hl / 4) as u8;
    put16(&mut p, 2, total as u16);
    put16(&mut p, 4, header.ident);
    put16(&mut p, 6, header.frag);
    p[8] = header.ttl;
    p[9] = header.protocol;
    p[12..16].copy_from_slice(&header.src);
    p[16..20].copy_from_slice(&header.dst);
    p[MIN_HEADER_LEN..hl].copy_from_slice(options);
    p[hl..].copy_from_slice(&payload[..total - hl]);
    if header.frag & 0x3fff == 0 {
        fill_transport_checksum(&mut p);
    }
    Packet::new_unchecked(&mut p[..]).fill_checksum();
    p
}

/// [`emit`] with no options and the defaults of [`Header::new`].
pub fn packet(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    emit(&Header::new(src, dst, protocol), &[], payload)
}

/// Splits a whole datagram in two fragments after `at` bytes of its payload
/// (a multiple of 8), as a router on the way would: each gets the header
/// (options included), the first with More Fragments set, the second with
/// its offset; the first keeps the whole datagram's transport checksum.
/// `None` if `pkt` is not a whole IPv4 datagram or `at` cannot split it.
pub fn split(pkt: &[u8], at: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    let ip = Packet::new_checked(pkt).ok()?;
    let (hl, total) = (ip.header_len(), ip.total_len());
    if ip.is_fragment() || at == 0 || at % 8 != 0 || at >= total - hl {
        return None;
    }
    let part = |payload: &[u8], frag: u16| {
        let mut p = pkt[..hl].to_vec();
        p.extend_from_slice(payload);
        put16(&mut p, 2, (hl + payload.len()) as u16);
        put16(&mut p, 6, frag);
        Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    };
    Some((part(&pkt[hl..hl + at], 0x2000), part(&pkt[hl + at..total], (at / 8) as u16)))
}

/// Where a TCP or UDP checksum sits in a packet whose header is `hl` bytes,
/// if the payload is long enough to hold one.
fn transport_checksum_at(protocol: u8, hl: usize, total: usize) -> Option<usize> {
    let at = hl
        + match protocol {
            PROTO_TCP => super::tcp::CHECKSUM_OFFSET,
            PROTO_UDP => super::udp::CHECKSUM_OFFSET,
            _ => return None,
        };
    (at + 2 <= total).then_some(at)
}

/// The one's-complement sum of a TCP or UDP payload with its pseudo header,
/// complemented: 0 when its checksum is right. `None` for other protocols
/// and for bytes that are not an IPv4 packet.
pub fn transport_checksum_residue(pkt: &[u8]) -> Option<u16> {
    let ip = Packet::new_checked(pkt).ok()?;
    let (hl, total) = (ip.header_len(), ip.total_len());
    transport_checksum_at(ip.protocol(), hl, total)?;
    let sum = checksum::pseudo_header(ip.src_bytes(), ip.dst_bytes(), ip.protocol(), (total - hl) as u16);
    Some(!checksum::fold(checksum::add(sum, &pkt[hl..total])))
}

/// Fills in the TCP or UDP checksum of a whole packet (a UDP sum of zero
/// is sent as all ones); other packets are left as they are.
pub fn fill_transport_checksum(pkt: &mut [u8]) {
    let Ok(ip) = Packet::new_checked(&*pkt) else { return };
    let (hl, total, protocol) = (ip.header_len(), ip.total_len(), ip.protocol());
    let Some(at) = transport_checksum_at(protocol, hl, total) else { return };
    put16(pkt, at, 0);
    let c = transport_checksum_residue(pkt).unwrap_or(0);
    put16(pkt, at, if c == 0 && protocol == PROTO_UDP { 0xffff } else { c });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        emit(&Header { ident: 7, ..Header::new([10, 1, 0, 2], [10, 2, 0, 2], PROTO_UDP) }, &[], &[0; 8])
    }

    #[test]
    fn a_good_header_reads_back() {
        let b = header();
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!((p.header_len(), p.total_len(), p.ttl(), p.protocol()), (20, 28, 64, PROTO_UDP));
        assert_eq!(p.src(), Ipv4Addr::new(10, 1, 0, 2));
        assert!(p.verify_checksum());
        assert!(!p.is_fragment());
    }

    #[test]
    fn malformed_headers_are_refused_by_kind() {
        let good = header();
        assert_eq!(Packet::new_checked(&good[..19]).err(), Some(WireError::Truncated));
        let mut b = good.clone();
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadVersion));
        let mut b = good.clone();
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadHeaderLength));
        let mut b = good.clone();
        b[0] = 0x4f; // 60-byte header in a 28-byte packet
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadHeaderLength));
        let mut b = good.clone();
        put16(&mut b, 2, 200);
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadLength));
        let mut b = good;
        put16(&mut b, 2, 12);
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadLength));
    }

    #[test]
    fn setters_keep_the_checksum_right() {
        let mut b = header();
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        p.set_src([198, 51, 100, 1]);
        p.set_dst([192, 168, 1, 10]);
        p.decrement_ttl();
        assert!(p.verify_checksum());
        assert_eq!(p.ttl(), 63);
        p.set_ttl(7);
        assert!(p.verify_checksum());
        assert_eq!((p.ttl(), p.protocol()), (7, PROTO_UDP));
    }

    #[test]
    fn emitted_packets_carry_right_checksums() {
        let udp = super::super::udp::emit(5000, 53, b"query");
        let p = packet([10, 1, 0, 2], [10, 2, 0, 2], PROTO_UDP, &udp);
        assert!(Packet::new_checked(&p[..]).expect("valid").verify_checksum());
        assert_eq!(transport_checksum_residue(&p), Some(0));
        // The largest datagram still reads back whole.
        let big = packet([10, 1, 0, 2], [10, 2, 0, 2], PROTO_UDP, &super::super::udp::emit(1, 2, &[7; 70000]));
        let view = Packet::new_checked(&big[..]).expect("valid");
        assert_eq!(big.len(), usize::from(u16::MAX));
        assert!(super::super::udp::Datagram::new_checked(view.payload()).is_ok());
        assert_eq!(transport_checksum_residue(&big), Some(0));
        let mut h = Header::new([10, 1, 0, 2], [10, 2, 0, 2], PROTO_TCP);
        (h.ttl, h.ident, h.frag) = (3, 9, 0x4000);
        let p = emit(&h, &[1, 1, 1, 0, 7], &[0; 20]);
        let view = Packet::new_checked(&p[..]).expect("valid");
        assert_eq!((view.header_len(), view.ttl(), view.ident(), view.dont_frag()), (24, 3, 9, true));
        assert!(view.verify_checksum());
        assert_eq!(transport_checksum_residue(&p), Some(0));
        // A fragment's transport checksum covers the whole datagram: left.
        h.frag = 0x2000;
        let p = emit(&h, &[], &[0; 20]);
        assert_eq!(&p[36..38], &[0, 0]);
    }

    #[test]
    fn a_split_datagram_reads_back_as_two_fragments() {
        let whole = packet([10, 1, 0, 2], [10, 2, 0, 2], PROTO_UDP, &super::super::udp::emit(1, 2, &[7; 40]));
        let (a, b) = split(&whole, 16).expect("splits");
        let (fa, fb) = (Packet::new_checked(&a[..]).expect("first"), Packet::new_checked(&b[..]).expect("second"));
        assert!(fa.more_frags() && fa.frag_offset() == 0 && fa.verify_checksum());
        assert!(!fb.more_frags() && fb.frag_offset() == 16 && fb.verify_checksum());
        assert_eq!([fa.payload(), fb.payload()].concat(), whole[20..]);
        assert_eq!(split(&whole, 12), None, "not a multiple of 8");
        assert_eq!(split(&whole, 48), None, "nothing left for the second");
        assert_eq!(split(&a, 8), None, "already a fragment");
        assert_eq!(split(&whole, usize::MAX & !7), None, "an offset past any packet");
    }

    #[test]
    fn padding_is_not_payload() {
        let mut b = header();
        b.extend_from_slice(&[0; 18]);
        let p = Packet::new_checked(&b[..]).expect("valid with padding");
        assert_eq!(p.payload().len(), 8);
    }
}
