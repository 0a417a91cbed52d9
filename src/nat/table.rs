//! The mapping table: internal endpoints to public ports, the remote
//! endpoints each mapping has talked to (for filtering and TCP state), port
//! allocation and expiry.
//!
//! Keys follow the profile's behaviours (RFC 4787): an outbound key holds the
//! remote address and port only as far as the *mapping* behaviour depends on
//! them, an inbound key (public port plus remote) as far as it must to tell
//! mappings that share a public port apart. Protocols without ports (GRE,
//! ESP, others) are mapped by address: the inbound key is the remote address
//! alone, so the last LAN host to talk to a server gets its packets.
//!
//! Under a mapping that depends on the remote (address-dependent or
//! address-and-port-dependent), a public port belongs to one mapping at a
//! time, as RFC 4787 §4.1 has it: each destination that needs a mapping of
//! its own gets a public endpoint of its own, and port preservation keeps
//! the internal port for the first of them only.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use super::profile::{Behaviour, Profile, SharedRemote};
use super::quota::PerHost;
pub use super::tcp::TcpState;
use super::tcp::{OutOfWindow, Seg, Tracker};
use crate::wire::ipv4;

/// A fast hasher for small fixed keys (FxHash): the table is on the
/// per-packet path and its keys come from our own packets' headers.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// An IPv4 address and a port (or ICMP identifier; 0 where there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Address.
    pub addr: [u8; 4],
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint.
    pub fn new(addr: [u8; 4], port: u16) -> Endpoint {
        Endpoint { addr, port }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = self.addr;
        write!(f, "{}.{}.{}.{}:{}", a[0], a[1], a[2], a[3], self.port)
    }
}

/// What a mapping is looked up by, from the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OutKey {
    proto: u8,
    internal: Endpoint,
    remote: Endpoint,
}

/// What a mapping is looked up by, from the WAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct InKey {
    proto: u8,
    public_port: u16,
    remote: Endpoint,
}

/// How a protocol is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Ports (TCP, UDP) or identifiers (ICMP queries).
    Ported,
    /// By address only (GRE, ESP, others).
    AddressOnly,
}

/// A remote endpoint a mapping has sent to.
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    /// Its address and port.
    pub endpoint: Endpoint,
    /// TCP tracking of the connection with it.
    pub tcp: Tracker,
    /// When this session expires (ms since the NAT's epoch).
    pub deadline_ms: u64,
}

/// One mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// IP protocol number.
    pub proto: u8,
    /// The LAN endpoint.
    pub internal: Endpoint,
    /// The public port (or identifier; 0 for address-only protocols).
    pub public_port: u16,
    out_key: OutKey,
    in_key: InKey,
    /// Sessions, one per remote endpoint (the first is the one that made it).
    pub remotes: Vec<Remote>,
    /// When it was made (ms).
    pub created_ms: u64,
    /// When the last of its sessions expires (ms), kept as they change.
    deadline_ms: u64,
}

impl Mapping {
    /// When the last of its sessions expires.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    fn live(&self, now_ms: u64) -> bool {
        self.deadline_ms > now_ms
    }

    fn recompute_deadline(&mut self) {
        self.deadline_ms = self.remotes.iter().map(|r| r.deadline_ms).max().unwrap_or(0);
    }
}

/// Why a mapping could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// `max_mappings` reached.
    TableFull,
    /// No free public port.
    PortsExhausted,
    /// An address-only protocol's remote is another LAN host's, which
    /// keeps it ([`SharedRemote::OldestKeeps`]).
    RemoteTaken,
    /// The LAN host holds its share of the table (`limits.mappings_per_host`).
    HostQuota,
    /// The mapping has a session with as many remotes as it may
    /// (`limits.remotes_per_mapping`).
    RemotesFull,
    /// The table has as many sessions as it may (`limits.sessions`).
    SessionsFull,
}

