//! The IPsec ALG: IKE on port 500 told apart by the initiator's SPI, raw
//! ESP told apart by SPI.
//!
//! IKE clients send from UDP 500 to a server's 500 and expect the answer on
//! 500. Here clients keep public port 500, and inbound IKE goes to the
//! client whose initiator SPI (IKEv1: cookie) the header names: it is chosen
//! by the initiator and fixed for the IKE SA.
//!
//! Raw ESP (IP protocol 50, no NAT-T) carries only the receiver's SPI, which
//! the NAT never sees being chosen (it is inside encrypted IKE). So the NAT
//! learns a client's inbound SPI when the server first answers:
//!
//! * A client *waits* from the moment it sends ESP with an outbound SPI the
//!   NAT has not seen from it (its first SA with that server, or a rekey).
//! * ESP from a server with an SPI the NAT knows goes to that SPI's client.
//! * ESP from a server with an unknown SPI is bound, for now, to the client
//!   that has waited longest for that server and has no such binding yet
//!   (else to the one that waited longest, whose binding it replaces). When
//!   more than one client waits at that moment the choice is a guess,
//!   counted in `esp_ambiguous_bindings`; the collision scenarios show what
//!   it does.
//! * A binding holds once the SPI's next packet follows the first in
//!   sequence (ESP sequence numbers count up from 1, RFC 4303 §2.2); only
//!   then does the client stop waiting. One packet with a made-up SPI,
//!   spoofed from the server, thus takes nothing from the client: the
//!   server's real SPI binds in its place when it comes.
//! * A client that sends ESP and has heard nothing from the server for
//!   [`SILENCE`] waits again: had a stranger's two packets in sequence won
//!   the binding, the server's real SPI binds once the stranger stops.
//! * ESP with an unknown SPI from a server no client waits for is dropped
//!   (`esp-unknown-spi`): nobody gets another host's or a stranger's ESP.
//!
//! IKE SAs and ESP SPIs are bounded in all and per LAN host; state past a
//! bound is refused (counted), never made by evicting a live SA.
//!
//! With `ipsec = "tracker"` IKE is plain NAPT and raw ESP goes through a
//! SoC vendor's ESP tracker instead ([`tracker`]), whose entries count
//! against the same bounds.

mod tracker;

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::{Alg, Claim, Context, Packet};
use crate::nat::Side;
use crate::nat::counters::DropReason;
use crate::nat::profile::{IpsecMode, Profile, Protocol};
use crate::nat::quota::PerHost;
use crate::nat::serial::within;
use crate::wire::{esp, ike};

#[derive(Debug, Clone)]
struct Sa {
    client: [u8; 4],
    last_seen: Duration,
    /// ESP: the sequence number of the first packet, until a later one
    /// confirms the binding.
    unconfirmed: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    client: [u8; 4],
    server: [u8; 4],
    since: Duration,
    /// The SPI bound to it for now, if any.
    tentative: Option<u32>,
}

/// How far past the first packet's sequence number the next one may be and
/// still confirm a binding (packets lost or reordered on the way).
const CONFIRM_WINDOW: u32 = 64;
/// How long a client that sends ESP may hear nothing from its server before
/// it waits for a new inbound SPI again.
pub const SILENCE: Duration = Duration::from_secs(5);

/// Bounds on what the IPsec ALG keeps.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// IKE SAs and ESP SPIs, both ways.
    pub sas: usize,
    /// The same, per LAN host.
    pub per_host: usize,
}

/// An SA as the dump shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SaInfo {
    /// `ike` (an IKE SA on port 500), `esp-in`, `esp-out`, or
    /// `esp-tracked` (an entry of the ESP tracker: its client's SPI, and
    /// the server's once it answered).
    pub kind: &'static str,
    /// The LAN host.
    pub client: String,
    /// The server.
    pub server: String,
    /// The SPI (IKE: the initiator's), in hex.
    pub spi: String,
}

