//! ARP for IPv4 over Ethernet (RFC 826).

use super::{WireError, addr, be16, put16};

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;
/// A request.
pub const OP_REQUEST: u16 = 1;
/// A reply.
pub const OP_REPLY: u16 = 2;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks length and that hardware and protocol are Ethernet and IPv4.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < LEN {
            return Err(WireError::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::BadVersion);
        }
        Ok(Packet { buffer })
    }

    /// Operation (request 1, reply 2).
    pub fn oper(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// Sender hardware address.
    pub fn sha(&self) -> [u8; 6] {
        let b = self.buffer.as_ref();
        [b[8], b[9], b[10], b[11], b[12], b[13]]
    }

    /// Sender protocol address.
    pub fn spa(&self) -> [u8; 4] {
        addr(self.buffer.as_ref(), 14)
    }

    /// Target hardware address.
    pub fn tha(&self) -> [u8; 6] {
        let b = self.buffer.as_ref();
        [b[18], b[19], b[20], b[21], b[22], b[23]]
    }

    /// Target protocol address.
    pub fn tpa(&self) -> [u8; 4] {
        addr(self.buffer.as_ref(), 24)
    }
}

/// Writes an Ethernet/IPv4 ARP packet into `out` (at least [`LEN`] bytes).
pub fn emit(out: &mut [u8], oper: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) {
    put16(out, 0, 1);
    put16(out, 2, 0x0800);
    out[4] = 6;
    out[5] = 4;
    put16(out, 6, oper);
    out[8..14].copy_from_slice(&sha);
    out[14..18].copy_from_slice(&spa);
    out[18..24].copy_from_slice(&tha);
    out[24..28].copy_from_slice(&tpa);
}
