//! The NAT's control socket: a Unix stream socket, served on a thread of
//! its own so that no client can slow the packet loop down. A client sends
//! one line and gets one line of JSON back:
//!
//! - `dump` (or an empty line): the counters and tables, taken by the
//!   packet loop at the end of a turn, between its batches and the next
//!   (see [`Request`]), so they are consistent with each other;
//! - anything else: `{"error": "..."}`.
//!
//! The socket is created with mode 0600 whatever the umask (bound in a
//! private directory, then linked into place), only a client of the NAT's
//! own user or root is answered, and a request must arrive within
//! [`REQUEST_TIMEOUT`] and fit in [`MAX_REQUEST`] bytes; the answer must be
//! read within [`ANSWER_TIMEOUT`]. At its path, a stale socket is replaced;
//! anything else (a file, a directory, a live socket) makes the NAT refuse
//! to start.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::alg::AlgState;
use super::counters::ProtocolCounts;
use super::link::NeighbourStats;
use super::table::MappingInfo;

/// The control socket's answer to `dump`.
#[derive(Debug, Serialize)]
pub struct Dump {
    /// Profile name.
    pub profile: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Per-protocol packet counts.
    pub protocols: Vec<(String, ProtocolCounts)>,
    /// Drops by reason name.
    pub drops: Vec<(String, u64)>,
    /// Mappings made since start.
    pub mappings_created: u64,
    /// Mappings expired since start.
    pub mappings_expired: u64,
    /// Inbound ESP SPIs given to one of several waiting clients.
    pub esp_ambiguous_bindings: u64,
    /// L2TP Tunnel IDs rewritten to keep two clients of a server apart.
    pub l2tp_tunnel_ids_rewritten: u64,
    /// The two links: their state and neighbour tables.
    pub links: Links,
    /// The live mappings.
    pub mappings: Vec<MappingInfo>,
    /// What the passthrough ALGs hold: PPTP calls, L2TP tunnels, IPsec SAs.
    pub passthrough: AlgState,
}

/// Both links, for the dump.
#[derive(Debug, Serialize)]
pub struct Links {
    /// The LAN side.
    pub lan: LinkInfo,
    /// The WAN side.
    pub wan: LinkInfo,
}

/// One link, for the dump.
#[derive(Debug, Serialize)]
pub struct LinkInfo {
    /// The interface.
    pub interface: String,
    /// Whether frames can go out on it now.
    pub up: bool,
    /// How many times it went down.
    pub downs: u64,
    /// Milliseconds it has been down since start, the current outage
    /// included.
    pub link_down_ms: u64,
    /// Frames that could not be sent because it was down.
    pub unsent: u64,
    /// Frames the kernel dropped before the NAT read them: it fell behind
    /// what arrived on this side.
    pub kernel_dropped: u64,
    /// Its neighbour table.
    pub neighbours: NeighbourStats,
}

/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 256;
/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client has to read its answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the packet loop has to take a dump.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the serving thread looks whether the NAT is stopping.
const QUIT_CHECK: Duration = Duration::from_millis(200);

/// What the control thread asks of the packet loop.
pub enum Request {
    /// Take a dump and send it back.
    Dump(mpsc::Sender<Dump>),
}

/// The packet loop's end of the control socket.
pub struct Control {
    path: PathBuf,
    /// Device and inode of the socket, to remove it only if it is still ours.
    id: (u64, u64),
    requests: mpsc::Receiver<Request>,
    wake: UnixStream,
    quit: Arc<AtomicBool>,
}

/// What is at `path`, in words, for an error message.
fn describe(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device node"
    } else {
        "something that is not a socket"
    }
}

/// Checks that the control socket can be created at `path`: nothing is
/// there, or a stale socket nobody answers on. Touches nothing.
pub fn check_path(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "control socket {}: {} is there, not a socket; the NAT leaves it alone \
                 (remove it, or choose another --control path, or --no-control)",
                path.display(),
                describe(&meta)
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "control socket {}: a process answers on it (another NAT?); stop it or choose another --control path",
                path.display()
            ),
        )),
        // Nobody listens: a stale socket, left by a NAT that died.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("control socket {}: an existing socket: {e}", path.display()))),
    }
}

/// Binds a listening socket at `path` with mode 0600, whatever the umask:
/// bound in a private directory beside it, its mode set, then linked into
/// place (a link never replaces what is there).
fn bind(path: &Path) -> io::Result<(UnixListener, (u64, u64))> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()));
    check_path(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = tempfile::Builder::new().prefix(".nat-control-").tempdir_in(parent).map_err(context)?;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).map_err(context)?;
    let staged = private.path().join("sock");
    let listener = UnixListener::bind(&staged).map_err(context)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(context)?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        // Stale (check_path saw nobody answer on it).
        std::fs::remove_file(path).map_err(context)?;
    }
    std::fs::hard_link(&staged, path).map_err(context)?;
    let meta = std::fs::symlink_metadata(path).map_err(context)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

