//! Scenario files: what each key means is documented in
//! `scenarios/README.md`; this module reads them and says precisely what
//! is wrong with a broken one (file, line, key, what is allowed).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::nat::Profile;
use crate::router::Shape;

/// A VPN family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// PPTP: pptp to pptpd, our PPP peer on both ends.
    Pptp,
    /// L2TP: an xl2tpd LAC to an xl2tpd LNS.
    L2tp,
    /// L2TP inside an IKEv2 CHILD_SA narrowed to udp/1701.
    L2tpIpsec,
    /// IKEv2 with NAT-T (strongSwan).
    Ikev2,
    /// IKEv1 main mode with NAT-T (strongSwan).
    Ikev1,
    /// Raw ESP (IP protocol 50) between scripted peers.
    Esp,
    /// OpenVPN over UDP.
    Openvpn,
    /// OpenVPN over TCP.
    OpenvpnTcp,
    /// WireGuard: wireguard-go on both ends.
    Wireguard,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 9] = [
        Family::Pptp,
        Family::L2tp,
        Family::L2tpIpsec,
        Family::Ikev2,
        Family::Ikev1,
        Family::Esp,
        Family::Openvpn,
        Family::OpenvpnTcp,
        Family::Wireguard,
    ];

    /// The name used in files and test names.
    pub fn name(self) -> &'static str {
        match self {
            Family::Pptp => "pptp",
            Family::L2tp => "l2tp",
            Family::L2tpIpsec => "l2tp-ipsec",
            Family::Ikev2 => "ikev2",
            Family::Ikev1 => "ikev1",
            Family::Esp => "esp",
            Family::Openvpn => "openvpn",
            Family::OpenvpnTcp => "openvpn-tcp",
            Family::Wireguard => "wireguard",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A passthrough mode of the Rust NAT: the preset a scenario runs it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `passthrough-off`.
    Off,
    /// `naive`: what cheap firmware does.
    Naive,
    /// `full`: every ALG.
    Full,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 3] = [Mode::Off, Mode::Naive, Mode::Full];

    /// The name used in files and test names.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Naive => "naive",
            Mode::Full => "full",
        }
    }

    /// The Rust NAT preset.
    pub fn preset(self) -> &'static str {
        match self {
            Mode::Off => "passthrough-off",
            Mode::Naive => "naive",
            Mode::Full => "full",
        }
    }
}

fn all_modes() -> Vec<Mode> {
    Mode::ALL.to_vec()
}

/// A scenario file as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The VPN family.
    pub family: Family,
    /// The case name; the file's name without `.toml` when absent.
    #[serde(default)]
    pub case: Option<String>,
    /// One or two sentences for the report.
    pub description: String,
    /// The Rust NAT modes this story is played in.
    #[serde(default = "all_modes")]
    pub modes: Vec<Mode>,
    /// Hosts and addressing.
    #[serde(default)]
    pub topology: TopologyDoc,
    /// Profile fields laid over each mode's preset (Rust NAT only).
    #[serde(default)]
    pub router: toml::Table,
    /// Options of the VPN endpoints.
    #[serde(default)]
    pub endpoints: Endpoints,
    /// What happens, in order.
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
    /// What must be seen: keys `off`, `naive`, `full`, `rust` (every mode
    /// without its own), `linux`, `external`.
    pub expect: BTreeMap<ExpectKey, Expect>,
}

/// Hosts and addressing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyDoc {
    /// Clients behind the router.
    pub clients: usize,
    /// Servers on the WAN; clients are spread over them in turn.
    pub servers: usize,
    /// The router's LAN address and prefix.
    pub lan: Ipv4Net,
    /// Clients behind a second (Linux) NAT on the router's LAN.
    pub double_nat: bool,
    /// A hostile WAN host beside the servers.
    pub intruder: bool,
}

impl Default for TopologyDoc {
    fn default() -> TopologyDoc {
        let s = Shape::new(1);
        TopologyDoc { clients: s.clients, servers: s.servers, lan: s.lan, double_nat: false, intruder: false }
    }
}

impl TopologyDoc {
    /// The lab shape.
    pub fn shape(&self) -> Shape {
        Shape {
            clients: self.clients,
            servers: self.servers,
            lan: self.lan,
            double_nat: self.double_nat,
            intruder: self.intruder,
            ..Shape::new(self.clients)
        }
    }
}

/// IPsec authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpsecAuth {
    /// A pre-shared key.
    #[default]
    Psk,
    /// Certificates from a throwaway CA (large IKE_AUTH messages, IP
    /// fragments through the NAT).
    Certificates,
}

impl IpsecAuth {
    /// The name used in files (`psk`, `certificates`).
    pub fn name(self) -> &'static str {
        match self {
            IpsecAuth::Psk => "psk",
            IpsecAuth::Certificates => "certificates",
        }
    }
}

/// The L2TP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lns {
    /// xl2tpd.
    #[default]
    Xl2tpd,
    /// A scripted LNS that sends every answer from port 1701 to port 1701,
    /// whatever port the SCCRQ came from.
    #[serde(rename = "replies-to-1701")]
    RepliesTo1701,
    /// A scripted LNS that answers each tunnel from a new port (40000 up).
    NewPort,
}

/// Options of the VPN endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    /// Seconds a client may take to bring its tunnel up.
    pub connect_timeout_s: u64,
    /// PPTP: every client draws the same Call ID.
    pub same_call_id: bool,
    /// IPsec: authentication.
    pub auth: IpsecAuth,
    /// The clients' keepalive interval, seconds: IPsec NAT-T keepalives,
    /// WireGuard `PersistentKeepalive`, OpenVPN `ping` (0: none).
    pub keepalive_s: u64,
    /// OpenVPN: the server accepts a client's packets from a new address or
    /// port mid-session (`float`).
    pub float: bool,
    /// IPsec with certificates: IKEv2 fragmentation (RFC 7383) on, so
    /// IKE_AUTH crosses in IKE fragments instead of IP fragments.
    pub ike_fragmentation: bool,
    /// IKEv2: the client offers MOBIKE (RFC 4555), as strongSwan does by
    /// default.
    pub mobike: bool,
    /// IPsec: the client's dead peer detection, seconds without traffic
    /// from the server before an IKE liveness check (0: none).
    pub dpd_s: u64,
    /// IKEv2 and IKEv1: tunnels each client holds at once, to its server
    /// and the next ones in turn (1 to `servers`).
    pub tunnels_per_client: usize,
    /// L2TP: the server.
    pub lns: Lns,
    /// Raw ESP: how long the server holds each echo, ms (clients that start
    /// "at once" send before the first echo returns); one value for every
    /// client, or one per client.
    pub esp_delay_ms: PerClient,
    /// Raw ESP: each client rekeys (new SPIs both ways, asked for on UDP
    /// 500 again) after this many packets; 0: never.
    pub esp_rekey_after: u32,
    /// Raw ESP: packets each client's flow sends.
    pub esp_packets: u32,
    /// Raw ESP: ms between a flow's packets (a flow that must outlast a
    /// later step, such as the intruder's spray).
    pub esp_interval_ms: u64,
    /// Clamp the TCP MSS every client and server advertises (splits PPTP
    /// control messages over several segments); 0 leaves it.
    pub mss: u16,
}

