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
//! each program started in a host also gets a private mount namespace with
//! the host's own `/run` (see [`sandbox`]). A lab's configs and logs live in a
//! private run directory that is kept, and its path printed, when something
//! went wrong.

mod error;
pub mod names;
mod netlink;
pub mod netns;
pub mod offload;
pub mod plan;
pub mod process;
pub mod runs;
pub mod sandbox;
pub mod topology;

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use ipnet::IpNet;

pub use error::{Crash, LabError, NotReady, Result};
pub use names::RunId;
pub use plan::{NodeKind, Plan, PlanError};
pub use process::{Cmd, Process, Proto};
pub use runs::{SweepReport, sweep};
pub use topology::{BindSpec, EndpointSpec, HostSpec, LinkSpec, RouteSpec, SwitchSpec, Topology};

use netns::Namespace;
use offload::ControlSocket;
use runs::{Cleanup, RunRecord};
use sandbox::{HostDirs, Sandbox};

/// Set to `1` to keep every run directory, not only those of failed runs.
pub const KEEP_ENV: &str = "VPN_PASSTHROUGH_KEEP";

/// A built lab. Dropping it tears it down; [`Lab::teardown`] does the same
/// and also reports programs that crashed.
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
}

struct Node {
    ns: Namespace,
    netlink: Option<rtnetlink::Handle>,
    ctl: Option<ControlSocket>,
    /// Directories and sandbox of a host, made when first needed: a lab
    /// whose hosts run nothing writes nothing to disk.
    host: std::sync::OnceLock<HostParts>,
}

struct HostParts {
    dirs: HostDirs,
    sandbox: Sandbox,
}

impl Lab {
    /// Builds `topology`: checks it, claims a run id, creates every
    /// namespace, link, address and route. On error nothing is left behind.
    pub fn build(topology: &Topology) -> Result<Lab> {
        let plan = Plan::new(topology)?;
        crate::doctor::require_lab_privileges()?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(LabError::io(
                "building a lab",
                std::io::Error::other("called from inside a tokio runtime; call it from spawn_blocking"),
            ));
        }
        sweep_once();
        let mut record = runs::claim(|_| PathBuf::new())?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("vpn-passthrough-{}-", record.id))
            .tempdir()
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
        };
        // From here on, dropping `lab` removes whatever exists.
        lab.rt = Some(rt?);
        runs::update(&lab.record)?;
        lab.create()?;
        Ok(lab)
    }

    fn create(&mut self) -> Result<()> {
        let run = self.record.id;
        let t = std::time::Instant::now();
        let names: Vec<String> = self.plan.nodes.iter().map(|n| run.netns_name(&n.name)).collect();
        for ns in create_namespaces(&names) {
            // Record every namespace that exists before looking at errors,
            // so that teardown removes them all.
            if let Ok(ns) = &ns {
                self.cleanup.add_namespace(ns.name(), ns.inode());
            }
            let ns = ns?;
            self.nodes.push(Node { ns, netlink: None, ctl: None, host: std::sync::OnceLock::new() });
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
            apply_sysctls(&plan.nodes[i], run, SysctlStage::Namespace)?;
            Ok((handle, ctl))
        })?;

        tracing::debug!("lab {run}: sockets and sysctls in {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let root = netlink::connect(&rt).map_err(|e| LabError::io("opening a netlink socket", e))?;
        runtime.block_on(netlink::create_links(&root, plan, run, &nss))?;
        drop(root);
        tracing::debug!("lab {run}: {} links created in {:?}", plan.links.len(), t.elapsed());
        let t = std::time::Instant::now();

        // Interface settings, once the interfaces exist.
        let per_iface: Vec<&Namespace> = nss
            .iter()
            .zip(&plan.nodes)
            .filter(|(_, p)| p.sysctls.iter().any(|(k, _)| names_iface(p, k)))
            .map(|(n, _)| *n)
            .collect();
        netns::for_each_inside(&per_iface, |_, ns| {
            let node = plan.nodes.iter().find(|p| run.netns_name(&p.name) == ns.name()).ok_or_else(no_runtime)?;
            apply_sysctls(node, run, SysctlStage::Interfaces)
        })?;
        for (node, (_, ctl)) in plan.nodes.iter().zip(&opened) {
            for iface in node.ifaces.iter().filter(|i| !i.offloads) {
                ctl.disable_offloads(&run.ifname(&iface.local)).map_err(|e| {
                    LabError::io(format!("{} '{}': turning offloads off", kind_word(node.kind), node.name), e)
                })?;
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
        for p in &processes {
            if let Err(e) = p.stop(process::STOP_GRACE) {
                tracing::warn!("lab {}: {e}", self.record.id);
            }
        }
        runs::kill_in_namespaces(&self.cleanup.inodes(), Duration::from_secs(1));
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

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("lab {}: {e}", self.record.id);
        }
    }
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

fn no_runtime() -> LabError {
    LabError::io("using the lab", std::io::Error::other("the lab is torn down"))
}

fn kind_word(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Host => "host",
        NodeKind::Switch => "switch",
    }
}

