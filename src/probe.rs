//! Small traffic tools run inside lab hosts: a reflector that tells each
//! sender the address and port it saw (as STUN does, without the protocol),
//! the asking side, a UDP round-trip timer, and idle probes that learn how
//! long a NAT keeps a flow it has not seen traffic on. They are how a test
//! learns what a NAT did to a flow, end to end.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::vpn::scripted::RawSocket;
use crate::wire::{esp, icmp, ipv4, tcp};

/// What the reflector answers: `seen ADDR:PORT`.
pub fn answer(peer: SocketAddr) -> String {
    format!("seen {peer}\n")
}

/// Reads a reflector's answer (its first line; padding may follow).
pub fn parse_answer(text: &str) -> Option<SocketAddr> {
    text.lines().next()?.trim().strip_prefix("seen ")?.parse().ok()
}

/// The longest a `later` request may have the reflector wait: a day.
pub const MAX_LATER: Duration = Duration::from_secs(24 * 3600);
/// The most `later` answers a reflector keeps waiting at once; past it a
/// request is ignored. Idle probes ask at most twice per flow, three
/// kinds of flow at once of at most 256 waits each.
const MAX_PENDING: usize = 2048;
/// The largest answer a reflector pads to.
const MAX_BACK: usize = 65000;

/// What a sender asks the reflector, read once from the first line of a
/// datagram or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// `rtt …`: echo the datagram whole.
    Rtt,
    /// `later MS`: answer `back` after MS milliseconds of silence (an idle
    /// probe: does the NAT still let the answer in?).
    Later(Duration),
    /// Anything else: answer `seen ADDR:PORT`, padded to `back=N` bytes if
    /// the line asks for it.
    Seen { back: usize },
}

impl Request {
    fn parse(data: &[u8]) -> Request {
        if data.starts_with(b"rtt ") {
            return Request::Rtt;
        }
        let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        if words.next() == Some("later") {
            if let Some(ms) = words.next().and_then(|w| w.parse::<u64>().ok()) {
                return Request::Later(Duration::from_millis(ms).min(MAX_LATER));
            }
        }
        let back = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("back="))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_BACK);
        Request::Seen { back }
    }
}

/// `text`, padded with `x` after a newline to `len` bytes.
fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    if v.len() < len {
        v.resize(len, b'x');
    }
    v
}

