//! Our NAT as the router under test.

use std::path::PathBuf;
use std::time::Duration;

use crate::lab::{Cmd, Lab, LabError, Result};
use crate::nat::Profile;

use super::shape::{LAN_IF, ROUTER, Shape, WAN_IF};
use super::{RouterUnderTest, RunningRouter};

/// Our NAT: `vpn-passthrough nat` in the router host, which has no kernel
/// addresses and no kernel forwarding.
pub struct RustNat {
    /// Its behaviour.
    pub profile: Profile,
    /// The `vpn-passthrough` binary to run.
    pub binary: PathBuf,
}

impl RustNat {
    /// The Rust NAT with `profile`, run from the binary [`crate::lab::own_binary`] finds.
    pub fn new(profile: Profile) -> Result<RustNat> {
        Ok(RustNat { profile, binary: crate::lab::own_binary()? })
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
