//! UDP headers (RFC 768).

use super::{WireError, be16, put16};

/// Length of the header.
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 6;

/// A view of a UDP datagram: an 8-byte header whose length field is between
/// 8 and the buffer length.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Checks the header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(be16(b, 4));
        if len < HEADER_LEN || len > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Datagram { buffer })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Length field (header and data).
    pub fn len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 4))
    }

    /// Whether the datagram carries no data.
    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }

    /// Checksum field (0: none was computed).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), CHECKSUM_OFFSET)
    }

    /// The data after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
    /// The data after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), CHECKSUM_OFFSET, c);
    }
}

/// The most payload a UDP datagram carries in an IPv4 packet without options.
pub const MAX_PAYLOAD: usize = u16::MAX as usize - 20 - HEADER_LEN;

/// A UDP header and `payload` (cut to [`MAX_PAYLOAD`]), checksum 0: the
/// IPv4 builder fills it in once the addresses are known.
pub fn emit(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let mut d = vec![0u8; HEADER_LEN + payload.len()];
    put16(&mut d, 0, src_port);
    put16(&mut d, 2, dst_port);
    put16(&mut d, 4, (HEADER_LEN + payload.len()) as u16);
    d[HEADER_LEN..].copy_from_slice(payload);
    d
}
