//! A checked topology: every name valid, every address parsed, every
//! interface given its kernel index, every route's gateway reachable.
//!
//! The plan does not depend on the run: names get the run prefix only when a
//! lab is built. Interface indexes are chosen here (1 is `lo` in every fresh
//! namespace), which lets the lab create each veth pair, up and in place, in a
//! single netlink request and address it without looking anything up.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::names::{check_local_ifname, check_node_name};
use super::topology::{BindSpec, EndpointSpec, Topology};

/// The name of the bridge inside a switch's namespace.
pub const BRIDGE_IFNAME: &str = "br";

/// Everything wrong with a topology, each item saying where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub Vec<String>);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "topology: {one}"),
            many => {
                write!(f, "topology has {} problems:", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PlanError {}

/// A host or a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A host: addresses, routes, processes.
    Host,
    /// A switch: a bridge and its ports.
    Switch,
}

/// One namespace of the lab.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// Name from the topology.
    pub name: String,
    /// Host or switch.
    pub kind: NodeKind,
    /// IP forwarding on.
    pub forwarding: bool,
    /// Interfaces in creation order; a switch's bridge comes first.
    pub ifaces: Vec<IfacePlan>,
    /// Routes, in the order written.
    pub routes: Vec<RoutePlan>,
    /// `net.*` sysctls as (key, value); keys naming an interface of the
    /// topology are completed with the run prefix when applied.
    pub sysctls: Vec<(String, String)>,
    /// Bind mounts of the host sandbox.
    pub binds: Vec<BindSpec>,
    /// Addresses of the loopback interface.
    pub loopback: Vec<IpNet>,
    /// A switch's port that is an existing interface of the namespace the
    /// lab is built in (moved in, joined to the bridge, given back).
    pub adopt: Option<String>,
}

/// One interface.
#[derive(Debug, Clone)]
pub struct IfacePlan {
    /// Name from the topology (or `p<N>`/`br` in a switch).
    pub local: String,
    /// Kernel interface index inside the node's namespace.
    pub index: u32,
    /// Addresses.
    pub addrs: Vec<IpNet>,
    /// MTU, if the link sets one.
    pub mtu: Option<u32>,
    /// Whether offloads stay on.
    pub offloads: bool,
    /// The veth peer (node, interface), or `None` for a bridge.
    pub peer: Option<(usize, usize)>,
    /// This end is created as the veth's peer: the kernel cannot bring a
    /// peer up (or join it to a bridge) in the creating request, so it is
    /// done when the node is configured.
    pub is_veth_peer: bool,
}

/// One veth pair.
#[derive(Debug, Clone, Copy)]
pub struct LinkPlan {
    /// (node, interface) of the end created as the main device: the switch
    /// side if there is one, so that it joins its bridge as it is created.
    pub main: (usize, usize),
    /// (node, interface) of the end created as the peer.
    pub peer: (usize, usize),
}

/// One route.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// Destination prefix.
    pub dest: IpNet,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface (index into the node's interfaces), if given.
    pub dev: Option<usize>,
}

/// A topology, checked and with every index chosen.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Hosts first, in topology order, then switches.
    pub nodes: Vec<NodePlan>,
    /// Links in topology order.
    pub links: Vec<LinkPlan>,
}

