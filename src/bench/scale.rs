//! Many tunnels through one router: clients of PPTP, L2TP, IKEv2 with NAT-T
//! and WireGuard behind one NAT, as many of each, one server per family,
//! every client dialling without waiting for the others. Measures the time
//! to build the lab, the time until every tunnel is up, the router's state
//! and memory, and the echoes each tunnel carries; the same for the Rust
//! NAT and the Linux NAT in one run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::lab::{Cmd, LabError, Process, Result, echoes_received};
use crate::nat::Profile;
use crate::router::{LinuxNat, NatLab, ROUTER, RouterUnderTest, RustNat, Shape, client_name};
use crate::scenario::family::{self, Daemons, Stage};
use crate::scenario::format::{Family, Scenario};

/// The families a scale run mixes; client `i` is of `FAMILIES[(i - 1) % 4]`
/// and dials server `(i - 1) % 4 + 1`, its family's.
pub const FAMILIES: [Family; 4] = [Family::Pptp, Family::L2tp, Family::Ikev2, Family::Wireguard];

/// Clients of each family a lab holds at most.
pub const MAX_PER_FAMILY: usize = crate::vpn::pppd::LAB_CLIENTS / FAMILIES.len();

/// Echoes asked through each tunnel.
pub const PINGS: u32 = 5;

/// Lines of what fell short that the figures show.
const SHOWN_LINES: usize = 30;

/// Tunnels down whose notes a shortfall shows whole (a daemon's error and
/// its last log lines); the others by their first line.
const WHOLE_NOTES: usize = 3;

/// How long every tunnel together may take to come up.
const CONNECT_TIMEOUT_S: u64 = 120;

/// One tunnel of a scale run.
#[derive(Debug, Clone)]
pub struct TunnelFigure {
    /// Its family.
    pub family: Family,
    /// From the first client's preparations until it was seen up (tunnels are awaited in
    /// client order, so no earlier than those before it); `None` for a
    /// tunnel that did not come up.
    pub up_after: Option<Duration>,
    /// Echoes back of the [`PINGS`] asked through it.
    pub echoes: u32,
    /// Why it is down.
    pub note: Option<String>,
}

/// What one router did with the tunnels.
#[derive(Debug, Clone, Default)]
pub struct ScaleFigures {
    /// Router name.
    pub router: String,
    /// Building the lab, with the router running.
    pub build: Duration,
    /// From the first client's preparations until every tunnel was up or
    /// given up.
    pub all_up: Duration,
    /// The router's state with every tunnel up.
    pub state: RouterState,
    /// What the router's memory grew by from before the first dial: what
    /// the tunnels' state costs.
    pub memory_added: u64,
    /// Every tunnel, in client order.
    pub tunnels: Vec<TunnelFigure>,
    /// The run directory (every daemon's log), kept when a tunnel was down
    /// or carried no echo.
    pub kept: Option<std::path::PathBuf>,
}

impl ScaleFigures {
    /// Tunnels that came up.
    pub fn up(&self) -> usize {
        self.tunnels.iter().filter(|t| t.up_after.is_some()).count()
    }

    /// Tunnels that carried every echo.
    pub fn carrying(&self) -> usize {
        self.tunnels.iter().filter(|t| t.echoes == PINGS).count()
    }

    /// What falls short of every tunnel up and carrying at least `need`
    /// echoes: where the logs are kept, the tunnels down (with why: the
    /// first [`WHOLE_NOTES`] whole, the others by their first line) and
    /// those with fewer echoes; `None` when nothing does.
    pub fn shortfall(&self, need: u32) -> Option<String> {
        let n = self.tunnels.len();
        if self.tunnels.iter().all(|t| t.up_after.is_some() && t.echoes >= need) {
            return None;
        }
        let mut s = format!(
            "{}: {} of {n} tunnels up, {} carrying all {PINGS} echoes, {} with at least {need}",
            self.router,
            self.up(),
            self.carrying(),
            self.tunnels.iter().filter(|t| t.echoes >= need).count()
        );
        if let Some(dir) = &self.kept {
            let _ = write!(s, "; logs kept in {}", dir.display());
        }
        let mut whole = WHOLE_NOTES;
        for (k, t) in self.tunnels.iter().enumerate() {
            let why = match &t.note {
                Some(note) if whole > 0 => {
                    whole -= 1;
                    note.trim_end().replace('\n', "\n    ")
                }
                Some(note) => note.lines().next().unwrap_or("down").to_string(),
                None if t.echoes < need => format!("{} of {PINGS} echoes", t.echoes),
                None => continue,
            };
            let _ = write!(s, "\n  c{} ({}): {why}", k + 1, t.family.name());
        }
        Some(s)
    }

