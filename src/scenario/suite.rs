//! Playing many scenarios: which routers each is played against, how each
//! router is made, and a pool of workers (each scenario has its own lab, so
//! they run side by side).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::early::Pace;
use super::format::{Scenario, Target};
use super::observed::Judge;
use super::play::{MissedPremise, Outcome, Status, play};
use super::preflight;
use crate::router::{Direct, ExternalRouter, LinuxNat, RouterUnderTest, RustNat};

/// The routers a run plays scenarios against.
#[derive(Debug, Clone)]
pub enum Routers {
    /// The Rust NAT, in every mode each file lists.
    Rust,
    /// The Linux kernel's NAT.
    Linux,
    /// Both.
    Both,
    /// A real router on two NICs.
    External(ExternalRouter),
}

impl Routers {
    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Routers::Rust => "rust (Rust NAT, every mode)".into(),
            Routers::Linux => "linux (Linux kernel NAT)".into(),
            Routers::Both => "rust and linux".into(),
            Routers::External(e) => e.name(),
        }
    }

    /// The targets `s` is played against.
    pub fn targets(&self, s: &Scenario) -> Vec<Target> {
        let all = s.targets();
        match self {
            Routers::Rust => all.into_iter().filter(|t| matches!(t, Target::Rust(_))).collect(),
            Routers::Linux => vec![Target::Linux],
            Routers::Both => all,
            Routers::External(_) => vec![Target::External],
        }
    }

    /// How many runs may play at once when `asked` are: one for an
    /// external router, which can only sit in one lab at a time.
    pub fn jobs(&self, asked: usize) -> usize {
        match self {
            Routers::External(_) => 1,
            _ => asked.max(1),
        }
    }

    /// The routers whose NAT behaviour a run measures: the Rust NAT (its
    /// `full` profile: every mode shares its mapping and timeouts), the
    /// Linux NAT, or the external router.
    pub fn behaviour_routers(&self, binary: &std::path::Path) -> Vec<Box<dyn RouterUnderTest>> {
        let rust = || -> Box<dyn RouterUnderTest> {
            let profile = crate::nat::Profile::preset("full").unwrap_or_default();
            Box::new(RustNat { profile, binary: binary.to_path_buf() })
        };
        let linux = || -> Box<dyn RouterUnderTest> { Box::new(LinuxNat { pptp_helper: true }) };
        match self {
            Routers::Rust => vec![rust()],
            Routers::Linux => vec![linux()],
            Routers::Both => vec![rust(), linux()],
            Routers::External(e) => vec![Box::new(e.clone())],
        }
    }

    /// Whether a run measures NAT behaviour unless told: for an external
    /// router, whose behaviour is what its users do not know.
    pub fn measures_behaviour(&self) -> bool {
        matches!(self, Routers::External(_))
    }

    /// What a verdict is about unless the user says: whether the VPNs work
    /// for a real router, everything the file expects for the suite's own.
    pub fn default_judge(&self) -> Judge {
        match self {
            Routers::External(_) => Judge::Vpn,
            _ => Judge::Exact,
        }
    }
}

/// The router for `target`, with `binary` as the Rust NAT's program.
pub fn router_for(
    s: &Scenario,
    target: Target,
    routers: &Routers,
    binary: &std::path::Path,
) -> Result<Box<dyn RouterUnderTest>, String> {
    Ok(match (target, routers) {
        (Target::Rust(mode), _) => Box::new(RustNat { profile: s.profile(mode)?, binary: binary.to_path_buf() }),
        (Target::Linux, _) => Box::new(LinuxNat { pptp_helper: true }),
        (Target::External, Routers::External(e)) => Box::new(e.clone()),
        (Target::External, _) => return Err("no external router was given (--lan-port, --wan-port)".into()),
        (Target::Direct, _) => Box::new(Direct),
    })
}

/// How runs are judged: what a verdict is about, and how soon a blocked
/// tunnel is judged down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct How {
    pub judge: Judge,
    pub pace: Pace,
}

impl How {
    /// Everything the files expect, judged as soon as the evidence is in.
    pub const EXACT: How = How { judge: Judge::Exact, pace: Pace::Early };
}