impl Endpoints {
    /// The settings of `[endpoints]` that only some families read, by key,
    /// that this file changes from their defaults.
    pub fn family_settings_changed(&self) -> Vec<&'static str> {
        let d = Endpoints::default();
        let changed = [
            ("same_call_id", self.same_call_id != d.same_call_id),
            ("auth", self.auth != d.auth),
            ("ike_fragmentation", self.ike_fragmentation != d.ike_fragmentation),
            ("lns", self.lns != d.lns),
            ("tunnels_per_client", self.tunnels_per_client != d.tunnels_per_client),
            ("mobike", self.mobike != d.mobike),
            ("dpd_s", self.dpd_s != d.dpd_s),
            ("esp_delay_ms", self.esp_delay_ms != d.esp_delay_ms),
            ("esp_packets", self.esp_packets != d.esp_packets),
            ("esp_rekey_after", self.esp_rekey_after != d.esp_rekey_after),
            ("esp_interval_ms", self.esp_interval_ms != d.esp_interval_ms),
            ("float", self.float != d.float),
        ];
        changed.into_iter().filter(|(_, c)| *c).map(|(k, _)| k).collect()
    }
}

impl Default for Endpoints {
    fn default() -> Endpoints {
        Endpoints {
            connect_timeout_s: 10,
            same_call_id: false,
            auth: IpsecAuth::Psk,
            keepalive_s: 20,
            float: false,
            ike_fragmentation: false,
            lns: Lns::Xl2tpd,
            tunnels_per_client: 1,
            mobike: true,
            dpd_s: 0,
            esp_delay_ms: PerClient::All(0),
            esp_rekey_after: 0,
            esp_packets: 1,
            esp_interval_ms: 0,
            mss: 0,
        }
    }
}

/// A setting with one value for every client, or one per client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PerClient {
    /// The same for every client.
    All(u64),
    /// Client `i`'s is the `i`th (from 1).
    Each(Vec<u64>),
}

impl PerClient {
    /// Every client's value, in order, for `clients` clients.
    pub fn values(&self, clients: usize) -> Vec<u64> {
        match self {
            PerClient::All(v) => vec![*v; clients],
            PerClient::Each(v) => v.clone(),
        }
    }
}

/// Which clients a step is for: every client when absent.
pub type Clients = Option<Vec<usize>>;

/// A traffic direction through a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Client to server.
    Out,
    /// Server to client.
    In,
}

fn both_directions() -> Vec<Direction> {
    vec![Direction::In, Direction::Out]
}

fn traffic_name() -> String {
    "traffic".into()
}

/// One step of a story.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Clients bring their tunnels up: every client dials, one right after
    /// the other, and then each tunnel is awaited (or, asked, each dials a
    /// while after the previous one, or once the previous one's tunnel is
    /// up); a tunnel that does not come up is an observation, not an error.
    Connect {
        /// Which clients.
        #[serde(default)]
        clients: Clients,
        /// The story needs the calls made together: the default, and the
        /// family checks from the captures that they were (PPTP).
        #[serde(default)]
        at_once: bool,
        /// Each client dials once the previous one's tunnel is up, or was
        /// given up.
        #[serde(default)]
        one_by_one: bool,
        /// Each client dials this many seconds after the previous one.
        #[serde(default)]
        stagger_s: f64,
    },
    /// Clients take their tunnels down.
    Disconnect {
        /// Which clients.
        #[serde(default)]
        clients: Clients,
    },
    /// Pings through each client's tunnel, one direction after the other in
    /// the order given (by default every client's `in`, last client first,
    /// then every client's `out`, in order); with `bytes`, that many bytes
    /// over TCP each way after each ping.
    Traffic {
        /// Which clients.
        #[serde(default)]
        clients: Clients,
        /// Which directions.
        #[serde(default = "both_directions")]
        directions: Vec<Direction>,
        /// Bytes moved over TCP through the tunnel in each direction, after
        /// the ping (0: pings only).
        #[serde(default)]
        bytes: u64,
        /// The name expectations refer to.
        #[serde(default = "traffic_name")]
        name: String,
    },
    /// Nothing happens for a while.
    Wait {
        /// Seconds.
        seconds: f64,
    },
    /// IPsec clients rekey their IKE SA and CHILD_SA.
    Rekey {
        /// Which clients.
        #[serde(default)]
        clients: Clients,
    },
    /// The router reboots: its mappings and tracked calls are gone.
    Reboot,
    /// A client's LAN link goes down.
    LinkDown {
        /// The client.
        client: usize,
    },
    /// A client's LAN link comes back.
    LinkUp {
        /// The client.
        client: usize,
    },
    /// The router gets another passthrough mode (Rust NAT: a restart with
    /// that preset).
    Profile {
        /// The mode.
        mode: Mode,
    },
    /// The intruder sends spoofed packets of every family at the
    /// router's public address; then client 1 pings its server outside any
    /// tunnel.
    Hostile {
        /// Rounds of 10 packets.
        #[serde(default = "default_rounds")]
        rounds: u16,
    },
}

fn default_rounds() -> u16 {
    32
}

impl Step {
    /// The step's kind, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Connect { .. } => "connect",
            Step::Disconnect { .. } => "disconnect",
            Step::Traffic { .. } => "traffic",
            Step::Wait { .. } => "wait",
            Step::Rekey { .. } => "rekey",
            Step::Reboot => "reboot",
            Step::LinkDown { .. } => "link-down",
            Step::LinkUp { .. } => "link-up",
            Step::Profile { .. } => "profile",
            Step::Hostile { .. } => "hostile",
        }
    }
}

/// A tunnel's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunnelState {
    /// Established.
    Up,
    /// Not established (never, or no more).
    Down,
}

/// What crossed a tunnel in a traffic step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Both directions.
    Both,
    /// Client to server only.
    Out,
    /// Server to client only.
    In,
    /// Neither.
    None,
}

impl Delivery {
    /// Whether traffic crossed in `direction`.
    pub fn includes(self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (Delivery::Both, _) | (Delivery::Out, Direction::Out) | (Delivery::In, Direction::In)
        )
    }
}

/// How long a traffic step's ping waits for an answer that does not come,
/// in seconds.
pub const PING_WINDOW_S: f64 = 3.0;

/// The story's verdict for one router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedOutcome {
    /// The VPN works through this router.
    #[default]
    Works,
    /// It breaks, and the expectations say exactly how: an expected failure.
    Breaks,
}

/// A key of `[expect]`: the router kinds an expectation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectKey {
    /// The Rust NAT in mode `off`.
    Off,
    /// The Rust NAT in mode `naive`.
    Naive,
    /// The Rust NAT in mode `full`.
    Full,
    /// The Rust NAT in every mode without its own key.
    Rust,
    /// The Linux NAT.
    Linux,
    /// A real router (falls back to `full`, then `rust`).
    External,
    /// No router: the preflight's direct link (not for files).
    #[serde(skip_deserializing)]
    Direct,
}

