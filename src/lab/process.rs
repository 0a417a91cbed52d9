//! Programs running in lab hosts: starting them, awaiting readiness on
//! something real, stopping them, and noticing when they die.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::error::{Crash, LabError, NotReady, Result};

/// Lines of a log quoted in errors.
pub const TAIL_LINES: usize = 20;
/// How long a program gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A program and its arguments, to run in a host.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    label: Option<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Cmd {
    /// `program` with no arguments; one named without a path is looked up
    /// in `PATH` (see [`crate::prereq::find_program`]).
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            label: None,
            env: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// A command from a whole argument vector (`argv[0]` is the program).
    pub fn argv<S: AsRef<str>>(argv: &[S]) -> Cmd {
        let mut it = argv.iter().map(|s| s.as_ref().to_string());
        let program = it.next().unwrap_or_default();
        Cmd { args: it.collect(), ..Cmd::new(program) }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Cmd {
        self.args.extend(args.iter().map(|s| s.as_ref().to_string()));
        self
    }

    /// Names the program in logs and errors (default: the program's file name).
    pub fn label(mut self, label: impl Into<String>) -> Cmd {
        self.label = Some(label.into());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Time limit of a one-shot run ([`Host::exec`](super::Host::exec)); 30 s by default.
    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// The same command run by `prefix` (a program and its first
    /// arguments), keeping its label, environment and time limit.
    pub fn run_by<S: AsRef<str>>(self, prefix: &[S]) -> Cmd {
        let label = self.name();
        let mut argv: Vec<String> = prefix.iter().map(|s| s.as_ref().to_string()).collect();
        argv.push(self.program);
        argv.extend(self.args);
        let mut it = argv.into_iter();
        Cmd { program: it.next().unwrap_or_default(), args: it.collect(), label: Some(label), ..self }
    }

    /// The same command with `program` in place of its program (the same
    /// file by another path), keeping its label.
    pub fn with_program(self, program: impl Into<String>) -> Cmd {
        let label = self.name();
        Cmd { program: program.into(), label: Some(label), ..self }
    }

    /// The program, as given.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The label, or the program's file name.
    pub fn name(&self) -> String {
        self.label.clone().unwrap_or_else(|| {
            Path::new(&self.program).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
        })
    }

    /// Time limit of a one-shot run.
    pub fn time_limit(&self) -> Duration {
        self.timeout
    }

    /// The command line, quoted where needed, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program).chain(&self.args).map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    }

    pub(crate) fn expression(&self) -> duct::Expression {
        let mut e = duct::cmd(&self.program, &self.args).unchecked().stdin_null();
        for (k, v) in &self.env {
            e = e.env(k, v);
        }
        e
    }
}

fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// A long-running program in a host. Clones refer to the same process.
#[derive(Clone)]
pub struct Process(Arc<Inner>);

struct Inner {
    host: String,
    label: String,
    command_line: String,
    handle: duct::Handle,
    pid: u32,
    /// Inode of the host's network namespace.
    netns: u64,
    log: PathBuf,
    stopping: AtomicBool,
    /// Its exit status was read as an answer (a command run in the
    /// background): an error exit is no crash.
    answered: AtomicBool,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Process({} in {}, pid {})", self.0.label, self.0.host, self.0.pid)
    }
}

impl Process {
    /// Wraps a started program; `None` if duct reports no pid for it.
    pub(crate) fn new(host: &str, cmd: &Cmd, handle: duct::Handle, log: PathBuf, netns: u64) -> Option<Process> {
        let pid = handle.pids().first().copied().filter(|&p| p > 0)?;
        Some(Process(Arc::new(Inner {
            host: host.to_string(),
            label: cmd.name(),
            command_line: cmd.command_line(),
            handle,
            pid,
            netns,
            log,
            stopping: AtomicBool::new(false),
            answered: AtomicBool::new(false),
        })))
    }

    /// The process id (also its process group and session id).
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// The host it runs in.
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// Its label.
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The command line it was started with.
    pub fn command_line(&self) -> &str {
        &self.0.command_line
    }

