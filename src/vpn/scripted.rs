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
//! - A hostile WAN host: spoofed GRE, ESP, L2TP, IKE, NAT-T, WireGuard and OpenVPN packets at
//!   the NAT's public address, with IDs a tunnel behind it might use.
//! - An L2TP LNS that answers each SCCRQ from a new UDP port, as some
//!   servers do, and keeps the tunnel up (no calls).
//!
//! Each runs as a `vpn-passthrough peer …` command in a lab host.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;

use crate::sys::{self, check};
use crate::wire::{esp, gre, ike, l2tp, openvpn, wireguard};

/// What the ESP client puts before its SPI in the IKE body.
const ASK: &[u8] = b"ESP-SPI ";

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
        if !sys::readable(self.fd.as_raw_fd(), Some(timeout))? {
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

/// How much longer than its delay an echo is held for clients that have
/// not sent yet ([`esp_server`]'s `hold_for`): less than the 3 s a client
/// waits past the delay.
pub const HOLD_CAP: Duration = Duration::from_secs(2);

/// The ESP server: answers IKE-like requests on UDP 500 and echoes ESP
/// back with the client's SPI after a delay: `delays[n - 1]` for the
/// client whose IKE initiator SPI's low byte is `n` (a rekey keeps it),
/// the last one past the list. No echo leaves before `hold_for` clients
/// have sent ESP, or [`HOLD_CAP`] past its delay: clients that dial one
/// after the other all send before the first echo, however slow the
/// machine. Runs until killed; prints `listening` once both sockets are
/// open.
pub fn esp_server(delays: &[Duration], hold_for: usize) -> io::Result<()> {
    let delay_of = |initiator: u64| {
        let n = usize::from(initiator as u8).max(1);
        delays.get(n - 1).or(delays.last()).copied().unwrap_or_default()
    };
    let udp = UdpSocket::bind(("0.0.0.0", ike::PORT))?;
    udp.set_nonblocking(true)?;
    let raw = RawSocket::open(50)?;
    say("listening udp/500 esp");
    // Server SPI -> client SPI and echo delay; IKE initiator SPI -> server SPI.
    let mut sessions: HashMap<u32, (u32, Duration)> = HashMap::new();
    let mut by_initiator: HashMap<u64, u32> = HashMap::new();
    let mut next_spi = 0x5000_0001u32;
    let mut echoes: VecDeque<(Instant, Ipv4Addr, Vec<u8>)> = VecDeque::new();
    // The sessions that have sent ESP, up to `hold_for`.
    let mut heard: HashSet<u32> = HashSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        let hold = if heard.len() >= hold_for { Duration::ZERO } else { HOLD_CAP };
        while echoes.front().is_some_and(|(due, _, _)| *due + hold <= now) {
            if let Some((_, to, p)) = echoes.pop_front() {
                raw.send(to, &p)?;
            }
        }
        let wait = echoes
            .front()
            .map_or(Duration::from_millis(200), |(due, _, _)| (*due + hold).saturating_duration_since(now));
        let ready = sys::poll(
            &[(udp.as_raw_fd(), sys::READABLE), (raw.fd.as_raw_fd(), sys::READABLE)],
            Some(wait.clamp(Duration::from_millis(1), Duration::from_secs(1))),
        )?;
        if ready[0]
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
            sessions.insert(ours, (spi, delay_of(initiator)));
            let reply = ike::emit(initiator, u64::from(ours) << 32 | 1, &ours.to_be_bytes());
            udp.send_to(&reply, from)?;
            say(&format!("ike from {from}: client spi {spi:#010x}, server spi {ours:#010x}"));
        }
        if ready[1]
            && let Some((src, p)) = raw.recv(Duration::ZERO)?
        {
            match esp::fields(&p) {
                Some((spi, seq, payload)) => match sessions.get(&spi) {
                    Some(&(client, delay)) => {
                        say(&format!("esp from {src} spi {spi:#010x} seq {seq}"));
                        if heard.len() < hold_for {
                            heard.insert(spi);
                        }
                        let due = Instant::now() + delay;
                        // Sent in the order they fall due.
                        let at = echoes.partition_point(|(d, _, _)| *d <= due);
                        echoes.insert(at, (due, src, esp::emit(client, seq, payload)));
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
    /// Time between two packets; zero sends each one once the previous
    /// one was echoed or given up on.
    pub interval: Duration,
    /// Rekey after this many packets (0: never): once their echoes are in
    /// or given up on, ask for new SPIs on UDP 500 ([`rekeyed`]) and send
    /// the rest with them.
    pub rekey_after: u32,
}

/// A rekeyed SA's SPIs: the IKE initiator SPI (its low byte, which names
/// the client to the server, kept) and our ESP SPI.
pub fn rekeyed(ike_spi: u64, spi: u32) -> (u64, u32) {
    (ike_spi ^ 0x100, spi ^ 0x0001_0000)
}

impl EspClient {
    /// Asks for SPIs over UDP 500 (from port 500, retried), then sends
    /// `count` ESP packets, `interval` apart (with a zero interval, one at
    /// a time, each after the previous one's echo or wait), and waits up
    /// to `wait` for each echo. Prints `sent seq N` as each leaves,
    /// `echoed seq N` or `lost seq N`, and the summary line once the last
    /// packet was echoed or given up on.
    pub fn run(&self) -> io::Result<EspReport> {
        let udp = UdpSocket::bind(("0.0.0.0", ike::PORT))?;
        udp.set_read_timeout(Some(Duration::from_millis(700)))?;
        let mut server_spi = self.ask(&udp, self.ike_spi, self.spi)?;
        let mut spi = self.spi;
        // Every SPI we were given, old and new: neither is foreign.
        let mut ours = vec![self.spi, server_spi];
        let raw = RawSocket::open(50)?;
        let mut report = EspReport { server_spi, sent: 0, echoed: 0, foreign: 0 };
        let payload_of = |spi: u32, seq: u32| format!("esp {spi:#010x} seq {seq}").into_bytes();
        // Sequence numbers sent and not yet echoed -> when to give up.
        let mut waiting: BTreeMap<u32, Instant> = BTreeMap::new();
        let start = Instant::now();
        let mut next = 1u32;
        loop {
            let now = Instant::now();
            let expired: Vec<u32> = waiting.iter().filter(|(_, until)| **until <= now).map(|(s, _)| *s).collect();
            for seq in expired {
                waiting.remove(&seq);
                say(&format!("lost seq {seq}"));
            }
            // The rekey is due before the packet after `rekey_after`, once
            // every echo before it is in or given up on.
            let rekey_due = self.rekey_after > 0 && next.checked_sub(1) == Some(self.rekey_after) && spi == self.spi;
            if rekey_due && waiting.is_empty() {
                let (ike_spi, new) = rekeyed(self.ike_spi, self.spi);
                server_spi = match self.ask(&udp, ike_spi, new) {
                    Ok(s) => s,
                    Err(e) => {
                        // The packets it could not send count as lost.
                        say(&format!(
                            "rekey failed: {e}; the {} packets after it count as lost",
                            self.count - report.sent
                        ));
                        report.sent = self.count;
                        break;
                    }
                };
                spi = new;
                ours.extend([new, server_spi]);
                report.server_spi = server_spi;
                say(&format!("rekeyed: spi {spi:#010x}"));
            }
            let due = start + self.interval.saturating_mul(next.saturating_sub(1));
            let rekey_first = rekey_due && spi == self.spi;
            let sending = next <= self.count && !rekey_first;
            if sending && if self.interval.is_zero() { waiting.is_empty() } else { now >= due } {
                raw.send(self.server, &esp::emit(server_spi, next, &payload_of(spi, next)))?;
                report.sent += 1;
                waiting.insert(next, Instant::now() + self.wait);
                say(&format!("sent seq {next}"));
                next += 1;
                continue;
            }
            if !sending && !rekey_first && waiting.is_empty() {
                break;
            }
            // Until the next packet is due or the oldest wait ends.
            let mut until = waiting.values().min().copied().unwrap_or(due);
            if sending && !self.interval.is_zero() {
                until = until.min(due);
            }
            let Some((src, p)) = raw.recv(until.saturating_duration_since(now))? else { continue };
            match esp::fields(&p) {
                Some((to, s, pl)) if to == spi && waiting.contains_key(&s) && pl == payload_of(spi, s).as_slice() => {
                    waiting.remove(&s);
                    report.echoed += 1;
                    say(&format!("echoed seq {s}"));
                }
                Some((spi, s, _)) if !ours.contains(&spi) => {
                    report.foreign += 1;
                    say(&format!("foreign esp from {src} spi {spi:#010x} seq {s}"));
                }
                _ => {}
            }
        }
        say(&format!(
            "esp: sent {}, echoed {}, foreign {}, server spi {:#010x}",
            report.sent, report.echoed, report.foreign, report.server_spi
        ));
        Ok(report)
    }

    /// Asks the server for its SPI over UDP 500 (initiator SPI `ike_spi`,
    /// ours `spi`), 5 tries 700 ms apart.
    fn ask(&self, udp: &UdpSocket, ike_spi: u64, spi: u32) -> io::Result<u32> {
        let mut body = ASK.to_vec();
        body.extend_from_slice(&spi.to_be_bytes());
        let ask = ike::emit(ike_spi, 0, &body);
        let mut buf = vec![0u8; 65536];
        for _ in 0..5 {
            udp.send_to(&ask, SocketAddrV4::new(self.server, ike::PORT))?;
            if let Ok((n, _)) = udp.recv_from(&mut buf)
                && let Ok(m) = ike::Message::new_checked(&buf[..n])
                && m.initiator_spi() == ike_spi
                && let Some(b) = buf.get(ike::HEADER_LEN..ike::HEADER_LEN + 4)
            {
                let server_spi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                say(&format!("ike: server spi {server_spi:#010x}"));
                return Ok(server_spi);
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("no IKE answer from {}:500 after 5 tries", self.server)))
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
/// L2TP data and control for Tunnel IDs, IKE on 500, WireGuard handshakes
/// and data for receiver indices, OpenVPN hard resets; and to each of
/// `ports` (the public ports of the NAT's clients' UDP flows), WireGuard
/// data, an OpenVPN hard reset and ESP-in-UDP. Returns how many packets
/// left.
pub fn hostile(target: Ipv4Addr, rounds: u16, ports: &[u16]) -> io::Result<u64> {
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
        let g = gre::emit_pptp(id, Some(u32::from(i)), None, &[0xff, 0x03, 0xc0, 0x21]);
        gre.send(target, &g)?;
        esp.send(target, &esp::emit(u32::from(id) | 0x0100_0000, u32::from(i) + 1, b"spoofed"))?;
        esp.send(target, &esp::emit(u32::from(id), u32::from(i) + 1, b"spoofed"))?;
        let to = |port| SocketAddr::from((target, port));
        udp.send_to(&l2tp::emit_data(id, 1, true, b"\xff\x03\x00\x21spoofed"), to(l2tp::PORT))?;
        udp.send_to(&l2tp::emit_control(id, 0, l2tp::HELLO, &[]), to(l2tp::PORT))?;
        udp.send_to(&ike::emit(u64::from(id) << 16 | 1, 0, b"spoofed"), to(ike::PORT))?;
        let nat_t = esp::emit(u32::from(id) | 0x0200_0000, 1, b"spoofed");
        udp.send_to(&nat_t, to(ike::NAT_T_PORT))?;
        udp.send_to(&wireguard::emit_initiation(u32::from(id)), to(wireguard::PORT))?;
        udp.send_to(&wireguard::emit_data(u32::from(id), u64::from(i), b"spoofed"), to(wireguard::PORT))?;
        udp.send_to(&openvpn::emit_hard_reset(u64::from(id), u32::from(i)), to(openvpn::PORT))?;
        sent += 10;
        for &port in ports {
            udp.send_to(&wireguard::emit_data(u32::from(id), u64::from(i), b"spoofed"), to(port))?;
            udp.send_to(&openvpn::emit_hard_reset(u64::from(id), u32::from(i)), to(port))?;
            udp.send_to(&esp::emit(u32::from(id) | 0x0300_0000, u32::from(i) + 1, b"spoofed"), to(port))?;
            sent += 3;
        }
    }
    say(&format!("hostile: sent {sent} packets to {target}"));
    Ok(sent)
}

/// How many packets [`hostile`] said it sent, from its output.
pub fn parse_hostile_report(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("hostile: sent ")?.split(' ').next()?.parse().ok())
}

/// AVP types of an SCCRP that `l2tp` does not name (RFC 2661 §4.4).
const AVP_PROTOCOL_VERSION: u16 = 2;
const AVP_FRAMING_CAPABILITIES: u16 = 3;
const AVP_BEARER_CAPABILITIES: u16 = 4;
const AVP_FIRMWARE_REVISION: u16 = 6;
const AVP_HOST_NAME: u16 = 7;
const AVP_VENDOR_NAME: u16 = 8;
const AVP_RECEIVE_WINDOW_SIZE: u16 = 10;
/// Where Ns and Nr are in a control message (the L and S bits are set, the
/// O bit is not: `l2tp::Message` refuses other control messages).
const NS_AT: usize = 8;
const NR_AT: usize = 10;
/// The control header alone: a ZLB acknowledgment.
const CONTROL_HEADER_LEN: usize = 12;
/// The scripted LNS's Host Name and Vendor Name.
const LNS_HOST_NAME: &[u8] = b"lns.vpn-passthrough";
const LNS_VENDOR: &[u8] = b"vpn-passthrough scripted LNS";
/// The first Tunnel ID the scripted LNS assigns.
const FIRST_LNS_TUNNEL: u16 = 0x4000;

/// Appends an IETF AVP (not hidden) to a control message.
fn push_avp(m: &mut Vec<u8>, mandatory: bool, kind: u16, value: &[u8]) {
    let len = 6 + value.len() as u16;
    m.extend_from_slice(&(if mandatory { 0x8000 | len } else { len }).to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(value);
}

/// Sets a control message's Ns, Nr and length field.
fn seal(mut m: Vec<u8>, ns: u16, nr: u16) -> Vec<u8> {
    m[NS_AT..NS_AT + 2].copy_from_slice(&ns.to_be_bytes());
    m[NR_AT..NR_AT + 2].copy_from_slice(&nr.to_be_bytes());
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

/// A complete SCCRP (RFC 2661 §6.2) to `client_tunnel`: Message Type,
/// Protocol Version 1.0, Framing and Bearer Capabilities, Firmware
/// Revision, Host Name, Vendor Name, Assigned Tunnel ID `ours`, Receive
/// Window Size; Ns 0 (our first message), Nr `nr`.
pub fn sccrp(client_tunnel: u16, ours: u16, nr: u16) -> Vec<u8> {
    let mut m = l2tp::emit_control(client_tunnel, 0, l2tp::SCCRP, &[(AVP_PROTOCOL_VERSION, 0x0100)]);
    push_avp(&mut m, true, AVP_FRAMING_CAPABILITIES, &3u32.to_be_bytes()); // sync and async
    push_avp(&mut m, true, AVP_BEARER_CAPABILITIES, &3u32.to_be_bytes()); // digital and analog
    push_avp(&mut m, false, AVP_FIRMWARE_REVISION, &0x0100u16.to_be_bytes());
    push_avp(&mut m, true, AVP_HOST_NAME, LNS_HOST_NAME);
    push_avp(&mut m, false, AVP_VENDOR_NAME, LNS_VENDOR);
    push_avp(&mut m, true, l2tp::AVP_ASSIGNED_TUNNEL_ID, &ours.to_be_bytes());
    push_avp(&mut m, true, AVP_RECEIVE_WINDOW_SIZE, &4u16.to_be_bytes());
    seal(m, 0, nr)
}

/// A ZLB acknowledgment to `tunnel`: a control header with no AVP.
pub fn zlb(tunnel: u16, ns: u16, nr: u16) -> Vec<u8> {
    let mut m = l2tp::emit_control(tunnel, 0, 0, &[]);
    m.truncate(CONTROL_HEADER_LEN);
    seal(m, ns, nr)
}

/// A control message's Ns and Nr.
fn ns_nr(b: &[u8]) -> (u16, u16) {
    (u16::from_be_bytes([b[NS_AT], b[NS_AT + 1]]), u16::from_be_bytes([b[NR_AT], b[NR_AT + 1]]))
}

fn message_name(t: Option<u16>) -> String {
    match t {
        Some(l2tp::SCCRQ) => "SCCRQ".into(),
        Some(l2tp::SCCRP) => "SCCRP".into(),
        Some(l2tp::SCCCN) => "SCCCN".into(),
        Some(l2tp::STOP_CCN) => "StopCCN".into(),
        Some(l2tp::HELLO) => "Hello".into(),
        Some(l2tp::ICRQ) => "ICRQ".into(),
        Some(l2tp::ICRP) => "ICRP".into(),
        Some(l2tp::ICCN) => "ICCN".into(),
        Some(l2tp::CDN) => "CDN".into(),
        Some(t) => format!("message type {t}"),
        None => "ZLB".into(),
    }
}

/// One tunnel of the scripted LNS.
#[derive(Debug, Clone)]
struct LnsTunnel {
    /// Our Tunnel ID.
    ours: u16,
    /// Where its SCCRQ came from.
    client: SocketAddr,
    /// The client's Tunnel ID.
    client_tunnel: u16,
    /// The UDP port we answer from.
    port: u16,
    /// The SCCRP, sent again for a retransmitted SCCRQ.
    sccrp: Vec<u8>,
    /// The Ns we expect next from the client.
    nr: u16,
    /// Whether the client sent SCCCN, and StopCCN.
    connected: bool,
    stopped: bool,
}

/// A datagram for the scripted LNS to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LnsSend {
    /// Our UDP port to send from.
    pub from_port: u16,
    /// Where to.
    pub to: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// The scripted LNS's tunnels, without sockets: each datagram in gives at
/// most one datagram out and a log line.
#[derive(Debug, Clone)]
pub struct ScriptedLns {
    first_port: u16,
    to_port: Option<u16>,
    tunnels: Vec<LnsTunnel>,
}

impl ScriptedLns {
    /// An LNS that answers tunnel n (from 0) from port `first_port + n`
    /// (from 1701 for all when `first_port` is 1701), to `to_port` of the
    /// client's address when given.
    pub fn new(first_port: u16, to_port: Option<u16>) -> ScriptedLns {
        ScriptedLns { first_port, to_port, tunnels: Vec::new() }
    }

    fn dest(&self, from: SocketAddr) -> SocketAddr {
        self.to_port.map_or(from, |p| SocketAddr::new(from.ip(), p))
    }

    /// Handles a datagram from `from`: an SCCRQ opens a tunnel and is
    /// answered with an SCCRP (a retransmitted one, same peer and Tunnel
    /// ID, gets the same SCCRP again); any later control message of a
    /// tunnel is acknowledged with a ZLB; data is echoed to the client's
    /// Tunnel ID. Nothing ever closes a tunnel from our side.
    pub fn on_datagram(&mut self, from: SocketAddr, b: &[u8]) -> (Option<LnsSend>, String) {
        let Ok(m) = l2tp::Message::new_checked(b) else {
            return (None, format!("from {from}: not L2TPv2, dropped"));
        };
        let to = self.dest(from);
        let kind = m.message_type();
        if !m.is_control() {
            let Some(t) = self.tunnels.iter().find(|t| t.ours == m.tunnel_id()) else {
                return (None, format!("data from {from} to unknown tunnel {}, dropped", m.tunnel_id()));
            };
            let payload = &b[m.header_len().min(b.len())..m.len().min(b.len())];
            let bytes = l2tp::emit_data(t.client_tunnel, m.session_id(), true, payload);
            let log = format!("data from {from} (tunnel {}) echoed, {} bytes", t.ours, payload.len());
            return (Some(LnsSend { from_port: t.port, to, bytes }), log);
        }
        let (ns, _) = ns_nr(b);
        if kind == Some(l2tp::SCCRQ) {
            let client_tunnel = m
                .avps()
                .map_while(Result::ok)
                .find(|a| a.kind == l2tp::AVP_ASSIGNED_TUNNEL_ID && a.vendor == 0 && a.value_len == 2)
                .map(|a| u16::from_be_bytes([b[a.value_at], b[a.value_at + 1]]));
            let Some(client_tunnel) = client_tunnel else {
                return (None, format!("SCCRQ from {from} without an Assigned Tunnel ID, dropped"));
            };
            if let Some(t) =
                self.tunnels.iter().find(|t| t.client == from && t.client_tunnel == client_tunnel && !t.stopped)
            {
                let log = format!(
                    "SCCRQ again from {from} (tunnel {client_tunnel}): same SCCRP again from port {} to port {}",
                    t.port,
                    to.port()
                );
                return (Some(LnsSend { from_port: t.port, to, bytes: t.sccrp.clone() }), log);
            }
            let n = self.tunnels.len() as u16;
            let ours = FIRST_LNS_TUNNEL + n;
            let port = if self.first_port == l2tp::PORT { l2tp::PORT } else { self.first_port.wrapping_add(n) };
            let nr = ns.wrapping_add(1);
            let bytes = sccrp(client_tunnel, ours, nr);
            self.tunnels.push(LnsTunnel {
                ours,
                client: from,
                client_tunnel,
                port,
                sccrp: bytes.clone(),
                nr,
                connected: false,
                stopped: false,
            });
            let log = format!(
                "answered SCCRQ from {from} (tunnel {client_tunnel}) from port {port} to port {}, our tunnel {ours}",
                to.port()
            );
            return (Some(LnsSend { from_port: port, to, bytes }), log);
        }
        let name = message_name(kind);
        let Some(t) = self.tunnels.iter_mut().find(|t| t.ours == m.tunnel_id()) else {
            return (None, format!("{name} from {from} to unknown tunnel {}, dropped", m.tunnel_id()));
        };
        if kind.is_none() {
            // A ZLB acknowledges our SCCRP; it is not acknowledged.
            return (None, format!("ZLB from {from} (tunnel {})", t.ours));
        }
        let note = match ns.wrapping_sub(t.nr) as i16 {
            0 => {
                t.nr = t.nr.wrapping_add(1);
                match kind {
                    Some(l2tp::SCCCN) => {
                        t.connected = true;
                        "tunnel established"
                    }
                    Some(l2tp::STOP_CCN) => {
                        t.stopped = true;
                        "the client closed the tunnel"
                    }
                    _ => "",
                }
            }
            d if d < 0 => "a duplicate",
            // Ahead of a message we missed: acknowledge what we have, the
            // client sends the missing one again.
            _ => "out of order, not taken",
        };
        // Our Ns stays 1: the SCCRP was our only message that counts.
        let bytes = zlb(t.client_tunnel, 1, t.nr);
        let mut log =
            format!("{name} from {from} (tunnel {}, Ns {ns}): ZLB with Nr {} to port {}", t.ours, t.nr, to.port());
        if !note.is_empty() {
            log = format!("{log}; {note}");
        }
        (Some(LnsSend { from_port: t.port, to, bytes }), log)
    }
}

/// An L2TP LNS that answers each SCCRQ from a new UDP port: it binds 1701,
/// and for each tunnel opens a socket on `first_port + n`, from which it
/// sends a complete SCCRP (with its own Assigned Tunnel ID), acknowledges
/// every later control message of that tunnel with a ZLB (it never sends
/// StopCCN, so the tunnel stays up), and echoes data back as data to the
/// client's Tunnel and Session IDs. With `first_port` 1701 it answers from
/// its main socket; with `to_port`, it sends everything to that port of
/// the client's address rather than to the port the message came from (as
/// some LNSs do). Runs until killed; prints `listening` when bound and one
/// `answered` line per tunnel (not per retransmitted SCCRQ).
pub fn l2tp_lns_new_port(first_port: u16, to_port: Option<u16>) -> io::Result<()> {
    let main = UdpSocket::bind(("0.0.0.0", l2tp::PORT))?;
    main.set_nonblocking(true)?;
    say(&format!("listening udp/{} (answers from {first_port} on)", l2tp::PORT));
    let mut lns = ScriptedLns::new(first_port, to_port);
    // Our UDP ports and their sockets; the main one first.
    let mut socks: Vec<(u16, UdpSocket)> = vec![(l2tp::PORT, main)];
    let mut buf = vec![0u8; 65536];
    loop {
        let fds: Vec<_> = socks.iter().map(|(_, s)| (s.as_raw_fd(), sys::READABLE)).collect();
        let ready = sys::poll(&fds, Some(Duration::from_secs(1)))?;
        for (i, ready) in ready.into_iter().enumerate() {
            if !ready {
                continue;
            }
            while let Ok((n, from)) = socks[i].1.recv_from(&mut buf) {
                let (send, log) = lns.on_datagram(from, &buf[..n]);
                let Some(send) = send else {
                    say(&log);
                    continue;
                };
                let k = match socks.iter().position(|(p, _)| *p == send.from_port) {
                    Some(k) => k,
                    None => {
                        let sock = UdpSocket::bind(("0.0.0.0", send.from_port))?;
                        sock.set_nonblocking(true)?;
                        socks.push((send.from_port, sock));
                        socks.len() - 1
                    }
                };
                match socks[k].1.send_to(&send.bytes, send.to) {
                    Ok(_) => say(&log),
                    // Not the log line: a failed answer must not count as `answered`.
                    Err(e) => say(&format!("could not send to {} from port {}: {e}", send.to, send.from_port)),
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

    /// A control message from a client: `l2tp::emit_control` with Ns/Nr.
    fn from_client(tunnel: u16, kind: u16, avps: &[(u16, u16)], ns: u16, nr: u16) -> Vec<u8> {
        seal(l2tp::emit_control(tunnel, 0, kind, avps), ns, nr)
    }

    fn sccrq(client_tunnel: u16) -> Vec<u8> {
        from_client(0, l2tp::SCCRQ, &[(l2tp::AVP_ASSIGNED_TUNNEL_ID, client_tunnel)], 0, 0)
    }

    #[test]
    fn the_sccrp_is_complete() {
        let b = sccrp(5, 0x4000, 1);
        let m = l2tp::Message::new_checked(&b[..]).expect("valid");
        assert!(m.is_control());
        assert_eq!((m.message_type(), m.tunnel_id(), m.session_id(), m.len()), (Some(l2tp::SCCRP), 5, 0, b.len()));
        assert_eq!(ns_nr(&b), (0, 1));
        let avps: Vec<(u16, bool, &[u8])> = m
            .avps()
            .map(|a| a.expect("well-formed AVP"))
            .map(|a| (a.kind, b[a.value_at - 6] & 0x80 != 0, &b[a.value_at..a.value_at + a.value_len]))
            .collect();
        let want: Vec<(u16, bool, &[u8])> = vec![
            (l2tp::AVP_MESSAGE_TYPE, true, &[0, 2]),
            (AVP_PROTOCOL_VERSION, true, &[1, 0]),
            (AVP_FRAMING_CAPABILITIES, true, &[0, 0, 0, 3]),
            (AVP_BEARER_CAPABILITIES, true, &[0, 0, 0, 3]),
            (AVP_FIRMWARE_REVISION, false, &[1, 0]),
            (AVP_HOST_NAME, true, LNS_HOST_NAME),
            (AVP_VENDOR_NAME, false, LNS_VENDOR),
            (l2tp::AVP_ASSIGNED_TUNNEL_ID, true, &[0x40, 0]),
            (AVP_RECEIVE_WINDOW_SIZE, true, &[0, 4]),
        ];
        assert_eq!(avps, want);
        assert!(m.avps().all(|a| a.is_ok_and(|a| a.vendor == 0 && !a.hidden)));
    }

    #[test]
    fn a_zlb_is_a_bare_control_header() {
        let b = zlb(7, 1, 3);
        let m = l2tp::Message::new_checked(&b[..]).expect("valid");
        assert!(m.is_control() && m.is_empty());
        assert_eq!((m.message_type(), m.tunnel_id(), m.len(), ns_nr(&b)), (None, 7, 12, (1, 3)));
    }

    #[test]
    fn the_lns_answers_once_per_tunnel_and_acks_what_follows() {
        let a: SocketAddr = "198.51.100.1:1701".parse().expect("addr");
        let mut lns = ScriptedLns::new(40000, None);
        let (send, log) = lns.on_datagram(a, &sccrq(5));
        assert_eq!(send, Some(LnsSend { from_port: 40000, to: a, bytes: sccrp(5, 0x4000, 1) }));
        assert_eq!(
            log,
            "answered SCCRQ from 198.51.100.1:1701 (tunnel 5) from port 40000 to port 1701, our tunnel 16384"
        );
        // Retransmitted: the same SCCRP from the same port, not a new tunnel.
        let (again, log) = lns.on_datagram(a, &sccrq(5));
        assert_eq!(again, send);
        assert!(!log.contains("answered"), "{log}");
        // Another tunnel from the same address and port (a NAT that keeps 1701).
        let (second, log) = lns.on_datagram(a, &sccrq(6));
        assert_eq!(second.map(|s| (s.from_port, s.bytes)), Some((40001, sccrp(6, 0x4001, 1))));
        assert!(log.starts_with("answered SCCRQ"), "{log}");
        // SCCCN, then Hello: each acked with a ZLB to the client's tunnel.
        let ack = |lns: &mut ScriptedLns, b: &[u8]| lns.on_datagram(a, b).0.map(|s| (s.from_port, s.bytes));
        assert_eq!(ack(&mut lns, &from_client(0x4000, l2tp::SCCCN, &[], 1, 1)), Some((40000, zlb(5, 1, 2))));
        assert_eq!(ack(&mut lns, &from_client(0x4000, l2tp::HELLO, &[], 2, 1)), Some((40000, zlb(5, 1, 3))));
        // A duplicate and one from beyond a gap: Nr stays.
        assert_eq!(ack(&mut lns, &from_client(0x4000, l2tp::HELLO, &[], 2, 1)), Some((40000, zlb(5, 1, 3))));
        assert_eq!(ack(&mut lns, &from_client(0x4000, l2tp::ICRQ, &[], 9, 1)), Some((40000, zlb(5, 1, 3))));
        assert_eq!(ack(&mut lns, &from_client(0x4000, l2tp::ICRQ, &[], 3, 1)), Some((40000, zlb(5, 1, 4))));
        // The other tunnel keeps its own numbers; a ZLB is not acked.
        assert_eq!(ack(&mut lns, &from_client(0x4001, l2tp::SCCCN, &[], 1, 1)), Some((40001, zlb(6, 1, 2))));
        assert_eq!(ack(&mut lns, &zlb(0x4001, 2, 1)), None);
        assert_eq!(ack(&mut lns, &from_client(0x7777, l2tp::HELLO, &[], 2, 1)), None);
        // Data comes back to the client's Tunnel ID.
        let data = l2tp::emit_data(0x4001, 3, true, b"ppp");
        assert_eq!(ack(&mut lns, &data), Some((40001, l2tp::emit_data(6, 3, true, b"ppp"))));
        assert!(lns.tunnels.iter().all(|t| t.connected && !t.stopped));
    }

    #[test]
    fn with_to_port_the_lns_sends_there_and_says_so() {
        let a: SocketAddr = "198.51.100.1:1024".parse().expect("addr");
        let to: SocketAddr = "198.51.100.1:1701".parse().expect("addr");
        let mut lns = ScriptedLns::new(1701, Some(1701));
        let (send, log) = lns.on_datagram(a, &sccrq(9));
        assert_eq!(send, Some(LnsSend { from_port: 1701, to, bytes: sccrp(9, 0x4000, 1) }));
        assert!(log.contains("from 198.51.100.1:1024 (tunnel 9) from port 1701 to port 1701"), "{log}");
        let (second, _) = lns.on_datagram(a, &sccrq(10));
        assert_eq!(second.map(|s| s.from_port), Some(1701));
        let (ack, log) = lns.on_datagram(a, &from_client(0x4000, l2tp::SCCCN, &[], 1, 1));
        assert_eq!(ack.map(|s| (s.to, s.bytes)), Some((to, zlb(9, 1, 2))));
        assert!(log.contains("tunnel established"), "{log}");
        let (_, log) = lns.on_datagram(a, &from_client(0x4000, l2tp::STOP_CCN, &[], 2, 1));
        assert!(log.contains("closed"), "{log}");
        // A new SCCRQ with the closed tunnel's ID is a new tunnel.
        let (_, log) = lns.on_datagram(a, &sccrq(9));
        assert!(log.contains("answered") && log.contains("our tunnel 16386"), "{log}");
    }
}
