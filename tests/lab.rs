//! Lab engine tests: real namespaces, links and processes. They need root;
//! without it (or without a program they use) they are reported as ignored
//! with the reason, and with `VPN_PASSTHROUGH_STRICT=1` (as in CI) a missing
//! prerequisite is a failure instead.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed};
use vpn_passthrough::lab::{
    self, Cmd, EndpointSpec, HostSpec, Lab, LabError, LinkSpec, Proto, RunId, StartGate, Topology, netns, runs,
};
use vpn_passthrough::prereq;

mod common;

use common::{Need, TestResult, lab_test, nothing_of_ours_left};

const ROOT: &[Need] = &[Need::Root];
const ROOT_PING: &[Need] = &[Need::Root, Need::Tool("ping")];
const ROOT_IP: &[Need] = &[Need::Root, Need::Tool("ip")];

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        lab_test("three_hosts_ping_across_the_router", ROOT_PING, three_hosts_ping_across_the_router),
        lab_test("without_forwarding_the_router_drops", ROOT_PING, without_forwarding_the_router_drops),
        lab_test("star_of_hosts_on_a_switch", ROOT_PING, star_of_hosts_on_a_switch),
        lab_test("chain_routes_end_to_end", ROOT_PING, chain_routes_end_to_end),
        lab_test("mtu_and_offloads_are_applied", ROOT, mtu_and_offloads_are_applied),
        lab_test("two_labs_in_one_process", ROOT_PING, two_labs_in_one_process),
        lab_test("two_processes_at_once", ROOT_PING, two_processes_at_once),
        lab_test("panic_inside_a_test_leaves_nothing", ROOT, panic_inside_a_test_leaves_nothing),
        lab_test("sigterm_tears_the_lab_down", ROOT, sigterm_tears_the_lab_down),
        lab_test(
            "sweep_removes_what_a_killed_run_left",
            &[Need::Root, Need::Tool("ip")],
            sweep_removes_what_a_killed_run_left,
        ),
        lab_test("signals_give_adopted_ports_back", ROOT_IP, signals_give_adopted_ports_back),
        lab_test("a_panic_gives_adopted_ports_back", ROOT_IP, a_panic_gives_adopted_ports_back),
        lab_test("sweep_gives_back_the_ports_of_a_killed_run", ROOT_IP, sweep_gives_back_the_ports_of_a_killed_run),
        lab_test("the_uplink_is_never_adopted", ROOT_IP, the_uplink_is_never_adopted),
        lab_test("hosts_have_private_run_and_sys", ROOT, hosts_have_private_run_and_sys),
        lab_test("two_charons_run_at_once", &[Need::Root, Need::Tool("charon")], two_charons_run_at_once),
        lab_test("readiness_waits_on_real_things", &[Need::Root, Need::Tool("iperf3")], readiness_waits_on_real_things),
        lab_test("readiness_errors_name_host_program_and_log", ROOT, readiness_errors_name_host_program_and_log),
        lab_test("a_start_gate_holds_programs_until_it_opens", ROOT, a_start_gate_holds_programs_until_it_opens),
        lab_test("a_crash_is_reported_at_teardown", ROOT, a_crash_is_reported_at_teardown),
        lab_test("a_missing_program_says_what_to_do", ROOT, a_missing_program_says_what_to_do),
        lab_test("doctor_finds_everything_a_run_needs", ROOT, doctor_finds_everything_a_run_needs),
        lab_test(
            "stubborn_programs_and_their_children_are_killed",
            ROOT,
            stubborn_programs_and_their_children_are_killed,
        ),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = nothing_of_ours_left() {
        eprintln!("after the lab tests: {e}");
        std::process::exit(101);
    }
    conclusion.exit();
}

/// client — router — server.
fn three_hosts(forwarding: bool) -> Topology {
    let router = if forwarding { HostSpec::new("router").forwarding() } else { HostSpec::new("router") };
    Topology::new()
        .host(HostSpec::new("client").default_route("10.1.0.1").default_route("fd00:1::1"))
        .host(router)
        .host(HostSpec::new("server").default_route("10.2.0.1").default_route("fd00:2::1"))
        .link(
            EndpointSpec::new("client", "eth0").addr("10.1.0.2/24").addr("fd00:1::2/64"),
            EndpointSpec::new("router", "lan").addr("10.1.0.1/24").addr("fd00:1::1/64"),
        )
        .link(
            EndpointSpec::new("router", "wan").addr("10.2.0.1/24").addr("fd00:2::1/64"),
            EndpointSpec::new("server", "eth0").addr("10.2.0.2/24").addr("fd00:2::2/64"),
        )
}

