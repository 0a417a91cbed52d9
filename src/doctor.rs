//! `vpn-passthrough doctor`: every prerequisite checked for real, kernel
//! features in throwaway network namespaces, each with its fix.
//!
//! The other commands and the lab ask [`crate::prereq`] for what they use and
//! fail with the same advice.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::libc;

use crate::prereq::{Missing, TOOLS, effective_caps, require_lab_privileges, require_tool};

/// One line of the doctor's report.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// What was checked.
    pub name: String,
    /// Version, or what was seen.
    pub detail: String,
    /// `None` when the check passed or could not run.
    pub missing: Option<Missing>,
    /// The check could not run (kernel probes need root).
    pub skipped: bool,
}

impl Diagnosis {
    fn passed(name: &str, detail: String) -> Diagnosis {
        Diagnosis { name: name.into(), detail, missing: None, skipped: false }
    }

    fn failed(name: &str, missing: Missing) -> Diagnosis {
        Diagnosis { name: name.into(), detail: String::new(), missing: Some(missing), skipped: false }
    }
}

/// Runs every check. Kernel checks run in throwaway network namespaces that
/// die with the probe, so the doctor leaves nothing behind.
pub fn run_all() -> Vec<Diagnosis> {
    let mut checks = Vec::new();
    let privileged = require_lab_privileges();
    checks.push(match &privileged {
        Ok(()) => {
            Diagnosis::passed("privileges", format!("uid {}, CapEff {:016x}", nix::unistd::geteuid(), effective_caps()))
        }
        Err(m) => Diagnosis::failed("privileges", m.clone()),
    });
    let ok = privileged.is_ok();
    for (name, probe, fix) in [
        ("network namespaces", probe_netns as fn() -> io::Result<String>, "use a kernel with CONFIG_NET_NS=y"),
        ("veth and bridge", probe_links, "use a kernel with CONFIG_VETH and CONFIG_BRIDGE (modprobe veth bridge)"),
        ("TUN devices", probe_tun, "modprobe tun; mkdir -p /dev/net && mknod /dev/net/tun c 10 200"),
    ] {
        checks.push(kernel_check(name, ok, probe, fix));
    }
    let helper = "nftables + PPTP conntrack helper";
    checks.push(match require_tool("nft") {
        Ok(nft) => kernel_check(
            helper,
            ok,
            move || probe_nft(&nft),
            "use a kernel with CONFIG_NF_TABLES and CONFIG_NF_CONNTRACK_PPTP (modprobe nf_conntrack_pptp)",
        ),
        Err(m) => Diagnosis::failed(helper, m),
    });
    // Our own programs that labs run: the helper that starts every program
    // inside its host, and our PPP peer.
    for (name, found) in [
        (crate::lab::sandbox::ENTER_BINARY, crate::lab::sandbox::enter_binary()),
        (crate::vpn::pppd::PPP_PEER_BINARY, crate::vpn::pppd::ppp_binary()),
    ] {
        checks.push(match found {
            Ok(path) => Diagnosis::passed(name, path.display().to_string()),
            Err(e) => Diagnosis::failed(
                name,
                Missing { what: name.into(), why: e.to_string(), fix: "cargo build --release --bins".into() },
            ),
        });
    }
    for t in TOOLS {
        checks.push(match t.require() {
            Ok(path) => Diagnosis::passed(
                t.name,
                format!("{} {}", path.display(), t.version().unwrap_or_else(|| "(version unknown)".into())),
            ),
            Err(m) => Diagnosis::failed(t.name, m),
        });
    }
    checks
}

fn kernel_check(name: &str, privileged: bool, probe: impl FnOnce() -> io::Result<String>, fix: &str) -> Diagnosis {
    if !privileged {
        return Diagnosis { name: name.into(), detail: "not checked: needs root".into(), missing: None, skipped: true };
    }
    match probe() {
        Ok(detail) => Diagnosis::passed(name, detail),
        Err(e) => Diagnosis::failed(name, Missing { what: name.into(), why: e.to_string(), fix: fix.into() }),
    }
}

/// Runs `f` on a thread that has its own, new, network namespace.
fn in_throwaway_netns<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("probe thread panicked")))
    })
}

fn probe_netns() -> io::Result<String> {
    in_throwaway_netns(|| Ok("can create".to_string()))
}

fn probe_links() -> io::Result<String> {
    in_throwaway_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            let veth = rtnetlink::LinkVeth::new("probe0", "probe1").build();
            handle.link().add(veth).execute().await.map_err(|e| io::Error::other(format!("veth: {e}")))?;
            let br = rtnetlink::LinkBridge::new("probebr").build();
            handle.link().add(br).execute().await.map_err(|e| io::Error::other(format!("bridge: {e}")))?;
            Ok("can create".to_string())
        })
    })
}

fn probe_tun() -> io::Result<String> {
    in_throwaway_netns(|| {
        let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
        #[repr(C)]
        struct IfReq {
            name: [libc::c_char; libc::IFNAMSIZ],
            flags: libc::c_short,
            _pad: [u8; 22],
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(b"probetun0") {
            *d = *s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes one ifreq that outlives the call.
        let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok("can create".to_string())
    })
}

fn probe_nft(nft: &Path) -> io::Result<String> {
    let rules = "table ip probe { ct helper pptp { type \"pptp\" protocol tcp; }; }\n";
    let mut cmd = Command::new(nft);
    cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: unshare(2) only; the child gets a network namespace of its own.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        io::Write::write_all(&mut stdin, rules.as_bytes())?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err(io::Error::other("nft did not answer within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok("tables and the \"pptp\" ct helper load".into())
    } else {
        // nft quotes the rule under its error; the first line says it all.
        let err = String::from_utf8_lossy(&out.stderr);
        Err(io::Error::other(err.lines().next().unwrap_or("nft failed").to_string()))
    }
}

/// Prints the report; returns whether everything is there.
pub fn print_report(checks: &[Diagnosis], out: &mut impl io::Write) -> io::Result<bool> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut all = true;
    for c in checks {
        match &c.missing {
            None if c.skipped => writeln!(out, "  --       {:width$}  {}", c.name, c.detail)?,
            None => writeln!(out, "  ok       {:width$}  {}", c.name, c.detail)?,
            Some(m) => {
                all = false;
                writeln!(out, "  MISSING  {:width$}  {}", c.name, m.why)?;
                writeln!(out, "           {:width$}  fix: {}", "", m.fix)?;
            }
        }
    }
    Ok(all)
}
