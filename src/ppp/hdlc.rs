//! Asynchronous HDLC-like framing (RFC 1662 §4): frames between 0x7E
//! flags, 0x7D escapes (the next byte XOR 0x20), control characters
//! escaped as the peer's ACCM asks, a 16-bit FCS (CRC-CCITT, RFC 1662
//! appendix C) sent least significant byte first.

/// Flag sequence.
pub const FLAG: u8 = 0x7e;
/// Control escape.
pub const ESCAPE: u8 = 0x7d;
/// Initial FCS value.
pub const FCS_INIT: u16 = 0xffff;
/// FCS of a good frame including its FCS bytes.
pub const FCS_GOOD: u16 = 0xf0b8;
/// Longest frame the decoder keeps (MRU 1500 plus header, FCS and slack).
pub const MAX_FRAME: usize = 4096;

const fn fcs_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = i as u16;
        let mut b = 0;
        while b < 8 {
            v = if v & 1 != 0 { (v >> 1) ^ 0x8408 } else { v >> 1 };
            b += 1;
        }
        t[i] = v;
        i += 1;
    }
    t
}

static FCS_TABLE: [u16; 256] = fcs_table();

/// Updates an FCS with `data` (RFC 1662 appendix C.2).
pub fn fcs(mut f: u16, data: &[u8]) -> u16 {
    for &b in data {
        f = (f >> 8) ^ FCS_TABLE[usize::from((f ^ u16::from(b)) & 0xff)];
    }
    f
}

/// Frames `payload` (address, control, protocol and information, as the
/// caller built them): FCS appended, bytes escaped per `accm` (bit n set:
/// escape character n), flags around.
pub fn encode(payload: &[u8], accm: u32, out: &mut Vec<u8>) {
    let f = !fcs(FCS_INIT, payload);
    out.push(FLAG);
    for &b in payload.iter().chain(&f.to_le_bytes()) {
        let escape = b == FLAG || b == ESCAPE || (b < 0x20 && accm & (1 << b) != 0);
        if escape {
            out.push(ESCAPE);
            out.push(b ^ 0x20);
        } else {
            out.push(b);
        }
    }
    out.push(FLAG);
}

/// Why a received frame was thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The FCS did not check.
    BadFcs,
    /// Shorter than an FCS.
    TooShort,
    /// Longer than [`MAX_FRAME`].
    TooLong,
    /// An escape right before a flag (an aborted frame).
    Aborted,
}

/// Turns a byte stream into frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    escaped: bool,
    overflow: bool,
}

impl Decoder {
    /// A decoder waiting for a flag.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Feeds bytes; returns each complete frame (without FCS) or why it
    /// was dropped. Empty frames between back-to-back flags are skipped.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                FLAG => {
                    if self.escaped {
                        out.push(Err(FrameError::Aborted));
                    } else if self.overflow {
                        out.push(Err(FrameError::TooLong));
                    } else if !self.buf.is_empty() {
                        out.push(self.finish());
                    }
                    self.buf.clear();
                    self.escaped = false;
                    self.overflow = false;
                }
                ESCAPE => self.escaped = true,
                _ => {
                    let b = if self.escaped { b ^ 0x20 } else { b };
                    self.escaped = false;
                    if self.buf.len() < MAX_FRAME {
                        self.buf.push(b);
                    } else {
                        self.overflow = true;
                    }
                }
            }
        }
        out
    }

    fn finish(&mut self) -> Result<Vec<u8>, FrameError> {
        if self.buf.len() < 3 {
            return Err(FrameError::TooShort);
        }
        if fcs(FCS_INIT, &self.buf) != FCS_GOOD {
            return Err(FrameError::BadFcs);
        }
        let n = self.buf.len() - 2;
        Ok(self.buf[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fcs_matches_rfc_1662_and_the_crc_catalogue() {
        // The first entries of the table in RFC 1662 appendix C.2.
        assert_eq!(FCS_TABLE[..8], [0x0000, 0x1189, 0x2312, 0x329b, 0x4624, 0x57ad, 0x6536, 0x74bf]);
        assert_eq!(FCS_TABLE[255], 0x0f78);
        // CRC-16/X-25 (the PPP FCS) of "123456789" is 0x906E.
        assert_eq!(!fcs(FCS_INIT, b"123456789"), 0x906e);
    }

    #[test]
    fn the_fcs_of_a_frame_and_its_fcs_is_the_good_value() {
        let data = b"\xff\x03\xc0\x21\x01\x01\x00\x04";
        let f = !fcs(FCS_INIT, data);
        let mut with = data.to_vec();
        with.extend_from_slice(&f.to_le_bytes());
        assert_eq!(fcs(FCS_INIT, &with), FCS_GOOD);
    }

    #[test]
    fn a_known_lcp_frame_decodes() {
        // An LCP Configure-Request (id 1, magic number 0x12345678) as pppd
        // sends it before ACCM is negotiated: every control character
        // escaped.
        let payload = [0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x0a, 0x05, 0x06, 0x12, 0x34, 0x56, 0x78];
        let mut wire = Vec::new();
        encode(&payload, 0xffff_ffff, &mut wire);
        assert_eq!(wire[0], FLAG);
        assert!(wire[1..wire.len() - 1].iter().all(|b| *b >= 0x20 || *b == ESCAPE), "control characters escaped");
        assert!(wire.windows(2).any(|w| w == [ESCAPE, 0x23]), "0x03 is sent as 7d 23");
        let mut d = Decoder::new();
        assert_eq!(d.feed(&wire), vec![Ok(payload.to_vec())]);
    }

    #[test]
    fn flags_and_escapes_inside_data_round_trip_split_anywhere() {
        let payload: Vec<u8> = (0u8..=255).chain([FLAG, ESCAPE, FLAG]).collect();
        let mut wire = Vec::new();
        encode(&payload, 0, &mut wire);
        for split in [1, 2, 7, wire.len() - 1] {
            let mut d = Decoder::new();
            let mut frames = d.feed(&wire[..split]);
            frames.extend(d.feed(&wire[split..]));
            assert_eq!(frames, vec![Ok(payload.clone())], "split at {split}");
        }
    }

    #[test]
    fn damaged_frames_are_reported_and_the_next_one_still_decodes() {
        let mut wire = Vec::new();
        encode(b"\xff\x03\x00\x21hello", 0, &mut wire);
        let mut bad = wire.clone();
        bad[5] ^= 0x01;
        let mut d = Decoder::new();
        assert_eq!(d.feed(&bad), vec![Err(FrameError::BadFcs)]);
        assert_eq!(d.feed(&[FLAG, 0x41, FLAG]), vec![Err(FrameError::TooShort)]);
        assert_eq!(d.feed(&[FLAG, 0x41, 0x42, 0x43, ESCAPE, FLAG]), vec![Err(FrameError::Aborted)]);
        let mut long = vec![FLAG];
        long.extend(std::iter::repeat_n(0x41, MAX_FRAME + 10));
        long.push(FLAG);
        assert_eq!(d.feed(&long), vec![Err(FrameError::TooLong)]);
        assert_eq!(d.feed(&wire), vec![Ok(b"\xff\x03\x00\x21hello".to_vec())]);
    }
}
