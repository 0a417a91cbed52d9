//! The lab engine: isolated hosts, links and switches built from a
//! [`Topology`], programs run inside the hosts, and a teardown that happens
//! whatever the test does.
//!
//! ```no_run
//! use vpn_passthrough::lab::{Cmd, HostSpec, Lab, Topology};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lab = Lab::build(&Topology::new()
//!     .host(HostSpec::new("client").default_route("10.1.0.1"))
//!     .host(HostSpec::new("router").forwarding())
//!     .host(HostSpec::new("server").default_route("10.2.0.1"))
//!     .link(("client", "eth0", "10.1.0.2/24"), ("router", "lan", "10.1.0.1/24"))
//!     .link(("router", "wan", "10.2.0.1/24"), ("server", "eth0", "10.2.0.2/24")))?;
//! lab.host("client")?.ping("10.2.0.2".parse()?)?;
//! let echo = lab.host("server")?.spawn(Cmd::argv(&["iperf3", "-s"]))?;
//! echo.wait_for_port(vpn_passthrough::lab::Proto::Tcp, 5201, std::time::Duration::from_secs(5))?;
//! lab.teardown()?; // or let it drop: teardown happens on drop, panic and signals too
//! # Ok(()) }
//! ```
//!
//! Hosts are network namespaces named `vp<id>-<host>` (visible to `ip netns`);
//! each host also has a mount namespace of its own, which its programs
//! share, with the host's own `/run` (see [`sandbox`]). A lab's configs and logs live in a
//! private run directory that is kept, and its path printed, when something
//! went wrong.

mod binaries;
mod error;
pub mod gate;
mod host;
pub mod names;
mod netlink;
pub mod netns;
pub mod offload;
pub mod plan;
pub mod process;
pub mod runs;
pub mod sandbox;
mod show;
mod sysctl;
pub mod syslog;
pub mod topology;

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

pub use binaries::{our_binary, own_binary};
pub use error::{Crash, LabError, NotReady, Result};
pub use gate::StartGate;
pub use host::{Host, echoes_received};
pub use names::RunId;
pub use plan::{NodeKind, Plan, PlanError};
pub use process::{Cmd, Process, Proto};
pub use runs::{SweepReport, sweep};
pub use topology::{BindSpec, EndpointSpec, HostSpec, LinkSpec, RouteSpec, SwitchSpec, Topology};

use netns::Namespace;
use offload::ControlSocket;
use runs::{Cleanup, RunRecord};
use sandbox::{HostDirs, Sandbox};
use sysctl::SysctlStage;

/// Set to `1` to keep every run directory, not only those of failed runs.
pub const KEEP_ENV: &str = "VPN_PASSTHROUGH_KEEP";

/// A built lab. Dropping it tears it down (and keeps the run directory, as
/// an early drop means something went wrong); [`Lab::teardown`] tears it
/// down, removes the run directory and reports programs that crashed.
pub struct Lab {
    record: RunRecord,
    plan: Plan,
    dir: Option<tempfile::TempDir>,
    rt: Option<tokio::runtime::Runtime>,
    nodes: Vec<Node>,
    cleanup: Arc<Cleanup>,
    processes: Mutex<Vec<Process>>,
    keep: AtomicBool,
    finished: bool,
    /// Interfaces of the builder's namespace joined to switches: (name,
    /// node index), and that namespace (the building thread's), to give
    /// them back.
    adopted: Vec<(String, usize)>,
    home_ns: Option<std::fs::File>,
}

struct Node {
    ns: Namespace,
    netlink: Option<rtnetlink::Handle>,
    ctl: Option<ControlSocket>,
    /// Directories and sandbox of a host, made when first needed: a lab
    /// whose hosts run nothing writes nothing to disk.
    host: std::sync::OnceLock<HostParts>,
    /// Held while `host` is made, so that it is made once.
    making: std::sync::Mutex<()>,
}

struct HostParts {
    dirs: HostDirs,
    sandbox: Sandbox,
    /// Receives the host's syslog until the lab is dropped.
    _syslog: syslog::SyslogSink,
}

