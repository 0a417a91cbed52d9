//! PPTP: `pptp` to `pptpd`, our PPP peer on both ends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Daemons, Dialing, SECRET, Stage, Tunnel, VpnFamily};
use crate::capture::What;
use crate::lab::{Process, Result};
use crate::ppp::session::AuthProto;
use crate::router::client_name;
use crate::scenario::format::{Scenario, Step, Target};
use crate::scenario::observed::{Check, Observed, premise};
use crate::vpn::pppd::PppConfig;
use crate::vpn::pptp::{PptpClient, Pptpd, PptpdConfig};
use crate::wire::pptp;

pub struct Pptp;

/// How close together calls that start "at once" must be.
const AT_ONCE: Duration = Duration::from_millis(250);

/// A call that was started, and whose link is awaited.
struct Call<'l>(PptpClient<'l>);

impl<'l> Dialing<'l> for Call<'l> {
    fn wait(self: Box<Self>, server: &dyn Daemons, timeout: Duration) -> Result<(Box<dyn Daemons + 'l>, Tunnel)> {
        let tunnel = Tunnel::linked(self.0.wait_for_link(timeout), server)?;
        Ok((Box::new(self.0), tunnel))
    }
}

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

    fn prepare(&self, stage: &mut Stage<'_, '_>, i: usize, _j: usize) -> Result<()> {
        PptpClient::prepare(&stage.host(&client_name(i))?, &PppConfig::client(&format!("client{i}"), SECRET).quiet())
    }

    fn dial<'l>(&self, stage: &mut Stage<'_, 'l>, i: usize, j: usize) -> Result<Box<dyn Dialing<'l> + 'l>> {
        Ok(Box::new(Call(PptpClient::call(stage.host(&client_name(i))?, stage.shape.server_addr(j), stage.gate)?)))
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
        // The clients that dial at once (a file whose connect steps do not
        // all dial at once is refused when it loads).
        let at_once = s.clients_dialled(|st| matches!(st, Step::Connect { at_once: true, .. }));
        if !at_once.is_empty() {
            // When each client's first Outgoing-Call-Request crossed the
            // LAN; a router that kept the calls from starting leaves fewer
            // than two, and nothing that happened at once to judge.
            let clients: Vec<Ipv4Addr> = at_once.iter().map(|i| o.shape.seen_as(*i)).collect();
            let mut first: BTreeMap<Ipv4Addr, Duration> = BTreeMap::new();
            // And each client's first segment to TCP 1723, its SYN: sent
            // before anything of the call crossed the router.
            let mut syn: BTreeMap<Ipv4Addr, Duration> = BTreeMap::new();
            for p in o.lan.packets.iter().filter(|p| clients.contains(&p.src)) {
                if let What::PptpControl { message: pptp::OCRQ, .. } = p.what {
                    first.entry(p.src).or_insert(p.time);
                }
                if let What::Tcp { dport: pptp::PORT, .. } | What::PptpControl { dport: pptp::PORT, .. } = p.what {
                    syn.entry(p.src).or_insert(p.time);
                }
            }
            let spread = |times: &BTreeMap<Ipv4Addr, Duration>| {
                let (earliest, latest) = (times.values().min().copied(), times.values().max().copied());
                latest.zip(earliest).map(|(l, e)| l.saturating_sub(e)).unwrap_or_default()
            };
            if first.len() >= 2 {
                let (calls, syns) = (spread(&first), spread(&syn));
                out.push(
                    premise(
                        format!("the clients' calls start within {} ms of each other", AT_ONCE.as_millis()),
                        calls <= AT_ONCE,
                        format!(
                            "the first Outgoing-Call-Requests of {} clients cross the LAN {} ms apart, their SYNs {} ms",
                            first.len(),
                            calls.as_millis(),
                            syns.as_millis()
                        ),
                    )
                    // The lab's part is how far apart the clients' SYNs
                    // left; the rest came after them, from the router or
                    // the server. The miss is the lab's when its part is
                    // the larger.
                    .missed_by_lab(syns > calls.saturating_sub(syns)),
                );
            }
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