impl Plan {
    /// Checks `topology` and plans it; every problem is reported at once.
    pub fn new(topology: &Topology) -> Result<Plan, PlanError> {
        let mut problems = Vec::new();
        let mut nodes: Vec<NodePlan> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();

        let hosts = topology.hosts.iter().map(|h| (h.name.as_str(), NodeKind::Host, None));
        let switches = topology.switches.iter().map(|s| (s.name.as_str(), NodeKind::Switch, s.adopt.clone()));
        for (name, kind, adopt) in hosts.chain(switches) {
            if let Err(why) = check_node_name(name) {
                problems.push(format!("name '{name}' {why}"));
            }
            if by_name.insert(name.to_string(), nodes.len()).is_some() {
                problems.push(format!("name '{name}' is used twice (hosts and switches share names)"));
            }
            let mut node = NodePlan {
                name: name.to_string(),
                kind,
                forwarding: false,
                ifaces: Vec::new(),
                routes: Vec::new(),
                sysctls: Vec::new(),
                binds: Vec::new(),
                loopback: Vec::new(),
                adopt,
            };
            if let Some(port) = &node.adopt
                && (port.is_empty() || port.len() > 15)
            {
                problems.push(format!("switch '{name}': '{port}' is not an interface name (1 to 15 bytes)"));
            }
            if kind == NodeKind::Switch {
                node.ifaces.push(IfacePlan {
                    local: BRIDGE_IFNAME.into(),
                    index: 2,
                    addrs: Vec::new(),
                    mtu: None,
                    offloads: true,
                    peer: None,
                    is_veth_peer: false,
                });
            }
            nodes.push(node);
        }
        if nodes.is_empty() {
            problems.push("has no host".into());
        }

        let mut links = Vec::new();
        for (n, link) in topology.links.iter().enumerate() {
            let place = format!("link {} ({} — {})", n + 1, describe(&link.a), describe(&link.b));
            if let Some(mtu) = link.mtu {
                if !(68..=65535).contains(&mtu) {
                    problems.push(format!("{place}: MTU {mtu} is outside 68..=65535"));
                }
            }
            let a = add_endpoint(&mut nodes, &by_name, &link.a, link.mtu, link.offloads, &place, &mut problems);
            let b = add_endpoint(&mut nodes, &by_name, &link.b, link.mtu, link.offloads, &place, &mut problems);
            if let (Some(a), Some(b)) = (a, b) {
                let (main, peer) = if nodes[b.0].kind == NodeKind::Switch { (b, a) } else { (a, b) };
                nodes[main.0].ifaces[main.1].peer = Some(peer);
                nodes[peer.0].ifaces[peer.1].peer = Some(main);
                nodes[peer.0].ifaces[peer.1].is_veth_peer = true;
                links.push(LinkPlan { main, peer });
            }
        }

        for spec in &topology.hosts {
            let Some(&idx) = by_name.get(&spec.name) else { continue };
            if nodes[idx].kind != NodeKind::Host {
                continue;
            }
            let place = format!("host '{}'", spec.name);
            let routes = spec.routes.iter().filter_map(|r| plan_route(&nodes[idx], r, &place, &mut problems)).collect();
            let node = &mut nodes[idx];
            node.routes = routes;
            node.forwarding = spec.forwarding;
            for (key, value) in &spec.sysctls {
                if let Err(why) = check_sysctl(key, value) {
                    problems.push(format!("{place}: sysctl '{key}' {why}"));
                }
                node.sysctls.push((key.clone(), value.clone()));
            }
            for a in &spec.loopback {
                match a.parse::<IpNet>() {
                    Ok(net) => node.loopback.push(net),
                    Err(_) => {
                        problems.push(format!("{place}: loopback address '{a}' is not an address with prefix length"))
                    }
                }
            }
            for bind in &spec.binds {
                if !bind.source.is_absolute() || !bind.target.is_absolute() {
                    problems.push(format!(
                        "{place}: bind mount {} -> {} needs absolute paths",
                        bind.source.display(),
                        bind.target.display()
                    ));
                }
                node.binds.push(bind.clone());
            }
        }

        if problems.is_empty() { Ok(Plan { nodes, links }) } else { Err(PlanError(problems)) }
    }

    /// The index of the node called `name`.
    pub fn node(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Host => "host",
            NodeKind::Switch => "switch",
        })
    }
}

impl NodePlan {
    /// "host 'client'" or "switch 'lan'", for messages.
    pub fn label(&self) -> String {
        format!("{} '{}'", self.kind, self.name)
    }

    /// The index (in `ifaces`) of the interface called `local`.
    pub fn iface(&self, local: &str) -> Option<usize> {
        self.ifaces.iter().position(|i| i.local == local)
    }
}

fn describe(e: &EndpointSpec) -> String {
    match &e.iface {
        Some(iface) => format!("{}:{iface}", e.node),
        None => e.node.clone(),
    }
}

