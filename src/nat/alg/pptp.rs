//! The PPTP ALG (RFC 2637): Call IDs made unique per server, GRE back by
//! Call ID.
//!
//! Each side of a PPTP call picks its own Call ID, and enhanced GRE carries
//! the *receiver's*. Two LAN hosts calling one server may pick the same
//! Call ID, so the server's GRE for both would carry the same key. The ALG parses both directions of every
//! control connection on TCP 1723 and rewrites the LAN host's Call ID to a
//! public one that is unique for the server wherever it appears: as the
//! sender's own Call ID going out, as the Peer's Call ID coming back. GRE
//! from the server is then delivered by its key.
//!
//! The control stream is parsed byte by byte, so a message may span TCP
//! segments and several may share one; retransmitted bytes are rewritten
//! as they were the first time. A public Call ID keeps the LAN host's high
//! byte, so rewriting changes only the low byte and a field split between
//! two segments is still rewritten (the high byte passes unchanged, the low
//! byte is decided when it arrives). Linux's nf_nat_pptp instead uses the
//! control connection's public TCP port as the Call ID (one call per
//! control connection) and expects each message in one segment; the
//! [`CallIdChoice::ControlPort`] choice reproduces it for comparison.
//!
//! The ALG follows only control connections a LAN host opened (their first
//! segment goes out), and at most as many as its bounds allow, in all and
//! per LAN host. A call whose block of 256 public Call IDs is full, or that
//! would pass a bound, is refused (its message is dropped and counted):
//! never given an ID another call holds.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::{Alg, Claim, Connection, Context, Packet};
use crate::nat::Side;
use crate::nat::counters::DropReason;
use crate::nat::profile::{CallIdChoice, PptpMode, Profile, Protocol};
use crate::nat::quota::PerHost;
use crate::nat::serial::after;
use crate::nat::table::TcpState;
use crate::wire::{gre, pptp as msg, tcp};

/// The PPTP control port.
pub const PORT: u16 = msg::PORT;

/// A call through the NAT.
#[derive(Debug, Clone)]
struct Call {
    control: Connection,
    lan_call: u16,
    public_call: u16,
    server_call: Option<u16>,
}

/// A call as the dump shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallInfo {
    /// The LAN host.
    pub client: String,
    /// The server.
    pub server: String,
    /// The LAN host's Call ID.
    pub lan_call_id: u16,
    /// The Call ID the server sees.
    pub public_call_id: u16,
    /// The server's Call ID, once known.
    pub server_call_id: Option<u16>,
}

/// Recent rewrites kept per stream, for retransmissions.
const REMEMBERED_REWRITES: usize = 64;

/// One direction of a control connection, parsed byte by byte.
#[derive(Debug, Default, Clone)]
struct Stream {
    next_seq: Option<u32>,
    pos: usize,
    head: [u8; msg::HEADER_LEN],
    len: usize,
    ctrl_type: u16,
    /// The high byte of the Call ID field being read, and where it is in
    /// the current segment (if it is in it).
    high: Option<(u8, Option<usize>)>,
    /// The server's own Call ID read earlier in the current message.
    server_own: Option<u16>,
    /// The public Call ID written earlier in the current message.
    public: Option<u16>,
    broken: bool,
    rewrites: VecDeque<(u32, u8)>,
}

#[derive(Debug, Default)]
struct ControlState {
    out: Stream,
    inb: Stream,
    last_seen: Duration,
}

impl ControlState {
    /// The stream of the segments that came from `from`.
    fn stream(&mut self, from: Side) -> &mut Stream {
        match from {
            Side::Lan => &mut self.out,
            Side::Wan => &mut self.inb,
        }
    }
}

/// Bounds on what the PPTP ALG keeps.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Control connections.
    pub controls: usize,
    /// Control connections per LAN host.
    pub controls_per_host: usize,
    /// Calls.
    pub calls: usize,
    /// Calls per LAN host.
    pub calls_per_host: usize,
}

/// What the PPTP ALG knows.
pub struct Pptp {
    mode: PptpMode,
    choice: CallIdChoice,
    control_timeout: Duration,
    bounds: Bounds,
    controls: HashMap<Connection, ControlState>,
    /// By (server, public Call ID): what inbound GRE is looked up by.
    calls: HashMap<([u8; 4], u16), Call>,
    /// By (control connection, LAN Call ID): the public Call ID.
    by_lan: HashMap<(Connection, u16), u16>,
    /// Calls per LAN host.
    per_host: PerHost,
    /// Control connections per LAN host.
    controls_per_host: PerHost,
    /// By (server, server's Call ID, LAN host): for the server's messages
    /// that name a call by its own Call ID.
    by_server_call: HashMap<([u8; 4], u16, [u8; 4]), u16>,
}

