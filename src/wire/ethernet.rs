//! Ethernet II frames (IEEE 802.3).

use super::{WireError, be16, put16};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Length of the header.
pub const HEADER_LEN: usize = 14;
/// The broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps bytes known to hold a header.
    pub fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Checks that `buffer` holds at least a header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Frame { buffer })
    }

    /// Destination address.
    pub fn dst(&self) -> [u8; 6] {
        self.mac(0)
    }

    /// Source address.
    pub fn src(&self) -> [u8; 6] {
        self.mac(6)
    }

    fn mac(&self, at: usize) -> [u8; 6] {
        let b = self.buffer.as_ref();
        [b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]]
    }

    /// EtherType.
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), 12)
    }

    /// What follows the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The whole frame.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets both addresses.
    pub fn set_addrs(&mut self, src: [u8; 6], dst: [u8; 6]) {
        let b = self.buffer.as_mut();
        b[0..6].copy_from_slice(&dst);
        b[6..12].copy_from_slice(&src);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), 12, t);
    }

    /// What follows the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn mac_to_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// An Ethernet frame from `src` to `dst` carrying `payload`.
pub fn emit(src: [u8; 6], dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN + payload.len()];
    let mut eth = Frame::new_unchecked(&mut f[..]);
    eth.set_addrs(src, dst);
    eth.set_ethertype(ethertype);
    eth.payload_mut().copy_from_slice(payload);
    f
}
