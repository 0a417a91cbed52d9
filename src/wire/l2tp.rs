//! L2TPv2 over UDP (RFC 2661 §3): a header with the *receiver's* Tunnel ID
//! and Session ID, and for control messages a list of AVPs, the first of
//! which names the message type.

use super::{WireError, be16};

/// The UDP port of L2TP.
pub const PORT: u16 = 1701;
/// Start-Control-Connection-Request.
pub const SCCRQ: u16 = 1;
/// Start-Control-Connection-Reply.
pub const SCCRP: u16 = 2;
/// Start-Control-Connection-Connected.
pub const SCCCN: u16 = 3;
/// Stop-Control-Connection-Notification.
pub const STOP_CCN: u16 = 4;
/// Hello.
pub const HELLO: u16 = 6;
/// Incoming-Call-Request.
pub const ICRQ: u16 = 10;
/// Incoming-Call-Reply.
pub const ICRP: u16 = 11;
/// Incoming-Call-Connected.
pub const ICCN: u16 = 12;
/// Call-Disconnect-Notify.
pub const CDN: u16 = 14;
/// AVP type: Message Type.
pub const AVP_MESSAGE_TYPE: u16 = 0;
/// AVP type: Assigned Tunnel ID.
pub const AVP_ASSIGNED_TUNNEL_ID: u16 = 9;
/// AVP type: Assigned Session ID.
pub const AVP_ASSIGNED_SESSION_ID: u16 = 14;

const T: u8 = 0x80;
const L: u8 = 0x40;
const S: u8 = 0x08;
const O: u8 = 0x02;

/// A view of an L2TPv2 message: header checked, Tunnel and Session IDs
/// within the buffer, the length field (if any) not beyond it.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<B: AsRef<[u8]>> Message<B> {
    /// Checks the header.
    pub fn new_checked(buffer: B) -> Result<Self, WireError> {
        Message::check(buffer, false)
    }

    /// Checks the header of a message of which `buffer` holds only the
    /// start (the first fragment of a larger datagram): the length field
    /// may reach past it.
    pub fn new_checked_prefix(buffer: B) -> Result<Self, WireError> {
        Message::check(buffer, true)
    }

    fn check(buffer: B, prefix: bool) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < 6 {
            return Err(WireError::Truncated);
        }
        if b[1] & 0x0f != 2 {
            return Err(WireError::BadVersion);
        }
        let flags = b[0];
        let m = Message { buffer };
        let len = m.buffer.as_ref().len();
        if m.is_control() && (flags & L == 0 || flags & S == 0 || flags & O != 0) {
            return Err(WireError::BadHeaderLength);
        }
        if m.tunnel_id_at() + 4 > len {
            return Err(WireError::Truncated);
        }
        if m.has_length() {
            let field = usize::from(be16(m.buffer.as_ref(), 2));
            if (field > len && !prefix) || field < m.header_len() {
                return Err(WireError::BadLength);
            }
        }
        if m.header_len() > len {
            return Err(WireError::Truncated);
        }
        Ok(m)
    }

    /// Whether this is a control message (T bit).
    pub fn is_control(&self) -> bool {
        self.buffer.as_ref()[0] & T != 0
    }

    /// Whether the length field is present (L bit).
    pub fn has_length(&self) -> bool {
        self.buffer.as_ref()[0] & L != 0
    }

    /// Offset of the Tunnel ID (the Session ID follows it).
    pub fn tunnel_id_at(&self) -> usize {
        if self.has_length() { 4 } else { 2 }
    }

    /// The receiver's Tunnel ID.
    pub fn tunnel_id(&self) -> u16 {
        be16(self.buffer.as_ref(), self.tunnel_id_at())
    }

    /// The receiver's Session ID.
    pub fn session_id(&self) -> u16 {
        be16(self.buffer.as_ref(), self.tunnel_id_at() + 2)
    }

    /// The sender's sequence number (Ns) and the next one it expects (Nr),
    /// if the header has them (every control message does).
    pub fn sequence(&self) -> Option<(u16, u16)> {
        let b = self.buffer.as_ref();
        let at = self.tunnel_id_at() + 4;
        (b[0] & S != 0 && at + 4 <= b.len()).then(|| (be16(b, at), be16(b, at + 2)))
    }

    /// Header length (with Ns/Nr and the offset pad when present).
    pub fn header_len(&self) -> usize {
        let b = self.buffer.as_ref();
        let mut len = self.tunnel_id_at() + 4;
        if b[0] & S != 0 {
            len += 4;
        }
        if b[0] & O != 0 {
            let off_at = len;
            len += 2;
            if off_at + 2 <= b.len() {
                len += usize::from(be16(b, off_at));
            }
        }
        len
    }

    /// The message's length: the length field, or the buffer.
    pub fn len(&self) -> usize {
        if self.has_length() { usize::from(be16(self.buffer.as_ref(), 2)) } else { self.buffer.as_ref().len() }
    }

    /// Whether the message has no body.
    pub fn is_empty(&self) -> bool {
        self.len() <= self.header_len()
    }

    /// The AVPs of a control message.
    pub fn avps(&self) -> Avps<'_> {
        let b = self.buffer.as_ref();
        let end = self.len().min(b.len());
        Avps { bytes: &b[..end], at: self.header_len().min(end) }
    }

    /// A control message's type (its first AVP), `None` for a ZLB
    /// acknowledgment or a malformed first AVP.
    pub fn message_type(&self) -> Option<u16> {
        let first = self.avps().next()?.ok()?;
        (first.vendor == 0 && first.kind == AVP_MESSAGE_TYPE && first.value_len == 2 && !first.hidden)
            .then(|| be16(self.buffer.as_ref(), first.value_at))
    }
}

