//! PPTP: `pptp` to `pptpd`, our PPP peer on both ends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Daemons, SECRET, Stage, Tunnel, VpnFamily};
use crate::capture::What;
use crate::lab::{Process, Result};
use crate::ppp::session::AuthProto;
use crate::router::client_name;
use crate::scenario::format::{Scenario, Target};
use crate::scenario::observed::{Check, Observed, premise};
use crate::vpn::pppd::PppConfig;
use crate::vpn::pptp::{PptpClient, Pptpd, PptpdConfig};
use crate::wire::pptp;

pub struct Pptp;

impl Daemons for Pptpd<'_> {
    fn processes(&self) -> Vec<&Process> {
        vec![self.process()]
    }

    fn holds_link(&self, peer: Ipv4Addr, timeout: Duration) -> Result<()> {
        self.wait_for_link(peer, timeout).map(|_| ())
    }
}

impl Daemons for PptpClient<'_> {
    fn processes(&self) -> Vec<&Process> {
        vec![self.process()]
    }
}

impl VpnFamily for Pptp {
    fn settings(&self) -> &'static [&'static str] {
        &["same_call_id"]
    }

    fn tools(&self, _s: &Scenario) -> &'static [&'static str] {
        &["pptpd", "pptp"]
    }

    fn start_server<'l>(&self, stage: &mut Stage<'_, 'l>, j: usize) -> Result<Box<dyn Daemons + 'l>> {
        let host = stage.host(&stage.shape.server_name(j))?;
        let config = PptpdConfig {
            listen: stage.shape.server_addr(j),
            local_ip: Ipv4Addr::new(10, 98, j as u8, 1),
            range: (Ipv4Addr::new(10, 98, j as u8, 100), Ipv4Addr::new(10, 98, j as u8, 199)),
            ppp: PppConfig::server(AuthProto::ChapMd5, "pptpd", SECRET).quiet(),
        };
        Ok(Box::new(Pptpd::start(host, &config)?))
    }

    fn connect<'l>(
        &self,
        stage: &mut Stage<'_, 'l>,
        i: usize,
        j: usize,
        server: &dyn Daemons,
    ) -> Result<(Box<dyn Daemons + 'l>, Tunnel)> {
        let host = stage.host(&client_name(i))?;
        let ppp = PppConfig::client(&format!("client{i}"), SECRET).quiet();
        let call = PptpClient::start(host, stage.shape.server_addr(j), &ppp)?;
        let tunnel = Tunnel::linked(call.wait_for_link(stage.connect_timeout()), server)?;
        Ok((Box::new(call), tunnel))
    }

    fn constant_entropy(&self, s: &Scenario) -> bool {
        s.file.endpoints.same_call_id
    }

    fn tells_whose_traffic(&self) -> bool {
        true
    }

    /// The hosts GRE carrying client `i`'s inner address reached.
    fn reached_by(&self, o: &Observed, i: usize) -> BTreeSet<Ipv4Addr> {
        o.inner_addrs.get(i - 1).copied().flatten().map(|a| o.lan.gre_carrying_to(a)).unwrap_or_default()
    }

    fn premises(&self, s: &Scenario, o: &Observed, _target: Target) -> Vec<Check> {
        let f = &s.file;
        let mut out = Vec::new();
        if f.endpoints.mss > 0 {
            let mss = f.endpoints.mss;
            let segments: Vec<u16> = o
                .lan
                .packets
                .iter()
                .filter(|p| matches!(p.what.ports(), Some((6, sp, dp)) if sp == 1723 || dp == 1723) && p.payload > 0)
                .map(|p| p.payload)
                .collect();
            let largest = segments.iter().copied().max().unwrap_or(0);
            out.push(premise(
                format!("PPTP control messages cross the LAN in segments of at most {mss} bytes"),
                largest <= mss,
                format!("{} segments with data, the largest {largest} bytes", segments.len()),
            ));
        }
        if f.endpoints.same_call_id {
            let clients = o.clients_seen_as();
            let mut calls: BTreeMap<Ipv4Addr, u16> = BTreeMap::new();
            for p in o.lan.packets.iter().filter(|p| clients.contains(&p.src)) {
                if let What::PptpControl { message: pptp::OCRQ, call_id: Some(id), .. } = p.what {
                    calls.entry(p.src).or_insert(id);
                }
            }
            let ids: std::collections::BTreeSet<u16> = calls.values().copied().collect();
            out.push(premise(
                "the clients' first calls carry the same Call ID on the LAN",
                ids.len() <= 1,
                format!("first Call IDs by client: {calls:?}"),
            ));
        }
        out
    }
}
