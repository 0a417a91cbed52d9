//! The IKE header (RFC 7296 §3.1; IKEv1's ISAKMP header, RFC 2408, has the
//! same layout): the initiator's SPI (IKEv1: cookie) comes first and stays
//! the same for the whole IKE SA.

use super::WireError;

/// IKE's UDP port.
pub const PORT: u16 = 500;
/// NAT traversal's UDP port (RFC 3947/3948).
pub const NAT_T_PORT: u16 = 4500;
/// Length of the header.
pub const HEADER_LEN: usize = 28;

/// A view of an IKE message.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Checks the length and the major version (1 or 2).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if !matches!(b[17] >> 4, 1 | 2) {
            return Err(WireError::BadVersion);
        }
        Ok(Message { buffer })
    }

    /// The initiator's SPI (cookie).
    pub fn initiator_spi(&self) -> u64 {
        let b = self.buffer.as_ref();
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The responder's SPI (0 in the first message).
    pub fn responder_spi(&self) -> u64 {
        let b = self.buffer.as_ref();
        u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
    }
}

/// An IKE header with these SPIs (version 2, IKE_SA_INIT), for tests and
/// scripted peers.
pub fn emit(initiator: u64, responder: u64, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; HEADER_LEN];
    m[0..8].copy_from_slice(&initiator.to_be_bytes());
    m[8..16].copy_from_slice(&responder.to_be_bytes());
    m[17] = 0x20;
    m[18] = 34;
    m.extend_from_slice(body);
    let len = m.len() as u32;
    m[24..28].copy_from_slice(&len.to_be_bytes());
    m
}
