//! ICMP for IPv4 (RFC 792): queries (echo) and errors.

use super::{WireError, be16, put16};

/// Echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Destination unreachable (an error).
pub const DEST_UNREACHABLE: u8 = 3;
/// Source quench (a deprecated error).
pub const SOURCE_QUENCH: u8 = 4;
/// Redirect.
pub const REDIRECT: u8 = 5;
/// Echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Time exceeded (an error).
pub const TIME_EXCEEDED: u8 = 11;
/// Parameter problem (an error).
pub const PARAMETER_PROBLEM: u8 = 12;
/// Timestamp request.
pub const TIMESTAMP: u8 = 13;
/// Timestamp reply.
pub const TIMESTAMP_REPLY: u8 = 14;
/// Length of the header (type, code, checksum, 4 bytes of rest).
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 2;

/// A view of an ICMP message: at least its 8-byte header.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Wraps bytes already checked by `new_checked` (or built by us);
    /// accessors on anything shorter panic.
    pub fn new_unchecked(buffer: T) -> Self {
        Message { buffer }
    }

    /// Checks the length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Message { buffer })
    }

    /// Whether the checksum over the whole message is right.
    pub fn verify_checksum(&self) -> bool {
        super::checksum::of(self.buffer.as_ref()) == 0
    }

    /// The type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), CHECKSUM_OFFSET)
    }

    /// Whether this is an error that quotes the packet that caused it (a
    /// redirect quotes one too, but is advice for the host, not an error).
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), DEST_UNREACHABLE | SOURCE_QUENCH | TIME_EXCEEDED | PARAMETER_PROBLEM)
    }

    /// Whether this is a query carrying an identifier (echo, timestamp).
    pub fn is_query(&self) -> bool {
        matches!(self.msg_type(), ECHO_REQUEST | ECHO_REPLY | TIMESTAMP | TIMESTAMP_REPLY)
    }

    /// Whether this is a query request (as opposed to its reply).
    pub fn is_request(&self) -> bool {
        matches!(self.msg_type(), ECHO_REQUEST | TIMESTAMP)
    }

    /// Identifier of a query.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// What follows the header: a query's data, or an error's quoted packet.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    /// Sets the type (echo request to reply), checksum untouched.
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[0] = t;
    }

    /// Sets the identifier of a query, checksum untouched.
    pub fn set_ident(&mut self, id: u16) {
        put16(self.buffer.as_mut(), 4, id);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), CHECKSUM_OFFSET, c);
    }

    /// Recomputes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        let b = self.buffer.as_mut();
        put16(b, CHECKSUM_OFFSET, 0);
        let c = super::checksum::of(b);
        put16(b, CHECKSUM_OFFSET, c);
    }

    /// What follows the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// An ICMP message: type, code, the four bytes after the checksum (an echo's
/// identifier and sequence number, zero for errors) and `data`, checksum
/// filled in.
pub fn emit(msg_type: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; HEADER_LEN + data.len()];
    m[0] = msg_type;
    m[1] = code;
    m[4..8].copy_from_slice(&rest);
    m[HEADER_LEN..].copy_from_slice(data);
    Message::new_unchecked(&mut m[..]).fill_checksum();
    m
}

/// An echo request or reply.
pub fn emit_echo(request: bool, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let [a, b] = ident.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    emit(if request { ECHO_REQUEST } else { ECHO_REPLY }, 0, [a, b, c, d], data)
}
