//! Runs: who owns which names, teardown on signals, and the sweep of what
//! dead runs left behind.
//!
//! A lab claims its run id by creating `/run/vpn-passthrough/runs/<id>` with
//! `O_EXCL`; the record names the owner (pid and start time, so a reused pid
//! is not mistaken for the owner) and the run directory. Namespaces and
//! interfaces of the run all start with `vp<id>-`. When the owner is gone,
//! anything with that prefix is garbage: [`sweep`] kills the processes left in
//! those namespaces, removes the namespaces and any interface of that prefix
//! in the current namespace, and deletes the record. Mounts need no sweep: a
//! host's mounts live in its mount namespace, which ends with its last
//! program and the lab's descriptor of it (closed at the latest when the
//! run's process dies).
//!
//! Adopted interfaces (a switch's real port) are recorded with the
//! namespace that lent them before they move: teardown, the signal path and
//! the sweep all move them back there before removing the namespaces (a
//! deleted namespace gives a physical NIC to the machine's first namespace,
//! and destroys a virtual one).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::{LabError, Result};
use super::names::RunId;
use super::netns;

/// Where run records live (a tmpfs: records vanish with a reboot, as
/// namespaces do).
pub const RUNS_DIR: &str = "/run/vpn-passthrough/runs";

/// What a run record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The run id.
    pub id: RunId,
    /// The owner's pid.
    pub pid: u32,
    /// The owner's start time (clock ticks after boot, `/proc/PID/stat` field 22).
    pub start: u64,
    /// The run directory (configs, logs).
    pub dir: PathBuf,
    /// The inode of the network namespace that lent the run its adopted
    /// interfaces.
    pub home: Option<u64>,
    /// Adopted interfaces and the namespace of the run each one is in:
    /// (interface, namespace name), recorded before the interface moves.
    pub ports: Vec<(String, String)>,
}

impl RunRecord {
    /// A record with no directory and no adopted interfaces yet.
    pub fn new(id: RunId, pid: u32, start: u64) -> RunRecord {
        RunRecord { id, pid, start, dir: PathBuf::new(), home: None, ports: Vec::new() }
    }

    /// The record's text.
    pub fn render(&self) -> String {
        let mut s = format!("pid={}\nstart={}\ndir={}\n", self.pid, self.start, self.dir.display());
        if let Some(home) = self.home {
            s.push_str(&format!("home={home}\n"));
        }
        for (iface, ns) in &self.ports {
            s.push_str(&format!("port={iface} {ns}\n"));
        }
        s
    }

    /// Reads a record's text; `None` if it is not one of ours.
    pub fn parse(id: RunId, text: &str) -> Option<RunRecord> {
        let (mut pid, mut start, mut dir, mut home, mut ports) = (None, None, None, None, Vec::new());
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("start", v)) => start = v.parse().ok(),
                Some(("dir", v)) => dir = Some(PathBuf::from(v)),
                Some(("home", v)) => home = v.parse().ok(),
                // Interface names hold no spaces; ours neither.
                Some(("port", v)) => {
                    if let Some((iface, ns)) = v.split_once(' ') {
                        ports.push((iface.to_string(), ns.to_string()));
                    }
                }
                _ => {}
            }
        }
        Some(RunRecord { id, pid: pid?, start: start?, dir: dir?, home, ports })
    }

    /// Whether the owner is still running (same pid, same start time).
    pub fn owner_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// The start time of a process, `None` if there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)
}

/// The session id of a process (`/proc/PID/stat` field 6).
pub fn session_of(pid: u32) -> Option<u32> {
    stat_field(pid, 6).and_then(|s| u32::try_from(s).ok())
}

