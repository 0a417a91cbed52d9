//! The probes behind [`Measured`], played in a lab of two clients and two
//! servers: reflectors on the servers (`probe serve`), questions asked from
//! the clients' namespaces, and listeners on the clients for what must come
//! in from outside.
//!
//! Every question uses a client port of its own, below the kernel's
//! ephemeral range, so no two measurements share a NAT mapping. The idle
//! probes start first and run beside the rest: one flow per wait, all at
//! once, so that finding a timeout to `budget / steps` takes `budget`.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::{Key, Measured, NEEDS_EIM, Value};
use crate::lab::{Cmd, Host, LabError, Process, Proto, Result, own_binary};
use crate::nat::Behaviour;
use crate::probe::{self, Asked, IdleFlow, RawProto, Sizes, Transport};
use crate::router::NatLab;

/// The servers' reflector ports.
const REFLECTOR: u16 = 7000;
const SECOND_REFLECTOR: u16 = 7001;
/// The port servers ask a client's listener from, to test its filter.
const STRANGER: u16 = 7002;
/// A port nothing listens on, for an ICMP port unreachable.
const CLOSED: u16 = 9;
/// Client ports, one range per measurement.
const MAPPING_PORT: u16 = 21000;
const PARITY_PORTS: [u16; 12] = [22000, 22002, 22004, 22006, 22001, 22008, 22003, 22010, 22012, 22005, 22014, 22016];
const FILTER_PORT: u16 = 23000;
const HAIRPIN_UDP: (u16, u16) = (24000, 24100);
const HAIRPIN_TCP: u16 = 25000;
/// Both ends' port for TCP simultaneous open.
const SIMULTANEOUS_OPEN_PORT: u16 = 26000;
/// How long each half of a simultaneous open waits.
const SIMULTANEOUS_OPEN_WAIT: Duration = Duration::from_secs(5);
/// A datagram this large leaves as fragments on 1500-byte links.
const FRAGMENTED: usize = 4000;
/// How long a question waits for its answer, and how often it is asked.
const ANSWER: Duration = Duration::from_millis(500);
const ATTEMPTS: usize = 3;
/// How long after its wait an idle probe's answer may come.
const GRACE: Duration = Duration::from_millis(1000);

/// How long the idle probes may take and how finely they cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The longest wait (0: timeouts are not measured).
    pub longest: Duration,
    /// How many waits, evenly spread below `longest`.
    pub steps: usize,
}

impl Budget {
    /// The default: at most a minute per timeout, to within 1.5 s.
    pub const DEFAULT: Budget = Budget { longest: Duration::from_secs(60), steps: 40 };
    /// Real-world values: up to 2 h 10 min (RFC 5382's 2 h 4 min for
    /// established TCP fits), to within 2 min.
    pub const LONG: Budget = Budget { longest: Duration::from_secs(7800), steps: 64 };

    /// The budget a command line asks for: [`Budget::LONG`], or `secs`
    /// cut in `steps` (the default's, if not given).
    pub fn asked(long: bool, secs: u64, steps: Option<usize>) -> Budget {
        if long {
            return Budget::LONG;
        }
        Budget { longest: Duration::from_secs(secs), steps: steps.unwrap_or(Budget::DEFAULT.steps) }
    }

    /// The most waits: each holds sockets and a reflector thread.
    pub const MAX_STEPS: usize = 256;

    /// The waits: the middles of `steps` equal slices of `longest`, so that
    /// a timeout of whole seconds never falls on one; at most
    /// [`Budget::MAX_STEPS`] of them, none longer than a reflector waits.
    pub fn waits(&self) -> Vec<Duration> {
        let n = self.steps.clamp(1, Budget::MAX_STEPS) as u32;
        let longest = self.longest.min(probe::MAX_LATER);
        (1..=n).map(|i| longest * (2 * i - 1) / (2 * n)).collect()
    }
}

/// A question's ending, or the asking side's own error.
fn asked(r: std::io::Result<SocketAddr>, what: &str) -> Result<Asked> {
    match r {
        Ok(seen) => Ok(Asked::Seen(seen)),
        Err(e) => Asked::of_error(&e).ok_or_else(|| LabError::io(what, e)),
    }
}