/// Asserts that nothing named for run `id` exists any more and that no
/// process is left in its namespaces.
fn assert_gone(id: RunId, inodes: &[u64]) -> TestResult {
    let prefix = id.prefix();
    let left: Vec<String> = netns::list_names().into_iter().filter(|n| n.starts_with(&prefix)).collect();
    if !left.is_empty() {
        return Err(format!("namespaces of run {id} are still there: {left:?}").into());
    }
    let links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect())
        .unwrap_or_default();
    if !links.is_empty() {
        return Err(format!("interfaces of run {id} are still there: {links:?}").into());
    }
    let procs = runs::processes_in(inodes);
    if !procs.is_empty() {
        return Err(format!("processes {procs:?} are still in the namespaces of run {id}").into());
    }
    if PathBuf::from(runs::RUNS_DIR).join(id.as_str()).exists() {
        return Err(format!("the record of run {id} is still there").into());
    }
    Ok(())
}

fn inodes_of(lab: &Lab) -> Vec<u64> {
    lab.netns_names()
        .iter()
        .filter_map(|n| std::fs::metadata(netns::netns_path(n)).ok())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .collect()
}

fn three_hosts_ping_across_the_router() -> TestResult {
    let lab = Lab::build(&three_hosts(true))?;
    let id = lab.run_id();
    let inodes = inodes_of(&lab);
    assert_eq!(lab.netns_names().len(), 3);
    for n in lab.netns_names() {
        if !netns::netns_path(&n).exists() {
            return Err(format!("{n} is not visible to `ip netns`").into());
        }
    }
    let client = lab.host("client")?;
    let server = lab.host("server")?;
    for target in [server.ipv4(), server.ipv6()].into_iter().flatten() {
        client.ping(target)?;
    }
    server.ping(client.ipv4().ok_or("client has no IPv4 address")?)?;
    lab.teardown()?;
    assert_gone(id, &inodes)
}

fn without_forwarding_the_router_drops() -> TestResult {
    let lab = Lab::build(&three_hosts(false))?;
    let client = lab.host("client")?;
    // The router itself answers; beyond it nothing does.
    client.ping("10.1.0.1".parse()?)?;
    match client.ping("10.2.0.2".parse()?) {
        Err(LabError::Failed { .. }) => {}
        Ok(_) => return Err("ping crossed a router without forwarding".into()),
        Err(e) => return Err(e.into()),
    }
    lab.teardown()?;
    Ok(())
}

fn star_of_hosts_on_a_switch() -> TestResult {
    let lab = Lab::build(&Topology::star(6))?;
    assert_eq!(lab.netns_names().len(), 7, "six hosts and a switch");
    let h0 = lab.host("h0")?;
    for i in [1, 5] {
        h0.ping(lab.host(&format!("h{i}"))?.ipv4().ok_or("no address")?)?;
    }
    lab.teardown()?;
    Ok(())
}

fn chain_routes_end_to_end() -> TestResult {
    let lab = Lab::build(&Topology::chain(5))?;
    let far = lab.host("h4")?.ipv4().ok_or("no address")?;
    lab.host("h0")?.ping(far)?;
    let near = lab.host("h0")?.ipv4().ok_or("no address")?;
    lab.host("h4")?.ping(near)?;
    lab.teardown()?;
    Ok(())
}

fn mtu_and_offloads_are_applied() -> TestResult {
    let t = Topology::new()
        .host("a")
        .host(HostSpec::new("b").sysctl("net.ipv4.conf.eth0.rp_filter", "2"))
        .link_spec(
            LinkSpec::new(("a", "eth0", "10.9.0.1/24"), ("b", "eth0", "10.9.0.2/24")).mtu(1400).without_offloads(),
        )
        .link(("a", "eth1", "10.8.0.1/24"), ("b", "eth1", "10.8.0.2/24"));
    let lab = Lab::build(&t)?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let ifname = a.ifname("eth0")?;
    let mtu = a.run_ok(Cmd::argv(&["cat", &format!("/sys/class/net/{ifname}/mtu")]))?;
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1400");
    let mtu = b.run_ok(Cmd::argv(&["cat", &format!("/sys/class/net/{}/mtu", b.ifname("eth1")?)]))?;
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1500");
    if a.offloads_on("eth0")? || b.offloads_on("eth0")? {
        return Err("offloads still on for a link that asked them off".into());
    }
    if !a.offloads_on("eth1")? {
        return Err("offloads off on a link that kept the default".into());
    }
    a.disable_offloads("eth1")?;
    if a.offloads_on("eth1")? {
        return Err("disable_offloads left them on".into());
    }
    let rp = b.run_ok(Cmd::argv(&["cat", &format!("/proc/sys/net/ipv4/conf/{}/rp_filter", b.ifname("eth0")?)]))?;
    assert_eq!(String::from_utf8_lossy(&rp.stdout).trim(), "2", "per-interface sysctl");
    lab.teardown()?;
    Ok(())
}

