//! TCP headers (RFC 9293), as far as a NAT reads them.

use super::{WireError, be16, be32, put16};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// FIN flag.
pub const FIN: u8 = 0x01;
/// SYN flag.
pub const SYN: u8 = 0x02;
/// RST flag.
pub const RST: u8 = 0x04;
/// ACK flag.
pub const ACK: u8 = 0x10;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 16;

/// A view of a TCP segment: at least 20 bytes, data offset within them.
#[derive(Debug, Clone, Copy)]
pub struct Segment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Segment<T> {
    /// Checks the header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let off = usize::from(b[12] >> 4) * 4;
        if off < MIN_HEADER_LEN || off > b.len() {
            return Err(WireError::BadHeaderLength);
        }
        Ok(Segment { buffer })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }

    /// Receive window (unscaled).
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), 14)
    }

    /// Header length (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }

    /// The flag byte (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), CHECKSUM_OFFSET)
    }

    /// The data after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), CHECKSUM_OFFSET, c);
    }
}

/// The fields of a TCP header a sender chooses (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags ([`SYN`], [`ACK`]…).
    pub flags: u8,
    /// Receive window.
    pub window: u16,
}

impl Header {
    /// A header with sequence and acknowledgment numbers 0 and a window of
    /// 64,240 bytes (Linux's first).
    pub fn new(src_port: u16, dst_port: u16, flags: u8) -> Header {
        Header { src_port, dst_port, seq: 0, ack: 0, flags, window: 64240 }
    }

    /// A 20-byte header and `payload`, checksum 0: the IPv4 builder fills
    /// it in once the addresses are known.
    pub fn emit(&self, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0u8; MIN_HEADER_LEN + payload.len()];
        put16(&mut s, 0, self.src_port);
        put16(&mut s, 2, self.dst_port);
        s[4..8].copy_from_slice(&self.seq.to_be_bytes());
        s[8..12].copy_from_slice(&self.ack.to_be_bytes());
        s[12] = ((MIN_HEADER_LEN / 4) as u8) << 4;
        s[13] = self.flags;
        put16(&mut s, 14, self.window);
        s[MIN_HEADER_LEN..].copy_from_slice(payload);
        s
    }
}
