//! What a played scenario saw, and the check of each expectation against it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::Serialize;

use super::format::{
    Delivery, Expect, Family, IpsecAuth, Lns, Scenario, Step, Target, TunnelState, client_number, esp_spi, parse_count,
    parse_port,
};
use crate::capture::{Facts, What};
use crate::router::Shape;
use crate::wire::{l2tp, pptp};

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
    /// Why it was seen so, when known (one line: a daemon's reason, the
    /// values behind a yes or no).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A premise of the story rather than an expectation of the router: the
    /// lab had to produce this situation for the verdict to mean anything.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub premise: bool,
}

impl Check {
    /// The check in one line: `tunnel c1: expected up, saw down (reason)`.
    pub fn line(&self) -> String {
        let reason = self.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        format!("{}: expected {}, saw {}{reason}", self.what, self.expected, self.seen)
    }

    fn because(mut self, reason: impl Into<String>) -> Check {
        self.reason = Some(reason.into());
        self
    }
}

fn check(what: impl Into<String>, expected: impl Serialize, seen: impl Serialize) -> Check {
    let expected = show(&expected);
    let seen = show(&seen);
    Check { what: what.into(), ok: expected == seen, expected, seen, reason: None, premise: false }
}

/// A premise: `holds` must be true, `seen` says what the captures showed.
fn premise(what: impl Into<String>, holds: bool, seen: impl Into<String>) -> Check {
    Check {
        what: what.into(),
        expected: "true".into(),
        seen: holds.to_string(),
        ok: holds,
        reason: Some(seen.into()),
        premise: true,
    }
}

fn show(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default().replace('"', "")
}

/// Checks every expectation `e` gives against `o`.
pub fn evaluate(s: &Scenario, e: &Expect, o: &Observed, target: Target) -> Vec<Check> {
    let rust = matches!(target, Target::Rust(_));
    let mut checks = premises(s, o, target);
    let n = o.tunnels.len();
    if let Some(want) = &e.tunnels {
        for (k, want) in want.iter().enumerate() {
            let seen = o.tunnels.get(k).copied();
            let mut c = check(format!("tunnel c{}", k + 1), want, seen);
            if !c.ok
                && let Some(note) = o.notes.get(k).cloned().flatten()
            {
                c = c.because(note);
            }
            checks.push(c);
        }
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
        let c = check(format!("{from}'s tunnel traffic reached {to} on the LAN"), true, seen.contains(to));
        checks.push(c.because(format!("it reached {seen:?}")));
    }
    let (lan_ids, wan_ids) = (o.lan.pptp_outgoing_calls(None), o.wan.pptp_outgoing_calls(None));
    if let Some(want) = e.call_ids_rewritten {
        let c = check("Call IDs rewritten between LAN and WAN", want, !lan_ids.is_empty() && lan_ids != wan_ids);
        checks.push(c.because(format!("LAN {lan_ids:?}, WAN {wan_ids:?}")));
    }
    if let Some(want) = e.lan_call_ids_distinct {
        checks.push(check("distinct Call IDs on the LAN", want, distinct(&lan_ids)).because(format!("{lan_ids:?}")));
    }
    if let Some(want) = e.wan_call_ids_distinct {
        checks.push(check("distinct Call IDs on the WAN", want, distinct(&wan_ids)).because(format!("{wan_ids:?}")));
    }
    for (port, want) in &e.public_ports {
        let Some((proto, dport)) = parse_port(port) else { continue };
        let ports = public_ports(&o.wan, o.shape.wan.addr(), proto, dport);
        checks.push(
            check(format!("public source ports towards {port}"), want, ports.len()).because(format!("{ports:?}")),
        );
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
        let leaked = o.lan.packets.iter().filter(|p| p.src == o.shape.intruder_addr()).count();
        let c = check("the intruder's packets reached the LAN", want, leaked > 0);
        let wan = o.wan.count(Some(o.shape.intruder_addr()), None, |_| true);
        checks.push(c.because(format!("{leaked} packets; WAN saw {wan}")));
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
        checks.push(Check {
            what: format!("counter {name}"),
            expected: want.clone(),
            seen,
            ok,
            reason: None,
            premise: false,
        });
    }
    let lost = o.lan.capture_drops + o.wan.capture_drops;
    if lost > 0 {
        checks.push(premise("the captures hold every packet", false, format!("{lost} packets lost by tcpdump")));
    }
    checks
}

