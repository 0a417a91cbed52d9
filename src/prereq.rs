//! What a run needs from the machine: root privileges and the programs of
//! Debian packages, each with the exact command that fixes its absence.
//!
//! The lab, the commands and the tests ask here; `vpn-passthrough doctor`
//! (see [`crate::doctor`]) checks everything at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    Tool {
        name: "nft",
        package: "nftables",
        paths: &[],
        used_for: "the Linux NAT router, and TCP simultaneous open when measuring NAT behaviour",
    },
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
    Tool { name: "openssl", package: "openssl", paths: &[], used_for: "test certificates for IPsec and OpenVPN" },
    Tool { name: "wireguard-go", package: "wireguard-go", paths: &[], used_for: "WireGuard endpoints (userspace)" },
    Tool { name: "wg", package: "wireguard-tools", paths: &[], used_for: "configuring WireGuard endpoints" },
    Tool { name: "openvpn", package: "openvpn", paths: &[], used_for: "OpenVPN endpoints" },
    Tool {
        name: "conntrack",
        package: "conntrack",
        paths: &[],
        used_for: "rebooting the Linux NAT (flushing its connections)",
    },
    Tool { name: "chromium", package: "chromium", paths: &[], used_for: "checking that the HTML report renders" },
    Tool { name: "dnsmasq", package: "dnsmasq-base", paths: &[], used_for: "DHCP on an external router's WAN" },
    Tool {
        name: "busybox",
        package: "busybox",
        paths: &[],
        used_for: "DHCP clients (udhcpc) on an external router's LAN",
    },
];

/// Where programs are looked for: `PATH`, then the usual system
/// directories (a `sudo` or a service may have a short `PATH`).
fn program_dirs() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .collect()
}

/// The first executable file called `program` in [`program_dirs`].
pub fn find_program(program: &str) -> Option<PathBuf> {
    program_dirs().into_iter().map(|d| d.join(program)).find(|p| usable(p) && p.is_file())
}

/// The tool called `name`.
pub fn tool(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

impl Tool {
    /// Every place the program or file may be.
    fn candidates(&self) -> Vec<PathBuf> {
        if !self.paths.is_empty() {
            return self.paths.iter().map(PathBuf::from).collect();
        }
        program_dirs().into_iter().map(|d| d.join(self.name)).collect()
    }

    /// Where the program is, if it is installed and usable.
    pub fn locate(&self) -> Option<PathBuf> {
        self.candidates().into_iter().find(|p| usable(p))
    }

    /// The program's path, or what to do: install it, or make it
    /// executable again.
    pub fn require(&self) -> Result<PathBuf, Missing> {
        if let Some(p) = self.locate() {
            return Ok(p);
        }
        let what = format!("{} ({})", self.name, self.used_for);
        if let Some(p) = self.candidates().into_iter().find(|p| p.is_file()) {
            return Err(Missing {
                what,
                why: format!("{} is not executable", p.display()),
                fix: format!("chmod +x {}   (or apt-get install --reinstall -y {})", p.display(), self.package),
            });
        }
        Err(Missing {
            what,
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

/// A file that is there and, unless it is a plugin (loaded, not run),
/// executable.
fn usable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(p) else { return false };
    let executable = p.extension().is_some_and(|e| e == "so") || meta.permissions().mode() & 0o111 != 0;
    meta.is_file() && executable
}

/// The path of a tool of [`TOOLS`], or the advice to install it.
pub fn require_tool(name: &str) -> Result<PathBuf, Missing> {
    match tool(name) {
        Some(t) => t.require(),
        None => Err(Missing {
            what: name.to_string(),
            why: "is not a tool the suite knows".into(),
            fix: "add it to prereq::TOOLS with its Debian package".into(),
        }),
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability set of this process.
pub fn effective_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

const CAP_NET_RAW: u32 = 13;

/// Checks the privilege a packet socket needs (CAP_NET_RAW).
pub fn require_packet_sockets() -> Result<(), Missing> {
    if effective_caps() & (1u64 << CAP_NET_RAW) != 0 {
        return Ok(());
    }
    let uid = nix::unistd::geteuid();
    Err(Missing {
        what: "CAP_NET_RAW (packet sockets)".into(),
        why: format!("running as uid {uid} without it"),
        fix: "run as root, e.g. `sudo vpn-passthrough nat …`".into(),
    })
}

/// Checks the privileges a lab needs: CAP_NET_ADMIN (namespaces, links)
/// and CAP_SYS_ADMIN (mounts, setns).
pub fn require_lab_privileges() -> Result<(), Missing> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let uid = nix::unistd::geteuid();
    Err(Missing::privileges(&format!("running as uid {uid} without CAP_NET_ADMIN and CAP_SYS_ADMIN")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_install_deps_installs_every_package_a_run_needs() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/ci/install-deps");
        let out = std::process::Command::new("bash").args([script, "--list"]).output().expect("runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listed = String::from_utf8_lossy(&out.stdout).to_string();
        let listed: Vec<&str> = listed.lines().collect();
        for tool in TOOLS {
            assert!(
                listed.contains(&tool.package),
                "ci/install-deps does not install {} (for {})",
                tool.package,
                tool.name
            );
        }
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let t = Tool { name: "surely-not-installed-x", package: "pkg-x", paths: &[], used_for: "testing" };
        let m = t.require().expect_err("not installed");
        assert!(m.fix.contains("apt-get install -y pkg-x"), "{m}");
        assert!(m.to_string().contains("surely-not-installed-x (testing)"), "{m}");
    }

    #[test]
    fn a_tool_that_is_not_executable_says_how_to_fix_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tool-x");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let path: &'static str = Box::leak(file.to_string_lossy().into_owned().into_boxed_str());
        let paths: &'static [&'static str] = Box::leak(vec![path].into_boxed_slice());
        let t = Tool { name: "tool-x", package: "pkg-x", paths, used_for: "testing" };
        let m = t.require().expect_err("not executable");
        assert!(m.why.contains("not executable") && m.fix.contains("chmod +x"), "{m}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(t.require().expect("executable"), file);
    }

    #[test]
    fn every_tool_has_a_package() {
        for t in TOOLS {
            assert!(!t.package.is_empty() && !t.used_for.is_empty(), "{t:?}");
        }
    }
}