fn add_endpoint(
    nodes: &mut [NodePlan],
    by_name: &HashMap<String, usize>,
    end: &EndpointSpec,
    mtu: Option<u32>,
    offloads: bool,
    place: &str,
    problems: &mut Vec<String>,
) -> Option<(usize, usize)> {
    let Some(&n) = by_name.get(&end.node) else {
        problems.push(format!("{place}: no host or switch is called '{}'", end.node));
        return None;
    };
    let node = &mut nodes[n];
    let local = match (node.kind, &end.iface) {
        (NodeKind::Host, Some(iface)) => {
            if let Err(why) = check_local_ifname(iface) {
                problems.push(format!("{place}: interface name '{iface}' {why}"));
                return None;
            }
            if node.iface(iface).is_some() {
                problems.push(format!("{place}: host '{}' already has an interface '{iface}'", node.name));
                return None;
            }
            iface.clone()
        }
        (NodeKind::Host, None) => {
            problems.push(format!(
                "{place}: host '{}' needs an interface name, e.g. ('{}', \"eth0\")",
                node.name, node.name
            ));
            return None;
        }
        (NodeKind::Switch, Some(iface)) => {
            problems.push(format!(
                "{place}: switch '{}' names its own ports; drop the interface name '{iface}'",
                node.name
            ));
            return None;
        }
        (NodeKind::Switch, None) => {
            if !end.addrs.is_empty() {
                problems.push(format!("{place}: a switch port has no addresses; put them on the host end"));
            }
            format!("p{}", node.ifaces.len() - 1)
        }
    };
    let mut addrs = Vec::new();
    for a in &end.addrs {
        match a.parse::<IpNet>() {
            Ok(net) => {
                if node.ifaces.iter().flat_map(|i| &i.addrs).any(|x| x.addr() == net.addr()) {
                    problems.push(format!("{place}: host '{}' has address {} twice", node.name, net.addr()));
                }
                addrs.push(net);
            }
            Err(_) if a.parse::<IpAddr>().is_ok() => problems.push(format!(
                "{place}: address '{a}' needs a prefix length, e.g. '{a}/{}'",
                if a.contains(':') { 64 } else { 24 }
            )),
            Err(_) => problems.push(format!("{place}: '{a}' is not an address with prefix length")),
        }
    }
    let index = node.ifaces.len() as u32 + 2;
    node.ifaces.push(IfacePlan { local, index, addrs, mtu, offloads, peer: None, is_veth_peer: false });
    Some((n, node.ifaces.len() - 1))
}

fn plan_route(
    node: &NodePlan,
    spec: &super::topology::RouteSpec,
    place: &str,
    problems: &mut Vec<String>,
) -> Option<RoutePlan> {
    let what = format!("{place}: route to {}", spec.to);
    let gateway = match &spec.via {
        None => None,
        Some(g) => match g.parse::<IpAddr>() {
            Ok(g) => Some(g),
            Err(_) => {
                problems.push(format!("{what}: gateway '{g}' is not an IP address"));
                return None;
            }
        },
    };
    let dest = if spec.to == "default" {
        match gateway {
            Some(IpAddr::V4(_)) => "0.0.0.0/0".parse().ok(),
            Some(IpAddr::V6(_)) => "::/0".parse().ok(),
            None => {
                problems.push(format!("{what}: a default route needs a gateway ('via')"));
                return None;
            }
        }
    } else {
        match spec.to.parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(_) => {
                problems.push(format!("{what}: '{}' is not a prefix like 10.0.0.0/8 or 'default'", spec.to));
                return None;
            }
        }
    }?;
    let dev = match &spec.dev {
        None => None,
        Some(d) => match node.iface(d) {
            Some(i) => Some(i),
            None => {
                problems.push(format!("{what}: host has no interface '{d}'"));
                return None;
            }
        },
    };
    if let Some(g) = gateway {
        if g.is_ipv4() != dest.addr().is_ipv4() {
            problems.push(format!("{what}: gateway {g} is not of the destination's family"));
            return None;
        }
        let connected = node.ifaces.iter().flat_map(|i| &i.addrs).any(|a| a.contains(&g));
        if !connected && dev.is_none() {
            let nets: BTreeSet<String> =
                node.ifaces.iter().flat_map(|i| &i.addrs).map(|a| a.trunc().to_string()).collect();
            let nets: Vec<String> = nets.into_iter().collect();
            problems.push(format!(
                "{what}: gateway {g} is on none of the host's networks ({})",
                if nets.is_empty() { "it has none".to_string() } else { nets.join(", ") }
            ));
            return None;
        }
    } else if dev.is_none() {
        problems.push(format!("{what}: needs a gateway ('via') or an interface ('dev')"));
        return None;
    }
    Some(RoutePlan { dest, gateway, dev })
}

