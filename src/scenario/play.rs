//! Plays one scenario against one router: builds its lab, starts the
//! router and the VPN endpoints, runs the steps, captures both sides of the
//! router, and checks what was seen against what the file expects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::early::{self, BlockWatch, Pace};
use super::expect;
use super::family::{self, Daemons, Stage, Tunnel, VpnFamily};
use super::format::{Delivery, Direction, ExpectKey, ExpectedOutcome, Family, Scenario, Step, Target, TunnelState};
use super::ladder::{self, Rung};
use super::observed::{Check, Judge, Observed};
use crate::capture::Capture;
use crate::lab::{Cmd, Host, Lab, LabError, Process, Proto, Result, StartGate};
use crate::router::{self, NatLab, RouterUnderTest, RunningRouter, Shape};
use crate::vpn::pki::TestPki;

/// How a played scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Everything expected was seen, and the VPN works.
    Pass,
    /// Everything expected was seen, and the VPN breaks as expected.
    ExpectedFailure,
    /// Something expected was not seen: the router is to blame.
    Fail,
    /// The run could not judge the router: the lab did not work (a family's
    /// preflight failed, a daemon would not start or died, a step failed
    /// for a reason that does not depend on the router) or did not produce
    /// the situation the story needs (a premise not met).
    Error,
    /// Not played, with the reason.
    Skipped,
}

impl Status {
    /// A short word for the matrix.
    pub fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::ExpectedFailure => "xfail",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
            Status::Skipped => "skip",
        }
    }
}

/// An attempt whose lab missed its story's premise on its own (see
/// [`Check::missed_by_lab`]), so that the run was played again.
#[derive(Debug, Clone, Serialize)]
pub struct MissedPremise {
    /// The premise, as a check's line.
    pub premise: String,
    /// That attempt's run directory, kept (logs and captures).
    pub kept: Option<PathBuf>,
}

/// One scenario played against one router.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `family::case::target`.
    pub name: String,
    /// The family.
    pub family: Family,
    /// The case.
    pub case: String,
    /// The router kind and mode.
    pub target: Target,
    /// The file.
    pub file: PathBuf,
    /// The file's description.
    pub description: String,
    /// How it ended.
    pub status: Status,
    /// Why a `breaks` verdict is expected, or why it was skipped.
    pub why: Option<String>,
    /// Each expectation and what was seen.
    pub checks: Vec<Check>,
    /// What the verdict was about.
    pub judge: Judge,
    /// Why the run could not judge the router (a lab that did not build, a
    /// daemon that did not start, a premise not met).
    pub error: Option<String>,
    /// The last log lines of every endpoint and the router, when the
    /// outcome is not as expected.
    pub logs: Option<String>,
    /// Wall time.
    pub seconds: f64,
    /// The run directory, kept when the scenario failed (logs, pcaps).
    pub kept: Option<PathBuf>,
    /// Earlier attempts whose lab missed the story's premise on its own,
    /// so that the run was played again.
    pub missed_premises: Vec<MissedPremise>,
    /// What crossed the router, LAN and WAN side by side.
    pub ladder: Vec<Rung>,
    /// The lab's shape, for the topology drawing.
    #[serde(skip)]
    pub shape: Shape,
}

impl Outcome {
    /// The outcome in one line, when it is not as expected: the first unmet
    /// expectation (`tunnel c1: expected up, saw down (reason)`) or the lab
    /// error, with how many more there are.
    pub fn summary(&self) -> Option<String> {
        match self.status {
            Status::Error => {
                let e = self.error.as_deref().unwrap_or("the run could not judge the router");
                Some(format!("lab error: {}", e.lines().next().unwrap_or_default()))
            }
            Status::Fail => {
                let failed: Vec<&Check> = self.checks.iter().filter(|c| c.fails(self.judge)).collect();
                let first = failed.first()?;
                let more = match failed.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                Some(format!("{}{more}", first.line()))
            }
            _ => None,
        }
    }

