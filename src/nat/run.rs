//! The NAT on two real interfaces: packet sockets, a poll loop, the clock,
//! and a control socket that hands out the mapping table and counters as
//! JSON. Everything it decides, the sans-I/O [`Link`] decides.

use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::libc;
use serde::Serialize;

use super::counters::{DropReason, ProtocolCounts};
use super::engine::{AlgState, Config, L4Checksum, Nat, Side};
use super::link::{FrameVerdict, Interface, Link, Offload};
use super::socket::{PacketSocket, RxBatch, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use super::table::MappingInfo;
use super::wire::ethernet;

/// Frames read per `recvmmsg`.
const BATCH: usize = 64;
/// How often mappings expire and ARP retries happen at the latest.
const TICK: Duration = Duration::from_millis(200);

/// What the `nat` command runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// LAN interface name.
    pub lan_if: String,
    /// WAN interface name.
    pub wan_if: String,
    /// Addresses and behaviour.
    pub nat: Config,
    /// Where the control socket listens, if anywhere.
    pub control: Option<PathBuf>,
}

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
    /// The live mappings.
    pub mappings: Vec<MappingInfo>,
    /// What the passthrough ALGs hold: PPTP calls, L2TP tunnels, IPsec SAs.
    pub passthrough: AlgState,
}

impl Dump {
    fn of(nat: &Nat, now: Duration) -> Dump {
        let c = nat.counters();
        Dump {
            profile: nat.config().profile.name.clone(),
            uptime_s: now.as_secs(),
            protocols: c.protocols().into_iter().map(|(n, p)| (n.to_string(), p)).collect(),
            drops: c.drops(),
            mappings_created: c.mappings_created,
            mappings_expired: c.mappings_expired,
            esp_ambiguous_bindings: c.esp_ambiguous_bindings,
            l2tp_tunnel_ids_rewritten: c.l2tp_tunnel_ids_rewritten,
            mappings: nat.mappings(now),
            passthrough: nat.alg_state(),
        }
    }
}