/// What the IPsec ALG knows.
pub struct Ipsec {
    mode: IpsecMode,
    /// NAT-T (UDP 4500) passes.
    nat_t: bool,
    timeout: Duration,
    bounds: Bounds,
    ike: HashMap<([u8; 4], u64), Sa>,
    esp_in: HashMap<([u8; 4], u32), Sa>,
    esp_out: HashMap<([u8; 4], [u8; 4], u32), Duration>,
    waiting: Vec<Waiting>,
    /// When each client last got ESP from each server.
    last_in: HashMap<([u8; 4], [u8; 4]), Duration>,
    /// Entries of the three maps and the tracker per LAN host.
    per_host: PerHost,
    /// Raw ESP with `ipsec = "tracker"`.
    tracker: tracker::Tracker,
}

/// The client an inbound ESP packet goes to, and whether that was a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EspTarget {
    /// The LAN host.
    client: [u8; 4],
    /// Several clients were waiting for this server's first answer.
    ambiguous: bool,
}

impl Ipsec {
    /// An empty ALG as `profile` sets it up: its state lives as long as a
    /// mapping of another protocol without traffic, and is bounded by its
    /// limits.
    pub fn new(profile: &Profile) -> Ipsec {
        let l = &profile.limits;
        let bounds = Bounds { sas: l.ipsec_sas, per_host: l.ipsec_sas_per_host };
        Ipsec {
            mode: profile.ipsec,
            nat_t: profile.nat_t,
            timeout: Duration::from_secs(profile.timeouts.other),
            bounds,
            ike: HashMap::new(),
            esp_in: HashMap::new(),
            esp_out: HashMap::new(),
            waiting: Vec::new(),
            last_in: HashMap::new(),
            per_host: PerHost::new(bounds.per_host),
            tracker: tracker::Tracker::new(profile),
        }
    }

    /// How many SAs and SPIs it keeps, in all.
    pub(crate) fn len(&self) -> usize {
        self.ike.len() + self.esp_in.len() + self.esp_out.len() + self.tracker.len()
    }

    /// Room for one more entry of `client`'s, counted if there is.
    fn claim(&mut self, client: [u8; 4]) -> Result<(), DropReason> {
        if self.len() >= self.bounds.sas {
            return Err(DropReason::IpsecTableFull);
        }
        if !self.per_host.has_room(client) {
            return Err(DropReason::HostQuota);
        }
        self.per_host.add(client);
        Ok(())
    }

    /// IKE from `client`:500 to `server`:500: notes its initiator SPI.
    fn ike_outbound(
        &mut self,
        client: [u8; 4],
        server: [u8; 4],
        payload: &[u8],
        now: Duration,
    ) -> Result<(), DropReason> {
        let m = ike::Message::new_checked(payload).map_err(|_| DropReason::IkeMalformed)?;
        let key = (server, m.initiator_spi());
        match self.ike.get_mut(&key) {
            Some(sa) if sa.client != client => return Err(DropReason::IkeSpiTaken),
            Some(sa) => sa.last_seen = now,
            None => {
                self.claim(client)?;
                self.ike.insert(key, Sa { client, last_seen: now, unconfirmed: None });
            }
        }
        Ok(())
    }

    /// IKE from `server` to the public port 500: the client whose IKE SA
    /// the initiator SPI names.
    fn ike_inbound(&mut self, server: [u8; 4], payload: &[u8], now: Duration) -> Result<[u8; 4], DropReason> {
        let m = ike::Message::new_checked(payload).map_err(|_| DropReason::IkeMalformed)?;
        let sa = self.ike.get_mut(&(server, m.initiator_spi())).ok_or(DropReason::IkeUnknownSpi)?;
        sa.last_seen = now;
        Ok(sa.client)
    }

    /// ESP from `client` to `server` with the server's SPI `spi`: a new SPI
    /// makes the client wait for its own new inbound SPI.
    fn esp_outbound(&mut self, client: [u8; 4], server: [u8; 4], spi: u32, now: Duration) -> Result<(), DropReason> {
        let known = match self.esp_out.get_mut(&(client, server, spi)) {
            Some(seen) => {
                *seen = now;
                true
            }
            None => false,
        };
        // A client heard nothing from the server for `SILENCE` while it
        // sends: the SPI it was bound to was not the server's (or the
        // server rekeyed unseen), so it waits again.
        let deaf = self.last_in.get(&(client, server)).is_none_or(|t| *t + SILENCE <= now);
        if !known {
            self.claim(client)?;
            self.esp_out.insert((client, server, spi), now);
        }
        if (!known || deaf) && !self.waiting.iter().any(|w| w.client == client && w.server == server) {
            self.waiting.push(Waiting { client, server, since: now, tentative: None });
        }
        Ok(())
    }

