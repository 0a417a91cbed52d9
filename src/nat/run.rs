//! The NAT on two real interfaces: packet sockets, a poll loop, the clock,
//! the links' state, and the control socket's requests. Everything it
//! decides about packets, the sans-I/O [`Link`] decides.
//!
//! The loop is fair: each turn reads at most [`BATCHES_PER_TURN`] batches
//! from each side, then runs the timers, answers the control thread and
//! looks at the stop flag. A flood on one side costs the other side a few
//! batches of latency at most, and SIGTERM is answered within a turn.
//!
//! A link that goes down (`ip link set dev X down`, a lost carrier, the
//! interface removed) is waited for: its frames are counted as unsent, the
//! other side goes on, and the NAT picks the link up again when it comes
//! back (with a new socket if the interface was made anew).

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::libc;

use super::Side;
use super::control::{Control, Dump, LinkInfo, Links, Request};
use super::counters::DropReason;
use super::engine::{Config, L4Checksum, Nat};
use super::link::{FrameVerdict, Interface, Link, Offload, OutFrame};
use super::socket::{self, PacketSocket, RxBatch, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use crate::sys;
use crate::wire::ethernet;

/// Frames read per `recvmmsg`.
const BATCH: usize = 64;
/// Batches read from one side per turn of the loop, before the other side,
/// the timers, the control socket and the stop flag have their turn.
pub const BATCHES_PER_TURN: usize = 4;
/// How often mappings expire, ARP retries happen and the links' state is
/// looked at, at the latest.
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

impl Dump {
    fn of(link: &Link, ports: &mut [Port; 2], now: Duration) -> Dump {
        let nat = link.nat();
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
            links: Links { lan: ports[0].info(link), wan: ports[1].info(link) },
            mappings: nat.mappings(now),
            passthrough: nat.alg_state(),
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Lan => "LAN",
        Side::Wan => "WAN",
    }
}

/// One side's packet socket and what became of its link.
struct Port {
    side: Side,
    name: String,
    sock: PacketSocket,
    /// Since when the link is down, if it is.
    down_since: Option<Instant>,
    /// Time down in outages that ended.
    down_total: Duration,
    downs: u64,
    unsent: u64,
    unsent_at_down: u64,
    kernel_dropped: u64,
    last_warning: Option<Instant>,
}

impl Port {
    fn open(side: Side, name: &str) -> io::Result<Port> {
        Ok(Port {
            side,
            name: name.to_string(),
            sock: PacketSocket::open(name)?,
            down_since: None,
            down_total: Duration::ZERO,
            downs: 0,
            unsent: 0,
            unsent_at_down: 0,
            kernel_dropped: 0,
            last_warning: None,
        })
    }

    fn info(&mut self, link: &Link) -> LinkInfo {
        self.count_kernel_drops();
        let current = self.down_since.map_or(Duration::ZERO, |t| t.elapsed());
        LinkInfo {
            interface: self.name.clone(),
            up: self.down_since.is_none(),
            downs: self.downs,
            link_down_ms: (self.down_total + current).as_millis() as u64,
            unsent: self.unsent,
            kernel_dropped: self.kernel_dropped,
            neighbours: link.neighbour_stats(self.side),
        }
    }

    fn count_kernel_drops(&mut self) {
        if let Ok(n) = self.sock.take_kernel_drops() {
            self.kernel_dropped += n;
        }
    }

    fn went_down(&mut self, why: &str, link: &mut Link) {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.downs += 1;
            self.unsent_at_down = self.unsent;
            // What is behind it when it comes back may be another device.
            link.forget_neighbours(self.side);
            tracing::warn!(
                "{} link {} is down ({why}); waiting for it to come back, the other side is still served",
                side_name(self.side),
                self.name
            );
        }
    }

    fn came_up(&mut self) {
        if let Some(since) = self.down_since.take() {
            let outage = since.elapsed();
            self.down_total += outage;
            tracing::info!(
                "{} link {} is up again after {} ms ({} frames could not be sent meanwhile)",
                side_name(self.side),
                self.name,
                outage.as_millis(),
                self.unsent - self.unsent_at_down
            );
        }
    }

    /// Looks at the interface: gone down, back up, or made anew.
    fn supervise(&mut self, link: &mut Link) {
        let state = match socket::link_state(&self.name) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("reading the state of {}: {e}", self.name);
                return;
            }
        };
        match state {
            None => self.went_down("the interface is gone", link),
            Some(s) if !s.up => self.went_down("set down", link),
            Some(s) if !s.running => self.went_down("no carrier", link),
            Some(s) => {
                if self.sock.bound_ifindex().map_or(true, |i| i != s.ifindex) {
                    // Removed and made again (perhaps with the same index):
                    // the old socket is bound to nothing any more.
                    match PacketSocket::open(&self.name) {
                        Ok(sock) => {
                            if sock.mac() != self.sock.mac() {
                                tracing::info!(
                                    "{} is a new interface, MAC address {}",
                                    self.name,
                                    ethernet::mac_to_string(sock.mac())
                                );
                                link.set_mac(self.side, sock.mac());
                            }
                            self.count_kernel_drops();
                            self.sock = sock;
                        }
                        Err(e) => {
                            self.went_down(&format!("reopening it: {e}"), link);
                            return;
                        }
                    }
                }
                self.came_up();
            }
        }
    }

    /// Sends frames, counting what could not go.
    fn send(&mut self, frames: &[(&[u8; VNET_HDR_LEN], &[u8])], link: &mut Link) {
        if frames.is_empty() {
            return;
        }
        if self.down_since.is_some() {
            self.unsent += frames.len() as u64;
            return;
        }
        let out = self.sock.send_batch(frames);
        let untried = frames.len() - out.sent - out.refused;
        for _ in 0..out.refused {
            link.nat_mut().count_drop(DropReason::TxQueueFull);
        }
        match out.error {
            Some(e) if socket::is_link_down(&e) => {
                self.unsent += untried as u64;
                self.went_down(&e.to_string(), link);
            }
            other => {
                if let Some(e) = other
                    && self.last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    self.last_warning = Some(Instant::now());
                    tracing::warn!("sending on {}: {e}", self.name);
                }
                for _ in 0..untried {
                    link.nat_mut().count_drop(DropReason::TxQueueFull);
                }
            }
        }
    }
}