    /// The router's figures by family, and what fell short.
    pub fn render(&self) -> String {
        let mut s = format!("  {}: {} of {} tunnels up\n", self.router, self.up(), self.tunnels.len());
        for line in self.by_family() {
            let _ = writeln!(s, "    {line}");
        }
        if let Some(dir) = &self.kept {
            let _ = writeln!(s, "    logs kept in {}", dir.display());
        }
        if let Some(short) = self.shortfall(PINGS) {
            let lines: Vec<&str> = short.lines().skip(1).collect();
            for line in lines.iter().take(SHOWN_LINES) {
                let _ = writeln!(s, "  {line}");
            }
            if lines.len() > SHOWN_LINES {
                let _ = writeln!(s, "    and {} more lines", lines.len() - SHOWN_LINES);
            }
        }
        s
    }

    /// One line per family: tunnels up, when the last of them was seen up
    /// (tunnels are awaited in client order, so a tunnel is seen up no
    /// earlier than those before it), echoes.
    fn by_family(&self) -> Vec<String> {
        FAMILIES
            .iter()
            .map(|f| {
                let of: Vec<&TunnelFigure> = self.tunnels.iter().filter(|t| t.family == *f).collect();
                let up = of.iter().filter(|t| t.up_after.is_some()).count();
                let last = of.iter().filter_map(|t| t.up_after).max().unwrap_or_default();
                let echoes: u32 = of.iter().map(|t| t.echoes).sum();
                let carrying = of.iter().filter(|t| t.echoes == PINGS).count();
                format!(
                    "{:<10} {up:>3}/{} up (the last seen up at {:>5.1} s), {carrying:>3} with all {PINGS} echoes, {echoes} echoes in all",
                    f.name(),
                    of.len(),
                    last.as_secs_f64()
                )
            })
            .collect()
    }
}

/// Both routers' figures.
#[derive(Debug, Clone)]
pub struct ScaleBenchReport {
    /// The Rust NAT (`full` profile).
    pub rust: ScaleFigures,
    /// The Linux NAT, the reference.
    pub linux: ScaleFigures,
}

impl ScaleBenchReport {
    /// The report as text, with ratios Rust / Linux.
    pub fn render(&self) -> String {
        let (r, l) = (&self.rust, &self.linux);
        let mut s = format!(
            "scale benchmark: {} tunnels through one NAT ({} each of {}), the clients dialling without waiting for one another\n",
            r.tunnels.len(),
            r.tunnels.len() / FAMILIES.len(),
            FAMILIES.map(Family::name).join(", ")
        );
        let _ = writeln!(s, "  {:<34} {:>12} {:>12} {:>10}", "", "rust-nat", "linux-nat", "rust/linux");
        // Ratios of like figures; the two routers' state and memory count
        // different things.
        let ratio = |a: f64, b: f64, like: bool| if like && b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
        let kib = |b: u64| b as f64 / 1024.0;
        let rows = [
            ("lab built (s)", r.build.as_secs_f64(), l.build.as_secs_f64(), 1, true),
            ("every tunnel up or given up (s)", r.all_up.as_secs_f64(), l.all_up.as_secs_f64(), 1, true),
            ("tunnels up", r.up() as f64, l.up() as f64, 0, true),
            (&*format!("tunnels with all {PINGS} echoes"), r.carrying() as f64, l.carrying() as f64, 0, true),
            ("state entries (1)", r.state.entries as f64, l.state.entries as f64, 0, false),
            ("router memory, KiB (2)", kib(r.state.bytes), kib(l.state.bytes), 0, false),
            ("  added by the tunnels, KiB", kib(r.memory_added), kib(l.memory_added), 0, false),
        ];
        for (what, a, b, digits, like) in rows {
            let _ = writeln!(s, "  {what:<34} {a:>12.digits$} {b:>12.digits$} {:>10}", ratio(a, b, like));
        }
        let _ = writeln!(s, "  (1) rust-nat: {}; linux-nat: {}", r.state.entries_of, l.state.entries_of);
        let _ = writeln!(s, "  (2) rust-nat: {}; linux-nat: {}", r.state.memory_of, l.state.memory_of);
        s.push_str(&r.render());
        s.push_str(&l.render());
        s
    }
}