fn sweep_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| match runs::sweep() {
        Ok(r) if !r.is_empty() => tracing::info!(
            "swept leftovers of dead runs {:?}: {} namespaces, {} interfaces, {} processes",
            r.runs,
            r.namespaces.len(),
            r.links.len(),
            r.processes
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("sweeping leftovers of dead runs: {e}"),
    });
}

/// When a sysctl is applied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SysctlStage {
    /// Before the namespace has interfaces: everything that does not name one.
    Namespace,
    /// Once its interfaces exist: what names one.
    Interfaces,
}

/// Whether a sysctl key names one of the node's interfaces
/// (`net.ipv4.conf.<iface>.…`).
fn names_iface(node: &plan::NodePlan, key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() > 4 && parts[2] == "conf" && node.iface(parts[3]).is_some()
}

/// Applies one stage of a node's sysctls from a thread inside its namespace
/// (`/proc/sys/net` is the calling thread's namespace's). Every namespace
/// gets IPv6 duplicate address detection off: lab addresses are unique by
/// construction, and a tentative link-local address makes a router drop the
/// first packets it forwards.
fn apply_sysctls(node: &plan::NodePlan, run: RunId, stage: SysctlStage) -> Result<()> {
    let mut writes: Vec<(String, String)> = Vec::new();
    if stage == SysctlStage::Namespace {
        if Path::new("/proc/sys/net/ipv6").exists() {
            writes.push(("net.ipv6.conf.all.accept_dad".into(), "0".into()));
            writes.push(("net.ipv6.conf.default.accept_dad".into(), "0".into()));
            if node.forwarding {
                writes.push(("net.ipv6.conf.all.forwarding".into(), "1".into()));
            }
        }
        if node.forwarding {
            writes.push(("net.ipv4.ip_forward".into(), "1".into()));
        }
    }
    for (key, value) in &node.sysctls {
        let iface = names_iface(node, key);
        if iface != (stage == SysctlStage::Interfaces) {
            continue;
        }
        let mut parts: Vec<String> = key.split('.').map(str::to_string).collect();
        if iface {
            parts[3] = run.ifname(&parts[3]);
        }
        writes.push((parts.join("."), value.clone()));
    }
    for (key, value) in writes {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, format!("{value}\n")).map_err(|e| {
            LabError::io(format!("{} '{}': setting {key} = {value}", kind_word(node.kind), node.name), e)
        })?;
    }
    Ok(())
}

/// A host of a lab: its names, directories and programs.
#[derive(Clone, Copy)]
pub struct Host<'lab> {
    lab: &'lab Lab,
    idx: usize,
}

