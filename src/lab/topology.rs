//! A declarative topology: hosts, switches, links, addresses and routes.
//!
//! A topology is what a test or a scenario file says it wants; it holds names
//! and addresses as written and is checked as a whole by
//! [`Plan::new`](super::plan::Plan::new), which reports every mistake with the
//! place it was made. It can be written in Rust:
//!
//! ```
//! use vpn_passthrough::lab::{HostSpec, Topology};
//!
//! let topology = Topology::new()
//!     .host(HostSpec::new("client").default_route("10.1.0.1"))
//!     .host(HostSpec::new("router").forwarding())
//!     .host(HostSpec::new("server").default_route("10.2.0.1"))
//!     .link(("client", "eth0", "10.1.0.2/24"), ("router", "lan", "10.1.0.1/24"))
//!     .link(("router", "wan", "10.2.0.1/24"), ("server", "eth0", "10.2.0.2/24"));
//! # assert_eq!(topology.hosts.len(), 3);
//! ```
//!
//! or read from TOML with the same field names (`[[host]]`, `[[switch]]`,
//! `[[link]]`); see `scenarios/topologies/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A whole topology.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Hosts: each one a network namespace with a private mount namespace.
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostSpec>,
    /// Switches: each one a bridge in a namespace of its own.
    #[serde(default, rename = "switch")]
    pub switches: Vec<SwitchSpec>,
    /// Links: each one a veth pair between two hosts, or a host and a switch.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
}

/// One host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The host's name: 1 to 24 characters of `[a-z0-9_-]`.
    pub name: String,
    /// Whether the kernel forwards IPv4 and IPv6 between the host's interfaces.
    #[serde(default)]
    pub forwarding: bool,
    /// Routes, added once every address is in place.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Extra `net.*` sysctls of the host's namespace, e.g.
    /// `"net.ipv4.conf.all.rp_filter" = "0"`.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Bind mounts in the host's private mount namespace.
    #[serde(default)]
    pub binds: Vec<BindSpec>,
    /// Addresses on the host's loopback interface (an inner address a
    /// tunnel reaches), with prefix length.
    #[serde(default)]
    pub loopback: Vec<String>,
}

/// One switch (a bridge). Hosts attach to it with links that name it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpec {
    /// The switch's name; shares the namespace of names with hosts.
    pub name: String,
    /// An existing interface of the namespace the lab is built in (a NIC
    /// wired to a real router) to join to the switch for the lab's life;
    /// it is given back at teardown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<String>,
}

/// A veth pair between two endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One end.
    pub a: EndpointSpec,
    /// The other end.
    pub b: EndpointSpec,
    /// MTU of both ends (kernel default 1500 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Checksum and segmentation offloads; a userspace router on this link
    /// needs them off.
    #[serde(default = "yes")]
    pub offloads: bool,
}

fn yes() -> bool {
    true
}

/// One end of a link: a host interface with its addresses, or a switch port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// The host or switch this end belongs to.
    pub node: String,
    /// The interface name inside the host (1 to 9 characters; the run prefix
    /// is added). Switch ports are named by the lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Addresses with prefix length, IPv4 or IPv6, e.g. `"10.1.0.2/24"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
}