/// The scenarios a lab of `clients` clients (and one server per family)
/// reads each family's endpoints from, in [`FAMILIES`] order.
pub fn scenarios(clients: usize) -> Result<Vec<Scenario>> {
    FAMILIES.iter().map(|f| scenario(*f, clients)).collect()
}

/// The scenario family `f`'s endpoints read in a lab of `clients` clients
/// and one server per family.
fn scenario(f: Family, clients: usize) -> Result<Scenario> {
    let text = format!(
        "family = \"{}\"\ndescription = \"{clients} tunnels of four families through one NAT\"\n\
         [topology]\nclients = {clients}\nservers = {}\n[endpoints]\nconnect_timeout_s = {CONNECT_TIMEOUT_S}\n\
         [[step]]\ndo = \"connect\"\n[expect.rust]\n[expect.linux]\n",
        f.name(),
        FAMILIES.len()
    );
    Scenario::parse(std::path::Path::new("bench/scale.toml"), &text).map_err(LabError::Input)
}

/// Puts `per_family` clients of each of [`FAMILIES`] through `router` at
/// once and measures it.
pub fn measure(router: &dyn RouterUnderTest, per_family: usize) -> Result<ScaleFigures> {
    let clients = per_family * FAMILIES.len();
    let scenarios = scenarios(clients)?;
    let shape = Shape { servers: FAMILIES.len(), ..Shape::new(clients) };
    let started = Instant::now();
    let nl = NatLab::build_shaped(router, &shape, |t| t)?;
    let mut figures = ScaleFigures { router: router.name(), ..ScaleFigures::default() };
    figures.build = started.elapsed();
    let played = router_state(&nl).and_then(|before| play(&nl, &scenarios, clients, before.bytes, &mut figures));
    if played.is_err() || figures.shortfall(1).is_some() {
        nl.lab.keep_dir();
        figures.kept = Some(nl.lab.dir().to_path_buf());
    }
    let teardown = nl.lab.teardown();
    // A run that ended in an error kept its directory above.
    let kept = figures.kept.as_ref().map(|d| format!("\nlogs kept in {}", d.display())).unwrap_or_default();
    played.map_err(|e| LabError::Input(format!("{e}{kept}")))?;
    teardown?;
    Ok(figures)
}

