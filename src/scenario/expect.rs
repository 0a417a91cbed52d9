//! The check of each expectation of a scenario file against what was seen,
//! with the premises no family owns (the intruder's spray, lost packets),
//! the check every run with GRE makes (the router's GRE has right IPv4
//! header checksums) and the check every hostile story makes: the router
//! still forwards.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::family;
use super::format::{Delivery, Expect, MisdeliveredTo, Scenario, Step, Target, TunnelState};
use super::observed::{Check, Observed, check, premise};
use crate::capture::{Facts, What};

/// Checks every expectation `e` gives against `o`.
pub fn evaluate(s: &Scenario, e: &Expect, o: &Observed, target: Target) -> Vec<Check> {
    let rust = matches!(target, Target::Rust(_));
    // The situations the story needs, checked from the captures first: a
    // verdict means something only when the lab really produced them.
    let mut checks = family::of(s.file.family).premises(s, o, target);
    let lost = o.lan.capture_drops + o.wan.capture_drops;
    if lost > 0 {
        checks.push(
            premise("the captures hold every packet", false, format!("{lost} packets lost by tcpdump"))
                .missed_by_lab(true),
        );
    }
    if s.file.steps.iter().any(|st| matches!(st, Step::Hostile { .. })) {
        // The spray must have crossed the WAN for "nothing of it reached
        // the LAN" to mean anything.
        let crossed = o.wan.count(Some(o.shape.intruder_addr()), None, |w| !matches!(w, What::Icmp { .. }));
        checks.push(premise(
            "the intruder's spray reached the router's WAN side",
            crossed as u64 >= o.hostile_sent && o.hostile_sent > 0,
            format!("{crossed} of its {} packets on the WAN", o.hostile_sent),
        ));
    }
    // Evidence about the router in any run with GRE: a host drops a
    // packet whose IPv4 header checksum is wrong, so that would break PPTP
    // whatever else went right. It comes
    // first: it is the cause the verdict names.
    let (bad, all) = translated_gre_checksums(o);
    if all > 0 || e.gre_header_checksums_ok.is_some() {
        let want = e.gre_header_checksums_ok.unwrap_or(true);
        let c = check("the IPv4 header checksums of translated GRE are right", want, bad == 0);
        checks.push(c.because(if bad > 0 {
            format!("bad IPv4 header checksum on translated GRE: {bad} of the {all} GRE packets the router sent")
        } else {
            format!("all {all} GRE packets the router sent")
        }));
    }
    let n = o.tunnels.len();
    if let Some(want) = &e.tunnels {
        for (k, want) in want.iter().enumerate() {
            let seen = o.tunnels.get(k).copied();
            let mut c = check(format!("tunnel c{}", k + 1), want, seen);
            // Why a tunnel is down, even when it should be: a blocked
            // router and a daemon that gave up for its own reasons read
            // differently.
            if (!c.ok || seen == Some(TunnelState::Down))
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
        let reached = family::of(s.file.family).reached_by(o, from.0);
        let seen: Vec<String> = reached
            .iter()
            .filter_map(|a| (1..=n).find(|c| o.shape.seen_as(*c) == *a).map(|c| format!("c{c}")))
            .collect();
        let c = match to {
            MisdeliveredTo::Client(to) => {
                check(format!("{from}'s tunnel traffic reached {to} on the LAN"), true, seen.contains(&to.to_string()))
            }
            // Seen reaching its own client, and no other: a family whose
            // captures tell nothing cannot claim it.
            MisdeliveredTo::Nobody => check(
                format!("{from}'s tunnel traffic reached {from} only on the LAN"),
                true,
                seen == [from.to_string()],
            ),
        };
        checks.push(c.because(format!("it reached {seen:?}")));
    }
    let (lan_ids, wan_ids) = (o.lan.pptp_outgoing_calls(None), o.wan.pptp_outgoing_calls(None));
    if let Some(want) = e.call_ids_rewritten {
        let c = check("Call IDs rewritten between LAN and WAN", want, !lan_ids.is_empty() && lan_ids != wan_ids);
        checks.push(c.because(format!("LAN {lan_ids:?}, WAN {wan_ids:?}")).behaviour());
    }
    if let Some(want) = e.lan_call_ids_distinct {
        checks.push(
            check("distinct Call IDs on the LAN", want, distinct(&lan_ids)).because(format!("{lan_ids:?}")).behaviour(),
        );
    }
    if let Some(want) = e.wan_call_ids_distinct {
        checks.push(
            check("distinct Call IDs on the WAN", want, distinct(&wan_ids)).because(format!("{wan_ids:?}")).behaviour(),
        );
    }
    for (port, want) in &e.public_ports {
        let ports = public_ports(&o.wan, o.shape.wan.addr(), port.proto, port.port);
        checks.push(
            check(format!("public source ports towards {port}"), want, ports.len())
                .because(format!("{ports:?}"))
                .behaviour(),
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
        let ok = seen.is_some_and(|v| want.holds(v));
        let seen = seen.map(|v| v.to_string()).unwrap_or_else(|| "no such counter".into());
        checks.push(Check {
            what: format!("counter {name}"),
            expected: String::from(*want),
            seen,
            ok,
            reason: None,
            premise: false,
            behaviour: true,
            missed_by_lab: false,
        });
    }
    if o.forwards_after_hostile.is_some() {
        checks.push(check("the router forwards from the LAN after the spray", true, o.forwards_after_hostile));
    }
    checks
}

/// GRE packets the router sent (its public address as source on the WAN;
/// from off the LAN to a client on the LAN): how many had a wrong IPv4
/// header checksum, of how many.
fn translated_gre_checksums(o: &Observed) -> (usize, usize) {
    let public = o.shape.wan.addr();
    let clients: BTreeSet<Ipv4Addr> = (1..=o.shape.clients).map(|i| o.shape.seen_as(i)).collect();
    let out = o.wan.packets.iter().filter(|p| p.src == public);
    let inb = o.lan.packets.iter().filter(|p| clients.contains(&p.dst) && !o.shape.lan.contains(&p.src));
    let gre: Vec<bool> =
        out.chain(inb).filter(|p| matches!(p.what, What::Gre { .. })).map(|p| p.header_checksum_ok).collect();
    (gre.iter().filter(|ok| !**ok).count(), gre.len())
}

fn distinct(ids: &[u16]) -> bool {
    ids.iter().collect::<BTreeSet<_>>().len() == ids.len()
}

/// The source ports the router's public address used towards `dport`.
fn public_ports(wan: &Facts, public: Ipv4Addr, proto: u8, dport: u16) -> BTreeSet<u16> {
    wan.packets
        .iter()
        .filter(|p| p.src == public)
        .filter_map(|p| p.what.ports())
        .filter(|(pr, _, d)| *pr == proto && *d == dport)
        .map(|(_, s, _)| s)
        .collect()
}
