//! A PPP session, sans I/O: LCP (RFC 1661), PAP (RFC 1334) and CHAP-MD5
//! (RFC 1994), IPCP (RFC 1332). Frames (address, control, protocol,
//! information: what HDLC carries) go in with the time; packets to send,
//! IP packets to deliver and link state changes come out as events.
//!
//! Option negotiation follows RFC 1661 §4 in the form both ends need here:
//! each side sends Configure-Requests until one is acknowledged and answers
//! the other's with Ack, Nak (values it wants instead) or Reject (options it
//! does not know); a layer is open when both directions are acknowledged.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

/// LCP.
pub const PROTO_LCP: u16 = 0xc021;
/// PAP.
pub const PROTO_PAP: u16 = 0xc023;
/// CHAP.
pub const PROTO_CHAP: u16 = 0xc223;
/// IPCP.
pub const PROTO_IPCP: u16 = 0x8021;
/// IPv4 datagrams.
pub const PROTO_IP: u16 = 0x0021;

const CONF_REQ: u8 = 1;
const CONF_ACK: u8 = 2;
const CONF_NAK: u8 = 3;
const CONF_REJ: u8 = 4;
const TERM_REQ: u8 = 5;
const TERM_ACK: u8 = 6;
const CODE_REJ: u8 = 7;
const PROTO_REJ: u8 = 8;
const ECHO_REQ: u8 = 9;
const ECHO_REP: u8 = 10;
const DISCARD_REQ: u8 = 11;

const LCP_MRU: u8 = 1;
const LCP_ACCM: u8 = 2;
const LCP_AUTH: u8 = 3;
const LCP_MAGIC: u8 = 5;
const IPCP_ADDRESS: u8 = 3;

/// How often a Configure-Request or Terminate-Request is sent again, unless
/// `lcp-restart` says otherwise for LCP.
const RESTART: Duration = Duration::from_secs(1);
/// How many times before giving up, unless `lcp-max-configure` says
/// otherwise for LCP.
const MAX_CONFIGURE: u32 = 10;

/// An authentication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProto {
    /// Password Authentication Protocol.
    Pap,
    /// Challenge Handshake Authentication Protocol with MD5.
    ChapMd5,
}

/// One line of a secrets file, as in pppd's `chap-secrets` and
/// `pap-secrets`: `client` authenticates to `server` with `secret`. `*` in
/// either name matches any name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Who authenticates.
    pub client: String,
    /// To whom.
    pub server: String,
    /// With what.
    pub secret: String,
}

/// The secret `client` authenticates to `server` with (any server when
/// `None`), chosen as pppd chooses: a line naming both exactly before one
/// naming the client, before one naming the server, before wildcards; the
/// first of equals.
pub fn find_secret<'a>(secrets: &'a [Secret], client: &str, server: Option<&str>) -> Option<&'a str> {
    secrets
        .iter()
        .rev()
        .filter(|s| (s.client == client || s.client == "*") && server.is_none_or(|v| s.server == v || s.server == "*"))
        .max_by_key(|s| 2 * u8::from(s.client == client) + u8::from(server.is_some_and(|v| s.server == v)))
        .map(|s| s.secret.as_str())
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A name the peer sent, quoted and escaped for a log line.
fn quoted(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name))
}

/// What this end of the link is configured with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Ask the peer to authenticate with this protocol.
    pub require: Option<AuthProto>,
    /// Our name (`name`): the name in our CHAP challenges, and the server
    /// a peer's secret must be for.
    pub name: String,
    /// The name we authenticate ourselves with (`user`); our name when
    /// absent.
    pub user: Option<String>,
    /// The secret we authenticate ourselves with (`password`). It is never
    /// the secret a peer must know: that comes from `secrets`.
    pub secret: Option<String>,
    /// The peer's name, to find our own secret in `secrets` when it does
    /// not say its name (`remotename`).
    pub remote_name: Option<String>,
    /// Who may authenticate to whom with what: a peer authenticates to us
    /// with the secret of the line for its name and ours; without
    /// `secret`, we authenticate with the line for our name and the peer's.
    pub secrets: Vec<Secret>,
    /// Our IPv4 address, if we have one.
    pub local_ip: Option<Ipv4Addr>,
    /// The address to give the peer, if we hand one out.
    pub remote_ip: Option<Ipv4Addr>,
    /// Our MRU.
    pub mru: u16,
    /// Our magic number (random, non-zero).
    pub magic: u32,
    /// Send nothing until the peer's first Configure-Request (`silent`).
    pub silent: bool,
    /// When our Configure-Requests go unanswered, wait for the peer's
    /// instead of giving up (`passive`).
    pub passive: bool,
    /// Send LCP Echo-Requests this often, if set.
    pub echo_interval: Option<Duration>,
    /// Give up after this many unanswered Echo-Requests.
    pub echo_failure: u32,
    /// How often an unanswered LCP Configure-Request is sent again
    /// (`lcp-restart`).
    pub lcp_restart: Duration,
    /// How many LCP Configure-Requests go unanswered before the link is
    /// given up (`lcp-max-configure`).
    pub lcp_max_configure: u32,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            require: None,
            name: "vpn-passthrough".into(),
            user: None,
            secret: None,
            remote_name: None,
            secrets: Vec::new(),
            local_ip: None,
            remote_ip: None,
            mru: 1500,
            magic: 0x5a5a_0001,
            silent: false,
            passive: false,
            echo_interval: None,
            echo_failure: 3,
            lcp_restart: RESTART,
            lcp_max_configure: MAX_CONFIGURE,
        }
    }
}

/// What the session wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send this frame (address, control, protocol, information), escaped
    /// with the given ACCM.
    Send(Vec<u8>, u32),
    /// IPCP is open: bring the interface up with these addresses.
    Up {
        /// Our address.
        local: Ipv4Addr,
        /// The peer's address.
        remote: Ipv4Addr,
        /// The MTU (the peer's MRU).
        mtu: u16,
    },
    /// An IPv4 packet from the peer.
    Ip(Vec<u8>),
    /// The link is finished, for this reason; `clean` when it ended by
    /// LCP Terminate (either side's), not by a failure.
    Down {
        /// Why.
        why: String,
        /// Ended by Terminate.
        clean: bool,
    },
}

/// One negotiation layer's state.
#[derive(Debug, Default)]
struct Layer {
    /// The peer acknowledged our current request.
    acked_by_peer: bool,
    /// We acknowledged the peer's request.
    acked_peer: bool,
    /// Identifier of our outstanding request.
    id: u8,
    /// Requests sent without an Ack.
    tries: u32,
    /// When to send again.
    next_send: Option<Duration>,
    /// Options the peer rejected.
    rejected: Vec<u8>,
}

impl Layer {
    fn open(&self) -> bool {
        self.acked_by_peer && self.acked_peer
    }

    /// Counts one more Configure-Request and schedules its resend after
    /// `restart`; its identifier, or `None` once `max` went unacknowledged.
    fn next_request(&mut self, now: Duration, restart: Duration, max: u32) -> Option<u8> {
        if self.tries >= max {
            return None;
        }
        self.id = self.id.wrapping_add(1);
        self.tries += 1;
        self.next_send = Some(now + restart);
        Some(self.id)
    }