impl Pptp {
    /// An empty ALG as `profile` sets it up. Calls live as long as their
    /// control connection, which lives as long as an established TCP
    /// connection after its last segment.
    pub fn new(profile: &Profile) -> Pptp {
        let l = &profile.limits;
        let bounds = Bounds {
            controls: l.pptp_controls,
            controls_per_host: l.pptp_controls_per_host,
            calls: l.pptp_calls,
            calls_per_host: l.pptp_calls_per_host,
        };
        Pptp {
            mode: profile.pptp,
            choice: profile.pptp_call_ids,
            control_timeout: Duration::from_secs(profile.timeouts.tcp_established),
            bounds,
            controls: HashMap::new(),
            calls: HashMap::new(),
            by_lan: HashMap::new(),
            per_host: PerHost::new(bounds.calls_per_host),
            controls_per_host: PerHost::new(bounds.controls_per_host),
            by_server_call: HashMap::new(),
        }
    }

    /// How many control connections it follows.
    pub fn controls(&self) -> usize {
        self.controls.len()
    }

    /// How many calls are up.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Handles a TCP segment of a control connection whose headers the NAT
    /// has already translated: rewrites Call IDs in its data (first byte at
    /// sequence number `seq`). A SYN tells where the stream starts.
    fn stream_segment(
        &mut self,
        from: Side,
        control: Connection,
        p: &mut Packet,
        seq: u32,
        syn: bool,
        now: Duration,
    ) -> Result<(), DropReason> {
        if !self.controls.contains_key(&control) {
            // Only a LAN host's own control connection is followed; the
            // server's segments of one it never opened pass untouched.
            if from == Side::Wan {
                return Ok(());
            }
            if self.controls.len() >= self.bounds.controls {
                return Err(DropReason::PptpControlsFull);
            }
            if !self.controls_per_host.has_room(control.lan.addr) {
                return Err(DropReason::HostQuota);
            }
            self.controls_per_host.add(control.lan.addr);
        }
        let state = self.controls.entry(control).or_default();
        state.last_seen = now;
        // A SYN takes a sequence number: its data (if any) starts after it.
        let mut seq = seq;
        if syn {
            seq = seq.wrapping_add(1);
            // Only the stream's first SYN says where it starts.
            state.stream(from).next_seq.get_or_insert(seq);
        }
        if p.data().is_empty() {
            return Ok(());
        }
        let mut stream = std::mem::take(state.stream(from));
        // A call refused for want of room drops its segment: the stream
        // goes back to where it was, so the retransmission is read afresh.
        let before = (from == Side::Lan).then(|| stream.clone());
        let result = self.feed(&mut stream, from, control, p, seq);
        if let (Err(DropReason::PptpCallsFull | DropReason::HostQuota), Some(before)) = (result, before) {
            stream = before;
        }
        if let Some(state) = self.controls.get_mut(&control) {
            *state.stream(from) = stream;
        }
        result
    }

    fn feed(
        &mut self,
        s: &mut Stream,
        from: Side,
        control: Connection,
        p: &mut Packet,
        seq: u32,
    ) -> Result<(), DropReason> {
        if s.broken {
            return Err(DropReason::PptpMalformed);
        }
        // A Call ID's high byte read before is in an earlier segment: where
        // it was is no place in this one.
        if let Some((b, Some(_))) = s.high {
            s.high = Some((b, None));
        }
        let len = p.data().len() as u32;
        let next = *s.next_seq.get_or_insert(seq);
        if after(seq, next) {
            // A gap: the bytes before this segment were never seen. TCP
            // sends them again; this one follows in order.
            return Err(DropReason::PptpOutOfOrder);
        }
        // Bytes already seen (a retransmission): rewrite them as before.
        let seen = next.wrapping_sub(seq);
        for i in 0..seen.min(len) {
            let at_seq = seq.wrapping_add(i);
            if let Some(&(_, b)) = s.rewrites.iter().find(|(q, _)| *q == at_seq) {
                patch(p, i as usize, b)?;
            }
        }
        for i in seen..len {
            self.byte(s, from, control, p, i as usize, seq.wrapping_add(i))?;
        }
        if len > seen {
            s.next_seq = Some(seq.wrapping_add(len));
        }
        Ok(())
    }