/// Serves UDP on `udp` and TCP on `tcp` (either may be absent) until the
/// process is killed, answering each datagram or connection with what it
/// saw. Prints `listening` when both sockets are bound. With `punch`, the
/// UDP socket first asks the first of those reflectors what it sees, as a
/// peer-to-peer application opens a NAT mapping for its listening port,
/// and prints `punched seen ADDR:PORT`; it sends one datagram to each of
/// the others, answered or not, so that a filtering NAT lets them in. A
/// punched listener prints `from ADDR:PORT` for every datagram it gets.
/// From a raw socket per protocol of `raw`, ICMP echo requests, plain GRE
/// and ESP packets that say `later MS` are answered after MS (the host's
/// own echo replies should be off: `icmp_echo_ignore_all`).
pub fn serve(udp: Option<u16>, tcp: Option<u16>, punch: &[SocketAddrV4], raw: &[RawProto]) -> io::Result<()> {
    let udp_sock = udp.map(|p| UdpSocket::bind(("0.0.0.0", p))).transpose()?;
    let tcp_sock = tcp.map(|p| TcpListener::bind(("0.0.0.0", p))).transpose()?;
    let raw_socks =
        raw.iter().map(|&r| RawSocket::open(r.protocol()).map(|s| (r, Arc::new(s)))).collect::<io::Result<Vec<_>>>()?;
    if let (Some(sock), Some((&target, others))) = (&udp_sock, punch.split_first()) {
        for other in others {
            sock.send_to(b"hello\n", other)?;
        }
        // Asked up to three times: one lost datagram is not a failed punch.
        // Only the target's answer counts.
        sock.set_read_timeout(Some(Duration::from_millis(700)))?;
        let mut buf = [0u8; 512];
        let mut seen = None;
        for _ in 0..3 {
            sock.send_to(b"who am i\n", target)?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == SocketAddr::V4(target) => {
                    seen = parse_answer(&String::from_utf8_lossy(&buf[..n]));
                    break;
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
        let seen = seen.ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {target}")))?;
        println!("punched seen {seen}");
        sock.set_read_timeout(None)?;
    }
    println!("listening udp/{} tcp/{}", fmt_port(udp), fmt_port(tcp));
    io::stdout().flush()?;
    let pending = Arc::new(AtomicUsize::new(0));
    // A listener (punched) says whom it hears from: who its NAT let in.
    let tell = !punch.is_empty();
    std::thread::scope(|s| {
        if let Some(sock) = &udp_sock {
            let pending = &pending;
            s.spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    let got = sock.recv_from(&mut buf);
                    if let (true, Ok((_, peer))) = (tell, &got) {
                        println!("from {peer}");
                        let _ = io::stdout().flush();
                    }
                    match got {
                        Ok((n, peer)) => match Request::parse(&buf[..n]) {
                            Request::Rtt => {
                                let _ = sock.send_to(&buf[..n], peer);
                            }
                            Request::Seen { back } => {
                                let _ = sock.send_to(&padded(&answer(peer), back), peer);
                            }
                            Request::Later(wait) => answer_later(sock, peer, wait, pending),
                        },
                        Err(e) => eprintln!("udp: {e}"),
                    }
                }
            });
        }
        for (kind, raw) in &raw_socks {
            let pending = &pending;
            s.spawn(move || serve_raw(*kind, raw, pending));
        }
        if let Some(listener) = &tcp_sock {
            let pending = &pending;
            s.spawn(move || {
                for stream in listener.incoming() {
                    match stream {
                        Ok(st) => {
                            let pending = Arc::clone(pending);
                            // No thread to spare: the connection is dropped.
                            let _ = std::thread::Builder::new().spawn(move || serve_tcp(st, &pending));
                        }
                        Err(e) => {
                            // Out of descriptors, say: wait rather than spin.
                            eprintln!("tcp: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            });
        }
    });
    Ok(())
}

/// A protocol without ports that the reflector answers from a raw socket,
/// and that idle probes ask over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawProto {
    /// ICMP echo requests, with their echo reply.
    Icmp,
    /// Plain GRE (version 0, no options), with the same packet back.
    Gre,
    /// ESP, answered with the same sequence number and payload under the
    /// server's SPI ([`esp_answer_spi`]).
    Esp,
}

impl RawProto {
    /// GRE and ESP carry tunnels: a flow is answered once before it idles
    /// (a tunnel's state has seen both ways), and, having no ports, every
    /// flow of the kind between two hosts may share one NAT mapping.
    fn carries_tunnels(self) -> bool {
        matches!(self, RawProto::Gre | RawProto::Esp)
    }

    fn protocol(self) -> u8 {
        match self {
            RawProto::Icmp => ipv4::PROTO_ICMP,
            RawProto::Gre => ipv4::PROTO_GRE,
            RawProto::Esp => ipv4::PROTO_ESP,
        }
    }

    /// The reflector's answer to `msg` (what follows the IP header), if it
    /// asks for one later, and after how long.
    fn answer(self, msg: &[u8]) -> Option<(Duration, Vec<u8>)> {
        match self {
            RawProto::Icmp => {
                let m = icmp::Message::new_checked(msg).ok()?;
                if m.msg_type() != icmp::ECHO_REQUEST {
                    return None;
                }
                let Request::Later(wait) = Request::parse(m.payload()) else { return None };
                let seq = u16::from_be_bytes([msg[6], msg[7]]);
                Some((wait, icmp::emit_echo(false, m.ident(), seq, m.payload())))
            }
            RawProto::Gre => {
                let payload = plain_gre_payload(msg)?;
                let Request::Later(wait) = Request::parse(payload) else { return None };
                Some((wait, msg.to_vec()))
            }
            RawProto::Esp => {
                let (spi, seq, payload) = esp::fields(msg)?;
                // An answer's SPI is never asked under: two reflectors, or
                // one that hears its own answers, do not answer forever.
                if spi & ANSWER_SPI_BIT != 0 {
                    return None;
                }
                let Request::Later(wait) = Request::parse(payload) else { return None };
                Some((wait, esp::emit(esp_answer_spi(spi), seq, payload)))
            }
        }
    }

    /// The two packets an idle probe sends to say `text`: an echo request
    /// of identifier `ident` twice, plain GRE twice, or ESP of
    /// [`probe_spi`] with the next two sequence numbers.
    fn requests(self, ident: u16, text: &[u8]) -> [Vec<u8>; 2] {
        match self {
            RawProto::Icmp => [icmp::emit_echo(true, ident, 1, text), icmp::emit_echo(true, ident, 1, text)],
            RawProto::Gre => [plain_gre(text), plain_gre(text)],
            RawProto::Esp => {
                let seq = next_esp_seq();
                [esp::emit(probe_spi(), seq, text), esp::emit(probe_spi(), seq.wrapping_add(1), text)]
            }
        }
    }

    /// Whether `msg` is the reflector's answer to [`RawProto::requests`]
    /// of `ident` and `text`.
    fn is_answer(self, msg: &[u8], ident: u16, text: &[u8]) -> bool {
        match self {
            RawProto::Icmp => {
                icmp::Message::new_checked(msg).is_ok_and(|m| m.msg_type() == icmp::ECHO_REPLY && m.ident() == ident)
            }
            RawProto::Gre => plain_gre_payload(msg) == Some(text),
            RawProto::Esp => {
                esp::fields(msg).is_some_and(|(spi, _, payload)| spi == esp_answer_spi(probe_spi()) && payload == text)
            }
        }
    }
}

/// The SPI a reflector answers ESP with: the asking SA's, top bit set
/// (each direction of an SA pair has an SPI of its own, and only the
/// receiver's is on the wire).
fn esp_answer_spi(spi: u32) -> u32 {
    spi | ANSWER_SPI_BIT
}

/// The bit that sets an answer's SPI apart from the asking one's.
const ANSWER_SPI_BIT: u32 = 0x8000_0000;

/// The EtherType idle probes put in plain GRE: local experimental (IEEE
/// 802), which no tunnel decapsulates.
const GRE_PROBE_TYPE: [u8; 2] = [0x88, 0xb5];

/// A plain GRE packet (version 0, no checksum, key or sequence number) of
/// the probes' EtherType around `payload`.
fn plain_gre(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, GRE_PROBE_TYPE[0], GRE_PROBE_TYPE[1]];
    v.extend_from_slice(payload);
    v
}

/// The payload of a plain GRE packet of the probes' EtherType.
fn plain_gre_payload(msg: &[u8]) -> Option<&[u8]> {
    (msg.len() >= 4 && msg[0] == 0 && msg[1] == 0 && msg[2..4] == GRE_PROBE_TYPE).then(|| &msg[4..])
}

/// Answers what asks `later MS` on `raw`, MS later (twice, as a UDP answer
/// is sent).
fn serve_raw(kind: RawProto, raw: &Arc<RawSocket>, pending: &Arc<AtomicUsize>) {
    loop {
        let (from, msg) = match raw.recv(Duration::from_secs(1)) {
            Ok(Some(got)) => got,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("{kind:?}: {e}");
                return;
            }
        };
        let Some((wait, reply)) = kind.answer(&msg) else { continue };
        let raw = Arc::clone(raw);
        later(pending, wait, move || {
            let _ = raw.send(from, &reply);
        });
    }
}

/// Runs `send` twice, `wait` from now, on a thread of its own: at most
/// [`MAX_PENDING`] answers wait at once, and one past them, or one no
/// thread can be made for, is not sent.
fn later(pending: &Arc<AtomicUsize>, wait: Duration, send: impl Fn() + Send + 'static) {
    if pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
        pending.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let (pending, undo) = (Arc::clone(pending), Arc::clone(pending));
    let spawned = std::thread::Builder::new().spawn(move || {
        std::thread::sleep(wait);
        send();
        send();
        pending.fetch_sub(1, Ordering::SeqCst);
    });
    if spawned.is_err() {
        undo.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends `back` to `peer` from `sock` after `wait` (see [`later`]).
fn answer_later(sock: &UdpSocket, peer: SocketAddr, wait: Duration, pending: &Arc<AtomicUsize>) {
    let Ok(sock) = sock.try_clone() else { return };
    later(pending, wait, move || {
        let _ = sock.send_to(b"back\n", peer);
    });
}

/// One TCP connection to the reflector: `sink N` reads N bytes and
/// answers `got N`; `source N` sends N bytes; `later MS` answers `back`
/// after MS milliseconds; anything else gets `seen`.
fn serve_tcp(mut st: TcpStream, pending: &Arc<AtomicUsize>) {
    let _ = st.set_read_timeout(Some(Duration::from_secs(30)));
    let peer = st.peer_addr();
    let mut reader = BufReader::new(match st.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let n: u64 = words.clone().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    match words.next() {
        Some("sink") => {
            let got = io::copy(&mut reader.take(n), &mut io::sink()).unwrap_or(0);
            let _ = st.write_all(format!("got {got}\n").as_bytes());
        }
        Some("source") => {
            let _ = io::copy(&mut io::repeat(0x5a).take(n), &mut st);
        }
        Some("later") => {
            let wait = match Request::parse(line.as_bytes()) {
                Request::Later(wait) => wait,
                _ => Duration::ZERO,
            };
            if pending.fetch_add(1, Ordering::SeqCst) < MAX_PENDING {
                std::thread::sleep(wait);
                let _ = st.write_all(b"back\n");
            }
            pending.fetch_sub(1, Ordering::SeqCst);
        }
        _ => {
            if let Ok(peer) = peer {
                let _ = st.write_all(answer(peer).as_bytes());
            }
        }
    }
}

/// Sends `bytes` to a reflector over TCP (or has it send them, with
/// `reverse`) and returns how many arrived on the receiving side.
pub fn transfer(target: SocketAddrV4, bytes: u64, reverse: bool, timeout: Duration) -> io::Result<u64> {
    let mut st = TcpStream::connect_timeout(&target.into(), timeout)?;
    st.set_read_timeout(Some(timeout))?;
    st.set_write_timeout(Some(timeout))?;
    if reverse {
        st.write_all(format!("source {bytes}\n").as_bytes())?;
        io::copy(&mut (&st).take(bytes), &mut io::sink())
    } else {
        st.write_all(format!("sink {bytes}\n").as_bytes())?;
        io::copy(&mut io::repeat(0xa5).take(bytes), &mut st)?;
        let mut line = String::new();
        BufReader::new(&st).read_line(&mut line)?;
        line.trim()
            .strip_prefix("got ")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not a sink's answer: {line:?}")))
    }
}

fn fmt_port(p: Option<u16>) -> String {
    p.map_or("-".into(), |p| p.to_string())
}

/// The transport of an ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// How large an ask's datagrams are (UDP only): the question padded to
/// `out` bytes, the answer asked to be `back` bytes (0: as small as they
/// come). Larger than the path's MTU, they cross as fragments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// The question's payload.
    pub out: usize,
    /// The answer's payload.
    pub back: usize,
}

/// How a question to a reflector ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Answered: what the reflector saw.
    Seen(SocketAddr),
    /// No answer in time.
    TimedOut,
    /// An ICMP port unreachable or a TCP reset came back.
    Refused,
}

impl Asked {
    /// The ending an [`ask`] error stands for, if it is one (else the
    /// error is the asking side's own).
    pub fn of_error(e: &io::Error) -> Option<Asked> {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Some(Asked::TimedOut),
            io::ErrorKind::ConnectionRefused => Some(Asked::Refused),
            _ => None,
        }
    }
}

/// Asks the reflector at `target` from local port `from` (any if 0) what
/// it saw. Errors say whether the answer timed out or was refused (an ICMP
/// port unreachable or a TCP reset came back).
pub fn ask(
    transport: Transport,
    target: SocketAddrV4,
    from: u16,
    sizes: Sizes,
    timeout: Duration,
) -> io::Result<SocketAddr> {
    match transport {
        Transport::Udp => {
            let sock = bind_udp(from)?;
            sock.connect(target)?;
            sock.set_read_timeout(Some(timeout))?;
            let question = if sizes.back > 0 { format!("who am i back={}\n", sizes.back) } else { "who am i\n".into() };
            sock.send(&padded(&question, sizes.out.min(MAX_BACK)))?;
            let mut buf = vec![0u8; 65536];
            let n = sock.recv(&mut buf)?;
            parse_answer(&String::from_utf8_lossy(&buf[..n]))
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a reflector's answer"))
        }
        Transport::Tcp => {
            let st = connect_from(target, from, timeout)?;
            st.set_read_timeout(Some(timeout))?;
            (&st).write_all(b"who am i\n")?;
            let mut line = String::new();
            BufReader::new(&st).read_line(&mut line)?;
            parse_answer(&line).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a reflector's answer"))
        }
    }
}

/// A UDP socket on `port` (0: any). A port this process has just closed
/// can still be held for a moment by a child it is spawning (a child holds
/// every descriptor from fork to exec), so a port in use is tried again,
/// for up to
/// [`BIND_RETRY`].
fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    let until = Instant::now() + BIND_RETRY;
    loop {
        match UdpSocket::bind(("0.0.0.0", port)) {
            Err(e) if port != 0 && e.kind() == io::ErrorKind::AddrInUse && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// How long [`bind_udp`] tries a port in use.
const BIND_RETRY: Duration = Duration::from_secs(1);

fn connect_from(target: SocketAddrV4, from: u16, timeout: Duration) -> io::Result<TcpStream> {
    if from == 0 {
        return TcpStream::connect_timeout(&target.into(), timeout);
    }
    use std::os::fd::FromRawFd;
    // std has no bind-before-connect; a raw socket does it.
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReuseAddr, &true).map_err(io::Error::from)?;
    let local = nix::sys::socket::SockaddrIn::new(0, 0, 0, 0, from);
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &local).map_err(io::Error::from)?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: raw is the socket created above; ownership moves here.
    let std_sock = unsafe { std::net::TcpStream::from_raw_fd(raw) };
    let remote = nix::sys::socket::SockaddrIn::from(target);
    std_sock.set_write_timeout(Some(timeout))?;
    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&std_sock), &remote).map_err(io::Error::from)?;
    Ok(std_sock)
}

