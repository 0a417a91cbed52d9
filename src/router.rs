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
    fn start(&self, lab: &Lab, shape: &Shape) -> Result<RunningRouter>;
    /// Reboots a running router: every mapping and every tracked call,
    /// tunnel and SA is forgotten, the configuration stays.
    fn reboot(&self, lab: &Lab, running: &mut RunningRouter, shape: &Shape) -> Result<()>;
    /// Gives a running router another profile (state is lost, as when a
    /// real router applies new settings).
    fn change_profile(
        &self,
        _lab: &Lab,
        _running: &mut RunningRouter,
        _shape: &Shape,
        _profile: Profile,
    ) -> Result<()> {
        Err(LabError::Input(format!("{} has no profiles to change", self.name())))
    }
    /// Where the router's two sides are captured: the host and kernel
    /// interface on the LAN side, then on the WAN side.
    fn capture_points<'l>(&self, lab: &'l Lab) -> Result<[(Host<'l>, String); 2]> {
        let host = lab.host(ROUTER)?;
        let (lan, wan) = (host.ifname(LAN_IF)?, host.ifname(WAN_IF)?);
        Ok([(host, lan), (host, wan)])
    }
    /// The router's own LAN and WAN addressing, when the lab must follow
    /// it (a real router); `None` when the lab chooses.
    fn addressing(&self) -> Option<(Ipv4Net, Ipv4Net)> {
        None
    }
    /// The lab this router is tested in.
    fn topology(&self, shape: &Shape) -> Topology {
        shaped_topology(self.kernel_routes(), shape)
    }
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
        Ok(self.drops(lab)?.map(|d| d.get(reason).copied().unwrap_or(0)))
    }

    /// Every drop counter of the Rust NAT by reason, from one dump; `None`
    /// for routers that do not count by reason.
    pub fn drops(&self, lab: &Lab) -> Result<Option<std::collections::BTreeMap<String, u64>>> {
        if self.control.is_none() {
            return Ok(None);
        }
        let dump = self.dump(lab)?;
        let drops = dump.get("drops").and_then(|d| d.as_array()).cloned().unwrap_or_default();
        Ok(Some(
            drops
                .iter()
                .filter_map(|d| d.as_array())
                .filter_map(|d| Some((d.first()?.as_str()?.to_string(), d.get(1)?.as_u64()?)))
                .collect(),
        ))
    }

    /// Stops the router's process, if it has one.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(3))?;
        }
        if let Some(c) = self.control.take() {
            let _ = std::fs::remove_file(c);
        }
        Ok(())
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

    fn start(&self, lab: &Lab, shape: &Shape) -> Result<RunningRouter> {
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
                .args(&["nat", "--lan", &lan, "--lan-addr", &shape.lan.to_string(), "--wan", &wan])
                .args(&["--wan-addr", &shape.wan.to_string(), "--profile", &profile.to_string_lossy()])
                .args(&["--control", "/run/nat.sock"])
                .env("RUST_LOG", "info")
                .label("nat"),
        )?;
        p.wait_for_path(&control, Duration::from_secs(10))?;
        Ok(RunningRouter { name: self.name(), process: Some(p), control: Some(control) })
    }

    fn reboot(&self, lab: &Lab, running: &mut RunningRouter, shape: &Shape) -> Result<()> {
        running.stop()?;
        *running = self.start(lab, shape)?;
        Ok(())
    }

    fn change_profile(&self, lab: &Lab, running: &mut RunningRouter, shape: &Shape, profile: Profile) -> Result<()> {
        running.stop()?;
        *running = RustNat { profile, binary: self.binary.clone() }.start(lab, shape)?;
        Ok(())
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

    fn start(&self, lab: &Lab, _shape: &Shape) -> Result<RunningRouter> {
        crate::prereq::require_tool("nft")?;
        let host = lab.host(ROUTER)?;
        let rules = self.ruleset(&host.ifname(LAN_IF)?, &host.ifname(WAN_IF)?);
        let file = host.write_conf("router.nft", &rules)?;
        host.run_ok(Cmd::argv(&["nft", "-f", &file.to_string_lossy()]))?;
        Ok(RunningRouter { name: self.name(), process: None, control: None })
    }

    /// The kernel forgets its connections (`conntrack -F`); the ruleset
    /// stays, as it would across a reboot.
    fn reboot(&self, lab: &Lab, _running: &mut RunningRouter, _shape: &Shape) -> Result<()> {
        crate::prereq::require_tool("conntrack")?;
        lab.host(ROUTER)?.run_ok(Cmd::argv(&["conntrack", "-F"]))?;
        Ok(())
    }
}

