//! The shape of a NAT lab: its hosts, their names and every address, all
//! from one [`Shape`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

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

/// The default LAN: the router at 192.168.1.1/24.
pub fn default_lan() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(192, 168, 1, 1), 24).unwrap_or_default()
}

/// The default WAN: the router's public address 198.51.100.1/24 (what the
/// suite's DHCP server hands an external router).
pub fn default_wan() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(198, 51, 100, 1), 24).unwrap_or_default()
}

/// Client `i`'s host name (clients are numbered from 1).
pub fn client_name(i: usize) -> String {
    format!("c{i}")
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
    /// The hosts on the router's LAN (the clients, or the second NAT) get
    /// their addresses from the router's DHCP server.
    pub lan_dhcp: bool,
    /// The addresses they were leased, by host name, once they were.
    pub leases: BTreeMap<String, Ipv4Addr>,
}

/// The second NAT's host name in a double-NAT [`Shape`].
pub const HOME: &str = "home";

impl Shape {
    /// `clients` clients, one server, the default LAN.
    pub fn new(clients: usize) -> Shape {
        Shape {
            clients,
            servers: 1,
            lan: default_lan(),
            wan: default_wan(),
            double_nat: false,
            intruder: false,
            lan_dhcp: false,
            leases: BTreeMap::new(),
        }
    }

    /// The prefix and gateway of the LAN the clients are on.
    pub fn client_lan(&self) -> Ipv4Net {
        if self.double_nat { Ipv4Net::new(Ipv4Addr::new(10, 20, 0, 1), 24).unwrap_or_default() } else { self.lan }
    }

    /// Client `i`'s address (clients are numbered from 1): its lease, if
    /// it has one, else the LAN's `.9 + i`.
    pub fn client_addr(&self, i: usize) -> Ipv4Addr {
        self.leases.get(&client_name(i)).copied().unwrap_or_else(|| self.wanted_client_addr(i))
    }

    /// The address client `i` is given, or asks the router's DHCP server
    /// for: the LAN's `.9 + i`.
    pub fn wanted_client_addr(&self, i: usize) -> Ipv4Addr {
        nth(self.client_lan(), 9 + i as u32)
    }

    /// The hosts on the router's LAN: the clients, or the second NAT.
    pub fn lan_hosts(&self) -> Vec<String> {
        if self.double_nat { vec![HOME.to_string()] } else { (1..=self.clients).map(client_name).collect() }
    }

    /// The address the router sees client `i` as: its own, or the second
    /// NAT's.
    pub fn seen_as(&self, i: usize) -> Ipv4Addr {
        if self.double_nat { self.home_addr() } else { self.client_addr(i) }
    }

    /// The second NAT's address on the router's LAN: its lease, if it has
    /// one, else the LAN's `.2`.
    pub fn home_addr(&self) -> Ipv4Addr {
        self.leases.get(HOME).copied().unwrap_or_else(|| nth(self.lan, 2))
    }

    /// The address `host` on the router's LAN is given or asks for.
    pub fn wanted_lan_addr(&self, host: &str) -> Option<Ipv4Addr> {
        if host == HOME {
            return Some(nth(self.lan, 2));
        }
        (1..=self.clients).find(|i| client_name(*i) == host).map(|i| self.wanted_client_addr(i))
    }

    /// The hosts VPN endpoints run on: the clients, then the servers.
    pub fn endpoint_hosts(&self) -> Vec<String> {
        (1..=self.clients).map(client_name).chain((1..=self.servers).map(|j| self.server_name(j))).collect()
    }

    /// Server `j`'s host name (servers are numbered from 1).
    pub fn server_name(&self, j: usize) -> String {
        if j == 1 { SERVER.to_string() } else { format!("{SERVER}{j}") }
    }

    /// Server `j`'s address: the WAN's `.2` up, passing over the router's.
    pub fn server_addr(&self, j: usize) -> Ipv4Addr {
        (2..).map(|n| nth(self.wan, n)).filter(|a| *a != self.wan.addr()).nth(j - 1).unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The intruder's address ([`INTRUDER`]): the WAN's `.66`.
    pub fn intruder_addr(&self) -> Ipv4Addr {
        nth(self.wan, 66)
    }

    /// Server `j`'s inner address, on its loopback: what tunnels reach.
    pub fn server_inner(&self, j: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 10, 0, j as u8)
    }

    pub(super) fn wan_switch(&self) -> bool {
        self.servers > 1 || self.intruder
    }
}

/// The `n`th address of `net`'s network.
fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}