impl ExpectKey {
    /// The name in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            ExpectKey::Off => "off",
            ExpectKey::Naive => "naive",
            ExpectKey::Full => "full",
            ExpectKey::Rust => "rust",
            ExpectKey::Linux => "linux",
            ExpectKey::External => "external",
            ExpectKey::Direct => "direct",
        }
    }

    /// The key of the Rust NAT in `mode`.
    pub fn of_mode(mode: Mode) -> ExpectKey {
        match mode {
            Mode::Off => ExpectKey::Off,
            Mode::Naive => ExpectKey::Naive,
            Mode::Full => ExpectKey::Full,
        }
    }

    /// Whether it is about the Rust NAT (which has counters).
    pub fn is_rust(self) -> bool {
        matches!(self, ExpectKey::Off | ExpectKey::Naive | ExpectKey::Full | ExpectKey::Rust)
    }
}

impl fmt::Display for ExpectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A client named in a file: `c3` is client 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientRef(pub usize);

impl TryFrom<String> for ClientRef {
    type Error = String;
    fn try_from(s: String) -> Result<ClientRef, String> {
        match s.strip_prefix('c').and_then(|n| n.parse().ok()) {
            Some(n) if n >= 1 => Ok(ClientRef(n)),
            _ => Err(format!("`{s}`: name a client c1, c2…")),
        }
    }
}

impl From<ClientRef> for String {
    fn from(c: ClientRef) -> String {
        c.to_string()
    }
}

impl fmt::Display for ClientRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Whom a client's tunnel traffic reached on the LAN besides that client:
/// another client (`"c2"`), or nobody (`"nobody"`: it reached that client
/// only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum MisdeliveredTo {
    /// Another client (`c2`).
    Client(ClientRef),
    /// No other client: it reached its own client only.
    Nobody,
}

impl TryFrom<String> for MisdeliveredTo {
    type Error = String;
    fn try_from(s: String) -> Result<MisdeliveredTo, String> {
        if s == "nobody" {
            return Ok(MisdeliveredTo::Nobody);
        }
        ClientRef::try_from(s).map(MisdeliveredTo::Client).map_err(|e| format!("{e} or `nobody`"))
    }
}

impl From<MisdeliveredTo> for String {
    fn from(r: MisdeliveredTo) -> String {
        match r {
            MisdeliveredTo::Client(c) => c.to_string(),
            MisdeliveredTo::Nobody => "nobody".into(),
        }
    }
}

/// A transport protocol and port: `udp/500`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRef {
    /// IP protocol number (6 or 17).
    pub proto: u8,
    /// Port.
    pub port: u16,
}

impl TryFrom<String> for PortRef {
    type Error = String;
    fn try_from(s: String) -> Result<PortRef, String> {
        let parsed = s.split_once('/').and_then(|(proto, port)| {
            let proto = match proto {
                "udp" => 17,
                "tcp" => 6,
                _ => return None,
            };
            Some(PortRef { proto, port: port.parse().ok()? })
        });
        parsed.ok_or_else(|| format!("`{s}`: write a protocol and port, e.g. \"udp/500\""))
    }
}

impl From<PortRef> for String {
    fn from(p: PortRef) -> String {
        p.to_string()
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", if self.proto == 6 { "tcp" } else { "udp" }, self.port)
    }
}

/// What a counter must show: a number (`"0"`, `"3"`) or `">0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum CountWant {
    /// Exactly this many.
    Exactly(u64),
    /// At least one.
    Some,
}

impl CountWant {
    /// Whether `seen` meets it.
    pub fn holds(self, seen: u64) -> bool {
        match self {
            CountWant::Exactly(n) => seen == n,
            CountWant::Some => seen > 0,
        }
    }
}

impl TryFrom<String> for CountWant {
    type Error = String;
    fn try_from(s: String) -> Result<CountWant, String> {
        if s.trim() == ">0" {
            return Ok(CountWant::Some);
        }
        s.trim().parse().map(CountWant::Exactly).map_err(|_| format!("`{s}`; allowed: \"0\", \">0\" or a number"))
    }
}

impl From<CountWant> for String {
    fn from(c: CountWant) -> String {
        match c {
            CountWant::Exactly(n) => n.to_string(),
            CountWant::Some => ">0".into(),
        }
    }
}

/// What must be seen for one router kind. Every key is optional; each one
/// given is checked.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Whether the VPN works (`works`) or breaks as expected (`breaks`).
    #[serde(default)]
    pub outcome: ExpectedOutcome,
    /// Why, for the report (required with `breaks`).
    #[serde(default)]
    pub why: Option<String>,
    /// Skip this router kind, with the reason.
    #[serde(default)]
    pub skip: Option<String>,
    /// Each client's tunnel after the last connect (in client order).
    #[serde(default)]
    pub tunnels: Option<Vec<TunnelState>>,
    /// What crossed each client's tunnel in the traffic step named
    /// `traffic` (in client order).
    #[serde(default)]
    pub traffic: Option<Vec<Delivery>>,
    /// The same for other traffic steps, by name.
    #[serde(default)]
    pub traffic_at: BTreeMap<String, Vec<Delivery>>,
    /// Raw ESP: whether each client received echoes meant for another.
    #[serde(default)]
    pub foreign: Option<Vec<bool>>,
    /// On the LAN, traffic for one client's tunnel reached another:
    /// `{ c1 = "c2" }` (PPTP GRE by inner address, ESP by SPI); or it
    /// reached its own client only: `{ c1 = "nobody" }`.
    #[serde(default)]
    pub misdelivered: BTreeMap<ClientRef, MisdeliveredTo>,
    /// PPTP: the Call IDs of the Outgoing-Call-Requests differ between LAN
    /// and WAN.
    #[serde(default)]
    pub call_ids_rewritten: Option<bool>,
    /// PPTP: the clients' Call IDs on the LAN are all different.
    #[serde(default)]
    pub lan_call_ids_distinct: Option<bool>,
    /// PPTP: the calls' Call IDs on the WAN are all different.
    #[serde(default)]
    pub wan_call_ids_distinct: Option<bool>,
    /// How many public source ports the router used towards a server
    /// port: `{ "udp/500" = 1 }`.
    #[serde(default)]
    pub public_ports: BTreeMap<PortRef, usize>,
    /// L2TP: whether an SCCRP reached each client on the LAN.
    #[serde(default)]
    pub l2tp_answered: Option<Vec<bool>>,
    /// Whether any packet from the intruder reached the LAN.
    #[serde(default)]
    pub intruder_reached_lan: Option<bool>,
    /// PPTP: whether every GRE packet the router translated has a right
    /// IPv4 header checksum. Checked in every run that saw translated GRE,
    /// `true` unless given.
    #[serde(default)]
    pub gre_header_checksums_ok: Option<bool>,
    /// Rust NAT drop counters by reason: `"0"`, `">0"` or a number.
    #[serde(default)]
    pub counters: BTreeMap<String, CountWant>,
}