impl<'lab> Host<'lab> {
    fn plan(&self) -> &'lab plan::NodePlan {
        &self.lab.plan.nodes[self.idx]
    }

    fn parts(&self) -> Result<&'lab HostParts> {
        let node = self.lab.nodes.get(self.idx).ok_or_else(no_runtime)?;
        if let Some(parts) = node.host.get() {
            return Ok(parts);
        }
        let name = self.name();
        let dirs = HostDirs::create(self.lab.dir(), name)?;
        let file = node.ns.file().map_err(|e| LabError::io(format!("host '{name}': namespace descriptor"), e))?;
        let sandbox = Sandbox::new(name, file, &dirs.run, &self.plan().binds)?;
        // Two threads may race here; both made the same directories.
        let _ = node.host.set(HostParts { dirs, sandbox });
        node.host.get().ok_or_else(no_runtime)
    }

    /// The host's name in the topology.
    pub fn name(&self) -> &'lab str {
        &self.plan().name
    }

    /// Its network namespace's name (for `ip netns exec`).
    pub fn netns(&self) -> String {
        self.lab.record.id.netns_name(self.name())
    }

    /// The kernel name of the topology's interface `local`.
    pub fn ifname(&self, local: &str) -> Result<String> {
        match self.plan().iface(local) {
            Some(_) => Ok(self.lab.record.id.ifname(local)),
            None => Err(LabError::io(
                format!("host '{}': interface '{local}'", self.name()),
                std::io::Error::new(std::io::ErrorKind::NotFound, "the topology gives the host no such interface"),
            )),
        }
    }

    /// The addresses of the topology's interface `local`.
    pub fn addrs(&self, local: &str) -> Vec<IpNet> {
        self.plan().iface(local).map(|i| self.plan().ifaces[i].addrs.clone()).unwrap_or_default()
    }

    /// The first IPv4 address of the host (any interface).
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.plan().ifaces.iter().flat_map(|i| &i.addrs).map(|a| a.addr()).find(IpAddr::is_ipv4)
    }

    /// The first IPv6 address of the host (any interface).
    pub fn ipv6(&self) -> Option<IpAddr> {
        self.plan().ifaces.iter().flat_map(|i| &i.addrs).map(|a| a.addr()).find(IpAddr::is_ipv6)
    }

    /// The host's config directory (daemon configs, secrets).
    pub fn conf_dir(&self) -> Result<&'lab Path> {
        Ok(&self.parts()?.dirs.conf)
    }

    /// The directory shown at `/run` inside the host.
    pub fn run_dir(&self) -> Result<&'lab Path> {
        Ok(&self.parts()?.dirs.run)
    }

    /// The directory of the host's program logs.
    pub fn log_dir(&self) -> Result<&'lab Path> {
        Ok(&self.parts()?.dirs.log)
    }

    /// Writes a file into the host's config directory and returns its path.
    pub fn write_conf(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.conf_dir()?.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| LabError::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, contents).map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }

    /// Starts a long-running program in the host. Its stdout and stderr go
    /// to `log/<label>.log`; teardown stops its whole process group.
    pub fn spawn(&self, cmd: Cmd) -> Result<Process> {
        let parts = self.parts()?;
        let label = cmd.name();
        let (log, file) = process::create_log(&parts.dirs.log, &label)
            .map_err(|e| LabError::io(format!("host '{}': creating the log of {label}", self.name()), e))?;
        let err_file = file.try_clone().map_err(|e| LabError::io("duplicating a log descriptor", e))?;
        let sandbox = parts.sandbox.clone();
        let expr = cmd.expression().stdout_file(file).stderr_file(err_file).before_spawn(move |c| {
            sandbox.apply(c);
            Ok(())
        });
        let handle = expr.start().map_err(|e| self.start_error(&cmd, e))?;
        let p = Process::new(self.name(), label, cmd.command_line(), handle, log);
        self.lab.cleanup.add_group(p.pid() as i32);
        self.lab.lock_processes().push(p.clone());
        tracing::debug!("host '{}': started {} (pid {})", self.name(), p.command_line(), p.pid());
        Ok(p)
    }

    /// Runs a command to completion in the host and returns its output,
    /// whatever its exit status; the command and its output are appended to
    /// `log/exec.log`. Killed past the command's time limit.
    pub fn exec(&self, cmd: Cmd) -> Result<Output> {
        let parts = self.parts()?;
        let sandbox = parts.sandbox.clone();
        let expr = cmd.expression().before_spawn(move |c| {
            sandbox.apply(c);
            Ok(())
        });
        let out = process::run_once(self.name(), &cmd, expr).map_err(|e| match e {
            LabError::Io { source, .. } => self.start_error(&cmd, source),
            other => other,
        })?;
        let mut log = std::fs::File::options().create(true).append(true).open(parts.dirs.log.join("exec.log"));
        if let Ok(log) = log.as_mut() {
            let _ = write!(
                log,
                "$ {}\n{}{}[{}]\n",
                cmd.command_line(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                process::describe(out.status)
            );
        }
        Ok(out)
    }

    /// Runs a command that must succeed; its output is in the error if not.
    pub fn run_ok(&self, cmd: Cmd) -> Result<Output> {
        let out = self.exec(cmd.clone())?;
        if out.status.success() {
            return Ok(out);
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let output = if text.trim().is_empty() {
            String::new()
        } else {
            format!(":\n{}", text.trim_end().lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"))
        };
        Err(LabError::Failed {
            host: self.name().to_string(),
            command: cmd.command_line(),
            status: process::describe(out.status),
            output,
        })
    }

    /// Sends one ICMP echo to `target` and requires the reply within 2 s.
    pub fn ping(&self, target: IpAddr) -> Result<Output> {
        self.run_ok(Cmd::argv(&["ping", "-n", "-c", "1", "-W", "2", &target.to_string()]))
    }

    /// Turns off checksum and segmentation offloads on an interface now.
    pub fn disable_offloads(&self, local: &str) -> Result<()> {
        let ifname = self.ifname(local)?;
        let ctl = self.lab.nodes.get(self.idx).and_then(|n| n.ctl.as_ref()).ok_or_else(no_runtime)?;
        ctl.disable_offloads(&ifname).map_err(|e| LabError::io(format!("host '{}'", self.name()), e))
    }

    /// Whether tx checksum, TSO or GSO offload is on for an interface.
    pub fn offloads_on(&self, local: &str) -> Result<bool> {
        let ifname = self.ifname(local)?;
        let ctl = self.lab.nodes.get(self.idx).and_then(|n| n.ctl.as_ref()).ok_or_else(no_runtime)?;
        ctl.offloads_on(&ifname).map_err(|e| LabError::io(format!("host '{}': reading offloads", self.name()), e))
    }

    fn start_error(&self, cmd: &Cmd, e: std::io::Error) -> LabError {
        let mut context = format!("host '{}': starting `{}`", self.name(), cmd.command_line());
        if e.kind() == std::io::ErrorKind::NotFound {
            context.push_str(" (is it installed? `vpn-passthrough doctor` lists what is missing)");
        }
        LabError::io(context, e)
    }
}

impl fmt::Display for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |k| self.plan.nodes.iter().filter(|n| n.kind == k).count();
        let n = |k: usize, one: &str, many: &str| if k == 1 { format!("1 {one}") } else { format!("{k} {many}") };
        writeln!(
            f,
            "lab {} — {}, {}, {} — run directory {}",
            self.record.id,
            n(count(NodeKind::Host), "host", "hosts"),
            n(count(NodeKind::Switch), "switch", "switches"),
            n(self.plan.links.len(), "link", "links"),
            self.record.dir.display()
        )?;
        let width = self.plan.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
        for node in &self.plan.nodes {
            let mut notes = vec![format!("netns {}", self.record.id.netns_name(&node.name))];
            if node.kind == NodeKind::Switch {
                notes.push("switch".into());
            }
            if node.forwarding {
                notes.push("forwarding".into());
            }
            writeln!(f, "  {:width$}  {}", node.name, notes.join(", "))?;
            for iface in &node.ifaces {
                let addrs: Vec<String> = iface.addrs.iter().map(|a| a.to_string()).collect();
                let peer = iface
                    .peer
                    .map(|(n, i)| format!("── {}:{}", self.plan.nodes[n].name, self.plan.nodes[n].ifaces[i].local))
                    .unwrap_or_else(|| "(bridge)".into());
                let mut extra = String::new();
                if let Some(mtu) = iface.mtu {
                    extra.push_str(&format!(" mtu {mtu}"));
                }
                if !iface.offloads {
                    extra.push_str(" offloads off");
                }
                writeln!(
                    f,
                    "  {:width$}    {:<16} {:<22} {peer}{extra}",
                    "",
                    self.record.id.ifname(&iface.local),
                    if addrs.is_empty() { "-".to_string() } else { addrs.join(" ") },
                )?;
            }
            for r in &node.routes {
                let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
                let dev =
                    r.dev.map(|d| format!(" dev {}", self.record.id.ifname(&node.ifaces[d].local))).unwrap_or_default();
                let dest = if r.dest.prefix_len() == 0 { "default".to_string() } else { r.dest.to_string() };
                writeln!(f, "  {:width$}    route {dest}{via}{dev}", "")?;
            }
        }
        Ok(())
    }
}
