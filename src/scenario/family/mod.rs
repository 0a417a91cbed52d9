//! The VPN families a scenario can play, one module each, behind one trait.
//!
//! A family knows its endpoints: which programs it needs, how a server and a
//! client start in a lab host, what makes a tunnel up and which addresses
//! its traffic uses, how it rekeys, and which situations its stories need
//! that only the captures can prove (premises). The player
//! ([`super::play`]) tells the story and names no family; [`of`] is the
//! one list that maps a [`Family`] to its module.

mod esp;
mod ipsec;
mod l2tp;
mod openvpn;
mod pptp;
mod wireguard;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::format::{Family, IpsecAuth, MisdeliveredTo, Scenario, Step, Target, TunnelState};
use super::observed::{self, Check, Observed};
use crate::capture::Capture;
use crate::lab::{Host, Lab, LabError, Process, Result, StartGate};
use crate::router::Shape;
use crate::vpn::pki::{Credentials, TestPki};
use crate::vpn::pppd::PppLink;
use crate::vpn::strongswan::Auth;

/// The password of every PPP account and the IPsec pre-shared key.
const SECRET: &str = "lab secret";

/// The module that plays `family`.
pub fn of(family: Family) -> &'static dyn VpnFamily {
    match family {
        Family::Pptp => &pptp::Pptp,
        Family::L2tp => &l2tp::L2tp,
        Family::L2tpIpsec => &ipsec::L2TP_IPSEC,
        Family::Ikev2 => &ipsec::IKEV2,
        Family::Ikev1 => &ipsec::IKEV1,
        Family::Esp => &esp::Esp,
        Family::Openvpn => &openvpn::OPENVPN_UDP,
        Family::OpenvpnTcp => &openvpn::OPENVPN_TCP,
        Family::Wireguard => &wireguard::Wireguard,
    }
}

/// One VPN family's endpoints in a lab.
pub trait VpnFamily: Sync {
    /// The programs (names of [`crate::prereq::TOOLS`]) its endpoints run
    /// in scenario `s`.
    fn tools(&self, s: &Scenario) -> &'static [&'static str];

    /// The IPsec authentications the preflight proves it with (one, for a
    /// family without IPsec).
    fn preflight_auths(&self) -> &'static [IpsecAuth] {
        &[IpsecAuth::Psk]
    }

    /// Whether the clients of scenario `s` read a constant `/dev/random`,
    /// so that they pick the same "random" values (a PPTP Call ID).
    fn constant_entropy(&self, _s: &Scenario) -> bool {
        false
    }

    /// Whether its clients count their own echoes (both directions cross,
    /// or neither does) rather than being pinged through.
    fn counts_own_echoes(&self) -> bool {
        false
    }

    /// Starts server `j`'s endpoint and waits until it listens.
    fn start_server<'l>(&self, stage: &mut Stage<'_, 'l>, j: usize) -> Result<Box<dyn Daemons + 'l>>;

    /// Does for client `i` what its dial to server `j` needs beforehand
    /// and takes time: tool checks, configs, firewall rules. A `connect`
    /// step prepares every client before the first dials, so that the
    /// dials of clients that start together follow one another closely.
    fn prepare(&self, _stage: &mut Stage<'_, '_>, _i: usize, _j: usize) -> Result<()> {
        Ok(())
    }

    /// Starts client `i`'s endpoint towards server `j` (already started,
    /// and `i` [`prepare`](Self::prepare)d), without waiting for its
    /// tunnel: a `connect` step dials every client (at once, staggered or
    /// one by one) and then awaits each tunnel with [`Dialing::wait`]. A
    /// tunnel that does not come up is an outcome, noted in the
    /// [`Tunnel`], not an error. A process spawned behind
    /// [`Stage::gate`] does not run until every client has dialled, so
    /// `dial` must not wait on it.
    fn dial<'l>(&self, stage: &mut Stage<'_, 'l>, i: usize, j: usize) -> Result<Box<dyn Dialing<'l> + 'l>>;

    /// Runs after every client of a `connect` step has dialled.
    fn after_connect(&self, _stage: &Stage<'_, '_>, _server: &dyn Daemons, _lan: &Capture) -> Result<()> {
        Ok(())
    }

    /// The situations this family's stories need, checked from the
    /// captures (see [`super::expect`]).
    fn premises(&self, _s: &Scenario, _o: &Observed, _target: Target) -> Vec<Check> {
        Vec::new()
    }

    /// The LAN addresses that client `i`'s tunnel traffic was delivered
    /// to, as far as the captures tell (for `misdelivered`). None, for a
    /// family whose traffic the captures cannot attribute (encrypted, or
    /// with no per-client mark they read): then it must say nothing in
    /// [`VpnFamily::tells_whose_traffic`] either.
    fn reached_by(&self, _o: &Observed, _i: usize) -> BTreeSet<Ipv4Addr> {
        BTreeSet::new()
    }

    /// The family-only settings of `[endpoints]` it reads (see
    /// [`crate::scenario::format::Endpoints::family_settings_changed`]); a
    /// file that sets another is refused when it loads.
    fn settings(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether the captures tell whose tunnel traffic a packet is
    /// ([`VpnFamily::reached_by`] says something).
    fn tells_whose_traffic(&self) -> bool {
        false
    }
}

