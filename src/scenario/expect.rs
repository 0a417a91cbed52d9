//! What a played scenario saw, and the check of each expectation against it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::Serialize;

use super::format::{Delivery, Expect, Family, Scenario, TunnelState, client_number, esp_spi, parse_count, parse_port};
use crate::capture::{Facts, What};
use crate::router::{self, Shape};

/// What the steps left, read from the endpoints, the captures and the
/// router.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The lab's shape.
    pub shape: Shape,
    /// Each client's tunnel after the last step that touched it.
    pub tunnels: Vec<TunnelState>,
    /// Why each tunnel is down, when it is.
    pub notes: Vec<Option<String>>,
    /// Each client's address inside its tunnel.
    pub links: Vec<Option<Ipv4Addr>>,
    /// What crossed each client's tunnel, per traffic step.
    pub traffic: BTreeMap<String, Vec<Delivery>>,
    /// Raw ESP: whether each client received echoes meant for another.
    pub foreign: Vec<bool>,
    /// The router's LAN side.
    pub lan: Facts,
    /// The router's WAN side.
    pub wan: Facts,
    /// Rust NAT drop counters asked for.
    pub counters: BTreeMap<String, u64>,
}

/// One expectation and what was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// What the file expects.
    pub expected: String,
    /// What was seen.
    pub seen: String,
    /// Whether they agree.
    pub ok: bool,
}

fn check(what: impl Into<String>, expected: impl Serialize, seen: impl Serialize) -> Check {
    let expected = show(&expected);
    let seen = show(&seen);
    Check { what: what.into(), ok: expected == seen, expected, seen }
}

fn show(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default().replace('"', "")
}

/// Checks every expectation `e` gives against `o`.
pub fn evaluate(s: &Scenario, e: &Expect, o: &Observed, rust: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    let n = o.tunnels.len();
    if let Some(want) = &e.tunnels {
        let mut c = check("tunnels", want, &o.tunnels);
        if !c.ok {
            let notes: Vec<String> = o
                .notes
                .iter()
                .enumerate()
                .filter_map(|(k, note)| note.as_ref().map(|t| format!("c{}: {t}", k + 1)))
                .collect();
            if !notes.is_empty() {
                c.seen = format!("{} ({})", c.seen, notes.join("; "));
            }
        }
        checks.push(c);
    }
    let mut traffic: Vec<(&str, &Vec<Delivery>)> = e.traffic.iter().map(|t| ("traffic", t)).collect();
    traffic.extend(e.traffic_at.iter().map(|(k, v)| (k.as_str(), v)));
    for (name, want) in traffic {
        let seen = o.traffic.get(name).cloned().unwrap_or_default();
        checks.push(check(format!("traffic ({name})"), want, seen));
    }
    if let Some(want) = &e.foreign {
        checks.push(check("foreign echoes received", want, &o.foreign));
    }
    for (from, to) in &e.misdelivered {
        let (Some(i), Some(_)) = (client_number(from), client_number(to)) else { continue };
        let reached = reached_by(s.file.family, o, i);
        let seen: Vec<String> = reached
            .iter()
            .filter_map(|a| (1..=n).find(|c| o.shape.seen_as(*c) == *a).map(|c| format!("c{c}")))
            .collect();
        let mut c = check(format!("{from}'s tunnel traffic reached {to} on the LAN"), true, seen.contains(to));
        c.seen = format!("{} (it reached {seen:?})", c.seen);
        checks.push(c);
    }
    let (lan_ids, wan_ids) = (o.lan.pptp_outgoing_calls(None), o.wan.pptp_outgoing_calls(None));
    if let Some(want) = e.call_ids_rewritten {
        let mut c = check("Call IDs rewritten between LAN and WAN", want, !lan_ids.is_empty() && lan_ids != wan_ids);
        c.seen = format!("{} (LAN {lan_ids:?}, WAN {wan_ids:?})", c.seen);
        checks.push(c);
    }
    if let Some(want) = e.lan_call_ids_distinct {
        let mut c = check("distinct Call IDs on the LAN", want, distinct(&lan_ids));
        c.seen = format!("{} ({lan_ids:?})", c.seen);
        checks.push(c);
    }
    if let Some(want) = e.wan_call_ids_distinct {
        let mut c = check("distinct Call IDs on the WAN", want, distinct(&wan_ids));
        c.seen = format!("{} ({wan_ids:?})", c.seen);
        checks.push(c);
    }
    for (port, want) in &e.public_ports {
        let Some((proto, dport)) = parse_port(port) else { continue };
        let ports = public_ports(&o.wan, o.shape.wan.addr(), proto, dport);
        let mut c = check(format!("public source ports towards {port}"), want, ports.len());
        c.seen = format!("{} ({ports:?})", c.seen);
        checks.push(c);
    }
    if let Some(want) = &e.l2tp_answered {
        let seen: Vec<bool> = (1..=n)
            .map(|i| {
                o.lan.count(None, Some(o.shape.seen_as(i)), |w| matches!(w, What::L2tp { control: Some(2), .. })) > 0
            })
            .collect();
        checks.push(check("an SCCRP reached the client", want, seen));
    }
    if let Some(want) = e.intruder_reached_lan {
        let leaked = o.lan.packets.iter().filter(|p| p.src == router::intruder_addr()).count();
        let mut c = check("the intruder's packets reached the LAN", want, leaked > 0);
        c.seen = format!(
            "{} ({leaked} packets; WAN saw {})",
            c.seen,
            o.wan.count(Some(router::intruder_addr()), None, |_| true)
        );
        checks.push(c);
    }
    // Counters are the Rust NAT's; an external router judged by the
    // `full` block has none.
    for (name, want) in e.counters.iter().filter(|_| rust) {
        let seen = o.counters.get(name).copied();
        let ok = match (parse_count(want), seen) {
            (Some(None), Some(v)) => v > 0,
            (Some(Some(w)), Some(v)) => v == w,
            _ => false,
        };
        let seen = seen.map(|v| v.to_string()).unwrap_or_else(|| "no such counter".into());
        checks.push(Check { what: format!("counter {name}"), expected: want.clone(), seen, ok });
    }
    if o.lan.capture_drops + o.wan.capture_drops > 0 {
        checks.push(check("packets lost by the captures", 0, o.lan.capture_drops + o.wan.capture_drops));
    }
    checks
}