/// Starts the servers, dials every client at once, awaits every tunnel,
/// pings through each, reads the router's state, and stops the clients.
/// A client that cannot dial or whose tunnel fails is a tunnel down, with
/// why; a server that cannot start is an error.
fn play(
    nl: &NatLab,
    scenarios: &[Scenario],
    clients: usize,
    memory_before: u64,
    figures: &mut ScaleFigures,
) -> Result<()> {
    let mut pki = None;
    let mut servers: BTreeMap<usize, Box<dyn Daemons + '_>> = BTreeMap::new();
    for (k, s) in scenarios.iter().enumerate() {
        let mut stage = Stage { scenario: s, lab: &nl.lab, shape: &nl.shape, pki: &mut pki, gate: None };
        servers.insert(k + 1, family::of(s.file.family).start_server(&mut stage, k + 1)?);
    }
    let start = Instant::now();
    let mut dialing = Vec::new();
    for i in 1..=clients {
        let j = (i - 1) % scenarios.len() + 1;
        let s = &scenarios[j - 1];
        let family = family::of(s.file.family);
        let mut stage = Stage { scenario: s, lab: &nl.lab, shape: &nl.shape, pki: &mut pki, gate: None };
        // Each client prepared just before it dials: nothing here needs
        // dials together, and earlier clients' handshakes go on meanwhile.
        dialing.push((j, family.prepare(&mut stage, i, j).and_then(|()| family.dial(&mut stage, i, j))));
    }
    // Every tunnel gets the connect timeout from the last dial, as in a
    // scenario's connect step.
    let deadline = Instant::now() + Duration::from_secs(CONNECT_TIMEOUT_S);
    let mut ends = Vec::new();
    let mut remotes = BTreeMap::new();
    for (i, (j, dialled)) in (1..).zip(dialing) {
        let mut figure = TunnelFigure { family: scenarios[j - 1].file.family, up_after: None, echoes: 0, note: None };
        let server = servers.get(&j).ok_or_else(|| LabError::Input(format!("no server {j}")))?;
        let waited = dialled.and_then(|d| d.wait(server.as_ref(), deadline.saturating_duration_since(Instant::now())));
        match waited {
            Ok((client, tunnel)) => {
                match (tunnel.up, tunnel.remote) {
                    (true, Some(remote)) => {
                        figure.up_after = Some(start.elapsed());
                        remotes.insert(i, remote);
                    }
                    _ => figure.note = Some(tunnel.note.unwrap_or_else(|| "down".into())),
                }
                ends.push(client);
            }
            Err(e) => figure.note = Some(e.to_string()),
        }
        figures.tunnels.push(figure);
    }
    figures.all_up = start.elapsed();
    // Every tunnel's echoes at the same time: a ping process per client.
    let mut pings: BTreeMap<usize, Process> = BTreeMap::new();
    for (&i, remote) in &remotes {
        let host = nl.lab.host(&client_name(i))?;
        let count = PINGS.to_string();
        let cmd = Cmd::argv(&["ping", "-n", "-c", &count, "-i", "0.2", "-W", "2", &remote.to_string()])
            .env("LC_ALL", "C")
            .label("ping");
        pings.insert(i, host.spawn(cmd)?);
    }
    for (i, p) in pings {
        p.wait_until("finish its pings", Duration::from_secs(30), || p.exit_status().is_some())?;
        let _ = p.answer();
        figures.tunnels[i - 1].echoes = echoes_received(&std::fs::read_to_string(p.log_path()).unwrap_or_default());
    }
    // The router's state with every tunnel still up.
    let state = router_state(nl);
    // Clients that gave up are an outcome, not a crash.
    let processes: Vec<Process> = ends.iter().flat_map(|c| c.processes()).cloned().collect();
    let _ = crate::lab::process::stop_all(&processes, Duration::from_secs(3));
    figures.state = state?;
    figures.memory_added = figures.state.bytes.saturating_sub(memory_before);
    Ok(())
}

/// The router's memory and state entries at one moment.
#[derive(Debug, Clone, Default)]
pub struct RouterState {
    /// The Rust NAT's resident set, or the Linux NAT's connection
    /// tracking entries times their size.
    pub bytes: u64,
    /// The Rust NAT's mappings, or the Linux NAT's connection tracking
    /// entries.
    pub entries: u64,
    /// What `bytes` counts.
    pub memory_of: String,
    /// What `entries` counts.
    pub entries_of: String,
}

