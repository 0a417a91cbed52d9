//! Small traffic tools run inside lab hosts: a reflector that tells each
//! sender the address and port it saw (as STUN does, without the protocol),
//! the asking side, and a UDP round-trip timer. They are how a test learns
//! what a NAT did to a flow, end to end.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// What the reflector answers: `seen ADDR:PORT`.
pub fn answer(peer: SocketAddr) -> String {
    format!("seen {peer}\n")
}

/// Reads a reflector's answer.
pub fn parse_answer(text: &str) -> Option<SocketAddr> {
    text.trim().strip_prefix("seen ")?.parse().ok()
}

/// Serves UDP on `udp` and TCP on `tcp` (either may be absent) until the
/// process is killed, answering each datagram or connection with what it
/// saw. Prints `listening` when both sockets are bound. With `punch`, the
/// UDP socket first asks that reflector what it sees, as a peer-to-peer
/// application opens a NAT mapping for its listening port, and prints
/// `punched seen ADDR:PORT`.
pub fn serve(udp: Option<u16>, tcp: Option<u16>, punch: Option<SocketAddrV4>) -> io::Result<()> {
    let udp_sock = udp.map(|p| UdpSocket::bind(("0.0.0.0", p))).transpose()?;
    let tcp_sock = tcp.map(|p| TcpListener::bind(("0.0.0.0", p))).transpose()?;
    if let (Some(sock), Some(target)) = (&udp_sock, punch) {
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        sock.send_to(b"who am i\n", target)?;
        let mut buf = [0u8; 512];
        let (n, _) = sock.recv_from(&mut buf)?;
        let seen = parse_answer(&String::from_utf8_lossy(&buf[..n]))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a reflector's answer"))?;
        println!("punched seen {seen}");
        sock.set_read_timeout(None)?;
    }
    println!("listening udp/{} tcp/{}", fmt_port(udp), fmt_port(tcp));
    io::stdout().flush()?;
    std::thread::scope(|s| {
        if let Some(sock) = &udp_sock {
            s.spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match sock.recv_from(&mut buf) {
                        Ok((n, peer)) => {
                            // An "rtt" datagram is echoed whole; anything else
                            // gets the reflector's answer.
                            if buf[..n].starts_with(b"rtt ") {
                                let _ = sock.send_to(&buf[..n], peer);
                            } else {
                                let _ = sock.send_to(answer(peer).as_bytes(), peer);
                            }
                        }
                        Err(e) => eprintln!("udp: {e}"),
                    }
                }
            });
        }
        if let Some(listener) = &tcp_sock {
            s.spawn(move || {
                for stream in listener.incoming() {
                    match stream {
                        Ok(st) => {
                            std::thread::spawn(move || serve_tcp(st));
                        }
                        Err(e) => eprintln!("tcp: {e}"),
                    }
                }
            });
        }
    });
    Ok(())
}

/// One TCP connection to the reflector: `sink N` reads N bytes and
/// answers `got N`; `source N` sends N bytes; anything else gets `seen`.
fn serve_tcp(mut st: TcpStream) {
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

/// Asks the reflector at `target` from local port `from` (any if 0) what
/// it saw. Errors say whether the answer timed out or was refused (an ICMP
/// port unreachable or a TCP reset came back).
pub fn ask(transport: Transport, target: SocketAddrV4, from: u16, timeout: Duration) -> io::Result<SocketAddr> {
    match transport {
        Transport::Udp => {
            let sock = UdpSocket::bind(("0.0.0.0", from))?;
            sock.connect(target)?;
            sock.set_read_timeout(Some(timeout))?;
            sock.send(b"who am i\n")?;
            let mut buf = [0u8; 512];
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
        let seen = ask(Transport::Udp, SocketAddrV4::new([127, 0, 0, 1].into(), port), 0, Duration::from_secs(5))
            .expect("an answer");
        assert_eq!(seen.ip().to_string(), "127.0.0.1");
    }
}