    /// ESP from `client` to `server` through the tracker.
    fn tracked_outbound(
        &mut self,
        client: [u8; 4],
        server: [u8; 4],
        spi: u32,
        now: Duration,
    ) -> Result<(), DropReason> {
        if !self.tracker.outbound(client, server, spi, now)? {
            self.claim(client)?;
            self.tracker.insert(client, server, spi, now);
        }
        Ok(())
    }

    /// ESP from `server` with SPI `spi` and sequence number `seq`: its
    /// client, bound now if the SPI is new (see the module's rule).
    fn esp_inbound(&mut self, server: [u8; 4], spi: u32, seq: u32, now: Duration) -> Result<EspTarget, DropReason> {
        if let Some(sa) = self.esp_in.get_mut(&(server, spi)) {
            sa.last_seen = now;
            let client = sa.client;
            if let Some(first) = sa.unconfirmed {
                if within(seq, first.wrapping_add(1), first.wrapping_add(CONFIRM_WINDOW)) {
                    sa.unconfirmed = None;
                    self.waiting.retain(|w| !(w.client == client && w.server == server));
                }
            }
            self.last_in.insert((client, server), now);
            return Ok(EspTarget { client, ambiguous: false });
        }
        // Those waiting for this server; the one that waited longest with
        // no binding yet, else the one that waited longest.
        let waiting: Vec<usize> = (0..self.waiting.len()).filter(|i| self.waiting[*i].server == server).collect();
        let oldest = |free_only: bool| {
            waiting
                .iter()
                .copied()
                .filter(|i| !free_only || self.waiting[*i].tentative.is_none())
                .min_by_key(|i| self.waiting[*i].since)
        };
        let free = waiting.iter().filter(|i| self.waiting[**i].tentative.is_none()).count();
        let i = oldest(true).or_else(|| oldest(false)).ok_or(DropReason::EspUnknownSpi)?;
        let client = self.waiting[i].client;
        if let Some(old) = self.waiting[i].tentative.take() {
            if self.esp_in.remove(&(server, old)).is_some() {
                self.per_host.release(client);
            }
        }
        self.claim(client)?;
        self.waiting[i].tentative = Some(spi);
        self.esp_in.insert((server, spi), Sa { client, last_seen: now, unconfirmed: Some(seq) });
        self.last_in.insert((client, server), now);
        // A guess when the client came out of several.
        let pool = if free > 0 { free } else { waiting.len() };
        Ok(EspTarget { client, ambiguous: pool > 1 })
    }

    /// The SAs, for the dump.
    pub fn snapshot(&self) -> Vec<SaInfo> {
        let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
        let mut v: Vec<SaInfo> = self
            .ike
            .iter()
            .map(|((server, spi), sa)| SaInfo {
                kind: "ike",
                client: ip(sa.client),
                server: ip(*server),
                spi: format!("{spi:016x}"),
            })
            .chain(self.esp_in.iter().map(|((server, spi), sa)| SaInfo {
                kind: "esp-in",
                client: ip(sa.client),
                server: ip(*server),
                spi: format!("{spi:08x}"),
            }))
            .chain(self.esp_out.keys().map(|(client, server, spi)| SaInfo {
                kind: "esp-out",
                client: ip(*client),
                server: ip(*server),
                spi: format!("{spi:08x}"),
            }))
            .chain(self.tracker.view().map(|e| SaInfo {
                kind: "esp-tracked",
                client: ip(e.client),
                server: ip(e.server),
                spi: match e.in_spi {
                    Some(i) => format!("{:08x} in {i:08x}", e.out_spi),
                    None => format!("{:08x} unanswered", e.out_spi),
                },
            }))
            .collect();
        v.sort_by(|a, b| (a.kind, &a.server, &a.spi).cmp(&(b.kind, &b.server, &b.spi)));
        v
    }
}