    /// The data's byte `at` (sequence number `at_seq`).
    fn byte(
        &mut self,
        s: &mut Stream,
        from: Side,
        control: Connection,
        p: &mut Packet,
        at: usize,
        at_seq: u32,
    ) -> Result<(), DropReason> {
        let b = p.data()[at];
        let pos = s.pos;
        if pos < msg::HEADER_LEN {
            s.head[pos] = b;
            if pos == 1 {
                s.len = usize::from(u16::from_be_bytes([s.head[0], s.head[1]]));
                if !(16..=msg::MAX_LEN).contains(&s.len) {
                    s.broken = true;
                    return Err(DropReason::PptpMalformed);
                }
            }
            if pos == msg::HEADER_LEN - 1 {
                let h = &s.head;
                let kind = u16::from_be_bytes([h[2], h[3]]);
                let magic = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                s.ctrl_type = u16::from_be_bytes([h[8], h[9]]);
                let fits =
                    msg::fields(s.ctrl_type).is_some_and(|f| f.own.into_iter().chain(f.peer).all(|o| o + 2 <= s.len));
                if kind != msg::CONTROL_MESSAGE || magic != msg::MAGIC || !fits {
                    s.broken = true;
                    return Err(DropReason::PptpMalformed);
                }
                s.server_own = None;
                s.public = None;
            }
        } else if let Some(f) = msg::fields(s.ctrl_type) {
            let own = f.own == Some(pos) || f.own == Some(pos.wrapping_sub(1));
            let peer = f.peer == Some(pos) || f.peer == Some(pos.wrapping_sub(1));
            let first = f.own == Some(pos) || f.peer == Some(pos);
            if (own || peer) && first {
                s.high = Some((b, Some(at)));
            } else if own || peer {
                let (hi, hi_at) = s.high.take().unwrap_or((0, None));
                let value = u16::from_be_bytes([hi, b]);
                let new = if own {
                    self.own_call_id(s, from, control, value)?
                } else {
                    self.peer_call_id(s, from, control, value)
                };
                if let Some(new) = new {
                    let [nh, nl] = new.to_be_bytes();
                    if nh != hi {
                        match hi_at {
                            Some(hat) => {
                                patch(p, hat, nh)?;
                                remember(s, at_seq.wrapping_sub(1), nh);
                            }
                            // The high byte left in an earlier segment.
                            None => return Err(DropReason::PptpSplitField),
                        }
                    }
                    if nl != b {
                        patch(p, at, nl)?;
                        remember(s, at_seq, nl);
                    }
                }
            }
        }
        s.pos += 1;
        if s.pos >= msg::HEADER_LEN && s.pos >= s.len {
            self.message_end(s, from, control);
            s.pos = 0;
            s.len = 0;
        }
        Ok(())
    }

    /// The sender's own Call ID: the LAN host's going out (made public),
    /// the server's coming in (noted).
    fn own_call_id(
        &mut self,
        s: &mut Stream,
        from: Side,
        control: Connection,
        value: u16,
    ) -> Result<Option<u16>, DropReason> {
        match from {
            Side::Lan => {
                let public = match s.ctrl_type {
                    // Messages that start a call.
                    msg::OCRQ | msg::ICRP | msg::OCRP | msg::ICRQ => Some(self.public_for(control, value)?),
                    // Clearing or disconnecting: the public ID it already has.
                    _ => self.find_public(control, value),
                };
                s.public = public;
                Ok(public)
            }
            Side::Wan => {
                s.server_own = Some(value);
                Ok(None)
            }
        }
    }

    /// The receiver's Call ID: the server's going out (noted for the call
    /// the message set up), the LAN host's coming in (made private again).
    fn peer_call_id(&mut self, s: &mut Stream, from: Side, control: Connection, value: u16) -> Option<u16> {
        match from {
            Side::Lan => {
                if let Some(public) = s.public {
                    self.note_server_call(control, public, value);
                }
                None
            }
            Side::Wan => {
                let call = self.calls.get(&(control.remote.addr, value)).filter(|c| c.control == control)?;
                let lan = call.lan_call;
                if let Some(server_call) = s.server_own.take() {
                    self.note_server_call(control, value, server_call);
                }
                Some(lan)
            }
        }
    }

