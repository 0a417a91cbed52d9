//! What a run needs from the machine, checked for real, with the exact
//! command that fixes each missing piece.
//!
//! `vpn-passthrough doctor` prints every check; the other commands and the
//! lab call [`require`] for what they use and fail with the same advice.

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::libc;

/// Something a run needs that this machine lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing.
    pub what: String,
    /// How it showed.
    pub why: String,
    /// The command (or step) that fixes it.
    pub fix: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing {}: {}\n  fix: {}", self.what, self.why, self.fix)
    }
}

impl std::error::Error for Missing {}

impl Missing {
    /// Root privileges, with how they showed to be missing.
    pub fn privileges(why: &str) -> Missing {
        Missing {
            what: "root privileges (CAP_NET_ADMIN and CAP_SYS_ADMIN)".into(),
            why: why.to_string(),
            fix: "run as root: `sudo -E env \"PATH=$PATH\" vpn-passthrough …`, or `ci/test` for the tests".into(),
        }
    }
}

/// A program or file of a Debian package that some part of the suite runs.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The name it is known by.
    pub name: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
    /// Where to look, if not on `PATH`.
    pub paths: &'static [&'static str],
    /// What the suite uses it for.
    pub used_for: &'static str,
}

/// Every external program the suite runs.
pub const TOOLS: &[Tool] = &[
    Tool { name: "ip", package: "iproute2", paths: &[], used_for: "the lab benchmark's reference script" },
    Tool { name: "ping", package: "iputils-ping", paths: &[], used_for: "reachability checks" },
    Tool { name: "tcpdump", package: "tcpdump", paths: &[], used_for: "packet captures" },
    Tool { name: "ethtool", package: "ethtool", paths: &[], used_for: "inspecting offloads by hand" },
    Tool { name: "iperf3", package: "iperf3", paths: &[], used_for: "throughput checks" },
    Tool { name: "nft", package: "nftables", paths: &[], used_for: "the Linux NAT router" },
    Tool {
        name: "charon",
        package: "strongswan-charon",
        paths: &["/usr/lib/ipsec/charon"],
        used_for: "IPsec endpoints",
    },
    Tool { name: "swanctl", package: "strongswan-swanctl", paths: &[], used_for: "IPsec endpoints" },
    Tool {
        name: "kernel-libipsec",
        package: "libcharon-extra-plugins",
        paths: &["/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"],
        used_for: "userspace ESP for IPsec endpoints",
    },
    Tool { name: "xl2tpd", package: "xl2tpd", paths: &[], used_for: "L2TP endpoints" },
    Tool { name: "pptpd", package: "pptpd", paths: &[], used_for: "the PPTP server" },
    Tool { name: "pptp", package: "pptp-linux", paths: &[], used_for: "the PPTP client" },
];

/// The tool called `name`.
pub fn tool(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

impl Tool {
    /// Where the program is, if it is installed.
    pub fn locate(&self) -> Option<PathBuf> {
        if !self.paths.is_empty() {
            return self.paths.iter().map(PathBuf::from).find(|p| p.exists());
        }
        let path = std::env::var("PATH").unwrap_or_default();
        path.split(':')
            .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
            .map(|d| Path::new(d).join(self.name))
            .find(|p| p.is_file())
    }

    /// The program's path, or what to install.
    pub fn require(&self) -> Result<PathBuf, Missing> {
        self.locate().ok_or_else(|| Missing {
            what: format!("{} ({})", self.name, self.used_for),
            why: "not installed".into(),
            fix: format!("apt-get install -y {}   (or `ci/install-deps` for everything)", self.package),
        })
    }

    /// The installed package version, as dpkg knows it.
    pub fn version(&self) -> Option<String> {
        let out = Command::new("dpkg-query").args(["-W", "-f", "${Version}", self.package]).output().ok()?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !v.is_empty()).then_some(v)
    }
}

