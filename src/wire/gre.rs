//! GRE (RFC 2784) and the enhanced GRE of PPTP (RFC 2637 §4.1: version 1,
//! protocol 0x880B, key = payload length + Call ID of the receiver).

use super::{WireError, be16, put16};

/// Protocol type of PPP in enhanced GRE.
pub const PROTO_PPP: u16 = 0x880b;
const C: u8 = 0x80;
const K: u8 = 0x20;
const S: u8 = 0x10;
const A: u8 = 0x80; // in the second byte

/// A view of a GRE header: version 0 (RFC 2784, optional checksum and key)
/// or version 1 (PPTP: key always, sequence and acknowledgment optional).
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the optional fields the flags announce are present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < 4 {
            return Err(WireError::Truncated);
        }
        let version = b[1] & 0x07;
        if version > 1 {
            return Err(WireError::BadVersion);
        }
        let p = Packet { buffer };
        if version == 1 && (p.flags() & K == 0 || p.flags() & C != 0) {
            return Err(WireError::BadHeaderLength);
        }
        if p.header_len() > p.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Version (0 or 1).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[1] & 0x07
    }

    /// Protocol type.
    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Whether it is PPTP's enhanced GRE: version 1, carrying PPP.
    pub fn is_pptp(&self) -> bool {
        self.version() == 1 && self.protocol() == PROTO_PPP
    }

    /// Whether the key field is present.
    pub fn has_key(&self) -> bool {
        self.flags() & K != 0
    }

    /// Whether a sequence number is present.
    pub fn has_seq(&self) -> bool {
        self.flags() & S != 0
    }

    /// Whether an acknowledgment number is present (version 1).
    pub fn has_ack(&self) -> bool {
        self.version() == 1 && self.buffer.as_ref()[1] & A != 0
    }

    fn key_offset(&self) -> usize {
        if self.flags() & C != 0 { 8 } else { 4 }
    }

    /// Header length with the optional fields.
    pub fn header_len(&self) -> usize {
        let mut len = self.key_offset();
        if self.has_key() {
            len += 4;
        }
        if self.has_seq() {
            len += 4;
        }
        if self.has_ack() {
            len += 4;
        }
        len
    }

    /// Version 1: the payload length half of the key.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), self.key_offset())
    }

    /// Version 1: the Call ID of the receiver (second half of the key).
    pub fn call_id(&self) -> u16 {
        be16(self.buffer.as_ref(), self.key_offset() + 2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 1: sets the Call ID (GRE has no checksum in version 1).
    pub fn set_call_id(&mut self, id: u16) {
        let at = self.key_offset() + 2;
        put16(self.buffer.as_mut(), at, id);
    }
}

/// Enhanced GRE (PPTP) carrying PPP `payload` to the receiver's Call ID
/// `call`, with a sequence and an acknowledgment number when given (the
/// payload cut to what an IPv4 packet holds).
pub fn emit_pptp(call: u16, seq: Option<u32>, ack: Option<u32>, payload: &[u8]) -> Vec<u8> {
    // What fits an IPv4 packet without options after the longest header.
    let payload = &payload[..payload.len().min(usize::from(u16::MAX) - 20 - 16)];
    let mut g = vec![K, 0x01, 0, 0, 0, 0, 0, 0];
    put16(&mut g, 2, PROTO_PPP);
    put16(&mut g, 4, payload.len() as u16);
    put16(&mut g, 6, call);
    if let Some(s) = seq {
        g[0] |= S;
        g.extend_from_slice(&s.to_be_bytes());
    }
    if let Some(a) = ack {
        g[1] |= A;
        g.extend_from_slice(&a.to_be_bytes());
    }
    g.extend_from_slice(payload);
    g
}
