//! The preflight: before a router is judged, each VPN family is brought up
//! between two throwaway lab hosts on a direct link, with no router in
//! between — tunnel up and one ping through it. A family whose preflight
//! fails cannot be judged on this machine: its runs are lab errors, named
//! with the daemon, the log line that explains it and the fix.
//!
//! Each family's preflight runs once per process (`run` and `cargo test`
//! ask before they play a family for the first time; `doctor` runs them
//! all), the families side by side.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::early::Pace;
use super::family;
use super::format::{
    Delivery, Direction, Endpoints, Expect, ExpectKey, ExpectedOutcome, Family, IpsecAuth, Scenario, ScenarioFile,
    Step, Target, TopologyDoc, TunnelState,
};
use super::observed::Judge;
use super::play::{Outcome, Status, play};
use crate::router::Direct;

/// One preflight: a family, and for IPsec the authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Item {
    /// The family.
    pub family: Family,
    /// IPsec authentication (PSK for the other families).
    pub auth: IpsecAuth,
}

impl Item {
    /// Every preflight, in report order.
    pub fn all() -> Vec<Item> {
        Family::ALL.iter().flat_map(|f| Item::of(*f)).collect()
    }

    /// The programs every preflight together runs (names of
    /// [`crate::prereq::TOOLS`]).
    pub fn tools() -> Vec<&'static str> {
        let mut tools: Vec<&'static str> =
            Item::all().iter().flat_map(|i| family::of(i.family).tools(&i.scenario()).iter().copied()).collect();
        tools.sort_unstable();
        tools.dedup();
        tools
    }

    /// The preflights of `family`, one per authentication it is proved
    /// with (IKEv2 has two: PSK and certificates).
    pub fn of(family: Family) -> Vec<Item> {
        family::of(family).preflight_auths().iter().map(|&auth| Item { family, auth }).collect()
    }

    /// `ikev2 (certificates)`, `pptp`.
    pub fn label(&self) -> String {
        if family::of(self.family).preflight_auths().len() > 1 {
            format!("{} ({})", self.family.name(), self.auth.name())
        } else {
            self.family.name().into()
        }
    }

    /// The story: one client connects to one server and pings it through
    /// the tunnel.
    fn scenario(&self) -> Scenario {
        // A client that counts its own echoes sees both directions or none.
        let delivered = if family::of(self.family).counts_own_echoes() { Delivery::Both } else { Delivery::Out };
        let expect = Expect {
            outcome: ExpectedOutcome::Works,
            tunnels: Some(vec![TunnelState::Up]),
            traffic: Some(vec![delivered]),
            ..Expect::default()
        };
        let file = ScenarioFile {
            family: self.family,
            case: Some("preflight".into()),
            description: format!("{} up on a direct link, one ping through it", self.label()),
            modes: Vec::new(),
            topology: TopologyDoc::default(),
            router: toml::Table::new(),
            endpoints: Endpoints { auth: self.auth, ..Endpoints::default() },
            steps: vec![
                Step::Connect { clients: None, at_once: false, one_by_one: false, stagger_s: 0.0 },
                Step::Traffic { clients: None, directions: vec![Direction::Out], bytes: 0, name: "traffic".into() },
            ],
            expect: BTreeMap::from([(ExpectKey::Direct, expect)]),
        };
        let id = format!("{}::preflight", self.family);
        Scenario { path: PathBuf::from(format!("(preflight {})", self.label())), id, case: "preflight".into(), file }
    }
}

/// How one preflight went.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which.
    pub item: Item,
    /// Wall time.
    pub seconds: f64,
    /// `None` when the family works; else the one line that says why not:
    /// the daemon, the log line that explains it, the fix.
    pub failure: Option<String>,
}

impl Report {
    fn of(item: Item, o: &Outcome) -> Report {
        let failure = match o.status {
            Status::Pass => None,
            _ => Some(explain(o)),
        };
        Report { item, seconds: o.seconds, failure }
    }