/// A pure SYN (no ACK) in what a raw TCP socket got: its source.
fn syn_of(from: Ipv4Addr, msg: &[u8], to_port: u16) -> Option<SocketAddrV4> {
    let seg = tcp::Segment::new_checked(msg).ok()?;
    let syn = seg.flags() & (tcp::SYN | tcp::ACK) == tcp::SYN;
    (syn && seg.dst_port() == to_port).then(|| SocketAddrV4::new(from, seg.src_port()))
}

/// TCP simultaneous open (RFC 5382 REQ-2), the server's half: waits up to
/// `within` on a raw socket for a SYN to `port` from the router's `public`
/// address, then connects from `port` to where it came from, so that its
/// own SYN crosses the client's, and says `opened` if the connection opens. The host's TCP answers that
/// first SYN with a reset, which the caller must drop (nothing listens on
/// `port`). `ready` is called once the raw socket is open. Returns the
/// client's endpoint as seen here, or `None` if no SYN came; whether the
/// connection opened is the client's to tell.
pub fn simultaneous_open_server(
    port: u16,
    public: Ipv4Addr,
    within: Duration,
    ready: impl FnOnce(),
) -> io::Result<Option<SocketAddrV4>> {
    let raw = RawSocket::open(ipv4::PROTO_TCP)?;
    ready();
    let until = Instant::now() + within;
    let peer = loop {
        let Some(left) = until.checked_duration_since(Instant::now()) else { return Ok(None) };
        if let Some((from, msg)) = raw.recv(left)? {
            if let Some(peer) = syn_of(from, &msg, port).filter(|p| *p.ip() == public) {
                break peer;
            }
        }
    };
    if let Ok(st) = connect_from(peer, port, within) {
        let _ = (&st).write_all(b"opened\n");
    }
    Ok(Some(peer))
}