/// The table.
pub struct Table {
    mapping: Behaviour,
    filtering: Behaviour,
    shared_remote: SharedRemote,
    preserve: bool,
    low: u16,
    high: u16,
    max: usize,
    slots: Vec<Option<Mapping>>,
    free: Vec<u32>,
    by_out: FxMap<OutKey, u32>,
    by_in: FxMap<InKey, u32>,
    len: usize,
    sweep_cursor: usize,
    next_port: u32,
    /// Where random allocation draws from (`port_allocation = "random"`).
    random: Option<crate::rng::Rng>,
    /// Public UDP ports the ALGs own (L2TP's 1701, IKE's 500, as the
    /// profile has them): never handed out.
    reserved: Vec<u16>,
    /// Mappings per LAN host, and the most one may hold.
    per_host: PerHost,
    /// Sessions in all mappings, and the bounds on them.
    sessions: usize,
    max_sessions: usize,
    max_remotes: usize,
    /// Under a mapping that depends on the remote: the mapping that holds
    /// each (protocol, public port), so that none is handed out twice.
    held: FxMap<(u8, u16), u32>,
    /// Protocols whose last search of the range found no free port, and
    /// until when (ms) a new mapping fails at once without searching again,
    /// unless a mapping is removed first: a host making new flows as fast as
    /// it can makes one search of the whole range a second, not one a packet.
    exhausted_until: FxMap<u8, u64>,
}

/// A mapping as reports show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MappingInfo {
    /// Protocol name.
    pub protocol: String,
    /// LAN endpoint.
    pub internal: String,
    /// Public port (or identifier).
    pub public_port: u16,
    /// Remote endpoints with their TCP state.
    pub remotes: Vec<String>,
    /// Seconds until it expires.
    pub expires_in_s: u64,
}

