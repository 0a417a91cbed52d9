//! The L2TP ALG (RFC 2661): every client keeps public port 1701; inbound is
//! told apart by Tunnel ID.
//!
//! L2TP clients send from UDP 1701 to an LNS's 1701, and some LNSs answer to
//! 1701 whatever port the NAT gave the client, so port translation alone
//! breaks as soon as two clients dial one server. Here clients keep 1701;
//! each L2TP header carries the *receiver's* Tunnel ID, and a client's is
//! learned from the Assigned Tunnel ID AVP of its SCCRQ. When two clients of
//! one server assign the same Tunnel ID, the second one's is rewritten (in
//! the SCCRQ and StopCCN that carry it) and restored in the headers coming
//! back. An LNS may answer from another port (RFC 2661 §8.1): answers are
//! accepted from the server's address on any port, and only for live
//! tunnels of that server.
//!
//! A StopCCN ends a tunnel only when it is the next control message of its
//! sender (RFC 2661 §5.8: its Ns is the next one, its Nr acknowledges no
//! more than the other side sent) and, from the server, comes from the port
//! the server's control messages come from. Even then the tunnel stays for
//! a grace period, so its acknowledgment still gets through. A StopCCN
//! anyone could have guessed passes to the client, which judges it itself,
//! and changes nothing here. Tunnels are bounded in all and per client;
//! a client whose Tunnel ID no free public one can stand for is refused.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::{Alg, Claim, Context, Packet};
use crate::nat::Side;
use crate::nat::counters::DropReason;
use crate::nat::profile::{L2tpMode, Profile, Protocol};
use crate::nat::quota::PerHost;
use crate::nat::serial::within16;
use crate::wire::l2tp::{self, Message};

#[derive(Debug, Clone)]
struct Tunnel {
    client: [u8; 4],
    server: [u8; 4],
    lan_tunnel: u16,
    public_tunnel: u16,
    server_tunnel: Option<u16>,
    server_port: u16,
    last_seen: Duration,
    /// When a StopCCN that ends it was seen.
    stopping: Option<Duration>,
    /// The Ns the server's next control message carries, and the last Nr
    /// it sent.
    server_ns: u16,
    server_nr: u16,
    /// The Ns the client's next control message carries, and the last Nr
    /// it sent.
    client_ns: u16,
    client_nr: u16,
}

/// How long a stopped tunnel stays, for the StopCCN's acknowledgment.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A tunnel as the dump shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The LAN host.
    pub client: String,
    /// The LNS and the port it answers from.
    pub server: String,
    /// The Tunnel ID the client assigned.
    pub lan_tunnel_id: u16,
    /// The Tunnel ID the server sees.
    pub public_tunnel_id: u16,
    /// The server's Tunnel ID, once known.
    pub server_tunnel_id: Option<u16>,
}

/// What the L2TP ALG knows.
pub struct L2tp {
    mode: L2tpMode,
    timeout: Duration,
    max_tunnels: usize,

    /// By (server, public Tunnel ID): what inbound is looked up by.
    tunnels: HashMap<([u8; 4], u16), Tunnel>,
    /// By (client, server, the client's Tunnel ID): the public one.
    by_lan: HashMap<([u8; 4], [u8; 4], u16), u16>,
    /// By (client, server, the server's Tunnel ID): the public one, for the
    /// client's messages, whose header names the server's.
    by_server_tunnel: HashMap<([u8; 4], [u8; 4], u16), u16>,
    /// Tunnels per client.
    per_client: PerHost,
    /// By (client, server): how many tunnels the pair has, and when the
    /// client last sent to the server (which keeps them all alive).
    peers: HashMap<([u8; 4], [u8; 4]), Peer>,
}

/// A client and server with tunnels between them.
#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    tunnels: usize,
    last_out: Duration,
}

/// A Tunnel ID of the UDP payload to change: its offset, and the new value.
type Field = Option<(usize, u16)>;

