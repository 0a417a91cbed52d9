//! The ESP tracker router SoC vendors ship (`ipsec = "tracker"`), kept
//! apart from the SPI ALG it imitates badly on purpose: each of its quirks
//! is a field of [`profile::EspTracker`], and a scenario shows what each
//! one breaks.
//!
//! * A client's ESP to a server with an SPI no entry of that client and
//!   server has makes an entry (with `follows_rekey = false`, any ESP of
//!   the pair matches its one entry). Past `entries` entries, or from a
//!   host off `lans`, the ESP is dropped.
//! * ESP from a server with an SPI an entry answered with goes to that
//!   entry's client. Any other SPI from that server is bound, for good, to
//!   the oldest of its entries no server answered yet; with none, it is
//!   dropped. Two clients waiting at once thus get each other's ESP when
//!   the server answers the younger first, and a stranger who spoofs the
//!   server's address can take a waiting entry: the vendors' behaviour.
//! * An entry lives `unreplied_timeout` after its last packet until a
//!   server answers it, then the profile's `other` timeout.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::nat::counters::DropReason;
use crate::nat::profile::{self, Profile};

/// One entry of the table.
#[derive(Debug, Clone)]
struct Entry {
    client: [u8; 4],
    server: [u8; 4],
    /// The SPI the client sends with (the server's inbound SPI).
    out_spi: u32,
    /// The SPI the server answered with, once it did.
    in_spi: Option<u32>,
    /// When the entry was made: the oldest unanswered one wins.
    made: Duration,
    last_seen: Duration,
}

/// The tracker's table.
pub struct Tracker {
    config: profile::EspTracker,
    unreplied: Duration,
    entries: Vec<Entry>,
}

/// An entry as the dump shows it.
pub(super) struct EntryView {
    pub client: [u8; 4],
    pub server: [u8; 4],
    pub out_spi: u32,
    pub in_spi: Option<u32>,
}

impl Tracker {
    /// An empty table as `profile` sets it up.
    pub fn new(profile: &Profile) -> Tracker {
        let config = profile.esp_tracker.clone();
        Tracker {
            unreplied: Duration::from_secs(config.unreplied_timeout),
            entries: Vec::with_capacity(config.entries.min(profile::MAX_ESP_TRACKER_ENTRIES)),
            config,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// ESP from `client` to `server` with the server's SPI `spi`: `true`
    /// when an entry matched it (and was refreshed), `false` when it needs
    /// a new one, which [`Tracker::insert`] makes once the caller found
    /// room for it.
    pub fn outbound(&mut self, client: [u8; 4], server: [u8; 4], spi: u32, now: Duration) -> Result<bool, DropReason> {
        let lans = &self.config.lans;
        if !lans.is_empty() && !lans.iter().any(|n| n.contains(&Ipv4Addr::from(client))) {
            return Err(DropReason::EspTrackerLan);
        }
        let by_spi = self.config.follows_rekey;
        if let Some(e) =
            self.entries.iter_mut().find(|e| e.client == client && e.server == server && (!by_spi || e.out_spi == spi))
        {
            e.last_seen = now;
            return Ok(true);
        }
        if self.entries.len() >= self.config.entries {
            return Err(DropReason::EspTrackerFull);
        }
        Ok(false)
    }

    /// A new entry for ESP [`Tracker::outbound`] found none for.
    pub fn insert(&mut self, client: [u8; 4], server: [u8; 4], spi: u32, now: Duration) {
        self.entries.push(Entry { client, server, out_spi: spi, in_spi: None, made: now, last_seen: now });
    }

    /// ESP from `server` with SPI `spi`: the client it goes to.
    pub fn inbound(&mut self, server: [u8; 4], spi: u32, now: Duration) -> Result<[u8; 4], DropReason> {
        if let Some(e) = self.entries.iter_mut().find(|e| e.server == server && e.in_spi == Some(spi)) {
            e.last_seen = now;
            return Ok(e.client);
        }
        let oldest =
            self.entries.iter_mut().filter(|e| e.server == server && e.in_spi.is_none()).min_by_key(|e| e.made);
        let e = oldest.ok_or(DropReason::EspUnknownSpi)?;
        e.in_spi = Some(spi);
        e.last_seen = now;
        Ok(e.client)
    }

    /// Forgets entries past their timeout (`replied` for answered ones, the
    /// IPsec ALG's SA timeout); the clients whose entries went.
    pub fn expire(&mut self, now: Duration, replied: Duration) -> Vec<[u8; 4]> {
        let mut gone = Vec::new();
        let unreplied = self.unreplied;
        self.entries.retain(|e| {
            let live = e.last_seen + if e.in_spi.is_some() { replied } else { unreplied } > now;
            if !live {
                gone.push(e.client);
            }
            live
        });
        gone
    }

    /// The entries, for the dump.
    pub(super) fn view(&self) -> impl Iterator<Item = EntryView> + '_ {
        self.entries.iter().map(|e| EntryView {
            client: e.client,
            server: e.server,
            out_spi: e.out_spi,
            in_spi: e.in_spi,
        })
    }
}
