//! A packet socket on one interface: every Ethernet frame in and out, with
//! its virtio-net header (`PACKET_VNET_HDR`), so that checksum-offloaded and
//! segmentation-offloaded (GSO, up to 64 KB) packets cross the NAT as they
//! are instead of being cut to wire size by the kernel. Frames are received
//! and sent in batches (`recvmmsg`, `sendmmsg`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::check;
use nix::libc;

/// Length of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;
/// Room for the largest frame a packet socket hands over: a 64 KB GSO
/// packet, its Ethernet header and some slack (less means MSG_TRUNC).
pub const MAX_FRAME: usize = 65536 + 256;
/// virtio-net: the L4 checksum is left to be completed (CHECKSUM_PARTIAL).
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// virtio-net: the checksum was already verified.
pub const VNET_F_DATA_VALID: u8 = 2;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_STATISTICS: libc::c_int = 6;

/// `struct tpacket_stats` of `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// A packet socket bound to one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    mac: [u8; 6],
    name: String,
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(rc).map(|_| ())
}

impl PacketSocket {
    /// Opens a socket on `ifname` in the calling thread's network namespace:
    /// all protocols, virtio-net headers on, our own transmissions not
    /// looped back, non-blocking.
    pub fn open(ifname: &str) -> io::Result<PacketSocket> {
        let cname = CString::new(ifname).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
        // SAFETY: plain libc calls; the name is NUL-terminated.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname} in this namespace")));
        }
        // Protocol 0 until bound: with ETH_P_ALL here the socket would see
        // every interface's frames until `bind`.
        // SAFETY: socket(2); the descriptor is owned right away.
        let raw = check(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)
        })?;
        // SAFETY: raw is a fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt_int(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_VNET_HDR on {ifname}: {e}")))?;
        setsockopt_int(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_IGNORE_OUTGOING on {ifname}: {e}")))?;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            // Best effort: a bigger buffer absorbs bursts.
            let _ = setsockopt_int(raw, libc::SOL_SOCKET, opt, 16 << 20);
        }
        // SAFETY: an all-zero sockaddr_ll is valid; fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(|e| io::Error::new(e.kind(), format!("binding to {ifname}: {e}")))?;
        let mac = read_mac(ifname)?;
        Ok(PacketSocket { fd, mac, name: ifname.to_string() })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index of the interface the socket is bound to now, as the kernel
    /// says: -1 once that interface is removed (a new one of the same name,
    /// even with the same index, is not bound).
    pub fn bound_ifindex(&self) -> io::Result<i32> {
        // SAFETY: an all-zero sockaddr_ll is valid; getsockname fills at
        // most `len` bytes of it.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: sll and len are live and of the stated size.
        check(unsafe { libc::getsockname(self.raw_fd(), (&mut sll as *mut libc::sockaddr_ll).cast(), &mut len) })?;
        Ok(sll.sll_ifindex)
    }

    /// Frames the kernel dropped for this socket since the last call,
    /// because its receive buffer was full: the NAT did not read them in
    /// time. (The kernel resets its count on each read.)
    pub fn take_kernel_drops(&self) -> io::Result<u64> {
        let mut stats = TpacketStats::default();
        let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: stats and len are live and of the stated size.
        check(unsafe {
            libc::getsockopt(
                self.raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut stats as *mut TpacketStats).cast(),
                &mut len,
            )
        })?;
        Ok(u64::from(stats.tp_drops))
    }

    /// The descriptor, for poll.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Receives up to `batch.len()` frames without blocking; returns how
    /// many arrived. Each buffer holds the virtio-net header, then the frame.
    pub fn recv_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
        let n = batch.bufs.len();
        for i in 0..n {
            batch.iovs[i] = libc::iovec { iov_base: batch.bufs[i].as_mut_ptr().cast(), iov_len: batch.bufs[i].len() };
            // SAFETY: an all-zero mmsghdr is valid; the iovec is set next.
            batch.msgs[i] = unsafe { std::mem::zeroed() };
            batch.msgs[i].msg_hdr.msg_iov = &mut batch.iovs[i];
            batch.msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs points at n headers whose iovecs point into live
        // buffers of the stated lengths.
        let rc = unsafe {
            libc::recvmmsg(
                self.raw_fd(),
                batch.msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                // A GSO type virtio-net cannot describe (tunnels, SCTP): the
                // kernel drops that packet and reports EINVAL; go on.
                Some(libc::EINVAL) => {
                    batch.unsupported += 1;
                    Ok(0)
                }
                _ => Err(e),
            };
        }
        let got = rc as usize;
        for i in 0..got {
            batch.lens[i] = batch.msgs[i].msg_len as usize;
            batch.truncated[i] = batch.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        Ok(got)
    }

    /// Sends frames, each given as its virtio-net header and its bytes, and
    /// tells what became of them: taken by the kernel, refused one by one
    /// (too big or malformed for the device), or not tried because the
    /// queue was full or an error (the link went down) stopped the batch.
    pub fn send_batch(&self, frames: &[(&[u8; VNET_HDR_LEN], &[u8])]) -> SendOutcome {
        let mut out = SendOutcome { sent: 0, refused: 0, error: None };
        let mut iovs: Vec<[libc::iovec; 2]> = Vec::with_capacity(frames.len());
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(frames.len());
        for (hdr, frame) in frames {
            iovs.push([
                libc::iovec { iov_base: hdr.as_ptr() as *mut libc::c_void, iov_len: VNET_HDR_LEN },
                libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() },
            ]);
        }
        for iov in iovs.iter_mut() {
            // SAFETY: an all-zero mmsghdr is valid; the iovecs are set next.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = 2;
            msgs.push(m);
        }
        let mut next = 0;
        while next < msgs.len() {
            // SAFETY: every header points at two iovecs over live, read-only
            // buffers; the kernel only reads them.
            let rc = unsafe {
                libc::sendmmsg(self.raw_fd(), msgs[next..].as_mut_ptr(), (msgs.len() - next) as libc::c_uint, 0)
            };
            if rc >= 0 {
                out.sent += rc as usize;
                next += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The socket's or the device's queue is full: the rest waits
                // for nobody (the caller counts them).
                Some(libc::EAGAIN | libc::ENOBUFS) => break,
                Some(libc::EINTR) => continue,
                // One bad frame must not stop the others: skip it.
                Some(libc::EINVAL | libc::EMSGSIZE) => {
                    out.refused += 1;
                    next += 1;
                }
                _ => {
                    out.error = Some(e);
                    break;
                }
            }
        }
        out
    }
}