    /// The failure text for a test runner: the unmet expectations or the
    /// lab error, where the logs are, then the logs.
    pub fn failure(&self) -> String {
        let mut s = String::new();
        if self.status == Status::Error {
            s.push_str("lab error: ");
        }
        for c in self.checks.iter().filter(|c| c.fails(self.judge)) {
            s.push_str(&c.line());
            s.push('\n');
        }
        if let Some(e) = &self.error {
            s.push_str(e);
            s.push('\n');
        }
        if let Some(k) = &self.kept {
            s.push_str(&format!("logs and captures kept in {}\n", k.display()));
        }
        for m in &self.missed_premises {
            let kept = m.kept.as_ref().map(|k| format!(" (logs in {})", k.display())).unwrap_or_default();
            s.push_str(&format!("an earlier attempt's lab missed the premise: {}{kept}\n", m.premise));
        }
        if let Some(l) = &self.logs {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

impl Outcome {
    /// An outcome with nothing seen yet: a lab error until the run says
    /// otherwise.
    pub fn blank(scenario: &Scenario, target: Target) -> Outcome {
        Outcome {
            name: scenario.name(target),
            family: scenario.file.family,
            case: scenario.case.clone(),
            target,
            file: scenario.path.clone(),
            description: scenario.file.description.clone(),
            status: Status::Error,
            why: None,
            checks: Vec::new(),
            judge: Judge::Exact,
            error: None,
            logs: None,
            seconds: 0.0,
            kept: None,
            missed_premises: Vec::new(),
            ladder: Vec::new(),
            shape: scenario.file.topology.shape(),
        }
    }

    /// What the router did that the file expected otherwise, when the
    /// verdict was not about it ([`Judge::Vpn`]): one line each.
    pub fn observed_behaviour(&self) -> Vec<String> {
        self.checks.iter().filter(|c| !c.ok && !self.judge.counts(c)).map(Check::line).collect()
    }
}

/// The premises among `checks` that the lab did not produce: a run with
/// one could not judge the router.
pub fn missed_premises(checks: &[Check]) -> impl Iterator<Item = &Check> {
    checks.iter().filter(|c| c.premise && !c.ok)
}

/// The verdict on `checks` under `judge`, for a file that expects
/// `outcome`; with why the run could not judge the router, when it could
/// not (a premise not met, or nothing the verdict is about expected).
pub fn verdict(checks: &[Check], outcome: ExpectedOutcome, judge: Judge) -> (Status, Option<String>) {
    if let Some(p) = missed_premises(checks).next() {
        return (Status::Error, Some(format!("the lab did not produce the story's premise: {}", p.line())));
    }
    if !checks.is_empty() && !checks.iter().any(|c| !c.premise && judge.counts(c)) {
        return (
            Status::Error,
            Some("the file expects only the router's behaviour, which this verdict is not about".into()),
        );
    }
    let status = match (checks.iter().any(|c| c.fails(judge)), outcome) {
        (true, _) => Status::Fail,
        (false, ExpectedOutcome::Works) => Status::Pass,
        (false, ExpectedOutcome::Breaks) => Status::ExpectedFailure,
    };
    (status, None)
}

/// Plays `scenario` against `router` as `target`, judged by `judge`; a
/// file's own `[expect.external]` block is judged whole: what it says of a
/// real router's behaviour matters.
pub fn play(scenario: &Scenario, target: Target, router: &dyn RouterUnderTest, judge: Judge, pace: Pace) -> Outcome {
    let started = Instant::now();
    let mut out = Outcome::blank(scenario, target);
    let own_external = target == Target::External && scenario.file.expect.contains_key(&ExpectKey::External);
    let judge = if own_external { Judge::Exact } else { judge };
    out.judge = judge;
    out.shape = router.place(out.shape);
    let Some(expect) = scenario.expectation(target) else {
        out.error = Some(format!("{}: nothing expected for {}", scenario.path.display(), target.label()));
        return out;
    };
    if let Some(reason) = &expect.skip {
        out.status = Status::Skipped;
        out.why = Some(reason.clone());
        return out;
    }
    out.why = expect.why.clone();
    let evaluate = |o: &Observed| expect::evaluate(scenario, expect, o, target);
    // A run's directory is kept (and its logs read) when its verdict is
    // FAIL or ERROR, not for a behaviour the judge only reports.
    let keep = |checks: &[Check]| matches!(verdict(checks, expect.outcome, judge).0, Status::Fail | Status::Error);
    match run(scenario, target, router, &out.shape.clone(), pace, &evaluate, &keep) {
        Ok((observed, checks, kept, logs)) => {
            // The lab's own shape: with the addresses its hosts leased.
            out.shape = observed.shape.clone();
            out.checks = checks;
            out.ladder = ladder::rungs(&observed.lan, &observed.wan, 80);
            let (status, error) = verdict(&out.checks, expect.outcome, judge);
            out.error = error;
            out.status = status;
            if matches!(status, Status::Fail | Status::Error) {
                out.logs = Some(logs);
                out.kept = kept;
            }
        }
        Err((e, logs, kept)) => {
            out.error = Some(e);
            out.logs = Some(logs).filter(|l| !l.trim().is_empty());
            out.kept = kept;
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    out
}

/// The byte a lab's constant entropy repeats: every client of the lab
/// reads the same (so they pick the same Call ID), and each lab another,
/// so that a router that outlives a lab (an external one) holds no state
/// from the last lab's identical Call IDs, which would capture this lab's
/// GRE. Never zero.
fn entropy_byte() -> u8 {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    0x40 | (NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 0x3f + 1)
}

/// What was seen, its checks, and on failure the kept run directory and
/// the hosts' last log lines; or why the run itself failed, with the logs.
type RunResult =
    std::result::Result<(Observed, Vec<Check>, Option<PathBuf>, String), (String, String, Option<PathBuf>)>;

/// Builds the lab, plays the steps, judges what was seen, tears down. The
/// run directory (logs, pcaps) is kept when `keep` says the checks make a
/// FAIL or ERROR, or the run itself failed.
fn run(
    scenario: &Scenario,
    target: Target,
    router: &dyn RouterUnderTest,
    shape: &Shape,
    pace: Pace,
    judge: &dyn Fn(&Observed) -> Vec<Check>,
    keep: &dyn Fn(&[Check]) -> bool,
) -> RunResult {
    let entropy =
        tempfile::NamedTempFile::new().map_err(|e| (format!("a temporary file: {e}"), String::new(), None))?;
    std::fs::write(entropy.path(), [entropy_byte(); 4096])
        .map_err(|e| (format!("a temporary file: {e}"), String::new(), None))?;
    let constant_entropy = family::of(scenario.file.family).constant_entropy(scenario);
    let nl = NatLab::build_shaped(router, shape, |mut t| {
        if constant_entropy {
            for h in t.hosts.iter_mut().filter(|h| h.name.starts_with('c')) {
                *h = h.clone().bind(entropy.path(), "/dev/random");
            }
        }
        t
    })
    .map_err(|e| (e.to_string(), String::new(), None))?;
    let dir = nl.lab.dir().to_path_buf();
    let NatLab { lab, router: running, shape } = nl;
    let (observed, checks, failed, logs) = {
        let mut player = Player::new(scenario, target, router, &lab, running, shape, pace);
        let observed = player.play().and_then(|()| player.observe());
        let checks = observed.as_ref().map(judge).unwrap_or_default();
        let failed = observed.is_err() || keep(&checks);
        let logs = if failed { player.logs() } else { String::new() };
        // A client program that gave up (no IKE answer, a call refused) is
        // an outcome the expectations judge, not a crash.
        player.stop_clients();
        (observed, checks, failed, logs)
    };
    if failed {
        lab.keep_dir();
    }
    let teardown = lab.teardown();
    match (observed, teardown) {
        (Ok(o), Ok(())) => Ok((o, checks, failed.then_some(dir), logs)),
        (Err(e), _) => Err((e.to_string(), logs, Some(dir))),
        (Ok(_), Err(e)) => Err((format!("teardown: {e}"), logs, Some(dir))),
    }
}

struct Player<'s, 'l> {
    s: &'s Scenario,
    target: Target,
    router: &'s dyn RouterUnderTest,
    lab: &'l Lab,
    running: RunningRouter,
    shape: Shape,
    family: &'static dyn VpnFamily,
    servers: BTreeMap<usize, Box<dyn Daemons + 'l>>,
    clients: BTreeMap<usize, Box<dyn Daemons + 'l>>,
    tunnels: Vec<Tunnel>,
    traffic: BTreeMap<String, Vec<Delivery>>,
    foreign: Vec<bool>,
    /// How many packets the intruder's sprays sent.
    hostile_sent: u64,
    /// Whether client 1 still reached its server after the intruder's
    /// spray.
    forwards_after_hostile: Option<bool>,
    /// Each server's TCP reflector, once a traffic step moved bytes.
    reflectors: BTreeMap<usize, Process>,
    captures: Vec<Capture>,
    pki: Option<TestPki>,
    pace: Pace,
}

impl<'s, 'l> Player<'s, 'l> {
    fn new(
        s: &'s Scenario,
        target: Target,
        router: &'s dyn RouterUnderTest,
        lab: &'l Lab,
        running: RunningRouter,
        shape: Shape,
        pace: Pace,
    ) -> Player<'s, 'l> {
        let n = s.file.topology.clients;
        Player {
            s,
            target,
            router,
            lab,
            running,
            shape,
            family: family::of(s.file.family),
            servers: BTreeMap::new(),
            clients: BTreeMap::new(),
            tunnels: (0..n).map(|_| Tunnel::default()).collect(),
            traffic: BTreeMap::new(),
            foreign: vec![false; n],
            hostile_sent: 0,
            forwards_after_hostile: None,
            reflectors: BTreeMap::new(),
            captures: Vec::new(),
            pki: None,
            pace,
        }
    }

    fn host(&self, name: &str) -> Result<Host<'l>> {
        self.lab.host(name)
    }

    fn play(&mut self) -> Result<()> {
        if self.s.file.endpoints.mss > 0 {
            self.clamp_mss(self.s.file.endpoints.mss)?;
        }
        let [(lan_host, lan_if), (wan_host, wan_if)] = self.router.capture_points(self.lab)?;
        let lan = Capture::start_on(&lan_host, &lan_if, "lan")?;
        let wan = Capture::start_on(&wan_host, &wan_if, "wan")?;
        self.captures = vec![lan, wan];
        for step in self.s.file.steps.clone() {
            self.step(&step)?;
            self.servers_alive()?;
        }
        Ok(())
    }

    /// A server daemon that exited during the story fails the scenario,
    /// with its last log lines.
    fn servers_alive(&self) -> Result<()> {
        for p in self.servers.values().flat_map(|s| s.processes()) {
            if let Some(status) = p.exit_status() {
                return Err(LabError::Input(format!(
                    "host '{}': {} exited during the scenario ({}); last lines of {}:\n{}",
                    p.host(),
                    p.label(),
                    crate::lab::process::describe(status),
                    p.log_path().display(),
                    p.log_tail(10)
                )));
            }
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::Connect { clients, one_by_one, stagger_s, .. } => {
                let clients = self.s.clients_of(clients);
                if *one_by_one {
                    for i in clients {
                        self.connect(&[i], Duration::ZERO)?;
                    }
                } else {
                    self.connect(&clients, Duration::from_secs_f64(*stagger_s))?;
                }
                if let (Some(server), Some(lan)) = (self.servers.get(&1), self.captures.first()) {
                    let stage =
                        Stage { scenario: self.s, lab: self.lab, shape: &self.shape, pki: &mut None, gate: None };
                    self.family.after_connect(&stage, server.as_ref(), lan)?;
                }
            }
            Step::Disconnect { clients } => {
                for i in self.s.clients_of(clients) {
                    if let Some(c) = self.clients.remove(&i) {
                        for p in c.processes() {
                            p.stop(Duration::from_secs(3))?;
                        }
                    }
                    self.tunnels[i - 1] = Tunnel { note: Some("disconnected".into()), ..Tunnel::default() };
                }
            }
            Step::Traffic { clients, directions, bytes, name } => {
                let clients = self.s.clients_of(clients);
                let result = self.traffic(&clients, directions, *bytes)?;
                self.traffic.insert(name.clone(), result);
            }
            Step::Wait { seconds } => std::thread::sleep(Duration::from_secs_f64(*seconds)),
            Step::Rekey { clients } => {
                for i in self.s.clients_of(clients) {
                    if let Some(c) = self.clients.get(&i)
                        && self.tunnels[i - 1].up
                        && let Some(Err(e)) = c.rekey(self.connect_timeout())
                    {
                        self.tunnels[i - 1].up = false;
                        self.tunnels[i - 1].note = Some(format!("rekey failed: {e}"));
                    }
                }
            }
            Step::Reboot => {
                self.router.reboot(self.lab, &mut self.running, &self.shape)?;
            }
            Step::LinkDown { client } | Step::LinkUp { client } => {
                let host = self.host(&router::client_name(*client))?;
                let up = matches!(step, Step::LinkUp { .. });
                let dev = host.ifname("eth0")?;
                host.run_ok(Cmd::argv(&["ip", "link", "set", "dev", &dev, if up { "up" } else { "down" }]))?;
                if up {
                    // The kernel dropped the default route with the link;
                    // a DHCP client would put it back.
                    let gw = self.shape.client_lan().addr().to_string();
                    host.run_ok(Cmd::argv(&["ip", "route", "replace", "default", "via", &gw, "dev", &dev]))?;
                }
            }
            Step::Profile { mode } => {
                let profile = self.s.profile(*mode).map_err(LabError::Input)?;
                self.router.change_profile(self.lab, &mut self.running, &self.shape, profile)?;
            }
            Step::Hostile { rounds } => {
                let bin = crate::lab::own_binary()?;
                let intruder = self.host(router::INTRUDER)?;
                let public = self.shape.wan.addr().to_string();
                // Resolve the router's address first: packets sent while ARP
                // is pending would be lost before they reach it.
                intruder.exec(Cmd::argv(&["ping", "-n", "-c", "1", "-W", "1", &public]))?;
                // The public ports of the clients' UDP flows, from the WAN
                // capture: what an attacker who watched the router would aim at.
                let ports: BTreeSet<u16> = match self.captures.get(1) {
                    Some(wan) => wan
                        .facts()?
                        .packets
                        .iter()
                        .filter(|p| p.src == self.shape.wan.addr())
                        .filter_map(|p| p.what.ports())
                        .filter(|(proto, _, _)| *proto == 17)
                        .map(|(_, sport, _)| sport)
                        .collect(),
                    None => BTreeSet::new(),
                };
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                let mut cmd = Cmd::new(bin.to_string_lossy()).args(&["peer", "hostile", &public, "--rounds"]);
                cmd = cmd.arg(rounds.to_string());
                if !ports.is_empty() {
                    cmd = cmd.args(&["--ports", &ports.join(",")]);
                }
                let out = intruder.run_ok(cmd)?;
                let said = String::from_utf8_lossy(&out.stdout);
                self.hostile_sent += crate::vpn::scripted::parse_hostile_report(&said).ok_or_else(|| {
                    LabError::Input(format!("the intruder's peer said nothing of what it sent: {said}"))
                })?;
                // The router still forwards: client 1 reaches its server
                // outside any tunnel.
                let c1 = self.host(&router::client_name(1))?;
                self.forwards_after_hostile = Some(ping(&c1, self.shape.server_addr(self.s.server_of(1)))?);
            }
        }
        Ok(())
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.s.file.endpoints.connect_timeout_s)
    }

    /// The family's view of this run, for setting endpoints up.
    fn stage(&mut self) -> Stage<'_, 'l> {
        Stage { scenario: self.s, lab: self.lab, shape: &self.shape, pki: &mut self.pki, gate: None }
    }

    fn ensure_server(&mut self, j: usize) -> Result<()> {
        if self.servers.contains_key(&j) {
            return Ok(());
        }
        let server = self.family.start_server(&mut self.stage(), j)?;
        self.servers.insert(j, server);
        Ok(())
    }

    /// Starts every server client `i` holds a tunnel to.
    fn ensure_servers_of(&mut self, i: usize) -> Result<()> {
        for to in self.s.servers_of(i) {
            self.ensure_server(to)?;
        }
        Ok(())
    }

    /// Keeps client `i`'s daemons and its tunnel; a tunnel that is down is
    /// noted with the daemon's last log lines.
    fn settle(&mut self, i: usize, client: Box<dyn Daemons + 'l>, mut tunnel: Tunnel) {
        if let Some(note) = tunnel.note.take() {
            tunnel.note = Some(explain_down(&note, client.as_ref()));
        }
        self.clients.insert(i, client);
        self.tunnels[i - 1] = tunnel;
    }

    /// Every client of `clients` dials, each `stagger` after the previous
    /// one; then each tunnel is awaited in turn (the daemons run
    /// meanwhile), all within one connect timeout from the moment the last
    /// one dialled. A tunnel that does not come up is noted with the
    /// daemon's last log lines.
    fn connect(&mut self, clients: &[usize], stagger: Duration) -> Result<()> {
        let since = early::now();
        for &i in clients {
            self.ensure_servers_of(i)?;
        }
        let family = self.family;
        for &i in clients {
            let j = self.s.server_of(i);
            family.prepare(&mut self.stage(), i, j)?;
        }
        // Clients that dial at once wait at a gate until every one has
        // been launched, then start together.
        let gate = match (clients.len() > 1, stagger.is_zero()) {
            (true, true) => Some(StartGate::new(self.lab.dir(), "connect")),
            _ => None,
        };
        let mut dialing = Vec::new();
        for (k, &i) in clients.iter().enumerate() {
            if k > 0 && !stagger.is_zero() {
                std::thread::sleep(stagger);
            }
            let mut stage =
                Stage { scenario: self.s, lab: self.lab, shape: &self.shape, pki: &mut self.pki, gate: gate.as_ref() };
            dialing.push((i, family.dial(&mut stage, i, self.s.server_of(i))?));
        }
        if let Some(gate) = gate {
            gate.open(self.connect_timeout())?;
        }
        let deadline = Instant::now() + self.connect_timeout();
        let watch = self.watch(clients, since)?;
        let done = AtomicBool::new(false);
        let judged = Mutex::new(BTreeMap::new());
        let server_addrs: BTreeMap<usize, Ipv4Addr> =
            clients.iter().map(|&i| (i, self.shape.server_addr(self.s.server_of(i)))).collect();
        let note_for = |i: usize| {
            let server = server_addrs.get(&i)?;
            judged.lock().unwrap_or_else(|p| p.into_inner()).get(server).cloned()
        };
        std::thread::scope(|scope| {
            let watching = watch.map(|w| scope.spawn(|| w.run(&done, &judged)));
            // Each client's daemons and tunnel; a client whose programs an
            // early verdict stopped may have no daemons left to keep.
            let mut waited = Vec::new();
            let mut failed = None;
            for (i, d) in dialing {
                let j = self.s.server_of(i);
                let Some(server) = self.servers.get(&j) else {
                    failed = Some(LabError::Input(format!("no server {j}")));
                    break;
                };
                match d.wait(server.as_ref(), deadline.saturating_duration_since(Instant::now())) {
                    Ok((client, tunnel)) => waited.push((i, Some(client), tunnel)),
                    Err(e) => match note_for(i) {
                        Some(note) => waited.push((i, None, Tunnel::down(note))),
                        None => {
                            failed = Some(e);
                            break;
                        }
                    },
                }
            }
            done.store(true, Ordering::SeqCst);
            if let Some(w) = watching {
                let _ = w.join();
            }
            for (i, client, mut tunnel) in waited {
                if let Some(note) = note_for(i).filter(|_| !tunnel.up) {
                    tunnel = Tunnel::down(note);
                }
                match client {
                    Some(client) => self.settle(i, client, tunnel),
                    None => self.tunnels[i - 1] = tunnel,
                }
            }
            failed.map_or(Ok(()), Err)
        })
    }

    /// What an early verdict on the connect step of `clients`, begun at
    /// `since`, watches: nothing at the slow pace, nor through a router
    /// that loses packets on purpose.
    fn watch(&self, clients: &[usize], since: Duration) -> Result<Option<BlockWatch<'l>>> {
        let ([lan, wan, ..], Pace::Early) = (self.captures.as_slice(), self.pace) else { return Ok(None) };
        if let Target::Rust(mode) = self.target
            && self
                .s
                .profile(mode)
                .is_ok_and(|p| p.impair.outbound.loss_percent > 0.0 || p.impair.inbound.loss_percent > 0.0)
        {
            return Ok(None);
        }
        let mut servers: BTreeMap<Ipv4Addr, Vec<Host<'l>>> = BTreeMap::new();
        for &i in clients {
            let client = self.host(&router::client_name(i))?;
            servers.entry(self.shape.server_addr(self.s.server_of(i))).or_default().push(client);
        }
        let wan = (wan.path().to_path_buf(), wan.process().clone());
        Ok(Some(BlockWatch { lan: lan.path().to_path_buf(), wan, servers, since }))
    }

    /// What crossed each client's tunnel in `directions`, in that order: a
    /// ping, then `bytes` over TCP that way if asked. `in` goes last client
    /// first, `out` in order. The default, `in` before `out`, shows which
    /// client a router hands a shared server's packets to: a router that
    /// hands them to the last client that sent is asked before any client's
    /// own traffic (and the acknowledgements it draws) can make that client
    /// the last.
    fn traffic(&mut self, clients: &[usize], directions: &[Direction], bytes: u64) -> Result<Vec<Delivery>> {
        let n = self.s.file.topology.clients;
        let mut out = vec![false; n];
        let mut inb = vec![false; n];
        // A client that measures its own traffic says what crossed.
        let mut measured = false;
        for &i in clients {
            if let Some(own) = self.clients.get(&i).and_then(|c| c.own_traffic()) {
                measured = true;
                (out[i - 1], inb[i - 1]) = (own.all_echoed, own.all_echoed);
                self.foreign[i - 1] = own.foreign;
            }
        }
        if !measured {
            for &dir in directions {
                // Inbound, the last client first: the one a router favours
                // is checked before strays meant for others reach it.
                let order: Vec<usize> = match dir {
                    Direction::Out => clients.to_vec(),
                    Direction::In => clients.iter().rev().copied().collect(),
                };
                for i in order {
                    let t = &self.tunnels[i - 1];
                    let (Some(local), Some(remote), true) = (t.local, t.remote, t.up) else { continue };
                    let client = self.host(&router::client_name(i))?;
                    let mut ok = match dir {
                        Direction::Out => ping(&client, remote)?,
                        Direction::In => ping(&self.host(&self.shape.server_name(self.s.server_of(i)))?, local)?,
                    };
                    if ok && bytes > 0 {
                        self.ensure_reflector(self.s.server_of(i))?;
                        ok = transfer(&client, remote, bytes, dir == Direction::In)?;
                    }
                    match dir {
                        Direction::Out => out[i - 1] = ok,
                        Direction::In => inb[i - 1] = ok,
                    }
                }
            }
        }
        Ok((0..n)
            .map(|k| match (out[k], inb[k]) {
                (true, true) => Delivery::Both,
                (true, false) => Delivery::Out,
                (false, true) => Delivery::In,
                (false, false) => Delivery::None,
            })
            .collect())
    }

    /// Server `j`'s TCP reflector, for traffic steps that move bytes.
    fn ensure_reflector(&mut self, j: usize) -> Result<()> {
        if self.reflectors.contains_key(&j) {
            return Ok(());
        }
        let bin = crate::lab::own_binary()?;
        let host = self.host(&self.shape.server_name(j))?;
        let port = REFLECTOR_PORT.to_string();
        let p =
            host.spawn(Cmd::new(bin.to_string_lossy()).args(&["probe", "serve", "--tcp", &port]).label("reflector"))?;
        p.or_stop(p.wait_for_port(Proto::Tcp, REFLECTOR_PORT, Duration::from_secs(5)))?;
        self.reflectors.insert(j, p);
        Ok(())
    }

    /// Every client and server advertises `mss`, so that the other side
    /// sends TCP segments no larger, and sends without segmentation
    /// offloads: with them a TCP sender hands the stack one large packet
    /// that crosses veths and the router whole, whatever the MSS.
    fn clamp_mss(&self, mss: u16) -> Result<()> {
        for name in self.shape.endpoint_hosts() {
            let host = self.host(&name)?;
            host.disable_offloads("eth0")?;
            let rules = format!(
                "table inet mss {{\n  chain out {{\n    type filter hook output priority mangle;\n    tcp flags syn tcp option maxseg size set {mss}\n  }}\n}}\n"
            );
            let file = host.write_conf("mss.nft", &rules)?;
            host.run_ok(Cmd::argv(&["nft", "-f", &file.to_string_lossy()]))?;
        }
        Ok(())
    }

    /// Stops the captures and collects what the steps left.
    fn observe(&mut self) -> Result<Observed> {
        let mut caps = std::mem::take(&mut self.captures).into_iter();
        let (lan, wan) = match (caps.next(), caps.next()) {
            (Some(l), Some(w)) => (l.stop()?, w.stop()?),
            _ => return Err(LabError::Input("the captures were not started".into())),
        };
        let mut counters = BTreeMap::new();
        let wanted = self.s.expectation(self.target).map(|e| &e.counters).filter(|c| !c.is_empty());
        if let Some(wanted) = wanted
            && let Some(all) = self.running.drops(self.lab)?
        {
            for name in wanted.keys() {
                counters.insert(name.clone(), all.get(name).copied().unwrap_or(0));
            }
        }
        Ok(Observed {
            shape: self.shape.clone(),
            tunnels: self.tunnels.iter().map(|t| if t.up { TunnelState::Up } else { TunnelState::Down }).collect(),
            notes: self.tunnels.iter().map(|t| t.note.clone()).collect(),
            inner_addrs: self.tunnels.iter().map(|t| t.local).collect(),
            traffic: self.traffic.clone(),
            foreign: self.foreign.clone(),
            hostile_sent: self.hostile_sent,
            forwards_after_hostile: self.forwards_after_hostile,
            lan,
            wan,
            counters,
        })
    }

    fn stop_clients(&mut self) {
        for c in std::mem::take(&mut self.clients).into_values() {
            for p in c.processes() {
                let _ = p.stop(Duration::from_secs(3));
            }
        }
    }

    /// The last log lines of every client and server.
    fn logs(&self) -> String {
        let mut names = self.shape.endpoint_hosts();
        names.push(router::ROUTER.into());
        names
            .iter()
            .filter_map(|n| self.host(n).ok())
            .map(|h| h.log_tails(8))
            .filter(|t| !t.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why a client's tunnel is down, in one line: the line of the error or of
/// the client's daemon logs that explains it, else the error's first line.
fn explain_down(note: &str, client: &dyn Daemons) -> String {
    let logs: Vec<(String, String)> = client
        .processes()
        .iter()
        .map(|p| (p.label().to_string(), std::fs::read_to_string(p.log_path()).unwrap_or_default()))
        .collect();
    if let Some(line) = crate::vpn::diagnose::explain(note) {
        return line;
    }
    for (label, text) in &logs {
        if let Some(line) = crate::vpn::diagnose::explain(text) {
            return format!("{label}: {line}");
        }
    }
    note.lines().next().unwrap_or_default().to_string()
}

/// The port of the servers' TCP reflectors.
const REFLECTOR_PORT: u16 = 7300;

/// Whether `bytes` crossed over TCP between `client` and the reflector at
/// `server` (from the reflector to the client with `reverse`).
fn transfer(client: &Host<'_>, server: Ipv4Addr, bytes: u64, reverse: bool) -> Result<bool> {
    let bin = crate::lab::own_binary()?;
    let target = format!("{server}:{REFLECTOR_PORT}");
    let mut cmd = Cmd::new(bin.to_string_lossy()).args(&["probe", "transfer", &target, "--bytes", &bytes.to_string()]);
    if reverse {
        cmd = cmd.arg("--reverse");
    }
    // The probe gives up on a stalled tunnel by itself (30 s to connect,
    // 30 s per stalled read or write) and says so in its exit status: a
    // router's failure, not the lab's. This limit is only a backstop.
    Ok(client.exec(cmd.timeout(Duration::from_secs(150)))?.status.success())
}

/// Whether `to` answers a ping from `host`: one echo every 200 ms until the
/// first reply, for at most 3 s.
fn ping(host: &Host<'_>, to: Ipv4Addr) -> Result<bool> {
    host.answers_ping(to.into(), Duration::from_secs_f64(super::format::PING_WINDOW_S))
}
