//! Scripted peers: small, real protocol speakers of ours for what no
//! packaged daemon on this machine produces.
//!
//! - A raw ESP flow (IP protocol 50, no NAT-T): the client asks the server
//!   on UDP 500, in an IKE header, to send it ESP with the SPI it chose; the
//!   server answers with the SPI it wants in return; then the client sends
//!   ESP with sequence numbers and the server echoes each payload back with
//!   the client's SPI, after a chosen delay. Both sides print what they
//!   saw, so delivery is checkable both ways, and so is misdelivery: a
//!   client prints ESP that reached it for somebody else's SPI.
//! - A hostile WAN host: spoofed GRE, ESP, L2TP, IKE and NAT-T packets at
//!   the NAT's public address, with IDs a tunnel behind it might use.
//! - An L2TP LNS that answers each SCCRQ from a new UDP port, as some
//!   servers do.
//!
//! Each runs as a `vpn-passthrough peer …` command in a lab host.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;

use crate::nat::wire::{esp, ike, l2tp};

/// What the ESP client puts before its SPI in the IKE body.
const ASK: &[u8] = b"ESP-SPI ";

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A raw IPv4 socket for one protocol: the kernel writes the IP header on
/// send; receives come with it.
pub struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    /// Opens a raw socket for IP protocol `proto`.
    pub fn open(proto: u8) -> io::Result<RawSocket> {
        // SAFETY: socket(2); the descriptor is owned from here on.
        let raw = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) })?;
        // SAFETY: raw is a fresh descriptor.
        Ok(RawSocket { fd: unsafe { OwnedFd::from_raw_fd(raw) } })
    }

    /// Sends `payload` (everything after the IP header) to `to`.
    pub fn send(&self, to: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.octets()) },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto from a live slice to a sockaddr_in of the right size.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Waits up to `timeout` for a packet; returns its source and what
    /// follows its IP header.
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<(Ipv4Addr, Vec<u8>)>> {
        if !readable(self.fd.as_raw_fd(), timeout)? {
            return Ok(None);
        }
        let mut buf = vec![0u8; 65536];
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        if buf.len() < 20 {
            return Ok(None);
        }
        let hl = usize::from(buf[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        Ok(buf.get(hl..).map(|p| (src, p.to_vec())))
    }
}

fn readable(fd: i32, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd that outlives the call.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    match rc {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) }
        }
    }
}

/// An ESP packet: SPI, sequence number, payload (no encryption: the NAT
/// only ever reads the SPI).
pub fn esp_packet(spi: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = spi.to_be_bytes().to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn esp_fields(p: &[u8]) -> Option<(u32, u32, &[u8])> {
    let esp = esp::Packet::new_checked(p).ok()?;
    Some((esp.spi(), esp.seq(), &p[esp::HEADER_LEN..]))
}

/// The ESP server: answers IKE-like requests on UDP 500 and echoes ESP
/// back with the client's SPI after `delay`. Runs until killed; prints
/// `listening` once both sockets are open.
pub fn esp_server(delay: Duration) -> io::Result<()> {
    let udp = UdpSocket::bind(("0.0.0.0", ike::PORT))?;
    udp.set_nonblocking(true)?;
    let raw = RawSocket::open(50)?;
    say("listening udp/500 esp");
    // Server SPI -> client SPI; IKE initiator SPI -> server SPI.
    let mut sessions: HashMap<u32, u32> = HashMap::new();
    let mut by_initiator: HashMap<u64, u32> = HashMap::new();
    let mut next_spi = 0x5000_0001u32;
    let mut echoes: VecDeque<(Instant, Ipv4Addr, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        while echoes.front().is_some_and(|(due, _, _)| *due <= now) {
            if let Some((_, to, p)) = echoes.pop_front() {
                raw.send(to, &p)?;
            }
        }
        let wait = echoes.front().map_or(Duration::from_millis(200), |(due, _, _)| due.saturating_duration_since(now));
        let mut fds = [
            libc::pollfd { fd: udp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: raw.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: fds outlives the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, wait.as_millis().clamp(1, 1000) as i32) };
        if fds[0].revents != 0
            && let Ok((n, from)) = udp.recv_from(&mut buf)
        {
            let Ok(m) = ike::Message::new_checked(&buf[..n]) else {
                say(&format!("ike from {from}: not an IKE message, dropped"));
                continue;
            };
            let body = &buf[ike::HEADER_LEN.min(n)..n];
            let Some(spi) =
                body.strip_prefix(ASK).and_then(|b| b.get(..4)).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                say(&format!("ike from {from}: no ESP SPI asked for, dropped"));
                continue;
            };
            let initiator = m.initiator_spi();
            let ours = *by_initiator.entry(initiator).or_insert_with(|| {
                next_spi += 1;
                next_spi - 1
            });
            sessions.insert(ours, spi);
            let reply = ike::emit(initiator, u64::from(ours) << 32 | 1, &ours.to_be_bytes());
            udp.send_to(&reply, from)?;
            say(&format!("ike from {from}: client spi {spi:#010x}, server spi {ours:#010x}"));
        }
        if fds[1].revents != 0
            && let Some((src, p)) = raw.recv(Duration::ZERO)?
        {
            match esp_fields(&p) {
                Some((spi, seq, payload)) => match sessions.get(&spi) {
                    Some(&client) => {
                        say(&format!("esp from {src} spi {spi:#010x} seq {seq}"));
                        echoes.push_back((Instant::now() + delay, src, esp_packet(client, seq, payload)));
                    }
                    None => say(&format!("esp from {src} with unknown spi {spi:#010x}, dropped")),
                },
                None => say(&format!("esp from {src}: too short, dropped")),
            }
        }
    }
}