/// One AVP: where its value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avp {
    /// Vendor ID (0: IETF).
    pub vendor: u16,
    /// Attribute type.
    pub kind: u16,
    /// Whether the value is hidden (H bit).
    pub hidden: bool,
    /// Offset of the value in the message.
    pub value_at: usize,
    /// Length of the value.
    pub value_len: usize,
}

/// The AVPs of a control message, in order; a malformed one ends the list
/// with an error.
pub struct Avps<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Iterator for Avps<'_> {
    type Item = Result<Avp, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let b = self.bytes;
        if self.at + 6 > b.len() {
            self.at = b.len();
            return Some(Err(WireError::Truncated));
        }
        let len = usize::from(be16(b, self.at) & 0x03ff);
        if len < 6 || self.at + len > b.len() {
            self.at = b.len();
            return Some(Err(WireError::BadLength));
        }
        let avp = Avp {
            vendor: be16(b, self.at + 2),
            kind: be16(b, self.at + 4),
            hidden: b[self.at] & 0x40 != 0,
            value_at: self.at + 6,
            value_len: len - 6,
        };
        self.at += len;
        Some(Ok(avp))
    }
}

/// Builds a control message (L, S set) to `tunnel`/`session` with the
/// Message Type AVP and `avps` (type, 2-byte value). For tests and
/// scripted peers.
pub fn emit_control(tunnel: u16, session: u16, msg_type: u16, avps: &[(u16, u16)]) -> Vec<u8> {
    let mut m = vec![T | L | S, 0x02, 0, 0];
    m.extend_from_slice(&tunnel.to_be_bytes());
    m.extend_from_slice(&session.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]); // Ns, Nr
    for (kind, value) in std::iter::once(&(AVP_MESSAGE_TYPE, msg_type)).chain(avps) {
        m.extend_from_slice(&(0x8000u16 | 8).to_be_bytes());
        m.extend_from_slice(&0u16.to_be_bytes());
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&value.to_be_bytes());
    }
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

/// Builds a data message to `tunnel`/`session`, with or without the length
/// field.
pub fn emit_data(tunnel: u16, session: u16, with_length: bool, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![if with_length { L } else { 0 }, 0x02];
    if with_length {
        m.extend_from_slice(&[0, 0]);
    }
    m.extend_from_slice(&tunnel.to_be_bytes());
    m.extend_from_slice(&session.to_be_bytes());
    m.extend_from_slice(payload);
    if with_length {
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_data_messages_read_back() {
        let c = emit_control(0, 0, SCCRQ, &[(AVP_ASSIGNED_TUNNEL_ID, 0x1234)]);
        let m = Message::new_checked(&c[..]).expect("valid");
        assert!(m.is_control());
        assert_eq!(m.message_type(), Some(SCCRQ));
        let tid = m.avps().filter_map(Result::ok).find(|a| a.kind == AVP_ASSIGNED_TUNNEL_ID).expect("avp");
        assert_eq!(be16(&c, tid.value_at), 0x1234);
        for with_length in [true, false] {
            let d = emit_data(7, 9, with_length, b"ppp");
            let m = Message::new_checked(&d[..]).expect("valid data");
            assert_eq!((m.tunnel_id(), m.session_id(), m.is_control()), (7, 9, false));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let c = emit_control(0, 0, SCCRQ, &[]);
        assert_eq!(Message::new_checked(&c[..4]).err(), Some(WireError::Truncated));
        let mut v3 = c.clone();
        v3[1] = 3;
        assert_eq!(Message::new_checked(&v3[..]).err(), Some(WireError::BadVersion));
        let mut no_len = c.clone();
        no_len[0] &= !L;
        assert_eq!(Message::new_checked(&no_len[..]).err(), Some(WireError::BadHeaderLength));
        let mut long = c.clone();
        long[2..4].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(Message::new_checked(&long[..]).err(), Some(WireError::BadLength));
        let mut bad_avp = c;
        bad_avp[12..14].copy_from_slice(&(0x8000u16 | 3).to_be_bytes());
        let m = Message::new_checked(&bad_avp[..]).expect("header fine");
        assert_eq!(m.message_type(), None);
    }
}
