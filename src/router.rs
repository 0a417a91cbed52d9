//! The router under test, and the lab it is tested in.
//!
//! A [`NatLab`] is clients on a LAN switch, the router host, and a server on
//! the WAN (which has no route to the LAN: only a NAT gets its answers
//! home). What runs in the router host is a [`RouterUnderTest`]: our
//! [`RustNat`] (the `nat` command, owning the router's addresses itself), or
//! [`LinuxNat`] (kernel forwarding and nftables masquerade), so that every
//! scenario can be run against both.
//!
//! ```text
//!   c1 192.168.1.10 ─┐
//!   c2 192.168.1.11 ─┼─ lan ─── lan [router] wan ─── eth0 server (lo 10.10.0.1)
//!   …                ─┘          192.168.1.1   198.51.100.1   198.51.100.2
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::lab::{Cmd, EndpointSpec, Host, HostSpec, Lab, LabError, LinkSpec, Process, Result, Topology};
use crate::nat::Profile;

/// The router host's name.
pub const ROUTER: &str = "router";
/// The server host's name.
pub const SERVER: &str = "server";
/// A second WAN host, beside the server, that is nobody's VPN peer.
pub const INTRUDER: &str = "intruder";
/// The router's LAN interface (topology name).
pub const LAN_IF: &str = "lan";
/// The router's WAN interface (topology name).
pub const WAN_IF: &str = "wan";

/// The router's LAN address and prefix.
pub fn lan_addr() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(192, 168, 1, 1), 24).unwrap_or_default()
}

/// The router's public address and the WAN prefix.
pub fn wan_addr() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(198, 51, 100, 1), 24).unwrap_or_default()
}

/// The server's address.
pub fn server_addr() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 2)
}

/// The server's inner address, on its loopback: what tunnels reach.
pub fn server_inner() -> Ipv4Addr {
    Ipv4Addr::new(10, 10, 0, 1)
}

/// The intruder's address.
pub fn intruder_addr() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 66)
}

/// Client `i`'s address (clients are numbered from 1).
pub fn client_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, 9 + i as u8)
}

/// Client `i`'s host name.
pub fn client(i: usize) -> String {
    format!("c{i}")
}

/// A kind of router that a lab can put between its LAN and WAN.
pub trait RouterUnderTest: Send + Sync {
    /// A short name for test names and reports.
    fn name(&self) -> String;
    /// Whether the router host's kernel holds the router addresses and
    /// forwards (a kernel NAT) or leaves both to a userspace router.
    fn kernel_routes(&self) -> bool;
    /// Starts the router in the lab's router host and waits until it is
    /// ready.
    fn start(&self, lab: &Lab) -> Result<RunningRouter>;
}

/// A router that is running in a lab.
pub struct RunningRouter {
    name: String,
    process: Option<Process>,
    control: Option<PathBuf>,
}

impl RunningRouter {
    /// The router's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The router's own report: the Rust NAT's JSON dump (counters and
    /// mappings), or the kernel's connection table for the Linux NAT.
    pub fn dump(&self, lab: &Lab) -> Result<serde_json::Value> {
        match &self.control {
            Some(path) => {
                crate::nat::run::query(path).map_err(|e| LabError::io(format!("{}: reading its dump", self.name), e))
            }
            None => {
                let out = lab.host(ROUTER)?.run_ok(Cmd::argv(&["cat", "/proc/net/nf_conntrack"]))?;
                let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
                Ok(serde_json::json!({ "conntrack": lines }))
            }
        }
    }

    /// How many packets the Rust NAT dropped for `reason` (by name); `None`
    /// for routers that do not count by reason.
    pub fn dropped(&self, lab: &Lab, reason: &str) -> Result<Option<u64>> {
        if self.control.is_none() {
            return Ok(None);
        }
        let dump = self.dump(lab)?;
        let drops = dump.get("drops").and_then(|d| d.as_array()).cloned().unwrap_or_default();
        Ok(Some(
            drops
                .iter()
                .filter_map(|d| d.as_array())
                .find(|d| d.first().and_then(|n| n.as_str()) == Some(reason))
                .and_then(|d| d.get(1).and_then(|n| n.as_u64()))
                .unwrap_or(0),
        ))
    }

    /// The router's process, if it has one.
    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }
}

/// Our NAT: `vpn-passthrough nat` in the router host, which has no kernel
/// addresses and no kernel forwarding.
pub struct RustNat {
    /// Its behaviour.
    pub profile: Profile,
    /// The `vpn-passthrough` binary to run.
    pub binary: PathBuf,
}

