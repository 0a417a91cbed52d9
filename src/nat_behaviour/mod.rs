//! A router's NAT behaviour, measured end to end from the lab's hosts, and
//! what each value means for VPNs: mapping and filtering (RFC 4787), port
//! preservation and parity, hairpinning, ICMP errors (RFC 5508), fragments,
//! and idle timeouts found by probing within a budget.
//!
//! [`measure`] plays the probes against any router in a lab; [`Measured`]
//! holds the values, [`Measured::expected`] what a Rust NAT profile says
//! they must be, and [`Measured::disagreements`] where the two differ.

mod measure;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::nat::profile::{IpsecMode, PptpMode};
use crate::nat::{Behaviour, Profile, Protocol};

pub use measure::{Budget, measure};

/// The lab the measurement needs: two clients, two servers.
pub fn shape() -> crate::router::Shape {
    crate::router::Shape { servers: 2, ..crate::router::Shape::new(2) }
}

/// Builds a lab of [`shape`] around `router`, measures
/// it, and tears the lab down.
pub fn measure_router(router: &dyn crate::router::RouterUnderTest, budget: Budget) -> crate::lab::Result<Measured> {
    let shape = router.place(shape());
    let nl = crate::router::NatLab::build_shaped(router, &shape, |t| t)?;
    let measured = measure(&nl, budget);
    let down = nl.teardown();
    let measured = measured?;
    down?;
    Ok(measured)
}

/// What is measured, in the order the table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Key {
    /// RFC 4787 §4.1: when a LAN socket gets a new public endpoint.
    Mapping,
    /// RFC 4787 §5: who may send to a public endpoint.
    Filtering,
    /// The LAN socket's port kept as the public port.
    PortPreservation,
    /// A public port of the internal port's parity when it is not kept.
    PortParity,
    /// UDP between two LAN hosts through the public address.
    HairpinningUdp,
    /// TCP between two LAN hosts through the public address.
    HairpinningTcp,
    /// TCP connections opened by a SYN from each end at once (RFC 5382
    /// REQ-2).
    TcpSimultaneousOpen,
    /// An ICMP port unreachable comes back translated (RFC 5508).
    IcmpErrors,
    /// Fragmented UDP from the LAN out.
    FragmentsOut,
    /// Fragmented UDP from the WAN in.
    FragmentsIn,
    /// How long an idle UDP mapping lasts.
    UdpTimeout,
    /// How long an idle established TCP connection lasts.
    TcpEstablishedTimeout,
    /// How long an idle half-closed TCP connection lasts.
    TcpTransitoryTimeout,
    /// How long an idle ICMP query (echo) mapping lasts.
    IcmpTimeout,
    /// How long an idle, answered GRE mapping (by address) lasts.
    GreTimeout,
    /// How long an idle, answered ESP mapping lasts.
    EspTimeout,
}

impl Key {
    /// Every key, in table order.
    pub const ALL: [Key; 16] = [
        Key::Mapping,
        Key::Filtering,
        Key::PortPreservation,
        Key::PortParity,
        Key::HairpinningUdp,
        Key::HairpinningTcp,
        Key::TcpSimultaneousOpen,
        Key::IcmpErrors,
        Key::FragmentsOut,
        Key::FragmentsIn,
        Key::UdpTimeout,
        Key::TcpEstablishedTimeout,
        Key::TcpTransitoryTimeout,
        Key::IcmpTimeout,
        Key::GreTimeout,
        Key::EspTimeout,
    ];

    /// The row's title.
    pub fn title(self) -> &'static str {
        match self {
            Key::Mapping => "mapping (RFC 4787)",
            Key::Filtering => "filtering (RFC 4787)",
            Key::PortPreservation => "port preservation",
            Key::PortParity => "port parity",
            Key::HairpinningUdp => "hairpinning, UDP",
            Key::HairpinningTcp => "hairpinning, TCP",
            Key::TcpSimultaneousOpen => "TCP simultaneous open (RFC 5382)",
            Key::IcmpErrors => "ICMP errors translated (RFC 5508)",
            Key::FragmentsOut => "fragments, LAN to WAN",
            Key::FragmentsIn => "fragments, WAN to LAN",
            Key::UdpTimeout => "UDP mapping timeout",
            Key::TcpEstablishedTimeout => "TCP established timeout",
            Key::TcpTransitoryTimeout => "TCP half-closed timeout",
            Key::IcmpTimeout => "ICMP query timeout",
            Key::GreTimeout => "GRE timeout",
            Key::EspTimeout => "ESP timeout",
        }
    }
}