/// Why a timeout was not measured when there is no time for idle probes.
const NO_BUDGET: &str = "no time budget for idle probes";

/// Why a timeout of flows answered before they idle was not measured.
const NOT_OPENED: &str = "the flow got no answer even before it idled: the router does not forward this traffic";

/// What a thread of the measurement returned.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join().map_err(|_| LabError::io("an idle probe", std::io::Error::other("panicked")))?
}

/// Measures the router of `nl`, a lab of at least two clients and two
/// servers, with timeouts probed within `budget`.
pub fn measure(nl: &NatLab, budget: Budget) -> Result<Measured> {
    let shape = &nl.shape;
    if shape.clients < 2 || shape.servers < 2 {
        return Err(LabError::Input(format!(
            "measuring NAT behaviour needs two clients and two servers; the lab has {} and {}",
            shape.clients, shape.servers
        )));
    }
    let m = Measurer {
        c1: nl.client(1)?,
        c2: nl.client(2)?,
        s1: nl.lab.host(&shape.server_name(1))?,
        s2: nl.lab.host(&shape.server_name(2))?,
        a1: shape.server_addr(1),
        a2: shape.server_addr(2),
        public: shape.wan.addr(),
        bin: own_binary()?.to_string_lossy().into_owned(),
    };
    let (first, second) = (REFLECTOR.to_string(), SECOND_REFLECTOR.to_string());
    let _reflectors = [
        m.reflector(
            &m.s1,
            &["--udp", &first, "--tcp", &first, "--icmp", "--gre", "--esp"],
            &[Proto::Udp, Proto::Tcp],
            REFLECTOR,
        )?,
        m.reflector(&m.s1, &["--udp", &second], &[Proto::Udp], SECOND_REFLECTOR)?,
        m.reflector(&m.s2, &["--udp", &first], &[Proto::Udp], REFLECTOR)?,
    ];
    // The reflector answers echo requests itself, after their wait.
    m.s1.sysctl("net.ipv4.icmp_echo_ignore_all", "1")?;
    // Each client's first question: the router learns both sides' link
    // addresses before the idle probes open all their flows at once (a
    // router holds only so many packets for a neighbour it is resolving).
    for c in [&m.c1, &m.c2] {
        m.ask_udp(c, m.target(1, REFLECTOR), 0)?;
    }
    let waits = budget.waits();
    std::thread::scope(|scope| {
        let target = m.target(1, REFLECTOR);
        let (m, waits) = (&m, &waits);
        let idle = |client: usize, flow: IdleFlow| {
            let host = if client == 1 { &m.c1 } else { &m.c2 };
            scope.spawn(move || host.inside(move || Ok(probe::idle(flow, target, waits, GRACE))))
        };
        let timed = (budget.longest > Duration::ZERO).then(|| {
            [
                idle(1, IdleFlow::Udp),
                idle(1, IdleFlow::Tcp),
                idle(2, IdleFlow::TcpHalfClosed),
                idle(2, IdleFlow::Raw(RawProto::Icmp)),
            ]
        });
        // GRE has no ports, and ESP mapped by address has none either: their
        // flows between two hosts share one mapping, so they wait one at a
        // time, beside the others. Both go from client 1: a router keeps an
        // answered flow's mapping for minutes, and that mapping must belong
        // to the client that later labs (on the same external router, with
        // the same leases) send their first ESP and GRE from, or it would
        // stand in the way of their raw ESP to the same server.
        let one_at_a_time = |kind: RawProto| {
            (budget.longest > Duration::ZERO).then(|| {
                scope.spawn(move || {
                    m.c1.inside(move || {
                        Ok(search(waits, budget.longest.min(probe::MAX_LATER) * 2, |wait| {
                            probe::idle(IdleFlow::Raw(kind), target, &[wait], GRACE).first().copied().flatten()
                        }))
                    })
                })
            })
        };
        let searches =
            [(Key::GreTimeout, one_at_a_time(RawProto::Gre)), (Key::EspTimeout, one_at_a_time(RawProto::Esp))];
        let mut values = m.immediate()?;
        let keys = [Key::UdpTimeout, Key::TcpEstablishedTimeout, Key::TcpTransitoryTimeout, Key::IcmpTimeout];
        for (key, h) in searches {
            values.push((
                key,
                match h {
                    None => Value::unmeasured(NO_BUDGET),
                    Some(h) => joined(h)?,
                },
            ));
        }
        match timed {
            None => values.extend(keys.map(|k| (k, Value::unmeasured(NO_BUDGET)))),
            Some(handles) => {
                for (key, h) in keys.into_iter().zip(handles) {
                    values.push((key, bracket(waits, &joined(h)?)));
                }
            }
        }
        Ok(Measured::new(nl.router.name(), values))
    })
}