impl Expect {
    /// The expectation in one line.
    pub fn summary(&self) -> String {
        let mut parts = vec![match self.outcome {
            ExpectedOutcome::Works => "works".to_string(),
            ExpectedOutcome::Breaks => format!("breaks ({})", self.why.as_deref().unwrap_or("")),
        }];
        if let Some(r) = &self.skip {
            return format!("skipped: {r}");
        }
        let join = |v: Vec<String>| v.join(" ");
        if let Some(t) = &self.tunnels {
            parts.push(format!("tunnels {}", join(t.iter().map(|s| format!("{s:?}").to_lowercase()).collect())));
        }
        if let Some(t) = &self.traffic {
            parts.push(format!("traffic {}", join(t.iter().map(|s| format!("{s:?}").to_lowercase()).collect())));
        }
        for (name, t) in &self.traffic_at {
            parts.push(format!("{name}: {}", join(t.iter().map(|s| format!("{s:?}").to_lowercase()).collect())));
        }
        parts.join("; ")
    }
}

/// One scenario: a file played against one router kind (and, for the
/// Rust NAT, one mode).
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file.
    pub path: PathBuf,
    /// `family::case`.
    pub id: String,
    /// The case.
    pub case: String,
    /// What the file says.
    pub file: ScenarioFile,
}

/// A router kind a scenario is played against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Target {
    /// The Rust NAT in a mode.
    Rust(Mode),
    /// The Linux kernel's NAT.
    Linux,
    /// A real router on two NICs.
    External,
    /// No router: a direct link (the preflight).
    Direct,
}

impl Target {
    /// The last part of a test name: `rust-full`, `linux`, `external`.
    pub fn label(self) -> String {
        match self {
            Target::Rust(m) => format!("rust-{}", m.name()),
            Target::Linux => "linux".into(),
            Target::External => "external".into(),
            Target::Direct => "direct".into(),
        }
    }

    /// The `[expect]` key of its own: the mode, or the router kind.
    pub fn key(self) -> ExpectKey {
        match self {
            Target::Rust(m) => ExpectKey::of_mode(m),
            Target::Linux => ExpectKey::Linux,
            Target::External => ExpectKey::External,
            Target::Direct => ExpectKey::Direct,
        }
    }

    /// The matrix column: the mode, or the router kind.
    pub fn column(self) -> String {
        self.key().name().into()
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read the scenario: {e}", path.display()))?;
        Scenario::parse(path, &text)
    }

    /// Reads and checks scenario text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, String> {
        let file: ScenarioFile = toml::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
        let case = match &file.case {
            Some(c) => c.clone(),
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let s = Scenario { path: path.to_path_buf(), id: format!("{}::{case}", file.family), case, file };
        s.check(text)?;
        Ok(s)
    }

    /// The test name of this scenario against `target`:
    /// `family::case::target`.
    pub fn name(&self, target: Target) -> String {
        format!("{}::{}", self.id, target.label())
    }

    /// The router kinds this file is played against, in order.
    pub fn targets(&self) -> Vec<Target> {
        let mut t: Vec<Target> = self.file.modes.iter().map(|m| Target::Rust(*m)).collect();
        t.push(Target::Linux);
        t
    }

    /// What must be seen with `target`.
    pub fn expectation(&self, target: Target) -> Option<&Expect> {
        let e = &self.file.expect;
        match target {
            Target::Rust(m) => e.get(&ExpectKey::of_mode(m)).or_else(|| e.get(&ExpectKey::Rust)),
            Target::Linux => e.get(&ExpectKey::Linux),
            Target::External => {
                e.get(&ExpectKey::External).or_else(|| e.get(&ExpectKey::Full)).or_else(|| e.get(&ExpectKey::Rust))
            }
            Target::Direct => e.get(&ExpectKey::Direct),
        }
    }

    /// The Rust NAT's profile in `mode`: the preset with the file's
    /// `[router]` fields laid over it.
    pub fn profile(&self, mode: Mode) -> Result<Profile, String> {
        let preset = Profile::preset(mode.preset()).ok_or_else(|| format!("no preset {}", mode.preset()))?;
        if self.file.router.is_empty() {
            return Ok(preset);
        }
        let mut base = toml::Table::try_from(&preset).map_err(|e| e.to_string())?;
        merge(&mut base, &self.file.router);
        let mut p: Profile = base
            .try_into()
            .map_err(|e: toml::de::Error| format!("{}: [router]: {}", self.path.display(), e.message()))?;
        p.name = format!("{} + scenario", mode.preset());
        Ok(p)
    }

    /// The server client `i` talks to.
    pub fn server_of(&self, i: usize) -> usize {
        (i - 1) % self.file.topology.servers.max(1) + 1
    }

    /// The clients a step names, or every client when it names none.
    pub fn clients_of(&self, which: &Option<Vec<usize>>) -> Vec<usize> {
        which.clone().unwrap_or_else(|| (1..=self.file.topology.clients).collect())
    }

    /// The clients of the `connect` steps `paced` picks, in dial order.
    pub fn clients_dialled(&self, paced: impl Fn(&Step) -> bool) -> Vec<usize> {
        let steps = self.file.steps.iter().filter(|st| paced(st));
        steps
            .filter_map(|st| if let Step::Connect { clients, .. } = st { Some(self.clients_of(clients)) } else { None })
            .flatten()
            .collect()
    }

    /// A rough length of a play against `target`, in seconds, for ordering
    /// runs: what its steps wait for on purpose (waits, staggers), a second
    /// for each tunnel it dials, and [`PING_WINDOW_S`] for each direction
    /// of a traffic step that the target's expectation says carries
    /// nothing through a tunnel that is up (a ping that waits out its
    /// window).
    pub fn expected_seconds(&self, target: Target) -> f64 {
        let expect = self.expectation(target);
        let up = |client: usize| {
            expect
                .and_then(|e| e.tunnels.as_ref())
                .and_then(|t| t.get(client - 1))
                .is_none_or(|t| *t == TunnelState::Up)
        };
        let steps = self.file.steps.iter().map(|st| match st {
            Step::Wait { seconds } => *seconds,
            Step::Connect { clients, stagger_s, .. } => {
                let n = self.clients_of(clients).len() as f64;
                n * self.file.endpoints.tunnels_per_client as f64 + (n - 1.0).max(0.0) * stagger_s
            }
            Step::Traffic { clients, directions, name, .. } => {
                let Some(e) = expect else { return 0.0 };
                let delivered = if name == "traffic" { e.traffic.as_ref() } else { e.traffic_at.get(name) };
                let Some(delivered) = delivered else { return 0.0 };
                let silent = self
                    .clients_of(clients)
                    .into_iter()
                    .filter(|&i| up(i))
                    .flat_map(|i| directions.iter().map(move |d| (i, *d)))
                    .filter(|&(i, d)| delivered.get(i - 1).is_some_and(|got| !got.includes(d)))
                    .count();
                silent as f64 * PING_WINDOW_S
            }
            _ => 0.0,
        });
        steps.sum()
    }

    /// Whether a `connect` step has its clients dial at once.
    pub fn connects_at_once(&self) -> bool {
        self.file.steps.iter().any(|st| matches!(st, Step::Connect { at_once: true, .. }))
    }