    fn note_server_call(&mut self, control: Connection, public: u16, server_call: u16) {
        if let Some(call) = self.calls.get_mut(&(control.remote.addr, public)).filter(|c| c.control == control) {
            // A call has one server Call ID: a new one replaces the old.
            if let Some(old) = call.server_call.replace(server_call) {
                self.by_server_call.remove(&(control.remote.addr, old, control.lan.addr));
            }
            self.by_server_call.insert((control.remote.addr, server_call, control.lan.addr), public);
        }
    }

    /// What happens when a message is complete: a call ends with its
    /// Call-Clear-Request or Call-Disconnect-Notify, all of a control
    /// connection's calls with Stop-Control-Connection.
    fn message_end(&mut self, s: &mut Stream, from: Side, control: Connection) {
        match s.ctrl_type {
            msg::CCRQ | msg::CDN => {
                let public = match from {
                    // The server hung up: its own Call ID names the call.
                    Side::Wan => s
                        .server_own
                        .take()
                        .and_then(|sc| self.by_server_call.get(&(control.remote.addr, sc, control.lan.addr)).copied()),
                    // The LAN host hung up: its Call ID was just made public.
                    Side::Lan => s.public.take(),
                };
                // Only a call of this control connection.
                if let Some(p) =
                    public.filter(|p| self.calls.get(&(control.remote.addr, *p)).is_some_and(|c| c.control == control))
                {
                    self.remove_call(control.remote.addr, p);
                }
            }
            msg::STOP_CCRQ | msg::STOP_CCRP => self.close(control),
            _ => {}
        }
    }

    fn find_public(&self, control: Connection, lan_call: u16) -> Option<u16> {
        self.by_lan.get(&(control, lan_call)).copied()
    }

    /// The public Call ID of the LAN host's call `lan_call`, made if new;
    /// refused when no ID of its block is free or a bound is reached.
    fn public_for(&mut self, control: Connection, lan_call: u16) -> Result<u16, DropReason> {
        if !self.controls.contains_key(&control) {
            // A call started after a Stop-Control-Connection in the same
            // segment would outlive its control connection: refused.
            return Err(DropReason::PptpMalformed);
        }
        if let Some(p) = self.find_public(control, lan_call) {
            return Ok(p);
        }
        let taken = |p: u16| self.calls.contains_key(&(control.remote.addr, p));
        let public = match self.choice {
            // With the control port as Call ID a second call finds the first
            // in place: like Linux, its GRE then reaches the first call.
            CallIdChoice::ControlPort if taken(control.public_port) => return Ok(control.public_port),
            CallIdChoice::ControlPort => control.public_port,
            CallIdChoice::Unique => {
                let base = lan_call & 0xff00;
                std::iter::once(lan_call)
                    .chain((0..=0xffu16).map(|lo| base | lo))
                    .find(|p| !taken(*p))
                    .ok_or(DropReason::PptpCallsFull)?
            }
        };
        if self.calls.len() >= self.bounds.calls {
            return Err(DropReason::PptpCallsFull);
        }
        let host = control.lan.addr;
        if !self.per_host.has_room(host) {
            return Err(DropReason::HostQuota);
        }
        let call = Call { control, lan_call, public_call: public, server_call: None };
        self.calls.insert((control.remote.addr, public), call);
        self.by_lan.insert((control, lan_call), public);
        self.per_host.add(host);
        Ok(public)
    }

    fn remove_call(&mut self, server: [u8; 4], public: u16) {
        if let Some(c) = self.calls.remove(&(server, public)) {
            let key = c.server_call.map(|sc| (server, sc, c.control.lan.addr));
            // Only if it still names this call (another may have taken it).
            if let Some(key) = key.filter(|k| self.by_server_call.get(k) == Some(&public)) {
                self.by_server_call.remove(&key);
            }
            self.by_lan.remove(&(c.control, c.lan_call));
            self.per_host.release(c.control.lan.addr);
        }
    }

    /// The control connection ended (FIN, RST, timeout): its calls end too.
    fn close(&mut self, control: Connection) {
        // Calls live only as long as their control connection.
        if self.controls.remove(&control).is_none() {
            return;
        }
        self.controls_per_host.release(control.lan.addr);
        let ended: Vec<u16> = self.calls.values().filter(|c| c.control == control).map(|c| c.public_call).collect();
        for p in ended {
            self.remove_call(control.remote.addr, p);
        }
    }

