//! L2TP: an xl2tpd LAC to an xl2tpd LNS, or to a scripted LNS that answers
//! the tunnel only (from port 1701 to the client's 1701, or from a new
//! port).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Awaiting, Daemons, Dialing, SECRET, Scripted, Stage, Tunnel, VpnFamily, peer_cmd};
use crate::capture::{Capture, Facts, What};
use crate::lab::{Process, Result};
use crate::ppp::session::AuthProto;
use crate::router::client_name;
use crate::scenario::format::{Lns, Scenario, Target};
use crate::scenario::observed::{Check, Observed, premise};
use crate::vpn::pppd::PppConfig;
use crate::vpn::xl2tpd::{L2TP_PORT, LacConfig, LnsConfig, Xl2tpd};
use crate::wire::l2tp;

pub struct L2tp;

impl Daemons for Xl2tpd<'_> {
    fn processes(&self) -> Vec<&Process> {
        vec![self.process()]
    }

    fn holds_link(&self, peer: Ipv4Addr, timeout: Duration) -> Result<()> {
        self.wait_for_link(peer, timeout).map(|_| ())
    }
}

/// An LNS for server `j` listening on `listen`; over IPsec its PPP frames
/// are made small enough for libipsec's tunnel.
pub(super) fn lns_config(listen: Ipv4Addr, j: usize, over_ipsec: bool) -> LnsConfig {
    let ppp = PppConfig::server(AuthProto::ChapMd5, "lns", SECRET).quiet();
    LnsConfig {
        listen,
        local_ip: Ipv4Addr::new(10, 97, j as u8, 1),
        range: (Ipv4Addr::new(10, 97, j as u8, 100), Ipv4Addr::new(10, 97, j as u8, 199)),
        // PPP frames must fit libipsec's tunnel once wrapped in L2TP.
        ppp: if over_ipsec { ppp.mtu(1280) } else { ppp },
    }
}

/// Client `i`'s LAC towards the LNS at `lns`.
pub(super) fn lac_config(lns: Ipv4Addr, i: usize, over_ipsec: bool) -> LacConfig {
    let ppp = PppConfig::client(&format!("client{i}"), SECRET).quiet();
    LacConfig { name: "server".into(), lns, port: L2TP_PORT, ppp: if over_ipsec { ppp.mtu(1280) } else { ppp } }
}

fn scripted_lns(s: &Scenario) -> bool {
    s.file.endpoints.lns != Lns::Xl2tpd
}

impl VpnFamily for L2tp {
    fn settings(&self) -> &'static [&'static str] {
        &["lns"]
    }

    fn tools(&self, s: &Scenario) -> &'static [&'static str] {
        if scripted_lns(s) { &[] } else { &["xl2tpd"] }
    }

    fn start_server<'l>(&self, stage: &mut Stage<'_, 'l>, j: usize) -> Result<Box<dyn Daemons + 'l>> {
        let host = stage.host(&stage.shape.server_name(j))?;
        let addr = stage.shape.server_addr(j);
        let ports: &[&str] = match stage.scenario.file.endpoints.lns {
            Lns::Xl2tpd => return Ok(Box::new(Xl2tpd::lns(host, &lns_config(addr, j, false))?)),
            Lns::RepliesTo1701 => &["--first-port", "1701", "--to-port", "1701"],
            Lns::NewPort => &["--first-port", "40000"],
        };
        Ok(Box::new(Scripted::start(host, peer_cmd(&["l2tp-lns"], "l2tp-lns")?.args(ports))?))
    }

    fn dial<'l>(&self, stage: &mut Stage<'_, 'l>, i: usize, j: usize) -> Result<Box<dyn Dialing<'l> + 'l>> {
        let host = stage.host(&client_name(i))?;
        let lac = Xl2tpd::lac(host, &lac_config(stage.shape.server_addr(j), i, false))?;
        lac.dial("server")?;
        let scripted = scripted_lns(stage.scenario);
        Ok(Awaiting::boxed(move |server: &dyn Daemons, timeout| {
            let tunnel = if scripted {
                Tunnel::down("a scripted LNS answers the tunnel only")
            } else {
                Tunnel::linked(lac.wait_for_call(timeout), server)?
            };
            Ok((Box::new(lac) as Box<dyn Daemons + 'l>, tunnel))
        }))
    }

    /// A scripted LNS answers each SCCRQ; waits until it answered every
    /// client, then until the captures hold as many answers.
    fn after_connect(&self, stage: &Stage<'_, '_>, server: &dyn Daemons, lan: &Capture) -> Result<()> {
        if !scripted_lns(stage.scenario) {
            return Ok(());
        }
        let n = stage.scenario.file.topology.clients;
        let Some(lns) = server.processes().first().copied() else { return Ok(()) };
        // A router that drops the SCCRQs leaves the LNS silent: that is an
        // outcome, judged by the expectations.
        let _ = lns.wait_until(&format!("answer {n} SCCRQs"), stage.connect_timeout(), || {
            std::fs::read_to_string(lns.log_path()).is_ok_and(|t| t.matches("answered").count() >= n)
        });
        let sccrp = |f: &Facts| f.count(None, None, |w| matches!(w, What::L2tp { control: Some(2), .. }));
        // An answer the router drops never shows; this waits only as long
        // as it takes the captures to catch up with the ones it passes.
        let _ = lns.wait_until("pass its answers to the LAN", Duration::from_secs(2), || {
            lan.facts().is_ok_and(|f| sccrp(&f) >= n)
        });
        Ok(())
    }

    fn premises(&self, s: &Scenario, o: &Observed, _target: Target) -> Vec<Check> {
        let mut out = Vec::new();
        if s.file.endpoints.lns == Lns::NewPort {
            // The story is an answer from a new port: once an SCCRQ crossed
            // the WAN, the LNS must have sent one.
            let asked = o.wan.count(None, None, |w| matches!(w, What::L2tp { control: Some(l2tp::SCCRQ), .. }));
            let answered = o.wan.count(
                None,
                None,
                |w| matches!(w, What::L2tp { control: Some(l2tp::SCCRP), sport, .. } if *sport != L2TP_PORT),
            );
            out.push(premise(
                "the LNS answered from a new port",
                asked == 0 || answered > 0,
                format!("{asked} SCCRQs and {answered} SCCRPs from a port other than {L2TP_PORT} on the WAN"),
            ));
        }
        let clients = o.clients_seen_as();
        if !scripted_lns(s) || clients.len() < 2 {
            return out;
        }
        let sccrq = |p: &&crate::capture::Seen| matches!(p.what, What::L2tp { control: Some(l2tp::SCCRQ), .. });
        let last_first_sccrq = clients
            .iter()
            .filter_map(|c| o.lan.packets.iter().filter(|p| p.src == *c).find(sccrq).map(|p| p.time))
            .max();
        let early_stop = o.lan.packets.iter().filter(|p| clients.contains(&p.src)).find(|p| {
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
        out
    }
}
