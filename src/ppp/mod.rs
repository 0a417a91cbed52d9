//! A userspace PPP peer that stands in for pppd where the kernel has no PPP
//! (`/dev/ppp`): it reads pppd's argument lists and option files
//! ([`options`]), speaks async HDLC on a pty ([`hdlc`]), negotiates LCP,
//! PAP or CHAP-MD5 and IPCP ([`session`]), and moves IP packets between the
//! link and a `pppN` TUN interface ([`tun`]).
//!
//! pptpd names it with its `ppp` option; xl2tpd and the pptp client exec
//! `/usr/sbin/pppd`, over which a lab host bind-mounts this binary.

pub mod hdlc;
pub mod options;
pub mod session;
pub mod tun;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::libc;
use options::Options;
use session::{Config, Event, Session};
use tun::Tun;

/// What `--version` prints; the lab checks for it to know that the
/// `/usr/sbin/pppd` a host sees is this peer.
pub const VERSION: &str = concat!("vpn-passthrough-pppd ", env!("CARGO_PKG_VERSION"));

/// How long a SIGTERM'd link waits for the peer's Terminate-Ack.
const TERMINATE_GRACE: Duration = Duration::from_secs(3);

/// Where the peer's log lines go: stderr (unless it is the link's tty) and
/// the `logfile`, if one was named.
struct Log {
    file: Option<File>,
    stderr: bool,
    tag: String,
}

impl Log {
    fn line(&mut self, msg: &str) {
        let line = format!("{}: {msg}\n", self.tag);
        if self.stderr {
            let _ = io::stderr().write_all(line.as_bytes());
        }
        if let Some(f) = &mut self.file {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// The link's two ends on this side: where frames come in and go out.
struct Line {
    read: OwnedFd,
    write: OwnedFd,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Puts a tty in raw mode (no echo, no line discipline, 8 bits), as pppd
/// does; anything that is not a tty (a pipe, a socket) is left as it is.
fn make_raw(fd: RawFd) {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; t outlives the calls.
    if unsafe { libc::tcgetattr(fd, &mut t) } == 0 {
        // SAFETY: as above.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
    }
}

fn open_line(opts: &Options) -> io::Result<Line> {
    let (read, write) = match &opts.device {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let read = OwnedFd::from(f);
            let write = read.try_clone()?;
            (read, write)
        }
        None => {
            // SAFETY: dup of our standard input and output.
            let read = unsafe { OwnedFd::from_raw_fd(check(libc::dup(0))?) };
            // SAFETY: as above.
            let write = unsafe { OwnedFd::from_raw_fd(check(libc::dup(1))?) };
            (read, write)
        }
    };
    make_raw(read.as_raw_fd());
    set_nonblocking(read.as_raw_fd())?;
    Ok(Line { read, write })
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom fills the 4 bytes we pass.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n == 4 { u32::from_ne_bytes(b) | 1 } else { std::process::id() | 1 }
}

/// Writes a whole frame to a non-blocking descriptor, waiting a little for
/// room; a link that stays full drops the frame, as a serial line would.
fn write_frame(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<bool> {
    let deadline = Instant::now() + Duration::from_millis(200);
    while !data.is_empty() {
        // SAFETY: write from a live slice.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock if Instant::now() < deadline => {
                let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: one pollfd that outlives the call.
                unsafe { libc::poll(&mut p, 1, 20) };
            }
            io::ErrorKind::WouldBlock => return Ok(false),
            _ => return Err(e),
        }
    }
    Ok(true)
}

/// Runs the PPP peer with pppd's arguments (without the program name).
/// Returns the process exit status: 0 when the link ended by a Terminate
/// exchange or a signal, 1 when it failed, 2 for bad arguments.
pub fn run(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "--version") {
        println!("{VERSION}");
        return 0;
    }
    let pid = std::process::id();
    let mut log = Log { file: None, stderr: true, tag: format!("vpn-passthrough-pppd[{pid}]") };
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            log.line(&format!("error: {e}"));
            return 2;
        }
    };
    if let Some(path) = &opts.logfile {
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => log.file = Some(f),
            Err(e) => log.line(&format!("cannot open logfile {}: {e}", path.display())),
        }
    }
    // SAFETY: isatty only looks at the descriptor.
    log.stderr = unsafe { libc::isatty(2) } == 0;
    log.line(&format!("started with: {}", args.join(" ")));
    for o in &opts.ignored {
        log.line(&format!("ignoring option '{o}'"));
    }
    match serve(&opts, &mut log) {
        Ok(code) => code,
        Err(e) => {
            log.line(&format!("error: {e}"));
            1
        }
    }
}

