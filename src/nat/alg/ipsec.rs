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
//! * ESP from a server with an unknown SPI is bound to the client that has
//!   waited longest for that server with no SPI bound yet, else to the one
//!   that waited longest. When more than one client could take it the
//!   choice is a guess, counted in `esp_ambiguous_bindings`; the collision
//!   scenarios show what it does.
//! * A client waits [`WAIT`] whatever comes meanwhile, and keeps the
//!   [`BOUND_PER_WAIT`] SPIs that last carried packets among those bound to
//!   it during the wait. Made-up SPIs spoofed from the server therefore
//!   take nothing from the client: nothing they do ends the wait, and the
//!   server's real SPI binds when it comes (again, if a spray pushed it
//!   out, at its next packet).
//! * ESP with an unknown SPI from a server no client waits for is dropped
//!   (`esp-unknown-spi`): nobody gets another host's or a stranger's ESP.
//!
//! IKE SAs and ESP SPIs are bounded in all and per LAN host; state past a
//! bound is refused (counted), never made by evicting a live SA.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::nat::counters::DropReason;
use crate::nat::quota::PerHost;
use crate::nat::wire::ike;

#[derive(Debug, Clone)]
struct Sa {
    client: [u8; 4],
    last_seen: Duration,
}

#[derive(Debug, Clone)]
struct Waiting {
    client: [u8; 4],
    server: [u8; 4],
    since: Duration,
    /// The SPIs bound to it during the wait, the one that last carried a
    /// packet last.
    bound: Vec<u32>,
}

/// How long a client waits for its new inbound SPI.
pub const WAIT: Duration = Duration::from_secs(30);
/// SPIs a waiting client keeps of those bound to it during the wait.
pub const BOUND_PER_WAIT: usize = 4;

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
    /// `ike` (an IKE SA on port 500), `esp-in` or `esp-out`.
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
    timeout: Duration,
    bounds: Bounds,
    ike: HashMap<([u8; 4], u64), Sa>,
    esp_in: HashMap<([u8; 4], u32), Sa>,
    esp_out: HashMap<([u8; 4], [u8; 4], u32), Duration>,
    waiting: Vec<Waiting>,
    /// Entries of the three maps per LAN host.
    per_host: PerHost,
}

/// The client an inbound ESP packet goes to, and whether that was a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspTarget {
    /// The LAN host.
    pub client: [u8; 4],
    /// Several clients were waiting for this server's first answer.
    pub ambiguous: bool,
}

impl Ipsec {
    /// An empty ALG whose state lives `timeout` without traffic.
    pub fn new(timeout: Duration, bounds: Bounds) -> Ipsec {
        Ipsec {
            timeout,
            bounds,
            ike: HashMap::new(),
            esp_in: HashMap::new(),
            esp_out: HashMap::new(),
            waiting: Vec::new(),
            per_host: PerHost::new(bounds.per_host),
        }
    }

    /// How many SAs and SPIs it keeps, in all.
    pub fn len(&self) -> usize {
        self.ike.len() + self.esp_in.len() + self.esp_out.len()
    }

    /// Whether it keeps none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    pub fn ike_outbound(
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
                self.ike.insert(key, Sa { client, last_seen: now });
            }
        }
        Ok(())
    }

    /// IKE from `server` to the public port 500: the client whose IKE SA
    /// the initiator SPI names.
    pub fn ike_inbound(&mut self, server: [u8; 4], payload: &[u8], now: Duration) -> Result<[u8; 4], DropReason> {
        let m = ike::Message::new_checked(payload).map_err(|_| DropReason::IkeMalformed)?;
        let sa = self.ike.get_mut(&(server, m.initiator_spi())).ok_or(DropReason::IkeUnknownSpi)?;
        sa.last_seen = now;
        Ok(sa.client)
    }

    /// ESP from `client` to `server` with the server's SPI `spi`: a new SPI
    /// makes the client wait for its own new inbound SPI.
    pub fn esp_outbound(
        &mut self,
        client: [u8; 4],
        server: [u8; 4],
        spi: u32,
        now: Duration,
    ) -> Result<(), DropReason> {
        if let Some(seen) = self.esp_out.get_mut(&(client, server, spi)) {
            *seen = now;
            return Ok(());
        }
        self.claim(client)?;
        self.esp_out.insert((client, server, spi), now);
        match self.waiting.iter_mut().find(|w| w.client == client && w.server == server) {
            // A wait that ended and is not yet swept starts again.
            Some(w) if w.since + WAIT <= now => *w = Waiting { client, server, since: now, bound: Vec::new() },
            Some(_) => {}
            None => self.waiting.push(Waiting { client, server, since: now, bound: Vec::new() }),
        }
        Ok(())
    }

    /// ESP from `server` with SPI `spi`: its client, bound now if the SPI is
    /// new (see the module's rule).
    pub fn esp_inbound(&mut self, server: [u8; 4], spi: u32, now: Duration) -> Result<EspTarget, DropReason> {
        if let Some(sa) = self.esp_in.get_mut(&(server, spi)) {
            sa.last_seen = now;
            let client = sa.client;
            // Among the SPIs of a wait, the one that carries packets stays.
            if let Some(w) = self.waiting.iter_mut().find(|w| w.client == client && w.server == server) {
                if let Some(at) = w.bound.iter().position(|s| *s == spi) {
                    let s = w.bound.remove(at);
                    w.bound.push(s);
                }
            }
            return Ok(EspTarget { client, ambiguous: false });
        }
        // Those waiting for this server; the one that waited longest with
        // nothing bound yet, else the one that waited longest.
        let waiting: Vec<usize> = (0..self.waiting.len())
            .filter(|i| self.waiting[*i].server == server && self.waiting[*i].since + WAIT > now)
            .collect();
        let oldest = |free_only: bool| {
            waiting
                .iter()
                .copied()
                .filter(|i| !free_only || self.waiting[*i].bound.is_empty())
                .min_by_key(|i| self.waiting[*i].since)
        };
        let free = waiting.iter().filter(|i| self.waiting[**i].bound.is_empty()).count();
        let i = oldest(true).or_else(|| oldest(false)).ok_or(DropReason::EspUnknownSpi)?;
        let client = self.waiting[i].client;
        if self.waiting[i].bound.len() >= BOUND_PER_WAIT {
            // The SPI that carried nothing for longest makes room.
            let stale = self.waiting[i].bound.remove(0);
            if self.esp_in.remove(&(server, stale)).is_some() {
                self.per_host.release(client);
            }
        }
        self.claim(client)?;
        self.waiting[i].bound.push(spi);
        self.esp_in.insert((server, spi), Sa { client, last_seen: now });
        // A guess when the client came out of several.
        let pool = if free > 0 { free } else { waiting.len() };
        Ok(EspTarget { client, ambiguous: pool > 1 })
    }

    /// Forgets idle SAs and clients that waited too long.
    pub fn expire(&mut self, now: Duration) {
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
        let esp_in = &self.esp_in;
        // A wait ends after `WAIT` (and no later than an SA lives); SPIs
        // dropped above leave it.
        self.waiting.retain_mut(|w| {
            w.bound.retain(|spi| esp_in.contains_key(&(w.server, *spi)));
            w.since + WAIT.min(t) > now
        });
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
            .collect();
        v.sort_by(|a, b| (a.kind, &a.server, &a.spi).cmp(&(b.kind, &b.server, &b.spi)));
        v
    }
}