/// Field `n` (from 1, as proc(5) numbers them) of `/proc/PID/stat`, for
/// the numeric fields after the command name.
fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after the last ')' are plain, the first of them field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// Claims a fresh run id for this process. The record's directory is
/// filled in by [`update`] once the run has one.
pub fn claim() -> Result<RunRecord> {
    let runs = Path::new(RUNS_DIR);
    fs::create_dir_all(runs).map_err(|e| LabError::io(format!("creating {RUNS_DIR}"), e))?;
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    let seed = random_seed();
    for attempt in 0..256u64 {
        let id = RunId::from_number(seed.wrapping_add(attempt.wrapping_mul(7919)));
        let record = RunRecord::new(id, pid, start);
        let path = runs.join(id.as_str());
        match fs::File::options().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(record.render().as_bytes())
                    .map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
                return Ok(record);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LabError::io(format!("creating {}", path.display()), e)),
        }
    }
    Err(LabError::io(
        format!("claiming a run id in {RUNS_DIR}"),
        io::Error::other("256 ids in a row are taken; run `vpn-passthrough lab sweep`"),
    ))
}

/// Rewrites the run directory of a claimed record (it is known only after
/// the id is).
pub fn update(record: &RunRecord) -> Result<()> {
    let path = Path::new(RUNS_DIR).join(record.id.as_str());
    fs::write(&path, record.render()).map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

/// Deletes a run's record.
pub fn release(id: RunId) {
    let _ = fs::remove_file(Path::new(RUNS_DIR).join(id.as_str()));
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// What a live run has that a signal handler must be able to clean up.
#[derive(Debug)]
pub struct Cleanup {
    id: RunId,
    dir: PathBuf,
    state: Mutex<CleanupState>,
}

#[derive(Debug, Default)]
struct CleanupState {
    namespaces: Vec<(String, u64)>,
    /// Adopted interfaces: (interface, namespace name).
    ports: Vec<(String, String)>,
    /// The namespace that lent them.
    home: Option<fs::File>,
    done: bool,
}

impl Cleanup {
    /// Registers a live run so that SIGINT, SIGTERM and SIGHUP tear it down.
    pub fn register(id: RunId, dir: PathBuf) -> Arc<Cleanup> {
        install_signal_teardown();
        let c = Arc::new(Cleanup { id, dir, state: Mutex::new(CleanupState::default()) });
        live().lock().unwrap_or_else(|p| p.into_inner()).push(c.clone());
        c
    }

    /// Notes a namespace the run created.
    pub fn add_namespace(&self, name: &str, inode: u64) {
        self.lock().namespaces.push((name.to_string(), inode));
    }

    /// Notes the namespace adopted interfaces come from (and go back to).
    pub fn set_home(&self, home: fs::File) {
        self.lock().home = Some(home);
    }

    /// Notes an interface about to be adopted into the namespace `ns`, so
    /// that a signal gives it back.
    pub fn add_port(&self, iface: &str, ns: &str) {
        self.lock().ports.push((iface.to_string(), ns.to_string()));
    }

    /// The namespace inodes of the run.
    pub fn inodes(&self) -> Vec<u64> {
        self.lock().namespaces.iter().map(|(_, i)| *i).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CleanupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the run torn down and forgets it.
    pub fn finish(&self) {
        self.lock().done = true;
        live().lock().unwrap_or_else(|p| p.into_inner()).retain(|c| c.id != self.id);
        release(self.id);
    }

    /// Tears down from a signal: processes, adopted interfaces (given
    /// back), namespaces, record. Keeps the run directory and says where it
    /// is. Every program of a lab runs in one of its namespaces, so ending
    /// what is in them ends them all.
    fn emergency(&self) {
        let (namespaces, ports, home) = {
            let s = self.lock();
            if s.done {
                return;
            }
            (s.namespaces.clone(), s.ports.clone(), s.home.as_ref().and_then(|h| h.try_clone().ok()))
        };
        let inodes: Vec<u64> = namespaces.iter().map(|(_, i)| *i).collect();
        kill_in_namespaces(&inodes, Duration::from_secs(1));
        if let Some(home) = &home {
            for (iface, ns) in &ports {
                if let Err(e) = give_back_from(iface, ns, home.as_fd()) {
                    eprintln!("lab {}: {e}", self.id);
                }
            }
        }
        for (name, _) in &namespaces {
            let _ = netns::remove_by_name(name);
        }
        self.finish();
        eprintln!("lab {}: torn down on signal; run directory kept at {}", self.id, self.dir.display());
    }
}

fn live() -> &'static Mutex<Vec<Arc<Cleanup>>> {
    static LIVE: Mutex<Vec<Arc<Cleanup>>> = Mutex::new(Vec::new());
    &LIVE
}

fn install_signal_teardown() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot catch SIGINT/SIGTERM ({e}); a signal will leave the lab to the next sweep");
                return;
            }
        };
        let spawned = std::thread::Builder::new().name("lab-signals".into()).spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let runs: Vec<Arc<Cleanup>> = live().lock().unwrap_or_else(|p| p.into_inner()).clone();
                for run in runs {
                    run.emergency();
                }
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                std::process::exit(128 + sig);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the signal thread ({e}); a signal will leave the lab to the next sweep");
        }
    });
}

