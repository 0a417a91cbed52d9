//! Typed views over packet bytes, one file per protocol, fields named after
//! their RFCs. A view is checked once when made (`new_checked`), after which
//! its accessors cannot read out of bounds; setters exist where the buffer
//! is mutable. Nothing here allocates.

pub mod arp;
pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod gre;
pub mod icmp;
pub mod ike;
pub mod ipv4;
pub mod l2tp;
pub mod openvpn;
pub mod pptp;
pub mod tcp;
pub mod udp;
pub mod wireguard;

use std::fmt;

/// Why bytes are not a valid packet of a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Shorter than the header (or than a length field says).
    Truncated,
    /// A version field of a version this view does not read.
    BadVersion,
    /// A header length below the minimum or beyond the packet.
    BadHeaderLength,
    /// A total length inconsistent with the header or the buffer.
    BadLength,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated",
            WireError::BadVersion => "bad version",
            WireError::BadHeaderLength => "bad header length",
            WireError::BadLength => "bad length",
        })
    }
}

impl std::error::Error for WireError {}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn addr(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}
