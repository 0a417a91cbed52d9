//! OpenVPN packets (its protocol description, `doc/doxygen/doc_protocol_overview.h`
//! in the OpenVPN sources): only what the suite sends itself, a client's
//! hard reset, the first packet of a session over UDP.

/// The port OpenVPN servers conventionally listen on, UDP or TCP.
pub const PORT: u16 = 1194;

/// Opcode of a client's hard reset (key method 2).
pub const P_CONTROL_HARD_RESET_CLIENT_V2: u8 = 7;

/// A client's hard reset for session `session_id` with packet ID
/// `packet_id`: opcode and key ID, session ID, an empty ACK array, the
/// packet ID, and no TLS payload.
pub fn emit_hard_reset(session_id: u64, packet_id: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(14);
    m.push(P_CONTROL_HARD_RESET_CLIENT_V2 << 3);
    m.extend_from_slice(&session_id.to_be_bytes());
    m.push(0);
    m.extend_from_slice(&packet_id.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hard_reset_has_its_opcode_session_and_packet_id() {
        let m = emit_hard_reset(0x0102_0304_0506_0708, 9);
        assert_eq!(m.len(), 14);
        assert_eq!(m[0] >> 3, P_CONTROL_HARD_RESET_CLIENT_V2);
        assert_eq!((&m[1..9], m[9], &m[10..]), (&[1u8, 2, 3, 4, 5, 6, 7, 8][..], 0, &[0u8, 0, 0, 9][..]));
    }
}