/// The shape of a NAT lab: how many hosts sit on each side of the router,
/// and how the LAN is addressed.
///
/// Clients are `c1…` at the LAN's `.10` up, the router at the LAN prefix's
/// address, servers `server`, `server2`… at `198.51.100.2` up (each with an
/// inner address `10.10.0.j` on its loopback). With `double_nat`, the
/// clients sit on a LAN of their own (`10.20.0.0/24`) behind a second NAT,
/// `home` (a Linux NAT at the router's LAN `.2`). With more than one server
/// or an intruder, the WAN is a switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Client hosts.
    pub clients: usize,
    /// Server hosts on the WAN.
    pub servers: usize,
    /// The router's LAN address and the LAN prefix.
    pub lan: Ipv4Net,
    /// The router's public address and the WAN prefix.
    pub wan: Ipv4Net,
    /// The clients are behind a second NAT on the router's LAN.
    pub double_nat: bool,
    /// A WAN host that is nobody's peer ([`INTRUDER`]).
    pub intruder: bool,
}

/// The second NAT's host name in a double-NAT [`Shape`].
pub const HOME: &str = "home";

impl Shape {
    /// `clients` clients, one server, the default LAN.
    pub fn new(clients: usize) -> Shape {
        Shape { clients, servers: 1, lan: lan_addr(), wan: wan_addr(), double_nat: false, intruder: false }
    }

    /// The prefix and gateway of the LAN the clients are on.
    pub fn client_lan(&self) -> Ipv4Net {
        if self.double_nat { Ipv4Net::new(Ipv4Addr::new(10, 20, 0, 1), 24).unwrap_or_default() } else { self.lan }
    }

    /// Client `i`'s address (clients are numbered from 1).
    pub fn client_addr(&self, i: usize) -> Ipv4Addr {
        nth(self.client_lan(), 9 + i as u32)
    }

    /// The address the router sees client `i` as: its own, or the second
    /// NAT's.
    pub fn seen_as(&self, i: usize) -> Ipv4Addr {
        if self.double_nat { self.home_addr() } else { self.client_addr(i) }
    }

    /// The second NAT's address on the router's LAN.
    pub fn home_addr(&self) -> Ipv4Addr {
        nth(self.lan, 2)
    }

    /// The hosts VPN endpoints run on: the clients, then the servers.
    pub fn endpoint_hosts(&self) -> Vec<String> {
        (1..=self.clients).map(client).chain((1..=self.servers).map(|j| self.server_name(j))).collect()
    }

    /// Server `j`'s host name (servers are numbered from 1).
    pub fn server_name(&self, j: usize) -> String {
        if j == 1 { SERVER.to_string() } else { format!("{SERVER}{j}") }
    }

    /// Server `j`'s address: the WAN's `.2` up, passing over the router's.
    pub fn server_addr(&self, j: usize) -> Ipv4Addr {
        (2..).map(|n| nth(self.wan, n)).filter(|a| *a != self.wan.addr()).nth(j - 1).unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Server `j`'s inner address, on its loopback: what tunnels reach.
    pub fn server_inner(&self, j: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 10, 0, j as u8)
    }

    fn wan_switch(&self) -> bool {
        self.servers > 1 || self.intruder
    }
}

/// The `n`th address of `net`'s network.
fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// A real router wired to two NICs of this machine: client hosts sit on
/// a switch with its LAN port, servers on a switch with its WAN port. The
/// suite cannot configure, reboot or count it.
#[derive(Debug, Clone)]
pub struct ExternalRouter {
    /// The NIC wired to the router's LAN.
    pub lan_port: String,
    /// The NIC wired to the router's WAN.
    pub wan_port: String,
    /// The router's LAN address and prefix (the clients' gateway).
    pub lan: Ipv4Net,
    /// The router's WAN address and prefix (servers are put beside it).
    pub wan: Ipv4Net,
}

impl RouterUnderTest for ExternalRouter {
    fn name(&self) -> String {
        format!("external router (LAN {} on {}, WAN {} on {})", self.lan, self.lan_port, self.wan, self.wan_port)
    }

    fn kernel_routes(&self) -> bool {
        true
    }