fn two_labs_in_one_process() -> TestResult {
    let build_and_ping = || -> Result<(RunId, Vec<String>), String> {
        let lab = Lab::build(&three_hosts(true)).map_err(|e| e.to_string())?;
        let client = lab.host("client").map_err(|e| e.to_string())?;
        client.ping("10.2.0.2".parse().map_err(|e| format!("{e}"))?).map_err(|e| e.to_string())?;
        let out = (lab.run_id(), lab.netns_names());
        lab.teardown().map_err(|e| e.to_string())?;
        Ok(out)
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(build_and_ping);
        let b = s.spawn(build_and_ping);
        (a.join(), b.join())
    });
    let a = a.map_err(|_| "first lab panicked")??;
    let b = b.map_err(|_| "second lab panicked")??;
    assert_ne!(a.0, b.0, "two labs got the same run id");
    if a.1.iter().any(|n| b.1.contains(n)) {
        return Err(format!("namespace names collide: {:?} / {:?}", a.1, b.1).into());
    }
    assert_gone(a.0, &[])?;
    assert_gone(b.0, &[])
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vpn-passthrough")
}

fn two_processes_at_once() -> TestResult {
    let spawn = || Command::new(binary()).args(["lab", "demo"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let (a, b) = (spawn()?, spawn()?);
    for (name, child) in [("first", a), ("second", b)] {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!(
                "{name} `lab demo` failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains("ping client -> server 10.2.0.2") || !text.contains("torn down") {
            return Err(format!("{name} `lab demo` printed:\n{text}").into());
        }
    }
    Ok(())
}

fn panic_inside_a_test_leaves_nothing() -> TestResult {
    let (tx, rx) = mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let lab = Lab::build(&three_hosts(true)).expect("lab builds");
        let sleeper = lab.host("server").and_then(|h| h.spawn(Cmd::argv(&["sleep", "600"]))).expect("sleep starts");
        tx.send((lab.run_id(), inodes_of(&lab), lab.dir().to_path_buf(), sleeper.pid())).expect("send");
        panic!("deliberate panic: the lab must still be torn down");
    });
    if outcome.is_ok() {
        return Err("the closure did not panic".into());
    }
    let (id, inodes, dir, pid) = rx.recv_timeout(Duration::from_secs(1))?;
    assert_gone(id, &inodes)?;
    if PathBuf::from(format!("/proc/{pid}")).exists() && runs::netns_inode_of(pid).is_some() {
        return Err(format!("the sleep started in the lab (pid {pid}) survived").into());
    }
    if !dir.join("hosts/server/log/sleep.log").exists() {
        return Err(format!("a panicking lab must keep its run directory; {} is gone", dir.display()).into());
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Starts `vpn-passthrough lab up` and returns it with the id it printed.
fn lab_up() -> Result<(std::process::Child, RunId), Failed> {
    lab_up_with(&[])
}

/// The same with more arguments (`--topology FILE`).
fn lab_up_with(args: &[&str]) -> Result<(std::process::Child, RunId), Failed> {
    let mut child =
        Command::new(binary()).args(["lab", "up"]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut id, mut up) = (None, false);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(deadline - Instant::now()) else { break };
        if let Some(rest) = line.strip_prefix("lab ") {
            if let Some(word) = rest.split_whitespace().next() {
                id = id.or(RunId::parse(word));
            }
        }
        if line.contains("is up;") {
            up = true;
            break;
        }
    }
    match id {
        Some(id) if up => Ok((child, id)),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err("`lab up` did not report its lab up within 20 s".into())
        }
    }
}

fn netns_of(id: RunId) -> Vec<String> {
    netns::list_names().into_iter().filter(|n| n.starts_with(&id.prefix())).collect()
}