/// The most segments the client's half of a simultaneous open looks at.
const MAX_WATCHED: usize = 10_000;

/// What the client's half of a simultaneous open saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimultaneousOpen {
    /// The connection opened and the server's word came through it.
    pub opened: bool,
    /// The server's own SYN (without ACK) reached the client.
    pub server_syn: bool,
}

/// The client's half: connects from `from` to `target` (the server's
/// half) and watches, on a raw socket, what comes back. A NAT that drops
/// the server's SYN still lets the connection open the usual way, from the
/// client's retransmitted SYN, so only that SYN tells simultaneous open
/// from a plain one.
pub fn simultaneous_open_client(target: SocketAddrV4, from: u16, within: Duration) -> io::Result<SimultaneousOpen> {
    let raw = RawSocket::open(ipv4::PROTO_TCP)?;
    let opened = connect_from(target, from, within).and_then(|st| {
        st.set_read_timeout(Some(within))?;
        let mut line = String::new();
        BufReader::new(&st).read_line(&mut line)?;
        Ok(line.starts_with("opened"))
    });
    // What arrived while the connection opened, and no more than a busy
    // host's worth of it.
    let mut server_syn = false;
    for _ in 0..MAX_WATCHED {
        let Some((src, msg)) = raw.recv(Duration::ZERO)? else { break };
        if src == *target.ip() && syn_of(src, &msg, from).is_some_and(|s| s.port() == target.port()) {
            server_syn = true;
            break;
        }
    }
    Ok(SimultaneousOpen { opened: opened.unwrap_or(false), server_syn })
}