/// The network namespace inode of a process, `None` for zombies and
/// processes that are gone.
pub fn netns_inode_of(pid: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The processes of the process groups `groups`, each a group id and the
/// namespace inode its members are in (a group id alone could have been
/// reused outside the lab). One look through `/proc`, which reads the
/// group of only the processes in those namespaces.
pub fn group_members(groups: &[(u32, u64)]) -> Vec<u32> {
    if groups.is_empty() {
        return Vec::new();
    }
    let inodes: Vec<u64> = groups.iter().map(|g| g.1).collect();
    processes_in(&inodes)
        .into_iter()
        .filter(|&pid| {
            let (Some(pgid), Some(inode)) = (process_group(pid), netns_inode_of(pid)) else { return false };
            groups.contains(&(pgid, inode))
        })
        .collect()
}

/// The process group of a process (`/proc/PID/stat` field 5).
fn process_group(pid: u32) -> Option<u32> {
    stat_field(pid, 5).and_then(|g| u32::try_from(g).ok())
}

/// The processes whose network namespace is one of `inodes`.
pub fn processes_in(inodes: &[u64]) -> Vec<u32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: HashSet<u64> = inodes.iter().copied().collect();
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| netns_inode_of(*pid).is_some_and(|i| wanted.contains(&i)))
        .collect()
}

/// Ends every process inside the namespaces `inodes`: SIGTERM, then SIGKILL
/// for those still there after `grace`. Returns how many there were.
pub fn kill_in_namespaces(inodes: &[u64], grace: Duration) -> usize {
    let first = processes_in(inodes);
    if first.is_empty() {
        return 0;
    }
    for pid in &first {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut left = processes_in(inodes);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = processes_in(inodes);
    }
    for pid in &left {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    // SIGKILL cannot be refused; wait for the kernel to finish the exits so
    // the namespaces are really free when this returns.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(inodes).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    first.len()
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Runs whose owner was gone.
    pub runs: Vec<String>,
    /// Namespaces removed.
    pub namespaces: Vec<String>,
    /// Interfaces removed from the current namespace.
    pub links: Vec<String>,
    /// Adopted interfaces given back to the namespace that lent them.
    pub ports: Vec<String>,
    /// Processes ended.
    pub processes: usize,
    /// Run directories left for inspection.
    pub kept_dirs: Vec<PathBuf>,
}

impl SweepReport {
    /// Whether the sweep found nothing.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.namespaces.is_empty()
            && self.links.is_empty()
            && self.ports.is_empty()
            && self.processes == 0
    }
}