impl Control {
    /// Creates the control socket at `path` and starts serving it.
    pub fn start(path: &Path) -> io::Result<Control> {
        let (listener, id) = bind(path)?;
        listener.set_nonblocking(true)?;
        let (wake, wake_tx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let (tx, requests) = mpsc::channel();
        let quit = Arc::new(AtomicBool::new(false));
        let q = quit.clone();
        std::thread::Builder::new()
            .name("nat-control".into())
            .spawn(move || serve(listener, tx, wake_tx, q))
            .map_err(|e| io::Error::new(e.kind(), format!("starting the control thread: {e}")))?;
        Ok(Control { path: path.to_path_buf(), id, requests, wake, quit })
    }

    /// The descriptor that becomes readable when a request waits.
    pub fn wake_fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    /// Empties the wake-up descriptor (after poll said it is readable).
    /// Empties the wake-up pipe; `false` once the serving thread's end of
    /// it is closed (the thread ended).
    pub fn drain_wake(&self) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match (&self.wake).read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(_) => return true,
            }
        }
    }

    /// The next waiting request, without blocking.
    pub fn next_request(&self) -> Option<Request> {
        self.requests.try_recv().ok()
    }

    /// Stops serving and removes the socket (what dropping it does too).
    pub fn close(self) {}
}

impl Drop for Control {
    /// Stops serving and removes the socket, if it is still the one this
    /// NAT created (not one another NAT put there since).
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The serving thread: one client at a time, each bounded in time.
fn serve(listener: UnixListener, requests: mpsc::Sender<Request>, wake: UnixStream, quit: Arc<AtomicBool>) {
    while !quit.load(Ordering::Relaxed) {
        let _ = crate::sys::readable(listener.as_raw_fd(), Some(QUIT_CHECK));
        while let Ok((stream, _)) = listener.accept() {
            if quit.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = answer(stream, &requests, &wake) {
                tracing::debug!("control client: {e}");
            }
        }
    }
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Reads one request from a client and writes its answer.
fn answer(stream: UnixStream, requests: &mpsc::Sender<Request>, wake: &UnixStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let reply = match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) if cred.uid() == nix::unistd::geteuid().as_raw() || cred.uid() == 0 => match read_request(&stream) {
            Ok(line) => match line.trim() {
                "dump" | "" => dump(requests, wake),
                other => error_json(&format!("unknown command {other:?}; the commands are: dump")),
            },
            Err(message) => error_json(&message),
        },
        Ok(cred) => error_json(&format!("uid {} may not use this control socket", cred.uid())),
        Err(e) => error_json(&format!("cannot tell who is asking: {e}")),
    };
    write_all_by(&stream, format!("{reply}\n").as_bytes(), Instant::now() + ANSWER_TIMEOUT)
}

/// One request line, within [`REQUEST_TIMEOUT`] and [`MAX_REQUEST`] bytes;
/// the end of the stream also ends it.
fn read_request(stream: &UnixStream) -> Result<String, String> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::with_capacity(MAX_REQUEST);
    let mut chunk = [0u8; MAX_REQUEST];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no complete request line within {} ms", REQUEST_TIMEOUT.as_millis()));
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let room = MAX_REQUEST + 1 - buf.len();
        match (&*stream).read(&mut chunk[..room.min(MAX_REQUEST)]) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    buf.truncate(end);
                    break;
                }
                if buf.len() >= MAX_REQUEST {
                    return Err(format!("a request is one line of at most {MAX_REQUEST} bytes"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(format!("no complete request line within {} ms", REQUEST_TIMEOUT.as_millis()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    String::from_utf8(buf).map_err(|_| "the request is not UTF-8 text".to_string())
}

/// Asks the packet loop for a dump and serializes it here, off the loop.
fn dump(requests: &mpsc::Sender<Request>, wake: &UnixStream) -> String {
    let (tx, rx) = mpsc::channel();
    if requests.send(Request::Dump(tx)).is_err() {
        return error_json("the NAT is stopping");
    }
    // A full buffer means a wake-up is pending anyway.
    let _ = (&*wake).write(&[1]);
    match rx.recv_timeout(DUMP_TIMEOUT) {
        Ok(d) => serde_json::to_string(&d).unwrap_or_else(|e| error_json(&format!("serializing the dump: {e}"))),
        Err(_) => error_json("the packet loop did not answer"),
    }
}

/// Writes `data` unless the client stops reading past `deadline`.
fn write_all_by(stream: &UnixStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the client does not read its answer"));
        }
        stream.set_write_timeout(Some(left))?;
        match (&*stream).write(data) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the client left")),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Asks a running NAT for its dump over its control socket.
pub fn query(path: &Path) -> io::Result<serde_json::Value> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("control socket {}: {e}", path.display())))?;
    s.set_read_timeout(Some(DUMP_TIMEOUT + ANSWER_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    s.write_all(b"dump\n")?;
    let mut text = String::new();
    io::BufRead::read_line(&mut io::BufReader::new(&s), &mut text)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if let Some(message) = value.get("error").and_then(|e| e.as_str()) {
        return Err(io::Error::other(format!("the NAT answered: {message}")));
    }
    Ok(value)
}