/// A route of a host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Destination prefix, or `"default"`.
    pub to: String,
    /// Gateway; it must be on one of the host's connected networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Output interface (the name the topology gave it), for routes without
    /// a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// A bind mount in a host's mount namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindSpec {
    /// Existing file or directory to show.
    pub source: PathBuf,
    /// Where the host sees it; must exist and be of the same kind.
    pub target: PathBuf,
    /// Mount it read-only.
    #[serde(default)]
    pub read_only: bool,
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Topology {
        Topology::default()
    }

    /// Reads a topology from a TOML file; errors name the file and the place.
    pub fn from_toml_file(path: &Path) -> Result<Topology, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read topology file {}: {e}", path.display()))?;
        Topology::from_toml(&text).map_err(|e| format!("topology file {}: {e}", path.display()))
    }

    /// Reads a topology from TOML text.
    pub fn from_toml(text: &str) -> Result<Topology, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Adds a host (a name alone, or a [`HostSpec`]).
    pub fn host(mut self, host: impl Into<HostSpec>) -> Topology {
        self.hosts.push(host.into());
        self
    }

    /// Adds a switch.
    pub fn switch(mut self, name: &str) -> Topology {
        self.switches.push(SwitchSpec { name: name.to_string(), adopt: None });
        self
    }

    /// Adds a switch that also joins `iface`, an existing interface of the
    /// namespace the lab is built in (a NIC wired to a real router).
    pub fn switch_with_port(mut self, name: &str, iface: &str) -> Topology {
        self.switches.push(SwitchSpec { name: name.to_string(), adopt: Some(iface.to_string()) });
        self
    }

    /// Links two endpoints with default link settings.
    pub fn link(self, a: impl Into<EndpointSpec>, b: impl Into<EndpointSpec>) -> Topology {
        self.link_spec(LinkSpec::new(a, b))
    }

    /// Adds a link with its own settings (MTU, offloads).
    pub fn link_spec(mut self, link: LinkSpec) -> Topology {
        self.links.push(link);
        self
    }

    /// A star: `hosts` hosts named `h0`, `h1`, … on one switch `sw`, all in
    /// 10.0.0.0/8 — used by the lab benchmark.
    pub fn star(hosts: usize) -> Topology {
        let mut t = Topology::new().switch("sw");
        for i in 0..hosts {
            let name = format!("h{i}");
            let addr = format!("10.{}.{}.{}/8", 0, (i + 1) / 256, (i + 1) % 256);
            t = t.host(name.as_str()).link((name.as_str(), "eth0", addr.as_str()), "sw");
        }
        t
    }

    /// A chain: `hosts` hosts `h0 — h1 — … — hN` with forwarding in the
    /// middle and routes so that the ends reach each other.
    pub fn chain(hosts: usize) -> Topology {
        let mut t = Topology::new();
        // Link i joins h(i) (.1) and h(i+1) (.2) on its own /24 of 172.16.0.0/12.
        let net = |i: usize| (16 + i / 256, i % 256);
        for i in 0..hosts {
            let mut h = HostSpec::new(&format!("h{i}"));
            if i > 0 && i + 1 < hosts {
                h = h.forwarding();
            }
            if i > 0 {
                let (x, y) = net(i - 1);
                h = h.route("default", &format!("172.{x}.{y}.1"));
            } else if hosts > 1 {
                h = h.route("default", "172.16.0.2");
            }
            t = t.host(h);
        }
        for i in 0..hosts.saturating_sub(1) {
            let (x, y) = net(i);
            let left = format!("h{i}");
            let right = format!("h{}", i + 1);
            t = t.link(
                (left.as_str(), "right", format!("172.{x}.{y}.1/24").as_str()),
                (right.as_str(), "left", format!("172.{x}.{y}.2/24").as_str()),
            );
        }
        // Every host defaults towards h0; a middle host also routes each
        // network further right through its right-hand neighbour.
        for i in 1..hosts.saturating_sub(1) {
            for j in (i + 1)..hosts.saturating_sub(1) {
                let (x, y) = net(j);
                let (gx, gy) = net(i);
                t.hosts[i].routes.push(RouteSpec {
                    to: format!("172.{x}.{y}.0/24"),
                    via: Some(format!("172.{gx}.{gy}.2")),
                    dev: None,
                });
            }
        }
        t
    }
}

impl HostSpec {
    /// A host with no routes, forwarding off.
    pub fn new(name: &str) -> HostSpec {
        HostSpec {
            name: name.to_string(),
            forwarding: false,
            routes: Vec::new(),
            sysctls: BTreeMap::new(),
            binds: Vec::new(),
            loopback: Vec::new(),
        }
    }

    /// Turns on IPv4 and IPv6 forwarding.
    pub fn forwarding(mut self) -> HostSpec {
        self.forwarding = true;
        self
    }

    /// Adds a default route via `gateway` (IPv4 or IPv6).
    pub fn default_route(self, gateway: &str) -> HostSpec {
        self.route("default", gateway)
    }

    /// Adds a route to `to` (a prefix or `"default"`) via `gateway`.
    pub fn route(mut self, to: &str, gateway: &str) -> HostSpec {
        self.routes.push(RouteSpec { to: to.to_string(), via: Some(gateway.to_string()), dev: None });
        self
    }

    /// Adds a route to `to` (a prefix) straight out of interface `dev`, no
    /// gateway: the destinations are on that link.
    pub fn route_dev(mut self, to: &str, dev: &str) -> HostSpec {
        self.routes.push(RouteSpec { to: to.to_string(), via: None, dev: Some(dev.to_string()) });
        self
    }