/// One measured value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Value {
    /// A mapping or filtering behaviour.
    Behaviour {
        /// Which.
        behaviour: Behaviour,
    },
    /// Yes or no.
    Flag {
        /// Whether.
        yes: bool,
    },
    /// Hairpinned traffic arrived; `as_public`: from the sender's public
    /// endpoint (RFC 4787 REQ-9), not its LAN address.
    Hairpin {
        /// Whether the receiver saw the sender's public address.
        as_public: bool,
    },
    /// An idle flow lived through `alive_s` and not through `dead_s`.
    Seconds {
        /// The longest wait it lived through.
        alive_s: f64,
        /// The shortest wait it did not.
        dead_s: f64,
    },
    /// An idle flow lived through every wait, the longest `s`.
    AtLeast {
        /// The longest wait.
        s: f64,
    },
    /// Not measured, and why.
    Unmeasured {
        /// Why.
        why: String,
    },
}

impl Value {
    fn flag(yes: bool) -> Value {
        Value::Flag { yes }
    }

    fn unmeasured(why: impl Into<String>) -> Value {
        Value::Unmeasured { why: why.into() }
    }

    /// Whether `self`, measured, agrees with `other`, measured or
    /// expected: the same value, or, for timeouts, ranges that overlap (an
    /// expected timeout is `Seconds` with both ends equal).
    pub fn agrees_with(&self, other: &Value) -> bool {
        match (self.range(), other.range()) {
            (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
            _ => match (self, other) {
                (Value::Unmeasured { .. }, Value::Unmeasured { .. }) => true,
                (a, b) => a == b,
            },
        }
    }

    /// The seconds a timeout may be.
    fn range(&self) -> Option<(f64, f64)> {
        match self {
            Value::Seconds { alive_s, dead_s } => Some((*alive_s, *dead_s)),
            Value::AtLeast { s } => Some((*s, f64::INFINITY)),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Behaviour { behaviour } => write!(f, "{behaviour}"),
            Value::Flag { yes } => f.write_str(if *yes { "yes" } else { "no" }),
            Value::Hairpin { as_public: true } => f.write_str("yes"),
            Value::Hairpin { as_public: false } => f.write_str("yes, from the LAN address"),
            Value::Seconds { alive_s, dead_s } if alive_s == dead_s => write!(f, "{alive_s} s"),
            Value::Seconds { alive_s, dead_s } => {
                write!(f, "{} s (between {alive_s:.2} and {dead_s:.2})", mid(*alive_s, *dead_s))
            }
            Value::AtLeast { s } => write!(f, "over {s:.0} s"),
            Value::Unmeasured { why } => write!(f, "not measured: {why}"),
        }
    }
}

/// The middle of a bracket, rounded to what its width can tell.
fn mid(a: f64, b: f64) -> String {
    let m = (a + b) / 2.0;
    if b - a >= 1.0 { format!("{:.0}", m) } else { format!("{:.1}", m) }
}

/// One row: what, the value, and what it means for VPNs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What.
    pub key: Key,
    /// The value.
    pub value: Value,
    /// What it means for VPNs.
    pub meaning: String,
}

/// A router's measured behaviour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The router's name.
    pub router: String,
    /// The values, in [`Key::ALL`] order.
    pub rows: Vec<Row>,
}

impl Measured {
    /// A table of `values` for `router`, each with its meaning.
    pub fn new(router: &str, values: Vec<(Key, Value)>) -> Measured {
        let mut rows: Vec<Row> =
            values.into_iter().map(|(key, value)| Row { meaning: meaning(key, &value), key, value }).collect();
        rows.sort_by_key(|r| r.key);
        Measured { router: router.to_string(), rows }
    }

    /// The value measured for `key`.
    pub fn get(&self, key: Key) -> Option<&Value> {
        self.rows.iter().find(|r| r.key == key).map(|r| &r.value)
    }