fn check_sysctl(key: &str, value: &str) -> Result<(), String> {
    if !key.starts_with("net.") {
        return Err("is not a per-namespace sysctl (only net.* are)".into());
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !key.chars().all(ok) || key.contains("..") {
        return Err("has characters a sysctl key cannot have".into());
    }
    if value.is_empty() || value.contains('\n') {
        return Err("needs a one-line value".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::{HostSpec, LinkSpec, Topology};

    fn three_hosts() -> Topology {
        Topology::new()
            .host(HostSpec::new("client").default_route("10.1.0.1"))
            .host(HostSpec::new("router").forwarding())
            .host(HostSpec::new("server").default_route("10.2.0.1"))
            .link(("client", "eth0", "10.1.0.2/24"), ("router", "lan", "10.1.0.1/24"))
            .link(("router", "wan", "10.2.0.1/24"), ("server", "eth0", "10.2.0.2/24"))
    }

    #[test]
    fn indexes_start_after_lo_and_peers_point_at_each_other() {
        let plan = Plan::new(&three_hosts()).expect("valid topology");
        let router = &plan.nodes[plan.node("router").expect("router")];
        assert_eq!(router.ifaces.iter().map(|i| i.index).collect::<Vec<_>>(), vec![2, 3]);
        let (pn, pi) = router.ifaces[1].peer.expect("wan has a peer");
        assert_eq!(plan.nodes[pn].name, "server");
        assert_eq!(plan.nodes[pn].ifaces[pi].peer, Some((plan.node("router").expect("router"), 1)));
        assert!(router.forwarding);
    }

    #[test]
    fn switch_ports_are_named_and_numbered_after_the_bridge() {
        let plan = Plan::new(&Topology::star(3)).expect("valid star");
        let sw = &plan.nodes[plan.node("sw").expect("switch")];
        let names: Vec<_> = sw.ifaces.iter().map(|i| (i.local.as_str(), i.index)).collect();
        assert_eq!(names, vec![("br", 2), ("p0", 3), ("p1", 4), ("p2", 5)]);
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let t = Topology::new()
            .host(HostSpec::new("a").route("default", "192.168.9.1"))
            .host("a")
            .host("Bad")
            .switch("sw")
            .link(("a", "eth0", "10.0.0.1"), ("nobody", "eth0"))
            .link(("a", "averyverylongname"), ("sw", "p1"))
            .link_spec(LinkSpec::new(("a", "x", "10.0.0.300/24"), "sw").mtu(20));
        let err = Plan::new(&t).expect_err("broken topology");
        let text = err.to_string();
        for needle in [
            "name 'a' is used twice",
            "name 'Bad' may only hold",
            "address '10.0.0.1' needs a prefix length",
            "no host or switch is called 'nobody'",
            "interface name 'averyverylongname'",
            "switch 'sw' names its own ports",
            "MTU 20",
            "'10.0.0.300/24' is not an address",
            "gateway 192.168.9.1 is on none of the host's networks",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn routes_check_family_and_need_a_way_out() {
        let t = Topology::new()
            .host(HostSpec::new("a").route("10.9.0.0/16", "fd00::1"))
            .host(HostSpec {
                routes: vec![crate::lab::topology::RouteSpec { to: "10.8.0.0/16".into(), via: None, dev: None }],
                ..HostSpec::new("b")
            })
            .link(("a", "eth0", "10.0.0.1/24"), ("b", "eth0", "10.0.0.2/24"));
        let text = Plan::new(&t).expect_err("bad routes").to_string();
        assert!(text.contains("not of the destination's family"), "{text}");
        assert!(text.contains("needs a gateway ('via') or an interface ('dev')"), "{text}");
    }

    #[test]
    fn sysctls_outside_net_are_refused() {
        let t = Topology::new().host(HostSpec::new("a").sysctl("kernel.pid_max", "1"));
        let text = Plan::new(&t).expect_err("kernel.* is global").to_string();
        assert!(text.contains("not a per-namespace sysctl"), "{text}");
    }
}
