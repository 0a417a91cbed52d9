//! Raw ESP (IP protocol 50) between scripted peers: SPIs asked for over UDP
//! 500, then ESP packets the server echoes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Awaiting, Daemons, Dialing, OwnTraffic, Scripted, Stage, Tunnel, VpnFamily, peer_cmd};
use crate::capture::{Facts, Seen, What};
use crate::lab::{Process, Result};
use crate::router::client_name;
use crate::scenario::format::{PerClient, Scenario, Step, Target, TunnelState};
use crate::scenario::observed::{Check, Observed, premise};
use crate::vpn::scripted::{parse_esp_report, rekeyed};

pub struct Esp;

/// The SPI raw-ESP client `i` asks the server to send with.
fn esp_spi(i: usize) -> u32 {
    0x1000 + i as u32
}

/// The SPIs client `i`'s ESP comes back with: its first, and its rekeyed
/// one.
fn client_spis(i: usize) -> [u32; 2] {
    [esp_spi(i), rekeyed(i as u64, esp_spi(i)).1]
}

/// The ESP packets of one side carrying client `i`'s SPIs.
fn esp_of(side: &Facts, i: usize) -> impl Iterator<Item = &Seen> {
    let spis = client_spis(i);
    side.packets.iter().filter(move |p| matches!(p.what, What::Esp { spi, .. } if spis.contains(&spi)))
}

/// With a delay per client, the server's first answers that reached the
/// WAN must have come in the order of those delays: a story about which
/// client the router gives an answer to depends on it. (A router that
/// dropped a client's ESP leaves that client unanswered.)
fn answer_order(delays: &[u64], o: &Observed) -> Check {
    let first = |i: usize| esp_of(&o.wan, i).map(|p| p.time).next();
    let mut seen: Vec<(u64, usize, _)> =
        delays.iter().enumerate().filter_map(|(k, d)| first(k + 1).map(|t| (*d, k + 1, t))).collect();
    seen.sort_by_key(|(d, _, _)| *d);
    let ordered = seen.windows(2).all(|w| w[0].2 <= w[1].2);
    let order = seen.iter().map(|(d, i, _)| format!("c{i} ({d} ms)")).collect::<Vec<_>>().join(", ");
    premise(
        "the server's first answers reach the WAN in the order of their delays",
        ordered,
        format!("expected {order}; {} of {} clients answered", seen.len(), delays.len()),
    )
}

/// Clients that dial one by one send their first ESP in that order: a
/// story about which client sent first or last depends on it. `None` when
/// fewer than two clients' ESP crossed the LAN (a router that kept a
/// client's IKE from passing leaves that client out), or behind a second
/// NAT, where every client is seen as one address.
fn dial_order(s: &Scenario, o: &Observed) -> Option<Check> {
    if o.shape.double_nat {
        return None;
    }
    let dialled = s.clients_dialled(|st| matches!(st, Step::Connect { one_by_one: true, .. }));
    let sent_by = |i: usize| {
        let addr = o.shape.seen_as(i);
        o.lan.packets.iter().find(|p| p.src == addr && matches!(p.what, What::Esp { .. })).map(|p| p.time)
    };
    let first: Vec<(usize, _)> = dialled.into_iter().filter_map(|i| sent_by(i).map(|t| (i, t))).collect();
    if first.len() < 2 {
        return None;
    }
    let ordered = first.windows(2).all(|w| w[0].1 <= w[1].1);
    let start = first.iter().map(|(_, t)| *t).min().unwrap_or_default();
    let order: Vec<String> =
        first.iter().map(|(i, t)| format!("c{i} +{} ms", t.saturating_sub(start).as_millis())).collect();
    Some(premise(
        "the clients' first ESP crosses the LAN in the order they dialled",
        ordered,
        format!("first ESP, in dial order: {}", order.join(", ")),
    ))
}

/// The scripted ESP client, which counts its own echoes.
struct Client {
    process: Process,
    /// How long its whole flow may take, to its summary line.
    within: Duration,
}

impl Daemons for Client {
    fn processes(&self) -> Vec<&Process> {
        vec![&self.process]
    }

    fn own_traffic(&self) -> Option<OwnTraffic> {
        let _ = self.process.wait_for_log("esp: sent", self.within);
        let text = std::fs::read_to_string(self.process.log_path()).unwrap_or_default();
        let r = parse_esp_report(&text)?;
        Some(OwnTraffic { all_echoed: r.sent > 0 && r.echoed == r.sent, foreign: r.foreign > 0 })
    }
}