    /// What the Rust NAT with `profile` must measure. Timeouts come as
    /// `Seconds` with both ends the profile's value.
    pub fn expected(profile: &Profile) -> Vec<(Key, Value)> {
        let eim = profile.mapping == Behaviour::EndpointIndependent;
        let hairpin = |yes: bool| {
            if !eim {
                Value::unmeasured(NEEDS_EIM)
            } else if yes {
                Value::Hairpin { as_public: true }
            } else {
                Value::flag(false)
            }
        };
        let secs = |s: u64| Value::Seconds { alive_s: s as f64, dead_s: s as f64 };
        let t = &profile.timeouts;
        vec![
            (Key::Mapping, Value::Behaviour { behaviour: profile.mapping }),
            (Key::Filtering, Value::Behaviour { behaviour: profile.filtering }),
            (Key::PortPreservation, Value::flag(profile.port_preservation)),
            (Key::PortParity, Value::flag(false)),
            (Key::HairpinningUdp, hairpin(profile.hairpinning)),
            (Key::HairpinningTcp, hairpin(profile.hairpinning && profile.filtering == Behaviour::EndpointIndependent)),
            (Key::TcpSimultaneousOpen, Value::flag(true)),
            (Key::IcmpErrors, Value::flag(!profile.blocked.contains(&Protocol::Icmp))),
            (Key::FragmentsOut, Value::flag(!profile.drop_fragments)),
            (Key::FragmentsIn, Value::flag(!profile.drop_fragments)),
            (Key::UdpTimeout, secs(t.udp)),
            (Key::TcpEstablishedTimeout, secs(t.tcp_established)),
            (Key::TcpTransitoryTimeout, secs(t.tcp_transitory)),
            (Key::IcmpTimeout, secs(t.icmp)),
            (
                Key::GreTimeout,
                // Plain GRE is mapped by address, unless the profile drops GRE
                // or sends it with a header checksum no host accepts.
                if profile.pptp == PptpMode::Off || profile.blocked.contains(&Protocol::Gre) || profile.bad_gre_checksum
                {
                    Value::unmeasured("no GRE crosses")
                } else {
                    secs(t.other)
                },
            ),
            (
                Key::EspTimeout,
                // Raw ESP by address, by SPI or through the tracker: an
                // answered flow lives `other` in each.
                if profile.ipsec == IpsecMode::Off || profile.blocked.contains(&Protocol::Esp) {
                    Value::unmeasured("no ESP crosses")
                } else {
                    secs(t.other)
                },
            ),
        ]
    }

    /// Where the measured values differ from `expected`, one line each.
    pub fn disagreements(&self, expected: &[(Key, Value)]) -> Vec<String> {
        expected
            .iter()
            .filter_map(|(key, want)| match self.get(*key) {
                Some(got) if got.agrees_with(want) => None,
                Some(got) => Some(format!("{}: measured {got}, expected {want}", key.title())),
                None => Some(format!("{}: not in the table", key.title())),
            })
            .collect()
    }

    /// The table as text, one row a line.
    pub fn text(&self) -> String {
        let width = self.rows.iter().map(|r| r.key.title().len()).max().unwrap_or(0);
        let vwidth = self.rows.iter().map(|r| r.value.to_string().len()).max().unwrap_or(0).min(40);
        let mut out = format!("NAT behaviour of {}:\n", self.router);
        for r in &self.rows {
            out += &format!("  {:width$}  {:vwidth$}  {}\n", r.key.title(), r.value.to_string(), r.meaning);
        }
        out
    }
}

const NEEDS_EIM: &str = "needs endpoint-independent mapping (a LAN host's public endpoint differs per destination)";

/// NAT-T keepalives: strongSwan and most IKE daemons send one every 20 s.
const NAT_T_KEEPALIVE_S: f64 = 20.0;
/// WireGuard's usual PersistentKeepalive.
const WG_KEEPALIVE_S: f64 = 25.0;
/// PPTP's echo interval (RFC 2637 suggests 60 s of idle).
const PPTP_ECHO_S: f64 = 60.0;