/// The path of a tool of [`TOOLS`], or the advice to install it.
pub fn require_tool(name: &str) -> Result<PathBuf, Missing> {
    match tool(name) {
        Some(t) => t.require(),
        None => Err(Missing {
            what: name.to_string(),
            why: "is not a tool the suite knows".into(),
            fix: "add it to doctor::TOOLS with its Debian package".into(),
        }),
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability set of this process.
fn effective_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Checks the privileges a lab needs: CAP_NET_ADMIN (namespaces, links)
/// and CAP_SYS_ADMIN (mounts, setns).
pub fn require_lab_privileges() -> Result<(), crate::lab::LabError> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let uid = nix::unistd::geteuid();
    Err(crate::lab::LabError::Missing(Missing::privileges(&format!(
        "running as uid {uid} without CAP_NET_ADMIN and CAP_SYS_ADMIN"
    ))))
}

/// One line of the doctor's report.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Version, or what was seen.
    pub detail: String,
    /// `None` when the check passed.
    pub missing: Option<Missing>,
}

/// Runs every check. Kernel checks run in throwaway network namespaces that
/// die with the probe, so the doctor leaves nothing behind.
pub fn run_all() -> Vec<Check> {
    let mut checks = Vec::new();
    let privileged = require_lab_privileges();
    checks.push(Check {
        name: "privileges".into(),
        detail: format!("uid {}, CapEff {:016x}", nix::unistd::geteuid(), effective_caps()),
        missing: privileged.as_ref().err().map(|e| match e {
            crate::lab::LabError::Missing(m) => m.clone(),
            other => Missing::privileges(&other.to_string()),
        }),
    });
    let ok = privileged.is_ok();
    for (name, probe, fix) in [
        ("network namespaces", probe_netns as fn() -> io::Result<String>, "use a kernel with CONFIG_NET_NS=y"),
        ("veth and bridge", probe_links, "use a kernel with CONFIG_VETH and CONFIG_BRIDGE (modprobe veth bridge)"),
        ("TUN devices", probe_tun, "modprobe tun; mkdir -p /dev/net && mknod /dev/net/tun c 10 200"),
    ] {
        checks.push(kernel_check(name, ok, probe, fix));
    }
    checks.push(match tool("nft").map(Tool::require) {
        Some(Ok(nft)) => kernel_check(
            "nftables + PPTP conntrack helper",
            ok,
            move || probe_nft(&nft),
            "use a kernel with CONFIG_NF_TABLES and CONFIG_NF_CONNTRACK_PPTP (modprobe nf_conntrack_pptp)",
        ),
        Some(Err(m)) => {
            Check { name: "nftables + PPTP conntrack helper".into(), detail: String::new(), missing: Some(m) }
        }
        None => Check { name: "nftables".into(), detail: String::new(), missing: None },
    });
    for t in TOOLS {
        checks.push(match t.require() {
            Ok(path) => Check {
                name: t.name.into(),
                detail: format!("{} {}", path.display(), t.version().unwrap_or_else(|| "(version unknown)".into())),
                missing: None,
            },
            Err(m) => Check { name: t.name.into(), detail: String::new(), missing: Some(m) },
        });
    }
    checks
}

fn kernel_check(name: &str, privileged: bool, probe: impl FnOnce() -> io::Result<String>, fix: &str) -> Check {
    if !privileged {
        return Check { name: name.into(), detail: "not checked: needs root".into(), missing: None };
    }
    match probe() {
        Ok(detail) => Check { name: name.into(), detail, missing: None },
        Err(e) => Check {
            name: name.into(),
            detail: String::new(),
            missing: Some(Missing { what: name.into(), why: e.to_string(), fix: fix.into() }),
        },
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
    let rules = "table ip probe { ct helper pptp { type \"pptp\" protocol tcp; } }\n";
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
        Err(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// Prints the report; returns whether everything is there.
pub fn print_report(checks: &[Check], out: &mut impl io::Write) -> io::Result<bool> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut all = true;
    for c in checks {
        match &c.missing {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package() {
        let t = Tool { name: "surely-not-installed-x", package: "pkg-x", paths: &[], used_for: "testing" };
        let m = t.require().expect_err("not installed");
        assert!(m.fix.contains("apt-get install -y pkg-x"), "{m}");
        assert!(m.to_string().contains("surely-not-installed-x (testing)"), "{m}");
    }

    #[test]
    fn every_tool_has_a_package() {
        for t in TOOLS {
            assert!(!t.package.is_empty() && !t.used_for.is_empty(), "{t:?}");
        }
    }
}