impl RustNat {
    /// The Rust NAT with `profile`, run from the binary [`own_binary`] finds.
    pub fn new(profile: Profile) -> Result<RustNat> {
        Ok(RustNat { profile, binary: own_binary()? })
    }
}

impl RouterUnderTest for RustNat {
    fn name(&self) -> String {
        format!("rust-nat ({})", self.profile.name)
    }

    fn kernel_routes(&self) -> bool {
        false
    }

    fn start(&self, lab: &Lab) -> Result<RunningRouter> {
        let host = lab.host(ROUTER)?;
        let (lan, wan) = (host.ifname(LAN_IF)?, host.ifname(WAN_IF)?);
        // The kernel of the router host must not see the NAT's traffic: a
        // netdev ingress drop runs after packet sockets have their copy.
        if crate::prereq::require_tool("nft").is_ok() {
            let rules = format!(
                "table netdev nat-bypass {{\n  chain lan {{ type filter hook ingress device \"{lan}\" priority 0; policy drop; }}\n  chain wan {{ type filter hook ingress device \"{wan}\" priority 0; policy drop; }}\n}}\n"
            );
            let file = host.write_conf("bypass.nft", &rules)?;
            host.run_ok(Cmd::argv(&["nft", "-f", &file.to_string_lossy()]))?;
        }
        let text = toml::to_string(&self.profile)
            .map_err(|e| LabError::Input(format!("profile {}: {e}", self.profile.name)))?;
        let profile = host.write_conf("nat-profile.toml", &text)?;
        let control = host.run_dir()?.join("nat.sock");
        let p = host.spawn(
            Cmd::new(self.binary.to_string_lossy())
                .args(&["nat", "--lan", &lan, "--lan-addr", &lan_addr().to_string(), "--wan", &wan])
                .args(&["--wan-addr", &wan_addr().to_string(), "--profile", &profile.to_string_lossy()])
                .args(&["--control", "/run/nat.sock"])
                .env("RUST_LOG", "info")
                .label("nat"),
        )?;
        p.wait_for_path(&control, Duration::from_secs(10))?;
        Ok(RunningRouter { name: self.name(), process: Some(p), control: Some(control) })
    }
}

/// The kernel's NAT: forwarding and nftables masquerade, stateful
/// filtering of inbound, the PPTP conntrack helper attached to TCP 1723 when
/// asked (helpers are never attached automatically in current kernels).
pub struct LinuxNat {
    /// Attach the PPTP helper.
    pub pptp_helper: bool,
}

impl LinuxNat {
    /// The ruleset for the router host, interfaces named.
    pub fn ruleset(&self, lan: &str, wan: &str) -> String {
        let helper = if self.pptp_helper {
            format!(
                "  ct helper pptp {{\n    type \"pptp\" protocol tcp\n    l3proto ip\n  }}\n  chain pre {{\n    type filter hook prerouting priority filter; policy accept;\n    iifname \"{lan}\" tcp dport 1723 ct state new ct helper set \"pptp\"\n  }}\n"
            )
        } else {
            String::new()
        };
        format!(
            "table ip natrouter {{\n{helper}  chain input {{\n    type filter hook input priority filter; policy drop;\n    ct state established,related accept\n    ct state invalid drop\n    iifname \"lo\" accept\n    iifname \"{lan}\" accept\n  }}\n  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    ct state established,related accept\n    ct state invalid drop\n    iifname \"{lan}\" oifname \"{wan}\" accept\n  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{wan}\" masquerade\n  }}\n}}\n"
        )
    }
}

impl RouterUnderTest for LinuxNat {
    fn name(&self) -> String {
        if self.pptp_helper { "linux-nat (pptp helper)".into() } else { "linux-nat".into() }
    }

    fn kernel_routes(&self) -> bool {
        true
    }

    fn start(&self, lab: &Lab) -> Result<RunningRouter> {
        crate::prereq::require_tool("nft")?;
        let host = lab.host(ROUTER)?;
        let rules = self.ruleset(&host.ifname(LAN_IF)?, &host.ifname(WAN_IF)?);
        let file = host.write_conf("router.nft", &rules)?;
        host.run_ok(Cmd::argv(&["nft", "-f", &file.to_string_lossy()]))?;
        Ok(RunningRouter { name: self.name(), process: None, control: None })
    }
}

