//! PPTP control messages (RFC 2637 §2): a 12-byte header (length, message
//! type 1, magic cookie 0x1A2B3C4D, control message type), then fields at
//! fixed offsets. A NAT cares about the Call IDs: each message carries the
//! sender's own Call ID, the receiver's ("Peer's Call ID"), or both.

/// The TCP port of the control connection.
pub const PORT: u16 = 1723;
/// The magic cookie of every control message.
pub const MAGIC: u32 = 0x1a2b_3c4d;
/// Length of the common header.
pub const HEADER_LEN: usize = 12;
/// The only PPTP message type (1: control message).
pub const CONTROL_MESSAGE: u16 = 1;
/// Longest control message a NAT accepts (the longest defined is 220).
pub const MAX_LEN: usize = 1024;

/// Start-Control-Connection-Request.
pub const SCCRQ: u16 = 1;
/// Start-Control-Connection-Reply.
pub const SCCRP: u16 = 2;
/// Stop-Control-Connection-Request.
pub const STOP_CCRQ: u16 = 3;
/// Stop-Control-Connection-Reply.
pub const STOP_CCRP: u16 = 4;
/// Echo-Request.
pub const ECHO_RQ: u16 = 5;
/// Echo-Reply.
pub const ECHO_RP: u16 = 6;
/// Outgoing-Call-Request.
pub const OCRQ: u16 = 7;
/// Outgoing-Call-Reply.
pub const OCRP: u16 = 8;
/// Incoming-Call-Request.
pub const ICRQ: u16 = 9;
/// Incoming-Call-Reply.
pub const ICRP: u16 = 10;
/// Incoming-Call-Connected.
pub const ICCN: u16 = 11;
/// Call-Clear-Request.
pub const CCRQ: u16 = 12;
/// Call-Disconnect-Notify.
pub const CDN: u16 = 13;
/// WAN-Error-Notify.
pub const WEN: u16 = 14;
/// Set-Link-Info.
pub const SLI: u16 = 15;

/// Where a message's Call IDs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallIdFields {
    /// Offset of the sender's own Call ID, if the message has one.
    pub own: Option<usize>,
    /// Offset of the receiver's Call ID (Peer's Call ID), if any.
    pub peer: Option<usize>,
    /// The message's length (RFC 2637 fixes it per type).
    pub len: usize,
}

/// The Call ID fields and length of a control message type; `None` for
/// types RFC 2637 does not define.
pub fn fields(ctrl_type: u16) -> Option<CallIdFields> {
    let f = |own, peer, len| Some(CallIdFields { own, peer, len });
    match ctrl_type {
        SCCRQ | SCCRP => f(None, None, 156),
        STOP_CCRQ | STOP_CCRP => f(None, None, 16),
        ECHO_RQ => f(None, None, 16),
        ECHO_RP => f(None, None, 20),
        OCRQ => f(Some(12), None, 168),
        OCRP => f(Some(12), Some(14), 32),
        ICRQ => f(Some(12), None, 220),
        ICRP => f(Some(12), Some(14), 24),
        ICCN => f(None, Some(12), 28),
        CCRQ => f(Some(12), None, 16),
        CDN => f(Some(12), None, 148),
        WEN => f(None, Some(12), 40),
        SLI => f(None, Some(12), 24),
        _ => None,
    }
}

/// The name of a control message type, for logs and dumps.
pub fn name(ctrl_type: u16) -> &'static str {
    match ctrl_type {
        SCCRQ => "SCCRQ",
        SCCRP => "SCCRP",
        STOP_CCRQ => "StopCCRQ",
        STOP_CCRP => "StopCCRP",
        ECHO_RQ => "Echo-Request",
        ECHO_RP => "Echo-Reply",
        OCRQ => "OCRQ",
        OCRP => "OCRP",
        ICRQ => "ICRQ",
        ICRP => "ICRP",
        ICCN => "ICCN",
        CCRQ => "CCRQ",
        CDN => "CDN",
        WEN => "WEN",
        SLI => "SLI",
        _ => "unknown",
    }
}

/// Writes a control message of `ctrl_type` with its RFC length into a new
/// buffer; the Call ID fields are set when given. For tests and scripted
/// peers.
pub fn emit(ctrl_type: u16, own: Option<u16>, peer: Option<u16>) -> Vec<u8> {
    let Some(f) = fields(ctrl_type) else { return Vec::new() };
    let mut m = vec![0u8; f.len];
    m[0..2].copy_from_slice(&(f.len as u16).to_be_bytes());
    m[2..4].copy_from_slice(&CONTROL_MESSAGE.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC.to_be_bytes());
    m[8..10].copy_from_slice(&ctrl_type.to_be_bytes());
    if let (Some(at), Some(v)) = (f.own, own) {
        m[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    if let (Some(at), Some(v)) = (f.peer, peer) {
        m[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_type_has_its_rfc_length() {
        for t in 1..=15 {
            let f = fields(t).expect("defined");
            let m = emit(t, Some(0x1234), Some(0x5678));
            assert_eq!(m.len(), f.len);
            assert_eq!(u16::from_be_bytes([m[0], m[1]]) as usize, f.len);
            if let Some(at) = f.own {
                assert_eq!(&m[at..at + 2], &[0x12, 0x34]);
            }
        }
        assert_eq!(fields(16), None);
        assert_eq!(name(OCRQ), "OCRQ");
    }
}
