//! PPTP in lab hosts: pptpd as the server (its `ppp` option names our PPP
//! peer) and the pptp client (run by `/usr/sbin/pppd`, our PPP peer inside
//! lab hosts, on a pty), each call a `pppN` link.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::lab::{Cmd, Host, Process, Proto, Result, StartGate};

use super::pppd::{self, PppConfig, PppLink};

/// The PPTP control port.
pub const PPTP_PORT: u16 = crate::wire::pptp::PORT;

/// A pptpd server.
#[derive(Debug, Clone)]
pub struct PptpdConfig {
    /// The address to listen on.
    pub listen: Ipv4Addr,
    /// The server's PPP address.
    pub local_ip: Ipv4Addr,
    /// Addresses handed to clients, first to last (same /24).
    pub range: (Ipv4Addr, Ipv4Addr),
    /// What its PPP peer is told.
    pub ppp: PppConfig,
}

/// Drops the ICMP protocol-unreachable errors `host` would send about GRE.
///
/// pptpd and pptp carry GRE on raw sockets here (the kernel has no PPTP
/// module), and under load this kernel sometimes hands a GRE packet to no
/// raw socket although one is open for it (the host's `IpInUnknownProtos`
/// counter grows while the call runs). It then answers the peer with a
/// protocol-unreachable, and the peer's raw socket reports that error on
/// its next read, which pptpd and pptp treat as the end of the call. A
/// kernel PPTP stack never sends those; this rule keeps the lab from
/// sending them either. The packet itself is lost, as on any lossy link.
pub fn quiet_gre_unreachables(host: &Host<'_>) -> Result<()> {
    let rules = "table ip vpn_passthrough_gre {\n  chain out {\n    type filter hook output priority filter; policy accept;\n    icmp type destination-unreachable icmp code prot-unreachable drop\n  }\n}\n";
    let file = host.write_conf("gre-unreachables.nft", rules)?;
    host.run_ok(Cmd::argv(&["nft", "-f", &file.to_string_lossy()]).label("nft"))?;
    Ok(())
}

/// pptpd.conf.
pub fn pptpd_conf(c: &PptpdConfig, ppp: &str, options: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "ppp {ppp}\noption {options}\nlisten {}\nlocalip {}", c.listen, c.local_ip);
    let (first, last) = (c.range.0.octets(), c.range.1.octets());
    let _ = writeln!(s, "remoteip {}-{}", c.range.0, last[3].max(first[3]));
    s
}

/// pptpd running in a host.
pub struct Pptpd<'lab> {
    host: Host<'lab>,
    process: Process,
}

impl<'lab> Pptpd<'lab> {
    /// Writes the config, starts pptpd in the foreground, waits for TCP 1723.
    pub fn start(host: Host<'lab>, c: &PptpdConfig) -> Result<Pptpd<'lab>> {
        let pptpd = crate::prereq::require_tool("pptpd")?;
        let ppp = pppd::ppp_binary()?;
        quiet_gre_unreachables(&host)?;
        let options = pppd::write_options(&host, "options.pptpd", &c.ppp)?;
        let conf = host.write_conf("pptpd.conf", &pptpd_conf(c, &ppp.to_string_lossy(), &options.to_string_lossy()))?;
        let pid = host.run_dir()?.join("pptpd.pid");
        let cmd = Cmd::new(pptpd.to_string_lossy())
            .args(&["--fg", "--debug", "--conf", &conf.to_string_lossy(), "--pidfile", &pid.to_string_lossy()])
            .label("pptpd");
        let process = host.spawn(cmd)?;
        process.or_stop(process.wait_for_port(Proto::Tcp, PPTP_PORT, Duration::from_secs(10)))?;
        Ok(Pptpd { host, process })
    }

    /// The pptpd process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The PPP links the server has up, one per call.
    pub fn links(&self) -> Result<Vec<PppLink>> {
        pppd::ppp_links(&self.host)
    }

    /// Waits until the server has a PPP link to `peer`.
    pub fn wait_for_link(&self, peer: Ipv4Addr, timeout: Duration) -> Result<PppLink> {
        pppd::wait_for_link(&self.host, &self.process, Some(peer), timeout)
    }
}

/// The PPP options file of a pptp client, in the host's conf directory.
const OPTIONS: &str = "options.pptp";

/// The pptp client running in a host: one call to one server.
pub struct PptpClient<'lab> {
    host: Host<'lab>,
    process: Process,
}

impl<'lab> PptpClient<'lab> {
    /// Starts a call to `server`: our PPP peer, running pptp on its line.
    pub fn start(host: Host<'lab>, server: Ipv4Addr, ppp: &PppConfig) -> Result<PptpClient<'lab>> {
        Self::prepare(&host, ppp)?;
        Self::call(host, server, None)
    }

    /// Everything a call needs before it starts: the tools checked, the
    /// host's GRE unreachables silenced, the PPP options written. Clients
    /// that call at once are all prepared first, so that the launches
    /// behind their start gate follow one another closely.
    pub fn prepare(host: &Host<'lab>, ppp: &PppConfig) -> Result<()> {
        crate::prereq::require_tool("pptp")?;
        pppd::require_ppp_peer(host)?;
        quiet_gre_unreachables(host)?;
        pppd::write_options(host, OPTIONS, ppp)?;
        std::fs::create_dir_all(host.run_dir()?.join("pptp"))
            .map_err(|e| crate::lab::LabError::io("creating the pptp socket directory", e))?;
        Ok(())
    }

    /// Starts the call of a host [`prepare`](Self::prepare)d; behind
    /// `gate`, if given, so that it starts with the calls of other hosts.
    pub fn call(host: Host<'lab>, server: Ipv4Addr, gate: Option<&StartGate>) -> Result<PptpClient<'lab>> {
        let pptp = crate::prereq::require_tool("pptp")?;
        let options = host.conf_dir()?.join(OPTIONS);
        // pppd runs pptp on a pty (`pty "pptp SERVER --nolaunchpppd"`, as
        // pptp's manual suggests): when pptp starts pppd itself, it sleeps
        // 2 s before it carries the call's first frame.
        let pty = format!(
            "{} {server} --nolaunchpppd --nohostroute --loglevel 2 --logstring {}",
            pptp.to_string_lossy(),
            host.name()
        );
        let cmd = Cmd::new(pppd::PPPD).args(&["pty", &pty, "file", &options.to_string_lossy()]).label("pptp");
        let process = match gate {
            Some(gate) => gate.spawn(&host, cmd)?,
            None => host.spawn(cmd)?,
        };
        Ok(PptpClient { host, process })
    }

    /// The pptp process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Waits for the call's PPP link.
    pub fn wait_for_link(&self, timeout: Duration) -> Result<PppLink> {
        pppd::wait_for_link(&self.host, &self.process, None, timeout)
    }

    /// The PPP links this host has up.
    pub fn links(&self) -> Result<Vec<PppLink>> {
        pppd::ppp_links(&self.host)
    }

    /// Hangs up: stops the PPP peer (and so pptp).
    pub fn stop(&self) -> Result<()> {
        self.process.stop(Duration::from_secs(5)).map(|_| ())
    }
}