/// The clients — router — server topology for `router` with `clients`
/// clients.
pub fn nat_topology(router: &dyn RouterUnderTest, clients: usize) -> Topology {
    let gw = lan_addr().addr().to_string();
    let mut t = Topology::new().switch("lan");
    for i in 1..=clients {
        let name = client(i);
        t = t
            .host(crate::vpn::pppd::with_ppp_peer(HostSpec::new(&name).default_route(&gw)))
            .link(EndpointSpec::new(&name, "eth0").addr(&format!("{}/24", client_addr(i))), "lan");
    }
    let (lan_end, wan_end, host) = if router.kernel_routes() {
        (
            EndpointSpec::new(ROUTER, LAN_IF).addr(&lan_addr().to_string()),
            EndpointSpec::new(ROUTER, WAN_IF).addr(&wan_addr().to_string()),
            HostSpec::new(ROUTER).forwarding(),
        )
    } else {
        (EndpointSpec::new(ROUTER, LAN_IF), EndpointSpec::new(ROUTER, WAN_IF), HostSpec::new(ROUTER))
    };
    t.host(host)
        .host(crate::vpn::pppd::with_ppp_peer(HostSpec::new(SERVER).loopback(&format!("{}/32", server_inner()))))
        .link_spec(LinkSpec::new(lan_end, "lan"))
        .link(wan_end, EndpointSpec::new(SERVER, "eth0").addr(&format!("{}/24", server_addr())))
}

/// `t`, a [`nat_topology`], with the WAN on a switch and the intruder on
/// it beside the server.
pub fn with_intruder(mut t: Topology) -> Topology {
    let mut server_end = None;
    for l in &mut t.links {
        if l.b.node == SERVER && l.a.node == ROUTER {
            server_end = Some(std::mem::replace(&mut l.b, EndpointSpec::from("wan")));
        }
    }
    let Some(server_end) = server_end else { return t };
    let intruder_end = EndpointSpec::new(INTRUDER, "eth0").addr(&format!("{}/24", intruder_addr()));
    t.switch("wan")
        .host(HostSpec::new(INTRUDER))
        .link_spec(LinkSpec::new(server_end, "wan").without_offloads())
        .link_spec(LinkSpec::new(intruder_end, "wan").without_offloads())
}

/// A lab with a router under test running in it.
pub struct NatLab {
    /// The lab.
    pub lab: Lab,
    /// The router.
    pub router: RunningRouter,
    clients: usize,
}

impl NatLab {
    /// Builds the lab and starts the router.
    pub fn build(router: &dyn RouterUnderTest, clients: usize) -> Result<NatLab> {
        NatLab::build_with(router, clients, |t| t)
    }

    /// Builds the lab from [`nat_topology`] as `change` leaves it (extra
    /// bind mounts, sysctls, routes), and starts the router.
    pub fn build_with(
        router: &dyn RouterUnderTest,
        clients: usize,
        change: impl FnOnce(Topology) -> Topology,
    ) -> Result<NatLab> {
        let lab = Lab::build(&change(nat_topology(router, clients)))?;
        let running = router.start(&lab)?;
        Ok(NatLab { lab, router: running, clients })
    }

    /// Client `i` (from 1).
    pub fn client(&self, i: usize) -> Result<Host<'_>> {
        self.lab.host(&client(i))
    }

    /// How many clients the LAN has.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// The server.
    pub fn server(&self) -> Result<Host<'_>> {
        self.lab.host(SERVER)
    }

    /// Stops the router and tears the lab down.
    pub fn teardown(self) -> Result<()> {
        self.lab.teardown()
    }
}

/// The `vpn-passthrough` binary: `$VPN_PASSTHROUGH_BIN`, this program if it
/// is the binary, or the binary beside (or one directory above) it, as
/// cargo lays out tests.
pub fn own_binary() -> Result<PathBuf> {
    our_binary("vpn-passthrough", "VPN_PASSTHROUGH_BIN")
}

/// One of this crate's binaries, `name`: the path in `$env` if set, this
/// program if it is that binary, or the binary beside (or one directory
/// above) this program.
pub fn our_binary(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| LabError::io("finding this program", e))?;
    if exe.file_name().is_some_and(|n| n == name) {
        return Ok(exe);
    }
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(LabError::Input(format!(
        "cannot find the {name} binary near {}: build it (`cargo build --bins`) or set {env}",
        exe.display()
    )))
}
