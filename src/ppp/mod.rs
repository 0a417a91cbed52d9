//! A userspace PPP peer that stands in for pppd where the kernel has no PPP
//! (`/dev/ppp`): it reads pppd's argument lists and option files
//! ([`options`]), speaks async HDLC on a pty ([`hdlc`]), negotiates LCP,
//! PAP or CHAP-MD5 and IPCP ([`session`]), and moves IP packets between the
//! link and a `pppN` TUN interface ([`tun`]).
//!
//! pptpd names it with its `ppp` option; xl2tpd execs `/usr/sbin/pppd`,
//! over which a lab host bind-mounts this binary, and a lab's PPTP client is
//! `/usr/sbin/pppd pty "pptp SERVER --nolaunchpppd"`.

pub mod hdlc;
pub mod options;
pub mod session;
pub mod tun;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::sys::{self, check};
use nix::libc;
use options::Options;
use session::{Event, Session, SessionConfig};
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
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = now.as_secs() % 86400;
        let line = format!(
            "{:02}:{:02}:{:02}.{:03} {}: {msg}\n",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            now.subsec_millis(),
            self.tag
        );
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
    /// The `pty` command on the other end of the line, if we started it.
    script: Option<std::process::Child>,
}

impl Drop for Line {
    /// The `pty` command lives as long as the link, as under pppd: its
    /// process group (it leads one) is told to end, and the child reaped.
    fn drop(&mut self) {
        if let Some(child) = &mut self.script {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: a signal to the process group our child leads.
                unsafe { libc::kill(-pid, libc::SIGTERM) };
            }
            let _ = child.wait();
        }
    }
}

impl Line {
    /// Whether the `pty` command has exited (the line is then as good as
    /// hung up, even if something it started still holds the terminal).
    fn script_exited(&mut self) -> bool {
        self.script.as_mut().is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    }
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
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

/// Starts `script` under `sh -c` with the slave end of a new pseudo-terminal
/// as its standard input and output; returns the master end and the child.
fn start_pty_script(script: &str) -> io::Result<(OwnedFd, std::process::Child)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors it opened; no name, termios or size.
    check(unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) })?;
    // SAFETY: openpty succeeded, so both are open descriptors we own.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // Neither end may leak into the command (or what it starts) beyond
    // its standard input and output: a leaked end would keep the line
    // open after one side is gone, and hide the hangup from the other.
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        // SAFETY: fcntl on a descriptor we own.
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    }
    make_raw(slave.as_raw_fd());
    // `exec`: the shell becomes the command; its own process group, so
    // that ending the link ends whatever it started too.
    let child = std::process::Command::new("/bin/sh")
        .args(["-c", &format!("exec {script}")])
        .stdin(std::process::Stdio::from(slave.try_clone()?))
        .stdout(std::process::Stdio::from(slave))
        .process_group(0)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting the pty command '{script}': {e}")))?;
    Ok((master, child))
}

fn open_line(opts: &Options) -> io::Result<Line> {
    let mut script = None;
    let (read, write) = match (&opts.pty, &opts.device) {
        (Some(command), _) => {
            let (master, child) = start_pty_script(command)?;
            script = Some(child);
            let write = master.try_clone()?;
            (master, write)
        }
        (None, Some(path)) => {
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
        (None, None) => {
            // SAFETY: dup of our standard input and output.
            let read = unsafe { OwnedFd::from_raw_fd(check(libc::dup(0))?) };
            // SAFETY: as above.
            let write = unsafe { OwnedFd::from_raw_fd(check(libc::dup(1))?) };
            (read, write)
        }
    };
    make_raw(read.as_raw_fd());
    set_nonblocking(read.as_raw_fd())?;
    set_nonblocking(write.as_raw_fd())?;
    Ok(Line { read, write, script })
}

fn random_u32() -> u32 {
    (crate::rng::Rng::from_entropy().next_u64() >> 32) as u32 | 1
}

/// Frames read from the line wait here for the session. A reader thread
/// fills it as fast as the line delivers: the programs on the other side of
/// the pty (pptp, xl2tpd) treat a full pty as a fatal error, so the line
/// must never back up behind the session.
struct Inbox {
    queue: std::sync::Mutex<InboxState>,
    /// Written (one byte) when the queue gains something.
    wake: UnixStream,
}

#[derive(Default)]
struct InboxState {
    frames: std::collections::VecDeque<Result<Vec<u8>, hdlc::FrameError>>,
    /// Frames dropped because the session fell this far behind.
    overflow: u64,
    /// The line closed (EOF or hangup).
    closed: bool,
}

/// How many frames may wait for the session before new ones are dropped.
const INBOX_LIMIT: usize = 4096;
/// How many bytes may wait for the line before new frames are dropped.
const OUTBOX_LIMIT: usize = 1 << 20;

fn read_line(fd: RawFd, inbox: &Inbox) {
    let mut decoder = hdlc::Decoder::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match sys::readable(fd, None) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => break,
        }
        // SAFETY: read into our buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        let frames = decoder.feed(&buf[..n as usize]);
        if frames.is_empty() {
            continue;
        }
        if let Ok(mut q) = inbox.queue.lock() {
            for f in frames {
                if q.frames.len() < INBOX_LIMIT {
                    q.frames.push_back(f);
                } else {
                    q.overflow += 1;
                }
            }
        }
        let _ = (&inbox.wake).write(&[1]);
    }
    if let Ok(mut q) = inbox.queue.lock() {
        q.closed = true;
    }
    let _ = (&inbox.wake).write(&[0]);
}