fn distinct(ids: &[u16]) -> bool {
    ids.iter().collect::<BTreeSet<_>>().len() == ids.len()
}

/// The LAN addresses that client `i`'s tunnel traffic was delivered to:
/// PPTP GRE by the inner address it carried, ESP by the client's SPI.
fn reached_by(family: Family, o: &Observed, i: usize) -> BTreeSet<Ipv4Addr> {
    match family {
        Family::Esp => o
            .lan
            .packets
            .iter()
            .filter(|p| matches!(p.what, What::Esp { spi, .. } if spi == esp_spi(i)))
            .map(|p| p.dst)
            .collect(),
        _ => o.links.get(i - 1).copied().flatten().map(|a| o.lan.gre_carrying_to(a)).unwrap_or_default(),
    }
}

/// The source ports the router's public address used towards `dport`.
fn public_ports(wan: &Facts, public: Ipv4Addr, proto: u8, dport: u16) -> BTreeSet<u16> {
    wan.packets
        .iter()
        .filter(|p| p.src == public)
        .filter_map(|p| ports(&p.what))
        .filter(|(pr, _, d)| *pr == proto && *d == dport)
        .map(|(_, s, _)| s)
        .collect()
}

/// (protocol, source port, destination port) of a packet with ports.
pub fn ports(w: &What) -> Option<(u8, u16, u16)> {
    match *w {
        What::PptpControl { sport, dport, .. } | What::Tcp { sport, dport } => Some((6, sport, dport)),
        What::L2tp { sport, dport, .. }
        | What::Ike { sport, dport, .. }
        | What::NatTKeepalive { sport, dport }
        | What::Udp { sport, dport } => Some((17, sport, dport)),
        What::Esp { ports: Some((sport, dport)), .. } => Some((17, sport, dport)),
        _ => None,
    }
}