impl L2tp {
    /// An empty ALG as `profile` sets it up: tunnels live as long as a UDP
    /// mapping without traffic, and are bounded by its limits.
    pub fn new(profile: &Profile) -> L2tp {
        let l = &profile.limits;
        L2tp {
            mode: profile.l2tp,
            timeout: Duration::from_secs(profile.timeouts.udp),
            max_tunnels: l.l2tp_tunnels,
            tunnels: HashMap::new(),
            by_lan: HashMap::new(),
            by_server_tunnel: HashMap::new(),
            per_client: PerHost::new(l.l2tp_tunnels_per_host),
            peers: HashMap::new(),
        }
    }

    /// How many tunnels it follows.
    pub(crate) fn len(&self) -> usize {
        self.tunnels.len()
    }

    /// Whether a LAN host has a live tunnel with `server` (its packets to
    /// any port of the server are L2TP).
    fn has_tunnel(&self, client: [u8; 4], server: [u8; 4]) -> bool {
        self.peers.contains_key(&(client, server))
    }

    /// A datagram from `client`:1701 to `server` (UDP payload given, or
    /// only its start when `whole` is false: the first fragment of a larger
    /// datagram): learns and rewrites its Assigned Tunnel ID when it sets up
    /// or stops a tunnel.
    fn outbound(
        &mut self,
        client: [u8; 4],
        server: [u8; 4],
        payload: &[u8],
        whole: bool,
        now: Duration,
    ) -> Result<Field, DropReason> {
        let m = checked(payload, whole)?;
        let mut field = None;
        if m.is_control() {
            let kind = m.message_type();
            let mut public = None;
            if let Some(k @ (l2tp::SCCRQ | l2tp::STOP_CCN)) = kind {
                let avp = assigned_tunnel(&m)?;
                let lan = u16::from_be_bytes([payload[avp], payload[avp + 1]]);
                let p = if k == l2tp::SCCRQ {
                    self.open(client, server, lan, now)?
                } else {
                    self.by_lan.get(&(client, server, lan)).copied().unwrap_or(lan)
                };
                if p != lan {
                    field = Some((avp, p));
                }
                public = Some(p);
            }
            let public = public.or_else(|| self.by_server_tunnel.get(&(client, server, m.tunnel_id())).copied());
            // Only the client's own tunnel: another LAN host naming it moves
            // nothing.
            if let Some(t) = public.and_then(|p| self.tunnels.get_mut(&(server, p))).filter(|t| t.client == client) {
                t.follow_client(&m, kind, now);
            }
        }
        // Anything from the client keeps its tunnels with this server alive.
        if let Some(p) = self.peers.get_mut(&(client, server)) {
            p.last_out = now;
        }
        Ok(field)
    }

    /// The public Tunnel ID of a client's tunnel, made if new: its own when
    /// free, else the next free one. Refused when the tables are full; the
    /// search is bounded by them.
    fn open(&mut self, client: [u8; 4], server: [u8; 4], lan: u16, now: Duration) -> Result<u16, DropReason> {
        if let Some(p) = self.by_lan.get(&(client, server, lan)) {
            return Ok(*p);
        }
        if self.tunnels.len() >= self.max_tunnels {
            return Err(DropReason::L2tpTunnelsFull);
        }
        if !self.per_client.has_room(client) {
            return Err(DropReason::HostQuota);
        }
        let taken = |p: u16| self.tunnels.contains_key(&(server, p));
        // Tunnel ID 0 means "none yet" in L2TP: never hand it out. At most
        // `max_tunnels` IDs are taken, so the search ends within that many.
        let public = std::iter::once(lan)
            .chain((1..=u16::MAX).map(|i| lan.wrapping_add(i)))
            .find(|p| *p != 0 && !taken(*p))
            .ok_or(DropReason::L2tpTunnelsFull)?;
        self.peers.entry((client, server)).or_default().tunnels += 1;
        self.per_client.add(client);
        self.by_lan.insert((client, server, lan), public);
        self.tunnels.insert(
            (server, public),
            Tunnel {
                client,
                server,
                lan_tunnel: lan,
                public_tunnel: public,
                server_tunnel: None,
                server_port: l2tp::PORT,
                last_seen: now,
                stopping: None,
                server_ns: 0,
                server_nr: 0,
                client_ns: 0,
                client_nr: 0,
            },
        );
        Ok(public)
    }