    /// The file that receives its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.0.log
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.0.log, lines)
    }

    /// Waits until the program has entered its host, or exited: the
    /// helper that enters starts a session last, so a session id equal to
    /// the pid means the namespaces are the host's. Until then its
    /// `/proc` files are the runner's namespace's and its process group
    /// is not its own.
    pub(crate) fn wait_entered(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(100);
        while super::runs::session_of(self.0.pid) != Some(self.0.pid) && self.exit_status().is_none() {
            if Instant::now() >= deadline {
                return Err(self.not_ready("enter its host", timeout, String::new()));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Its exit status once it has exited, `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self.0.handle.try_wait() {
            Ok(Some(out)) => Some(out.status),
            _ => None,
        }
    }

    /// Waits until `ready()` holds, checking every few milliseconds; fails
    /// with the log's tail if it does not within `timeout` or if the process
    /// exits first. `what` completes "did not …" in the error.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                // One last look: it may have become ready and then exited.
                if ready() {
                    return Ok(());
                }
                return Err(self.not_ready(what, timeout, format!(", and exited with {}", describe(status))));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.not_ready(what, timeout, String::new()));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// [`Process::wait_until`] for a daemon that gives up and keeps
    /// running: fails as soon as its log says `gave_up`.
    pub fn wait_until_unless_log(
        &self,
        what: &str,
        timeout: Duration,
        gave_up: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let mut seen = LogScanner::new(self.0.log.clone(), gave_up);
        let mut gave = false;
        self.wait_until(what, timeout, || {
            ready() || {
                gave = seen.found();
                gave
            }
        })?;
        if gave {
            return Err(self.not_ready(what, timeout, format!(": it gave up first (its log says {gave_up:?})")));
        }
        Ok(())
    }

    fn not_ready(&self, what: &str, timeout: Duration, exited: String) -> LabError {
        LabError::NotReady(Box::new(NotReady {
            host: self.0.host.clone(),
            program: self.0.label.clone(),
            what: what.to_string(),
            timeout,
            exited,
            log: self.0.log.clone(),
            tail: self.log_tail(TAIL_LINES),
        }))
    }

    /// Waits until its log holds `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let log = self.0.log.clone();
        let mut seen = LogScanner::new(log, needle);
        self.wait_until(&format!("log {needle:?}"), timeout, move || seen.found())
    }

    /// Waits until `path` exists (a pid file, a FIFO, a socket moved into
    /// place once listening; a socket bound in place: [`Self::wait_for_listener`]).
    pub fn wait_for_path(&self, path: &Path, timeout: Duration) -> Result<()> {
        self.wait_until(&format!("create {}", path.display()), timeout, || path.exists())
    }

    /// Waits until the Unix stream socket at `path` takes a connection. Its
    /// file appears at bind(), before the process listens: a client that
    /// connects in between is refused (and `wg`, refused, even deletes the
    /// socket and turns to the kernel).
    pub fn wait_for_listener(&self, path: &Path, timeout: Duration) -> Result<()> {
        self.wait_until(&format!("answer on {}", path.display()), timeout, || takes_connections(path))
    }

    /// Waits until a socket of its network namespace listens on TCP `port`
    /// (or is bound to UDP `port`), as `/proc/PID/net` shows.
    pub fn wait_for_port(&self, proto: Proto, port: u16, timeout: Duration) -> Result<()> {
        let pid = self.0.pid;
        self.wait_until(&format!("{} {proto}/{port}", proto.verb()), timeout, || {
            proto.tables().iter().any(|t| {
                std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
                    .is_ok_and(|text| port_in_table(&text, proto, port))
            })
        })
    }

    /// `r`, after stopping the process if `r` is an error: for a readiness
    /// check whose error already tells the whole story, so that teardown
    /// does not report the same death again.
    pub fn or_stop<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            let _ = self.stop(Duration::from_secs(2));
        }
        r
    }

    /// Asks it to stop (SIGTERM to its process group, SIGKILL after
    /// `grace`) and returns how it ended. Stopping is not a crash.
    pub fn stop(&self, grace: Duration) -> Result<ExitStatus> {
        let mut statuses = stop_all(std::slice::from_ref(self), grace)?;
        statuses.pop().ok_or_else(|| LabError::io("stopping a process", io::Error::other("no status")))
    }

    /// Its exit status, read as the answer of a command run in the
    /// background: an error exit is that answer, not a crash.
    pub fn answer(&self) -> Option<ExitStatus> {
        let status = self.exit_status()?;
        self.0.answered.store(true, Ordering::SeqCst);
        Some(status)
    }

    /// If it exited with an error without being asked to stop (or its
    /// status read as an answer), what to report about it.
    pub(crate) fn crash(&self) -> Option<Crash> {
        if self.0.stopping.load(Ordering::SeqCst) || self.0.answered.load(Ordering::SeqCst) {
            return None;
        }
        let status = self.exit_status()?;
        if status.success() {
            return None;
        }
        Some(Crash {
            host: self.0.host.clone(),
            program: self.0.label.clone(),
            status: describe(status),
            log: self.0.log.clone(),
            tail: self.log_tail(TAIL_LINES),
        })
    }
}

