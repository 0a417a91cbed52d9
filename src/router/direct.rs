//! No router: a direct link, on which the preflight proves the lab's own
//! daemons before a router is judged.

use crate::lab::{Host, Lab, LabError, Result, Topology};

use super::lab::direct_topology;
use super::shape::{SERVER, Shape, client_name};
use super::{RouterUnderTest, RunningRouter};

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
        let (c, s) = (lab.host(&client_name(1))?, lab.host(SERVER)?);
        let (ci, si) = (c.ifname("eth0")?, s.ifname("eth0")?);
        Ok([(c, ci), (s, si)])
    }
}