/// What a scenario file asks that its family cannot do: the file and the
/// key, and why.
pub fn check(s: &Scenario) -> std::result::Result<(), String> {
    let f = of(s.file.family);
    let path = s.path.display();
    let moves_bytes = s.file.steps.iter().any(|st| matches!(st, Step::Traffic { bytes, .. } if *bytes > 0));
    if moves_bytes && f.counts_own_echoes() {
        return Err(format!(
            "{path}: step traffic: `bytes` needs a tunnel that carries TCP; {} clients count their own echoes",
            s.file.family.name()
        ));
    }
    if let Some(key) = s.file.endpoints.family_settings_changed().into_iter().find(|k| !f.settings().contains(k)) {
        return Err(format!(
            "{path}: endpoints.{key}: {} endpoints do not read it{}",
            s.file.family.name(),
            match f.settings() {
                [] => String::new(),
                keys => format!("; they read {}", keys.join(", ")),
            }
        ));
    }
    let rekeys = s.file.steps.iter().any(|st| matches!(st, Step::Rekey { .. }));
    if s.file.endpoints.tunnels_per_client > 1 && (moves_bytes || rekeys) {
        return Err(format!(
            "{path}: endpoints.tunnels_per_client: a client with several tunnels pings through each; `bytes` and `rekey` steps are for one tunnel"
        ));
    }
    for (kind, e) in &s.file.expect {
        if !f.tells_whose_traffic() && e.misdelivered.values().any(|to| *to == MisdeliveredTo::Nobody) {
            return Err(format!(
                "{path}: expect.{kind}.misdelivered: the captures cannot tell whose {} traffic a packet is, so \"nobody\" cannot be checked",
                s.file.family.name()
            ));
        }
    }
    Ok(())
}

/// For a story that idles longer than the Rust NAT's UDP timeout (a `wait`
/// step past it) with every tunnel up: that c1 really fell silent on the LAN
/// for longer than the timeout (no keepalive, or a longer one), or that its
/// keepalives kept every silence shorter.
fn idle_premise(s: &Scenario, o: &Observed, target: Target) -> Option<Check> {
    let Target::Rust(mode) = target else { return None };
    let timeout = s.profile(mode).ok()?.timeouts.udp as f64;
    let waits = s.file.steps.iter().any(|st| matches!(st, Step::Wait { seconds } if *seconds > timeout));
    if !waits || !o.tunnels.iter().all(|t| *t == TunnelState::Up) {
        return None;
    }
    let keepalive = s.file.endpoints.keepalive_s as f64;
    let c1 = o.shape.seen_as(1);
    // The silence after c1's last packet lasts until the captures end.
    let end = o.lan.packets.iter().chain(&o.wan.packets).map(|p| p.time).max();
    let times: Vec<_> = o.lan.packets.iter().filter(|p| p.src == c1).map(|p| p.time).chain(end).collect();
    let silence = times.windows(2).map(|w| w[1].saturating_sub(w[0]).as_secs_f64()).fold(0.0, f64::max);
    let (what, holds) = if keepalive == 0.0 || keepalive > timeout {
        (format!("c1 falls silent on the LAN for longer than the NAT's UDP timeout ({timeout} s)"), silence > timeout)
    } else {
        (
            format!("c1's keepalives keep every silence shorter than the NAT's UDP timeout ({timeout} s)"),
            silence < timeout,
        )
    };
    Some(observed::premise(what, holds, format!("longest silence {silence:.1} s")))
}

/// A running VPN endpoint: a server's or a client's daemons.
pub trait Daemons {
    /// Its processes, for logs, liveness and stopping.
    fn processes(&self) -> Vec<&Process>;