    fn start(&self, lab: &Lab, shape: &Shape) -> Result<RunningRouter> {
        // Ready when the first client reaches the router's LAN address.
        let gateway = if shape.double_nat { lab.host(HOME)? } else { lab.host(&client(1))? };
        let addr = shape.lan.addr().to_string();
        let ready = (0..20).any(|_| {
            gateway.exec(Cmd::argv(&["ping", "-n", "-c", "1", "-W", "1", &addr])).is_ok_and(|o| o.status.success())
        });
        if !ready {
            return Err(LabError::Input(format!(
                "{}: no answer from the router's LAN address {addr} on {}: check the cabling and --lan",
                self.name(),
                self.lan_port
            )));
        }
        Ok(RunningRouter { name: self.name(), process: None, control: None })
    }

    fn reboot(&self, _lab: &Lab, _running: &mut RunningRouter, _shape: &Shape) -> Result<()> {
        Err(LabError::Input(format!("{}: the suite cannot reboot an external router", self.name())))
    }

    fn addressing(&self) -> Option<(Ipv4Net, Ipv4Net)> {
        Some((self.lan, self.wan))
    }

    fn topology(&self, shape: &Shape) -> Topology {
        placed_topology(Placement::External { lan_port: &self.lan_port, wan_port: &self.wan_port }, shape)
    }

    fn capture_points<'l>(&self, lab: &'l Lab) -> Result<[(Host<'l>, String); 2]> {
        Ok([(lab.switch_host("lan")?, self.lan_port.clone()), (lab.switch_host("wan")?, self.wan_port.clone())])
    }
}

/// No router at all: the first client and the first server on one direct
/// link, each with a route to the other's prefix over it. The preflight
/// plays each VPN family here to prove the lab's own daemons work before a
/// router is judged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl RouterUnderTest for Direct {
    fn name(&self) -> String {
        "no router (a direct link)".into()
    }

    fn kernel_routes(&self) -> bool {
        true
    }

    fn start(&self, _lab: &Lab, _shape: &Shape) -> Result<RunningRouter> {
        Ok(RunningRouter { name: self.name(), process: None, control: None })
    }

    fn reboot(&self, _lab: &Lab, _running: &mut RunningRouter, _shape: &Shape) -> Result<()> {
        Err(LabError::Input("a direct link has no router to reboot".into()))
    }

    fn topology(&self, shape: &Shape) -> Topology {
        direct_topology(shape)
    }

    fn capture_points<'l>(&self, lab: &'l Lab) -> Result<[(Host<'l>, String); 2]> {
        let (c, s) = (lab.host(&client(1))?, lab.host(SERVER)?);
        let (ci, si) = (c.ifname("eth0")?, s.ifname("eth0")?);
        Ok([(c, ci), (s, si)])
    }
}

/// Where the router under test is.
enum Placement<'a> {
    /// In the lab's router host; with kernel addresses and forwarding, or
    /// without (a userspace router).
    Host { kernel_routes: bool },
    /// Outside, reached through two NICs joined to the lab's switches.
    External { lan_port: &'a str, wan_port: &'a str },
}

/// The topology of `shape`; `kernel_routes` gives the router host its
/// addresses and forwarding (a kernel router), or leaves both to the
/// router's own program.
pub fn shaped_topology(kernel_routes: bool, shape: &Shape) -> Topology {
    placed_topology(Placement::Host { kernel_routes }, shape)
}