/// The situations the story needs, checked from the captures: a verdict
/// means something only when the lab really produced them. Each premise
/// applies when the file's story depends on it, and says what was seen.
fn premises(s: &Scenario, o: &Observed, target: Target) -> Vec<Check> {
    let f = &s.file;
    let mut out = Vec::new();
    let clients: Vec<Ipv4Addr> = (1..=o.shape.clients).map(|i| o.shape.seen_as(i)).collect();
    let from_client = |p: &&crate::capture::Seen| clients.contains(&p.src);
    if f.family == Family::Pptp && f.endpoints.mss > 0 {
        let mss = f.endpoints.mss;
        let segments: Vec<u16> = o
            .lan
            .packets
            .iter()
            .filter(|p| matches!(ports(&p.what), Some((6, sp, dp)) if sp == 1723 || dp == 1723) && p.payload > 0)
            .map(|p| p.payload)
            .collect();
        let largest = segments.iter().copied().max().unwrap_or(0);
        out.push(premise(
            format!("PPTP control messages cross the LAN in segments of at most {mss} bytes"),
            largest <= mss,
            format!("{} segments with data, the largest {largest} bytes", segments.len()),
        ));
    }
    if f.family == Family::Pptp && f.endpoints.same_call_id {
        let mut calls: BTreeMap<Ipv4Addr, u16> = BTreeMap::new();
        for p in o.lan.packets.iter().filter(from_client) {
            if let What::PptpControl { message: pptp::OCRQ, call_id: Some(id), .. } = p.what {
                calls.entry(p.src).or_insert(id);
            }
        }
        let ids: BTreeSet<u16> = calls.values().copied().collect();
        out.push(premise(
            "the clients' first calls carry the same Call ID on the LAN",
            ids.len() <= 1,
            format!("first Call IDs by client: {calls:?}"),
        ));
    }
    if matches!(f.family, Family::Ikev2 | Family::Ikev1 | Family::L2tpIpsec)
        && f.endpoints.auth == IpsecAuth::Certificates
    {
        let authenticating = o
            .lan
            .packets
            .iter()
            .filter(from_client)
            .any(|p| matches!(p.what, What::Ike { responder_spi, .. } if responder_spi != 0));
        let fragments =
            o.lan.packets.iter().filter(from_client).filter(|p| matches!(p.what, What::Fragment { .. })).count();
        out.push(premise(
            "IKE_AUTH crosses the LAN in IP fragments",
            !authenticating || fragments > 0,
            format!("{fragments} later fragments from the clients; IKE past IKE_SA_INIT: {authenticating}"),
        ));
    }
    // A flow the router kept from starting (its IKE dropped) has no before
    // and after.
    let flowing = o.tunnels.iter().all(|t| *t == TunnelState::Up);
    if f.family == Family::Esp && flowing && f.steps.iter().any(|st| matches!(st, Step::Hostile { .. })) {
        let attack = o.wan.packets.iter().filter(|p| p.src == o.shape.intruder_addr()).map(|p| p.time);
        let (first, last) = (attack.clone().min(), attack.max());
        let esp: Vec<_> = o
            .lan
            .packets
            .iter()
            .filter(from_client)
            .filter(|p| matches!(p.what, What::Esp { .. }))
            .map(|p| p.time)
            .collect();
        let before = first.is_some_and(|t| esp.iter().any(|e| *e < t));
        let after = last.is_some_and(|t| esp.iter().any(|e| *e > t));
        out.push(premise(
            "the ESP flow runs before and after the intruder's spray",
            before && after,
            format!(
                "{} ESP packets from the clients; before the spray: {before}, after it: {after}{}",
                esp.len(),
                if first.is_none() { " (no spray seen on the WAN)" } else { "" }
            ),
        ));
    }
    if f.family == Family::L2tp && f.endpoints.lns != Lns::Xl2tpd && clients.len() > 1 {
        let sccrq = |p: &&crate::capture::Seen| matches!(p.what, What::L2tp { control: Some(l2tp::SCCRQ), .. });
        let last_first_sccrq = clients
            .iter()
            .filter_map(|c| o.lan.packets.iter().filter(|p| p.src == *c).find(sccrq).map(|p| p.time))
            .max();
        let early_stop = o.lan.packets.iter().filter(from_client).find(|p| {
            matches!(p.what, What::L2tp { control: Some(l2tp::STOP_CCN), .. })
                && last_first_sccrq.is_some_and(|t| p.time <= t)
        });
        out.push(premise(
            "every client's tunnel is live when the last client dials",
            early_stop.is_none(),
            match early_stop {
                Some(p) => format!("{} sent StopCCN before the last SCCRQ", p.src),
                None => "no StopCCN from a client before the last SCCRQ".into(),
            },
        ));
    }
    if let (Target::Rust(mode), true) = (target, matches!(f.family, Family::Ikev2 | Family::Ikev1 | Family::L2tpIpsec))
        && let Ok(profile) = s.profile(mode)
    {
        let timeout = profile.timeouts.udp as f64;
        let waits = f.steps.iter().any(|st| matches!(st, Step::Wait { seconds } if *seconds > timeout));
        let keepalive = f.endpoints.keepalive_s as f64;
        if waits && o.tunnels.iter().all(|t| *t == TunnelState::Up) {
            let c1 = o.shape.seen_as(1);
            // The silence after c1's last packet lasts until the captures end.
            let end = o.lan.packets.iter().chain(&o.wan.packets).map(|p| p.time).max();
            let times: Vec<_> = o.lan.packets.iter().filter(|p| p.src == c1).map(|p| p.time).chain(end).collect();
            let silence = times.windows(2).map(|w| w[1].saturating_sub(w[0]).as_secs_f64()).fold(0.0, f64::max);
            let (what, holds) = if keepalive > timeout {
                (
                    format!("c1 falls silent on the LAN for longer than the NAT's UDP timeout ({timeout} s)"),
                    silence > timeout,
                )
            } else {
                (
                    format!("c1's keepalives keep every silence shorter than the NAT's UDP timeout ({timeout} s)"),
                    silence < timeout,
                )
            };
            out.push(premise(what, holds, format!("longest silence {silence:.1} s")));
        }
    }
    out
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