/// Removes what runs whose owner is gone left behind: their processes,
/// namespaces, interfaces of their prefix in this namespace, and records.
/// Interfaces a dead run adopted go back to the namespace that lent them
/// (this one when that is gone). Names of ours that no record claims are
/// swept too. Live runs are not touched. Run directories stay (they hold
/// the logs of what went wrong).
pub fn sweep() -> Result<SweepReport> {
    // Names first, records second: a run creates its record before any
    // name, so every name listed here has its record by the time records
    // are read (or its run has finished and removed both).
    let names = netns::list_names();
    let links = local_links();
    let mut report = SweepReport::default();
    let mut live_ids = HashSet::new();
    let mut dead_ids = HashSet::new();
    // Adopted interfaces of dead runs: (interface, namespace, home inode).
    let mut ports = Vec::new();
    if let Ok(dir) = fs::read_dir(RUNS_DIR) {
        for entry in dir.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(RunId::parse) else { continue };
            let record = fs::read_to_string(entry.path()).ok().and_then(|t| RunRecord::parse(id, &t));
            match record {
                Some(r) if r.owner_alive() => {
                    live_ids.insert(id);
                }
                // A record being written has no fields yet; give it the
                // benefit of the doubt unless it is old.
                None if fresh(&entry.path()) => {
                    live_ids.insert(id);
                }
                other => {
                    dead_ids.insert(id);
                    report.runs.push(id.to_string());
                    if let Some(r) = other {
                        ports.extend(r.ports.into_iter().map(|(iface, ns)| (iface, ns, r.home)));
                        if r.dir.exists() {
                            report.kept_dirs.push(r.dir);
                        }
                    }
                }
            }
        }
    }
    let is_garbage = |name: &str| RunId::of_name(name).is_some_and(|id| !live_ids.contains(&id));

    let doomed: Vec<(String, u64)> = names
        .into_iter()
        .filter(|n| is_garbage(n))
        .map(|n| {
            // An unmounted leftover file has no namespace behind it: inode 0
            // matches no process.
            let inode = fs::metadata(netns::netns_path(&n)).map(|m| m.ino()).unwrap_or(0);
            (n, inode)
        })
        .collect();
    let inodes: Vec<u64> = doomed.iter().map(|(_, i)| *i).collect();
    report.processes = kill_in_namespaces(&inodes, Duration::from_secs(1));
    for (iface, ns, home) in ports {
        if !doomed.iter().any(|(n, _)| *n == ns) {
            continue;
        }
        let Some(home) = home.and_then(open_netns_by_inode).or_else(|| fs::File::open(THIS_NETNS).ok()) else {
            continue;
        };
        match give_back_from(&iface, &ns, home.as_fd()) {
            Ok(true) => report.ports.push(iface),
            Ok(false) => {}
            Err(e) => tracing::warn!("sweep: {e}"),
        }
    }
    for (name, _) in doomed {
        netns::remove_by_name(&name)?;
        report.namespaces.push(name);
    }
    for link in links.into_iter().filter(|l| is_garbage(l)) {
        delete_local_link(&link)?;
        report.links.push(link);
    }
    for id in dead_ids {
        release(id);
    }
    Ok(report)
}

/// The network namespace of the calling thread (`/proc/self` would be the
/// main thread's).
pub const THIS_NETNS: &str = "/proc/thread-self/ns/net";

/// Opens the network namespace of inode `inode`: this thread's, a named
/// one, or one a process is in; `None` if it is gone.
fn open_netns_by_inode(inode: u64) -> Option<fs::File> {
    let nsfs = fs::metadata(THIS_NETNS).ok()?.dev();
    let named = netns::list_names().into_iter().map(|n| netns::netns_path(&n));
    let procs = fs::read_dir("/proc").into_iter().flatten().filter_map(|e| {
        let e = e.ok()?;
        e.file_name().to_str()?.parse::<u32>().ok()?;
        Some(e.path().join("ns/net"))
    });
    std::iter::once(PathBuf::from(THIS_NETNS))
        .chain(named)
        .chain(procs)
        .find(|p| fs::metadata(p).is_ok_and(|m| m.ino() == inode && m.dev() == nsfs))
        .and_then(|p| fs::File::open(p).ok())
}