impl Alg for Ipsec {
    /// 500, which every client's IKE shares, told apart by initiator SPI.
    fn reserved_udp_port(&self) -> Option<u16> {
        (self.mode == IpsecMode::Spi).then_some(ike::PORT)
    }

    fn refuses(&self, from: Side, p: &Packet) -> Option<DropReason> {
        let udp_port = if p.proto == Protocol::Udp { p.server_port(from) } else { None };
        let ike = matches!(udp_port, Some(ike::PORT | ike::NAT_T_PORT));
        if self.mode == IpsecMode::Off && (ike || p.proto == Protocol::Esp) {
            return Some(DropReason::IpsecOff);
        }
        (!self.nat_t && udp_port == Some(ike::NAT_T_PORT)).then_some(DropReason::NatTOff)
    }

    /// IKE between port 500 and port 500, and raw ESP; with the tracker,
    /// raw ESP only.
    fn claim(&mut self, from: Side, p: &mut Packet, cx: &mut Context) -> Claim {
        let (src, dst, now) = (p.src, p.dst, cx.now);
        let decided = match (self.mode, p.proto, p.ports, from) {
            (IpsecMode::Spi, Protocol::Udp, Some(ports), Side::Lan)
                if ports.src == ike::PORT && ports.dst == ike::PORT =>
            {
                self.ike_outbound(src, dst, p.data(), now).map(|()| src)
            }
            (IpsecMode::Spi, Protocol::Udp, Some(ports), Side::Wan) if ports.dst == ike::PORT => {
                self.ike_inbound(src, p.data(), now)
            }
            (IpsecMode::Spi | IpsecMode::Tracker, Protocol::Esp, _, _) => match esp::Packet::new_checked(p.data()) {
                Err(_) => Err(DropReason::EspMalformed),
                Ok(e) if self.mode == IpsecMode::Tracker && from == Side::Lan => {
                    self.tracked_outbound(src, dst, e.spi(), now).map(|()| src)
                }
                Ok(e) if self.mode == IpsecMode::Tracker => self.tracker.inbound(src, e.spi(), now),
                Ok(e) if from == Side::Lan => self.esp_outbound(src, dst, e.spi(), now).map(|()| src),
                Ok(e) => self.esp_inbound(src, e.spi(), e.seq(), now).map(|t| {
                    if t.ambiguous {
                        cx.counters.esp_ambiguous_bindings += 1;
                    }
                    t.client
                }),
            },
            _ => return Claim::Pass,
        };
        match decided {
            Ok(lan_host) => Claim::Own { lan_host },
            Err(reason) => Claim::Drop(reason),
        }
    }

    /// Forgets idle SAs and clients that waited too long.
    fn expire(&mut self, now: Duration) {
        let t = self.timeout;
        let per_host = &mut self.per_host;
        let mut keep = |client: [u8; 4], live: bool| {
            if !live {
                per_host.release(client);
            }
            live
        };
        self.ike.retain(|_, sa| keep(sa.client, sa.last_seen + t > now));
        // A client's outbound ESP keeps its inbound SAs alive too: when did
        // each client last send?
        let mut sent: HashMap<[u8; 4], Duration> = HashMap::new();
        for (&(client, _, _), &seen) in &self.esp_out {
            let last = sent.entry(client).or_default();
            *last = (*last).max(seen);
        }
        self.esp_in.retain(|_, sa| {
            keep(sa.client, sa.last_seen.max(sent.get(&sa.client).copied().unwrap_or_default()) + t > now)
        });
        self.esp_out.retain(|(client, _, _), seen| keep(*client, *seen + t > now));
        self.last_in.retain(|_, at| *at + t > now);
        for client in self.tracker.expire(now, t) {
            self.per_host.release(client);
        }
        let esp_in = &self.esp_in;
        // A client waits no longer than an SA lives; its binding for now
        // goes if it was dropped above.
        self.waiting.retain_mut(|w| {
            if w.tentative.is_some_and(|spi| !esp_in.contains_key(&(w.server, spi))) {
                w.tentative = None;
            }
            w.since + t > now
        });
    }
}