/// Stops processes together: SIGTERM to every process group, one shared
/// `grace` for all of them to exit, then SIGKILL to what is left of each
/// group (children a leader left behind included). Returns their exit
/// statuses in order.
pub fn stop_all(processes: &[Process], grace: Duration) -> Result<Vec<ExitStatus>> {
    for p in processes {
        p.0.stopping.store(true, Ordering::SeqCst);
    }
    signal_groups(processes, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    for p in processes {
        let _ = p.0.handle.wait_deadline(deadline);
    }
    signal_groups(processes, Signal::SIGKILL);
    let mut statuses = Vec::with_capacity(processes.len());
    for p in processes {
        let out =
            p.0.handle
                .wait()
                .map_err(|e| LabError::io(format!("host '{}': waiting for {}", p.0.host, p.0.label), e))?;
        statuses.push(out.status);
    }
    Ok(statuses)
}

/// Signals the process groups of `processes`. While a leader is not
/// reaped its pid (the group id) cannot be reused, so `killpg` is safe;
/// the remaining members of groups whose leader is reaped are found by
/// group id *and* the host's namespace, in one look through `/proc`.
fn signal_groups(processes: &[Process], sig: Signal) {
    let mut reaped = Vec::new();
    for p in processes {
        if p.exit_status().is_none() {
            let _ = killpg(Pid::from_raw(p.0.pid as i32), sig);
        } else {
            reaped.push((p.0.pid, p.0.netns));
        }
    }
    for pid in super::runs::group_members(&reaped) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
    }
}

/// "exit status 1" or "signal 11 (SIGSEGV)".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({s})"),
            Err(_) => format!("signal {sig}"),
        },
        _ => "an unknown status".into(),
    }
}

/// Runs a one-shot command already set up to enter its host: captures its
/// output, kills its process group past the time limit.
pub(crate) fn run_once(host: &str, cmd: &Cmd, expr: duct::Expression) -> Result<Output> {
    let context = || format!("host '{host}': running `{}`", cmd.command_line());
    let handle = expr.stdout_capture().stderr_capture().start().map_err(|e| LabError::io(context(), e))?;
    match handle.wait_deadline(Instant::now() + cmd.time_limit()) {
        Ok(Some(out)) => Ok(out.clone()),
        Ok(None) => {
            if let Some(&pid) = handle.pids().first() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = handle.wait();
            Err(LabError::Timeout { host: host.to_string(), command: cmd.command_line(), timeout: cmd.time_limit() })
        }
        Err(e) => Err(LabError::io(context(), e)),
    }
}

/// A transport protocol, for port readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// TCP: a socket in LISTEN state.
    Tcp,
    /// UDP: a bound socket.
    Udp,
}