fn sigterm_tears_the_lab_down() -> TestResult {
    let (child, id) = lab_up()?;
    let names = netns_of(id);
    if names.len() != 3 {
        return Err(format!("expected 3 namespaces of run {id}, found {names:?}").into());
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)?;
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Err("`lab up` exited 0 on SIGTERM; expected death by the signal".into());
    }
    assert_gone(id, &[])?;
    // A signal is not a clean end: the run directory stays, and says where.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = stderr
        .lines()
        .find_map(|l| l.split_once("run directory kept at ").map(|(_, p)| PathBuf::from(p.trim())))
        .ok_or_else(|| format!("`lab up` did not say where its run directory is: {stderr}"))?;
    if !kept.is_dir() {
        return Err(format!("{} was announced but is not there", kept.display()).into());
    }
    std::fs::remove_dir_all(kept)?;
    Ok(())
}

/// Held by the tests that kill a run and sweep it, so that one's sweep does
/// not take the other's run.
static SWEEPING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sweep_removes_what_a_killed_run_left() -> TestResult {
    let _one_at_a_time = SWEEPING.lock().unwrap_or_else(|p| p.into_inner());
    let (mut child, id) = lab_up()?;
    let client = id.netns_name("client");
    // Something running in the dead run's namespace, as a daemon would be.
    let mut orphan = Command::new("ip").args(["netns", "exec", &client, "sleep", "600"]).spawn()?;
    let orphan_pid = orphan.id();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(netns::netns_path(&client))?);
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs::netns_inode_of(orphan_pid) != Some(inode) {
        if Instant::now() > deadline {
            return Err("the orphan never entered the namespace".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill()?; // SIGKILL: no teardown can run
    child.wait()?;
    if netns_of(id).len() != 3 {
        return Err("a killed run should leave its namespaces for the sweep".into());
    }
    let report = lab::sweep()?;
    let _ = orphan.wait();
    if !report.runs.contains(&id.to_string()) {
        return Err(format!("sweep did not name run {id}: {report:?}").into());
    }
    if report.processes < 1 {
        return Err(format!("sweep ended no process: {report:?}").into());
    }
    assert_gone(id, &[inode])?;
    for d in report.kept_dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

/// Runs `ip ARGS`, failing with its output.
fn ip(args: &[&str]) -> TestResult {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(())
}

/// A veth pair made for a test in this namespace, deleted when dropped;
/// `name` is the end a lab adopts (when its namespace goes, the pair goes),
/// `{name}p` the end that never leaves this namespace.
struct TestVeth {
    name: String,
}

impl TestVeth {
    fn new(tag: &str) -> Result<TestVeth, Failed> {
        // Not a lab name (`vpXYZ-`): a sweep must not delete it.
        let name = format!("lb{tag}{}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["link", "del", &name]).output();
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &format!("{name}p")])?;
        Ok(TestVeth { name })
    }

    /// Whether the interface is in this namespace under its name.
    fn is_home(&self) -> bool {
        PathBuf::from("/sys/class/net").join(&self.name).exists()
    }

    /// A topology file: a host on a switch that adopts this interface.
    fn topology(&self) -> Result<tempfile::NamedTempFile, Failed> {
        let file = tempfile::NamedTempFile::new()?;
        let text = format!(
            "[[host]]\nname = \"h\"\n\n[[switch]]\nname = \"sw\"\nadopt = \"{}\"\n\n[[link]]\n\
             a = {{ node = \"h\", iface = \"eth0\", addrs = [\"10.77.0.1/24\"] }}\nb = {{ node = \"sw\" }}\n",
            self.name
        );
        std::fs::write(file.path(), text)?;
        Ok(file)
    }
}

impl Drop for TestVeth {
    /// Deletes the pair through the end that stays here: the adopted end
    /// may still be in a lab namespace (a `lab up` killed when it did not
    /// come up), and the next sweep would give it back after the test.
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &format!("{}p", self.name)]).output();
    }
}

/// The run directory a `lab up` that died by a signal announced on stderr.
fn kept_dir(stderr: &[u8]) -> Option<PathBuf> {
    String::from_utf8_lossy(stderr)
        .lines()
        .find_map(|l| l.split_once("run directory kept at ").map(|(_, p)| PathBuf::from(p.trim())))
}

