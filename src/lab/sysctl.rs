//! Sysctls of lab namespaces: forwarding, IPv6 duplicate address
//! detection, and what the topology asks for.

use std::path::Path;

use super::error::{LabError, Result};
use super::names::RunId;
use super::plan::NodePlan;

/// When a sysctl is applied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SysctlStage {
    /// Before the namespace has interfaces: everything that does not name one.
    Namespace,
    /// Once its interfaces exist: what names one.
    Interfaces,
}

/// Whether a sysctl key names one of the node's interfaces
/// (`net.ipv4.conf.<iface>.…`).
pub fn names_iface(node: &NodePlan, key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() > 4 && parts[2] == "conf" && node.iface(parts[3]).is_some()
}

/// Applies one stage of a node's sysctls from a thread inside its namespace
/// (`/proc/sys/net` is the calling thread's namespace's). Every namespace
/// gets IPv6 duplicate address detection off: lab addresses are unique by
/// construction, and a tentative link-local address makes a router drop the
/// first packets it forwards.
pub fn apply(node: &NodePlan, run: RunId, stage: SysctlStage) -> Result<()> {
    let mut writes: Vec<(String, String)> = Vec::new();
    if stage == SysctlStage::Namespace {
        if Path::new("/proc/sys/net/ipv6").exists() {
            writes.push(("net.ipv6.conf.all.accept_dad".into(), "0".into()));
            writes.push(("net.ipv6.conf.default.accept_dad".into(), "0".into()));
            if node.forwarding {
                writes.push(("net.ipv6.conf.all.forwarding".into(), "1".into()));
            }
        }
        if node.forwarding {
            writes.push(("net.ipv4.ip_forward".into(), "1".into()));
        }
    }
    for (key, value) in &node.sysctls {
        let iface = names_iface(node, key);
        if iface != (stage == SysctlStage::Interfaces) {
            continue;
        }
        let mut parts: Vec<String> = key.split('.').map(str::to_string).collect();
        if iface {
            parts[3] = run.ifname(&parts[3]);
        }
        writes.push((parts.join("."), value.clone()));
    }
    for (key, value) in writes {
        write(&key, &value).map_err(|e| LabError::io(format!("{}: setting {key} = {value}", node.label()), e))?;
    }
    Ok(())
}

/// Writes one `net.*` sysctl of the calling thread's network namespace.
pub fn write(key: &str, value: &str) -> std::io::Result<()> {
    if !key.starts_with("net.") || key.contains("..") || key.contains('/') {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{key}: only net.* keys")));
    }
    std::fs::write(format!("/proc/sys/{}", key.replace('.', "/")), format!("{value}\n"))
}