impl Proto {
    fn tables(self) -> [&'static str; 2] {
        match self {
            Proto::Tcp => ["tcp", "tcp6"],
            Proto::Udp => ["udp", "udp6"],
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Proto::Tcp => "listen on",
            Proto::Udp => "bind",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// Whether a `/proc/net/{tcp,udp}[6]` table has a socket on local `port`
/// (listening, for TCP).
pub fn port_in_table(text: &str, proto: Proto, port: u16) -> bool {
    const TCP_LISTEN: &str = "0A";
    text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let Some((_, hex_port)) = local.rsplit_once(':') else { return false };
        let Ok(p) = u16::from_str_radix(hex_port, 16) else { return false };
        p == port && (proto == Proto::Udp || state == TCP_LISTEN)
    })
}

/// The last `lines` lines of a file (from at most its last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else { return format!("    (no log at {})", path.display()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return format!("    (cannot read {})", path.display());
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "    (empty)".into();
    }
    all[all.len().saturating_sub(lines)..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// Looks for a string in a growing log without reading it twice.
struct LogScanner {
    path: PathBuf,
    needle: Vec<u8>,
    offset: u64,
    carry: Vec<u8>,
}

impl LogScanner {
    fn new(path: PathBuf, needle: &str) -> LogScanner {
        LogScanner { path, needle: needle.as_bytes().to_vec(), offset: 0, carry: Vec::new() }
    }

    fn found(&mut self) -> bool {
        let Ok(mut f) = File::open(&self.path) else { return false };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut fresh = Vec::new();
        if f.read_to_end(&mut fresh).is_err() {
            return false;
        }
        self.offset += fresh.len() as u64;
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(&fresh);
        if self.needle.is_empty() || window.windows(self.needle.len()).any(|w| w == self.needle.as_slice()) {
            return true;
        }
        let keep = self.needle.len().saturating_sub(1).min(window.len());
        self.carry = window[window.len() - keep..].to_vec();
        false
    }
}

/// Creates the log file of a program (`<label>.log`, or `<label>-2.log` …).
pub(crate) fn create_log(dir: &Path, label: &str) -> io::Result<(PathBuf, File)> {
    let safe: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let mut n = 1;
    loop {
        let name = if n == 1 { format!("{safe}.log") } else { format!("{safe}-{n}.log") };
        let path = dir.join(name);
        match File::options().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Whether a Unix stream socket at `path` accepts a connection.
fn takes_connections(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_run_by_another_keeps_its_label_environment_and_limit() {
        let cmd = Cmd::argv(&["pppd", "pty", "pptp x"]).env("A", "1").timeout(Duration::from_secs(7));
        let run = cmd.run_by(&["sh", "-c", "exec \"$@\"", "sh"]);
        assert_eq!(run.command_line(), "sh -c 'exec \"$@\"' sh pppd pty 'pptp x'");
        assert_eq!((run.name(), run.time_limit()), ("pppd".to_string(), Duration::from_secs(7)));
        assert_eq!(run.env, vec![("A".to_string(), "1".to_string())]);
    }

    #[test]
    fn a_socket_bound_but_not_listening_takes_no_connections() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wg0.sock");
        assert!(!takes_connections(&path), "no socket yet");
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::empty(), None).expect("socket");
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(&path).expect("addr")).expect("bind");
        assert!(path.exists());
        assert!(!takes_connections(&path), "bound, not listening");
        drop(fd);
        std::fs::remove_file(&path).expect("remove");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("listen");
        assert!(takes_connections(&path));
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:06BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D3A2 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
";

    #[test]
    fn listening_tcp_ports_are_found_and_connected_ones_are_not() {
        assert!(port_in_table(TCP, Proto::Tcp, 1723));
        assert!(!port_in_table(TCP, Proto::Tcp, 8080), "established, not listening");
        assert!(port_in_table(TCP, Proto::Udp, 8080), "any bound socket counts for udp");
        assert!(!port_in_table("garbage\nmore garbage here", Proto::Tcp, 1723));
        assert!(!port_in_table("", Proto::Udp, 0));
    }

    #[test]
    fn log_scanner_finds_needles_split_across_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "starting\nlisten").expect("write");
        let mut s = LogScanner::new(path.clone(), "listening on");
        assert!(!s.found());
        let mut f = File::options().append(true).open(&path).expect("open");
        io::Write::write_all(&mut f, b"ing on 1701\n").expect("append");
        assert!(s.found());
    }

    #[test]
    fn tail_quotes_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.log");
        std::fs::write(&path, (1..=30).map(|i| format!("line {i}\n")).collect::<String>()).expect("write");
        let t = tail(&path, 3);
        assert_eq!(t, "    line 28\n    line 29\n    line 30");
        assert!(tail(&dir.path().join("none"), 3).contains("no log"));
    }

    #[test]
    fn logs_never_overwrite_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, _) = create_log(dir.path(), "charon").expect("first");
        let (b, _) = create_log(dir.path(), "charon").expect("second");
        let (c, _) = create_log(dir.path(), "a b/c").expect("odd label");
        assert_ne!(a, b);
        assert!(b.ends_with("charon-2.log"));
        assert!(c.ends_with("a_b_c.log"));
    }

    #[test]
    fn command_lines_are_quoted_for_reading() {
        let c = Cmd::argv(&["ping", "-c", "1", "it's"]);
        assert_eq!(c.command_line(), r"ping -c 1 'it'\''s'");
        assert_eq!(c.name(), "ping");
        assert_eq!(Cmd::new("/usr/sbin/pptpd").label("pptpd-1").name(), "pptpd-1");
    }
}