/// Which offload state a received frame is in. The pseudo-header rule only
/// applies when the checksum to complete is the frame's own L4 checksum
/// (not a tunnel's inner one).
fn offload_of(hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> Offload {
    let needs_csum = hdr[0] & VNET_F_NEEDS_CSUM != 0;
    let csum_start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
    let own = frame.len() > ethernet::HEADER_LEN
        && csum_start == ethernet::HEADER_LEN + usize::from(frame[ethernet::HEADER_LEN] & 0x0f) * 4;
    let csum = if needs_csum && own { L4Checksum::Partial } else { L4Checksum::Full };
    let mut vnet = *hdr;
    vnet[0] &= !VNET_F_DATA_VALID;
    Offload { csum, vnet: Some(vnet) }
}

/// Runs the NAT until `stop` is set; `dump` asks for the table on stderr.
pub fn run(cfg: RunConfig, stop: Arc<AtomicBool>, dump: Arc<AtomicBool>) -> io::Result<()> {
    let lan = PacketSocket::open(&cfg.lan_if)?;
    let wan = PacketSocket::open(&cfg.wan_if)?;
    let lan_addr = cfg.nat.lan.addr();
    let wan_addr = cfg.nat.wan.addr();
    let nat = Nat::new(cfg.nat.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut link =
        Link::new(nat, Interface { mac: lan.mac(), addr: lan_addr }, Interface { mac: wan.mac(), addr: wan_addr });
    let control = match &cfg.control {
        Some(path) => Some(listen(path)?),
        None => None,
    };
    tracing::info!(
        "nat running: LAN {} {} ({}), WAN {} {} ({}), profile {}{}",
        cfg.lan_if,
        cfg.nat.lan,
        ethernet::mac_to_string(lan.mac()),
        cfg.wan_if,
        cfg.nat.wan,
        ethernet::mac_to_string(wan.mac()),
        cfg.nat.profile.name,
        cfg.control.as_ref().map(|p| format!(", control {}", p.display())).unwrap_or_default()
    );
    let start = Instant::now();
    let mut rx = RxBatch::new(BATCH);
    let mut next_tick = Duration::ZERO;
    let mut sends: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    let mut unsupported_seen = 0;
    let mut busy = false;
    while !stop.load(Ordering::Relaxed) {
        // While traffic flows, go straight back to the sockets: a poll per
        // round costs a system call that an empty read would cost anyway.
        if !busy {
            let now = start.elapsed();
            let wake = link.next_timeout().map_or(next_tick, |t| t.min(next_tick));
            let timeout = wake.saturating_sub(now).min(TICK);
            let control_fd = control.as_ref().map_or(-1, std::os::fd::AsRawFd::as_raw_fd);
            wait(&[lan.raw_fd(), wan.raw_fd(), control_fd], timeout)?;
        }
        busy = false;
        let now = start.elapsed();
        for (side, sock) in [(Side::Lan, &lan), (Side::Wan, &wan)] {
            loop {
                let n = sock.recv_batch(&mut rx)?;
                busy |= n > 0;
                for s in sends.iter_mut() {
                    s.clear();
                }
                for i in 0..n {
                    let Some((hdr, frame)) = rx.get_mut(i) else {
                        link.nat_mut().count_drop(DropReason::Ethernet);
                        continue;
                    };
                    let offload = offload_of(hdr, frame);
                    if let Some(v) = offload.vnet {
                        *hdr = v;
                    }
                    if let FrameVerdict::Send(out) = link.on_frame(side, frame, offload, now) {
                        sends[slot(out)].push(i);
                    }
                }
                for (out, sock_out) in [(Side::Lan, &lan), (Side::Wan, &wan)] {
                    let frames: Vec<(&[u8; VNET_HDR_LEN], &[u8])> =
                        sends[slot(out)].iter().filter_map(|&i| rx.get(i)).collect();
                    if !frames.is_empty() {
                        send_all(sock_out, &frames, &mut link);
                    }
                }
                flush(&mut link, &lan, &wan);
                if n < rx.capacity() {
                    break;
                }
            }
        }
        if rx.unsupported > unsupported_seen {
            tracing::warn!(
                "{} packets of a GSO type packet sockets cannot carry were lost",
                rx.unsupported - unsupported_seen
            );
            unsupported_seen = rx.unsupported;
        }
        if now >= next_tick || link.next_timeout().is_some_and(|t| t <= now) {
            link.handle_timeout(now);
            flush(&mut link, &lan, &wan);
            next_tick = now + TICK;
        }
        if let Some(listener) = &control {
            serve_control(listener, &link, now);
        }
        if dump.swap(false, Ordering::Relaxed) {
            if let Ok(json) = serde_json::to_string_pretty(&Dump::of(link.nat(), now)) {
                eprintln!("{json}");
            }
        }
    }
    if let Some(path) = &cfg.control {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("nat stopped");
    Ok(())
}

fn slot(side: Side) -> usize {
    match side {
        Side::Lan => 0,
        Side::Wan => 1,
    }
}

fn send_all(sock: &PacketSocket, frames: &[(&[u8; VNET_HDR_LEN], &[u8])], link: &mut Link) {
    match sock.send_batch(frames) {
        Ok(n) if n == frames.len() => {}
        Ok(n) => {
            for _ in n..frames.len() {
                link.nat_mut().count_drop(DropReason::TxQueueFull);
            }
        }
        Err(e) => {
            tracing::warn!("sending on {}: {e}", sock.name());
            for _ in frames {
                link.nat_mut().count_drop(DropReason::TxQueueFull);
            }
        }
    }
}

/// Sends what the link layer made or released.
fn flush(link: &mut Link, lan: &PacketSocket, wan: &PacketSocket) {
    const ZERO: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
    while let Some(f) = link.poll_frame() {
        let hdr = f.offload.vnet.unwrap_or(ZERO);
        let sock = match f.side {
            Side::Lan => lan,
            Side::Wan => wan,
        };
        send_all(sock, &[(&hdr, &f.frame)], link);
    }
}

fn wait(fds: &[i32], timeout: Duration) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().filter(|fd| **fd >= 0).map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: pfds is a live array of pollfd of the given length.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn listen(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("control socket {}: {e}", path.display())))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Answers every waiting control client: a line `dump` gets the JSON dump.
fn serve_control(listener: &UnixListener, link: &Link, now: Duration) {
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        let _ = reader.read_line(&mut line);
        let answer = match line.trim() {
            "dump" | "" => {
                serde_json::to_string(&Dump::of(link.nat(), now)).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            }
            other => format!("{{\"error\":\"unknown command {other:?}; try dump\"}}"),
        };
        let mut w = &stream;
        let _ = w.write_all(answer.as_bytes());
        let _ = w.write_all(b"\n");
    }
}

/// Asks a running NAT for its dump over its control socket.
pub fn query(path: &Path) -> io::Result<serde_json::Value> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("control socket {}: {e}", path.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"dump\n")?;
    let mut text = String::new();
    BufReader::new(&s).read_line(&mut text)?;
    serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Addresses parsed from the command line.
pub fn parse_addr(s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|_| format!("'{s}' is not an IPv4 address"))
}