    /// A server: waits until its daemon holds the PPP link whose client
    /// end has address `peer`.
    fn holds_link(&self, _peer: Ipv4Addr, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    /// A client: renews its keys; `None` when the family has none.
    fn rekey(&self, _timeout: Duration) -> Option<Result<()>> {
        None
    }

    /// A client that measures its own traffic instead of being pinged
    /// through: whether everything it sent came back, and whether it heard
    /// another client's traffic.
    fn own_traffic(&self) -> Option<OwnTraffic> {
        None
    }
}

/// What a client that measures its own traffic saw.
#[derive(Debug, Clone, Copy)]
pub struct OwnTraffic {
    /// Everything it sent came back.
    pub all_echoed: bool,
    /// It received traffic meant for another client.
    pub foreign: bool,
}

/// A client that has dialled and whose tunnel is not awaited yet.
pub trait Dialing<'l> {
    /// Waits up to `timeout` for the tunnel to `server`.
    fn wait(self: Box<Self>, server: &dyn Daemons, timeout: Duration) -> Result<(Box<dyn Daemons + 'l>, Tunnel)>;
}

/// A client that has dialled, its wait a closure that owns what it
/// started.
pub struct Awaiting<F>(F);

impl<F> Awaiting<F> {
    /// The dialling client whose tunnel `wait` awaits.
    pub fn boxed<'l>(wait: F) -> Box<dyn Dialing<'l> + 'l>
    where
        F: FnOnce(&dyn Daemons, Duration) -> Result<(Box<dyn Daemons + 'l>, Tunnel)> + 'l,
    {
        Box::new(Awaiting(wait))
    }
}

impl<'l, F> Dialing<'l> for Awaiting<F>
where
    F: FnOnce(&dyn Daemons, Duration) -> Result<(Box<dyn Daemons + 'l>, Tunnel)>,
{
    fn wait(self: Box<Self>, server: &dyn Daemons, timeout: Duration) -> Result<(Box<dyn Daemons + 'l>, Tunnel)> {
        (self.0)(server, timeout)
    }
}

/// A client's tunnel as the steps left it.
#[derive(Debug, Default)]
pub struct Tunnel {
    /// Up and carrying traffic.
    pub up: bool,
    /// The client's address inside the tunnel.
    pub local: Option<Ipv4Addr>,
    /// The server's address inside the tunnel.
    pub remote: Option<Ipv4Addr>,
    /// Why it is down.
    pub note: Option<String>,
}

impl Tunnel {
    /// A tunnel down, with why.
    pub fn down(note: impl Into<String>) -> Tunnel {
        Tunnel { note: Some(note.into()), ..Tunnel::default() }
    }

    /// The tunnel a PPP link makes, once `server`'s daemon holds it too; a
    /// link that did not come up is a tunnel down, with the reason.
    fn linked(link: Result<PppLink>, server: &dyn Daemons) -> Result<Tunnel> {
        match link {
            Ok(link) => {
                server.holds_link(link.local, Duration::from_secs(5))?;
                Ok(Tunnel { up: true, local: Some(link.local), remote: Some(link.peer), note: None })
            }
            Err(err) => Ok(Tunnel::down(err.to_string())),
        }
    }
}

/// What a family's endpoints are set up from: the scenario, the lab, its
/// shape, the run's certificate authority (made when first needed), and
/// the start gate of clients that dial at once.
pub struct Stage<'a, 'l> {
    /// The scenario being played.
    pub scenario: &'a Scenario,
    /// The lab.
    pub lab: &'l Lab,
    /// The lab's shape.
    pub shape: &'a Shape,
    /// The run's certificate authority, once made.
    pub pki: &'a mut Option<TestPki>,
    /// While clients dial at once: the gate a family whose clients must
    /// start together (PPTP) spawns them behind. It opens once every
    /// client's `dial` has returned, so nothing spawned behind it can be
    /// waited on inside `dial`.
    pub gate: Option<&'a StartGate>,
}

impl<'l> Stage<'_, 'l> {
    /// A host of the lab.
    pub fn host(&self, name: &str) -> Result<Host<'l>> {
        self.lab.host(name)
    }

    /// How long a client may take to bring its tunnel up.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.scenario.file.endpoints.connect_timeout_s)
    }

    /// IPsec credentials for `name`: the pre-shared key, or a certificate
    /// of the run's authority.
    fn auth(&mut self, name: &str) -> Result<Auth> {
        if self.scenario.file.endpoints.auth == IpsecAuth::Psk {
            return Ok(Auth::Psk(SECRET.into()));
        }
        Ok(Auth::Cert(self.certificate(name)?))
    }

