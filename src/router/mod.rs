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

pub mod dhcp;
mod direct;
mod external;
mod lab;
mod linux_nat;
mod rust_nat;
mod shape;

use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::lab::{Cmd, Host, Lab, LabError, Process, Result, Topology};
use crate::nat::Profile;

pub use direct::Direct;
pub use external::{Addressing, ExternalRouter};
pub use lab::{NatLab, shaped_topology};
pub use linux_nat::LinuxNat;
pub use rust_nat::RustNat;
pub use shape::{HOME, INTRUDER, LAN_IF, ROUTER, SERVER, Shape, WAN_IF, client_name, default_lan, default_wan};

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
    /// Whether the hosts on its LAN ask its DHCP server for addresses.
    fn serves_lan_dhcp(&self) -> bool {
        false
    }
    /// `shape`, addressed as this router has it: its LAN and WAN, and
    /// whether its LAN is served by DHCP.
    fn place(&self, mut shape: Shape) -> Shape {
        if let Some((lan, wan)) = self.addressing() {
            (shape.lan, shape.wan) = (lan, wan);
        }
        shape.lan_dhcp = self.serves_lan_dhcp();
        shape
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