/// How an idle probe's flow waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleFlow {
    /// A UDP datagram, answered after the wait.
    Udp,
    /// An established TCP connection, answered after the wait.
    Tcp,
    /// A TCP connection the asking side has closed its half of (FIN sent),
    /// answered after the wait.
    TcpHalfClosed,
    /// A flow without ports, answered by a reflector serving its kind
    /// (`--icmp`, `--gre`, `--esp`): an ICMP echo request of an identifier
    /// of its own, answered after the wait; plain GRE, or ESP (one SPI per
    /// process, as one SA), answered once at once and then after the wait.
    Raw(RawProto),
}

impl IdleFlow {
    /// Whether every flow of this kind between two hosts shares one NAT
    /// mapping, so that its waits must run one after another.
    fn shares_a_mapping(self) -> bool {
        matches!(self, IdleFlow::Raw(kind) if kind.carries_tunnels())
    }
}

/// Idle probes: for each wait, a flow of its own to the reflector at
/// `target` asks to be answered after that wait, all at once (GRE and ESP
/// one after another, as they share a mapping). Returns, per
/// wait, whether the answer came (within `grace` after it), or `None` when
/// the flow could not even be opened (a connection refused or never
/// answered, a send refused).
pub fn idle(flow: IdleFlow, target: SocketAddrV4, waits: &[Duration], grace: Duration) -> Vec<Option<bool>> {
    if flow.shares_a_mapping() {
        return waits.iter().map(|&wait| idle_one(flow, target, wait, grace).ok()).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = waits.iter().map(|&wait| s.spawn(move || idle_one(flow, target, wait, grace))).collect();
        handles.into_iter().map(|h| h.join().ok().and_then(|r| r.ok())).collect()
    })
}