/// How many times a run is played while its lab misses the story's premise
/// on its own, before anything it depends on crossed the router (clients
/// whose calls should start together started apart on a loaded machine; a
/// capture lost packets). Each miss is on the outcome; the last one is a
/// lab error. A premise a router could make miss is never played again: an
/// intermittent router bug must not be retried until lucky.
const PREMISE_ATTEMPTS: usize = 2;

/// Plays `s` against `target`, again while its lab misses the story's
/// premise (see [`PREMISE_ATTEMPTS`]); a router that cannot be made, or a
/// family whose preflight failed, is a lab error.
pub fn play_one(s: &Scenario, target: Target, routers: &Routers, binary: &std::path::Path, how: How) -> Outcome {
    if target == Target::External
        && let Some(why) = needs_control(s)
    {
        let mut o = Outcome::blank(s, target);
        o.judge = how.judge;
        o.status = super::play::Status::Skipped;
        o.why = Some(format!("{why}, which the suite cannot do to an external router"));
        return o;
    }
    if s.expectation(target).is_some_and(|e| e.skip.is_none())
        && let Err(e) = preflight::family_works(s.file.family)
    {
        let mut o = Outcome::blank(s, target);
        o.judge = how.judge;
        o.error = Some(e);
        return o;
    }
    match router_for(s, target, routers, binary) {
        // A real router keeps what an attempt left in its tables: a second
        // attempt through it would be another story.
        Ok(r) if target == Target::External => play(s, target, r.as_ref(), how.judge, how.pace),
        Ok(r) => replay_on_missed_premise(|| play(s, target, r.as_ref(), how.judge, how.pace)),
        Err(e) => {
            let mut o = Outcome::blank(s, target);
            o.judge = how.judge;
            o.error = Some(e);
            o
        }
    }
}

/// Plays with `play` again while an attempt's lab missed the story's
/// premise on its own (every premise it missed is
/// [`missed_by_lab`](super::observed::Check::missed_by_lab)), at most
/// [`PREMISE_ATTEMPTS`] times; the outcome lists the misses before it.
fn replay_on_missed_premise(mut play: impl FnMut() -> Outcome) -> Outcome {
    let mut missed = Vec::new();
    loop {
        let mut o = play();
        let premises: Vec<&super::observed::Check> = super::play::missed_premises(&o.checks).collect();
        let by_lab = !premises.is_empty() && premises.iter().all(|c| c.missed_by_lab);
        if by_lab && missed.len() + 1 < PREMISE_ATTEMPTS {
            let premise = premises.iter().map(|c| c.line()).collect::<Vec<_>>().join("; ");
            missed.push(MissedPremise { premise, kept: o.kept.clone() });
            continue;
        }
        o.missed_premises = missed;
        return o;
    }
}

/// What a scenario needs to do to its router, if anything: change its
/// profile, or reboot it.
pub fn needs_control(s: &Scenario) -> Option<&'static str> {
    use super::format::Step;
    if !s.file.router.is_empty() || s.file.steps.iter().any(|st| matches!(st, Step::Profile { .. })) {
        return Some("it needs a router profile change");
    }
    if s.file.steps.iter().any(|st| matches!(st, Step::Reboot)) {
        return Some("it reboots the router");
    }
    if s.file.topology.lan != super::format::TopologyDoc::default().lan {
        return Some("it needs the router's LAN on another prefix");
    }
    None
}

/// Every scenario with each target `routers` plays it against, those
/// whose test name contains `filter` (all without one).
pub fn work<'a>(scenarios: &'a [Scenario], routers: &Routers, filter: Option<&str>) -> Vec<(&'a Scenario, Target)> {
    scenarios
        .iter()
        .flat_map(|s| routers.targets(s).into_iter().map(move |t| (s, t)))
        .filter(|(s, t)| filter.is_none_or(|f| s.name(*t).contains(f)))
        .collect()
}

