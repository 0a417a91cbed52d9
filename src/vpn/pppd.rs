//! The PPP side of PPTP and L2TP endpoints: where the daemons find our
//! PPP peer (`/usr/sbin/pppd` inside lab hosts), the option files they hand
//! it, and the `pppN` links it brings up, read from the host's interfaces.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lab::{Cmd, Host, HostSpec, LabError, Process, Result};
use crate::ppp::session::AuthProto;

/// Where xl2tpd and the pptp client look for pppd; lab hosts see our PPP
/// peer there.
pub const PPPD: &str = "/usr/sbin/pppd";

/// Our PPP peer's program name.
pub const PPP_PEER_BINARY: &str = "vpn-passthrough-pppd";

/// Our PPP peer binary: `$VPN_PASSTHROUGH_PPPD` or beside this program.
pub fn ppp_binary() -> Result<PathBuf> {
    crate::lab::our_binary(PPP_PEER_BINARY, "VPN_PASSTHROUGH_PPPD")
}

/// `spec` with our PPP peer bind-mounted over [`PPPD`], when both exist;
/// hosts that never run a PPP daemon lose nothing by it.
pub fn with_ppp_peer(spec: HostSpec) -> HostSpec {
    match ppp_binary() {
        Ok(bin) if Path::new(PPPD).is_file() => spec.bind(bin, PPPD),
        _ => spec,
    }
}