fn idle_one(flow: IdleFlow, target: SocketAddrV4, wait: Duration, grace: Duration) -> io::Result<bool> {
    let ask = format!("later {}\n", wait.as_millis());
    let deadline = wait + grace;
    match flow {
        IdleFlow::Udp => {
            let sock = UdpSocket::bind(("0.0.0.0", 0))?;
            sock.connect(target)?;
            sock.set_read_timeout(Some(deadline))?;
            // Asked twice and answered twice (any answer will do): one lost
            // datagram does not pass for a NAT that forgot the flow.
            sock.send(ask.as_bytes())?;
            sock.send(ask.as_bytes())?;
            let mut buf = [0u8; 64];
            Ok(matches!(sock.recv(&mut buf), Ok(n) if buf[..n].starts_with(b"back")))
        }
        IdleFlow::Raw(kind) => raw_idle(kind, target, wait, grace),
        IdleFlow::Tcp | IdleFlow::TcpHalfClosed => {
            let st = TcpStream::connect_timeout(&target.into(), Duration::from_secs(2))?;
            (&st).write_all(ask.as_bytes())?;
            if flow == IdleFlow::TcpHalfClosed {
                st.shutdown(Shutdown::Write)?;
            }
            st.set_read_timeout(Some(deadline))?;
            let mut line = String::new();
            Ok(BufReader::new(&st).read_line(&mut line).is_ok() && line.starts_with("back"))
        }
    }
}