/// `lab up` with a switch adopting a veth end of this namespace, ended by
/// SIGTERM, SIGINT and SIGHUP: each time the interface comes back here
/// under its name (a namespace removed with it inside would destroy it).
fn signals_give_adopted_ports_back() -> TestResult {
    use nix::sys::signal::Signal;
    let port = TestVeth::new("sig")?;
    let topology = port.topology()?;
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let (child, id) = lab_up_with(&["--topology", &topology.path().to_string_lossy()])?;
        if port.is_home() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            return Err(format!("{signal}: the lab did not adopt {}", port.name).into());
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)?;
        let out = child.wait_with_output()?;
        if let Some(dir) = kept_dir(&out.stderr) {
            let _ = std::fs::remove_dir_all(dir);
        }
        assert_gone(id, &[])?;
        if !port.is_home() {
            return Err(format!(
                "{signal}: {} was not given back to this namespace; `lab up` said: {}",
                port.name,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
    }
    Ok(())
}

fn a_panic_gives_adopted_ports_back() -> TestResult {
    let port = TestVeth::new("pan")?;
    let name = port.name.clone();
    let (tx, rx) = mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let t = Topology::new().host("h").switch_with_port("sw", &name).link(("h", "eth0", "10.77.0.1/24"), "sw");
        let lab = Lab::build(&t).expect("lab builds");
        tx.send((lab.run_id(), lab.dir().to_path_buf(), PathBuf::from("/sys/class/net").join(&name).exists()))
            .expect("send");
        panic!("deliberate panic: the adopted port must still come back");
    });
    if outcome.is_ok() {
        return Err("the closure did not panic".into());
    }
    let (id, dir, home_while_up) = rx.recv_timeout(Duration::from_secs(1))?;
    let _ = std::fs::remove_dir_all(dir);
    assert_gone(id, &[])?;
    if home_while_up {
        return Err(format!("the lab did not adopt {}", port.name).into());
    }
    if !port.is_home() {
        return Err(format!("{} was not given back after a panic", port.name).into());
    }
    Ok(())
}

/// A run killed with SIGKILL cannot give its ports back; the sweep does,
/// from what the run recorded.
fn sweep_gives_back_the_ports_of_a_killed_run() -> TestResult {
    let _one_at_a_time = SWEEPING.lock().unwrap_or_else(|p| p.into_inner());
    let port = TestVeth::new("kil")?;
    let topology = port.topology()?;
    let (mut child, id) = lab_up_with(&["--topology", &topology.path().to_string_lossy()])?;
    child.kill()?; // SIGKILL: no teardown can run
    child.wait()?;
    if port.is_home() {
        return Err(format!("the lab did not adopt {}", port.name).into());
    }
    let report = lab::sweep()?;
    for d in &report.kept_dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    assert_gone(id, &[])?;
    if !port.is_home() {
        return Err(format!("{} is not back in this namespace after the sweep: {report:?}", port.name).into());
    }
    // Another process's lab may have swept the run first (with the same
    // code); when this sweep did, it says so.
    if report.runs.contains(&id.to_string()) && !report.ports.contains(&port.name) {
        return Err(format!("the sweep of run {id} does not list {}: {report:?}", port.name).into());
    }
    Ok(())
}

/// A namespace of the test's own, removed when dropped.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new() -> Result<TestNs, Failed> {
        let name = format!("lbuplink{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name])?;
        Ok(TestNs { name })
    }

    fn ip(&self, args: &[&str]) -> TestResult {
        ip(&[&["-n", self.name.as_str()][..], args].concat())
    }

    /// Whether `iface` is in this namespace.
    fn has(&self, iface: &str) -> bool {
        Command::new("ip").args(["-n", &self.name, "link", "show", iface]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Adopting the interface of the default route (IPv4 or IPv6) is refused,
/// with its name and why; another interface of the same namespace is
/// adopted and given back to that namespace. The labs are built from a
/// thread inside a namespace of the test's own, whose default routes
/// leave through veth ends.
fn the_uplink_is_never_adopted() -> TestResult {
    let ns = TestNs::new()?;
    for iface in ["up4", "up6", "spare"] {
        ns.ip(&["link", "add", iface, "type", "veth", "peer", "name", &format!("{iface}p")])?;
        ns.ip(&["link", "set", iface, "up"])?;
        ns.ip(&["link", "set", &format!("{iface}p"), "up"])?;
    }
    ns.ip(&["addr", "add", "192.0.2.2/24", "dev", "up4"])?;
    ns.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "up4"])?;
    ns.ip(&["-6", "route", "add", "default", "dev", "up6", "metric", "2048"])?;
    let file = std::fs::File::open(netns::netns_path(&ns.name))?;
    let adopting =
        |iface: &str| Topology::new().host("h").switch_with_port("sw", iface).link(("h", "eth0", "10.77.0.1/24"), "sw");
    let result: Result<(), String> = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            for (iface, family) in [("up4", "IPv4"), ("up6", "IPv6")] {
                let e = match Lab::build(&adopting(iface)) {
                    Ok(lab) => {
                        let _ = lab.teardown();
                        return Err(format!("{iface}, the {family} uplink, was adopted"));
                    }
                    Err(e) => e.to_string(),
                };
                let want =
                    format!("will not adopt interface '{iface}': it carries this machine's {family} default route");
                if !e.contains(&want) {
                    return Err(format!("adopting {iface}: {e}"));
                }
                if !ns.has(iface) {
                    return Err(format!("{iface} left its namespace"));
                }
            }
            let lab = Lab::build(&adopting("spare")).map_err(|e| format!("adopting spare: {e}"))?;
            let adopted = !ns.has("spare");
            lab.teardown().map_err(|e| e.to_string())?;
            if !adopted {
                return Err("spare was not adopted".into());
            }
            if !ns.has("spare") {
                let elsewhere = PathBuf::from("/sys/class/net/spare").exists();
                return Err(format!(
                    "spare did not come back to the namespace it came from (in the main one: {elsewhere})"
                ));
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err("the test thread panicked".into()))
    });
    Ok(result?)
}