impl VpnFamily for Esp {
    fn settings(&self) -> &'static [&'static str] {
        &["esp_delay_ms", "esp_packets", "esp_interval_ms", "esp_rekey_after"]
    }

    fn tools(&self, _s: &Scenario) -> &'static [&'static str] {
        &[]
    }

    fn counts_own_echoes(&self) -> bool {
        true
    }

    fn start_server<'l>(&self, stage: &mut Stage<'_, 'l>, j: usize) -> Result<Box<dyn Daemons + 'l>> {
        let host = stage.host(&stage.shape.server_name(j))?;
        let delays = stage.scenario.file.endpoints.esp_delay_ms.values(stage.shape.clients);
        let delay = delays.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        // Its echoes wait for every client that dials it.
        let s = stage.scenario;
        let dialling: std::collections::BTreeSet<usize> =
            s.clients_dialled(|_| true).into_iter().filter(|&i| s.server_of(i) == j).collect();
        let args = ["esp-server", "--delay-ms", &delay, "--hold-for", &dialling.len().to_string()];
        Ok(Box::new(Scripted::start(host, peer_cmd(&args, "esp-server")?)?))
    }

    fn dial<'l>(&self, stage: &mut Stage<'_, 'l>, i: usize, j: usize) -> Result<Box<dyn Dialing<'l> + 'l>> {
        let host = stage.host(&client_name(i))?;
        let e = &stage.scenario.file.endpoints;
        let (server, spi) = (stage.shape.server_addr(j).to_string(), format!("{:#x}", esp_spi(i)));
        let (count, interval) = (e.esp_packets.to_string(), e.esp_interval_ms.to_string());
        // Each echo is waited for 3 s past the server's delay for it.
        let delay = e.esp_delay_ms.values(stage.shape.clients).get(i - 1).copied().unwrap_or(0);
        let (wait, rekey) = ((delay + 3000).to_string(), e.esp_rekey_after.to_string());
        let args = ["esp", &server, "--spi", &spi, "--ike-spi", &i.to_string(), "--count", &count];
        let cmd = peer_cmd(&args, "esp-client")?.args(&[
            "--interval-ms",
            &interval,
            "--wait-ms",
            &wait,
            "--rekey-after",
            &rekey,
        ]);
        let p = host.spawn(cmd)?;
        // Every packet may wait its whole echo wait (one at a time with no
        // interval), after two IKE exchanges of up to 3.5 s each.
        let packets = u64::from(e.esp_packets);
        let within = Duration::from_millis(7_000 + packets * (e.esp_interval_ms + delay + 3000));
        Ok(Awaiting::boxed(move |_server: &dyn Daemons, timeout| {
            // The flow is "up" once its first ESP left; its echoes are
            // counted when it ends.
            let tunnel = match p.wait_for_log("sent seq 1", timeout) {
                Ok(()) => Tunnel { up: true, ..Tunnel::default() },
                Err(err) => Tunnel::down(err.to_string()),
            };
            Ok((Box::new(Client { process: p, within }) as Box<dyn Daemons + 'l>, tunnel))
        }))
    }

    fn premises(&self, s: &Scenario, o: &Observed, _target: Target) -> Vec<Check> {
        let mut checks = Vec::new();
        if let PerClient::Each(delays) = &s.file.endpoints.esp_delay_ms {
            checks.push(answer_order(delays, o));
        }
        checks.extend(dial_order(s, o));
        // A flow the router kept from starting (its IKE dropped) has no
        // before and after.
        let flowing = o.tunnels.iter().all(|t| *t == TunnelState::Up);
        if !flowing || !s.file.steps.iter().any(|st| matches!(st, Step::Hostile { .. })) {
            return checks;
        }
        let clients = o.clients_seen_as();
        let attack = o.wan.packets.iter().filter(|p| p.src == o.shape.intruder_addr()).map(|p| p.time);
        let (first, last) = (attack.clone().min(), attack.max());
        let esp: Vec<_> = o
            .lan
            .packets
            .iter()
            .filter(|p| clients.contains(&p.src))
            .filter(|p| matches!(p.what, What::Esp { .. }))
            .map(|p| p.time)
            .collect();
        let before = first.is_some_and(|t| esp.iter().any(|e| *e < t));
        let after = last.is_some_and(|t| esp.iter().any(|e| *e > t));
        checks.push(premise(
            "the ESP flow runs before and after the intruder's spray",
            before && after,
            format!(
                "{} ESP packets from the clients; before the spray: {before}, after it: {after}{}",
                esp.len(),
                if first.is_none() { " (no spray seen on the WAN)" } else { "" }
            ),
        ));
        checks
    }

    fn tells_whose_traffic(&self) -> bool {
        true
    }

    /// Client `i`'s ESP reached whoever got packets with its SPIs (its
    /// first, and its rekeyed one).
    fn reached_by(&self, o: &Observed, i: usize) -> BTreeSet<Ipv4Addr> {
        esp_of(&o.lan, i).map(|p| p.dst).collect()
    }
}