/// How an ESP client run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspReport {
    /// The SPI the server asked for.
    pub server_spi: u32,
    /// ESP packets sent.
    pub sent: u32,
    /// Echoes received with our SPI and our payload.
    pub echoed: u32,
    /// ESP packets received with another SPI (somebody else's traffic).
    pub foreign: u32,
}

/// What the ESP client does.
#[derive(Debug, Clone)]
pub struct EspClient {
    /// The server.
    pub server: Ipv4Addr,
    /// The IKE initiator SPI.
    pub ike_spi: u64,
    /// The SPI we want the server to use towards us.
    pub spi: u32,
    /// How many ESP packets to send.
    pub count: u32,
    /// How long to wait for each echo.
    pub wait: Duration,
}

impl EspClient {
    /// Asks for SPIs over UDP 500 (from port 500, retried), then sends
    /// `count` ESP packets one at a time and waits for each echo. Prints
    /// `sent seq N` as each leaves and `echoed seq N` or `lost seq N`.
    pub fn run(&self) -> io::Result<EspReport> {
        let udp = UdpSocket::bind(("0.0.0.0", ike::PORT))?;
        let mut body = ASK.to_vec();
        body.extend_from_slice(&self.spi.to_be_bytes());
        let ask = ike::emit(self.ike_spi, 0, &body);
        udp.set_read_timeout(Some(Duration::from_millis(700)))?;
        let mut buf = vec![0u8; 65536];
        let mut server_spi = None;
        for _ in 0..5 {
            udp.send_to(&ask, SocketAddrV4::new(self.server, ike::PORT))?;
            if let Ok((n, _)) = udp.recv_from(&mut buf)
                && let Ok(m) = ike::Message::new_checked(&buf[..n])
                && m.initiator_spi() == self.ike_spi
                && let Some(b) = buf.get(ike::HEADER_LEN..ike::HEADER_LEN + 4)
            {
                server_spi = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                break;
            }
        }
        let server_spi = server_spi.ok_or_else(|| {
            io::Error::new(io::ErrorKind::TimedOut, format!("no IKE answer from {}:500 after 5 tries", self.server))
        })?;
        say(&format!("ike: server spi {server_spi:#010x}"));
        let raw = RawSocket::open(50)?;
        let mut report = EspReport { server_spi, sent: 0, echoed: 0, foreign: 0 };
        for seq in 1..=self.count {
            let payload = format!("esp {:#010x} seq {seq}", self.spi).into_bytes();
            raw.send(self.server, &esp_packet(server_spi, seq, &payload))?;
            report.sent += 1;
            say(&format!("sent seq {seq}"));
            let deadline = Instant::now() + self.wait;
            let mut got = false;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let Some((src, p)) = raw.recv(left)? else { break };
                match esp_fields(&p) {
                    Some((spi, s, pl)) if spi == self.spi && s == seq && pl == payload.as_slice() => {
                        got = true;
                        break;
                    }
                    Some((spi, s, _)) if spi != self.spi && spi != server_spi => {
                        report.foreign += 1;
                        say(&format!("foreign esp from {src} spi {spi:#010x} seq {s}"));
                    }
                    _ => {}
                }
            }
            if got {
                report.echoed += 1;
                say(&format!("echoed seq {seq}"));
            } else {
                say(&format!("lost seq {seq}"));
            }
        }
        say(&format!(
            "esp: sent {}, echoed {}, foreign {}, server spi {:#010x}",
            report.sent, report.echoed, report.foreign, report.server_spi
        ));
        Ok(report)
    }
}