/// The value idle probes found: the longest wait lived through, and the
/// shortest wait past it that was not. A flow that died below the longest
/// survivor lost a packet; a few such are forgiven, more make the value
/// unmeasured, as do flows that could not be opened and a router under
/// which no flow lived at all (it does not forward this traffic).
fn bracket(waits: &[Duration], alive: &[Option<bool>]) -> Value {
    let secs = |d: Duration| d.as_secs_f64();
    let unopened = alive.iter().filter(|a| a.is_none()).count();
    if unopened > alive.len() / 4 {
        return Value::unmeasured(format!("{unopened} of {} flows could not be opened", alive.len()));
    }
    let Some(last_alive) = alive.iter().rposition(|a| *a == Some(true)) else {
        return Value::unmeasured(format!(
            "no flow lived through even the shortest wait ({:.2} s): does the router forward this traffic?",
            waits.first().copied().map_or(0.0, secs)
        ));
    };
    let lost = alive[..last_alive].iter().filter(|a| **a == Some(false)).count();
    if lost > alive.len() / 8 {
        return Value::unmeasured(format!(
            "{lost} of {} flows died before a longer one did: the path loses packets; measure again",
            alive.len()
        ));
    }
    let first_dead = (last_alive + 1..alive.len()).find(|&i| alive[i] == Some(false));
    match first_dead {
        None => Value::AtLeast { s: secs(waits[last_alive]) },
        Some(i) => Value::Seconds { alive_s: secs(waits[last_alive]), dead_s: secs(waits[i]) },
    }
}

/// A timeout of flows that share one mapping (GRE, or ESP mapped by
/// address, between two hosts), one wait at a time: the waits are tried
/// first, second, fourth, eighth… (the longest that still fits, where the
/// next would not) until a flow dies, then the bracket is halved, while
/// the waits tried add up to no more than `limit`. `trial` says whether a
/// flow lived through a wait (`None`: its question got no answer even
/// before the wait). A first flow that gets none leaves the value
/// unmeasured; a later one ends the search with the bracket so far.
fn search(waits: &[Duration], limit: Duration, mut trial: impl FnMut(Duration) -> Option<bool>) -> Value {
    let Some(last) = waits.len().checked_sub(1) else { return Value::unmeasured("no waits") };
    let mut spent = Duration::ZERO;
    let (mut alive, mut dead): (Option<usize>, Option<usize>) = (None, None);
    let mut i = 0;
    loop {
        // A gallop that would overrun the limit goes as far as it still can.
        let left = limit.saturating_sub(spent);
        let Some(j) = (alive.map_or(0, |a| a + 1)..=i).rev().find(|&j| waits[j] <= left) else { break };
        spent += waits[j];
        match trial(waits[j]) {
            None if alive.is_none() => return Value::unmeasured(NOT_OPENED),
            None => break,
            Some(true) => alive = Some(j),
            Some(false) => {
                dead = Some(j);
                break;
            }
        }
        if j == last {
            break;
        }
        i = (2 * j + 1).min(last);
    }
    while let Some(d) = dead {
        let lo = alive.map_or(0, |a| a + 1);
        if lo >= d {
            break;
        }
        let mid = lo + (d - lo) / 2;
        if spent + waits[mid] > limit {
            break;
        }
        spent += waits[mid];
        match trial(waits[mid]) {
            None => break,
            Some(true) => alive = Some(mid),
            Some(false) => dead = Some(mid),
        }
    }
    let secs = |i: usize| waits[i].as_secs_f64();
    match (alive, dead) {
        (Some(a), Some(d)) => Value::Seconds { alive_s: secs(a), dead_s: secs(d) },
        (Some(a), None) => Value::AtLeast { s: secs(a) },
        (None, Some(_)) => Value::unmeasured(format!(
            "no flow lived through even the shortest wait ({:.2} s): does the router forward this traffic?",
            secs(0)
        )),
        (None, None) => Value::unmeasured(NO_BUDGET),
    }
}

