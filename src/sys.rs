//! The few system calls the crate makes itself through `libc`, wrapped once.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use nix::libc;

/// Readable (`POLLIN`), for [`poll`].
pub const READABLE: i16 = libc::POLLIN;
/// Writable (`POLLOUT`), for [`poll`].
pub const WRITABLE: i16 = libc::POLLOUT;

/// A C return code as a result: negative means `errno` says what failed.
/// Allocates nothing, so it may run between fork and exec.
pub fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Waits until one of `fds` is ready for its events ([`READABLE`],
/// [`WRITABLE`]) or `timeout` passes (`None`: no limit); says which are.
/// An error or hang-up counts as ready, whatever was asked (even nothing),
/// so that the caller reads it and learns. Negative descriptors are left
/// out. A signal ends the wait with none ready.
pub fn poll(fds: &[(RawFd, i16)], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&(fd, events)| libc::pollfd { fd, events, revents: 0 }).collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: pfds is a live array of pollfd of the given length; poll
    // skips negative descriptors.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    match check(rc) {
        Ok(_) => Ok(pfds.iter().map(|p| p.revents != 0).collect()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(vec![false; fds.len()]),
        Err(e) => Err(e),
    }
}

/// [`poll`] for one descriptor to become readable.
pub fn readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    Ok(poll(&[(fd, READABLE)], timeout)?[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn poll_says_which_descriptor_is_ready() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        let (c, _d) = UnixStream::pair().expect("pair");
        let fds = [(b.as_raw_fd(), READABLE), (c.as_raw_fd(), READABLE), (-1, READABLE), (c.as_raw_fd(), WRITABLE)];
        assert_eq!(poll(&fds, Some(Duration::ZERO)).expect("poll"), [false, false, false, true]);
        a.write_all(b"x").expect("write");
        assert!(readable(b.as_raw_fd(), Some(Duration::from_secs(5))).expect("poll"));
        assert!(!readable(c.as_raw_fd(), Some(Duration::from_millis(1))).expect("poll"));
        assert!(check(-1).is_err());
        assert_eq!(check(3).expect("not negative"), 3);
    }
}