/// An idle probe of a flow without ports (see [`IdleFlow::Raw`]).
fn raw_idle(kind: RawProto, target: SocketAddrV4, wait: Duration, grace: Duration) -> io::Result<bool> {
    static NEXT_IDENT: AtomicUsize = AtomicUsize::new(0);
    let ident = (std::process::id() as usize + NEXT_IDENT.fetch_add(1, Ordering::SeqCst)) as u16;
    let raw = RawSocket::open(kind.protocol())?;
    // What is measured is an answered flow's timeout (Linux keeps an
    // unanswered GRE flow a sixth as long).
    if kind.carries_tunnels() && !raw_exchange(&raw, kind, *target.ip(), ident, Duration::ZERO, grace)? {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "the flow's first question got no answer"));
    }
    raw_exchange(&raw, kind, *target.ip(), ident, wait, grace)
}

/// The SPI of every ESP idle probe of this process, as one SA of a real
/// tunnel: a NAT's ESP table (some hold 8 entries) does not fill up with
/// the probes, and the flows are told apart by what they ask.
fn probe_spi() -> u32 {
    0x1000_0000 | (std::process::id() & 0xffff)
}

/// The next two sequence numbers of [`probe_spi`]'s SA.
fn next_esp_seq() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(2, Ordering::SeqCst)
}