    /// Every server client `i` holds a tunnel to: its own, then the next
    /// ones in turn (`tunnels_per_client`).
    pub fn servers_of(&self, i: usize) -> Vec<usize> {
        let servers = self.file.topology.servers.max(1);
        (0..self.file.endpoints.tunnels_per_client).map(|k| (self.server_of(i) - 1 + k) % servers + 1).collect()
    }

    fn check(&self, text: &str) -> Result<(), String> {
        let f = &self.file;
        let at = |path: &[&str], msg: String| -> String {
            let line = locate(text, path).map(|l| format!(":{l}")).unwrap_or_default();
            format!("{}{line}: {}: {msg}", self.path.display(), path.join("."))
        };
        // The case names the report's `failures/<family>.<case>.<target>`
        // directory: it must stay one plain file name.
        if let Err(why) = check_case(&self.case) {
            return Err(match &f.case {
                Some(_) => at(&["case"], why),
                None => format!("{}: the file name gives the case `{}`, which {why}", self.path.display(), self.case),
            });
        }
        let t = &f.topology;
        let max = crate::vpn::pppd::LAB_CLIENTS;
        if !(1..=max).contains(&t.clients) {
            return Err(at(&["topology", "clients"], format!("{} clients; allowed: 1 to {max}", t.clients)));
        }
        if !(1..=16).contains(&t.servers) {
            return Err(at(&["topology", "servers"], format!("{} servers; allowed: 1 to 16", t.servers)));
        }
        if t.lan.prefix_len() > 26 || t.lan.addr() == t.lan.network() {
            return Err(at(
                &["topology", "lan"],
                format!("{}: give the router's address with a prefix of /26 or shorter, e.g. 192.168.1.1/24", t.lan),
            ));
        }
        // Clients are the LAN's `.10` onwards (behind a second NAT, its
        // /24's), and never on the router's own address.
        let (clients_lan, prefix) =
            if t.double_nat { ("10.20.0.0/24".to_string(), 24) } else { (t.lan.to_string(), t.lan.prefix_len()) };
        let room = (1u64 << (32 - prefix)).saturating_sub(11);
        if t.clients as u64 > room {
            return Err(at(
                &["topology", "lan"],
                format!("{clients_lan}: {} clients from .10 on do not fit; at most {room}", t.clients),
            ));
        }
        let router_at = u64::from(u32::from(t.lan.addr()) - u32::from(t.lan.network()));
        if !t.double_nat && (10..10 + t.clients as u64).contains(&router_at) {
            return Err(at(
                &["topology", "lan"],
                format!("{}: the router's address is among the clients' (.10 on); give it one below .10", t.lan),
            ));
        }
        // A server's PPP address pool holds 100 clients.
        if t.clients.div_ceil(t.servers) > 100 {
            return Err(at(
                &["topology", "clients"],
                format!("{} clients over {} servers; at most 100 clients a server", t.clients, t.servers),
            ));
        }
        if f.modes.is_empty() {
            return Err(at(&["modes"], "no modes; allowed: off, naive, full".into()));
        }
        let e = &f.endpoints;
        if !(1..=1000).contains(&e.esp_packets) || u64::from(e.esp_packets) * e.esp_interval_ms > 20_000 {
            return Err(at(
                &["endpoints", "esp_packets"],
                format!(
                    "{} packets {} ms apart; allowed: 1 to 1000 packets, a flow of at most 20 s",
                    e.esp_packets, e.esp_interval_ms
                ),
            ));
        }
        if e.dpd_s > 3600 {
            return Err(at(&["endpoints", "dpd_s"], format!("{} s; allowed: 0 to 3600", e.dpd_s)));
        }
        if !(1..=t.servers).contains(&e.tunnels_per_client) {
            return Err(at(
                &["endpoints", "tunnels_per_client"],
                format!("{}; allowed: 1 to the {} servers", e.tunnels_per_client, t.servers),
            ));
        }
        for st in &f.steps {
            if let Step::Connect { at_once, one_by_one, stagger_s, .. } = st {
                if !(0.0..=60.0).contains(stagger_s) {
                    return Err(at(&["step", "stagger_s"], format!("{stagger_s} s; allowed: 0 to 60")));
                }
                let paces = [*at_once, *one_by_one, *stagger_s > 0.0].iter().filter(|p| **p).count();
                if paces > 1 {
                    return Err(at(
                        &["step"],
                        "a connect step dials `at_once`, `one_by_one` or with a `stagger_s`: one of them".into(),
                    ));
                }
            }
        }
        let connects: Vec<bool> = f
            .steps
            .iter()
            .filter_map(|st| if let Step::Connect { at_once, .. } = st { Some(*at_once) } else { None })
            .collect();
        if connects.contains(&true) && connects.contains(&false) {
            return Err(at(
                &["step"],
                "connect steps with and without `at_once`: a story dials at once or one by one, so that its first calls are the ones made together".into(),
            ));
        }
        if let PerClient::Each(v) = &e.esp_delay_ms
            && v.len() != t.clients
        {
            return Err(at(
                &["endpoints", "esp_delay_ms"],
                format!("{} values for {} clients; give one, or one per client", v.len(), t.clients),
            ));
        }
        if e.esp_delay_ms.values(t.clients).iter().any(|d| *d > 20_000) {
            return Err(at(&["endpoints", "esp_delay_ms"], "at most 20000 ms".into()));
        }
        if e.esp_rekey_after >= e.esp_packets && e.esp_rekey_after != 0 {
            return Err(at(
                &["endpoints", "esp_rekey_after"],
                format!("{}: a rekey must come before the last of the {} packets", e.esp_rekey_after, e.esp_packets),
            ));
        }
        if !(1..=120).contains(&e.connect_timeout_s) {
            return Err(at(
                &["endpoints", "connect_timeout_s"],
                format!("{} s; allowed: 1 to 120", e.connect_timeout_s),
            ));
        }
        if e.keepalive_s > 3600 {
            return Err(at(&["endpoints", "keepalive_s"], format!("{} s; allowed: 0 to 3600", e.keepalive_s)));
        }
        if f.steps.is_empty() {
            return Err(at(&["step"], "no steps: a story needs at least a connect".into()));
        }
        let client_ok = |c: usize| (1..=t.clients).contains(&c);
        for (n, step) in f.steps.iter().enumerate() {
            let where_ = format!("step {} ({})", n + 1, step.kind());
            let bad =
                |c: usize| at(&["step"], format!("{where_}: client {c}; this topology has clients 1 to {}", t.clients));
            match step {
                Step::Connect { clients, .. } | Step::Disconnect { clients } | Step::Rekey { clients } => {
                    if let Some(c) = clients.iter().flatten().find(|c| !client_ok(**c)) {
                        return Err(bad(*c));
                    }
                    if let Some(list) = clients
                        && let Some(c) = list.iter().enumerate().find(|(k, c)| list[..*k].contains(c)).map(|(_, c)| c)
                    {
                        return Err(at(&["step"], format!("{where_}: client {c} given twice")));
                    }
                }
                Step::Traffic { clients, directions, bytes, .. } => {
                    if let Some(c) = clients.iter().flatten().find(|c| !client_ok(**c)) {
                        return Err(bad(*c));
                    }
                    if directions.is_empty() {
                        return Err(at(&["step"], format!("{where_}: no directions; allowed: out, in")));
                    }
                    if directions.iter().enumerate().any(|(k, d)| directions[..k].contains(d)) {
                        return Err(at(&["step"], format!("{where_}: a direction given twice; allowed: out, in")));
                    }
                    if *bytes > MAX_TRANSFER {
                        return Err(at(&["step"], format!("{where_}: {bytes} bytes; allowed: 0 to {MAX_TRANSFER}")));
                    }
                }
                Step::LinkDown { client } | Step::LinkUp { client } if !client_ok(*client) => {
                    return Err(bad(*client));
                }
                Step::Wait { seconds } if !(0.0..=300.0).contains(seconds) => {
                    return Err(at(&["step"], format!("{where_}: {seconds} s; allowed: 0 to 300")));
                }
                Step::Hostile { .. } if !t.intruder => {
                    return Err(at(&["step"], format!("{where_}: needs `intruder = true` in [topology]")));
                }
                _ => {}
            }
        }
        for target in self.targets() {
            if self.expectation(target).is_none() {
                let key = target.column();
                return Err(at(
                    &["expect"],
                    format!("nothing expected for `{key}`: add [expect.{key}] (or [expect.rust] for every mode)"),
                ));
            }
        }
        let names: Vec<&str> = f
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Traffic { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        for (kind, e) in &f.expect {
            let key = kind.name();
            let per_client = |field: &str, len: Option<usize>| -> Result<(), String> {
                match len {
                    Some(n) if n != t.clients => Err(at(
                        &["expect", key, field],
                        format!("{n} entries for {} clients: give one per client", t.clients),
                    )),
                    _ => Ok(()),
                }
            };
            per_client("tunnels", e.tunnels.as_ref().map(Vec::len))?;
            per_client("traffic", e.traffic.as_ref().map(Vec::len))?;
            per_client("foreign", e.foreign.as_ref().map(Vec::len))?;
            per_client("l2tp_answered", e.l2tp_answered.as_ref().map(Vec::len))?;
            if e.traffic.is_some() && !names.contains(&"traffic") {
                return Err(at(&["expect", key, "traffic"], "no traffic step is named `traffic`".into()));
            }
            for (name, v) in &e.traffic_at {
                if !names.contains(&name.as_str()) {
                    return Err(at(
                        &["expect", key, "traffic_at"],
                        format!("no traffic step is named `{name}`; the steps are named {names:?}"),
                    ));
                }
                per_client("traffic_at", Some(v.len()))?;
            }
            if e.outcome == ExpectedOutcome::Breaks && e.why.is_none() && e.skip.is_none() {
                return Err(at(&["expect", key, "outcome"], "`breaks` needs a `why` for the report".into()));
            }
            for (from, to) in &e.misdelivered {
                let to = match to {
                    MisdeliveredTo::Client(c) => Some(c),
                    MisdeliveredTo::Nobody => None,
                };
                for c in std::iter::once(from).chain(to) {
                    if !client_ok(c.0) {
                        return Err(at(
                            &["expect", key, "misdelivered"],
                            format!("`{c}`: name clients c1 to c{}", t.clients),
                        ));
                    }
                }
            }
            if !e.counters.is_empty() && !kind.is_rust() {
                return Err(at(&["expect", key, "counters"], "counters are the Rust NAT's only".into()));
            }
        }
        for m in &f.modes {
            self.profile(*m).map_err(|e| at(&["router"], e))?;
        }
        Ok(())
    }
}

/// The most bytes a traffic step moves each way.
pub const MAX_TRANSFER: u64 = 100_000_000;

/// Longest case name.
pub const CASE_MAX: usize = 64;

/// Checks a case name: it becomes part of a directory name under the
/// report's `failures/`, so it must be a plain file name: 1 to 64
/// characters of `[A-Za-z0-9_.-]`, starting with a letter or a digit (no
/// `/`, no `..`, nothing hidden). Returns what is wrong.
pub fn check_case(case: &str) -> Result<(), String> {
    if case.is_empty() || case.len() > CASE_MAX {
        return Err(format!("must be 1 to {CASE_MAX} characters long"));
    }
    if !case.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!(
            "`{}` may only hold letters, digits, '-', '_' and '.' (it names a directory of the report)",
            case.escape_default()
        ));
    }
    if !case.starts_with(|c: char| c.is_ascii_alphanumeric()) || case.contains("..") {
        return Err(format!("`{case}` must start with a letter or a digit and hold no `..`"));
    }
    Ok(())
}

fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A TOML error as `file:line:column: message`, with the offending line.
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return format!("{}: {}", path.display(), e.message()) };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    let source = text.lines().nth(line - 1).unwrap_or("");
    format!("{}:{line}:{col}: {}\n    {source}", path.display(), e.message().trim_end())
}

/// The line of the key at `path` (`["expect", "naive", "tunnels"]`): the
/// table header and the key below it, or the header alone.
fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let mut table: Vec<String> = Vec::new();
    let mut header_line = None;
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            table = h.split('.').map(|s| s.trim().to_string()).collect();
        } else if let Some(h) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = h.split('.').map(|s| s.trim().trim_matches('"').to_string()).collect();
        } else if let Some((key, _)) = l.split_once('=') {
            let key = key.trim().trim_matches('"');
            let mut full = table.clone();
            full.push(key.to_string());
            if full.len() >= path.len() && full.iter().zip(path).all(|(a, b)| a == b) {
                return Some(n + 1);
            }
            continue;
        } else {
            continue;
        }
        if table.len() <= path.len() && table.iter().zip(path).all(|(a, b)| a == b) && !table.is_empty() {
            header_line = header_line.or(Some(n + 1));
            if table.len() == path.len() {
                return Some(n + 1);
            }
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
family = "pptp"
description = "one client"

[[step]]
do = "connect"

[[step]]
do = "traffic"

[expect.rust]
tunnels = ["up"]
traffic = ["both"]

[expect.off]
outcome = "breaks"
why = "GRE is dropped"
tunnels = ["down"]

[expect.linux]
tunnels = ["up"]
"#;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(Path::new("scenarios/pptp/one-client.toml"), text)
    }

    #[test]
    fn a_play_that_waits_is_expected_to_take_longer() {
        let short = parse(GOOD).expect("good").expected_seconds(Target::Linux);
        let waiting = GOOD.replace(
            "[[step]]\ndo = \"traffic\"",
            "[[step]]\ndo = \"wait\"\nseconds = 17\n\n[[step]]\ndo = \"traffic\"",
        );
        let long = parse(&waiting).expect("waiting").expected_seconds(Target::Linux);
        assert_eq!((short, long), (1.0, 18.0));
        let two = GOOD
            .replace("[\"up\"]", "[\"up\", \"up\"]")
            .replace("[\"down\"]", "[\"down\", \"down\"]")
            .replace("[\"both\"]", "[\"both\", \"both\"]")
            .replace("do = \"connect\"", "do = \"connect\"\nstagger_s = 2")
            + "\n[topology]\nclients = 2\n";
        assert_eq!(parse(&two).expect("two clients, staggered").expected_seconds(Target::Linux), 2.0 + 2.0);
        // A direction expected silent through a tunnel that is up waits
        // out the ping's window; a tunnel expected down is not pinged.
        let one_way = parse(&GOOD.replace("traffic = [\"both\"]", "traffic = [\"out\"]")).expect("one way");
        assert_eq!(one_way.expected_seconds(Target::Rust(Mode::Full)), 1.0 + PING_WINDOW_S);
        assert_eq!(one_way.expected_seconds(Target::Rust(Mode::Off)), 1.0);
    }

    #[test]
    fn up_to_two_hundred_clients_as_long_as_the_lan_holds_them() {
        let on = |clients: usize, servers: usize, lan: &str| {
            parse(&format!(
                "family = \"pptp\"\ndescription = \"d\"\n[topology]\nclients = {clients}\nservers = {servers}\n\
                 lan = \"{lan}\"\n[[step]]\ndo = \"connect\"\n[expect.rust]\n[expect.linux]\n"
            ))
        };
        let lab = |clients: usize, lan: &str| on(clients, 4, lan);
        let e = on(200, 1, "192.168.1.1/24").expect_err("200 clients on one server");
        assert!(e.contains("at most 100 clients a server"), "{e}");
        assert_eq!(on(200, 2, "192.168.1.1/24").expect("200 clients over 2 servers").file.topology.clients, 200);
        let e = lab(201, "10.0.0.1/16").expect_err("201 clients");
        assert!(e.contains("topology.clients") && e.contains("allowed: 1 to 200"), "{e}");
        assert!(lab(53, "192.168.1.1/26").is_ok(), ".10 to .62 of a /26");
        let e = lab(50, "192.168.1.50/24").expect_err("the router among the clients");
        assert!(e.contains("topology.lan") && e.contains("among the clients"), "{e}");
        assert!(lab(40, "192.168.1.50/24").is_ok(), "the clients end at .49");
        let e = lab(54, "192.168.1.1/26").expect_err("past the /26");
        assert!(e.contains("topology.lan") && e.contains("at most 53"), "{e}");
    }

    #[test]
    fn clients_ports_counters_and_router_kinds_are_parsed_once_into_types() {
        let more = "misdelivered = { c1 = \"c1\" }\npublic_ports = { \"udp/500\" = 1 }\ncounters = { \"unsolicited\" = \">0\" }\n";
        let s =
            parse(&GOOD.replace("[expect.off]\n", &format!("[expect.naive]\n{more}\n[expect.off]\n"))).expect("loads");
        let e = &s.file.expect[&ExpectKey::Naive];
        assert_eq!(e.misdelivered.iter().next(), Some((&ClientRef(1), &MisdeliveredTo::Client(ClientRef(1)))));
        assert_eq!(e.public_ports.keys().next(), Some(&PortRef { proto: 17, port: 500 }));
        assert_eq!(e.counters["unsolicited"], CountWant::Some);
        assert!(CountWant::Some.holds(2) && !CountWant::Some.holds(0) && CountWant::Exactly(0).holds(0));
        for (bad, says) in [
            ("misdelivered = { c1 = \"x2\" }", "`x2`: name a client c1, c2… or `nobody`"),
            ("misdelivered = { c1 = \"c0\" }", "`c0`: name a client"),
            ("public_ports = { \"udq/500\" = 1 }", "write a protocol and port"),
            ("public_ports = { \"udp/70000\" = 1 }", "write a protocol and port"),
            ("counters = { \"x\" = \"more\" }", "allowed: \"0\", \">0\" or a number"),
        ] {
            let text = GOOD.replace("[expect.off]\n", &format!("[expect.naive]\n{bad}\n\n[expect.off]\n"));
            let err = parse(&text).expect_err(bad);
            assert!(err.contains(says) && err.contains("one-client.toml:"), "{bad}: {err}");
        }
        let err = parse(&GOOD.replace("[expect.linux]", "[expect.direct]")).expect_err("direct is not for files");
        assert!(err.contains("unknown variant `direct`") && err.contains("linux"), "{err}");
    }

    #[test]
    fn a_good_file_loads_with_its_targets_and_expectations() {
        let s = parse(GOOD).expect("loads");
        assert_eq!(s.id, "pptp::one-client");
        assert_eq!(s.targets().len(), 4);
        assert_eq!(s.expectation(Target::Rust(Mode::Off)).map(|e| e.outcome), Some(ExpectedOutcome::Breaks));
        assert_eq!(s.expectation(Target::Rust(Mode::Naive)).map(|e| e.outcome), Some(ExpectedOutcome::Works));
        assert!(s.expectation(Target::Linux).is_some());
    }

    #[test]
    fn an_unknown_key_names_file_line_and_what_is_allowed() {
        let text = GOOD.replace("tunnels = [\"up\"]\ntraffic", "tunnel = [\"up\"]\ntraffic");
        let e = parse(&text).expect_err("unknown key");
        assert!(e.starts_with("scenarios/pptp/one-client.toml:12:1:"), "{e}");
        assert!(e.contains("unknown field `tunnel`") && e.contains("tunnels"), "{e}");
    }

    #[test]
    fn a_bad_value_names_the_allowed_ones() {
        let e = parse(&GOOD.replace("family = \"pptp\"", "family = \"sstp\"")).expect_err("bad family");
        assert!(e.contains(":2:") && e.contains("pptp") && e.contains("l2tp-ipsec"), "{e}");
        let e = parse(&GOOD.replace("do = \"traffic\"", "do = \"dance\"")).expect_err("bad step");
        assert!(e.contains(":9:") && e.contains("dance") && e.contains("reboot"), "{e}");
    }

    #[test]
    fn semantic_mistakes_point_at_their_key() {
        let e = parse(&GOOD.replace("traffic = [\"both\"]", "traffic = [\"both\", \"both\"]")).expect_err("length");
        assert!(e.contains(":13: expect.rust.traffic: 2 entries for 1 clients"), "{e}");
        let e = parse(&GOOD.replace("[expect.linux]\ntunnels = [\"up\"]\n", "")).expect_err("no linux");
        assert!(e.contains("nothing expected for `linux`"), "{e}");
        let e = parse(&GOOD.replace("why = \"GRE is dropped\"\n", "")).expect_err("breaks without why");
        assert!(e.contains(":16: expect.off.outcome"), "{e}");
        let e = parse(&GOOD.replace("do = \"connect\"", "do = \"connect\"\nclients = [3]")).expect_err("client");
        assert!(e.contains("client 3; this topology has clients 1 to 1"), "{e}");
        let e = parse(&format!("{GOOD}\n[expect.linux.counters]\nx = \"0\"\n")).expect_err("dup or counters");
        assert!(e.contains("linux"), "{e}");
        let traffic = |bytes: &str| GOOD.replace("do = \"traffic\"", &format!("do = \"traffic\"\nbytes = {bytes}"));
        let s = parse(&traffic("1000000")).expect("a transfer size");
        assert!(s.file.steps.iter().any(|st| matches!(st, Step::Traffic { bytes: 1_000_000, .. })));
        let directions = |d: &str| GOOD.replace("do = \"traffic\"", &format!("do = \"traffic\"\ndirections = {d}"));
        let s = parse(&directions("[\"out\", \"in\"]")).expect("an order of directions");
        assert!(s.file.steps.iter().any(|st| matches!(st, Step::Traffic { directions, .. }
            if directions == &[Direction::Out, Direction::In])));
        let s = parse(GOOD).expect("loads");
        assert!(
            s.file.steps.iter().any(|st| matches!(st, Step::Traffic { directions, .. }
            if directions == &[Direction::In, Direction::Out])),
            "by default `in` comes first"
        );
        let e = parse(&directions("[\"in\", \"in\"]")).expect_err("twice");
        assert!(e.contains("step 2 (traffic): a direction given twice"), "{e}");
        let endpoints = |kv: &str| GOOD.replacen("[[step]]", &format!("[endpoints]\n{kv}\n\n[[step]]"), 1);
        let e = parse(&endpoints("connect_timeout_s = 100000000000000")).expect_err("a timeout past any clock");
        assert!(e.contains("endpoints.connect_timeout_s") && e.contains("allowed: 1 to 120"), "{e}");
        let e = parse(&endpoints("keepalive_s = 70000")).expect_err("a keepalive wg cannot take");
        assert!(e.contains("allowed: 0 to 3600"), "{e}");
        let esp = |kv: &str| endpoints(kv).replace("family = \"pptp\"", "family = \"esp\"");
        let s = parse(&esp("esp_delay_ms = [700]")).expect("one delay per client");
        assert_eq!(s.file.endpoints.esp_delay_ms.values(1), vec![700]);
        let e = parse(&esp("esp_delay_ms = [1, 2]")).expect_err("two delays for one client");
        assert!(e.contains("endpoints.esp_delay_ms") && e.contains("2 values for 1 clients"), "{e}");
        let e = parse(&esp("esp_rekey_after = 1")).expect_err("a rekey after the only packet");
        assert!(e.contains("endpoints.esp_rekey_after"), "{e}");
        let e = parse(&GOOD.replace("do = \"connect\"", "do = \"connect\"\nclients = [1, 1]")).expect_err("twice");
        assert!(e.contains("step 1 (connect): client 1 given twice"), "{e}");
        let mixed = GOOD.replace("do = \"connect\"", "do = \"connect\"\nat_once = true\n\n[[step]]\ndo = \"connect\"");
        assert!(parse(&mixed).expect_err("mixed").contains("with and without `at_once`"));
        let s = parse(&GOOD.replace("do = \"connect\"", "do = \"connect\"\nat_once = true")).expect("at once");
        assert!(s.connects_at_once());
        let both = parse(&GOOD.replace("do = \"connect\"", "do = \"connect\"\nat_once = true\none_by_one = true"));
        assert!(both.expect_err("two paces").contains("one of them"));
        let staggered = GOOD.replace("do = \"connect\"", "do = \"connect\"\nstagger_s = 0.5");
        assert!(matches!(parse(&staggered).expect("staggered").file.steps[0], Step::Connect { stagger_s: 0.5, .. }));
        let long = parse(&GOOD.replace("do = \"connect\"", "do = \"connect\"\nstagger_s = 61"));
        assert!(long.expect_err("too long").contains("allowed: 0 to 60"));
        let e = parse(&endpoints("tunnels_per_client = 2")).expect_err("two tunnels, one server");
        assert!(e.contains("endpoints.tunnels_per_client") && e.contains("1 to the 1 servers"), "{e}");
        let two =
            endpoints("tunnels_per_client = 2").replacen("[endpoints]", "[topology]\nservers = 2\n\n[endpoints]", 1);
        let s = parse(&two).expect("two tunnels, two servers");
        assert_eq!((s.servers_of(1), s.servers_of(2)), (vec![1, 2], vec![2, 1]));
        let e = parse(&traffic("100000001")).expect_err("too many bytes");
        assert!(e.contains("step 2 (traffic): 100000001 bytes; allowed: 0 to 100000000"), "{e}");
        let nobody =
            GOOD.replace("[expect.off]\n", "[expect.naive]\nmisdelivered = { c1 = \"nobody\" }\n\n[expect.off]\n");
        let s = parse(&nobody).expect("nobody");
        assert_eq!(s.file.expect[&ExpectKey::Naive].misdelivered[&ClientRef(1)], MisdeliveredTo::Nobody);
    }

    #[test]
    fn a_case_must_be_a_plain_file_name() {
        let with_case = |case: &str| GOOD.replace("description =", &format!("case = {case}\ndescription ="));
        let s = parse(&with_case("\"same-call-id_2.v1\"")).expect("a plain case name");
        assert_eq!(s.id, "pptp::same-call-id_2.v1");
        for bad in [
            "\"../../etc/cron.d/x\"",
            "\"..\"",
            "\"a/b\"",
            "\"\"",
            "\".hidden\"",
            "\"a..b\"",
            "\"nul\\u0000\"",
            "\"back\\\\slash\"",
            "\"sp ace\"",
            "\"caf\u{e9}\"",
        ] {
            let e = parse(&with_case(bad)).expect_err(bad);
            assert!(e.starts_with("scenarios/pptp/one-client.toml:3: case: "), "{bad}: {e}");
        }
        let e = parse(&with_case(&format!("\"{}\"", "x".repeat(CASE_MAX + 1)))).expect_err("too long");
        assert!(e.contains(":3: case: must be 1 to 64 characters long"), "{e}");
        // A case from the file name is checked too.
        let e = Scenario::parse(Path::new("scenarios/pptp/one client.toml"), GOOD).expect_err("file name");
        assert!(e.contains("the file name gives the case `one client`"), "{e}");
    }

    #[test]
    fn the_readme_example_loads() {
        let readme = include_str!("../../scenarios/README.md");
        let start = readme.find("```toml\n").expect("the README has an example") + 8;
        let text = &readme[start..];
        let text = &text[..text.find("```").expect("the example ends")];
        let s = Scenario::parse(Path::new("scenarios/pptp/same-call-id.toml"), text).expect("the example is valid");
        assert_eq!(s.targets().len(), 4);
    }

    #[test]
    fn router_fields_lay_over_the_preset_and_bad_ones_are_named() {
        let s =
            parse(&GOOD.replace(
                "[[step]]\ndo = \"connect\"",
                "[router]\ntimeouts = { udp = 4 }\n\n[[step]]\ndo = \"connect\"",
            ))
            .expect("loads");
        let p = s.profile(Mode::Naive).expect("profile");
        assert_eq!(p.timeouts.udp, 4);
        assert_eq!(p.pptp, crate::nat::profile::PptpMode::Naive);
        let e = parse(&GOOD.replace("[[step]]\ndo = \"connect\"", "[router]\nwarp = 9\n\n[[step]]\ndo = \"connect\""))
            .expect_err("bad field");
        assert!(e.contains("router") && e.contains("warp"), "{e}");
    }
}