/// What became of the frames given to [`PacketSocket::send_batch`]; those
/// neither sent nor refused were not tried.
#[derive(Debug)]
pub struct SendOutcome {
    /// Frames the kernel took.
    pub sent: usize,
    /// Frames the kernel refused one by one (too big, malformed).
    pub refused: usize,
    /// Why the rest was not tried, if not for a full queue.
    pub error: Option<io::Error>,
}

/// Whether an error of a packet socket means its link is down or gone
/// (`ip link set dev X down`: ENETDOWN once on receive and on every send;
/// the interface removed: ENETDOWN once on receive, ENXIO on send) rather
/// than a fault of the NAT.
pub fn is_link_down(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV))
}

/// An interface's state as the NAT needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// Its index (a removed and recreated interface has a new one).
    pub ifindex: i32,
    /// Administratively up (`ip link set dev X up`).
    pub up: bool,
    /// Up with a carrier: frames can go out.
    pub running: bool,
}

/// The state of interface `ifname` in this namespace; `Ok(None)` if there is
/// no such interface (any more).
pub fn link_state(ifname: &str) -> io::Result<Option<LinkState>> {
    let cname = CString::new(ifname).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
    if ifindex == 0 {
        return Ok(None);
    }
    // SAFETY: an ioctl socket; closed by OwnedFd.
    let raw = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: raw is fresh.
    let s = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().take(libc::IFNAMSIZ - 1).zip(ifname.as_bytes()) {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the ifreq we pass.
    if let Err(e) = check(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) }) {
        return if e.raw_os_error() == Some(libc::ENODEV) { Ok(None) } else { Err(e) };
    }
    // SAFETY: the kernel filled ifru_flags.
    let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
    Ok(Some(LinkState {
        ifindex,
        up: flags & libc::IFF_UP != 0,
        running: flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0,
    }))
}

fn read_mac(ifname: &str) -> io::Result<[u8; 6]> {
    // SAFETY: an ioctl socket; closed by OwnedFd.
    let raw = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: raw is fresh.
    let s = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().take(libc::IFNAMSIZ - 1).zip(ifname.as_bytes()) {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq we pass.
    check(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: the kernel filled ifru_hwaddr.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok([data[0] as u8, data[1] as u8, data[2] as u8, data[3] as u8, data[4] as u8, data[5] as u8])
}

/// Buffers for one `recvmmsg`.
pub struct RxBatch {
    bufs: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    /// Packets the kernel could not hand over (unsupported GSO types).
    pub unsupported: u64,
}

// SAFETY: the raw pointers in iovs/msgs point into `bufs`, owned by the same
// struct, and are rewritten before every use.
unsafe impl Send for RxBatch {}

impl RxBatch {
    /// `n` buffers of the largest frame size.
    pub fn new(n: usize) -> RxBatch {
        RxBatch {
            bufs: (0..n).map(|_| vec![0u8; VNET_HDR_LEN + MAX_FRAME]).collect(),
            // SAFETY: all-zero iovec and mmsghdr are valid values.
            iovs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
            msgs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
            lens: vec![0; n],
            truncated: vec![false; n],
            unsupported: 0,
        }
    }

    /// Received buffer `i`: (virtio-net header, frame), or `None` if it was
    /// cut short.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8; VNET_HDR_LEN], &mut [u8])> {
        if self.truncated[i] || self.lens[i] < VNET_HDR_LEN {
            return None;
        }
        let len = self.lens[i];
        let (hdr, rest) = self.bufs[i].split_at_mut(VNET_HDR_LEN);
        let hdr: &mut [u8; VNET_HDR_LEN] = hdr.try_into().ok()?;
        Some((hdr, &mut rest[..len - VNET_HDR_LEN]))
    }

    /// Received buffer `i`, read-only, for sending it on.
    pub fn get(&self, i: usize) -> Option<(&[u8; VNET_HDR_LEN], &[u8])> {
        if self.truncated[i] || self.lens[i] < VNET_HDR_LEN {
            return None;
        }
        let (hdr, rest) = self.bufs[i].split_at(VNET_HDR_LEN);
        Some((hdr.try_into().ok()?, &rest[..self.lens[i] - VNET_HDR_LEN]))
    }

    /// How many buffers there are.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }
}
