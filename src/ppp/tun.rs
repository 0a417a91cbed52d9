//! The `pppN` interface: a TUN device (no packet information header) given
//! the negotiated point-to-point addresses and MTU with the classic
//! interface ioctls, and removed when its descriptor closes.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys::check;
use nix::libc;

/// A configured TUN interface.
pub struct Tun {
    file: File,
    name: String,
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1)) {
        *d = *c as libc::c_char;
    }
    req
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr.octets()) },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads
    // the family and then the sockaddr_in fields.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

impl Tun {
    /// Creates the lowest free `pppN` and brings it up with `local`, peer
    /// `remote` and `mtu`.
    pub fn create(local: Ipv4Addr, remote: Ipv4Addr, mtu: u16) -> io::Result<Tun> {
        let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
        let mut req = ifreq("ppp%d");
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and fills the ifreq, which outlives the call.
        check(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) })?;
        let name: String = req.ifr_name.iter().take_while(|c| **c != 0).map(|c| *c as u8 as char).collect();
        // SAFETY: a datagram socket for the interface ioctls, closed by OwnedFd.
        let s = unsafe {
            OwnedFd::from_raw_fd(check(libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0))?)
        };
        let set = |request: libc::c_ulong, fill: &dyn Fn(&mut libc::ifreq)| -> io::Result<()> {
            let mut r = ifreq(&name);
            fill(&mut r);
            // SAFETY: each SIOCSIF* request reads the ifreq we pass.
            check(unsafe { libc::ioctl(s.as_raw_fd(), request, &mut r) }).map(|_| ())
        };
        // IPCP gave the link IPv4 only: no link-local address, no router
        // solicitations for a link that cannot carry them.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        set(libc::SIOCSIFADDR, &|r| r.ifr_ifru.ifru_addr = sockaddr(local))?;
        set(libc::SIOCSIFDSTADDR, &|r| r.ifr_ifru.ifru_dstaddr = sockaddr(remote))?;
        set(libc::SIOCSIFNETMASK, &|r| r.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::BROADCAST))?;
        set(libc::SIOCSIFMTU, &|r| r.ifr_ifru.ifru_mtu = libc::c_int::from(mtu))?;
        let mut r = ifreq(&name);
        // SAFETY: SIOCGIFFLAGS fills the ifreq we pass.
        check(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut r) })?;
        // SAFETY: the kernel filled ifru_flags.
        let flags = unsafe { r.ifr_ifru.ifru_flags }
            | (libc::IFF_UP | libc::IFF_RUNNING | libc::IFF_POINTOPOINT) as libc::c_short;
        set(libc::SIOCSIFFLAGS, &|r| r.ifr_ifru.ifru_flags = flags)?;
        super::set_nonblocking(file.as_raw_fd())?;
        Ok(Tun { file, name })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor, for poll, reads and writes.
    pub fn file(&self) -> &File {
        &self.file
    }
}
