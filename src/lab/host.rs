//! A host of a built lab: its names, directories and programs.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use ipnet::IpNet;

use super::error::{LabError, Result};
use super::plan::NodePlan;
use super::process::{self, Cmd, Process};
use super::sandbox::{HostDirs, Sandbox};
use super::{HostParts, Lab, no_runtime};

/// A host of a lab: its names, directories and programs.
#[derive(Clone, Copy)]
pub struct Host<'lab> {
    pub(super) lab: &'lab Lab,
    pub(super) idx: usize,
}

impl<'lab> Host<'lab> {
    fn plan(&self) -> &'lab NodePlan {
        &self.lab.plan.nodes[self.idx]
    }

    fn parts(&self) -> Result<&'lab HostParts> {
        let node = self.lab.nodes.get(self.idx).ok_or_else(no_runtime)?;
        if let Some(parts) = node.host.get() {
            return Ok(parts);
        }
        let _making = node.making.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(parts) = node.host.get() {
            return Ok(parts);
        }
        let name = self.name();
        let dirs = HostDirs::create(self.lab.dir(), name)?;
        let file = node.ns.file().map_err(|e| LabError::io(format!("host '{name}': namespace descriptor"), e))?;
        let netns_path = super::netns::netns_path(node.ns.name());
        let sandbox = Sandbox::new(name, file, netns_path, self.lab.dir(), &dirs.run, &self.plan().binds)?;
        let _syslog = super::syslog::SyslogSink::start(name, &dirs.run, &dirs.log)?;
        let _ = node.host.set(HostParts { dirs, sandbox, _syslog });
        node.host.get().ok_or_else(no_runtime)
    }

    /// The host's name in the topology.
    pub fn name(&self) -> &'lab str {
        &self.plan().name
    }

    /// Runs `f` on a thread inside the host's network namespace (for
    /// sockets and interface queries that need no program of their own).
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let node = self.lab.nodes.get(self.idx).ok_or_else(no_runtime)?;
        let mut f = Some(f);
        let mut out = super::netns::for_each_inside(&[&node.ns], |_, _| match f.take() {
            Some(f) => f(),
            None => Err(no_runtime()),
        })?;
        out.pop().ok_or_else(no_runtime)
    }

    /// Sets a `net.*` sysctl of the host's network namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let what = format!("host '{}': setting {key} = {value}", self.name());
        self.inside(move || super::sysctl::write(key, value).map_err(|e| LabError::io(what, e)))
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

    /// The last `lines` lines of every log of the host (its programs,
    /// `exec.log`, `syslog.log`, `pppd.log`), each under its path: what a
    /// failure message shows so that nobody has to go looking.
    pub fn log_tails(&self, lines: usize) -> String {
        let Ok(dir) = self.log_dir() else { return String::new() };
        let Ok(entries) = std::fs::read_dir(dir) else { return String::new() };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log") && p.metadata().is_ok_and(|m| m.len() > 0))
            .collect();
        logs.sort();
        logs.iter()
            .map(|p| format!("host '{}': last lines of {}:\n{}", self.name(), p.display(), process::tail(p, lines)))
            .collect::<Vec<_>>()
            .join("\n")
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
        let inside = parts.sandbox.entering(&cmd).map_err(|e| self.start_error(&cmd, e))?;
        let expr = inside.expression().stdout_file(file).stderr_file(err_file);
        let handle = expr.start().map_err(|e| self.start_error(&cmd, e))?;
        let netns = self.lab.nodes.get(self.idx).map(|n| n.ns.inode()).unwrap_or(0);
        let p = Process::new(self.name(), &cmd, handle, log, netns)
            .ok_or_else(|| self.start_error(&cmd, std::io::Error::other("no process id")))?;
        self.lab.lock_processes().push(p.clone());
        p.or_stop(p.wait_entered(std::time::Duration::from_secs(10)))?;
        tracing::debug!("host '{}': started {} (pid {})", self.name(), p.command_line(), p.pid());
        Ok(p)
    }

    /// Stops every program of the host that still runs (SIGTERM, SIGKILL
    /// after `grace`), as teardown would: asked to stop, none is a crash.
    pub fn stop_programs(&self, grace: std::time::Duration) -> Result<()> {
        let running: Vec<Process> = self
            .lab
            .lock_processes()
            .iter()
            .filter(|p| p.host() == self.name() && p.exit_status().is_none())
            .cloned()
            .collect();
        process::stop_all(&running, grace).map(|_| ())
    }

    /// Runs a command to completion in the host and returns its output,
    /// whatever its exit status; the command and its output are appended to
    /// `log/exec.log`. Killed past the command's time limit.
    pub fn exec(&self, cmd: Cmd) -> Result<Output> {
        let parts = self.parts()?;
        let inside = parts.sandbox.entering(&cmd).map_err(|e| self.start_error(&cmd, e))?;
        let out = process::run_once(self.name(), &cmd, inside.expression()).map_err(|e| match e {
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

    /// Whether `target` answers: one echo every 200 ms until the first
    /// reply, for at most `within` (whole seconds, at least 1). A ping that
    /// cannot even send (no route yet: a tunnel's route lands a moment
    /// after its SA) is run again, 200 ms later, until the time is up.
    pub fn answers_ping(&self, target: IpAddr, within: std::time::Duration) -> Result<bool> {
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + Duration::from_secs(within.as_secs().max(1));
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs_f64().ceil().max(1.0) as u64;
            let ping = Cmd::argv(&["ping", "-n", "-c", "1", "-i", "0.2", "-w", &left.to_string(), &target.to_string()]);
            if self.exec(ping.timeout(Duration::from_secs(left + 5)))?.status.success() {
                return Ok(true);
            }
            if Instant::now() + Duration::from_millis(200) >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
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

/// The echoes ping's summary line says came back (`N received`); 0 when
/// there is no summary.
pub fn echoes_received(ping_output: &str) -> u32 {
    let summary = ping_output.lines().find(|l| l.contains("packets transmitted")).unwrap_or("");
    summary.split(", ").find_map(|part| part.strip_suffix(" received")?.parse().ok()).unwrap_or(0)
}