/// Reads the summary line an ESP client printed.
pub fn parse_esp_report(text: &str) -> Option<EspReport> {
    let line = text.lines().rev().find(|l| l.starts_with("esp: sent "))?;
    let mut nums = line.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty());
    let mut next_after = |word: &str| -> Option<String> {
        nums.by_ref().find(|w| *w == word)?;
        nums.next().map(str::to_string)
    };
    let sent = next_after("sent")?.parse().ok()?;
    let echoed = next_after("echoed")?.parse().ok()?;
    let foreign = next_after("foreign")?.parse().ok()?;
    let spi = next_after("spi")?;
    let server_spi = u32::from_str_radix(spi.trim_start_matches("0x"), 16).ok()?;
    Some(EspReport { server_spi, sent, echoed, foreign })
}

/// Sends `rounds` of spoofed VPN packets at `target` (a NAT's public
/// address): enhanced GRE for Call IDs, raw ESP and ESP-in-UDP for SPIs,
/// L2TP data and control for Tunnel IDs, IKE on 500. Returns how many
/// packets left.
pub fn hostile(target: Ipv4Addr, rounds: u16) -> io::Result<u64> {
    let gre = RawSocket::open(47)?;
    let esp = RawSocket::open(50)?;
    let udp = UdpSocket::bind(("0.0.0.0", 0))?;
    let mut sent = 0u64;
    for i in 0..rounds {
        // Call IDs, SPIs and Tunnel IDs a tunnel behind the NAT might use:
        // small numbers, the lab's constant-entropy value, and a spread.
        let id = match i % 4 {
            0 => i / 4,
            1 => 0x5a5a,
            2 => 0x8000 | i,
            _ => i.wrapping_mul(4099),
        };
        let mut g = vec![0x30, 0x01, 0x88, 0x0b, 0x00, 0x04];
        g.extend_from_slice(&id.to_be_bytes());
        g.extend_from_slice(&u32::from(i).to_be_bytes());
        g.extend_from_slice(&[0xff, 0x03, 0xc0, 0x21]);
        gre.send(target, &g)?;
        esp.send(target, &esp_packet(u32::from(id) | 0x0100_0000, u32::from(i) + 1, b"spoofed"))?;
        esp.send(target, &esp_packet(u32::from(id), u32::from(i) + 1, b"spoofed"))?;
        let to = |port| SocketAddr::from((target, port));
        udp.send_to(&l2tp::emit_data(id, 1, true, b"\xff\x03\x00\x21spoofed"), to(l2tp::PORT))?;
        udp.send_to(&l2tp::emit_control(id, 0, l2tp::HELLO, &[]), to(l2tp::PORT))?;
        udp.send_to(&ike::emit(u64::from(id) << 16 | 1, 0, b"spoofed"), to(ike::PORT))?;
        let nat_t = esp_packet(u32::from(id) | 0x0200_0000, 1, b"spoofed");
        udp.send_to(&nat_t, to(ike::NAT_T_PORT))?;
        sent += 7;
    }
    say(&format!("hostile: sent {sent} packets to {target}"));
    Ok(sent)
}