/// The router's state: the Rust NAT's resident set and live mappings, or
/// the Linux NAT's connection tracking entries and their slab size.
fn router_state(nl: &NatLab) -> Result<RouterState> {
    if let Some(p) = nl.router.process() {
        let bytes = super::core::resident_bytes_of(&p.pid().to_string()) as u64;
        if bytes == 0 {
            return Err(LabError::Input(format!("cannot read the NAT's resident set in /proc/{}/statm", p.pid())));
        }
        let dump = nl.router.dump(&nl.lab)?;
        let entries = dump["mappings"].as_array().map_or(0, Vec::len) as u64;
        return Ok(RouterState {
            bytes,
            entries,
            memory_of: "the NAT process's resident set".into(),
            entries_of: "its live mappings".into(),
        });
    }
    let router = nl.lab.host(ROUTER)?;
    let out = router.run_ok(Cmd::argv(&["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let entries: u64 = text
        .trim()
        .parse()
        .map_err(|_| LabError::Input(format!("nf_conntrack_count reads {:?}, not a count", text.trim())))?;
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    let size = slabinfo
        .lines()
        .find(|l| l.starts_with("nf_conntrack "))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| LabError::Input("/proc/slabinfo has no nf_conntrack line to size the entries by".into()))?;
    let memory_of = format!("its conntrack entries × {size} bytes, their slab object");
    Ok(RouterState { bytes: entries * size, entries, memory_of, entries_of: "its conntrack entries".into() })
}

/// Measures the Rust NAT (`full`) and then the Linux NAT.
pub fn run(per_family: usize, binary: std::path::PathBuf) -> Result<ScaleBenchReport> {
    let profile = Profile::preset("full").ok_or_else(|| LabError::Input("no `full` profile".into()))?;
    let rust = measure(&RustNat { profile, binary }, per_family)?;
    let linux = measure(&LinuxNat { pptp_helper: true }, per_family)?;
    Ok(ScaleBenchReport { rust, linux })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_summary_gives_the_echoes_received() {
        let log = "PING 10.10.0.1 (10.10.0.1) 56(84) bytes of data.\n\n--- 10.10.0.1 ping statistics ---\n\
                   5 packets transmitted, 4 received, 20% packet loss, time 801ms\n";
        assert_eq!(echoes_received(log), 4);
        assert_eq!(echoes_received("ping: connect: Network is unreachable\n"), 0);
    }

    #[test]
    fn a_shortfall_names_tunnels_down_and_tunnels_short_of_echoes() {
        let tunnel = |family, up: bool, echoes, note: Option<&str>| TunnelFigure {
            family,
            up_after: up.then_some(Duration::from_secs(1)),
            echoes,
            note: note.map(str::to_string),
        };
        let mut f = ScaleFigures {
            router: "rust-nat".into(),
            tunnels: vec![tunnel(Family::Pptp, true, PINGS, None), tunnel(Family::L2tp, true, PINGS, None)],
            ..ScaleFigures::default()
        };
        assert_eq!(f.shortfall(PINGS), None);
        f.tunnels.push(tunnel(Family::Ikev2, false, 0, Some("no IKE answer\nlog lines")));
        f.tunnels.push(tunnel(Family::Wireguard, true, 3, None));
        let short = f.shortfall(PINGS).expect("a shortfall");
        assert!(
            short.starts_with("rust-nat: 3 of 4 tunnels up, 2 carrying all 5 echoes, 2 with at least 5"),
            "{short}"
        );
        // The first notes whole, indented; later ones by their first line.
        assert!(short.contains("c3 (ikev2): no IKE answer\n    log lines"), "{short}");
        assert!(short.contains("c4 (wireguard): 3 of 5 echoes"), "{short}");
        assert!(!short.contains("c1"), "{short}");
        for _ in 0..3 {
            f.tunnels.push(tunnel(Family::Ikev2, false, 0, Some("later\nhidden")));
        }
        let many = f.shortfall(PINGS).expect("a shortfall");
        assert_eq!((many.matches("later").count(), many.matches("hidden").count()), (3, 2), "{many}");
        f.kept = Some("/dev/shm/lab".into());
        assert!(f.shortfall(PINGS).is_some_and(|s| s.contains("logs kept in /dev/shm/lab")));
        assert!(f.render().contains("logs kept in /dev/shm/lab"), "{}", f.render());
        f.tunnels.truncate(4);
        let some = f.shortfall(1).expect("c3 is down");
        assert!(some.contains("c3 (ikev2)") && !some.contains("c4"), "{some}");
        assert!(f.render().contains("wireguard    1/1 up"), "{}", f.render());
    }

    #[test]
    fn every_family_of_a_scale_run_takes_two_hundred_clients() {
        for s in scenarios(200).expect("the scale scenarios") {
            assert_eq!((s.file.topology.clients, s.file.topology.servers), (200, 4));
        }
    }
}
