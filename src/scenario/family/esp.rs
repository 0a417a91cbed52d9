//! Raw ESP (IP protocol 50) between scripted peers: SPIs asked for over UDP
//! 500, then ESP packets the server echoes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Daemons, OwnTraffic, Scripted, Stage, Tunnel, VpnFamily, peer_cmd};
use crate::capture::What;
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

/// With a delay per client, the server's first answers must reach the WAN
/// in the order of those delays: a story about which client the router
/// gives an answer to depends on it.
fn answer_order(delays: &[u64], o: &Observed) -> Check {
    let first = |i: usize| {
        let spis = [esp_spi(i), rekeyed(i as u64, esp_spi(i)).1];
        o.wan
            .packets
            .iter()
            .filter(|p| matches!(p.what, What::Esp { spi, .. } if spis.contains(&spi)))
            .map(|p| p.time)
            .next()
    };
    let seen: Vec<(u64, Option<_>, usize)> =
        delays.iter().enumerate().map(|(k, d)| (*d, first(k + 1), k + 1)).collect();
    let mut by_delay = seen.clone();
    by_delay.sort_by_key(|(d, _, _)| *d);
    let times: Vec<_> = by_delay.iter().map(|(_, t, _)| *t).collect();
    let ordered = times.iter().all(Option::is_some) && times.windows(2).all(|w| w[0] <= w[1]);
    let order = by_delay.iter().map(|(d, _, i)| format!("c{i} ({d} ms)")).collect::<Vec<_>>().join(", ");
    premise(
        "the server's first answers reach the WAN in the order of their delays",
        ordered,
        format!("expected {order}; answered: {}", seen.iter().filter(|(_, t, _)| t.is_some()).count()),
    )
}

/// The scripted ESP client, which counts its own echoes.
struct Client(Process);

impl Daemons for Client {
    fn processes(&self) -> Vec<&Process> {
        vec![&self.0]
    }

    fn own_traffic(&self) -> Option<OwnTraffic> {
        let _ = self.0.wait_for_log("esp: sent", Duration::from_secs(30));
        let text = std::fs::read_to_string(self.0.log_path()).unwrap_or_default();
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
        let clients = stage.shape.clients;
        let delays = stage.scenario.file.endpoints.esp_delay_ms.values(clients);
        let delay = delays.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        Ok(Box::new(Scripted::start(host, peer_cmd(&["esp-server", "--delay-ms", &delay], "esp-server")?)?))
    }

    fn connect<'l>(
        &self,
        stage: &mut Stage<'_, 'l>,
        i: usize,
        j: usize,
        _server: &dyn Daemons,
    ) -> Result<(Box<dyn Daemons + 'l>, Tunnel)> {
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
        // The next client starts once this one's first ESP left: "at once",
        // before the server's echo comes back.
        let tunnel = match p.wait_for_log("sent seq 1", stage.connect_timeout()) {
            Ok(()) => Tunnel { up: true, ..Tunnel::default() },
            Err(err) => Tunnel::down(err.to_string()),
        };
        Ok((Box::new(Client(p)), tunnel))
    }

    fn premises(&self, s: &Scenario, o: &Observed, _target: Target) -> Vec<Check> {
        let mut checks = Vec::new();
        if let PerClient::Each(delays) = &s.file.endpoints.esp_delay_ms {
            checks.push(answer_order(delays, o));
        }
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
        let spis = [esp_spi(i), rekeyed(i as u64, esp_spi(i)).1];
        o.lan
            .packets
            .iter()
            .filter(|p| matches!(p.what, What::Esp { spi, .. } if spis.contains(&spi)))
            .map(|p| p.dst)
            .collect()
    }
}
