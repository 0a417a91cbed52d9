//! IPsec with strongSwan: IKEv2 or IKEv1 with NAT-T, and L2TP inside an
//! IKEv2 CHILD_SA narrowed to udp/1701.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::l2tp::{lac_config, lns_config};
use super::{Awaiting, Daemons, Dialing, OwnTraffic, Stage, Tunnel, VpnFamily};
use crate::capture::What;
use crate::lab::{Host, LabError, Process, Result};
use crate::router::client_name;
use crate::scenario::format::{IpsecAuth, Scenario, Target, TunnelState};
use crate::scenario::observed::{Check, Observed, premise};
use crate::vpn::strongswan::{
    CHILD, Charon, ClientConfig, IkeVersion, ServerConfig, child_name, clients_conf, conn_name, server_conf,
};
use crate::vpn::xl2tpd::Xl2tpd;
use crate::wire::ike::NAT_T_PORT;

/// The IPsec client's connection name.
const IKE_NAME: &str = "home";

/// IPsec of one IKE version, alone or carrying L2TP.
pub struct Ipsec {
    version: IkeVersion,
    l2tp: bool,
}

/// IKEv2 with NAT-T.
pub const IKEV2: Ipsec = Ipsec { version: IkeVersion::V2, l2tp: false };
/// IKEv1 main mode with NAT-T.
pub const IKEV1: Ipsec = Ipsec { version: IkeVersion::V1, l2tp: false };
/// L2TP over an IKEv2 CHILD_SA.
pub const L2TP_IPSEC: Ipsec = Ipsec { version: IkeVersion::V2, l2tp: true };

/// charon, and the LNS or LAC inside its tunnel.
struct Ends<'l> {
    charon: Charon<'l>,
    l2tp: Option<Xl2tpd<'l>>,
    /// A client with several tunnels: its host, and each tunnel's server
    /// inner address, which its traffic reaches through every tunnel.
    tunnels: Option<(Host<'l>, Vec<Ipv4Addr>)>,
}

impl Daemons for Ends<'_> {
    fn processes(&self) -> Vec<&Process> {
        std::iter::once(self.charon.process()).chain(self.l2tp.iter().map(|l| l.process())).collect()
    }

    fn holds_link(&self, peer: Ipv4Addr, timeout: Duration) -> Result<()> {
        match &self.l2tp {
            Some(lns) => lns.holds_link(peer, timeout),
            None => Ok(()),
        }
    }

    fn rekey(&self, timeout: Duration) -> Option<Result<()>> {
        Some(self.charon.rekey(IKE_NAME, CHILD, timeout).map(|_| ()))
    }

    /// With several tunnels, every server answers a ping through its own.
    fn own_traffic(&self) -> Option<OwnTraffic> {
        let (host, inners) = self.tunnels.as_ref()?;
        let all_echoed =
            inners.iter().all(|to| host.answers_ping((*to).into(), Duration::from_secs(3)).unwrap_or(false));
        Some(OwnTraffic { all_echoed, foreign: false })
    }
}

impl Ipsec {
    /// The CHILD_SA's traffic selectors: the server's inner address, and
    /// the client's side when narrowed. L2TP over IPsec narrows both to
    /// udp/1701.
    fn selectors(&self, inner: Ipv4Addr) -> (String, Option<String>) {
        if self.l2tp {
            (format!("{inner}/32[udp/1701]"), Some("dynamic[udp/1701]".into()))
        } else {
            (format!("{inner}/32"), None)
        }
    }

    /// Whether IKE is left to fragment at the IP layer: with certificates,
    /// unless the file turns IKEv2 fragmentation on.
    fn ip_fragments(s: &Scenario) -> bool {
        s.file.endpoints.auth == IpsecAuth::Certificates && !s.file.endpoints.ike_fragmentation
    }

    fn id(s: &Scenario, role: &str, n: usize) -> String {
        match s.file.endpoints.auth {
            IpsecAuth::Psk => format!("{role}{n}"),
            IpsecAuth::Certificates => format!("{role}{n}.lab"),
        }
    }
}