    /// The peer acknowledged our request.
    fn acked(&mut self) {
        self.acked_by_peer = true;
        self.next_send = None;
    }
}

/// A control packet's code, identifier and data, if its length field is
/// sound; RFC 1661 says to discard it silently otherwise.
fn control_packet(p: &[u8]) -> Option<(u8, u8, &[u8])> {
    let len = usize::from(be16(p.get(..4)?, 2));
    (4..=p.len()).contains(&len).then(|| (p[0], p[1], &p[4..len]))
}

/// The answer to a Configure-Request: Reject what we do not know, else Nak
/// what we want otherwise, else Ack (`None`).
fn configure_answer(rej: Vec<u8>, nak: Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if !rej.is_empty() {
        Some((CONF_REJ, rej))
    } else if !nak.is_empty() {
        Some((CONF_NAK, nak))
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Establish,
    Authenticate,
    Network,
    Terminate,
    Dead,
}

/// A PPP session.
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    lcp: Layer,
    ipcp: Layer,
    /// The peer's ACCM (what we must escape when sending).
    peer_accm: u32,
    /// The peer's MRU.
    peer_mru: u16,
    /// The authentication the peer asked of us.
    peer_requires: Option<AuthProto>,
    /// We have authenticated ourselves to the peer.
    authenticated_to_peer: bool,
    /// The peer has authenticated itself to us.
    peer_authenticated: bool,
    /// Our CHAP challenge, if we sent one.
    challenge: Option<(u8, [u8; 16])>,
    auth_next: Option<Duration>,
    auth_tries: u32,
    /// The address we ask for (learned from a Nak when we had none).
    our_ip: Option<Ipv4Addr>,
    /// The peer's acknowledged address.
    peer_ip: Option<Ipv4Addr>,
    up: bool,
    echo_next: Option<Duration>,
    echo_unanswered: u32,
    term_next: Option<Duration>,
    term_tries: u32,
    events: VecDeque<Event>,
    rng: u64,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Builds a control packet: code, id, length, data.
fn control(code: u8, id: u8, data: &[u8]) -> Vec<u8> {
    let mut p = vec![code, id];
    p.extend_from_slice(&((4 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(data);
    p
}

/// Walks the options of a Configure-* packet: (type, value); `None` if the
/// lengths do not add up.
fn options(data: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let len = usize::from(*data.get(i + 1)?);
        if len < 2 || i + len > data.len() {
            return None;
        }
        out.push((data[i], &data[i + 2..i + len]));
        i += len;
    }
    Some(out)
}

fn option(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut o = vec![kind, (2 + value.len()) as u8];
    o.extend_from_slice(value);
    o
}

impl Session {
    /// A session that has not started.
    pub fn new(cfg: SessionConfig) -> Session {
        let rng = u64::from(cfg.magic) | 1;
        Session {
            our_ip: cfg.local_ip,
            cfg,
            phase: Phase::Establish,
            lcp: Layer::default(),
            ipcp: Layer::default(),
            peer_accm: 0xffff_ffff,
            peer_mru: 1500,
            peer_requires: None,
            authenticated_to_peer: false,
            peer_authenticated: false,
            challenge: None,
            auth_next: None,
            auth_tries: 0,
            peer_ip: None,
            up: false,
            echo_next: None,
            echo_unanswered: 0,
            term_next: None,
            term_tries: 0,
            events: VecDeque::new(),
            rng,
        }
    }

    /// Starts LCP (a silent end waits for the peer's request).
    pub fn start(&mut self, now: Duration) {
        if !self.cfg.silent {
            self.send_lcp_request(now);
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the link is finished.
    pub fn is_dead(&self) -> bool {
        self.phase == Phase::Dead
    }

    /// When [`Session::handle_timeout`] next has something to do (never,
    /// once the link is finished).
    pub fn next_timeout(&self) -> Option<Duration> {
        if self.phase == Phase::Dead {
            return None;
        }
        [self.lcp.next_send, self.ipcp.next_send, self.auth_next, self.echo_next, self.term_next]
            .into_iter()
            .flatten()
            .min()
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn send(&mut self, proto: u16, packet: Vec<u8>) {
        let mut f = vec![0xff, 0x03];
        f.extend_from_slice(&proto.to_be_bytes());
        f.extend(packet);
        // LCP always goes with every control character escaped (RFC 1662
        // §7.1); everything else with the peer's ACCM.
        let accm = if proto == PROTO_LCP { 0xffff_ffff } else { self.peer_accm };
        self.events.push_back(Event::Send(f, accm));
    }

    /// The link failed.
    fn down(&mut self, why: impl Into<String>) {
        self.end(why.into(), false);
    }

    /// Authentication failed: a Terminate-Request tells the peer, and the
    /// link ends at once with `why` as its reason.
    fn fail(&mut self, why: impl Into<String>) {
        if self.phase != Phase::Dead {
            self.send(PROTO_LCP, control(TERM_REQ, 0xee, b"authentication failed"));
            self.down(why);
        }
    }

    /// The link ended by LCP Terminate.
    fn terminated(&mut self, why: &str) {
        self.end(why.into(), true);
    }

    fn end(&mut self, why: String, clean: bool) {
        if self.phase != Phase::Dead {
            self.phase = Phase::Dead;
            self.events.push_back(Event::Down { why, clean });
        }
    }

    // ---- LCP --------------------------------------------------------------

    fn lcp_request_options(&self) -> Vec<u8> {
        let mut o = Vec::new();
        let mut add = |kind: u8, value: &[u8]| {
            if !self.lcp.rejected.contains(&kind) {
                o.extend(option(kind, value));
            }
        };
        if self.cfg.mru != 1500 {
            add(LCP_MRU, &self.cfg.mru.to_be_bytes());
        }
        add(LCP_ACCM, &0u32.to_be_bytes());
        match self.cfg.require {
            Some(AuthProto::Pap) => add(LCP_AUTH, &PROTO_PAP.to_be_bytes()),
            Some(AuthProto::ChapMd5) => add(LCP_AUTH, &[0xc2, 0x23, 0x05]),
            None => {}
        }
        add(LCP_MAGIC, &self.cfg.magic.to_be_bytes());
        o
    }

    fn send_lcp_request(&mut self, now: Duration) {
        let Some(id) = self.lcp.next_request(now, self.cfg.lcp_restart, self.cfg.lcp_max_configure) else {
            if self.cfg.passive {
                // Wait quietly; the peer's request restarts ours.
                self.lcp.tries = 0;
                self.lcp.next_send = None;
            } else {
                self.down("LCP: the peer never acknowledged our Configure-Request");
            }
            return;
        };
        let p = control(CONF_REQ, id, &self.lcp_request_options());
        self.send(PROTO_LCP, p);
    }

    fn on_lcp(&mut self, p: &[u8], now: Duration) {
        let Some((code, id, data)) = control_packet(p) else { return };
        match code {
            CONF_REQ => self.lcp_conf_req(id, data, now),
            CONF_ACK if id == self.lcp.id => {
                self.lcp.acked();
                self.lcp_maybe_open(now);
            }
            CONF_NAK | CONF_REJ if id == self.lcp.id => {
                if code == CONF_REJ {
                    if let Some(opts) = options(data) {
                        for (kind, _) in opts {
                            if kind == LCP_AUTH && self.cfg.require.is_some() {
                                self.down("LCP: the peer refuses to authenticate");
                                return;
                            }
                            self.lcp.rejected.push(kind);
                        }
                    }
                } else if let Some(opts) = options(data) {
                    // A Nak of our magic number means a looped-back link
                    // or a collision: pick another.
                    if opts.iter().any(|(k, _)| *k == LCP_MAGIC) {
                        self.cfg.magic = (self.random() as u32) | 1;
                    }
                    if opts.iter().any(|(k, _)| *k == LCP_AUTH) && self.cfg.require.is_some() {
                        self.down("LCP: the peer will not use the authentication protocol we require");
                        return;
                    }
                }
                self.send_lcp_request(now);
            }
            TERM_REQ => {
                self.send(PROTO_LCP, control(TERM_ACK, id, &[]));
                self.terminated("the peer terminated the link");
            }
            TERM_ACK if self.phase == Phase::Terminate => self.terminated("link terminated"),
            ECHO_REQ if self.lcp.open() => {
                let mut reply = self.cfg.magic.to_be_bytes().to_vec();
                reply.extend_from_slice(data.get(4..).unwrap_or_default());
                self.send(PROTO_LCP, control(ECHO_REP, id, &reply));
            }
            ECHO_REP => self.echo_unanswered = 0,
            DISCARD_REQ | CODE_REJ | PROTO_REJ | TERM_ACK | CONF_ACK | CONF_NAK | CONF_REJ | ECHO_REQ => {}
            _ => {
                // An unknown code: Code-Reject with the packet.
                self.send(PROTO_LCP, control(CODE_REJ, id, p));
            }
        }
    }

    fn lcp_conf_req(&mut self, id: u8, data: &[u8], now: Duration) {
        let Some(opts) = options(data) else { return };
        if self.lcp.open() {
            // Renegotiation: everything above LCP starts again.
            self.layer_down(now);
        }
        let (mut nak, mut rej) = (Vec::new(), Vec::new());
        let mut accm = 0xffff_ffff;
        let mut mru = 1500;
        let mut wants = None;
        for (kind, value) in &opts {
            match (*kind, value.len()) {
                (LCP_MRU, 2) => {
                    let v = be16(value, 0);
                    if v < 64 {
                        nak.extend(option(LCP_MRU, &1500u16.to_be_bytes()));
                    } else {
                        mru = v;
                    }
                }
                (LCP_ACCM, 4) => accm = u32::from_be_bytes([value[0], value[1], value[2], value[3]]),
                (LCP_MAGIC, 4) => {
                    let m = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                    if m == self.cfg.magic || m == 0 {
                        nak.extend(option(LCP_MAGIC, &((self.random() as u32) | 1).to_be_bytes()));
                    }
                }
                (LCP_AUTH, n) if n >= 2 => {
                    let proto = be16(value, 0);
                    let can = self.own_secret(None).is_some();
                    match (proto, value.get(2)) {
                        (PROTO_PAP, None) if can => wants = Some(AuthProto::Pap),
                        (PROTO_CHAP, Some(5)) if can => wants = Some(AuthProto::ChapMd5),
                        _ if can => nak.extend(option(LCP_AUTH, &[0xc2, 0x23, 0x05])),
                        _ => rej.extend(option(*kind, value)),
                    }
                }
                _ => rej.extend(option(*kind, value)),
            }
        }
        if let Some((code, answer)) = configure_answer(rej, nak) {
            self.send(PROTO_LCP, control(code, id, &answer));
        } else {
            self.send(PROTO_LCP, control(CONF_ACK, id, data));
            self.peer_accm = accm;
            self.peer_mru = mru;
            self.peer_requires = wants;
            self.lcp.acked_peer = true;
            if self.lcp.next_send.is_none() && !self.lcp.acked_by_peer {
                // A passive end answers with its own request now.
                self.send_lcp_request(now);
            }
            self.lcp_maybe_open(now);
        }
    }

    fn layer_down(&mut self, now: Duration) {
        self.lcp = Layer::default();
        self.ipcp = Layer::default();
        self.phase = Phase::Establish;
        self.authenticated_to_peer = false;
        self.peer_authenticated = false;
        self.challenge = None;
        self.auth_next = None;
        self.send_lcp_request(now);
    }

    fn lcp_maybe_open(&mut self, now: Duration) {
        if !self.lcp.open() || self.phase != Phase::Establish {
            return;
        }
        self.phase = Phase::Authenticate;
        if let Some(interval) = self.cfg.echo_interval {
            self.echo_next = Some(now + interval);
        }
        match self.cfg.require {
            Some(AuthProto::ChapMd5) => self.send_challenge(now),
            Some(AuthProto::Pap) | None => {}
        }
        if self.cfg.require.is_none() {
            self.peer_authenticated = true;
        }
        match self.peer_requires {
            Some(AuthProto::Pap) => self.send_pap_request(now),
            Some(AuthProto::ChapMd5) => {} // waits for the peer's challenge
            None => self.authenticated_to_peer = true,
        }
        self.maybe_network(now);
    }

    // ---- Authentication ---------------------------------------------------

    /// The name we authenticate ourselves with.
    fn auth_name(&self) -> &str {
        self.cfg.user.as_deref().unwrap_or(&self.cfg.name)
    }

    /// The secret we authenticate ourselves with to `peer` (its name, when
    /// it said one): `password`, or the secrets line for our name and the
    /// peer's (`remotename` first).
    fn own_secret(&self, peer: Option<&str>) -> Option<&str> {
        if let Some(s) = &self.cfg.secret {
            return Some(s);
        }
        let server = self.cfg.remote_name.as_deref().or(peer);
        find_secret(&self.cfg.secrets, self.auth_name(), server)
    }

    /// The secret the peer must know to authenticate to us as `client`
    /// (its bytes as sent): the secrets line for that name and ours.
    fn peer_secret(&self, client: &[u8]) -> Option<String> {
        let client = std::str::from_utf8(client).ok()?;
        find_secret(&self.cfg.secrets, client, Some(&self.cfg.name)).map(str::to_string)
    }

    fn send_pap_request(&mut self, now: Duration) {
        let user = self.auth_name().to_string();
        let secret = self.own_secret(None).unwrap_or_default().to_string();
        let mut d = vec![user.len() as u8];
        d.extend_from_slice(user.as_bytes());
        d.push(secret.len() as u8);
        d.extend_from_slice(secret.as_bytes());
        self.auth_tries += 1;
        if self.auth_tries > MAX_CONFIGURE {
            self.down("PAP: no answer to our Authenticate-Request");
            return;
        }
        self.auth_next = Some(now + RESTART);
        self.send(PROTO_PAP, control(1, self.auth_tries as u8, &d));
    }

    fn send_challenge(&mut self, now: Duration) {
        let mut value = [0u8; 16];
        for chunk in value.chunks_mut(8) {
            chunk.copy_from_slice(&self.random().to_be_bytes());
        }
        let id = (self.random() & 0xff) as u8;
        self.challenge = Some((id, value));
        let mut d = vec![16];
        d.extend_from_slice(&value);
        d.extend_from_slice(self.cfg.name.as_bytes());
        self.send(PROTO_CHAP, control(1, id, &d));
        self.auth_next = Some(now + RESTART * 3);
    }

    fn on_pap(&mut self, p: &[u8], now: Duration) {
        if p.len() < 4 {
            return;
        }
        let (code, id, data) = (p[0], p[1], &p[4..usize::from(be16(p, 2)).min(p.len()).max(4)]);
        match code {
            1 if self.cfg.require == Some(AuthProto::Pap) => {
                let user_len = usize::from(*data.first().unwrap_or(&0));
                let user = data.get(1..1 + user_len).unwrap_or_default();
                let pass_len = usize::from(*data.get(1 + user_len).unwrap_or(&0));
                let pass = data.get(2 + user_len..2 + user_len + pass_len).unwrap_or_default();
                // The password must be the one of the name the peer gave.
                let known = self.peer_secret(user);
                let ok = known.as_deref().is_some_and(|s| same(s.as_bytes(), pass));
                // The peer is not told which of the two was wrong.
                let msg: &[u8] = if ok { b"welcome" } else { b"login incorrect" };
                let mut d = vec![msg.len() as u8];
                d.extend_from_slice(msg);
                self.send(PROTO_PAP, control(if ok { 2 } else { 3 }, id, &d));
                let who = quoted(user);
                match (ok, known) {
                    (true, _) => {
                        self.peer_authenticated = true;
                        self.maybe_network(now);
                    }
                    (false, None) => self.fail(format!(
                        "PAP: the peer authenticated as {who}, for whom there is no secret for us ({:?})",
                        self.cfg.name
                    )),
                    (false, Some(_)) => self.fail(format!("PAP: the peer {who} gave a wrong password")),
                }
            }
            2 if self.peer_requires == Some(AuthProto::Pap) => {
                self.authenticated_to_peer = true;
                self.auth_next = None;
                self.maybe_network(now);
            }
            3 => self.down("PAP: the peer refused our password"),
            _ => {}
        }
    }

    fn on_chap(&mut self, p: &[u8], now: Duration) {
        if p.len() < 4 {
            return;
        }
        let end = usize::from(be16(p, 2)).min(p.len()).max(4);
        let (code, id, data) = (p[0], p[1], &p[4..end]);
        // A Challenge or Response holds a value, then the sender's name;
        // Success and Failure a message.
        let size = usize::from(*data.first().unwrap_or(&0));
        let (value, name) = match data.get(1..1 + size) {
            Some(v) => (v, &data[1 + size..]),
            None if matches!(code, 1 | 2) => return,
            None => (&[][..], &[][..]),
        };
        match code {
            // A challenge for us: answer MD5(id, secret, challenge).
            1 if self.peer_requires == Some(AuthProto::ChapMd5) => {
                // Our own challenge sent back: the answer would be the
                // response to it, which only the peer should be able to
                // give (a reflection attack). pppd refuses too.
                if self.challenge.is_some_and(|(_, ours)| value == ours) {
                    self.fail(format!(
                        "CHAP: the peer ({}) sent our own challenge back to us to answer (a reflection \
                         attack); refusing to answer it",
                        quoted(name)
                    ));
                    return;
                }
                let peer = std::str::from_utf8(name).ok();
                let Some(secret) = self.own_secret(peer).map(str::to_string) else {
                    self.fail(format!("CHAP: no secret to answer the challenge of {}", quoted(name)));
                    return;
                };
                let digest = chap_md5(id, secret.as_bytes(), value);
                let mut d = vec![16];
                d.extend_from_slice(&digest);
                d.extend_from_slice(self.auth_name().as_bytes());
                self.send(PROTO_CHAP, control(2, id, &d));
            }
            // A response to our challenge; one to an earlier challenge (a
            // late answer to a retransmission) is dropped, as pppd does.
            2 => {
                let Some((cid, challenge)) = self.challenge else { return };
                if id != cid {
                    return;
                }
                // The response must come from the name whose secret it uses.
                let who = quoted(name);
                let Some(secret) = self.peer_secret(name) else {
                    self.send(PROTO_CHAP, control(4, id, b"login incorrect"));
                    self.fail(format!(
                        "CHAP: the peer authenticated as {who}, for whom there is no secret for us ({:?})",
                        self.cfg.name
                    ));
                    return;
                };
                if same(value, &chap_md5(cid, secret.as_bytes(), &challenge)) {
                    self.send(PROTO_CHAP, control(3, id, b"welcome"));
                    self.peer_authenticated = true;
                    self.auth_next = None;
                    self.maybe_network(now);
                } else {
                    self.send(PROTO_CHAP, control(4, id, b"login incorrect"));
                    self.fail(format!("CHAP: the peer {who} gave a wrong response"));
                }
            }
            3 if self.peer_requires == Some(AuthProto::ChapMd5) => {
                self.authenticated_to_peer = true;
                self.maybe_network(now);
            }
            4 => self.down("CHAP: the peer refused our response"),
            _ => {}
        }
    }

    fn maybe_network(&mut self, now: Duration) {
        if self.phase == Phase::Authenticate && self.peer_authenticated && self.authenticated_to_peer {
            self.phase = Phase::Network;
            self.auth_next = None;
            self.send_ipcp_request(now);
        }
    }

    // ---- IPCP -------------------------------------------------------------

    fn send_ipcp_request(&mut self, now: Duration) {
        let Some(id) = self.ipcp.next_request(now, RESTART, MAX_CONFIGURE) else {
            self.down("IPCP: the peer never acknowledged our Configure-Request");
            return;
        };
        let addr = self.our_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let opts =
            if self.ipcp.rejected.contains(&IPCP_ADDRESS) { Vec::new() } else { option(IPCP_ADDRESS, &addr.octets()) };
        let p = control(CONF_REQ, id, &opts);
        self.send(PROTO_IPCP, p);
    }

    fn on_ipcp(&mut self, p: &[u8], now: Duration) {
        if self.phase != Phase::Network {
            return;
        }
        let Some((code, id, data)) = control_packet(p) else { return };
        match code {
            CONF_REQ => {
                let Some(opts) = options(data) else { return };
                let (mut nak, mut rej) = (Vec::new(), Vec::new());
                let mut peer = None;
                for (kind, value) in &opts {
                    match (*kind, value.len()) {
                        (IPCP_ADDRESS, 4) => {
                            let a = Ipv4Addr::new(value[0], value[1], value[2], value[3]);
                            match (a.is_unspecified(), self.cfg.remote_ip) {
                                (true, Some(r)) => nak.extend(option(IPCP_ADDRESS, &r.octets())),
                                (true, None) => rej.extend(option(*kind, value)),
                                (false, Some(r)) if r != a => nak.extend(option(IPCP_ADDRESS, &r.octets())),
                                (false, _) => peer = Some(a),
                            }
                        }
                        _ => rej.extend(option(*kind, value)),
                    }
                }
                if let Some((code, answer)) = configure_answer(rej, nak) {
                    self.send(PROTO_IPCP, control(code, id, &answer));
                } else {
                    self.send(PROTO_IPCP, control(CONF_ACK, id, data));
                    self.peer_ip = peer.or(self.cfg.remote_ip);
                    self.ipcp.acked_peer = true;
                    self.ipcp_maybe_open();
                }
            }
            CONF_ACK if id == self.ipcp.id => {
                self.ipcp.acked();
                self.ipcp_maybe_open();
            }
            CONF_NAK if id == self.ipcp.id => {
                if let Some(opts) = options(data) {
                    for (kind, value) in opts {
                        if kind == IPCP_ADDRESS && value.len() == 4 {
                            self.our_ip = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3]));
                        }
                    }
                }
                self.send_ipcp_request(now);
            }
            CONF_REJ if id == self.ipcp.id => {
                if let Some(opts) = options(data) {
                    self.ipcp.rejected.extend(opts.iter().map(|(k, _)| *k));
                }
                self.send_ipcp_request(now);
            }
            TERM_REQ => self.send(PROTO_IPCP, control(TERM_ACK, id, &[])),
            _ => {}
        }
    }

    fn ipcp_maybe_open(&mut self) {
        if !self.ipcp.open() || self.up {
            return;
        }
        match (self.our_ip, self.peer_ip) {
            (Some(local), Some(remote)) => {
                self.up = true;
                self.events.push_back(Event::Up { local, remote, mtu: self.peer_mru });
            }
            _ => self.down("IPCP: no addresses were agreed"),
        }
    }

    // ---- Frames and data --------------------------------------------------

    /// A frame from the peer (HDLC payload, FCS checked).
    pub fn on_frame(&mut self, frame: &[u8], now: Duration) {
        if self.phase == Phase::Dead {
            return;
        }
        // Address and control may be compressed away; the protocol field
        // may be one byte (odd) or two.
        let mut f = frame;
        if f.len() >= 2 && f[0] == 0xff && f[1] == 0x03 {
            f = &f[2..];
        }
        let (proto, info) = match f {
            [p, rest @ ..] if p & 1 == 1 => (u16::from(*p), rest),
            [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
            _ => return,
        };
        match proto {
            PROTO_LCP => self.on_lcp(info, now),
            PROTO_PAP if self.phase == Phase::Authenticate => self.on_pap(info, now),
            PROTO_CHAP if matches!(self.phase, Phase::Authenticate | Phase::Network) => self.on_chap(info, now),
            PROTO_IPCP => self.on_ipcp(info, now),
            PROTO_IP if self.up => self.events.push_back(Event::Ip(info.to_vec())),
            PROTO_IP | PROTO_PAP | PROTO_CHAP => {}
            other if self.lcp.open() => {
                // A protocol we do not speak (IPv6CP, CCP…): Protocol-Reject.
                let mut d = other.to_be_bytes().to_vec();
                d.extend_from_slice(&info[..info.len().min(usize::from(self.peer_mru).saturating_sub(6))]);
                self.lcp.id = self.lcp.id.wrapping_add(1);
                let p = control(PROTO_REJ, self.lcp.id, &d);
                self.send(PROTO_LCP, p);
            }
            _ => {}
        }
    }

    /// An IPv4 packet to send to the peer (dropped unless the link is up).
    pub fn send_ip(&mut self, packet: &[u8]) {
        if self.up && self.phase != Phase::Dead {
            self.send(PROTO_IP, packet.to_vec());
        }
    }

    /// Retransmissions, echoes, give-ups. A finished link sends nothing.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.phase == Phase::Dead {
            return;
        }
        let due = |t: Option<Duration>| t.is_some_and(|t| t <= now);
        if due(self.term_next) {
            if self.term_tries >= 2 {
                self.terminated("link terminated (no Terminate-Ack)");
                return;
            }
            self.term_tries += 1;
            self.term_next = Some(now + RESTART);
            self.send(PROTO_LCP, control(TERM_REQ, 0xee, b"bye"));
            return;
        }
        if due(self.lcp.next_send) {
            self.send_lcp_request(now);
        }
        if due(self.ipcp.next_send) {
            self.send_ipcp_request(now);
        }
        if due(self.auth_next) {
            match (self.peer_requires, self.authenticated_to_peer, self.cfg.require, self.peer_authenticated) {
                (Some(AuthProto::Pap), false, _, _) => self.send_pap_request(now),
                (_, _, Some(AuthProto::ChapMd5), false) => {
                    self.auth_tries += 1;
                    if self.auth_tries > MAX_CONFIGURE {
                        self.down("CHAP: no response to our challenges");
                    } else {
                        self.send_challenge(now);
                    }
                }
                _ => self.auth_next = None,
            }
        }
        if due(self.echo_next) {
            if self.echo_unanswered >= self.cfg.echo_failure {
                self.down("LCP: the peer stopped answering Echo-Requests");
                return;
            }
            self.echo_unanswered += 1;
            let id = (self.random() & 0xff) as u8;
            self.send(PROTO_LCP, control(ECHO_REQ, id, &self.cfg.magic.to_be_bytes()));
            self.echo_next = self.cfg.echo_interval.map(|i| now + i);
        }
    }

    /// Ends the link: Terminate-Request (sent again once), then down.
    pub fn terminate(&mut self, now: Duration, why: &str) {
        if matches!(self.phase, Phase::Dead | Phase::Terminate) {
            return;
        }
        tracing::info!("terminating: {why}");
        self.phase = Phase::Terminate;
        self.term_tries = 1;
        self.term_next = Some(now + RESTART);
        self.send(PROTO_LCP, control(TERM_REQ, 0xee, why.as_bytes()));
    }
}

/// CHAP with MD5 (RFC 1994 §4.1): MD5 over the identifier, the secret and
/// the challenge.
pub fn chap_md5(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ppp::hdlc;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 100);

    fn secret(client: &str, server: &str, secret: &str) -> Secret {
        Secret { client: client.into(), server: server.into(), secret: secret.into() }
    }

    /// A server "lns" that alice may authenticate to with "s3cr3t".
    fn server(require: Option<AuthProto>) -> SessionConfig {
        SessionConfig {
            require,
            name: "lns".into(),
            secrets: vec![secret("alice", "lns", "s3cr3t")],
            local_ip: Some(SERVER),
            remote_ip: Some(CLIENT),
            magic: 0x1111_1111,
            ..SessionConfig::default()
        }
    }

    fn client(secret: &str) -> SessionConfig {
        SessionConfig {
            user: Some("alice".into()),
            secret: Some(secret.into()),
            magic: 0x2222_2222,
            ..SessionConfig::default()
        }
    }

    /// What reached one side other than frames: link ups, IP packets,
    /// reasons for going down.
    type Seen = (Vec<Event>, Vec<Vec<u8>>, Vec<String>);

    /// Two sessions joined by an async HDLC line: every frame is encoded
    /// with the ACCM asked for and decoded on the other side.
    struct Wire {
        a: Session,
        b: Session,
        decoders: (hdlc::Decoder, hdlc::Decoder),
        now: Duration,
        seen: [Seen; 2],
        /// Raw LCP/NCP frames each side sent, for inspection.
        sent: [Vec<Vec<u8>>; 2],
    }

    impl Wire {
        fn new(a: SessionConfig, b: SessionConfig) -> Wire {
            let mut w = Wire {
                a: Session::new(a),
                b: Session::new(b),
                decoders: (hdlc::Decoder::new(), hdlc::Decoder::new()),
                now: Duration::ZERO,
                seen: Default::default(),
                sent: Default::default(),
            };
            w.a.start(w.now);
            w.b.start(w.now);
            w
        }

        /// Moves events until both sides are quiet; returns how many frames
        /// crossed.
        fn pump(&mut self) -> usize {
            let mut crossed = 0;
            for _ in 0..1000 {
                let mut moved = false;
                for side in 0..2 {
                    let (from, to, dec) = if side == 0 {
                        (&mut self.a, &mut self.b, &mut self.decoders.1)
                    } else {
                        (&mut self.b, &mut self.a, &mut self.decoders.0)
                    };
                    while let Some(ev) = from.poll_event() {
                        moved = true;
                        match ev {
                            Event::Send(frame, accm) => {
                                let mut wire = Vec::new();
                                hdlc::encode(&frame, accm, &mut wire);
                                for b in &wire[1..wire.len() - 1] {
                                    assert!(
                                        *b >= 0x20 || accm & (1 << b) == 0,
                                        "byte {b:#x} not escaped under ACCM {accm:#x}"
                                    );
                                }
                                self.sent[side].push(frame);
                                for f in dec.feed(&wire) {
                                    to.on_frame(&f.expect("a frame that decodes"), self.now);
                                    crossed += 1;
                                }
                            }
                            Event::Ip(p) => self.seen[side].1.push(p),
                            Event::Down { why, .. } => self.seen[side].2.push(why),
                            up => self.seen[side].0.push(up),
                        }
                    }
                }
                if !moved {
                    return crossed;
                }
            }
            panic!("the sessions never went quiet");
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.pump();
        }
    }

    fn up(local: Ipv4Addr, remote: Ipv4Addr) -> Event {
        Event::Up { local, remote, mtu: 1500 }
    }

    #[test]
    fn chap_md5_is_md5_of_id_secret_and_challenge() {
        let challenge: Vec<u8> = (0..16).collect();
        let want = [0x82, 0x16, 0x43, 0x66, 0x5b, 0x43, 0x03, 0x59, 0xe5, 0x2a, 0xc5, 0x24, 0xd2, 0x9c, 0x8f, 0x95];
        assert_eq!(chap_md5(7, b"secret", &challenge), want);
    }

    #[test]
    fn chap_then_ipcp_assigns_the_client_its_address_and_ip_flows_both_ways() {
        let mut w = Wire::new(server(Some(AuthProto::ChapMd5)), client("s3cr3t"));
        w.pump();
        assert_eq!(w.seen[0].0, vec![up(SERVER, CLIENT)]);
        assert_eq!(w.seen[1].0, vec![up(CLIENT, SERVER)], "the client learned its address from the Nak");
        let chap: Vec<_> = w.sent[0].iter().filter(|f| f[2..4] == PROTO_CHAP.to_be_bytes()).collect();
        assert_eq!(chap.first().map(|f| f[4]), Some(1), "the server challenged");
        assert_eq!(chap.last().map(|f| f[4]), Some(3), "and said Success");
        w.a.send_ip(b"\x45to client");
        w.b.send_ip(b"\x45to server");
        w.pump();
        assert_eq!(w.seen[1].1, vec![b"\x45to client".to_vec()]);
        assert_eq!(w.seen[0].1, vec![b"\x45to server".to_vec()]);
        // After LCP, data goes with the ACCM the peer asked for (none).
        let ip = w.sent[0].iter().find(|f| f[2..4] == PROTO_IP.to_be_bytes()).expect("an IP frame");
        assert_eq!(&ip[4..], b"\x45to client");
        w.b.terminate(w.now, "user request");
        w.pump();
        assert!(w.a.is_dead() && w.b.is_dead());
        assert_eq!(w.seen[0].2, vec!["the peer terminated the link".to_string()]);
        assert_eq!(w.seen[1].2, vec!["link terminated".to_string()]);
    }

    #[test]
    fn pap_works_and_a_wrong_secret_ends_the_link() {
        let mut w = Wire::new(server(Some(AuthProto::Pap)), client("s3cr3t"));
        w.pump();
        assert_eq!(w.seen[1].0, vec![up(CLIENT, SERVER)]);
        let mut w = Wire::new(server(Some(AuthProto::Pap)), client("guess"));
        w.pump();
        w.advance(RESTART * 3);
        assert!(w.seen[0].0.is_empty() && w.seen[1].0.is_empty(), "no link with a wrong password");
        assert!(w.b.is_dead(), "the client gave up: {:?}", w.seen[1].2);
        assert_eq!(w.seen[1].2, vec!["PAP: the peer refused our password".to_string()]);
        let mut w = Wire::new(server(Some(AuthProto::ChapMd5)), client("guess"));
        w.pump();
        assert_eq!(w.seen[1].2, vec!["CHAP: the peer refused our response".to_string()]);
    }

    #[test]
    fn a_client_without_credentials_rejects_authentication_and_the_server_gives_up() {
        let mut w = Wire::new(server(Some(AuthProto::ChapMd5)), SessionConfig { magic: 3, ..SessionConfig::default() });
        w.pump();
        assert_eq!(w.seen[0].2, vec!["LCP: the peer refuses to authenticate".to_string()]);
    }

    /// A frame as it comes off the line: address, control, protocol, packet.
    fn frame(proto: u16, code: u8, id: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff, 0x03];
        f.extend_from_slice(&proto.to_be_bytes());
        f.extend(control(code, id, data));
        f
    }

    /// What a session wants sent, and the reasons it went down.
    fn drain(s: &mut Session) -> (Vec<Vec<u8>>, Vec<(String, bool)>) {
        let (mut sent, mut down) = (Vec::new(), Vec::new());
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Send(f, _) => sent.push(f),
                Event::Down { why, clean } => down.push((why, clean)),
                _ => {}
            }
        }
        (sent, down)
    }

    /// The first frame of `proto` and `code` in `sent`.
    fn find(sent: &[Vec<u8>], proto: u16, code: u8) -> Option<&Vec<u8>> {
        sent.iter().find(|f| f[2..4] == proto.to_be_bytes() && f[4] == code)
    }

    /// Opens LCP with `s` as a peer whose Configure-Request carries
    /// `options`; returns what `s` sent.
    fn open_lcp(s: &mut Session, options: &[u8]) -> Vec<Vec<u8>> {
        s.start(Duration::ZERO);
        let (sent, _) = drain(s);
        let ours = find(&sent, PROTO_LCP, CONF_REQ).expect("a Configure-Request").clone();
        s.on_frame(&frame(PROTO_LCP, CONF_REQ, 1, options), Duration::ZERO);
        s.on_frame(&frame(PROTO_LCP, CONF_ACK, ours[5], &ours[8..]), Duration::ZERO);
        let (sent, down) = drain(s);
        assert_eq!(down, vec![], "LCP opens");
        assert_eq!(find(&sent, PROTO_LCP, CONF_ACK).map(|f| &f[8..]), Some(options), "our options are acked");
        sent
    }

    /// (id, value) of the CHAP Challenge in `sent`.
    fn challenge_in(sent: &[Vec<u8>]) -> (u8, Vec<u8>) {
        let c = find(sent, PROTO_CHAP, 1).expect("a CHAP Challenge");
        assert_eq!(c[8], 16);
        (c[5], c[9..25].to_vec())
    }

    const MAGIC: [u8; 6] = [LCP_MAGIC, 6, 0x66, 0x66, 0x66, 0x66];

    #[test]
    fn a_challenge_sent_back_to_its_sender_is_refused_not_answered() {
        // The server knows the shared secret as its own too (`password`), so
        // it could answer a challenge with it: the reflection attack lets a
        // client without the secret make it answer its own challenge, then
        // replay that answer as the client's response.
        let mut s = Session::new(SessionConfig { secret: Some("s3cr3t".into()), ..server(Some(AuthProto::ChapMd5)) });
        // The attacker asks the server to authenticate itself with CHAP too.
        let sent = open_lcp(&mut s, &[&[LCP_AUTH, 5, 0xc2, 0x23, 5][..], &MAGIC].concat());
        let (id, value) = challenge_in(&sent);
        s.on_frame(&frame(PROTO_CHAP, 1, id, &[&[16][..], &value, b"mallory"].concat()), Duration::ZERO);
        let (sent, down) = drain(&mut s);
        let answer = find(&sent, PROTO_CHAP, 2).cloned();
        if let Some(answer) = &answer {
            // The attack's second half: the server's answer as our response.
            let response = [&answer[8..25], b"alice"].concat();
            s.on_frame(&frame(PROTO_CHAP, 2, id, &response), Duration::ZERO);
        }
        let (after, _) = drain(&mut s);
        assert_eq!(answer, None, "the server answered its own challenge");
        assert_eq!(find(&after, PROTO_CHAP, 3), None, "the replayed answer got in");
        assert!(find(&sent, PROTO_LCP, TERM_REQ).is_some(), "the server closes the link: {sent:02x?}");
        assert!(s.is_dead());
        // A finished link's timers, and IP given to it, send nothing more.
        for secs in 1..40 {
            s.handle_timeout(Duration::from_secs(secs));
            s.send_ip(&[0x45, 0, 0, 20]);
        }
        assert_eq!((drain(&mut s).0, s.next_timeout()), (vec![], None), "a dead session is silent");
        assert_eq!(down.len(), 1, "{down:?}");
        let (why, clean) = &down[0];
        assert!(why.contains("our own challenge") && why.contains("reflection") && !clean, "{why}");
        // A different challenge from the same peer is answered.
        let mut s = Session::new(SessionConfig { secret: Some("s3cr3t".into()), ..server(Some(AuthProto::ChapMd5)) });
        let sent = open_lcp(&mut s, &[&[LCP_AUTH, 5, 0xc2, 0x23, 5][..], &MAGIC].concat());
        let (id, mut value) = challenge_in(&sent);
        value[0] ^= 1;
        s.on_frame(&frame(PROTO_CHAP, 1, id, &[&[16][..], &value, b"alice"].concat()), Duration::ZERO);
        let (sent, _) = drain(&mut s);
        let answer = find(&sent, PROTO_CHAP, 2).expect("an answer");
        assert_eq!(answer[9..25], chap_md5(id, b"s3cr3t", &value), "{answer:02x?}");
        assert_eq!(&answer[25..], b"lns", "the server answers with its name");
    }

    #[test]
    fn a_chap_response_must_come_from_the_name_its_secret_belongs_to() {
        // Alice's secret, under another name.
        let respond = |name: &[u8]| {
            let mut s = Session::new(SessionConfig {
                secrets: vec![secret("alice", "lns", "s3cr3t"), secret("bob", "other-server", "s3cr3t")],
                ..server(Some(AuthProto::ChapMd5))
            });
            let sent = open_lcp(&mut s, &MAGIC);
            let (id, value) = challenge_in(&sent);
            let digest = chap_md5(id, b"s3cr3t", &value);
            s.on_frame(&frame(PROTO_CHAP, 2, id, &[&[16][..], &digest, name].concat()), Duration::ZERO);
            let (sent, down) = drain(&mut s);
            (find(&sent, PROTO_CHAP, 3).is_some(), find(&sent, PROTO_CHAP, 4).is_some(), s.is_dead(), down)
        };
        let (success, failure, dead, down) = respond(b"alice");
        assert!(success && !failure && !dead, "alice gets in: {down:?}");
        for name in [&b"mallory"[..], b"bob", b"", b"alice\n", b"ALICE"] {
            let (success, failure, dead, down) = respond(name);
            assert!(!success && failure && dead, "{name:?} got in");
            let why = &down[0].0;
            assert!(why.contains(&quoted(name)) && why.contains("no secret"), "{why}");
        }
    }

    #[test]
    fn a_pap_request_must_come_from_the_name_its_password_belongs_to() {
        let request = |user: &[u8], pass: &[u8]| {
            let mut s = Session::new(server(Some(AuthProto::Pap)));
            open_lcp(&mut s, &MAGIC);
            let d = [&[user.len() as u8][..], user, &[pass.len() as u8], pass].concat();
            s.on_frame(&frame(PROTO_PAP, 1, 7, &d), Duration::ZERO);
            let (sent, down) = drain(&mut s);
            let answer = sent.iter().find(|f| f[2..4] == PROTO_PAP.to_be_bytes()).map(|f| f[4]);
            (answer, down)
        };
        assert_eq!(request(b"alice", b"s3cr3t"), (Some(2), vec![]), "alice gets in");
        let (answer, down) = request(b"mallory", b"s3cr3t");
        assert_eq!(answer, Some(3), "a Nak");
        assert!(down[0].0.contains("\"mallory\"") && down[0].0.contains("no secret") && !down[0].1, "{down:?}");
        let (answer, down) = request(b"alice", b"guess");
        assert_eq!(answer, Some(3), "a Nak");
        assert!(down[0].0.contains("wrong password"), "{down:?}");
    }

    #[test]
    fn the_wire_rejects_a_client_with_the_secret_but_another_name() {
        let mallory = SessionConfig { user: Some("mallory".into()), ..client("s3cr3t") };
        for proto in [AuthProto::ChapMd5, AuthProto::Pap] {
            let mut w = Wire::new(server(Some(proto)), mallory.clone());
            w.pump();
            assert!(w.seen[0].0.is_empty() && w.seen[1].0.is_empty(), "{proto:?}: no link for mallory");
            assert!(w.a.is_dead(), "{proto:?}: the server ended the link");
            assert!(w.seen[0].2[0].contains("\"mallory\""), "{proto:?}: {:?}", w.seen[0].2);
        }
    }

    #[test]
    fn secrets_are_chosen_as_pppd_chooses_them() {
        let secrets = [
            secret("*", "*", "any"),
            secret("*", "lns", "anyone-to-lns"),
            secret("alice", "*", "alice-anywhere"),
            secret("alice", "lns", "alice-to-lns"),
            secret("alice", "lns", "a second line"),
        ];
        assert_eq!(find_secret(&secrets, "alice", Some("lns")), Some("alice-to-lns"));
        assert_eq!(find_secret(&secrets, "alice", Some("other")), Some("alice-anywhere"));
        assert_eq!(find_secret(&secrets, "bob", Some("lns")), Some("anyone-to-lns"));
        assert_eq!(find_secret(&secrets, "bob", Some("other")), Some("any"));
        assert_eq!(find_secret(&secrets, "alice", None), Some("alice-anywhere"));
        assert_eq!(find_secret(&secrets[3..], "bob", Some("lns")), None);
        assert_eq!(find_secret(&secrets[3..], "alice", Some("other")), None);
    }

    #[test]
    fn pppds_configure_request_gets_pfc_and_acfc_rejected_then_acked() {
        // What pppd sends first: ACCM 0, CHAP-MD5, magic, PFC, ACFC.
        let req = [
            0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x19, 0x02, 0x06, 0x00, 0x00, 0x00, 0x00, 0x03, 0x05, 0xc2, 0x23,
            0x05, 0x05, 0x06, 0x5e, 0x63, 0x0a, 0xb8, 0x07, 0x02, 0x08, 0x02,
        ];
        let mut s = Session::new(client("s3cr3t"));
        s.start(Duration::ZERO);
        let _our_request = s.poll_event();
        s.on_frame(&req, Duration::ZERO);
        assert_eq!(
            s.poll_event(),
            Some(Event::Send(
                vec![0xff, 0x03, 0xc0, 0x21, 0x04, 0x01, 0x00, 0x08, 0x07, 0x02, 0x08, 0x02],
                0xffff_ffff
            )),
            "Configure-Reject of exactly PFC and ACFC"
        );
        let mut again = req[..25].to_vec();
        again[5] = 2;
        again[7] = 0x15;
        s.on_frame(&again, Duration::ZERO);
        let Some(Event::Send(ack, _)) = s.poll_event() else { panic!("an answer") };
        assert_eq!(ack[4..6], [CONF_ACK, 2]);
        assert_eq!(ack[8..], again[8..], "the Ack repeats the options");
    }

    #[test]
    fn malformed_and_unknown_packets_are_dropped_or_rejected_never_trusted() {
        let mut w = Wire::new(server(None), client("x"));
        w.pump();
        assert_eq!(w.seen[1].0, vec![up(CLIENT, SERVER)]);
        let s = &mut w.b;
        let bad: [&[u8]; 7] = [
            &[],
            &[0xff, 0x03],
            &[0xff, 0x03, 0xc0, 0x21, 0x01],
            &[0xff, 0x03, 0xc0, 0x21, 0x01, 0x09, 0x00, 0x40, 0x02, 0x06],
            &[0xff, 0x03, 0xc0, 0x21, 0x01, 0x09, 0x00, 0x06, 0x02, 0x00],
            &[0xff, 0x03, 0xc0, 0x21, 0x01, 0x09, 0x00, 0x02],
            &[0xff, 0x03, 0x80, 0x21, 0x01, 0x09, 0x00, 0x0a, 0x03, 0x09, 0, 0, 0, 0],
        ];
        for frame in bad {
            s.on_frame(frame, Duration::ZERO);
            assert_eq!(s.poll_event(), None, "{frame:02x?} is dropped silently");
        }
        assert!(!s.is_dead());
        // An unknown LCP code is Code-Rejected; an unknown protocol is
        // Protocol-Rejected, with the protocol named.
        s.on_frame(&[0xff, 0x03, 0xc0, 0x21, 0x42, 0x05, 0x00, 0x04], Duration::ZERO);
        let Some(Event::Send(f, _)) = s.poll_event() else { panic!("a Code-Reject") };
        assert_eq!(f[4..6], [CODE_REJ, 0x05]);
        s.on_frame(&[0xff, 0x03, 0x80, 0x57, 0x01, 0x01, 0x00, 0x04], Duration::ZERO);
        let Some(Event::Send(f, _)) = s.poll_event() else { panic!("a Protocol-Reject") };
        assert_eq!((f[4], &f[8..10]), (PROTO_REJ, &[0x80u8, 0x57][..]));
        // Address and control may be compressed away, and the protocol
        // field sent in one byte.
        s.on_frame(&[0x21, 0x45, 0x00], Duration::ZERO);
        assert_eq!(s.poll_event(), Some(Event::Ip(vec![0x45, 0x00])));
        // Echo-Request: answered with our magic number.
        s.on_frame(&[0xff, 0x03, 0xc0, 0x21, 0x09, 0x33, 0x00, 0x08, 1, 2, 3, 4], Duration::ZERO);
        let Some(Event::Send(f, _)) = s.poll_event() else { panic!("an Echo-Reply") };
        assert_eq!(f[4..], [ECHO_REP, 0x33, 0x00, 0x08, 0x22, 0x22, 0x22, 0x22]);
    }

    #[test]
    fn a_looped_back_magic_number_is_naked() {
        let mut s = Session::new(client("x"));
        s.start(Duration::ZERO);
        let Some(Event::Send(ours, _)) = s.poll_event() else { panic!("our request") };
        // Our own request comes back to us, as on a looped-back line.
        s.on_frame(&ours, Duration::ZERO);
        let Some(Event::Send(f, _)) = s.poll_event() else { panic!("an answer") };
        assert_eq!(f[4], CONF_NAK);
        assert_eq!(f[8], LCP_MAGIC);
    }

    #[test]
    fn echo_requests_that_go_unanswered_bring_the_link_down() {
        let mut a = server(None);
        a.echo_interval = Some(Duration::from_secs(5));
        a.echo_failure = 2;
        let mut w = Wire::new(a, client("x"));
        w.pump();
        w.advance(Duration::from_secs(5));
        w.advance(Duration::from_secs(5));
        assert!(!w.a.is_dead(), "echoes are answered");
        // Cut the line: the client stops answering.
        w.b = Session::new(client("x"));
        for _ in 0..4 {
            w.now += Duration::from_secs(5);
            w.a.handle_timeout(w.now);
            while w.a.poll_event().is_some_and(|e| !matches!(e, Event::Down { .. })) {}
        }
        assert!(w.a.is_dead());
    }

    #[test]
    fn lcp_restart_and_max_configure_decide_when_an_unanswered_link_is_given_up() {
        let cfg = SessionConfig { lcp_restart: Duration::from_millis(500), lcp_max_configure: 3, ..client("x") };
        let mut s = Session::new(cfg);
        s.start(Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut requests = 0;
        let mut down_at = None;
        while now < Duration::from_secs(5) && down_at.is_none() {
            while let Some(e) = s.poll_event() {
                match e {
                    Event::Send(..) => requests += 1,
                    Event::Down { .. } => down_at = Some(now),
                    Event::Up { .. } | Event::Ip(_) => {}
                }
            }
            now += Duration::from_millis(100);
            s.handle_timeout(now);
        }
        assert_eq!(requests, 3, "three requests, 500 ms apart");
        assert_eq!(down_at, Some(Duration::from_millis(1500)), "given up when the third went unanswered");
    }

    #[test]
    fn silent_waits_and_passive_keeps_waiting_after_its_requests_run_out() {
        let mut s = Session::new(SessionConfig { silent: true, ..client("x") });
        s.start(Duration::ZERO);
        assert_eq!(s.poll_event(), None, "a silent end sends nothing first");
        let mut p = Session::new(SessionConfig { passive: true, ..client("x") });
        p.start(Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..20 {
            now += RESTART;
            p.handle_timeout(now);
        }
        let sent = std::iter::from_fn(|| p.poll_event()).count();
        assert_eq!(sent, MAX_CONFIGURE as usize, "requests stop after the limit");
        assert!(!p.is_dead(), "a passive end waits for the peer");
        let mut w = Wire { a: Session::new(server(None)), b: p, ..Wire::new(server(None), client("x")) };
        w.now = now;
        w.a.start(now);
        w.pump();
        assert_eq!(w.seen[1].0, vec![up(CLIENT, SERVER)], "and comes up when the peer appears");
    }
}