fn hosts_have_private_run_and_sys() -> TestResult {
    let shared = tempfile::tempdir()?;
    std::fs::write(shared.path().join("marker"), "bound in")?;
    let t = Topology::new()
        .host(HostSpec::new("a").bind(shared.path(), "/mnt"))
        .host("b")
        .link(("a", "eth0", "10.7.0.1/24"), ("b", "eth0", "10.7.0.2/24"));
    let lab = Lab::build(&t)?;
    let (a, b) = (lab.host("a")?, lab.host("b")?);
    let write_pid = "echo $$ > /run/lab-test.pid; readlink /proc/self/ns/net";
    let pa = a.run_ok(Cmd::argv(&["sh", "-c", write_pid]))?;
    let pb = b.run_ok(Cmd::argv(&["sh", "-c", write_pid]))?;
    assert_ne!(pa.stdout, pb.stdout, "two hosts share a network namespace");
    let (fa, fb) = (a.run_dir()?.join("lab-test.pid"), b.run_dir()?.join("lab-test.pid"));
    if !fa.exists() || !fb.exists() || std::fs::read(&fa)? == std::fs::read(&fb)? {
        return Err("each host must write its own /run".into());
    }
    if PathBuf::from("/run/lab-test.pid").exists() {
        return Err("a host wrote into the machine's /run".into());
    }
    let ls = a.run_ok(Cmd::argv(&["ls", "/sys/class/net"]))?;
    let names = String::from_utf8_lossy(&ls.stdout).to_string();
    if !names.contains(&a.ifname("eth0")?) || names.lines().count() != 2 {
        return Err(format!("/sys/class/net in host a should list lo and its eth0, got {names:?}").into());
    }
    let marker = a.run_ok(Cmd::argv(&["cat", "/mnt/marker"]))?;
    assert_eq!(String::from_utf8_lossy(&marker.stdout), "bound in");
    // One mount namespace per host: its programs share it, hosts and the
    // machine do not.
    let mnt = |h: &vpn_passthrough::lab::Host<'_>| -> Result<String, Failed> {
        Ok(String::from_utf8_lossy(&h.run_ok(Cmd::argv(&["readlink", "/proc/self/ns/mnt"]))?.stdout).into_owned())
    };
    let (a1, a2, b1) = (mnt(&a)?, mnt(&a)?, mnt(&b)?);
    let here = std::fs::read_link("/proc/self/ns/mnt")?.to_string_lossy().into_owned();
    if a1 != a2 || a1 == b1 || a1.trim() == here {
        return Err(format!("mount namespaces: a {a1:?} and {a2:?}, b {b1:?}, this process {here:?}").into());
    }
    // The lab's files are at their own paths inside a host, wherever the
    // run directory is (under /dev/shm, which each host has its own of).
    let conf = a.write_conf("seen.txt", "from the runner")?;
    let seen = a.run_ok(Cmd::argv(&["cat", &conf.to_string_lossy()]))?;
    assert_eq!(String::from_utf8_lossy(&seen.stdout), "from the runner");
    a.run_ok(Cmd::argv(&["touch", "/dev/shm/lab-test-shm"]))?;
    if b.exec(Cmd::argv(&["test", "-e", "/dev/shm/lab-test-shm"]))?.status.success()
        || PathBuf::from("/dev/shm/lab-test-shm").exists()
    {
        return Err("host a's /dev/shm is seen outside it".into());
    }
    if b.exec(Cmd::argv(&["cat", "/mnt/marker"]))?.status.success() {
        return Err("host b sees host a's bind mount".into());
    }
    lab.teardown()?;
    Ok(())
}