impl VpnFamily for Ipsec {
    fn settings(&self) -> &'static [&'static str] {
        match (self.version, self.l2tp) {
            (IkeVersion::V2, false) => &["auth", "ike_fragmentation", "tunnels_per_client", "mobike", "dpd_s"],
            (IkeVersion::V1, _) => &["auth", "ike_fragmentation", "tunnels_per_client", "dpd_s"],
            (IkeVersion::V2, true) => &["auth", "ike_fragmentation", "mobike", "dpd_s"],
        }
    }

    fn tools(&self, _s: &Scenario) -> &'static [&'static str] {
        if self.l2tp {
            &["xl2tpd", "charon", "swanctl", "kernel-libipsec"]
        } else {
            &["charon", "swanctl", "kernel-libipsec", "openssl"]
        }
    }

    fn preflight_auths(&self) -> &'static [IpsecAuth] {
        match (self.version, self.l2tp) {
            (IkeVersion::V2, false) => &[IpsecAuth::Psk, IpsecAuth::Certificates],
            _ => &[IpsecAuth::Psk],
        }
    }

    fn start_server<'l>(&self, stage: &mut Stage<'_, 'l>, j: usize) -> Result<Box<dyn Daemons + 'l>> {
        let host = stage.host(&stage.shape.server_name(j))?;
        let (addr, inner) = (stage.shape.server_addr(j), stage.shape.server_inner(j));
        let (inner_ts, client_ts) = self.selectors(inner);
        let auth = stage.auth(&format!("server{j}.lab"))?;
        let charon = Charon::start(host, Duration::from_secs(20))?;
        let s = stage.scenario;
        charon.load(
            &server_conf(&ServerConfig {
                version: self.version,
                auth: auth.clone(),
                id: Self::id(s, "server", j),
                addr,
                local_ts: inner_ts,
                remote_ts: client_ts,
                pool: format!("10.99.{j}.0/24"),
                ip_fragments: Self::ip_fragments(s),
            }),
            &auth,
        )?;
        let l2tp = if self.l2tp { Some(Xl2tpd::lns(host, &lns_config(inner, j, true))?) } else { None };
        Ok(Box::new(Ends { charon, l2tp, tunnels: None }))
    }

    fn dial<'l>(&self, stage: &mut Stage<'_, 'l>, i: usize, j: usize) -> Result<Box<dyn Dialing<'l> + 'l>> {
        let host = stage.host(&client_name(i))?;
        let timeout = stage.connect_timeout();
        let inner = stage.shape.server_inner(j);
        let auth = stage.auth(&format!("client{i}.lab"))?;
        let s = stage.scenario;
        // Its server, then the next ones in turn, one connection each.
        let servers = s.servers_of(i);
        let n = servers.len();
        let configs: Vec<ClientConfig> = servers
            .iter()
            .enumerate()
            .map(|(k, &to)| {
                let (inner_ts, client_ts) = self.selectors(stage.shape.server_inner(to));
                ClientConfig {
                    name: conn_name(IKE_NAME, k),
                    version: self.version,
                    auth: auth.clone(),
                    id: Self::id(s, "client", i),
                    server_id: Self::id(s, "server", to),
                    server: stage.shape.server_addr(to),
                    remote_ts: inner_ts,
                    local_ts: client_ts,
                    ip_fragments: Self::ip_fragments(s),
                    mobike: s.file.endpoints.mobike,
                    dpd_s: s.file.endpoints.dpd_s,
                }
            })
            .collect();
        let charon = Charon::start(host, Duration::from_secs(s.file.endpoints.keepalive_s))?;
        charon.load(&clients_conf(&configs), &auth)?;
        // The other tunnels first, one after the other, so that the first
        // one's state is what the client's tunnel reports.
        for (k, &to) in servers.iter().enumerate().skip(1) {
            if let Err(err) = charon.initiate(&child_name(k), timeout) {
                let tunnel = Tunnel::down(format!("tunnel {} of {n} (to server {to}): {err}", k + 1));
                return Ok(Awaiting::boxed(move |_server: &dyn Daemons, _timeout| {
                    Ok((Box::new(Ends { charon, l2tp: None, tunnels: None }) as Box<dyn Daemons + 'l>, tunnel))
                }));
            }
        }
        let tunnels = (n > 1).then(|| (host, servers.iter().map(|to| stage.shape.server_inner(*to)).collect()));
        let initiating = charon.begin_initiate(CHILD, timeout)?;
        let l2tp = self.l2tp;
        Ok(Awaiting::boxed(move |server: &dyn Daemons, timeout| {
            let mut lac = None;
            let tunnel = match initiating.wait(&charon, timeout) {
                Ok(sa) if sa.local_vips.is_empty() => Tunnel::down(format!("no virtual IP: {sa:?}")),
                Ok(sa) if l2tp => {
                    let started = Xl2tpd::lac(host, &lac_config(inner, i, true))?;
                    let link = started.connect("server", timeout);
                    let link = link.map_err(|err| LabError::Input(format!("IPsec up ({sa:?}), L2TP not: {err}")));
                    lac = Some(started);
                    Tunnel::linked(link, server)?
                }
                Ok(sa) => match sa.local_vips.first().and_then(|v| v.parse().ok()) {
                    Some(vip) => Tunnel { up: true, local: Some(vip), remote: Some(inner), note: None },
                    None => Tunnel::down(format!("a virtual IP that is no IPv4 address: {sa:?}")),
                },
                Err(err) => Tunnel::down(err.to_string()),
            };
            Ok((Box::new(Ends { charon, l2tp: lac, tunnels }) as Box<dyn Daemons + 'l>, tunnel))
        }))
    }

    fn premises(&self, s: &Scenario, o: &Observed, target: Target) -> Vec<Check> {
        let f = &s.file;
        let mut out = Vec::new();
        let clients = o.clients_seen_as();
        let from_client = |p: &&crate::capture::Seen| clients.contains(&p.src);
        if f.endpoints.auth == IpsecAuth::Certificates {
            let authenticating = o
                .lan
                .packets
                .iter()
                .filter(from_client)
                .any(|p| matches!(p.what, What::Ike { responder_spi, .. } if responder_spi != 0));
            let fragments =
                o.lan.packets.iter().filter(from_client).filter(|p| matches!(p.what, What::Fragment { .. })).count();
            let seen = format!("{fragments} later fragments from the clients; IKE past IKE_SA_INIT: {authenticating}");
            out.push(if f.endpoints.ike_fragmentation {
                premise(
                    "IKE_AUTH crosses the LAN in IKE fragments (RFC 7383), not IP fragments",
                    !authenticating || fragments == 0,
                    seen,
                )
            } else {
                premise("IKE_AUTH crosses the LAN in IP fragments", !authenticating || fragments > 0, seen)
            });
        }
        // Through a NAT, IKE must have seen it: NAT-T moves the client to
        // UDP 4500 (RFC 3947, RFC 7296 §2.23). Without it the story of a
        // tunnel through a NAT was never told.
        if target != Target::Direct {
            for (k, _) in o.tunnels.iter().enumerate().filter(|(_, t)| **t == TunnelState::Up) {
                let c = o.shape.seen_as(k + 1);
                let nat_t = o.lan.packets.iter().filter(|p| p.src == c).filter_map(|p| p.what.ports());
                let nat_t = nat_t.filter(|&(proto, _, dport)| proto == 17 && dport == NAT_T_PORT).count();
                out.push(premise(
                    format!("c{}'s IKE saw the NAT (it moved to UDP {NAT_T_PORT})", k + 1),
                    nat_t > 0,
                    format!("{nat_t} packets from c{} to UDP {NAT_T_PORT} on the LAN", k + 1),
                ));
            }
        }
        // L2TP over IPsec: the CHILD_SA carries it, so the WAN sees it only
        // inside ESP in UDP.
        if self.l2tp && o.tunnels.contains(&TunnelState::Up) {
            let clear = o.wan.count(None, None, |w| matches!(w, What::L2tp { .. }));
            let esp_in_udp = o.wan.count(None, None, |w| matches!(w, What::Esp { ports: Some(_), .. }));
            out.push(premise(
                "L2TP crosses the WAN only inside ESP in UDP",
                clear == 0 && esp_in_udp > 0,
                format!("{clear} L2TP packets in clear, {esp_in_udp} ESP-in-UDP packets on the WAN"),
            ));
        }
        out.extend(super::idle_premise(s, o, target));
        out
    }
}