    /// One line: `ok  pptp  0.9 s` or `FAILED  l2tp: …`.
    pub fn line(&self) -> String {
        match &self.failure {
            None => format!("ok      {:<22} {:.1} s", self.item.label(), self.seconds),
            Some(why) => format!("FAILED  {:<22} {why}", self.item.label()),
        }
    }
}

/// What went wrong, in one line: the first unmet check or the error's
/// first line, then the fix the error names (or where the logs are).
fn explain(o: &Outcome) -> String {
    let text = o.failure();
    let what = match o.checks.iter().find(|c| !c.ok) {
        Some(c) => c.line(),
        // An error that introduces its details ("…:") keeps the first one.
        None => match o.error.as_deref().map(|e| e.lines().map(str::trim).collect::<Vec<_>>()) {
            Some(lines) if lines.len() > 1 && lines[0].ends_with(':') => format!("{} {}", lines[0], lines[1]),
            Some(lines) => lines.first().copied().unwrap_or("no outcome").to_string(),
            None => "no outcome".into(),
        },
    };
    let fix = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("fix: "))
        .map(str::to_string)
        .or_else(|| o.kept.as_ref().map(|k| format!("read the logs kept in {}", k.display())))
        .unwrap_or_else(|| "run `vpn-passthrough doctor`".into());
    if what.contains("fix: ") {
        return what;
    }
    format!("{what}; fix: {fix}")
}

type Slot = Arc<OnceLock<Report>>;

fn slots() -> &'static Mutex<HashMap<Item, Slot>> {
    static SLOTS: OnceLock<Mutex<HashMap<Item, Slot>>> = OnceLock::new();
    SLOTS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn slot(item: Item) -> Slot {
    let mut map = slots().lock().unwrap_or_else(|e| e.into_inner());
    map.entry(item).or_default().clone()
}

/// Runs the preflights of `items` that this process has not run yet, side
/// by side, and returns every one's report (in the order given).
pub fn run(items: &[Item]) -> Vec<Report> {
    let slots: Vec<(Item, Slot)> = items.iter().map(|i| (*i, slot(*i))).collect();
    std::thread::scope(|scope| {
        for (item, slot) in &slots {
            scope.spawn(move || {
                slot.get_or_init(|| {
                    let o = play(&item.scenario(), Target::Direct, &Direct, Judge::Exact, Pace::Slow);
                    Report::of(*item, &o)
                });
            });
        }
    });
    slots.into_iter().filter_map(|(_, s)| s.get().cloned()).collect()
}

/// Runs every preflight; returns the reports and the wall time.
pub fn run_all() -> (Vec<Report>, f64) {
    let started = Instant::now();
    let reports = run(&Item::all());
    (reports, started.elapsed().as_secs_f64())
}

/// Whether `family` works in this lab: its preflights are run once (the
/// first caller runs them, others wait), then remembered. The error is
/// the failing preflight's line.
pub fn family_works(family: Family) -> Result<(), String> {
    let failures: Vec<String> = run(&Item::of(family))
        .into_iter()
        .filter_map(|r| r.failure.map(|f| format!("the {} preflight failed: {f}", r.item.label())))
        .collect();
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_preflight_and_ikev2_two() {
        let all = Item::all();
        for f in Family::ALL {
            assert!(all.iter().any(|i| i.family == f), "{f}");
        }
        assert_eq!(Item::of(Family::Ikev2).len(), 2);
        let labels: Vec<String> = all.iter().map(Item::label).collect();
        assert!(labels.contains(&"ikev2 (certificates)".to_string()), "{labels:?}");
    }

    #[test]
    fn a_preflight_story_expects_a_tunnel_and_a_ping() {
        let s = Item { family: Family::Pptp, auth: IpsecAuth::Psk }.scenario();
        let e = s.expectation(Target::Direct).expect("direct expectations");
        assert_eq!(e.tunnels, Some(vec![TunnelState::Up]));
        assert_eq!(e.traffic, Some(vec![Delivery::Out]));
        assert_eq!(s.file.steps.len(), 2);
    }
}
