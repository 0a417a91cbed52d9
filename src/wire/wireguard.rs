//! WireGuard messages (the WireGuard whitepaper, §5.4): only what the suite
//! sends itself, a handshake initiation and a transport data message, with
//! fields in their places and the cryptography left as filler.

/// The UDP port WireGuard servers conventionally listen on.
pub const PORT: u16 = 51820;

/// Message type of a handshake initiation.
pub const INITIATION: u8 = 1;
/// Message type of transport data.
pub const DATA: u8 = 4;

/// The length of a handshake initiation.
pub const INITIATION_LEN: usize = 148;

/// A handshake initiation from sender index `sender`; its ephemeral key,
/// encrypted fields and MACs are filler, so any receiver drops it.
pub fn emit_initiation(sender: u32) -> Vec<u8> {
    let mut m = vec![0x5a; INITIATION_LEN];
    m[..4].copy_from_slice(&[INITIATION, 0, 0, 0]);
    m[4..8].copy_from_slice(&sender.to_le_bytes());
    m
}

/// A transport data message to receiver index `receiver` with `counter`
/// and `payload` as its (unauthenticated) encrypted packet.
pub fn emit_data(receiver: u32, counter: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + payload.len());
    m.extend_from_slice(&[DATA, 0, 0, 0]);
    m.extend_from_slice(&receiver.to_le_bytes());
    m.extend_from_slice(&counter.to_le_bytes());
    m.extend_from_slice(payload);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_their_type_and_index_little_endian() {
        let i = emit_initiation(0x0102_0304);
        assert_eq!((i.len(), i[0], &i[4..8]), (INITIATION_LEN, INITIATION, &[4u8, 3, 2, 1][..]));
        let d = emit_data(7, 9, b"x");
        assert_eq!((d[0], d[4], d[8], d.len()), (DATA, 7, 9, 17));
    }
}