/// What `value` of `key` means for VPNs.
pub fn meaning(key: Key, value: &Value) -> String {
    use Behaviour::*;
    let s = match (key, value) {
        (_, Value::Unmeasured { .. }) => return String::new(),
        (Key::Mapping, Value::Behaviour { behaviour: EndpointIndependent }) => {
            "one public endpoint per LAN socket: IKE, NAT-T, WireGuard and OpenVPN peers see a stable endpoint"
        }
        (Key::Mapping, Value::Behaviour { .. }) => {
            "a new public port per destination: client-to-server VPNs work; peer-to-peer tunnels (WireGuard meshes) cannot punch through"
        }
        (Key::Filtering, Value::Behaviour { behaviour: EndpointIndependent }) => {
            "anyone may send to an open mapping: a server answering from a new port gets in, and so does everyone else"
        }
        (Key::Filtering, Value::Behaviour { behaviour: AddressDependent }) => {
            "the server's address only: an LNS answering from a port other than 1701 still reaches its client"
        }
        (Key::Filtering, Value::Behaviour { .. }) => {
            "the exact server endpoint only: an LNS answering from a port other than 1701 is dropped"
        }
        (Key::PortPreservation, Value::Flag { yes: true }) => {
            "a lone client keeps UDP 500 and 1701: servers that insist on those source ports accept it"
        }
        (Key::PortPreservation, Value::Flag { yes: false }) => {
            "IKE leaves from a port other than 500 (both ends move to NAT-T at once); L2TP servers that answer to 1701 fail"
        }
        (Key::PortParity, _) => "no VPN depends on it (RTP does)",
        (Key::HairpinningUdp | Key::HairpinningTcp, Value::Hairpin { as_public: true }) => {
            "a LAN client reaches a VPN server behind the same router by its public address"
        }
        (Key::HairpinningUdp | Key::HairpinningTcp, Value::Hairpin { as_public: false }) => {
            "a server behind the same router sees the client's LAN address, not the public one (RFC 4787 REQ-9)"
        }
        (Key::HairpinningTcp, Value::Flag { yes: false }) => {
            "a LAN client cannot reach a TCP server behind the same router by its public address without a port forward"
        }
        (Key::HairpinningUdp, _) => {
            "a LAN client cannot reach a VPN server behind the same router by its public address"
        }
        (Key::TcpSimultaneousOpen, Value::Flag { yes: true }) => {
            "TCP hole punching can work (with endpoint-independent mapping): two peers behind NATs can open a TCP tunnel to each other"
        }
        (Key::TcpSimultaneousOpen, _) => {
            "TCP hole punching fails (RFC 5382 REQ-2); VPNs over TCP to a server are unaffected"
        }
        (Key::IcmpErrors, Value::Flag { yes: true }) => {
            "path MTU discovery works through the NAT: large tunnelled packets are not black-holed"
        }
        (Key::IcmpErrors, _) => "path MTU discovery fails through the NAT: large tunnelled packets vanish",
        (Key::FragmentsOut | Key::FragmentsIn, Value::Flag { yes: true }) => {
            "large IKE messages (certificate chains) cross as IP fragments"
        }
        (Key::FragmentsOut | Key::FragmentsIn, _) => {
            "IKE with certificates fails unless IKE fragmentation (RFC 7383) is on at both ends"
        }
        (Key::UdpTimeout, Value::AtLeast { s }) if *s <= WG_KEEPALIVE_S => {
            return format!(
                "lasts over {s:.0} s; a longer budget tells whether NAT-T ({NAT_T_KEEPALIVE_S:.0} s) and WireGuard ({WG_KEEPALIVE_S:.0} s) keepalives hold"
            );
        }
        (Key::UdpTimeout, v) => return udp_meaning(lasts(v)),
        (Key::TcpEstablishedTimeout, v) => {
            return against_keepalive(
                v,
                PPTP_ECHO_S,
                "PPTP's 60 s echo keeps its control connection",
                |t| {
                    format!(
                        "under PPTP's 60 s echo: an idle PPTP control connection or OpenVPN over TCP dies after {t:.0} s"
                    )
                },
                "PPTP's 60 s echo keeps its control connection",
            );
        }
        (Key::TcpTransitoryTimeout, _) => "how long a connection that one side has closed keeps its state",
        (Key::IcmpTimeout, _) => {
            "how long a ping's mapping lasts: a monitoring ping slower than this loses its replies"
        }
        (Key::GreTimeout, v) => {
            return against_keepalive(
                v,
                PPTP_ECHO_S,
                "an idle PPTP call keeps its GRE",
                |t| {
                    format!(
                        "an idle PPTP call's GRE dies after {t:.0} s: PPTP's 60 s echo runs on TCP and does not keep it"
                    )
                },
                "an idle PPTP call keeps its GRE mapping a minute or more",
            );
        }
        (Key::EspTimeout, Value::AtLeast { s }) => {
            return format!("an idle raw-ESP tunnel keeps its NAT state over {s:.0} s");
        }
        (Key::EspTimeout, v) => match lasts(v) {
            Some(t) => {
                return format!(
                    "an idle raw-ESP tunnel's NAT state dies after {t:.0} s: the server's ESP is dropped until the client sends again (IKE's DPD, on UDP, does not refresh it); NAT-T (ESP in UDP 4500, with keepalives) avoids it"
                );
            }
            None => "",
        },
        _ => "",
    };
    s.to_string()
}