/// Which offload state a received frame is in. The pseudo-header rule only
/// applies when the checksum to complete is the frame's own L4 checksum
/// (not a tunnel's inner one).
pub(crate) fn offload_of(hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> Offload {
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
    // Refuse a bad control path before touching the interfaces.
    if let Some(path) = &cfg.control {
        super::control::check_path(path)?;
    }
    let mut ports = [Port::open(Side::Lan, &cfg.lan_if)?, Port::open(Side::Wan, &cfg.wan_if)?];
    let lan_addr = cfg.nat.lan.addr();
    let wan_addr = cfg.nat.wan.addr();
    let nat = Nat::new(cfg.nat.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut link = Link::new(
        nat,
        Interface { mac: ports[0].sock.mac(), addr: lan_addr },
        Interface { mac: ports[1].sock.mac(), addr: wan_addr },
    );
    // Last: the socket's path appearing tells that the NAT is ready.
    let mut control = match &cfg.control {
        Some(path) => Some(Control::start(path)?),
        None => None,
    };
    tracing::info!(
        "nat running: LAN {} {} ({}), WAN {} {} ({}), profile {}, {}",
        cfg.lan_if,
        cfg.nat.lan,
        ethernet::mac_to_string(ports[0].sock.mac()),
        cfg.wan_if,
        cfg.nat.wan,
        ethernet::mac_to_string(ports[1].sock.mac()),
        cfg.nat.profile.name,
        cfg.control.as_ref().map_or("no control socket".to_string(), |p| format!("control {}", p.display()))
    );
    for p in ports.iter_mut() {
        p.supervise(&mut link);
    }
    let start = Instant::now();
    let mut rx = RxBatch::new(BATCH);
    let mut next_tick = Duration::ZERO;
    let mut sends: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    let mut unsupported_seen = 0;
    let mut busy = false;
    while !stop.load(Ordering::Relaxed) {
        // While traffic flows, go straight back to the sockets: a poll per
        // turn costs a system call that an empty read would cost anyway.
        if !busy {
            let now = start.elapsed();
            let wake = link.next_timeout().map_or(next_tick, |t| t.min(next_tick));
            let timeout = wake.saturating_sub(now).min(TICK);
            let control_fd = control.as_ref().map_or(-1, Control::wake_fd);
            let ready = sys::poll(
                &[
                    (ports[0].sock.raw_fd(), sys::READABLE),
                    (ports[1].sock.raw_fd(), sys::READABLE),
                    (control_fd, sys::READABLE),
                ],
                Some(timeout),
            )?;
            if ready[2] && control.as_ref().is_some_and(|c| !c.drain_wake()) {
                // Its thread is gone: polling its hung-up end would spin.
                tracing::warn!("the control socket's thread ended; the control socket is closed");
                control = None;
            }
        }
        busy = false;
        let now = start.elapsed();
        for i in 0..2 {
            let side = ports[i].side;
            for _ in 0..BATCHES_PER_TURN {
                let n = match ports[i].sock.recv_batch(&mut rx) {
                    Ok(n) => n,
                    Err(e) if socket::is_link_down(&e) => {
                        ports[i].went_down(&e.to_string(), &mut link);
                        // It may be back already (a short flap).
                        ports[i].supervise(&mut link);
                        0
                    }
                    // Out of kernel memory for a moment: the frame is lost.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM)) => 0,
                    Err(e) => return Err(io::Error::new(e.kind(), format!("receiving on {}: {e}", ports[i].name))),
                };
                if n == 0 {
                    break;
                }
                busy = true;
                for s in sends.iter_mut() {
                    s.clear();
                }
                for j in 0..n {
                    let Some((hdr, frame)) = rx.get_mut(j) else {
                        link.nat_mut().count_drop(DropReason::Ethernet);
                        continue;
                    };
                    let offload = offload_of(hdr, frame);
                    if let Some(v) = offload.vnet {
                        *hdr = v;
                    }
                    if let FrameVerdict::Send(out) = link.on_frame(side, frame, offload, now) {
                        sends[slot(out)].push(j);
                    }
                }
                // What waited for ARP first: it came before this batch.
                flush(&mut link, &mut ports);
                for (out, port) in ports.iter_mut().enumerate() {
                    let frames: Vec<(&[u8; VNET_HDR_LEN], &[u8])> =
                        sends[out].iter().filter_map(|&j| rx.get(j)).collect();
                    port.send(&frames, &mut link);
                }
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
            if now >= next_tick {
                for p in ports.iter_mut() {
                    p.supervise(&mut link);
                    // The kernel's count is 32 bits and resets when read:
                    // read often enough that it never wraps.
                    p.count_kernel_drops();
                }
                next_tick = now + TICK;
            }
            flush(&mut link, &mut ports);
        }
        if let Some(c) = &control {
            while let Some(request) = c.next_request() {
                match request {
                    // The control thread serializes and writes it: a slow
                    // client never holds the loop.
                    Request::Dump(reply) => {
                        let _ = reply.send(Dump::of(&link, &mut ports, now));
                    }
                }
            }
        }
        if dump.swap(false, Ordering::Relaxed) {
            if let Ok(json) = serde_json::to_string_pretty(&Dump::of(&link, &mut ports, now)) {
                eprintln!("{json}");
            }
        }
    }
    if let Some(c) = control {
        c.close();
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

/// Sends what the link layer made or released, a batch per side.
fn flush(link: &mut Link, ports: &mut [Port; 2]) {
    const ZERO: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
    let mut out: [Vec<OutFrame>; 2] = [Vec::new(), Vec::new()];
    while let Some(f) = link.poll_frame() {
        out[slot(f.side)].push(f);
    }
    for (frames, port) in out.iter().zip(ports.iter_mut()) {
        if frames.is_empty() {
            continue;
        }
        let hdrs: Vec<[u8; VNET_HDR_LEN]> = frames.iter().map(|f| f.offload.vnet.unwrap_or(ZERO)).collect();
        let batch: Vec<(&[u8; VNET_HDR_LEN], &[u8])> =
            hdrs.iter().zip(frames).map(|(h, f)| (h, f.frame.as_slice())).collect();
        port.send(&batch, link);
    }
}

/// Asks a running NAT for its dump over its control socket.
pub fn query(path: &Path) -> io::Result<serde_json::Value> {
    super::control::query(path)
}

/// Addresses parsed from the command line.
pub fn parse_addr(s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|_| format!("'{s}' is not an IPv4 address"))
}