/// Writes what it can of `pending` to the non-blocking line.
fn flush(fd: BorrowedFd<'_>, pending: &mut std::collections::VecDeque<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        let (a, _) = pending.as_slices();
        // SAFETY: write from a live slice.
        let n = unsafe { libc::write(fd.as_raw_fd(), a.as_ptr().cast(), a.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        pending.drain(..n as usize);
    }
    Ok(())
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
    let mut line = open_line(opts)?;
    let (sig_read, sig_write) = UnixStream::pair()?;
    sig_read.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        signal_hook::low_level::pipe::register(sig, sig_write.try_clone()?)?;
    }
    let defaults = SessionConfig::default();
    let cfg = SessionConfig {
        require: opts.require,
        name: opts.our_name(),
        user: opts.user.clone(),
        secret: opts.password.clone(),
        remote_name: opts.remotename.clone(),
        secrets: opts.secrets.clone(),
        local_ip: opts.local,
        remote_ip: opts.remote,
        mru: opts.mru.unwrap_or(1500),
        magic: random_u32(),
        silent: opts.silent,
        passive: opts.passive,
        echo_interval: opts.echo_interval,
        echo_failure: opts.echo_failure.unwrap_or(3),
        lcp_restart: opts.lcp_restart.unwrap_or(defaults.lcp_restart),
        lcp_max_configure: opts.lcp_max_configure.unwrap_or(defaults.lcp_max_configure),
    };
    let clock = Instant::now();
    let mut session = Session::new(cfg);
    session.start(clock.elapsed());
    let (wake_read, wake_write) = UnixStream::pair()?;
    wake_read.set_nonblocking(true)?;
    let inbox = std::sync::Arc::new(Inbox { queue: Default::default(), wake: wake_write });
    let reader_fd = line.read.as_raw_fd();
    let reader_inbox = inbox.clone();
    // The reader lives as long as the line; the process exits with it.
    std::thread::Builder::new().name("line".into()).spawn(move || read_line(reader_fd, &reader_inbox))?;
    let mut tun: Option<Tun> = None;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(4096);
    let mut outbox: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
    let mut stopping: Option<Instant> = None;
    let mut dropped = (0u64, 0u64, 0u64);
    let mut exit = 1;
    let mut closed = false;
    loop {
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Send(frame, accm) => {
                    out.clear();
                    hdlc::encode(&frame, accm, &mut out);
                    if outbox.len() + out.len() > OUTBOX_LIMIT {
                        dropped.0 += 1;
                    } else {
                        outbox.extend(&out);
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
                Event::Down { why, clean } => {
                    log.line(&format!("link down: {why}"));
                    exit = i32::from(!clean);
                }
            }
        }
        flush(line.write.as_fd(), &mut outbox)?;
        if session.is_dead() {
            // Let the last Terminate-Ack reach the line.
            let deadline = Instant::now() + Duration::from_millis(500);
            while !outbox.is_empty() && Instant::now() < deadline {
                sys::poll(&[(line.write.as_raw_fd(), sys::WRITABLE)], Some(Duration::from_millis(50)))?;
                flush(line.write.as_fd(), &mut outbox)?;
            }
            break;
        }
        if !closed && line.script_exited() {
            closed = true;
        }
        if closed {
            log.line("hangup: the line closed");
            exit = i32::from(stopping.is_none());
            break;
        }
        if stopping.is_some_and(|t| t.elapsed() > TERMINATE_GRACE) {
            log.line("no Terminate-Ack from the peer; leaving");
            exit = 0;
            break;
        }
        let now = clock.elapsed();
        let timeout = session
            .next_timeout()
            .map_or(Duration::from_secs(1), |t| t.saturating_sub(now).min(Duration::from_secs(1)));
        let line_events = if outbox.is_empty() { 0 } else { sys::WRITABLE };
        let mut fds = vec![
            (wake_read.as_raw_fd(), sys::READABLE),
            (sig_read.as_raw_fd(), sys::READABLE),
            (line.write.as_raw_fd(), line_events),
        ];
        if let Some(t) = &tun {
            fds.push((t.file().as_raw_fd(), sys::READABLE));
        }
        let pfds = sys::poll(&fds, Some(timeout))?;
        let now = clock.elapsed();
        if pfds[1] {
            let mut b = [0u8; 16];
            while (&sig_read).read(&mut b).is_ok_and(|n| n > 0) {}
            if stopping.is_none() {
                log.line("signal received: terminating the link");
                stopping = Some(Instant::now());
                session.terminate(now, "user request");
            }
        }
        if pfds[0] {
            let mut b = [0u8; 256];
            while (&wake_read).read(&mut b).is_ok_and(|n| n > 0) {}
            let (frames, overflow, was_closed) = match inbox.queue.lock() {
                Ok(mut q) => (std::mem::take(&mut q.frames), std::mem::take(&mut q.overflow), q.closed),
                Err(_) => (Default::default(), 0, true),
            };
            dropped.0 += overflow;
            for frame in frames {
                match frame {
                    Ok(f) => session.on_frame(&f, now),
                    Err(e) => log.line(&format!("dropped a frame: {e:?}")),
                }
            }
            closed = was_closed;
        }
        if let Some(t) = &tun
            && pfds.get(3).is_some_and(|ready| *ready)
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
            "dropped {} frames the line or the session could not take, {} packets to the interface, \
             {} non-IPv4 packets from it",
            dropped.0, dropped.1, dropped.2
        ));
    }
    log.line("exiting");
    Ok(exit)
}