    /// A certificate and key for `name` from the run's authority (made
    /// when first needed), and the authority's certificate.
    fn certificate(&mut self, name: &str) -> Result<Credentials> {
        if self.pki.is_none() {
            *self.pki = Some(TestPki::new(&self.lab.dir().join("pki"))?);
        }
        let pki = self.pki.as_ref().ok_or_else(|| LabError::Input("no PKI".into()))?;
        pki.issue(name)
    }
}

/// A scripted peer: one process.
struct Scripted(Process);

impl Scripted {
    /// Starts `cmd` in `host` and waits until it says it is listening.
    fn start(host: Host<'_>, cmd: crate::lab::Cmd) -> Result<Scripted> {
        let p = host.spawn(cmd)?;
        p.or_stop(p.wait_for_log("listening", Duration::from_secs(5)))?;
        Ok(Scripted(p))
    }
}

impl Daemons for Scripted {
    fn processes(&self) -> Vec<&Process> {
        vec![&self.0]
    }
}

/// This crate's scripted peer (`vpn-passthrough peer …`) as a command.
fn peer_cmd(args: &[&str], label: &str) -> Result<crate::lab::Cmd> {
    let bin = crate::lab::own_binary()?;
    Ok(crate::lab::Cmd::new(bin.to_string_lossy()).arg("peer").args(args).label(label))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scenario(family: &str, traffic: &str, full: &str) -> Scenario {
        let text = format!(
            "family = \"{family}\"\ndescription = \"d\"\nmodes = [\"full\"]\n\n[topology]\nclients = 2\n\n\
             [[step]]\ndo = \"connect\"\n\n[[step]]\ndo = \"traffic\"\n{traffic}\n\n\
             [expect.full]\n{full}\n\n[expect.linux]\ntunnels = [\"up\", \"up\"]\n"
        );
        Scenario::parse(Path::new(&format!("scenarios/{family}/x.toml")), &text)
            .expect("the file itself is well formed")
    }

    #[test]
    fn a_setting_the_family_does_not_read_is_refused() {
        let with = |family: &str, setting: &str| {
            let text = format!(
                "family = \"{family}\"\ndescription = \"d\"\nmodes = [\"full\"]\n\n[endpoints]\n{setting}\n\n\
                 [[step]]\ndo = \"connect\"\n\n[expect.full]\ntunnels = [\"up\"]\n\n[expect.linux]\ntunnels = [\"up\"]\n"
            );
            let s = Scenario::parse(Path::new(&format!("scenarios/{family}/x.toml")), &text).expect("well formed");
            check(&s)
        };
        assert_eq!(with("openvpn", "float = true"), Ok(()));
        let e = with("wireguard", "float = true").expect_err("float is OpenVPN's");
        assert!(e.contains("endpoints.float: wireguard endpoints do not read it"), "{e}");
        let e = with("pptp", "ike_fragmentation = true").expect_err("IPsec's");
        assert!(e.contains("they read same_call_id"), "{e}");
        assert_eq!(with("ikev2", "ike_fragmentation = true"), Ok(()));
    }

    #[test]
    fn a_file_that_asks_what_its_family_cannot_do_is_refused() {
        let nobody = "misdelivered = { c1 = \"nobody\" }";
        for (family, traffic, full, refused) in [
            ("esp", "bytes = 10", "", Some("`bytes` needs a tunnel that carries TCP; esp clients")),
            ("pptp", "bytes = 10", "", None),
            ("l2tp", "", nobody, Some("expect.full.misdelivered: the captures cannot tell whose l2tp")),
            ("ikev2", "", nobody, Some("cannot tell whose ikev2")),
            ("esp", "", nobody, None),
            ("pptp", "", nobody, None),
        ] {
            let got = check(&scenario(family, traffic, full));
            match refused {
                Some(says) => {
                    let e = got.expect_err(family);
                    assert!(e.starts_with(&format!("scenarios/{family}/x.toml: ")) && e.contains(says), "{e}");
                }
                None => assert_eq!(got, Ok(()), "{family} {traffic} {full}"),
            }
        }
        for family in ["pptp", "l2tp", "ikev2", "wireguard"] {
            let mut s = scenario(family, "", "");
            s.file.steps.insert(0, Step::Connect { clients: None, at_once: true, one_by_one: false, stagger_s: 0.0 });
            assert_eq!(check(&s), Ok(()), "every family dials at once");
        }
    }
}
