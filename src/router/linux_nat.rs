//! The kernel's NAT as the router under test, the reference.

use crate::lab::{Cmd, Lab, Result};

use super::shape::{LAN_IF, ROUTER, Shape, WAN_IF};
use super::{RouterUnderTest, RunningRouter};

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