fn serve(opts: &Options, log: &mut Log) -> io::Result<i32> {
    let line = open_line(opts)?;
    let (sig_read, sig_write) = UnixStream::pair()?;
    sig_read.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        signal_hook::low_level::pipe::register(sig, sig_write.try_clone()?)?;
    }
    let cfg = Config {
        require: opts.require,
        user: opts.user.clone().or_else(|| opts.name.clone()),
        secret: opts.password.clone(),
        local_ip: opts.local,
        remote_ip: opts.remote,
        mru: opts.mru.unwrap_or(1500),
        magic: random_u32(),
        silent: opts.silent,
        passive: opts.passive,
        echo_interval: opts.echo_interval,
        echo_failure: opts.echo_failure.unwrap_or(3),
    };
    let clock = Instant::now();
    let mut session = Session::new(cfg);
    session.start(clock.elapsed());
    let mut decoder = hdlc::Decoder::new();
    let mut tun: Option<Tun> = None;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(4096);
    let mut stopping: Option<Instant> = None;
    let mut dropped = (0u64, 0u64, 0u64);
    let mut exit = 1;
    loop {
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Send(frame, accm) => {
                    out.clear();
                    hdlc::encode(&frame, accm, &mut out);
                    if !write_frame(line.write.as_fd(), &out)? {
                        dropped.0 += 1;
                    }
                }
                Event::Up { local, remote, mtu } => {
                    let mtu = opts.mtu.map_or(mtu, |m| m.min(mtu));
                    let t = Tun::create(local, remote, mtu)?;
                    log.line(&format!("IPCP up: interface {} local {local} remote {remote} mtu {mtu}", t.name()));
                    tun = Some(t);
                }
                Event::Ip(packet) => {
                    if let Some(t) = &tun
                        && t.file().write(&packet).is_err()
                    {
                        dropped.1 += 1;
                    }
                }
                Event::Down(why) => {
                    log.line(&format!("link down: {why}"));
                    exit = i32::from(!why.contains("terminated"));
                }
            }
        }
        if session.is_dead() {
            break;
        }
        if stopping.is_some_and(|t| t.elapsed() > TERMINATE_GRACE) {
            log.line("no Terminate-Ack from the peer; leaving");
            exit = 0;
            break;
        }
        let now = clock.elapsed();
        let timeout = session.next_timeout().map_or(1000, |t| t.saturating_sub(now).as_millis().min(1000) as i32);
        let mut pfds = vec![
            libc::pollfd { fd: line.read.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: sig_read.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        if let Some(t) = &tun {
            pfds.push(libc::pollfd { fd: t.file().as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: pfds outlives the call.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = clock.elapsed();
        if pfds[1].revents != 0 {
            let mut b = [0u8; 16];
            while (&sig_read).read(&mut b).is_ok_and(|n| n > 0) {}
            if stopping.is_none() {
                log.line("signal received: terminating the link");
                stopping = Some(Instant::now());
                session.terminate(now, "user request");
            }
        }
        if pfds[0].revents != 0 {
            // SAFETY: read into our buffer.
            let n = unsafe { libc::read(line.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 || (n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EIO)) {
                log.line("hangup: the line closed");
                exit = i32::from(stopping.is_none());
                break;
            }
            if n > 0 {
                for frame in decoder.feed(&buf[..n as usize]) {
                    match frame {
                        Ok(f) => session.on_frame(&f, now),
                        Err(e) => log.line(&format!("dropped a frame: {e:?}")),
                    }
                }
            }
        }
        if let Some(t) = &tun
            && pfds.get(2).is_some_and(|p| p.revents != 0)
        {
            // Drain what is queued, a bounded batch per wakeup.
            for _ in 0..64 {
                match t.file().read(&mut buf) {
                    // Only IPv4 was negotiated; anything else stays here.
                    Ok(n) if n > 0 && buf[0] >> 4 == 4 => session.send_ip(&buf[..n]),
                    Ok(n) if n > 0 => dropped.2 += 1,
                    _ => break,
                }
            }
        }
        session.handle_timeout(clock.elapsed());
    }
    if dropped != (0, 0, 0) {
        log.line(&format!(
            "dropped {} frames to a full line, {} packets to the interface, {} non-IPv4 packets from it",
            dropped.0, dropped.1, dropped.2
        ));
    }
    log.line("exiting");
    Ok(exit)
}