/// How long after a search of the range found no free port the next
/// search waits, unless a mapping goes first.
const EXHAUSTED_RETRY_MS: u64 = 1000;

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Table {
    /// An empty table for `profile`, never handing out the UDP ports in
    /// `reserved`; random allocation draws from `seed`.
    pub fn new(profile: &Profile, reserved: Vec<u16>, seed: u64) -> Table {
        Table {
            mapping: profile.mapping,
            filtering: profile.filtering,
            shared_remote: profile.shared_remote,
            preserve: profile.port_preservation,
            low: profile.port_range.low,
            high: profile.port_range.high,
            max: profile.max_mappings,
            slots: Vec::new(),
            free: Vec::new(),
            by_out: FxMap::default(),
            by_in: FxMap::default(),
            len: 0,
            sweep_cursor: 0,
            next_port: 0,
            random: (profile.port_allocation == super::profile::PortAllocation::Random)
                .then(|| crate::rng::Rng::new(seed)),
            per_host: PerHost::new(profile.limits.mappings_per_host),
            sessions: 0,
            max_sessions: profile.limits.sessions,
            max_remotes: profile.limits.remotes_per_mapping,
            reserved,
            held: FxMap::default(),
            exhausted_until: FxMap::default(),
        }
    }

    /// Live mappings (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Sessions (mapping and remote pairs) in all mappings.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether public ports are counted in `held`: under a mapping that
    /// depends on the remote.
    fn holds_ports(&self) -> bool {
        self.mapping != Behaviour::EndpointIndependent
    }

    fn remote_part(behaviour: Behaviour, class: Class, remote: Endpoint) -> Endpoint {
        match (class, behaviour) {
            (Class::AddressOnly, _) => Endpoint::new(remote.addr, 0),
            (_, Behaviour::EndpointIndependent) => Endpoint::new([0; 4], 0),
            (_, Behaviour::AddressDependent) => Endpoint::new(remote.addr, 0),
            (_, Behaviour::AddressAndPortDependent) => remote,
        }
    }

    fn out_key(&self, proto: u8, class: Class, internal: Endpoint, remote: Endpoint) -> OutKey {
        OutKey { proto, internal, remote: Table::remote_part(self.mapping, class, remote) }
    }

    fn in_key(&self, proto: u8, class: Class, public_port: u16, remote: Endpoint) -> InKey {
        InKey { proto, public_port, remote: Table::remote_part(self.mapping, class, remote) }
    }

    /// The mapping for an outbound packet, made if there is none; the
    /// session with `remote` is created or refreshed to `deadline`.
    /// Returns the mapping's slot and whether it is new.
    pub fn outbound(
        &mut self,
        proto: u8,
        class: Class,
        internal: Endpoint,
        remote: Endpoint,
        now: Duration,
        timeout: Duration,
    ) -> Result<(u32, bool), MapError> {
        let now_ms = ms(now);
        let key = self.out_key(proto, class, internal, remote);
        if let Some(id) = self.by_out.get(&key).copied().and_then(|id| self.if_live(id, now_ms)) {
            self.touch(id, remote, now_ms + ms(timeout), true, now_ms)?;
            return Ok((id, false));
        }
        if self.len >= self.max {
            return Err(MapError::TableFull);
        }
        if !self.per_host.has_room(internal.addr) {
            return Err(MapError::HostQuota);
        }
        if self.sessions >= self.max_sessions {
            return Err(MapError::SessionsFull);
        }
        let public_port = match class {
            Class::AddressOnly => 0,
            Class::Ported => self.allocate(proto, class, internal.port, remote, now_ms)?,
        };
        let in_key = self.in_key(proto, class, public_port, remote);
        if class == Class::AddressOnly {
            if let Some(old) = self.by_in.get(&in_key).copied().and_then(|id| self.if_live(id, now_ms)) {
                match self.shared_remote {
                    // The newest LAN host to talk to this remote takes its packets.
                    SharedRemote::NewestWins => {
                        self.remove(old);
                    }
                    SharedRemote::OldestKeeps => return Err(MapError::RemoteTaken),
                }
            }
        }
        let m = Mapping {
            proto,
            internal,
            public_port,
            out_key: key,
            in_key,
            remotes: vec![Remote { endpoint: remote, tcp: Tracker::default(), deadline_ms: now_ms + ms(timeout) }],
            created_ms: now_ms,
            deadline_ms: now_ms + ms(timeout),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(m);
                id
            }
            None => {
                self.slots.push(Some(m));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_out.insert(key, id);
        self.by_in.insert(in_key, id);
        if self.holds_ports() && public_port != 0 {
            self.held.insert((proto, public_port), id);
        }
        self.len += 1;
        self.sessions += 1;
        self.per_host.add(internal.addr);
        Ok((id, true))
    }

    /// Picks a public port: the internal one if preservation is on and it is
    /// free, else the next free one in the range (from a random place in it,
    /// with random allocation).
    fn allocate(
        &mut self,
        proto: u8,
        class: Class,
        wanted: u16,
        remote: Endpoint,
        now_ms: u64,
    ) -> Result<u16, MapError> {
        let free = |t: &mut Table, port: u16| {
            if proto == ipv4::PROTO_UDP && t.reserved.contains(&port) {
                return false;
            }
            if let Some(holder) = t.held.get(&(proto, port)).copied() {
                if t.if_live(holder, now_ms).is_some() {
                    return false;
                }
            }
            let k = t.in_key(proto, class, port, remote);
            t.by_in.get(&k).copied().and_then(|id| t.if_live(id, now_ms)).is_none()
        };
        if self.preserve && wanted != 0 && free(self, wanted) {
            return Ok(wanted);
        }
        let span = u32::from(self.high) - u32::from(self.low) + 1;
        if self.exhausted_until.get(&proto).is_some_and(|&until| now_ms < until) {
            return Err(MapError::PortsExhausted);
        }
        if let Some(rng) = &mut self.random {
            self.next_port = (rng.next_u64() % u64::from(span)) as u32;
        }
        for _ in 0..span {
            let port = (u32::from(self.low) + self.next_port % span) as u16;
            self.next_port = self.next_port.wrapping_add(1);
            if free(self, port) {
                return Ok(port);
            }
        }
        self.exhausted_until.insert(proto, now_ms + EXHAUSTED_RETRY_MS);
        Err(MapError::PortsExhausted)
    }

    /// The live mapping an outbound packet would use, without making one
    /// (for ICMP errors a LAN host sends about a packet it received).
    pub fn find_outbound(
        &mut self,
        proto: u8,
        class: Class,
        internal: Endpoint,
        remote: Endpoint,
        now: Duration,
    ) -> Option<u32> {
        let key = self.out_key(proto, class, internal, remote);
        let id = *self.by_out.get(&key)?;
        self.if_live(id, ms(now))
    }

    /// `id` if its mapping is live; an expired one is removed on the way.
    fn if_live(&mut self, id: u32, now_ms: u64) -> Option<u32> {
        if self.slots.get(id as usize).is_some_and(|m| m.as_ref().is_some_and(|m| m.live(now_ms))) {
            Some(id)
        } else {
            self.remove(id);
            None
        }
    }

    /// The mapping an inbound packet to `public_port` from `remote` belongs
    /// to, if one is live. Filtering is the caller's next question.
    pub fn inbound(
        &mut self,
        proto: u8,
        class: Class,
        public_port: u16,
        remote: Endpoint,
        now: Duration,
    ) -> Option<u32> {
        let key = self.in_key(proto, class, public_port, remote);
        let id = *self.by_in.get(&key)?;
        self.if_live(id, ms(now))
    }

    /// Whether the mapping's filter lets `remote` in (RFC 4787 §5).
    pub fn admits(&self, id: u32, remote: Endpoint, now: Duration) -> bool {
        let Some(m) = self.get(id) else { return false };
        let now_ms = ms(now);
        let live = m.remotes.iter().filter(|r| r.deadline_ms > now_ms);
        match self.filtering {
            Behaviour::EndpointIndependent => true,
            Behaviour::AddressDependent => live.into_iter().any(|r| r.endpoint.addr == remote.addr),
            Behaviour::AddressAndPortDependent => live.into_iter().any(|r| r.endpoint == remote),
        }
    }

    /// Refreshes the session with `remote` until `deadline_ms`; with `add`,
    /// makes it if there is none and the bounds allow. Expired sessions
    /// make room for a new one. `Ok(None)`: no such session (and none made).
    fn touch(
        &mut self,
        id: u32,
        remote: Endpoint,
        deadline_ms: u64,
        add: bool,
        now_ms: u64,
    ) -> Result<Option<&mut Remote>, MapError> {
        let Some(m) = self.slots.get_mut(id as usize).and_then(|m| m.as_mut()) else {
            return Ok(None);
        };
        let i = match m.remotes.iter().position(|r| r.endpoint == remote) {
            Some(i) => i,
            None if !add => return Ok(None),
            None => {
                if m.remotes.len() >= self.max_remotes || self.sessions >= self.max_sessions {
                    let before = m.remotes.len();
                    m.remotes.retain(|r| r.deadline_ms > now_ms);
                    self.sessions -= before - m.remotes.len();
                }
                if m.remotes.len() >= self.max_remotes {
                    return Err(MapError::RemotesFull);
                }
                if self.sessions >= self.max_sessions {
                    return Err(MapError::SessionsFull);
                }
                m.remotes.push(Remote { endpoint: remote, tcp: Tracker::default(), deadline_ms });
                self.sessions += 1;
                m.remotes.len() - 1
            }
        };
        let r = &mut m.remotes[i];
        r.deadline_ms = r.deadline_ms.max(deadline_ms);
        m.deadline_ms = m.deadline_ms.max(r.deadline_ms);
        Ok(Some(&mut m.remotes[i]))
    }

    /// Refreshes the session with `remote`, if the mapping has one. A
    /// remote the filter admits without a session (full or restricted
    /// cone) gets none: only the LAN host's own packets make sessions, so
    /// strangers cannot fill a mapping.
    pub fn refresh(&mut self, id: u32, remote: Endpoint, now: Duration, timeout: Duration) {
        let now_ms = ms(now);
        let _ = self.touch(id, remote, ms(now + timeout), false, now_ms);
    }

    /// Follows a TCP segment of the session with `remote` and sets the
    /// session's deadline from the state it is in (which may shorten it).
    /// A segment from the LAN makes the session if need be; one from the
    /// WAN only follows an existing one. `None`: no session, or a segment
    /// outside the window (which refreshes nothing). `Err` for a RST
    /// outside the window.
    pub fn track_tcp(
        &mut self,
        id: u32,
        remote: Endpoint,
        seg: Seg,
        outbound: bool,
        now: Duration,
        timeout: impl Fn(TcpState) -> Duration,
    ) -> Result<Option<TcpState>, OutOfWindow> {
        let now_ms = ms(now);
        let Ok(Some(r)) = self.touch(id, remote, 0, outbound, now_ms) else {
            return Ok(None);
        };
        let Some(state) = r.tcp.on_segment(seg, outbound)? else {
            return Ok(None);
        };
        r.deadline_ms = ms(now + timeout(state));
        if let Some(m) = self.slots.get_mut(id as usize).and_then(|m| m.as_mut()) {
            m.recompute_deadline();
        }
        Ok(Some(state))
    }

    /// A session's TCP state.
    pub fn tcp_state(&self, id: u32, remote: Endpoint) -> TcpState {
        self.get(id)
            .and_then(|m| m.remotes.iter().find(|r| r.endpoint == remote))
            .map_or(TcpState::None, |r| r.tcp.state())
    }

    /// A mapping by slot.
    pub fn get(&self, id: u32) -> Option<&Mapping> {
        self.slots.get(id as usize)?.as_ref()
    }

    fn remove(&mut self, id: u32) -> Option<Mapping> {
        let m = self.slots.get_mut(id as usize)?.take()?;
        if self.by_out.get(&m.out_key) == Some(&id) {
            self.by_out.remove(&m.out_key);
        }
        if self.by_in.get(&m.in_key) == Some(&id) {
            self.by_in.remove(&m.in_key);
        }
        if self.held.get(&(m.proto, m.public_port)) == Some(&id) {
            self.held.remove(&(m.proto, m.public_port));
        }
        if !self.exhausted_until.is_empty() {
            self.exhausted_until.remove(&m.proto);
        }
        self.free.push(id);
        self.len -= 1;
        self.sessions -= m.remotes.len();
        self.per_host.release(m.internal.addr);
        Some(m)
    }

    /// Removes expired mappings, looking at `budget` slots at most (from
    /// where the last call stopped). Returns how many were removed.
    pub fn sweep(&mut self, now: Duration, budget: usize) -> usize {
        let now_ms = ms(now);
        let n = self.slots.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            self.sweep_cursor = (self.sweep_cursor + 1) % n;
            let id = self.sweep_cursor as u32;
            if self.slots[id as usize].as_ref().is_some_and(|m| !m.live(now_ms)) {
                self.remove(id);
                removed += 1;
            }
        }
        removed
    }

    /// The live mappings, for a dump.
    pub fn snapshot(&self, now: Duration) -> Vec<MappingInfo> {
        let now_ms = ms(now);
        let mut v: Vec<MappingInfo> = self
            .slots
            .iter()
            .flatten()
            .filter(|m| m.live(now_ms))
            .map(|m| MappingInfo {
                protocol: super::profile::Protocol::of(m.proto).name().into(),
                internal: m.internal.to_string(),
                public_port: m.public_port,
                remotes: m
                    .remotes
                    .iter()
                    .filter(|r| r.deadline_ms > now_ms)
                    .map(|r| match r.tcp.state() {
                        TcpState::None => r.endpoint.to_string(),
                        s => format!("{} ({})", r.endpoint, s.name()),
                    })
                    .collect(),
                expires_in_s: (m.deadline_ms - now_ms) / 1000,
            })
            .collect();
        v.sort_by(|a, b| (&a.protocol, &a.internal, a.public_port).cmp(&(&b.protocol, &b.internal, b.public_port)));
        v
    }
}