struct Measurer<'l> {
    c1: Host<'l>,
    c2: Host<'l>,
    s1: Host<'l>,
    s2: Host<'l>,
    a1: std::net::Ipv4Addr,
    a2: std::net::Ipv4Addr,
    /// The router's public address.
    public: std::net::Ipv4Addr,
    bin: String,
}

impl Measurer<'_> {
    fn target(&self, server: usize, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(if server == 1 { self.a1 } else { self.a2 }, port)
    }

    fn reflector(&self, host: &Host<'_>, args: &[&str], protos: &[Proto], port: u16) -> Result<Process> {
        let p = host.spawn(Cmd::new(&self.bin).arg("probe").arg("serve").args(args).label("reflector"))?;
        for proto in protos {
            p.or_stop(p.wait_for_port(*proto, port, Duration::from_secs(5)))?;
        }
        Ok(p)
    }

    /// Asks the reflector at `target` from `host`'s port `from`; a
    /// question that times out is asked again, [`ATTEMPTS`] times in all,
    /// so that one lost datagram is not taken for the router's doing.
    fn ask(
        &self,
        host: &Host<'_>,
        transport: Transport,
        target: SocketAddrV4,
        from: u16,
        sizes: Sizes,
    ) -> Result<Asked> {
        let what = format!("host '{}': asking {target} from port {from}", host.name());
        host.inside(move || {
            for _ in 1..ATTEMPTS {
                match probe::ask(transport, target, from, sizes, ANSWER) {
                    Err(e) if Asked::of_error(&e) == Some(Asked::TimedOut) => {}
                    other => return asked(other, &what),
                }
            }
            asked(probe::ask(transport, target, from, sizes, ANSWER), &what)
        })
    }

    fn ask_udp(&self, host: &Host<'_>, target: SocketAddrV4, from: u16) -> Result<Asked> {
        self.ask(host, Transport::Udp, target, from, Sizes::default())
    }

    /// A UDP listener on `host`'s `port` that first opens its mapping by
    /// asking `punch[0]` (and sends to the others); returns it and its
    /// public endpoint.
    fn listener(&self, host: &Host<'_>, port: u16, punch: &[SocketAddrV4]) -> Result<(Process, SocketAddr)> {
        let mut cmd = Cmd::new(&self.bin).args(&["probe", "serve", "--udp", &port.to_string()]);
        for p in punch {
            cmd = cmd.arg("--punch").arg(p.to_string());
        }
        let p = host.spawn(cmd.label(format!("listener-{port}")))?;
        p.or_stop(p.wait_for_log("listening", Duration::from_secs(5)))?;
        let log = std::fs::read_to_string(p.log_path()).map_err(|e| LabError::io("reading a listener's log", e))?;
        let public = log.lines().find_map(|l| l.strip_prefix("punched ")).and_then(probe::parse_answer);
        match public {
            Some(public) => Ok((p, public)),
            None => Err(LabError::Input(format!(
                "host '{}': the listener on port {port} got no answer from {}: {}",
                host.name(),
                punch.first().map(|p| p.to_string()).unwrap_or_default(),
                log.trim()
            ))),
        }
    }

    /// Who `listener` heard from (its `from ADDR:PORT` lines).
    fn heard(listener: &Process) -> Vec<SocketAddr> {
        std::fs::read_to_string(listener.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("from ")?.parse().ok())
            .collect()
    }

    /// Everything but the timeouts.
    fn immediate(&self) -> Result<Vec<(Key, Value)>> {
        let mut values = Vec::new();
        let (mapping, preserved) = self.mapping()?;
        values.push((Key::Mapping, mapping.clone()));
        values.push((Key::PortPreservation, preserved));
        values.push((Key::PortParity, self.parity()?));
        values.push((Key::Filtering, self.filtering()?));
        let eim = mapping == Value::Behaviour { behaviour: Behaviour::EndpointIndependent };
        if eim {
            values.push((Key::HairpinningUdp, self.hairpin_udp()?));
            values.push((Key::HairpinningTcp, self.hairpin_tcp()?));
        } else {
            values.push((Key::HairpinningUdp, Value::unmeasured(NEEDS_EIM)));
            values.push((Key::HairpinningTcp, Value::unmeasured(NEEDS_EIM)));
        }
        values.push((Key::TcpSimultaneousOpen, self.simultaneous_open()?));
        let refused = self.ask_udp(&self.c1, self.target(1, CLOSED), 0)? == Asked::Refused;
        values.push((Key::IcmpErrors, Value::flag(refused)));
        for (key, sizes) in [
            (Key::FragmentsOut, Sizes { out: FRAGMENTED, back: 0 }),
            (Key::FragmentsIn, Sizes { out: 0, back: FRAGMENTED }),
        ] {
            let asked = self.ask(&self.c1, Transport::Udp, self.target(1, REFLECTOR), 0, sizes)?;
            values.push((key, Value::flag(matches!(asked, Asked::Seen(_)))));
        }
        Ok(values)
    }

    /// One client port asks three reflectors: the same server on another
    /// port, and another server (RFC 4787 §4.1).
    fn mapping(&self) -> Result<(Value, Value)> {
        let targets = [self.target(1, REFLECTOR), self.target(1, SECOND_REFLECTOR), self.target(2, REFLECTOR)];
        let mut seen = Vec::new();
        for t in targets {
            match self.ask_udp(&self.c1, t, MAPPING_PORT)? {
                Asked::Seen(s) => seen.push(s),
                other => {
                    let why =
                        format!("UDP from the LAN to {t} got no answer ({other:?}): the router does not forward UDP");
                    return Ok((Value::unmeasured(&why), Value::unmeasured(why)));
                }
            }
        }
        let behaviour = if seen[0] == seen[1] && seen[1] == seen[2] {
            Behaviour::EndpointIndependent
        } else if seen[0] == seen[1] {
            Behaviour::AddressDependent
        } else {
            Behaviour::AddressAndPortDependent
        };
        Ok((Value::Behaviour { behaviour }, Value::flag(seen[0].port() == MAPPING_PORT)))
    }

    /// Both clients ask from the same ports, odd and even: the second
    /// client's cannot be kept, so the router picks others.
    fn parity(&self) -> Result<Value> {
        let mut kept = true;
        for host in [&self.c1, &self.c2] {
            for &port in &PARITY_PORTS {
                match self.ask_udp(host, self.target(1, REFLECTOR), port)? {
                    Asked::Seen(s) => kept &= s.port() % 2 == port % 2,
                    other => return Ok(Value::unmeasured(format!("a question from port {port} got {other:?}"))),
                }
            }
        }
        Ok(Value::flag(kept))
    }

    /// A listener that opened its mapping to server 1's reflector; server
    /// 1 from another port, and server 2, send to it (RFC 4787 §5).
    fn filtering(&self) -> Result<Value> {
        let (listener, public) = self.listener(&self.c1, FILTER_PORT, &[self.target(1, REFLECTOR)])?;
        let SocketAddr::V4(public) = public else {
            return Ok(Value::unmeasured("the public endpoint is not IPv4"));
        };
        self.ask_udp(&self.s1, public, STRANGER)?;
        self.ask_udp(&self.s2, public, STRANGER)?;
        let heard = Measurer::heard(&listener);
        let _ = listener.stop(Duration::from_millis(200));
        let from = |a: std::net::Ipv4Addr| heard.contains(&SocketAddr::V4(SocketAddrV4::new(a, STRANGER)));
        let behaviour = match (from(self.a1), from(self.a2)) {
            (true, true) => Behaviour::EndpointIndependent,
            (true, false) => Behaviour::AddressDependent,
            (false, false) => Behaviour::AddressAndPortDependent,
            (false, true) => {
                return Ok(Value::unmeasured("another server got in where the same server from another port did not"));
            }
        };
        Ok(Value::Behaviour { behaviour })
    }

    /// Client 2 learns its public endpoint; client 1 opens a listener to
    /// server 1 and to client 2's public endpoint (so that its filter lets
    /// client 2 in); client 2 sends to client 1's public endpoint.
    fn hairpin_udp(&self) -> Result<Value> {
        let (from, port) = HAIRPIN_UDP;
        let Asked::Seen(SocketAddr::V4(c2_public)) = self.ask_udp(&self.c2, self.target(1, REFLECTOR), from)? else {
            return Ok(Value::unmeasured("client 2 got no answer from the server"));
        };
        let (listener, public) = self.listener(&self.c1, port, &[self.target(1, REFLECTOR), c2_public])?;
        let SocketAddr::V4(public) = public else {
            return Ok(Value::unmeasured("the public endpoint is not IPv4"));
        };
        self.ask_udp(&self.c2, public, from)?;
        let heard = Measurer::heard(&listener);
        let _ = listener.stop(Duration::from_millis(200));
        let servers = [IpAddr::V4(self.a1), IpAddr::V4(self.a2)];
        Ok(match heard.iter().find(|s| !servers.contains(&s.ip())) {
            Some(s) => Value::Hairpin { as_public: s.ip() == IpAddr::V4(*c2_public.ip()) },
            None => Value::flag(false),
        })
    }

    /// Client 1 connects from [`SIMULTANEOUS_OPEN_PORT`] to server 1's, where nothing
    /// listens and the server's resets are dropped; server 1 learns the
    /// client's public endpoint from the SYN and connects to it from the
    /// same port. The router supports simultaneous open (RFC 5382 REQ-2)
    /// when the server's SYN reaches the client and the connection opens.
    fn simultaneous_open(&self) -> Result<Value> {
        let Some(nft) = crate::prereq::tool("nft").and_then(|t| t.locate()) else {
            return Ok(Value::unmeasured("nft (nftables) is not installed: it drops the server's resets"));
        };
        let rules = format!(
            "table ip simultaneous-open {{\n  chain out {{\n    type filter hook output priority 0;\n    \
             tcp sport {SIMULTANEOUS_OPEN_PORT} tcp flags & rst == rst drop\n  }}\n}}\n"
        );
        let file = self.s1.write_conf("simultaneous-open.nft", &rules)?;
        self.s1.run_ok(Cmd::argv(&[&nft.to_string_lossy(), "-f", &file.to_string_lossy()]))?;
        let target = self.target(1, SIMULTANEOUS_OPEN_PORT);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let what = format!("host '{}': waiting for a SYN on a raw socket", self.s1.name());
            let public = self.public;
            let server = scope.spawn(move || {
                self.s1.inside(move || {
                    probe::simultaneous_open_server(SIMULTANEOUS_OPEN_PORT, public, SIMULTANEOUS_OPEN_WAIT, move || {
                        let _ = ready_tx.send(());
                    })
                    .map_err(|e| LabError::io(what, e))
                })
            });
            if ready_rx.recv_timeout(SIMULTANEOUS_OPEN_WAIT).is_err() {
                joined(server)?;
                return Err(LabError::Input(format!("host '{}': the raw TCP socket did not open", self.s1.name())));
            }
            let what = format!("host '{}': a simultaneous open to {target}", self.c1.name());
            let client = self.c1.inside(move || {
                probe::simultaneous_open_client(target, SIMULTANEOUS_OPEN_PORT, SIMULTANEOUS_OPEN_WAIT)
                    .map_err(|e| LabError::io(what, e))
            });
            let reached = joined(server)?;
            let seen = client?;
            Ok(match reached {
                None => Value::unmeasured("the client's SYN did not reach the server"),
                Some(_) => Value::flag(seen.opened && seen.server_syn),
            })
        })
    }

    /// Client 1 opens a TCP mapping by connecting to server 1, then listens
    /// on that port; client 2 connects to its public endpoint.
    fn hairpin_tcp(&self) -> Result<Value> {
        let Asked::Seen(SocketAddr::V4(public)) =
            self.ask(&self.c1, Transport::Tcp, self.target(1, REFLECTOR), HAIRPIN_TCP, Sizes::default())?
        else {
            return Ok(Value::unmeasured("TCP from the LAN got no answer from the server"));
        };
        let listener = self.reflector(&self.c1, &["--tcp", &HAIRPIN_TCP.to_string()], &[Proto::Tcp], HAIRPIN_TCP)?;
        let asked = self.ask(&self.c2, Transport::Tcp, public, 0, Sizes::default())?;
        let _ = listener.stop(Duration::from_millis(200));
        Ok(match asked {
            Asked::Seen(s) => Value::Hairpin { as_public: s.ip() == IpAddr::V4(*public.ip()) },
            _ => Value::flag(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_fall_between_whole_seconds() {
        let b = Budget { longest: Duration::from_secs(4), steps: 8 };
        let w = b.waits();
        assert_eq!(w.first(), Some(&Duration::from_millis(250)));
        assert_eq!(w.last(), Some(&Duration::from_millis(3750)));
        assert!(w.iter().all(|d| d.subsec_millis() != 0));
    }

    #[test]
    fn a_search_gallops_then_halves_within_its_limit() {
        let w: Vec<Duration> = (1..=16).map(Duration::from_secs).collect();
        let mut tried = Vec::new();
        let v = search(&w, Duration::from_secs(100), |d| {
            tried.push(d.as_secs());
            Some(d.as_secs() <= 9)
        });
        assert_eq!(v, Value::Seconds { alive_s: 9.0, dead_s: 10.0 });
        assert_eq!(tried, [1, 2, 4, 8, 16, 12, 10, 9], "gallop up, then halve");
        let v = search(&w, Duration::from_secs(20), |d| Some(d.as_secs() <= 9));
        assert_eq!(v, Value::AtLeast { s: 8.0 }, "out of time before any flow died");
        let v = search(&w, Duration::from_secs(25), |d| Some(d.as_secs() <= 9));
        assert_eq!(v, Value::Seconds { alive_s: 8.0, dead_s: 10.0 }, "the last gallop as long as the limit lets it");
        let v = search(&w, Duration::from_secs(31), |d| Some(d.as_secs() <= 9));
        assert_eq!(v, Value::Seconds { alive_s: 8.0, dead_s: 16.0 }, "out of time while halving: the bracket so far");
        assert_eq!(search(&w, Duration::from_secs(1000), |_| Some(true)), Value::AtLeast { s: 16.0 });
        assert!(matches!(search(&w, Duration::from_secs(1000), |_| Some(false)), Value::Unmeasured { .. }));
        assert!(matches!(search(&w, Duration::from_secs(1000), |_| None), Value::Unmeasured { .. }));
    }

    #[test]
    fn a_bracket_is_the_last_wait_lived_through_and_the_first_not() {
        let w: Vec<Duration> = [1, 2, 3, 4].map(Duration::from_secs).to_vec();
        let (t, f) = (Some(true), Some(false));
        assert_eq!(bracket(&w, &[t, t, f, f]), Value::Seconds { alive_s: 2.0, dead_s: 3.0 });
        assert_eq!(bracket(&w, &[t; 4]), Value::AtLeast { s: 4.0 });
        assert!(matches!(bracket(&w, &[f; 4]), Value::Unmeasured { .. }), "no flow at all is no timeout");
        assert!(matches!(bracket(&w, &[t, f, t, f]), Value::Unmeasured { .. }));
        assert!(matches!(bracket(&w, &[None, None, t, f]), Value::Unmeasured { .. }), "half could not be opened");
        let w8: Vec<Duration> = (1..=8).map(Duration::from_secs).collect();
        let one_lost = [t, f, t, t, t, f, f, f];
        assert_eq!(bracket(&w8, &one_lost), Value::Seconds { alive_s: 5.0, dead_s: 6.0 }, "one loss is forgiven");
        let unopened_past = [t, t, t, t, t, None, f, f];
        assert_eq!(bracket(&w8, &unopened_past), Value::Seconds { alive_s: 5.0, dead_s: 7.0 });
    }
}