/// Moves the adopted interface `iface` out of the lab namespace named `ns`
/// into `home`. `Ok(false)` when `ns` has no such interface (given back
/// already, or never taken).
pub fn give_back_from(iface: &str, ns: &str, home: BorrowedFd<'_>) -> Result<bool> {
    let path = netns::netns_path(ns);
    let lab_ns = fs::File::open(&path).map_err(|e| LabError::io(format!("opening {}", path.display()), e))?;
    give_back(iface, lab_ns.as_fd(), home)
        .map_err(|e| LabError::Input(format!("giving interface '{iface}' back from namespace {ns}: {e}")))
}

/// Moves interface `iface` from namespace `from` to `home`, through a
/// netlink socket opened inside `from` on a thread of its own. `Ok(false)`
/// when `from` has no such interface.
pub fn give_back(iface: &str, from: BorrowedFd<'_>, home: BorrowedFd<'_>) -> Result<bool> {
    let home = home.as_raw_fd();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(from, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| LabError::io("entering a lab namespace", e.into()))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(|e| LabError::io("starting a netlink runtime", e))?;
                rt.block_on(async {
                    let (conn, handle, _) =
                        rtnetlink::new_connection().map_err(|e| LabError::io("opening a netlink socket", e))?;
                    tokio::spawn(conn);
                    let msg = rtnetlink::LinkUnspec::new_with_name(iface).setns_by_fd(home).build();
                    match handle.link().change(msg).execute().await {
                        Ok(()) => Ok(true),
                        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -nix::libc::ENODEV => Ok(false),
                        Err(e) => Err(LabError::netlink(format!("moving interface '{iface}' back"), e)),
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| Err(LabError::io("giving an interface back", io::Error::other("thread panicked"))))
    })
}

fn fresh(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(10))
}

/// Interface names of the current network namespace.
fn local_links() -> Vec<String> {
    let Ok(dir) = fs::read_dir("/sys/class/net") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()
}

fn delete_local_link(name: &str) -> Result<()> {
    let index_path = format!("/sys/class/net/{name}/ifindex");
    let Ok(index) = fs::read_to_string(&index_path).map(|s| s.trim().parse::<u32>()) else {
        return Ok(()); // gone meanwhile
    };
    let index = index.map_err(|e| LabError::io(format!("reading {index_path}"), io::Error::other(e)))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| LabError::io("starting a netlink runtime", e))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| LabError::io("opening a netlink socket", e))?;
        tokio::spawn(conn);
        handle.link().del(index).execute().await.map_err(|e| LabError::netlink(format!("deleting interface {name}"), e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let id = RunId::parse("q7z").expect("id");
        let mut r = RunRecord::new(id, 4242, 987654);
        r.dir = PathBuf::from("/tmp/vpn-passthrough-q7z-x");
        assert_eq!(RunRecord::parse(id, &r.render()), Some(r.clone()));
        r.home = Some(4026531840);
        r.ports = vec![("enp3s0".into(), "vpq7z-lan".into()), ("eth1.100".into(), "vpq7z-wan".into())];
        assert_eq!(RunRecord::parse(id, &r.render()), Some(r));
        assert_eq!(RunRecord::parse(id, "pid=1\n"), None);
        assert_eq!(RunRecord::parse(id, "garbage"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id();
        let start = start_time(pid).expect("own start time");
        let id = RunId::parse("000").expect("id");
        assert!(RunRecord::new(id, pid, start).owner_alive());
        assert!(!RunRecord::new(id, pid, start + 1).owner_alive());
    }

    #[test]
    fn our_netns_inode_is_readable() {
        assert!(netns_inode_of(std::process::id()).is_some());
        assert_eq!(processes_in(&[]), Vec::<u32>::new());
    }
}