impl Lab {
    /// Builds `topology`: checks it, claims a run id, creates every
    /// namespace, link, address and route. On error nothing is left behind.
    pub fn build(topology: &Topology) -> Result<Lab> {
        let plan = Plan::new(topology)?;
        crate::prereq::require_lab_privileges()?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(LabError::io(
                "building a lab",
                std::io::Error::other("called from inside a tokio runtime; call it from spawn_blocking"),
            ));
        }
        refuse_uplinks(&plan)?;
        sweep_once();
        let mut record = runs::claim()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("vpn-passthrough-{}-", record.id))
            .tempdir_in(run_dirs_parent())
            .map_err(|e| LabError::io("creating the run directory", e));
        let dir = match dir {
            Ok(d) => d,
            Err(e) => {
                runs::release(record.id);
                return Err(e);
            }
        };
        record.dir = dir.path().to_path_buf();
        let cleanup = Cleanup::register(record.id, record.dir.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| LabError::io("starting the lab's netlink runtime", e));
        let mut lab = Lab {
            record,
            plan,
            dir: Some(dir),
            rt: None,
            nodes: Vec::new(),
            cleanup,
            processes: Mutex::new(Vec::new()),
            keep: AtomicBool::new(std::env::var(KEEP_ENV).is_ok_and(|v| v == "1")),
            finished: false,
            adopted: Vec::new(),
            home_ns: None,
        };
        // From here on, dropping `lab` removes whatever exists.
        lab.rt = Some(rt?);
        runs::update(&lab.record)?;
        lab.create()?;
        Ok(lab)
    }

    fn create(&mut self) -> Result<()> {
        let run = self.record.id;
        let adopt: Vec<(String, usize)> =
            self.plan.nodes.iter().enumerate().filter_map(|(i, n)| Some((n.adopt.clone()?, i))).collect();
        let t = std::time::Instant::now();
        let names: Vec<String> = self.plan.nodes.iter().map(|n| run.netns_name(&n.name)).collect();
        for ns in create_namespaces(&names) {
            // Record every namespace that exists before looking at errors,
            // so that teardown removes them all.
            if let Ok(ns) = &ns {
                self.cleanup.add_namespace(ns.name(), ns.inode());
            }
            let ns = ns?;
            self.nodes.push(Node {
                ns,
                netlink: None,
                ctl: None,
                host: std::sync::OnceLock::new(),
                making: std::sync::Mutex::new(()),
            });
        }
        tracing::debug!("lab {run}: {} namespaces created in {:?}", self.nodes.len(), t.elapsed());
        let t = std::time::Instant::now();
        // Runtime::block_on, not Handle::block_on: only the former drives a
        // current-thread runtime's I/O.
        let runtime = self.rt.as_ref().ok_or_else(no_runtime)?;
        let rt = runtime.handle().clone();
        let plan = &self.plan;
        let nss: Vec<&Namespace> = self.nodes.iter().map(|n| &n.ns).collect();
        // Inside each namespace, before any interface exists (so that the
        // `default` sysctls reach every interface): sockets, and the
        // namespace-wide settings.
        let opened = netns::for_each_inside(&nss, |i, ns| {
            let handle = netlink::connect(&rt)
                .map_err(|e| LabError::io(format!("opening a netlink socket in {}", ns.name()), e))?;
            let ctl = ControlSocket::open_here()
                .map_err(|e| LabError::io(format!("opening a control socket in {}", ns.name()), e))?;
            sysctl::apply(&plan.nodes[i], run, SysctlStage::Namespace)?;
            Ok((handle, ctl))
        })?;

        tracing::debug!("lab {run}: sockets and sysctls in {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let root = netlink::connect(&rt).map_err(|e| LabError::io("opening a netlink socket", e))?;
        runtime.block_on(netlink::create_links(&root, plan, run, &nss))?;
        if !adopt.is_empty() {
            // The building thread's namespace, where `root` finds the
            // interfaces (`/proc/self` would be the main thread's).
            let what = "opening this namespace to give adopted interfaces back";
            let home = std::fs::File::open(runs::THIS_NETNS).map_err(|e| LabError::io(what, e))?;
            self.cleanup.set_home(home.try_clone().map_err(|e| LabError::io(what, e))?);
            self.record.home = Some(home.metadata().map_err(|e| LabError::io(what, e))?.ino());
            self.home_ns = Some(home);
        }
        for (iface, i) in adopt {
            // Recorded before it moves: a signal, or the sweep after a
            // SIGKILL, gives it back from here on.
            self.cleanup.add_port(&iface, &names[i]);
            self.record.ports.push((iface.clone(), names[i].clone()));
            runs::update(&self.record)?;
            let context = format!("switch '{}': taking in interface '{iface}' of this namespace", plan.nodes[i].name);
            runtime.block_on(netlink::move_link(&root, &iface, nss[i].raw_fd(), context))?;
            self.adopted.push((iface, i));
        }
        drop(root);
        tracing::debug!("lab {run}: {} links created in {:?}", plan.links.len(), t.elapsed());
        let t = std::time::Instant::now();

        // Interface settings, once the interfaces exist.
        let per_iface: Vec<&Namespace> = nss
            .iter()
            .zip(&plan.nodes)
            .filter(|(_, p)| p.sysctls.iter().any(|(k, _)| sysctl::names_iface(p, k)))
            .map(|(n, _)| *n)
            .collect();
        netns::for_each_inside(&per_iface, |_, ns| {
            let node = plan.nodes.iter().find(|p| run.netns_name(&p.name) == ns.name()).ok_or_else(no_runtime)?;
            sysctl::apply(node, run, SysctlStage::Interfaces)
        })?;
        for (node, (_, ctl)) in plan.nodes.iter().zip(&opened) {
            for iface in node.ifaces.iter().filter(|i| !i.offloads) {
                ctl.disable_offloads(&run.ifname(&iface.local))
                    .map_err(|e| LabError::io(format!("{}: turning offloads off", node.label()), e))?;
            }
        }
        for (node, (handle, ctl)) in self.nodes.iter_mut().zip(opened) {
            node.netlink = Some(handle);
            node.ctl = Some(ctl);
        }
        let plan = &self.plan;
        let configure = self.nodes.iter().zip(&plan.nodes).filter_map(|(n, p)| {
            let h = n.netlink.as_ref()?;
            Some(netlink::configure_node(h, p))
        });
        runtime.block_on(futures::future::try_join_all(configure))?;
        tracing::debug!("lab {run}: interface settings, addresses and routes in {:?}", t.elapsed());
        Ok(())
    }

    /// The run id; every name of this lab starts with `vp<id>-`.
    pub fn run_id(&self) -> RunId {
        self.record.id
    }

    /// The prefix of every namespace and interface name of this lab.
    pub fn prefix(&self) -> String {
        self.record.id.prefix()
    }

    /// The run directory: `hosts/<host>/{conf,run,log}`.
    pub fn dir(&self) -> &Path {
        &self.record.dir
    }

    /// The checked topology this lab was built from.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The names of the lab's network namespaces.
    pub fn netns_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.ns.name().to_string()).collect()
    }

    /// A host of the lab.
    pub fn host(&self, name: &str) -> Result<Host<'_>> {
        match self.plan.node(name) {
            Some(idx) if self.plan.nodes[idx].kind == NodeKind::Host => Ok(Host { lab: self, idx }),
            _ => Err(LabError::NoSuchHost {
                run: self.record.id.to_string(),
                host: name.to_string(),
                known: self
                    .plan
                    .nodes
                    .iter()
                    .filter(|n| n.kind == NodeKind::Host)
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// A switch of the lab, to run programs in its namespace (a capture
    /// on one of its ports).
    pub fn switch_host(&self, name: &str) -> Result<Host<'_>> {
        match self.plan.node(name) {
            Some(idx) if self.plan.nodes[idx].kind == NodeKind::Switch => Ok(Host { lab: self, idx }),
            _ => Err(LabError::Input(format!("lab {} has no switch '{name}'", self.record.id))),
        }
    }

    /// Keeps the run directory after teardown (it is kept anyway when a
    /// program crashed or the lab is dropped during a panic).
    pub fn keep_dir(&self) {
        self.keep.store(true, Ordering::SeqCst);
    }

    /// The programs started in this lab that exited with an error.
    pub fn crashes(&self) -> Vec<Crash> {
        self.lock_processes().iter().filter_map(|p| p.crash()).collect()
    }

    /// Stops every program, removes every namespace and the run record.
    /// Fails if a program had exited with an error before (its log is
    /// quoted; the run directory is kept).
    pub fn teardown(mut self) -> Result<()> {
        self.finish()
    }

    fn lock_processes(&self) -> std::sync::MutexGuard<'_, Vec<Process>> {
        self.processes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let processes = std::mem::take(&mut *self.lock_processes());
        let crashes: Vec<Crash> = processes.iter().filter_map(|p| p.crash()).collect();
        if let Err(e) = process::stop_all(&processes, process::STOP_GRACE) {
            tracing::warn!("lab {}: {e}", self.record.id);
        }
        runs::kill_in_namespaces(&self.cleanup.inodes(), Duration::from_secs(1));
        self.give_back_ports();
        // Sockets hold their namespace: close them before removing it.
        for node in &mut self.nodes {
            node.netlink = None;
            node.ctl = None;
            node.host = std::sync::OnceLock::new();
        }
        drop(self.rt.take());
        let mut first_error = None;
        for node in self.nodes.drain(..) {
            if let Err(e) = node.ns.remove() {
                first_error.get_or_insert(e);
            }
        }
        self.cleanup.finish();
        let keep = self.keep.load(Ordering::SeqCst) || !crashes.is_empty() || std::thread::panicking();
        if let Some(dir) = self.dir.take() {
            if keep {
                let path = dir.keep();
                eprintln!("lab {}: run directory kept at {}", self.record.id, path.display());
            }
        }
        if !crashes.is_empty() {
            return Err(LabError::Crashed(crashes));
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Lab {
    /// Moves adopted interfaces back to the namespace the lab was built in
    /// (a deleted namespace would give a physical NIC back by itself, but
    /// would destroy a virtual one).
    fn give_back_ports(&mut self) {
        let Some(home) = &self.home_ns else { return };
        for (iface, i) in std::mem::take(&mut self.adopted) {
            let Some(node) = self.nodes.get(i) else { continue };
            match runs::give_back(&iface, node.ns.fd(), home.as_fd()) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("lab {}: interface '{iface}' was no longer in {}", self.record.id, node.ns.name())
                }
                Err(e) => tracing::warn!("lab {}: giving interface '{iface}' back: {e}", self.record.id),
            }
        }
    }
}

impl Drop for Lab {
    /// A lab dropped without [`Lab::teardown`] went out of scope early (an
    /// error or a panic): its run directory is kept for the logs.
    fn drop(&mut self) {
        if !self.finished {
            self.keep.store(true, Ordering::SeqCst);
        }
        if let Err(e) = self.finish() {
            eprintln!("lab {}: {e}", self.record.id);
        }
    }
}

/// Where run directories go: `$TMPDIR` when it is set, else `/dev/shm` when
/// it is a writable tmpfs that lets programs run and has 1 GiB free (a
/// container's is often 64 MB), else the system's temporary directory. A
/// run creates and removes hundreds of files, which a disk file system
/// makes costly (allocating inodes among those just deleted).
fn run_dirs_parent() -> std::path::PathBuf {
    use nix::sys::statvfs::{FsFlags, statvfs};
    const SHM: &str = "/dev/shm";
    let tmpfs = || {
        nix::sys::statfs::statfs(SHM).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            && statvfs(SHM).is_ok_and(|v| {
                !v.flags().intersects(FsFlags::ST_NOEXEC | FsFlags::ST_RDONLY)
                    && v.blocks_available().saturating_mul(v.fragment_size()) >= 1 << 30
            })
            && nix::unistd::access(SHM, nix::unistd::AccessFlags::W_OK).is_ok()
    };
    if std::env::var_os("TMPDIR").is_none() && tmpfs() { SHM.into() } else { std::env::temp_dir() }
}

/// Creates namespaces on a few threads at once (namespace creation is the
/// slowest step of a build and the kernel runs it in parallel).
fn create_namespaces(names: &[String]) -> Vec<Result<Namespace>> {
    const THREADS: usize = 4;
    let chunk = names.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = names
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|n| Namespace::create(n)).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join().unwrap_or_else(|_| {
                    vec![Err(LabError::io("creating namespaces", std::io::Error::other("thread panicked")))]
                })
            })
            .collect()
    })
}

/// Refuses a plan that adopts an interface carrying a default route of the
/// calling thread's namespace (the machine's uplink), before anything of the
/// lab exists.
fn refuse_uplinks(plan: &Plan) -> Result<()> {
    let adopt: Vec<(&str, &str)> =
        plan.nodes.iter().filter_map(|n| Some((n.name.as_str(), n.adopt.as_deref()?))).collect();
    if adopt.is_empty() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| LabError::io("starting a netlink runtime", e))?;
    let here = netlink::connect(rt.handle()).map_err(|e| LabError::io("opening a netlink socket", e))?;
    adopt.into_iter().try_for_each(|(switch, iface)| rt.block_on(netlink::refuse_uplink(&here, switch, iface)))
}

fn no_runtime() -> LabError {
    LabError::io("using the lab", std::io::Error::other("the lab is torn down"))
}

fn sweep_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| match runs::sweep() {
        Ok(r) if !r.is_empty() => tracing::info!(
            "swept leftovers of dead runs {:?}: {} namespaces, {} interfaces, {} processes; gave back adopted \
             interfaces {:?}",
            r.runs,
            r.namespaces.len(),
            r.links.len(),
            r.processes,
            r.ports
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("sweeping leftovers of dead runs: {e}"),
    });
}