fn placed_topology(placement: Placement<'_>, shape: &Shape) -> Topology {
    let mut t = match placement {
        Placement::External { lan_port, .. } => Topology::new().switch_with_port("lan", lan_port),
        Placement::Host { .. } => Topology::new().switch("lan"),
    };
    let client_switch = if shape.double_nat {
        let home_lan = shape.client_lan().to_string();
        t = t
            .switch("homelan")
            .host(HostSpec::new(HOME).forwarding().default_route(&shape.lan.addr().to_string()))
            .link(
                EndpointSpec::new(HOME, "wan0").addr(&format!("{}/{}", shape.home_addr(), shape.lan.prefix_len())),
                "lan",
            )
            .link(EndpointSpec::new(HOME, "lan0").addr(&home_lan), "homelan");
        "homelan"
    } else {
        "lan"
    };
    let gw = shape.client_lan().addr().to_string();
    for i in 1..=shape.clients {
        let name = client(i);
        let addr = format!("{}/{}", shape.client_addr(i), shape.client_lan().prefix_len());
        t = t
            .host(crate::vpn::pppd::with_ppp_peer(HostSpec::new(&name).default_route(&gw)))
            .link(EndpointSpec::new(&name, "eth0").addr(&addr), client_switch);
    }
    let server_end = |j: usize| {
        EndpointSpec::new(&shape.server_name(j), "eth0").addr(&format!(
            "{}/{}",
            shape.server_addr(j),
            shape.wan.prefix_len()
        ))
    };
    for j in 1..=shape.servers {
        let spec = HostSpec::new(&shape.server_name(j)).loopback(&format!("{}/32", shape.server_inner(j)));
        t = t.host(crate::vpn::pppd::with_ppp_peer(spec));
    }
    match placement {
        Placement::External { wan_port, .. } => t = t.switch_with_port("wan", wan_port),
        Placement::Host { kernel_routes } => {
            let (lan_end, wan_end, host) = if kernel_routes {
                (
                    EndpointSpec::new(ROUTER, LAN_IF).addr(&shape.lan.to_string()),
                    EndpointSpec::new(ROUTER, WAN_IF).addr(&shape.wan.to_string()),
                    HostSpec::new(ROUTER).forwarding(),
                )
            } else {
                (EndpointSpec::new(ROUTER, LAN_IF), EndpointSpec::new(ROUTER, WAN_IF), HostSpec::new(ROUTER))
            };
            t = t.host(host).link_spec(LinkSpec::new(lan_end, "lan"));
            if !shape.wan_switch() {
                return t.link(wan_end, server_end(1));
            }
            t = t.switch("wan").link_spec(LinkSpec::new(wan_end, "wan"));
        }
    }
    for j in 1..=shape.servers {
        t = t.link_spec(LinkSpec::new(server_end(j), "wan").without_offloads());
    }
    if shape.intruder {
        let intruder_end = EndpointSpec::new(INTRUDER, "eth0").addr(&format!("{}/24", intruder_addr()));
        t = t.host(HostSpec::new(INTRUDER)).link_spec(LinkSpec::new(intruder_end, "wan").without_offloads());
    }
    t
}

/// Client 1 and server 1 of `shape`, cabled to each other.
fn direct_topology(shape: &Shape) -> Topology {
    let (c, s) = (client(1), shape.server_name(1));
    let client = HostSpec::new(&c).route_dev(&shape.wan.trunc().to_string(), "eth0");
    let server = HostSpec::new(&s)
        .loopback(&format!("{}/32", shape.server_inner(1)))
        .route_dev(&shape.client_lan().trunc().to_string(), "eth0");
    Topology::new().host(crate::vpn::pppd::with_ppp_peer(client)).host(crate::vpn::pppd::with_ppp_peer(server)).link(
        EndpointSpec::new(&c, "eth0").addr(&format!("{}/{}", shape.client_addr(1), shape.client_lan().prefix_len())),
        EndpointSpec::new(&s, "eth0").addr(&format!("{}/{}", shape.server_addr(1), shape.wan.prefix_len())),
    )
}

/// A lab with a router under test running in it.
pub struct NatLab {
    /// The lab.
    pub lab: Lab,
    /// The router.
    pub router: RunningRouter,
    /// Its shape.
    pub shape: Shape,
}

impl NatLab {
    /// Builds the lab and starts the router.
    pub fn build(router: &dyn RouterUnderTest, clients: usize) -> Result<NatLab> {
        NatLab::build_with(router, clients, |t| t)
    }

    /// Builds the lab of [`Shape::new`]`(clients)` as `change` leaves it (extra
    /// bind mounts, sysctls, routes), and starts the router.
    pub fn build_with(
        router: &dyn RouterUnderTest,
        clients: usize,
        change: impl FnOnce(Topology) -> Topology,
    ) -> Result<NatLab> {
        NatLab::build_shaped(router, &Shape::new(clients), change)
    }

    /// Builds the lab of `shape` as `change` leaves it, starts the second
    /// NAT of a double-NAT shape, then the router.
    pub fn build_shaped(
        router: &dyn RouterUnderTest,
        shape: &Shape,
        change: impl FnOnce(Topology) -> Topology,
    ) -> Result<NatLab> {
        let lab = Lab::build(&change(router.topology(shape)))?;
        if shape.double_nat {
            let home = lab.host(HOME)?;
            let rules = LinuxNat { pptp_helper: true }.ruleset(&home.ifname("lan0")?, &home.ifname("wan0")?);
            let file = home.write_conf("home.nft", &rules)?;
            home.run_ok(Cmd::argv(&["nft", "-f", &file.to_string_lossy()]))?;
        }
        let running = router.start(&lab, shape)?;
        Ok(NatLab { lab, router: running, shape: shape.clone() })
    }

    /// Client `i` (from 1).
    pub fn client(&self, i: usize) -> Result<Host<'_>> {
        self.lab.host(&client(i))
    }

    /// How many clients the LAN has.
    pub fn clients(&self) -> usize {
        self.shape.clients
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
