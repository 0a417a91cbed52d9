//! xl2tpd in lab hosts, as LNS and as LAC, in userspace mode (the kernel
//! has no L2TP): each host gets its own xl2tpd.conf, secrets file, pid file
//! and control FIFO, and xl2tpd runs our PPP peer for each call.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::lab::{Cmd, Host, LabError, Process, Proto, Result};
use crate::ppp::session::AuthProto;

use super::pppd::{self, PppConfig, PppLink};

/// The L2TP port.
pub const L2TP_PORT: u16 = 1701;

/// An LNS (the server end).
#[derive(Debug, Clone)]
pub struct LnsConfig {
    /// The address to listen on.
    pub listen: Ipv4Addr,
    /// The server's PPP address.
    pub local_ip: Ipv4Addr,
    /// Addresses handed to clients, first to last.
    pub range: (Ipv4Addr, Ipv4Addr),
    /// What its PPP peer is told.
    pub ppp: PppConfig,
}

/// A LAC (the client end), dialling one LNS.
#[derive(Debug, Clone)]
pub struct LacConfig {
    /// The LAC's section name, used to connect and disconnect.
    pub name: String,
    /// The LNS address.
    pub lns: Ipv4Addr,
    /// The UDP port xl2tpd sends from (1701 like most clients, or another).
    pub port: u16,
    /// What its PPP peer is told.
    pub ppp: PppConfig,
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// How often xl2tpd sends a control message again before it gives the
/// tunnel up: after 1 s, then 2 s, so a tunnel nobody answers is given up
/// after 3 s (its default, 5, takes 31 s). A story whose first packets are
/// dropped still gets its later ones through.
const MAX_RETRIES: u32 = 2;

/// What xl2tpd logs when it gives a tunnel up.
const GAVE_UP: &str = "Maximum retries exceeded";

/// xl2tpd.conf for an LNS.
pub fn lns_conf(c: &LnsConfig, pppoptfile: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "[global]\nlisten-addr = {}\nport = {L2TP_PORT}\naccess control = no\ndebug tunnel = yes\nmax retries = {MAX_RETRIES}\n",
        c.listen
    );
    let _ = writeln!(s, "[lns default]\nip range = {}-{}\nlocal ip = {}", c.range.0, c.range.1, c.local_ip);
    let chap = c.ppp.require == Some(AuthProto::ChapMd5);
    let pap = c.ppp.require == Some(AuthProto::Pap);
    let _ = writeln!(s, "require authentication = {}", yes(c.ppp.require.is_some()));
    let _ = writeln!(s, "require chap = {}\nrefuse chap = {}", yes(chap), yes(!chap));
    let _ = writeln!(s, "require pap = {}\nrefuse pap = {}", yes(pap), yes(!pap));
    let _ = writeln!(s, "name = {}\npppoptfile = {pppoptfile}\nlength bit = yes", c.ppp.user);
    s
}

/// xl2tpd.conf for a LAC.
pub fn lac_conf(c: &LacConfig, pppoptfile: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "[global]\nport = {}\naccess control = no\ndebug tunnel = yes\nmax retries = {MAX_RETRIES}\n",
        c.port
    );
    let _ = writeln!(s, "[lac {}]\nlns = {}\nredial = no\nautodial = no", c.name, c.lns);
    let _ =
        writeln!(s, "require authentication = no\nname = {}\npppoptfile = {pppoptfile}\nlength bit = yes", c.ppp.user);
    s
}

/// xl2tpd running in a host.
pub struct Xl2tpd<'lab> {
    host: Host<'lab>,
    process: Process,
    control: PathBuf,
}

impl<'lab> Xl2tpd<'lab> {
    fn start(host: Host<'lab>, label: &str, conf: &str, ppp: &PppConfig, port: u16) -> Result<Xl2tpd<'lab>> {
        let xl2tpd = crate::prereq::require_tool("xl2tpd")?;
        pppd::require_ppp_peer(&host)?;
        let options = pppd::write_options(&host, &format!("options.{label}"), ppp)?;
        let conf = conf.replace("@PPPOPTFILE@", &options.to_string_lossy());
        let conf_path = host.write_conf("xl2tpd.conf", &conf)?;
        let secrets = host.write_conf("l2tp-secrets", "")?;
        let run = host.run_dir()?;
        let control = run.join("xl2tpd-control");
        let cmd = Cmd::new(xl2tpd.to_string_lossy())
            .args(&["-D", "-c", &conf_path.to_string_lossy(), "-s", &secrets.to_string_lossy()])
            .args(&["-p", &run.join("xl2tpd.pid").to_string_lossy(), "-C", &control.to_string_lossy()])
            .label(label);
        let process = host.spawn(cmd)?;
        process.or_stop(process.wait_for_port(Proto::Udp, port, Duration::from_secs(10)))?;
        process.or_stop(process.wait_for_path(&control, Duration::from_secs(10)))?;
        Ok(Xl2tpd { host, process, control })
    }

    /// Starts an LNS and waits until it listens.
    pub fn lns(host: Host<'lab>, c: &LnsConfig) -> Result<Xl2tpd<'lab>> {
        Xl2tpd::start(host, "xl2tpd-lns", &lns_conf(c, "@PPPOPTFILE@"), &c.ppp, L2TP_PORT)
    }

    /// Starts a LAC (not yet connected).
    pub fn lac(host: Host<'lab>, c: &LacConfig) -> Result<Xl2tpd<'lab>> {
        Xl2tpd::start(host, "xl2tpd-lac", &lac_conf(c, "@PPPOPTFILE@"), &c.ppp, c.port)
    }

    /// The xl2tpd process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Writes a command to the control FIFO. xl2tpd creates the FIFO
    /// before it opens it (and reopens it after each command): until it
    /// reads, opening for writing fails with ENXIO, so that is waited out.
    fn control(&self, line: &str) -> Result<()> {
        let what = format!("host '{}': writing {line:?} to xl2tpd's control file", self.host.name());
        let open = || std::fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(&self.control);
        let mut opened = open();
        if matches!(&opened, Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO)) {
            let _ = self.process.wait_until("read its control file", Duration::from_secs(5), || {
                opened = open();
                opened.is_ok()
            });
        }
        let mut f = opened.map_err(|e| LabError::io(&what, e))?;
        f.write_all(format!("{line}\n").as_bytes()).map_err(|e| LabError::io(&what, e))
    }

    /// Dials the LNS of LAC `name` and waits for the PPP link.
    pub fn connect(&self, name: &str, timeout: Duration) -> Result<PppLink> {
        self.dial(name)?;
        self.wait_for_call(timeout)
    }

    /// Waits for the PPP link of the LAC's call, or until xl2tpd gives the
    /// tunnel up.
    pub fn wait_for_call(&self, timeout: Duration) -> Result<PppLink> {
        pppd::wait_for_link_unless(&self.host, &self.process, None, timeout, Some(GAVE_UP))
    }

    /// Dials the LNS of LAC `name` and returns at once.
    pub fn dial(&self, name: &str) -> Result<()> {
        self.control(&format!("c {name}"))
    }

    /// Hangs up LAC `name`.
    pub fn disconnect(&self, name: &str) -> Result<()> {
        self.control(&format!("d {name}"))
    }

    /// The PPP links this host has up.
    pub fn links(&self) -> Result<Vec<PppLink>> {
        pppd::ppp_links(&self.host)
    }

    /// Waits until this host has a PPP link to `peer`.
    pub fn wait_for_link(&self, peer: Ipv4Addr, timeout: Duration) -> Result<PppLink> {
        pppd::wait_for_link(&self.host, &self.process, Some(peer), timeout)
    }
}
