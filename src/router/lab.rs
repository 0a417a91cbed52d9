//! The lab a router is tested in: the topology of a [`Shape`] with the
//! router placed in it, and [`NatLab`], that lab built with a router running.

use crate::lab::{Cmd, EndpointSpec, Host, HostSpec, Lab, LinkSpec, Result, Topology};

use super::linux_nat::LinuxNat;
use super::shape::{HOME, INTRUDER, LAN_IF, ROUTER, SERVER, Shape, WAN_IF, client_name};
use super::{RouterUnderTest, RunningRouter};

/// Where the router under test is.
pub(super) enum Placement<'a> {
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

pub(super) fn placed_topology(placement: Placement<'_>, shape: &Shape) -> Topology {
    let mut t = match placement {
        Placement::External { lan_port, .. } => Topology::new().switch_with_port("lan", lan_port),
        Placement::Host { .. } => Topology::new().switch("lan"),
    };
    let client_switch = if shape.double_nat {
        let home_lan = shape.client_lan().to_string();
        let (home, wan0) = if shape.lan_dhcp {
            (HostSpec::new(HOME).forwarding(), EndpointSpec::new(HOME, "wan0"))
        } else {
            (
                HostSpec::new(HOME).forwarding().default_route(&shape.lan.addr().to_string()),
                EndpointSpec::new(HOME, "wan0").addr(&format!("{}/{}", shape.home_addr(), shape.lan.prefix_len())),
            )
        };
        t = t
            .switch("homelan")
            .host(home)
            .link(wan0, "lan")
            .link(EndpointSpec::new(HOME, "lan0").addr(&home_lan), "homelan");
        "homelan"
    } else {
        "lan"
    };
    let gw = shape.client_lan().addr().to_string();
    // Clients on the router's LAN lease their address when the LAN is
    // served by DHCP; behind a second NAT they never do.
    let leased = shape.lan_dhcp && !shape.double_nat;
    for i in 1..=shape.clients {
        let name = client_name(i);
        let addr = format!("{}/{}", shape.client_addr(i), shape.client_lan().prefix_len());
        let (host, end) = if leased {
            (HostSpec::new(&name), EndpointSpec::new(&name, "eth0"))
        } else {
            (HostSpec::new(&name).default_route(&gw), EndpointSpec::new(&name, "eth0").addr(&addr))
        };
        t = t.host(crate::vpn::pppd::with_ppp_peer(host)).link(end, client_switch);
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
        let intruder_end = EndpointSpec::new(INTRUDER, "eth0").addr(&format!("{}/24", shape.intruder_addr()));
        t = t.host(HostSpec::new(INTRUDER)).link_spec(LinkSpec::new(intruder_end, "wan").without_offloads());
    }
    t
}

/// Client 1 and server 1 of `shape`, cabled to each other.
pub(super) fn direct_topology(shape: &Shape) -> Topology {
    let (c, s) = (client_name(1), shape.server_name(1));
    let client = HostSpec::new(&c).route_dev(&shape.wan.trunc().to_string(), "eth0");
    let server = HostSpec::new(&s)
        .loopback(&format!("{}/32", shape.server_inner(1)))
        .route_dev(&shape.client_lan().trunc().to_string(), "eth0");
    Topology::new().host(crate::vpn::pppd::with_ppp_peer(client)).host(crate::vpn::pppd::with_ppp_peer(server)).link(
        EndpointSpec::new(&c, "eth0").addr(&format!("{}/{}", shape.client_addr(1), shape.client_lan().prefix_len())),
        EndpointSpec::new(&s, "eth0").addr(&format!("{}/{}", shape.server_addr(1), shape.wan.prefix_len())),
    )
}

/// Leases an address from the router's DHCP server for every host on its
/// LAN, each asking for the address the shape would give it; the shape
/// learns the leases and the router's LAN address and prefix (the leases'
/// router option). A router under test is not trusted: leases must name a
/// router on their own subnet other than the host, on one LAN apart from
/// the WAN, and differ from each other.
fn lease_lan(lab: &Lab, shape: &mut Shape) -> Result<()> {
    let mut gateway: Option<ipnet::Ipv4Net> = None;
    for name in shape.lan_hosts() {
        let host = lab.host(&name)?;
        let iface = if name == HOME { "wan0" } else { "eth0" };
        let lease = super::dhcp::lease(&host, iface, shape.wanted_lan_addr(&name))?;
        let refuse = |why: String| {
            Err(crate::lab::LabError::Input(format!(
                "host '{name}' leased {} (router {}) from the router's DHCP server: {why}",
                lease.addr,
                lease.router.map_or("none".to_string(), |r| r.to_string())
            )))
        };
        let Some(gw) = lease.gateway() else {
            return refuse("no router option on that subnet; the suite learns the router's LAN address from it".into());
        };
        if !(8..=30).contains(&gw.prefix_len()) {
            return refuse(format!("a /{} LAN is no LAN a router hands out", gw.prefix_len()));
        }
        if gw.addr() == lease.addr.addr() || gw.addr() == gw.network() || gw.addr() == gw.broadcast() {
            return refuse("the router option is the host itself, or the subnet's network or broadcast address".into());
        }
        if gw.contains(&shape.wan.addr()) || shape.wan.contains(&gw.addr()) {
            return refuse(format!("the LAN overlaps the WAN ({})", shape.wan));
        }
        if gateway.is_some_and(|g| g != gw) {
            return refuse(format!(
                "another host's lease named {}",
                gateway.map(|g| g.to_string()).unwrap_or_default()
            ));
        }
        if shape.leases.values().any(|a| *a == lease.addr.addr()) {
            return refuse("another host on the LAN holds that address".into());
        }
        gateway = Some(gw);
        shape.lan = gw;
        shape.leases.insert(name, lease.addr.addr());
    }
    Ok(())
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
        let mut shape = shape.clone();
        if shape.lan_dhcp {
            lease_lan(&lab, &mut shape)?;
        }
        if shape.double_nat {
            let home = lab.host(HOME)?;
            let rules = LinuxNat { pptp_helper: true }.ruleset(&home.ifname("lan0")?, &home.ifname("wan0")?);
            let file = home.write_conf("home.nft", &rules)?;
            home.run_ok(Cmd::argv(&["nft", "-f", &file.to_string_lossy()]))?;
        }
        let running = router.start(&lab, &shape)?;
        Ok(NatLab { lab, router: running, shape })
    }

    /// Client `i` (from 1).
    pub fn client(&self, i: usize) -> Result<Host<'_>> {
        self.lab.host(&client_name(i))
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
