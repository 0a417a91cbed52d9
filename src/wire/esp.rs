//! ESP (RFC 4303): the SPI chosen by the receiver and a sequence number.

use super::{WireError, be32};

/// Length of the SPI and sequence number.
pub const HEADER_LEN: usize = 8;

/// A view of an ESP packet's header.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Security Parameters Index.
    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), 0)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
}

/// An ESP packet's SPI, sequence number and what follows them, if it is
/// long enough to have them.
pub fn fields(p: &[u8]) -> Option<(u32, u32, &[u8])> {
    let esp = Packet::new_checked(p).ok()?;
    Some((esp.spi(), esp.seq(), &p[HEADER_LEN..]))
}

/// An ESP packet: SPI, sequence number, then `payload` (what would be the
/// encrypted part).
pub fn emit(spi: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(HEADER_LEN + payload.len());
    p.extend_from_slice(&spi.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_short_packets_are_none() {
        let p = emit(0xdead_beef, 7, b"hi");
        assert_eq!(fields(&p), Some((0xdead_beef, 7, &b"hi"[..])));
        assert_eq!(fields(&p[..7]), None);
    }
}