/// Runs played at once unless told: 16 per core, because a run mostly
/// waits on daemons and timeouts (on 2 cores the main job is fastest with
/// 32 to 48 at once; past that the machine is overloaded and stories that
/// need their clients' packets in order lose it), and at most one per
/// 256 MiB of available memory.
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let by_memory = available_memory().map_or(usize::MAX, |bytes| (bytes >> 28) as usize);
    (16 * cores).min(by_memory).max(1)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The indices of `work`, the longest runs first (by
/// [`Scenario::expected_seconds`]), so that a suite does not end waiting
/// on a long run that started last.
pub fn longest_first(work: &[(&Scenario, Target)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..work.len()).collect();
    let expected = |i: usize| work[i].0.expected_seconds(work[i].1);
    order.sort_by(|a, b| expected(*b).total_cmp(&expected(*a)));
    order
}

/// Plays each (scenario, target) of `work` on `jobs` workers (one for an
/// external router), the longest first, judged as `how` says; `progress`
/// hears of each outcome as it lands. Outcomes come back in input order.
pub fn run_all(
    work: &[(&Scenario, Target)],
    routers: &Routers,
    binary: &std::path::Path,
    jobs: usize,
    how: How,
    progress: &(dyn Fn(usize, usize, &Outcome) + Sync),
) -> Vec<Outcome> {
    let jobs = routers.jobs(jobs);
    let order = longest_first(work);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; work.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while let Some(&k) = order.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let (s, t) = &work[k];
                    let o = play_one(s, *t, routers, binary, how);
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    progress(n, work.len(), &o);
                    if let Ok(mut r) = results.lock() {
                        r[k] = Some(o);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap_or_default().into_iter().flatten().collect()
}

/// A run played more than once whose outcomes differed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Flaky {
    /// `family::case::target`.
    pub name: String,
    /// Each status seen and how many times, in the order first seen.
    pub statuses: Vec<(Status, usize)>,
}

impl Flaky {
    /// `7 pass, 3 FAIL`.
    pub fn counts(&self) -> String {
        self.statuses.iter().map(|(st, n)| format!("{n} {}", st.word())).collect::<Vec<_>>().join(", ")
    }
}

/// Plays `work` `repeat` times over (every round on the same workers, see
/// [`run_all`]) and folds each run's outcomes into one: its first FAIL,
/// else its first ERROR, else its first outcome. Returns the folded
/// outcomes in input order and the runs whose outcomes differed.
pub fn run_repeated(
    work: &[(&Scenario, Target)],
    routers: &Routers,
    binary: &std::path::Path,
    jobs: usize,
    how: How,
    repeat: usize,
    progress: &(dyn Fn(usize, usize, &Outcome) + Sync),
) -> (Vec<Outcome>, Vec<Flaky>) {
    let rounds: Vec<(&Scenario, Target)> = (0..repeat.max(1)).flat_map(|_| work.iter().copied()).collect();
    fold(run_all(&rounds, routers, binary, jobs, how, progress), work.len())
}

/// Folds `outcomes`, rounds of `runs` outcomes each (see [`run_repeated`]).
fn fold(outcomes: Vec<Outcome>, runs: usize) -> (Vec<Outcome>, Vec<Flaky>) {
    let mut each: Vec<Vec<Outcome>> = (0..runs).map(|_| Vec::new()).collect();
    for (i, o) in outcomes.into_iter().enumerate() {
        if let Some(v) = each.get_mut(i % runs.max(1)) {
            v.push(o);
        }
    }
    let mut folded = Vec::new();
    let mut flaky = Vec::new();
    for mut played in each.into_iter().filter(|v| !v.is_empty()) {
        let mut statuses: Vec<(Status, usize)> = Vec::new();
        for o in &played {
            match statuses.iter_mut().find(|(st, _)| *st == o.status) {
                Some((_, n)) => *n += 1,
                None => statuses.push((o.status, 1)),
            }
        }
        let pick = [Status::Fail, Status::Error]
            .iter()
            .find_map(|st| played.iter().position(|o| o.status == *st))
            .unwrap_or(0);
        let o = played.swap_remove(pick);
        if statuses.len() > 1 {
            flaky.push(Flaky { name: o.name.clone(), statuses });
        }
        folded.push(o);
    }
    (folded, flaky)
}

/// The default report directory.
pub fn default_report_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("vpn-passthrough-report")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::format::Mode;

    fn outcomes(case: &str, statuses: &[Status]) -> Vec<Outcome> {
        let scenario = Scenario::parse(
            std::path::Path::new("x/pptp/t.toml"),
            "family = \"pptp\"\ndescription = \"d\"\n[[step]]\ndo = \"connect\"\n[expect.rust]\n[expect.linux]\n",
        )
        .expect("scenario");
        statuses
            .iter()
            .map(|st| {
                let mut o = Outcome::blank(&scenario, Target::Rust(Mode::Full));
                o.name = format!("pptp::{case}::rust-full");
                o.status = *st;
                o
            })
            .collect()
    }

    #[test]
    fn a_run_whose_lab_misses_the_premise_on_its_own_is_played_again_and_says_so() {
        use Status::*;
        let premise = |holds: bool, by_lab: bool| {
            crate::scenario::observed::premise("calls at once", holds, "300 ms apart").missed_by_lab(by_lab)
        };
        let attempt = |status: Status, holds: bool, by_lab: bool| {
            let mut o = outcomes("a", &[status]).remove(0);
            o.checks.push(premise(holds, by_lab));
            o.kept = (!holds).then(|| PathBuf::from("/dev/shm/attempt"));
            o
        };
        // Missed by the lab, then met: the pass, with the miss and its logs.
        let mut attempts = 0;
        let o = replay_on_missed_premise(|| {
            attempts += 1;
            if attempts == 1 { attempt(Error, false, true) } else { attempt(Pass, true, true) }
        });
        assert_eq!((attempts, o.status, o.missed_premises.len()), (2, Pass, 1));
        assert!(o.missed_premises[0].premise.contains("calls at once"), "{:?}", o.missed_premises);
        assert_eq!(o.missed_premises[0].kept, Some(PathBuf::from("/dev/shm/attempt")));
        // Missed by the lab every time: the last attempt's lab error.
        attempts = 0;
        let o = replay_on_missed_premise(|| {
            attempts += 1;
            attempt(Error, false, true)
        });
        assert_eq!((attempts, o.status, o.missed_premises.len()), (PREMISE_ATTEMPTS, Error, PREMISE_ATTEMPTS - 1));
        // A miss a router could have caused is a lab error at once: an
        // intermittent router bug is not retried until lucky.
        attempts = 0;
        let o = replay_on_missed_premise(|| {
            attempts += 1;
            attempt(Error, false, false)
        });
        assert_eq!((attempts, o.status), (1, Error));
        // A FAIL with its premise met is the router's: never played again.
        attempts = 0;
        let o = replay_on_missed_premise(|| {
            attempts += 1;
            attempt(Fail, true, true)
        });
        assert_eq!((attempts, o.status), (1, Fail));
        assert!(o.missed_premises.is_empty());
    }

    #[test]
    fn repeated_runs_fold_into_their_worst_outcome_and_differing_ones_are_flaky() {
        use Status::*;
        // Two runs, three rounds: a's outcomes alternate with b's.
        let a = outcomes("a", &[Pass, Fail, Pass]);
        let b = outcomes("b", &[ExpectedFailure, ExpectedFailure, ExpectedFailure]);
        let rounds: Vec<Outcome> = a.into_iter().zip(b).flat_map(|(a, b)| [a, b]).collect();
        let (folded, flaky) = fold(rounds, 2);
        let got: Vec<(&str, Status)> = folded.iter().map(|o| (o.name.as_str(), o.status)).collect();
        assert_eq!(got, [("pptp::a::rust-full", Fail), ("pptp::b::rust-full", ExpectedFailure)]);
        assert_eq!(flaky, [Flaky { name: "pptp::a::rust-full".into(), statuses: vec![(Pass, 2), (Fail, 1)] }]);
        assert_eq!(flaky[0].counts(), "2 pass, 1 FAIL");
        let (once, none) = fold(outcomes("c", &[Error]), 1);
        assert_eq!((once.len(), once[0].status, none.len()), (1, Error, 0), "one round: nothing is flaky");
    }
}