    /// Sets a `net.*` sysctl in the host's namespace.
    pub fn sysctl(mut self, key: &str, value: &str) -> HostSpec {
        self.sysctls.insert(key.to_string(), value.to_string());
        self
    }

    /// Adds an address to the host's loopback interface.
    pub fn loopback(mut self, addr: &str) -> HostSpec {
        self.loopback.push(addr.to_string());
        self
    }

    /// Shows `source` at `target` inside the host.
    pub fn bind(mut self, source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> HostSpec {
        self.binds.push(BindSpec { source: source.into(), target: target.into(), read_only: false });
        self
    }
}

impl From<&str> for HostSpec {
    fn from(name: &str) -> HostSpec {
        HostSpec::new(name)
    }
}

impl LinkSpec {
    /// A link between two endpoints, MTU default, offloads on.
    pub fn new(a: impl Into<EndpointSpec>, b: impl Into<EndpointSpec>) -> LinkSpec {
        LinkSpec { a: a.into(), b: b.into(), mtu: None, offloads: true }
    }

    /// Sets the MTU of both ends.
    pub fn mtu(mut self, mtu: u32) -> LinkSpec {
        self.mtu = Some(mtu);
        self
    }

    /// Turns checksum and segmentation offloads off on both ends.
    pub fn without_offloads(mut self) -> LinkSpec {
        self.offloads = false;
        self
    }
}

impl EndpointSpec {
    /// A host interface with no address yet.
    pub fn new(node: &str, iface: &str) -> EndpointSpec {
        EndpointSpec { node: node.to_string(), iface: Some(iface.to_string()), addrs: Vec::new() }
    }

    /// Adds an address with prefix length.
    pub fn addr(mut self, addr: &str) -> EndpointSpec {
        self.addrs.push(addr.to_string());
        self
    }
}

/// A switch port (or a host without interface name, which the plan refuses).
impl From<&str> for EndpointSpec {
    fn from(node: &str) -> EndpointSpec {
        EndpointSpec { node: node.to_string(), iface: None, addrs: Vec::new() }
    }
}

/// A host interface without address.
impl From<(&str, &str)> for EndpointSpec {
    fn from((node, iface): (&str, &str)) -> EndpointSpec {
        EndpointSpec::new(node, iface)
    }
}

/// A host interface with one address.
impl From<(&str, &str, &str)> for EndpointSpec {
    fn from((node, iface, addr): (&str, &str, &str)) -> EndpointSpec {
        EndpointSpec::new(node, iface).addr(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_builder_agree() {
        let text = r#"
            [[host]]
            name = "client"
            routes = [{ to = "default", via = "10.1.0.1" }]

            [[host]]
            name = "router"
            forwarding = true

            [[link]]
            a = { node = "client", iface = "eth0", addrs = ["10.1.0.2/24"] }
            b = { node = "router", iface = "lan", addrs = ["10.1.0.1/24"] }
        "#;
        let parsed = Topology::from_toml(text).expect("valid TOML");
        let built = Topology::new()
            .host(HostSpec::new("client").default_route("10.1.0.1"))
            .host(HostSpec::new("router").forwarding())
            .link(("client", "eth0", "10.1.0.2/24"), ("router", "lan", "10.1.0.1/24"));
        assert_eq!(parsed, built);
    }

    #[test]
    fn every_shipped_topology_file_plans() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/topologies");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios/topologies exists") {
            let path = entry.expect("readable entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let t = Topology::from_toml_file(&path).unwrap_or_else(|e| panic!("{e}"));
                crate::lab::Plan::new(&t).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected the shipped topologies in {}", dir.display());
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Topology::from_toml("[[host]]\nname = \"a\"\nforwardin = true\n").expect_err("typo must be refused");
        assert!(err.contains("forwardin"), "{err}");
    }

    #[test]
    fn generated_shapes_have_the_requested_size() {
        let star = Topology::star(50);
        assert_eq!(star.hosts.len(), 50);
        assert_eq!(star.links.len(), 50);
        let chain = Topology::chain(5);
        assert_eq!(chain.hosts.len(), 5);
        assert_eq!(chain.links.len(), 4);
        assert!(chain.hosts[1].forwarding && !chain.hosts[0].forwarding);
    }
}