    /// A datagram from `server`:`port` to the public port 1701 (`whole` as
    /// for [`L2tp::outbound`]): the LAN host whose tunnel its header names,
    /// and the Tunnel ID to restore.
    fn inbound(
        &mut self,
        server: [u8; 4],
        port: u16,
        payload: &[u8],
        whole: bool,
        now: Duration,
    ) -> Result<([u8; 4], Field), DropReason> {
        let m = checked(payload, whole)?;
        let public = m.tunnel_id();
        let t = self.tunnels.get_mut(&(server, public)).ok_or(DropReason::L2tpUnknownTunnel)?;
        t.last_seen = now;
        let kind = if m.is_control() { m.message_type() } else { None };
        let in_sequence = m.is_control() && t.follow_server(&m, kind, port, now);
        if in_sequence && kind == Some(l2tp::SCCRP) {
            if let Ok(avp) = assigned_tunnel(&m) {
                let theirs = u16::from_be_bytes([payload[avp], payload[avp + 1]]);
                if let Some(old) = t.server_tunnel.replace(theirs) {
                    self.by_server_tunnel.remove(&(t.client, server, old));
                }
                self.by_server_tunnel.insert((t.client, server, theirs), public);
            }
        }
        let Some(t) = self.tunnels.get(&(server, public)) else {
            return Err(DropReason::L2tpUnknownTunnel);
        };
        Ok((t.client, (t.lan_tunnel != public).then_some((m.tunnel_id_at(), t.lan_tunnel))))
    }

    /// One tunnel fewer between its client and server.
    fn forget(&mut self, t: &Tunnel) {
        self.by_lan.remove(&(t.client, t.server, t.lan_tunnel));
        if let Some(theirs) = t.server_tunnel {
            self.by_server_tunnel.remove(&(t.client, t.server, theirs));
        }
        self.per_client.release(t.client);
        let key = (t.client, t.server);
        if let Some(p) = self.peers.get_mut(&key) {
            p.tunnels -= 1;
            if p.tunnels == 0 {
                self.peers.remove(&key);
            }
        }
    }

    /// The tunnels, for the dump.
    pub fn snapshot(&self) -> Vec<TunnelInfo> {
        let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
        let mut v: Vec<TunnelInfo> = self
            .tunnels
            .values()
            .map(|t| TunnelInfo {
                client: ip(t.client),
                server: format!("{}:{}", ip(t.server), t.server_port),
                lan_tunnel_id: t.lan_tunnel,
                public_tunnel_id: t.public_tunnel,
                server_tunnel_id: t.server_tunnel,
            })
            .collect();
        v.sort_by(|a, b| (&a.server, a.public_tunnel_id).cmp(&(&b.server, b.public_tunnel_id)));
        v
    }
}

impl Alg for L2tp {
    /// 1701, which every client's tunnel shares, told apart by Tunnel ID.
    fn reserved_udp_port(&self) -> Option<u16> {
        (self.mode == L2tpMode::TunnelId).then_some(l2tp::PORT)
    }

    fn refuses(&self, from: Side, p: &Packet) -> Option<DropReason> {
        let l2tp = p.proto == Protocol::Udp && p.server_port(from) == Some(l2tp::PORT);
        (self.mode == L2tpMode::Off && l2tp).then_some(DropReason::L2tpOff)
    }

    /// From a client's port 1701 to an LNS (its port 1701, or any port of
    /// one it has a tunnel with), and from an LNS to the public port 1701.
    fn claim(&mut self, from: Side, p: &mut Packet, cx: &mut Context) -> Claim {
        let Some(ports) = p.ports.filter(|_| self.mode == L2tpMode::TunnelId && p.proto == Protocol::Udp) else {
            return Claim::Pass;
        };
        let (lan_host, field) = match from {
            Side::Lan if ports.src == l2tp::PORT && (ports.dst == l2tp::PORT || self.has_tunnel(p.src, p.dst)) => {
                match self.outbound(p.src, p.dst, p.data(), p.whole, cx.now) {
                    Ok(field) => (p.src, field),
                    Err(reason) => return Claim::Drop(reason),
                }
            }
            Side::Wan if ports.dst == l2tp::PORT => match self.inbound(p.src, ports.src, p.data(), p.whole, cx.now) {
                Ok(found) => found,
                Err(reason) => return Claim::Drop(reason),
            },
            _ => return Claim::Pass,
        };
        if let Some((at, value)) = field {
            if !p.patch_u16(at, value) {
                return Claim::Drop(DropReason::L2tpMalformed);
            }
            if from == Side::Lan {
                cx.counters.l2tp_tunnel_ids_rewritten += 1;
            }
        }
        Claim::Own { lan_host }
    }

