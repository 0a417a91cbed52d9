//! A real router, wired to two NICs, as the router under test.

use ipnet::Ipv4Net;

use crate::lab::{Cmd, Host, Lab, LabError, Result, Topology};

use super::lab::{Placement, placed_topology};
use super::shape::{HOME, Shape, client_name};
use super::{RouterUnderTest, RunningRouter};

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
        let gateway = if shape.double_nat { lab.host(HOME)? } else { lab.host(&client_name(1))? };
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