/// Asks the reflector at `to`, on `raw`, to answer after `wait`, in the
/// two packets of `kind` that say so under `ident`. Whether an answer came
/// within `grace` after the wait.
fn raw_exchange(
    raw: &RawSocket,
    kind: RawProto,
    to: Ipv4Addr,
    ident: u16,
    wait: Duration,
    grace: Duration,
) -> io::Result<bool> {
    let text = format!("later {} {ident}\n", wait.as_millis());
    for r in kind.requests(ident, text.as_bytes()) {
        raw.send(to, &r)?;
    }
    let until = Instant::now() + wait + grace;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Some((from, msg)) = raw.recv(left)? {
            if from == to && kind.is_answer(&msg, ident, text.as_bytes()) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Round-trip times of `count` UDP datagrams to a reflector, one at a time.
pub fn rtts(target: SocketAddrV4, count: usize, timeout: Duration) -> io::Result<Vec<Duration>> {
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.connect(target)?;
    sock.set_read_timeout(Some(timeout))?;
    let mut out = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let msg = format!("rtt {i:08}");
        let start = Instant::now();
        sock.send(msg.as_bytes())?;
        loop {
            let n = sock.recv(&mut buf)?;
            if &buf[..n] == msg.as_bytes() {
                break;
            }
        }
        out.push(start.elapsed());
    }
    Ok(out)
}

/// The `p`-th percentile (0..=100) of durations.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_held_for_a_moment_is_bound_once_it_is_free() {
        let held = UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
        let port = held.local_addr().expect("addr").port();
        // Held on every address, as a spawning child holds it.
        drop(held);
        let held = UdpSocket::bind(("0.0.0.0", port)).expect("bind again");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        let sock = bind_udp(port).expect("bound after the holder let go");
        assert_eq!(sock.local_addr().expect("addr").port(), port);
        release.join().expect("release");
        let _busy = sock;
        assert_eq!(
            bind_udp(port).map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::AddrInUse),
            "a port held for good"
        );
    }

    #[test]
    fn answers_round_trip() {
        let peer: SocketAddr = "198.51.100.1:40000".parse().expect("addr");
        assert_eq!(parse_answer(&answer(peer)), Some(peer));
        assert_eq!(parse_answer("hello"), None);
    }

    #[test]
    fn percentiles_pick_from_the_sorted_values() {
        let v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn ask_and_serve_on_loopback() {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = sock.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(answer(peer).as_bytes(), peer);
            }
        });
        let target = SocketAddrV4::new([127, 0, 0, 1].into(), port);
        let seen = ask(Transport::Udp, target, 0, Sizes::default(), Duration::from_secs(5)).expect("an answer");
        assert_eq!(seen.ip().to_string(), "127.0.0.1");
    }

    #[test]
    fn requests_are_read_once_from_their_first_line() {
        assert_eq!(Request::parse(b"rtt 00000001"), Request::Rtt);
        assert_eq!(Request::parse(b"later 1500\n"), Request::Later(Duration::from_millis(1500)));
        assert_eq!(Request::parse(b"later 99999999999\n"), Request::Later(MAX_LATER));
        assert_eq!(Request::parse(b"who am i back=3000\nxxxx"), Request::Seen { back: 3000 });
        assert_eq!(Request::parse(b"who am i back=9999999\n"), Request::Seen { back: MAX_BACK });
        assert_eq!(Request::parse(b"later soon\n"), Request::Seen { back: 0 });
        assert_eq!(Request::parse(&[0xff, 0xfe]), Request::Seen { back: 0 });
    }

    #[test]
    fn a_padded_answer_still_reads() {
        let peer: SocketAddr = "198.51.100.1:40000".parse().expect("addr");
        let big = padded(&answer(peer), 3000);
        assert_eq!(big.len(), 3000);
        assert_eq!(parse_answer(&String::from_utf8_lossy(&big)), Some(peer));
    }

    #[test]
    fn an_idle_probe_tells_an_answer_from_silence() {
        // One responder answers `later` as the reflector does, one never answers.
        let answering = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = |s: &UdpSocket| match s.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            other => panic!("not IPv4: {other:?}"),
        };
        let (a, q) = (addr(&answering), addr(&silent));
        let pending = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, peer)) = answering.recv_from(&mut buf) {
                if let Request::Later(wait) = Request::parse(&buf[..n]) {
                    answer_later(&answering, peer, wait, &pending);
                }
            }
        });
        let waits = [Duration::from_millis(10), Duration::from_millis(60)];
        assert_eq!(idle(IdleFlow::Udp, a, &waits, Duration::from_secs(2)), vec![Some(true), Some(true)]);
        assert_eq!(idle(IdleFlow::Udp, q, &waits, Duration::from_millis(100)), vec![Some(false), Some(false)]);
        drop(silent);
    }
}
