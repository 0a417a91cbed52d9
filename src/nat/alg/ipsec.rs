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
//!   waited longest for that server, which then stops waiting. When more
//!   than one client waits at that moment the choice is a guess, counted as
//!   `esp-ambiguous-binding`; the collision scenarios show what it does.
//! * ESP with an unknown SPI from a server no client waits for is dropped
//!   (`esp-unknown-spi`): nobody gets another host's or a stranger's ESP.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::nat::counters::DropReason;
use crate::nat::wire::ike;

#[derive(Debug, Clone)]
struct Sa {
    client: [u8; 4],
    last_seen: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    client: [u8; 4],
    server: [u8; 4],
    since: Duration,
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
    ike: HashMap<([u8; 4], u64), Sa>,
    esp_in: HashMap<([u8; 4], u32), Sa>,
    esp_out: HashMap<([u8; 4], [u8; 4], u32), Duration>,
    waiting: Vec<Waiting>,
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
    pub fn new(timeout: Duration) -> Ipsec {
        Ipsec { timeout, ike: HashMap::new(), esp_in: HashMap::new(), esp_out: HashMap::new(), waiting: Vec::new() }
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
    pub fn esp_outbound(&mut self, client: [u8; 4], server: [u8; 4], spi: u32, now: Duration) {
        let fresh = self.esp_out.insert((client, server, spi), now).is_none();
        if fresh && !self.waiting.iter().any(|w| w.client == client && w.server == server) {
            self.waiting.push(Waiting { client, server, since: now });
        }
    }

    /// ESP from `server` with SPI `spi`: its client, learned now if the SPI
    /// is new (see the module's rule).
    pub fn esp_inbound(&mut self, server: [u8; 4], spi: u32, now: Duration) -> Result<EspTarget, DropReason> {
        if let Some(sa) = self.esp_in.get_mut(&(server, spi)) {
            sa.last_seen = now;
            return Ok(EspTarget { client: sa.client, ambiguous: false });
        }
        // Those waiting for this server, and the one that waited longest.
        let (candidates, oldest) = self
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, w)| w.server == server)
            .fold((0, None::<(usize, Duration)>), |(n, oldest), (i, w)| {
                (n + 1, Some(oldest.filter(|o| o.1 <= w.since).unwrap_or((i, w.since))))
            });
        let (i, _) = oldest.ok_or(DropReason::EspUnknownSpi)?;
        let w = self.waiting.remove(i);
        self.esp_in.insert((server, spi), Sa { client: w.client, last_seen: now });
        Ok(EspTarget { client: w.client, ambiguous: candidates > 1 })
    }

    /// Forgets idle SAs and clients that waited too long.
    pub fn expire(&mut self, now: Duration) {
        let t = self.timeout;
        self.ike.retain(|_, sa| sa.last_seen + t > now);
        // A client's outbound ESP keeps its inbound SAs alive too: when did
        // each client last send?
        let mut sent: HashMap<[u8; 4], Duration> = HashMap::new();
        for (&(client, _, _), &seen) in &self.esp_out {
            let last = sent.entry(client).or_default();
            *last = (*last).max(seen);
        }
        self.esp_in.retain(|_, sa| sa.last_seen.max(sent.get(&sa.client).copied().unwrap_or_default()) + t > now);
        self.esp_out.retain(|_, seen| *seen + t > now);
        self.waiting.retain(|w| w.since + t > now);
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