/// Checks that `host` runs our PPP peer as pppd: the kernel has no PPP, so
/// the real pppd would fail every call.
pub fn require_ppp_peer(host: &Host<'_>) -> Result<()> {
    let out = host.exec(Cmd::argv(&[PPPD, "--version"]).label("pppd-version"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if text.contains(PPP_PEER_BINARY) {
        return Ok(());
    }
    Err(LabError::Input(format!(
        "host '{}': {PPPD} is not the vpn-passthrough PPP peer ({}); build it with `cargo build --bins` \
         and give the host a bind of it over {PPPD} (vpn::pppd::with_ppp_peer)",
        host.name(),
        text.lines().next().unwrap_or("no output").trim()
    )))
}

/// How many clients a lab has at most: a server accepts `client1` to
/// `client200` by default, the names tests and scenarios give their clients.
pub const LAB_CLIENTS: usize = 200;

/// What one end's PPP peer is told: authentication and LCP echoes.
#[derive(Debug, Clone, Default)]
pub struct PppConfig {
    /// What this end requires of its peer.
    pub require: Option<AuthProto>,
    /// The name of this end: a client authenticates with it, a server puts
    /// it in its challenges.
    pub user: String,
    /// The shared secret.
    pub secret: String,
    /// A server's peers: the only names that may authenticate to it, each
    /// with `secret` (its secrets file, as pppd's chap-secrets).
    pub peers: Vec<String>,
    /// Seconds between LCP Echo-Requests (0: none).
    pub echo_interval: u32,
    /// MRU and MTU of the link, when the path below cannot take 1500-byte
    /// frames (PPP inside L2TP inside IPsec).
    pub mtu: Option<u16>,
}

impl PppConfig {
    /// A client that authenticates as `user` with `secret`.
    pub fn client(user: &str, secret: &str) -> PppConfig {
        PppConfig { user: user.into(), secret: secret.into(), echo_interval: 10, ..PppConfig::default() }
    }

    /// A server named `name` that requires `proto` of the lab's clients
    /// (`client1` to `client{LAB_CLIENTS}`), each with `secret`.
    pub fn server(proto: AuthProto, name: &str, secret: &str) -> PppConfig {
        let peers = (1..=LAB_CLIENTS).map(|i| format!("client{i}")).collect();
        PppConfig {
            require: Some(proto),
            user: name.into(),
            secret: secret.into(),
            echo_interval: 10,
            mtu: None,
            peers,
        }
    }

    /// The same accepting only these peer names.
    pub fn peers<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> PppConfig {
        PppConfig { peers: names.into_iter().map(Into::into).collect(), ..self }
    }

    /// The same with frames of at most `mtu` bytes both ways.
    pub fn mtu(self, mtu: u16) -> PppConfig {
        PppConfig { mtu: Some(mtu), ..self }
    }

    /// The same without LCP echoes: the link sends nothing unless IP does.
    pub fn quiet(self) -> PppConfig {
        PppConfig { echo_interval: 0, ..self }
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes our PPP peer's options file `file` into the host's config
/// directory, and for a server the secrets file `<file>.secrets` it names.
pub fn write_options(host: &Host<'_>, file: &str, ppp: &PppConfig) -> Result<PathBuf> {
    let secrets = match ppp.require {
        Some(_) => Some(host.write_conf(&format!("{file}.secrets"), &secrets_file(ppp))?),
        None => None,
    };
    host.write_conf(file, &options_file(ppp, host.log_dir()?, secrets.as_deref()))
}

/// A server's secrets file (pppd's chap-secrets format): each peer with
/// the server's name and the secret.
pub fn secrets_file(ppp: &PppConfig) -> String {
    let mut s = String::from("# client server secret addresses\n");
    for peer in &ppp.peers {
        let _ = writeln!(s, "{} {} {} *", quote(peer), quote(&ppp.user), quote(&ppp.secret));
    }
    s
}

/// An options file for our PPP peer: authentication (a server's secrets in
/// `secrets`, a client's own `password`), echoes, and its log in `log_dir`
/// (`pppd.log`, one line prefix per process).
pub fn options_file(ppp: &PppConfig, log_dir: &Path, secrets: Option<&Path>) -> String {
    let mut s = String::from("# PPP options for vpn-passthrough-pppd\n");
    match ppp.require {
        Some(AuthProto::ChapMd5) => s.push_str("require-chap\n"),
        Some(AuthProto::Pap) => s.push_str("require-pap\n"),
        None => s.push_str("noauth\n"),
    }
    let _ = writeln!(s, "name {}", quote(&ppp.user));
    match secrets {
        // A server checks its peers against its secrets and has no secret
        // of its own to answer a challenge with.
        Some(path) => {
            let _ = writeln!(s, "secrets-file {}", quote(&path.to_string_lossy()));
        }
        None => {
            let _ = writeln!(s, "password {}", quote(&ppp.secret));
        }
    }
    if let Some(mtu) = ppp.mtu {
        let _ = writeln!(s, "mtu {mtu}\nmru {mtu}");
    }
    // An LCP request every second, 5 of them: a link nobody answers is
    // given up after 5 s (pppd's defaults, 3 s and 10, take 30 s). A story
    // whose first packets are dropped still gets its later ones through.
    let _ = writeln!(s, "lcp-restart 1\nlcp-max-configure 5");
    if ppp.echo_interval > 0 {
        let _ = writeln!(s, "lcp-echo-interval {}\nlcp-echo-failure 3", ppp.echo_interval);
    }
    let _ = writeln!(s, "logfile {}", quote(&log_dir.join("pppd.log").to_string_lossy()));
    s
}

/// A PPP link a host has up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PppLink {
    /// The interface (`pppN`).
    pub ifname: String,
    /// This end's address.
    pub local: Ipv4Addr,
    /// The peer's address.
    pub peer: Ipv4Addr,
}

/// The `pppN` links `host` has, with their addresses, as the kernel lists
/// them inside the host's namespace.
pub fn ppp_links(host: &Host<'_>) -> Result<Vec<PppLink>> {
    host.inside(|| links_here(host.name()))
}

/// The `pppN` links of the namespace the calling thread is in. A link
/// counts once it is up: the PPP peer gives the interface its local address,
/// then its peer's, then brings it up, so an interface that is still down
/// may show its local address as the peer's.
fn links_here(host: &str) -> Result<Vec<PppLink>> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| LabError::io(format!("host '{host}': listing interface addresses"), e.into()))?;
    let v4 = |a: Option<nix::sys::socket::SockaddrStorage>| a.and_then(|s| s.as_sockaddr_in().map(|s| s.ip()));
    Ok(addrs
        .filter(|a| a.interface_name.starts_with("ppp") && a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| {
            let local = v4(a.address)?;
            let peer = v4(a.destination)?;
            Some(PppLink { ifname: a.interface_name, local, peer })
        })
        .collect())
}

/// Waits until `host` has a PPP link to `peer` (any peer if `None`); the
/// error names `daemon` and carries the last lines of its log and of the
/// host's `pppd.log`. The wait runs inside the host's namespace.
pub fn wait_for_link(host: &Host<'_>, daemon: &Process, peer: Option<Ipv4Addr>, timeout: Duration) -> Result<PppLink> {
    wait_for_link_unless(host, daemon, peer, timeout, None)
}

/// [`wait_for_link`], ended early when the daemon's log says `gave_up` (a
/// daemon that gives a call up and keeps running).
pub fn wait_for_link_unless(
    host: &Host<'_>,
    daemon: &Process,
    peer: Option<Ipv4Addr>,
    timeout: Duration,
    gave_up: Option<&str>,
) -> Result<PppLink> {
    let what = format!("bring a PPP link up to {}", peer.map_or("its peer".into(), |p| p.to_string()));
    let name = host.name();
    host.inside(|| {
        let mut found = None;
        let ready = || {
            found = links_here(name).ok().and_then(|l| l.into_iter().find(|l| peer.is_none_or(|p| l.peer == p)));
            found.is_some()
        };
        match gave_up {
            Some(needle) => daemon.wait_until_unless_log(&what, timeout, needle, ready)?,
            None => daemon.wait_until(&what, timeout, ready)?,
        }
        found.ok_or_else(|| LabError::Input(format!("host '{name}': the PPP link vanished")))
    })
    .map_err(|e| with_ppp_log(host, e))
}

/// `e` with the last lines of the host's logs after it (its daemons,
/// `pppd.log`, `syslog.log`).
pub fn with_ppp_log(host: &Host<'_>, e: LabError) -> LabError {
    let tails = host.log_tails(12);
    if tails.is_empty() {
        return e;
    }
    LabError::Input(format!("{e}\n{tails}"))
}