/// What timeout `v` means beside something that keeps a flow alive every
/// `every` seconds: `unsure` is what a longer budget would tell, `short`
/// says what a shorter timeout breaks, `enough` that it is long enough.
fn against_keepalive(v: &Value, every: f64, unsure: &str, short: impl Fn(f64) -> String, enough: &str) -> String {
    match (v, lasts(v)) {
        (Value::AtLeast { s }, _) if *s < every => {
            format!("lasts over {s:.0} s; a longer budget tells whether {unsure}")
        }
        (_, Some(t)) if t < every => short(t),
        (_, Some(_)) => enough.to_string(),
        (_, None) => String::new(),
    }
}

/// The shortest an idle flow is known to last.
fn lasts(v: &Value) -> Option<f64> {
    match v {
        Value::Seconds { alive_s, .. } => Some(*alive_s),
        Value::AtLeast { s } => Some(*s),
        _ => None,
    }
}

fn udp_meaning(t: Option<f64>) -> String {
    match t {
        None => String::new(),
        Some(t) if t > WG_KEEPALIVE_S => format!(
            "NAT-T keepalives ({NAT_T_KEEPALIVE_S:.0} s) keep IKE tunnels; WireGuard needs PersistentKeepalive under {t:.0} s (25 does)"
        ),
        Some(t) if t > NAT_T_KEEPALIVE_S => format!(
            "NAT-T keepalives ({NAT_T_KEEPALIVE_S:.0} s) keep IKE tunnels; WireGuard's usual 25 s keepalive is too long: set it under {t:.0} s"
        ),
        Some(t) => format!(
            "shorter than NAT-T keepalives ({NAT_T_KEEPALIVE_S:.0} s): idle IKE, L2TP, WireGuard and OpenVPN tunnels lose their mapping; keepalives must be under {t:.0} s"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_agrees_when_the_profile_value_is_inside_the_bracket() {
        let want = Value::Seconds { alive_s: 30.0, dead_s: 30.0 };
        assert!(Value::Seconds { alive_s: 29.5, dead_s: 30.5 }.agrees_with(&want));
        assert!(!Value::Seconds { alive_s: 30.5, dead_s: 31.0 }.agrees_with(&want));
        assert!(Value::AtLeast { s: 20.0 }.agrees_with(&want));
        assert!(!Value::AtLeast { s: 40.0 }.agrees_with(&want));
        assert!(!Value::flag(true).agrees_with(&want));
    }

    #[test]
    fn the_default_profile_expects_what_rfc4787_recommends() {
        let m = Measured::new("rust", Measured::expected(&Profile::default()));
        assert_eq!(m.get(Key::Mapping), Some(&Value::Behaviour { behaviour: Behaviour::EndpointIndependent }));
        assert_eq!(m.get(Key::HairpinningUdp), Some(&Value::Hairpin { as_public: true }));
        assert!(m.disagreements(&Measured::expected(&Profile::default())).is_empty());
        let sym = Profile::preset("symmetric").expect("preset");
        let d = m.disagreements(&Measured::expected(&sym));
        assert!(d.iter().any(|l| l.starts_with("mapping")), "{d:?}");
        assert!(m.text().contains("WireGuard needs PersistentKeepalive under 300 s"), "{}", m.text());
    }

    #[test]
    fn a_short_udp_timeout_is_explained_against_keepalives() {
        assert!(udp_meaning(Some(15.0)).starts_with("shorter than NAT-T keepalives"));
        assert!(udp_meaning(Some(22.0)).contains("too long"));
        assert!(udp_meaning(Some(30.0)).contains("under 30 s"));
        let over = meaning(Key::UdpTimeout, &Value::AtLeast { s: 4.0 });
        assert!(over.starts_with("lasts over 4 s"), "{over}");
    }
}