    /// GRE from `server` keyed with a public Call ID: the LAN host and the
    /// Call ID it knows, if a live call has them. Nothing from anyone else.
    fn inbound_gre(&self, server: [u8; 4], public_call: u16) -> Option<([u8; 4], u16)> {
        let c = self.calls.get(&(server, public_call))?;
        Some((c.control.lan.addr, c.lan_call))
    }

    /// The calls, for the dump.
    pub fn snapshot(&self) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self
            .calls
            .values()
            .map(|c| CallInfo {
                client: c.control.lan.to_string(),
                server: std::net::Ipv4Addr::from(c.control.remote.addr).to_string(),
                lan_call_id: c.lan_call,
                public_call_id: c.public_call,
                server_call_id: c.server_call,
            })
            .collect();
        v.sort_by(|a, b| (&a.server, a.public_call_id).cmp(&(&b.server, b.public_call_id)));
        v
    }
}

impl Alg for Pptp {
    fn refuses(&self, from: Side, p: &Packet) -> Option<DropReason> {
        let pptp = p.proto == Protocol::Gre || (p.proto == Protocol::Tcp && p.server_port(from) == Some(PORT));
        (self.mode == PptpMode::Off && pptp).then_some(DropReason::PptpOff)
    }

    /// Enhanced GRE: going out it carries the server's Call ID, and only
    /// the address changes; coming in, its Call ID names the call.
    fn claim(&mut self, from: Side, p: &mut Packet, _cx: &mut Context) -> Claim {
        if self.mode != PptpMode::CallId || p.proto != Protocol::Gre {
            return Claim::Pass;
        }
        let Some(call) = gre::Packet::new_checked(p.data()).ok().filter(|g| g.is_pptp()).map(|g| g.call_id()) else {
            return Claim::Pass;
        };
        if from == Side::Lan {
            return Claim::Own { lan_host: p.src };
        }
        let Some((client, lan_call)) = self.inbound_gre(p.src, call) else {
            return Claim::Drop(DropReason::PptpGreUnmatched);
        };
        // Enhanced GRE has no checksum: its data is the ALG's to change.
        let Some(mut g) = p.data_mut().and_then(|d| gre::Packet::new_checked(d).ok()) else {
            return Claim::Drop(DropReason::PptpMalformed);
        };
        g.set_call_id(lan_call);
        Claim::Own { lan_host: client }
    }

    /// A segment of a control connection on TCP 1723: the ALG reads it
    /// while the connection is open, and the connection's calls end when
    /// it closes. A segment in IP fragments is dropped: only the first
    /// would be read, and a Call ID in a later one would cross as it is.
    fn segment(
        &mut self,
        from: Side,
        conn: Connection,
        state: TcpState,
        p: &mut Packet,
        cx: &mut Context,
    ) -> Result<(), DropReason> {
        if self.mode != PptpMode::CallId || conn.remote.port != PORT {
            return Ok(());
        }
        if !p.whole {
            return Err(DropReason::PptpFragmented);
        }
        let Some(seg) = p.ports.map(|ports| ports.tcp) else {
            return Ok(());
        };
        if state == TcpState::Closing {
            self.close(conn);
            return Ok(());
        }
        self.stream_segment(from, conn, p, seg.seq, seg.flags & tcp::SYN != 0, cx.now)
    }

    /// Forgets idle control connections, and their calls with them.
    fn expire(&mut self, now: Duration) {
        let idle: Vec<Connection> =
            self.controls.iter().filter(|(_, s)| s.last_seen + self.control_timeout <= now).map(|(c, _)| *c).collect();
        for c in idle {
            self.close(c);
        }
    }
}

/// Changes the data's byte `at` (within the segment: the stream reads no
/// further).
fn patch(p: &mut Packet, at: usize, b: u8) -> Result<(), DropReason> {
    if p.patch_byte(at, b) { Ok(()) } else { Err(DropReason::PptpMalformed) }
}

fn remember(s: &mut Stream, seq: u32, byte: u8) {
    if s.rewrites.len() >= REMEMBERED_REWRITES {
        s.rewrites.pop_front();
    }
    s.rewrites.push_back((seq, byte));
}