/// An L2TP LNS that answers each SCCRQ from a new UDP port: it binds 1701,
/// and for each tunnel opens a socket on `first_port + n`, from which it
/// sends the SCCRP (with its own Assigned Tunnel ID) and echoes every later
/// message of that tunnel (data comes back as data to the client's Tunnel
/// and Session IDs). With `first_port` 1701 it answers from its main
/// socket; with `to_port`, it sends every answer to that port of the
/// client's address rather than to the port the SCCRQ came from (as some
/// LNSs do). Runs until killed; prints `listening` when bound.
pub fn l2tp_lns_new_port(first_port: u16, to_port: Option<u16>) -> io::Result<()> {
    let main = UdpSocket::bind(("0.0.0.0", l2tp::PORT))?;
    main.set_nonblocking(true)?;
    say(&format!("listening udp/{} (answers from {first_port} on)", l2tp::PORT));
    // Our tunnel ID -> (socket, client address, client's tunnel ID).
    let mut tunnels: Vec<(UdpSocket, SocketAddr, u16)> = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(main.as_raw_fd())
            .chain(tunnels.iter().map(|t| t.0.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: fds outlives the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if fds[0].revents != 0
            && let Ok((n, from)) = main.recv_from(&mut buf)
        {
            let Ok(m) = l2tp::Message::new_checked(&buf[..n]) else { continue };
            if m.is_control() && m.message_type() == Some(l2tp::SCCRQ) {
                let client_tunnel = m.avps().flatten().find(|a| a.kind == l2tp::AVP_ASSIGNED_TUNNEL_ID).and_then(|a| {
                    let at = a.value_at;
                    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
                });
                let Some(client_tunnel) = client_tunnel else { continue };
                let ours = 0x4000 + tunnels.len() as u16;
                let sock = if first_port == l2tp::PORT {
                    main.try_clone()?
                } else {
                    UdpSocket::bind(("0.0.0.0", first_port + tunnels.len() as u16))?
                };
                let from = match to_port {
                    Some(p) => SocketAddr::new(from.ip(), p),
                    None => from,
                };
                sock.set_nonblocking(true)?;
                let port = sock.local_addr()?.port();
                let sccrp = l2tp::emit_control(client_tunnel, 0, l2tp::SCCRP, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, ours)]);
                sock.send_to(&sccrp, from)?;
                say(&format!("sccrq from {from} tunnel {client_tunnel}: answered from port {port} as tunnel {ours}"));
                tunnels.push((sock, from, client_tunnel));
            }
        }
        for (i, fd) in fds.iter().enumerate().skip(1) {
            if fd.revents == 0 || first_port == l2tp::PORT {
                continue;
            }
            let (sock, client, client_tunnel) = &tunnels[i - 1];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let Ok(m) = l2tp::Message::new_checked(&buf[..n]) else { continue };
                if !m.is_control() {
                    let payload = buf[m.header_len()..m.len().min(n)].to_vec();
                    let reply = l2tp::emit_data(*client_tunnel, m.session_id(), true, &payload);
                    sock.send_to(&reply, from)?;
                    say(&format!("data from {from} (tunnel of {client}) echoed, {} bytes", payload.len()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_summary_reads_back() {
        let text = "ike: server spi 0x50000001\nsent seq 1\nlost seq 1\nesp: sent 3, echoed 2, foreign 4, server spi 0x50000002\n";
        assert_eq!(parse_esp_report(text), Some(EspReport { server_spi: 0x5000_0002, sent: 3, echoed: 2, foreign: 4 }));
        assert_eq!(parse_esp_report("nothing"), None);
    }

    #[test]
    fn esp_fields_round_trip_and_short_packets_are_none() {
        let p = esp_packet(0xdead_beef, 7, b"hi");
        assert_eq!(esp_fields(&p), Some((0xdead_beef, 7, &b"hi"[..])));
        assert_eq!(esp_fields(&p[..7]), None);
    }
}
