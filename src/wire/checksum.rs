//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are kept unfolded in a `u32` while adding; [`fold`] reduces to 16
//! bits. A checksum *field* holds the complement of the folded sum.

/// Adds `data` (big-endian 16-bit words, an odd last byte padded with zero)
/// to a running sum.
pub fn add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Keep headroom: fold the carries back now and then.
        if sum & 0x8000_0000 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Reduces a running sum to 16 bits (end-around carry).
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum of `data`: the complement of its folded sum.
pub fn of(data: &[u8]) -> u16 {
    !fold(add(0, data))
}

/// The IPv4 pseudo-header sum (RFC 793 / RFC 768) for a segment of
/// `length` bytes of protocol `proto`.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], proto: u8, length: u16) -> u32 {
    let mut sum = add(0, &src);
    sum = add(sum, &dst);
    sum + u32::from(proto) + u32::from(length)
}

/// RFC 1624 (eqn. 3): the checksum field `check` after a 16-bit word of the
/// covered data changed from `old` to `new`: HC' = ~(~HC + ~m + m').
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(sum)
}

/// [`update16`] for a 32-bit field (an IPv4 address).
pub fn update32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let w = |b: [u8; 4], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    update16(update16(check, w(old, 0), w(new, 0)), w(old, 2), w(new, 2))
}

/// The field of a packet whose checksum is left to the sender's hardware
/// (Linux CHECKSUM_PARTIAL, virtio NEEDS_CSUM) holds the *folded
/// pseudo-header sum*, not a checksum: a changed pseudo-header word is
/// added, not complemented (F' = F + ~m + m'), and words outside the pseudo
/// header (ports) are not accounted at all.
pub fn update_partial16(field: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(field) + u32::from(!old) + u32::from(new))
}

/// [`update_partial16`] for a 32-bit pseudo-header field (an address).
pub fn update_partial32(field: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let w = |b: [u8; 4], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    update_partial16(update_partial16(field, w(old, 0), w(new, 0)), w(old, 2), w(new, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(of(&data), !0xddf2);
    }

    #[test]
    fn odd_lengths_pad_with_zero() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        let mut data = [0x45u8, 0x00, 0x00, 0x54, 0xab, 0xcd, 0x40, 0x00, 0x40, 0x01, 0, 0, 10, 1, 0, 2, 10, 2, 0, 2];
        let check = of(&data);
        let old = [10, 1, 0, 2];
        let new = [198, 51, 100, 1];
        data[12..16].copy_from_slice(&new);
        assert_eq!(update32(check, old, new), of(&data));
        // And for a single word.
        let before = of(&data);
        data[8] = 0x3f;
        assert_eq!(update16(before, 0x4001, 0x3f01), of(&data));
    }

    #[test]
    fn partial_fields_follow_the_pseudo_header() {
        let (src, dst, new_src) = ([10, 1, 0, 2], [10, 2, 0, 2], [198, 51, 100, 1]);
        let field = fold(pseudo_header(src, dst, 6, 1460));
        let expected = fold(pseudo_header(new_src, dst, 6, 1460));
        assert_eq!(update_partial32(field, src, new_src), expected);
    }
}