fn two_charons_run_at_once() -> TestResult {
    let charon = prereq::require_tool("charon")?;
    let lab = Lab::build(&three_hosts(true))?;
    let mut started = Vec::new();
    for name in ["client", "server"] {
        let host = lab.host(name)?;
        // A minimal config in the host's own directory; charon's pid file
        // and vici socket land in the host's /run.
        let conf = host.write_conf(
            "strongswan.conf",
            "charon {\n  load_modular = no\n  load = random nonce openssl pem pkcs1 kernel-netlink socket-default vici\n  filelog {\n    stderr { default = 1 }\n  }\n}\n",
        )?;
        let p = host
            .spawn(Cmd::new(charon.to_string_lossy()).env("STRONGSWAN_CONF", conf.to_string_lossy()).label("charon"))?;
        started.push((host, p));
    }
    for (host, p) in &started {
        let run = host.run_dir()?;
        // charon creates its pid file before it writes the pid in it.
        let read_pid = || std::fs::read_to_string(run.join("charon.pid")).ok()?.trim().parse::<u32>().ok();
        p.wait_until("write its pid file", Duration::from_secs(20), || read_pid().is_some())?;
        p.wait_for_listener(&run.join("charon.vici"), Duration::from_secs(20))?;
        let pid = read_pid().ok_or("charon's pid file lost its pid")?;
        if pid != p.pid() {
            return Err(format!("host {}: charon.pid says {pid}, charon is {}", host.name(), p.pid()).into());
        }
    }
    if started.iter().any(|(_, p)| p.exit_status().is_some()) {
        return Err("a charon exited while the other started".into());
    }
    lab.teardown()?;
    Ok(())
}

fn readiness_waits_on_real_things() -> TestResult {
    let lab = Lab::build(&three_hosts(true))?;
    let server = lab.host("server")?;
    let iperf = server.spawn(Cmd::argv(&["iperf3", "-s", "-p", "5301"]))?;
    iperf.wait_for_port(Proto::Tcp, 5301, Duration::from_secs(10))?;
    let client = lab.host("client")?;
    let out = client.run_ok(Cmd::argv(&["iperf3", "-c", "10.2.0.2", "-p", "5301", "-t", "1", "-J"]))?;
    if !String::from_utf8_lossy(&out.stdout).contains("\"sum_received\"") {
        return Err("iperf3 through the router reported no transfer".into());
    }
    let logger = server.spawn(Cmd::argv(&["sh", "-c", "echo ready to serve; exec sleep 600"]).label("logger"))?;
    logger.wait_for_log("ready to serve", Duration::from_secs(5))?;
    lab.teardown()?;
    Ok(())
}

