//! Turning off checksum and segmentation offloads on an interface.
//!
//! With offloads on, a packet socket on a veth sees 64 KB GSO super-packets
//! with partial checksums; a userspace router wants wire-sized frames with
//! real checksums. This is `ethtool -K IFACE rx off tx off sg off tso off
//! gso off gro off`, through the `SIOCETHTOOL` ioctl on a socket that was
//! opened inside the interface's namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

const ETHTOOL_SRXCSUM: u32 = 0x15;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SSG: u32 = 0x19;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGSO: u32 = 0x24;
const ETHTOOL_SGRO: u32 = 0x2c;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_GGSO: u32 = 0x23;

/// The offloads this module turns off, with their ethtool names, in an
/// order the kernel accepts (segmentation before the checksums it needs).
const OFF: [(u32, &str); 6] = [
    (ETHTOOL_STSO, "tso"),
    (ETHTOOL_SGSO, "gso"),
    (ETHTOOL_SGRO, "gro"),
    (ETHTOOL_SSG, "sg"),
    (ETHTOOL_STXCSUM, "tx"),
    (ETHTOOL_SRXCSUM, "rx"),
];

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// A datagram socket opened inside a namespace: ethtool ioctls on it act on
/// that namespace's interfaces, whichever thread makes them.
pub struct ControlSocket(OwnedFd);

impl ControlSocket {
    /// Opens a control socket in the calling thread's network namespace.
    pub fn open_here() -> io::Result<ControlSocket> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(ControlSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Turns off rx/tx checksum offload, scatter-gather, TSO, GSO and GRO.
    pub fn disable_offloads(&self, ifname: &str) -> io::Result<()> {
        for (cmd, what) in OFF {
            self.ethtool(ifname, cmd, Some(0))
                .map_err(|e| io::Error::new(e.kind(), format!("ethtool {what} off on {ifname}: {e}")))?;
        }
        Ok(())
    }

    /// Whether tx checksumming, TSO or GSO is on.
    pub fn offloads_on(&self, ifname: &str) -> io::Result<bool> {
        for cmd in [ETHTOOL_GTXCSUM, ETHTOOL_GTSO, ETHTOOL_GGSO] {
            if self.ethtool(ifname, cmd, None)? != 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn ethtool(&self, ifname: &str, cmd: u32, set: Option<u32>) -> io::Result<u32> {
        let bytes = ifname.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {ifname:?}")));
        }
        let mut value = EthtoolValue { cmd, data: set.unwrap_or(0) };
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: std::ptr::null_mut(), _pad: [0; 16] };
        for (dst, src) in req.name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        req.data = (&mut value as *mut EthtoolValue).cast();
        // SAFETY: req and value outlive the call; SIOCETHTOOL reads the
        // interface name and reads/writes one ethtool_value.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SIOCETHTOOL, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value.data)
    }
}
