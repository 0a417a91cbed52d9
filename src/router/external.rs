//! A real router, wired to two NICs, as the router under test.

use ipnet::Ipv4Net;

use crate::lab::{Cmd, Host, Lab, LabError, Result, Topology};

use super::dhcp;
use super::lab::{Placement, placed_topology};
use super::shape::{HOME, SERVER, Shape, client_name, default_lan, default_wan};
use super::{RouterUnderTest, RunningRouter};

/// How one side of an external router is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// By DHCP: the router serves its LAN (its lease's router option is
    /// its LAN address); the suite serves its WAN, handing out
    /// 198.51.100.1/24, as an ISP would.
    Dhcp,
    /// Set on the router by hand: its address and prefix on that side.
    Static(Ipv4Net),
}

impl std::str::FromStr for Addressing {
    type Err = String;
    fn from_str(s: &str) -> Result<Addressing, String> {
        if s == "dhcp" {
            return Ok(Addressing::Dhcp);
        }
        s.parse().map(Addressing::Static).map_err(|e| format!("'{s}': neither dhcp nor ADDR/LEN ({e})"))
    }
}

impl std::fmt::Display for Addressing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addressing::Dhcp => f.write_str("dhcp"),
            Addressing::Static(n) => write!(f, "{n}"),
        }
    }
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
    /// How its LAN is addressed: by its DHCP server, or by hand (the
    /// clients' gateway and prefix).
    pub lan: Addressing,
    /// How its WAN is addressed: by the suite's DHCP server, or by hand
    /// (servers are put beside it).
    pub wan: Addressing,
}

impl Addressing {
    /// The address and prefix: set by hand, or `by_dhcp` (what DHCP gives).
    fn or(self, by_dhcp: Ipv4Net) -> Ipv4Net {
        match self {
            Addressing::Dhcp => by_dhcp,
            Addressing::Static(n) => n,
        }
    }
}

impl RouterUnderTest for ExternalRouter {
    fn name(&self) -> String {
        format!("external router (LAN {} on {}, WAN {} on {})", self.lan, self.lan_port, self.wan, self.wan_port)
    }

    fn kernel_routes(&self) -> bool {
        true
    }

    fn start(&self, lab: &Lab, shape: &Shape) -> Result<RunningRouter> {
        let cabling =
            |side: &str, port: &str| format!("{}: check the cabling of its {side} port to {port}", self.name());
        if self.wan == Addressing::Dhcp {
            // Served from the first server, which is also the default
            // gateway the lease names, as an ISP's would be.
            let server = lab.host(SERVER)?;
            let public = shape.wan.addr();
            dhcp::serve(&server, "eth0", shape.wan, (public, public), Some(shape.server_addr(1)))?;
            if !holds_address(&server, public, dhcp::LEASE_WAIT)? {
                return Err(LabError::Input(format!(
                    "{}: the router did not take its WAN address {public} from the suite's DHCP server within {} s; \
                     is its WAN set to DHCP? {}",
                    self.name(),
                    dhcp::LEASE_WAIT.as_secs(),
                    cabling("WAN", &self.wan_port)
                )));
            }
        }
        // Ready when the first host on its LAN reaches its LAN address.
        let gateway = if shape.double_nat { lab.host(HOME)? } else { lab.host(&client_name(1))? };
        let addr = shape.lan.addr();
        if !gateway.answers_ping(addr.into(), std::time::Duration::from_secs(20))? {
            return Err(LabError::Input(format!(
                "no answer from the router's LAN address {addr}: {}{}",
                cabling("LAN", &self.lan_port),
                if self.lan == Addressing::Dhcp { "" } else { " and --lan" }
            )));
        }
        Ok(RunningRouter { name: self.name(), process: None, control: None })
    }

    fn reboot(&self, _lab: &Lab, _running: &mut RunningRouter, _shape: &Shape) -> Result<()> {
        Err(LabError::Input(format!("{}: the suite cannot reboot an external router", self.name())))
    }

    fn addressing(&self) -> Option<(Ipv4Net, Ipv4Net)> {
        Some((self.lan.or(default_lan()), self.wan.or(default_wan())))
    }

    fn serves_lan_dhcp(&self) -> bool {
        self.lan == Addressing::Dhcp
    }

    fn topology(&self, shape: &Shape) -> Topology {
        placed_topology(Placement::External { lan_port: &self.lan_port, wan_port: &self.wan_port }, shape)
    }

    fn capture_points<'l>(&self, lab: &'l Lab) -> Result<[(Host<'l>, String); 2]> {
        Ok([(lab.switch_host("lan")?, self.lan_port.clone()), (lab.switch_host("wan")?, self.wan_port.clone())])
    }
}

/// Whether a host on `from`'s link holds `addr`, within `within`: it
/// answers ARP for it (a router's WAN answers ARP even when it drops
/// pings).
fn holds_address(from: &Host<'_>, addr: std::net::Ipv4Addr, within: std::time::Duration) -> Result<bool> {
    let deadline = std::time::Instant::now() + within;
    let a = addr.to_string();
    loop {
        // The echo request makes the kernel ask ARP; its answer is not needed.
        from.exec(Cmd::argv(&["ping", "-n", "-c", "1", "-W", "1", &a]))?;
        let neigh = from.exec(Cmd::argv(&["ip", "-4", "neigh", "show", &a]))?;
        if String::from_utf8_lossy(&neigh.stdout).contains("lladdr") {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
    }
}