fn a_start_gate_holds_programs_until_it_opens() -> TestResult {
    let lab = Lab::build(&three_hosts(true))?;
    let gate = StartGate::new(lab.dir(), "test");
    // Each program notes, in its host's /run, the moment it started.
    let start = |host: &str| -> Result<lab::Process, Failed> {
        let cmd = Cmd::argv(&["sh", "-c", "date +%s%N > /run/started; exec sleep 600"]).label("gated");
        Ok(gate.spawn(&lab.host(host)?, cmd)?)
    };
    let gated = [start("client")?, start("server")?];
    for p in &gated {
        p.wait_for_log("start gate: waiting", Duration::from_secs(10))?;
    }
    let started = |host: &str| -> Result<Option<u128>, Failed> {
        let path = lab.host(host)?.run_dir()?.join("started");
        Ok(std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()))
    };
    // Waiting at the gate, neither has started; a second later still not.
    std::thread::sleep(Duration::from_secs(1));
    if started("client")?.is_some() || started("server")?.is_some() {
        return Err("a program behind a closed gate started".into());
    }
    gate.open(Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (a, b) = loop {
        if let (Some(a), Some(b)) = (started("client")?, started("server")?) {
            break (a, b);
        }
        if Instant::now() > deadline {
            return Err("the gate opened and a program never started".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let apart_ms = a.abs_diff(b) / 1_000_000;
    if apart_ms > 100 {
        return Err(format!("gated programs started {apart_ms} ms apart").into());
    }
    lab.teardown()?;
    Ok(())
}

fn readiness_errors_name_host_program_and_log() -> TestResult {
    let lab = Lab::build(&three_hosts(true))?;
    let server = lab.host("server")?;
    let quiet = server.spawn(Cmd::argv(&["sh", "-c", "echo warming up; exec sleep 600"]).label("quiet"))?;
    let err = quiet.wait_for_log("never printed", Duration::from_millis(300)).err().ok_or("wait did not time out")?;
    let text = err.to_string();
    for needle in ["host 'server'", "quiet", "never printed", "warming up", "quiet.log"] {
        if !text.contains(needle) {
            return Err(format!("readiness error lacks {needle:?}: {text}").into());
        }
    }
    let dying = server.spawn(Cmd::argv(&["sh", "-c", "echo no port for you >&2; exit 4"]).label("dying"))?;
    let err = dying.wait_for_port(Proto::Tcp, 7777, Duration::from_secs(10)).err().ok_or("wait succeeded")?;
    let text = err.to_string();
    if !text.contains("exited with exit status 4") || !text.contains("no port for you") {
        return Err(format!("a dead program must be reported at once, with its log: {text}").into());
    }
    dying.stop(Duration::from_secs(1))?;
    lab.teardown()?;
    Ok(())
}

fn a_crash_is_reported_at_teardown() -> TestResult {
    let lab = Lab::build(&three_hosts(true))?;
    let id = lab.run_id();
    let server = lab.host("server")?;
    let p = server.spawn(Cmd::argv(&["sh", "-c", "echo segfault imminent >&2; exit 3"]).label("fragile"))?;
    p.wait_until("exit", Duration::from_secs(10), || false).err().ok_or("fragile did not exit")?;
    if lab.crashes().len() != 1 {
        return Err("the crash must show while the lab is up".into());
    }
    let dir = lab.dir().to_path_buf();
    match lab.teardown() {
        Err(LabError::Crashed(crashes)) => {
            let c = crashes.first().ok_or("no crash listed")?;
            if c.host != "server"
                || c.program != "fragile"
                || c.status != "exit status 3"
                || !c.tail.contains("segfault imminent")
            {
                return Err(format!("crash report is off: {c:?}").into());
            }
        }
        other => return Err(format!("teardown should report the crash, got {other:?}").into()),
    }
    assert_gone(id, &[])?;
    if !dir.exists() {
        return Err("the run directory of a lab with a crash must be kept".into());
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

fn a_missing_program_says_what_to_do() -> TestResult {
    let lab = Lab::build(&three_hosts(true))?;
    let err = lab.host("client")?.spawn(Cmd::new("no-such-vpn-daemon")).err().ok_or("spawned a missing program")?;
    let text = err.to_string();
    if !text.contains("host 'client'") || !text.contains("no-such-vpn-daemon") || !text.contains("doctor") {
        return Err(format!("unhelpful error: {text}").into());
    }
    match lab.host("nobody") {
        Err(LabError::NoSuchHost { known, .. }) if known.contains("client") => {}
        other => return Err(format!("asking for a missing host: {:?}", other.err()).into()),
    }
    lab.teardown()?;
    Ok(())
}

fn doctor_finds_everything_a_run_needs() -> TestResult {
    let out = Command::new(binary()).arg("doctor").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("MISSING") {
        return Err(format!("`vpn-passthrough doctor` found something missing:\n{text}").into());
    }
    for check in [
        "network namespaces",
        "veth and bridge",
        "TUN devices",
        "PPTP conntrack helper",
        "vpn-passthrough-enter",
        "vpn-passthrough-pppd",
        "charon",
        "xl2tpd",
    ] {
        if !text.lines().any(|l| l.trim_start().starts_with("ok") && l.contains(check)) {
            return Err(format!("doctor did not check {check}:\n{text}").into());
        }
    }
    Ok(())
}

fn stubborn_programs_and_their_children_are_killed() -> TestResult {
    let lab = Lab::build(&three_hosts(true))?;
    let id = lab.run_id();
    let inodes = inodes_of(&lab);
    let server = lab.host("server")?;
    // Ignores SIGTERM, and leaves a child in a session of its own (as a
    // daemon that forks would) that the process group kill cannot reach.
    let script = "trap '' TERM; setsid sleep 600 & echo forked; while :; do sleep 1; done";
    let p = server.spawn(Cmd::argv(&["sh", "-c", script]).label("stubborn"))?;
    p.wait_for_log("forked", Duration::from_secs(5))?;
    lab.teardown()?;
    assert_gone(id, &inodes)
}
