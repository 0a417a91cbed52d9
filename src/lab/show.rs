//! How a lab prints: every node, interface, address, peer and route.

use std::fmt;

use super::Lab;
use super::plan::NodeKind;

impl fmt::Display for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |k| self.plan.nodes.iter().filter(|n| n.kind == k).count();
        let n = |k: usize, one: &str, many: &str| if k == 1 { format!("1 {one}") } else { format!("{k} {many}") };
        writeln!(
            f,
            "lab {} — {}, {}, {} — run directory {}",
            self.record.id,
            n(count(NodeKind::Host), "host", "hosts"),
            n(count(NodeKind::Switch), "switch", "switches"),
            n(self.plan.links.len(), "link", "links"),
            self.record.dir.display()
        )?;
        let width = self.plan.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
        for node in &self.plan.nodes {
            let mut notes = vec![format!("netns {}", self.record.id.netns_name(&node.name))];
            if node.kind == NodeKind::Switch {
                notes.push("switch".into());
            }
            if node.forwarding {
                notes.push("forwarding".into());
            }
            writeln!(f, "  {:width$}  {}", node.name, notes.join(", "))?;
            for iface in &node.ifaces {
                let addrs: Vec<String> = iface.addrs.iter().map(|a| a.to_string()).collect();
                let peer = iface
                    .peer
                    .map(|(n, i)| format!("── {}:{}", self.plan.nodes[n].name, self.plan.nodes[n].ifaces[i].local))
                    .unwrap_or_else(|| "(bridge)".into());
                let mut extra = String::new();
                if let Some(mtu) = iface.mtu {
                    extra.push_str(&format!(" mtu {mtu}"));
                }
                if !iface.offloads {
                    extra.push_str(" offloads off");
                }
                writeln!(
                    f,
                    "  {:width$}    {:<16} {:<22} {peer}{extra}",
                    "",
                    self.record.id.ifname(&iface.local),
                    if addrs.is_empty() { "-".to_string() } else { addrs.join(" ") },
                )?;
            }
            for r in &node.routes {
                let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
                let dev =
                    r.dev.map(|d| format!(" dev {}", self.record.id.ifname(&node.ifaces[d].local))).unwrap_or_default();
                let dest = if r.dest.prefix_len() == 0 { "default".to_string() } else { r.dest.to_string() };
                writeln!(f, "  {:width$}    route {dest}{via}{dev}", "")?;
            }
        }
        Ok(())
    }
}