    /// Forgets idle tunnels, and stopped ones once their StopCCN is out.
    fn expire(&mut self, now: Duration) {
        let timeout = self.timeout;
        let peers = &self.peers;
        let gone: Vec<([u8; 4], u16)> = self
            .tunnels
            .iter()
            .filter(|(_, t)| {
                let out = peers.get(&(t.client, t.server)).map_or(Duration::ZERO, |p| p.last_out);
                let seen = t.last_seen.max(out);
                seen + timeout <= now || t.stopping.is_some_and(|at| at + STOP_GRACE <= now)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(t) = self.tunnels.remove(&k) {
                self.forget(&t);
            }
        }
    }
}

impl Tunnel {
    /// A control message from the client: its sequence numbers advance, and
    /// an in-sequence StopCCN starts the grace period.
    fn follow_client(&mut self, m: &Message<&[u8]>, kind: Option<u16>, now: Duration) {
        let Some((ns, nr)) = m.sequence() else { return };
        let zlb = m.is_empty();
        // The first message (SCCRQ) sets where the client's numbers start.
        let fresh = kind == Some(l2tp::SCCRQ) && self.server_tunnel.is_none();
        if !fresh && (ns != self.client_ns || !within16(nr, self.client_nr, self.server_ns)) {
            return;
        }
        self.client_nr = nr;
        if !zlb {
            self.client_ns = ns.wrapping_add(1);
        }
        if kind == Some(l2tp::STOP_CCN) && self.stopping.is_none() {
            self.stopping = Some(now);
        }
    }

    /// A control message from the server; `true` when it is the next one
    /// (its Ns the expected one, its Nr no further than the client sent,
    /// from the port the server's control messages come from). Only then
    /// do the sequence numbers advance, the port move (the first answer
    /// may come from a new one), and a StopCCN start the grace period.
    fn follow_server(&mut self, m: &Message<&[u8]>, kind: Option<u16>, port: u16, now: Duration) -> bool {
        let Some((ns, nr)) = m.sequence() else { return false };
        let first = self.server_tunnel.is_none() && kind == Some(l2tp::SCCRP);
        if !first && port != self.server_port {
            return false;
        }
        if ns != self.server_ns || !within16(nr, self.server_nr, self.client_ns) {
            return false;
        }
        self.server_port = port;
        self.server_nr = nr;
        if !m.is_empty() {
            self.server_ns = ns.wrapping_add(1);
        }
        if kind == Some(l2tp::STOP_CCN) && self.stopping.is_none() {
            self.stopping = Some(now);
        }
        true
    }
}

/// An L2TP message whose header, and AVPs if it is a control message, are
/// well formed; a control message other than an empty acknowledgment
/// (ZLB) must start with its Message Type AVP.
fn checked(payload: &[u8], whole: bool) -> Result<Message<&[u8]>, DropReason> {
    let m = if whole { Message::new_checked(payload) } else { Message::new_checked_prefix(payload) };
    let m = m.map_err(|_| DropReason::L2tpMalformed)?;
    if m.is_control() && !m.is_empty() && (m.avps().any(|a| a.is_err()) || m.message_type().is_none()) {
        return Err(DropReason::L2tpMalformed);
    }
    Ok(m)
}

/// The offset of the Assigned Tunnel ID value in a control message.
fn assigned_tunnel(m: &Message<&[u8]>) -> Result<usize, DropReason> {
    for avp in m.avps() {
        let avp = avp.map_err(|_| DropReason::L2tpMalformed)?;
        if avp.vendor == 0 && avp.kind == l2tp::AVP_ASSIGNED_TUNNEL_ID {
            if avp.hidden || avp.value_len != 2 {
                return Err(DropReason::L2tpHiddenTunnelId);
            }
            return Ok(avp.value_at);
        }
    }
    Err(DropReason::L2tpMalformed)
}
