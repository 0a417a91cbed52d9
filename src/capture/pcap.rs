//! Reading classic pcap files (what `tcpdump -w` writes): the file header,
//! then one record per packet. Both byte orders and both timestamp
//! resolutions are read; a truncated last record (a capture stopped
//! mid-write) ends the file without an error.

use std::time::Duration;

/// Link type of Ethernet captures.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Link type of Linux cooked captures (`-i any`).
pub const LINKTYPE_LINUX_SLL: u32 = 113;

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was captured, since the epoch.
    pub time: Duration,
    /// Its length on the wire.
    pub orig_len: u32,
    /// The bytes captured (at most the snap length).
    pub data: Vec<u8>,
}

/// A whole pcap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcap {
    /// The link type of every record.
    pub linktype: u32,
    /// The records, in file order.
    pub records: Vec<Record>,
}

/// Why a file is not pcap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcapError {
    /// Shorter than the file header.
    TooShort,
    /// Not a pcap magic number (pcapng and others are not read).
    BadMagic(u32),
}

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PcapError::TooShort => write!(f, "shorter than a pcap file header"),
            PcapError::BadMagic(m) => write!(f, "magic number {m:#010x} is not classic pcap"),
        }
    }
}

impl std::error::Error for PcapError {}

/// Parses a pcap file.
pub fn parse(bytes: &[u8]) -> Result<Pcap, PcapError> {
    if bytes.len() < 24 {
        return Err(PcapError::TooShort);
    }
    let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let (little, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        other => return Err(PcapError::BadMagic(other)),
    };
    let u32_at = |at: usize| {
        let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
    };
    let linktype = u32_at(20) & 0x0fff_ffff;
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let (secs, frac, incl, orig) = (u32_at(at), u32_at(at + 4), u32_at(at + 8) as usize, u32_at(at + 12));
        let start = at + 16;
        let Some(data) = bytes.get(start..start.saturating_add(incl)) else { break };
        let frac = if nanos { Duration::from_nanos(u64::from(frac)) } else { Duration::from_micros(u64::from(frac)) };
        records.push(Record { time: Duration::from_secs(u64::from(secs)) + frac, orig_len: orig, data: data.to_vec() });
        at = start + incl;
    }
    Ok(Pcap { linktype, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(magic: u32, big: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f = Vec::new();
        f.extend(w(magic));
        f.extend(if big { [0, 2, 0, 4] } else { [2, 0, 4, 0] });
        f.extend([0u8; 8]);
        f.extend(w(65535));
        f.extend(w(LINKTYPE_ETHERNET));
        for (s, frac, data) in records {
            f.extend(w(*s));
            f.extend(w(*frac));
            f.extend(w(data.len() as u32));
            f.extend(w(data.len() as u32 + 10));
            f.extend_from_slice(data);
        }
        f
    }

    #[test]
    fn both_byte_orders_and_resolutions_read() {
        for (magic, big, nanos) in [(0xa1b2_c3d4, false, false), (0xa1b2_c3d4, true, false), (0xa1b2_3c4d, false, true)]
        {
            let p = parse(&file(magic, big, &[(7, 500, b"abc"), (8, 0, b"")])).expect("pcap");
            assert_eq!(p.linktype, LINKTYPE_ETHERNET);
            assert_eq!(p.records.len(), 2);
            let frac = if nanos { Duration::from_nanos(500) } else { Duration::from_micros(500) };
            assert_eq!(
                p.records[0],
                Record { time: Duration::from_secs(7) + frac, orig_len: 13, data: b"abc".to_vec() }
            );
        }
    }

    #[test]
    fn junk_is_an_error_and_a_torn_last_record_is_dropped() {
        assert_eq!(parse(b"short"), Err(PcapError::TooShort));
        assert!(matches!(parse(&[0x0a, 0x0d, 0x0d, 0x0a].repeat(8)), Err(PcapError::BadMagic(_))));
        let mut f = file(0xa1b2_c3d4, false, &[(1, 0, b"whole"), (2, 0, b"torn record")]);
        f.truncate(f.len() - 3);
        assert_eq!(parse(&f).expect("pcap").records.len(), 1);
    }
}
