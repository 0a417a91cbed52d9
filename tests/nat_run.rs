//! The `nat` command as internet-facing software: a flood on one side
//! starves neither the other side nor SIGTERM, a link that goes down and
//! comes back is waited for, and the control socket can neither stop
//! forwarding nor be turned against what is at its path.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Need, TestResult, lab_test, nothing_of_ours_left};
use libtest_mimic::{Arguments, Failed, Trial};
use vpn_passthrough::lab::{Cmd, Host, Lab, LabError, Process};
use vpn_passthrough::nat::Profile;
use vpn_passthrough::router::{self, NatLab, RustNat, Shape};

const NEEDS: &[Need] = &[Need::Root, Need::Tool("ping"), Need::Tool("nft"), Need::Tool("ip")];

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vpn-passthrough")
}

fn main() {
    let args = Arguments::from_args();
    let t = |name: &str, f: fn() -> TestResult| lab_test(&format!("nat_run::{name}"), NEEDS, f);
    let trials: Vec<Trial> = vec![
        t("a_wan_flood_starves_neither_the_lan_nor_sigterm", flood_starves_nothing),
        t("the_nat_waits_for_a_link_that_goes_down_and_comes_back", link_flap),
        t("the_nat_takes_up_an_interface_removed_and_made_anew", interface_made_anew),
        t("a_control_client_that_never_reads_does_not_stop_forwarding", stuck_control_client),
        t("the_control_socket_is_0600_whatever_the_umask_and_replaces_a_stale_one", control_socket_mode),
        t("a_file_at_the_control_path_is_left_alone_and_the_nat_refuses", control_path_taken),
        t("every_control_answer_is_json", control_answers_json),
        t("no_control_turns_the_control_socket_off", no_control),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = nothing_of_ours_left() {
        eprintln!("after the nat tests: {e}");
        std::process::exit(101);
    }
    conclusion.exit();
}

/// The default lab's shape: where its hosts' addresses come from.
fn shape() -> Shape {
    Shape::new(1)
}

/// The lab of `tests/router.rs` with the Rust NAT (default profile)
/// running, one client.
fn lab() -> Result<NatLab, Failed> {
    let nat = RustNat { profile: Profile::default(), binary: binary().into() };
    Ok(NatLab::build(&nat, 1)?)
}

fn nat_process(nl: &NatLab) -> Result<&Process, Failed> {
    Ok(nl.router.process().ok_or("the Rust NAT has no process")?)
}

/// The same lab without a router running: tests start the NAT themselves
/// with the command line they need.
fn bare_lab() -> Result<Lab, Failed> {
    let lab = Lab::build(&router::shaped_topology(false, &Shape::new(1)))?;
    let host = lab.host(router::ROUTER)?;
    let (lan, wan) = (host.ifname(router::LAN_IF)?, host.ifname(router::WAN_IF)?);
    // As RustNat does: the router host's kernel must not see the traffic.
    let rules = format!(
        "table netdev nat-bypass {{\n  chain lan {{ type filter hook ingress device \"{lan}\" priority 0; policy drop; }}\n  chain wan {{ type filter hook ingress device \"{wan}\" priority 0; policy drop; }}\n}}\n"
    );
    let file = host.write_conf("bypass.nft", &rules)?;
    host.run_ok(Cmd::argv(&["nft", "-f", &file.to_string_lossy()]))?;
    Ok(lab)
}

/// `vpn-passthrough nat` for the router host of a lab, with `extra`
/// arguments, run by `sh` with umask 000.
fn nat_cmd(lab: &Lab, extra: &[&str]) -> Result<Cmd, Failed> {
    let host = lab.host(router::ROUTER)?;
    let (lan, wan) = (host.ifname(router::LAN_IF)?, host.ifname(router::WAN_IF)?);
    let (lan_addr, wan_addr) = (shape().lan.to_string(), shape().wan.to_string());
    let mut argv = vec!["sh", "-c", "umask 000; exec \"$0\" \"$@\"", binary(), "nat"];
    argv.extend(["--lan", &lan, "--lan-addr", &lan_addr, "--wan", &wan, "--wan-addr", &wan_addr]);
    argv.extend(extra);
    Ok(Cmd::argv(&argv).env("RUST_LOG", "info").label("nat"))
}

/// Starts the NAT in a bare lab; ready once it says it runs.
fn start_nat(lab: &Lab, extra: &[&str]) -> Result<Process, Failed> {
    let p = lab.host(router::ROUTER)?.spawn(nat_cmd(lab, extra)?)?;
    p.wait_for_log("nat running", Duration::from_secs(10))?;
    Ok(p)
}

/// Where `/run/nat.sock` of the router host is, seen from here.
fn control_path(lab: &Lab) -> Result<PathBuf, Failed> {
    Ok(lab.host(router::ROUTER)?.run_dir()?.join("nat.sock"))
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes;
/// returns how long it took, or `None`.
fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn sigterm(p: &Process) -> Result<(), Failed> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), nix::sys::signal::Signal::SIGTERM)?;
    Ok(())
}

/// Sends SIGTERM and requires the NAT to be gone within a second, with
/// success; returns how long it took.
fn stops_on_sigterm(p: &Process) -> Result<Duration, Failed> {
    sigterm(p)?;
    let took = within(Duration::from_secs(5), || p.exit_status().is_some())
        .ok_or("the NAT did not stop within 5 s of SIGTERM")?;
    if took > Duration::from_secs(1) {
        return Err(format!("the NAT took {took:?} to stop on SIGTERM").into());
    }
    match p.exit_status() {
        Some(s) if s.success() => Ok(took),
        other => Err(format!("the NAT ended with {other:?} on SIGTERM:\n{}", p.log_tail(20)).into()),
    }
}

fn ping(client: &Host<'_>, to: Ipv4Addr, count: u32) -> Result<std::process::Output, Failed> {
    let (count, to) = (count.to_string(), to.to_string());
    Ok(client.exec(Cmd::argv(&["ping", "-n", "-c", &count, "-i", "0.1", "-W", "1", &to]))?)
}

fn ping_through(client: &Host<'_>, count: u32) -> Result<std::process::Output, Failed> {
    ping(client, shape().server_addr(1), count)
}

/// How many replies a `ping` received, from its summary line.
fn received(out: &std::process::Output) -> u32 {
    vpn_passthrough::lab::echoes_received(&String::from_utf8_lossy(&out.stdout))
}

/// The echo requests `host`'s kernel has taken in so far (`IcmpInEchos`
/// of its network namespace).
fn echo_requests_seen(host: &Host<'_>) -> Result<u64, Failed> {
    let out = host.run_ok(Cmd::argv(&["cat", "/proc/net/snmp"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().ok_or("no Icmp line")?, icmp.next().ok_or("no Icmp values")?);
    let at = names.split_whitespace().position(|n| n == "InEchos").ok_or("no InEchos")?;
    Ok(values.split_whitespace().nth(at).ok_or("InEchos has no value")?.parse()?)
}

fn summary(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).lines().find(|l| l.contains("transmitted")).unwrap_or("?").to_string()
}

/// The port the server floods from, and the client listens on.
const FLOOD_PORT: u16 = 9999;

/// Opens a UDP mapping from the client's port [`FLOOD_PORT`] to the
/// server's, and returns the public endpoint the server saw.
fn open_mapping(client: &Host<'_>, server: &Host<'_>) -> Result<SocketAddrV4, Failed> {
    let io = |what: &str, e| LabError::io(format!("opening a mapping: {what}"), e);
    let bound = AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            server.inside(|| {
                let s = UdpSocket::bind(("0.0.0.0", FLOOD_PORT)).map_err(|e| io("server socket", e))?;
                s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| io("timeout", e))?;
                bound.store(true, Ordering::SeqCst);
                let mut buf = [0u8; 64];
                let (_, from) = s.recv_from(&mut buf).map_err(|e| io("waiting for the client", e))?;
                Ok(from)
            })
        });
        let sent = client.inside(|| {
            let s = UdpSocket::bind(("0.0.0.0", FLOOD_PORT)).map_err(|e| io("client socket", e))?;
            let to = SocketAddrV4::new(shape().server_addr(1), FLOOD_PORT);
            // Until the server has it (its socket may not be bound yet,
            // the first datagram may wait for ARP).
            let _ = within(Duration::from_secs(10), || {
                let _ = s.send_to(b"open", to);
                bound.load(Ordering::SeqCst) && receiver.is_finished()
            });
            Ok(())
        });
        let seen = receiver.join().map_err(|_| "the receiving thread panicked")?;
        sent?;
        Ok::<_, Failed>(seen?)
    })?;
    match seen {
        std::net::SocketAddr::V4(a) => Ok(a),
        other => Err(format!("the server saw {other}").into()),
    }
}

/// Threads that send the flood: more than the NAT's one packet thread, so
/// that on a busy machine the scheduler still gives the flood the larger
/// share of the CPU.
const FLOOD_THREADS: usize = 3;

/// Sends small UDP datagrams from `host`'s port [`FLOOD_PORT`] to `target`
/// as fast as [`FLOOD_THREADS`] threads can, in batches of `sendmmsg`,
/// until `stop` is set or `max` are sent; counts them in `sent`.
fn flood(host: &Host<'_>, target: SocketAddrV4, max: u64, sent: &AtomicU64, stop: &AtomicBool) -> Result<(), Failed> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let io = |what: &str, e| LabError::io(format!("flood: {what}"), e);
    // Made in the host's namespace; any thread can send on it.
    let s = host.inside(|| {
        let s = UdpSocket::bind(("0.0.0.0", FLOOD_PORT)).map_err(|e| io("socket", e))?;
        s.connect(target).map_err(|e| io("connect", e))?;
        Ok(s)
    })?;
    let send = || {
        const N: usize = 64;
        let mut payload = [0x5au8; 32];
        let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
        // SAFETY: all-zero mmsghdrs are valid; each points at the one iovec.
        let mut msgs: Vec<libc::mmsghdr> = (0..N).map(|_| unsafe { std::mem::zeroed() }).collect();
        for m in msgs.iter_mut() {
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < max {
            // SAFETY: N headers over a live buffer; the kernel only reads.
            let rc = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), N as u32, 0) };
            // Errors (a full queue, ICMP feedback) only slow the flood.
            if rc > 0 {
                sent.fetch_add(rc as u64, Ordering::Relaxed);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..FLOOD_THREADS {
            scope.spawn(send);
        }
    });
    Ok(())
}

fn flood_starves_nothing() -> TestResult {
    let nl = lab()?;
    let (client, server) = (nl.client(1)?, nl.server()?);
    // Both neighbours resolved before the flood starts.
    client.ping(shape().server_addr(1).into())?;
    let nat = nat_process(&nl)?.clone();
    // Into a mapping: every datagram is translated and sent on to the LAN,
    // which costs the NAT more than it costs the sender.
    let target = open_mapping(&client, &server)?;
    let (sent, stop) = (AtomicU64::new(0), AtomicBool::new(false));
    const MAX: u64 = 50_000_000;
    std::thread::scope(|scope| -> TestResult {
        let flooder = scope.spawn(|| flood(&server, target, MAX, &sent, &stop));
        let result = (|| -> TestResult {
            // Under way once it has sent more than the NAT's socket buffers
            // hold.
            within(Duration::from_secs(10), || sent.load(Ordering::Relaxed) >= 100_000)
                .ok_or("the flood did not get going")?;
            let t0 = (Instant::now(), sent.load(Ordering::Relaxed));
            let mut problems = Vec::new();
            // The LAN side is served: the NAT answers pings on its LAN
            // address, with requests and replies on its LAN socket only.
            let own = ping(&client, shape().lan.addr(), 20)?;
            eprintln!("ping of the NAT's LAN address during the flood: {}", summary(&own));
            if received(&own) < 18 {
                problems.push(format!("the NAT's LAN side starved during a WAN flood: {}", summary(&own)));
            }
            // LAN to WAN is forwarded: the server sees the echo requests.
            // Their replies queue behind the flood in the NAT's WAN socket,
            // where the kernel drops what the NAT cannot read in time, so
            // how many come back is the kernel's share, printed only.
            let before = echo_requests_seen(&server)?;
            let through = ping_through(&client, 20)?;
            let arrived = echo_requests_seen(&server)? - before;
            let rate = (sent.load(Ordering::Relaxed) - t0.1) as f64 / t0.0.elapsed().as_secs_f64();
            eprintln!(
                "ping through the NAT during the flood ({rate:.0} datagrams/s): {arrived} requests reached the server; {}",
                summary(&through)
            );
            if arrived < 18 {
                problems.push(format!(
                    "only {arrived} of 20 echo requests crossed the NAT from the LAN during a WAN flood"
                ));
            }
            // The premise: the flood was more than the NAT could carry.
            // The premise: the flood was more than the NAT could read.
            match nl.router.dump(&nl.lab) {
                Ok(dump) => {
                    let dropped = link_info(&dump, "wan")["kernel_dropped"].as_u64().unwrap_or(0);
                    eprintln!(
                        "the kernel dropped {dropped} of {} flood datagrams the NAT could not read in time",
                        sent.load(Ordering::Relaxed)
                    );
                    if dropped == 0 {
                        return Err(format!(
                            "the flood ({rate:.0} datagrams/s) never filled the NAT's WAN socket, so this test proves nothing: run it on a machine less loaded"
                        )
                        .into());
                    }
                }
                Err(e) => problems.push(format!("no dump during the flood: {e}")),
            }
            if flooder.is_finished() {
                return Err("the flood ended before SIGTERM was sent".into());
            }
            match stops_on_sigterm(&nat) {
                Ok(took) => eprintln!("SIGTERM under the flood: the NAT stopped after {took:?}"),
                Err(e) => problems.push(e.message().unwrap_or("failed").to_string()),
            }
            if problems.is_empty() { Ok(()) } else { Err(problems.join("\n").into()) }
        })();
        stop.store(true, Ordering::Relaxed);
        flooder.join().map_err(|_| "the flood thread panicked")??;
        result
    })?;
    nl.teardown()?;
    Ok(())
}

/// The `links` section of a dump, for one side.
fn link_info(dump: &serde_json::Value, side: &str) -> serde_json::Value {
    dump["links"][side].clone()
}

fn link_flap() -> TestResult {
    let nl = lab()?;
    let client = nl.client(1)?;
    client.ping(shape().server_addr(1).into())?;
    let nat = nat_process(&nl)?.clone();
    let router_host = nl.lab.host(router::ROUTER)?;
    let wan = router_host.ifname(router::WAN_IF)?;
    let ip_link = |state: &str| router_host.run_ok(Cmd::argv(&["ip", "link", "set", "dev", &wan, state]));
    let dump_says = |up: bool| {
        nat.wait_until(&format!("show the WAN link {}", if up { "up" } else { "down" }), Duration::from_secs(5), || {
            nl.router.dump(&nl.lab).is_ok_and(|d| link_info(&d, "wan")["up"] == up)
        })
    };
    ip_link("down")?;
    dump_says(false)?;
    // Meanwhile the LAN side is served: the NAT answers a ping on its LAN
    // address, and what it cannot send on the WAN is counted.
    client.ping(shape().lan.addr().into())?;
    let lost = ping_through(&client, 1)?;
    if lost.status.success() {
        return Err("a ping crossed a WAN link that is down".into());
    }
    ip_link("up")?;
    dump_says(true)?;
    // Forwarding again, in the same process.
    let ping = ping_through(&client, 3)?;
    if !ping.status.success() {
        return Err(format!("no ping crossed after the WAN link came back: {}", summary(&ping)).into());
    }
    let dump = nl.router.dump(&nl.lab)?;
    let w = link_info(&dump, "wan");
    eprintln!("after the flap: {w}");
    if w["downs"] != 1 || w["link_down_ms"].as_u64().unwrap_or(0) == 0 || w["unsent"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("the dump does not account for the outage: {w}").into());
    }
    if link_info(&dump, "lan")["downs"] != 0 {
        return Err(format!("the LAN link went down too: {}", link_info(&dump, "lan")).into());
    }
    let log = std::fs::read_to_string(nat.log_path())?;
    let (downs, ups) = (log.matches("waiting for it to come back").count(), log.matches("is up again after").count());
    if (downs, ups) != (1, 1) {
        return Err(
            format!("expected one line for the outage and one for the return, got {downs} and {ups}:\n{log}").into()
        );
    }
    stops_on_sigterm(&nat)?;
    nl.teardown()?;
    Ok(())
}

/// Runs `ip` here, outside any lab host's sandbox (it names namespaces).
fn ip(args: &[&str]) -> Result<(), Failed> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn interface_made_anew() -> TestResult {
    let nl = lab()?;
    let client = nl.client(1)?;
    client.ping(shape().server_addr(1).into())?;
    let nat = nat_process(&nl)?.clone();
    let (router_host, server) = (nl.lab.host(router::ROUTER)?, nl.server()?);
    let (wan, eth0) = (router_host.ifname(router::WAN_IF)?, server.ifname("eth0")?);
    let (rns, sns) = (router_host.netns(), server.netns());
    let dump_says = |up: bool| {
        nat.wait_until(&format!("show the WAN link {}", if up { "up" } else { "down" }), Duration::from_secs(5), || {
            nl.router.dump(&nl.lab).is_ok_and(|d| link_info(&d, "wan")["up"] == up)
        })
    };
    // The WAN cable, a veth pair, is removed…
    ip(&["-n", &rns, "link", "del", &wan])?;
    dump_says(false)?;
    // …and another one put in its place: same names, new MACs, new index.
    ip(&["-n", &rns, "link", "add", &wan, "type", "veth", "peer", "name", &eth0, "netns", &sns])?;
    ip(&["-n", &sns, "addr", "add", &format!("{}/24", shape().server_addr(1)), "dev", &eth0])?;
    ip(&["-n", &sns, "link", "set", "dev", &eth0, "up"])?;
    ip(&["-n", &rns, "link", "set", "dev", &wan, "up"])?;
    dump_says(true)?;
    let ping = ping_through(&client, 3)?;
    if !ping.status.success() {
        return Err(format!("no ping crossed the new WAN interface: {}\n{}", summary(&ping), nat.log_tail(10)).into());
    }
    let log = std::fs::read_to_string(nat.log_path())?;
    let (downs, ups) = (log.matches("waiting for it to come back").count(), log.matches("is up again after").count());
    if !log.contains("is a new interface") || (downs, ups) != (1, 1) {
        return Err(format!("the NAT's log does not tell the story:\n{log}").into());
    }
    stops_on_sigterm(&nat)?;
    nl.teardown()?;
    Ok(())
}

/// Opens `n` UDP mappings from the client (a socket each, to the server's
/// discard port): a dump of some hundred kilobytes.
fn many_mappings(client: &Host<'_>, n: usize) -> Result<(), Failed> {
    client.inside(|| {
        let to = SocketAddrV4::new(shape().server_addr(1), 9);
        // All open at once: each has a port of its own.
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n {
            let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| LabError::io("a mapping socket", e))?;
            let _ = s.send_to(b"m", to);
            sockets.push(s);
        }
        Ok(())
    })?;
    Ok(())
}

fn stuck_control_client() -> TestResult {
    let nl = lab()?;
    let client = nl.client(1)?;
    client.ping(shape().server_addr(1).into())?;
    let nat = nat_process(&nl)?.clone();
    // A dump far bigger than a Unix socket's buffers.
    many_mappings(&client, 4000)?;
    let path = control_path(&nl.lab)?;
    let mappings = || nl.router.dump(&nl.lab).map(|d| d["mappings"].as_array().map_or(0, Vec::len)).unwrap_or(0);
    nat.wait_until("hold 4000 mappings", Duration::from_secs(10), || mappings() >= 4000)?;
    let size = nl.router.dump(&nl.lab)?.to_string().len();
    eprintln!("the dump is {} KB", size / 1024);
    // Asks for a dump and never reads it.
    let mut stuck = UnixStream::connect(&path)?;
    stuck.write_all(b"dump\n")?;
    // And one that connects and never asks.
    let _silent = UnixStream::connect(&path)?;
    let ping = ping_through(&client, 3)?;
    if !ping.status.success() {
        return Err(format!("forwarding stopped behind a control client that does not read: {}", summary(&ping)).into());
    }
    // The control socket itself is back once the stuck client's time is up.
    let t = Instant::now();
    let answer = ask_raw(&path, b"dump\n")?;
    eprintln!("a second control client was answered after {:?}", t.elapsed());
    let dump: serde_json::Value = serde_json::from_str(&answer)?;
    if dump["mappings"].as_array().map_or(0, Vec::len) < 4000 {
        return Err("the second client got no full dump".into());
    }
    stops_on_sigterm(&nat)?;
    drop(stuck);
    nl.teardown()?;
    Ok(())
}

fn mode_of(path: &Path) -> Result<u32, Failed> {
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
}

fn control_socket_mode() -> TestResult {
    let lab = bare_lab()?;
    let path = control_path(&lab)?;
    // A stale socket, as a NAT killed with SIGKILL leaves.
    drop(UnixListener::bind(&path)?);
    assert!(std::fs::symlink_metadata(&path)?.file_type().is_socket());
    let nat = start_nat(&lab, &["--control", "/run/nat.sock"])?;
    let mode = mode_of(&path)?;
    if mode != 0o600 {
        return Err(format!("the control socket has mode {mode:o} under umask 000, not 600").into());
    }
    let dump = vpn_passthrough::nat::run::query(&path)?;
    if dump["profile"] != "default" {
        return Err(format!("the new socket does not answer: {dump}").into());
    }
    // A second NAT refuses a live socket and leaves it alone.
    let second = lab
        .host(router::ROUTER)?
        .exec(nat_cmd(&lab, &["--control", "/run/nat.sock"])?.timeout(Duration::from_secs(10)))?;
    let err = String::from_utf8_lossy(&second.stderr).to_string();
    if second.status.success() || !err.contains("/run/nat.sock") || !err.contains("answers on it") {
        return Err(format!("a second NAT on a live control socket: {:?}\n{err}", second.status).into());
    }
    vpn_passthrough::nat::run::query(&path)?;
    stops_on_sigterm(&nat)?;
    if path.exists() {
        return Err("the NAT left its control socket behind".into());
    }
    lab.teardown()?;
    Ok(())
}

fn control_path_taken() -> TestResult {
    let lab = bare_lab()?;
    let path = control_path(&lab)?;
    std::fs::write(&path, "precious\n")?;
    let out = lab
        .host(router::ROUTER)?
        .exec(nat_cmd(&lab, &["--control", "/run/nat.sock"])?.timeout(Duration::from_secs(10)))?;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("the NAT said: {}", err.trim());
    if out.status.success() || out.status.code().is_none() {
        return Err(
            format!("the NAT did not refuse a regular file at its control path ({:?}):\n{err}", out.status).into()
        );
    }
    if !err.contains("/run/nat.sock") || !err.contains("regular file") {
        return Err(format!("the refusal does not say where and what: {err}").into());
    }
    if std::fs::read_to_string(&path).ok().as_deref() != Some("precious\n") {
        return Err("the file at the control path was touched".into());
    }
    // A directory: refused the same way.
    std::fs::remove_file(&path)?;
    std::fs::create_dir(&path)?;
    let out = lab
        .host(router::ROUTER)?
        .exec(nat_cmd(&lab, &["--control", "/run/nat.sock"])?.timeout(Duration::from_secs(10)))?;
    if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("a directory") || !path.is_dir() {
        return Err(format!("a directory at the control path: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    lab.teardown()?;
    Ok(())
}

/// Sends `request` raw and reads one answer line (the whole answer if it
/// has no newline).
fn ask_raw(path: &Path, request: &[u8]) -> Result<String, Failed> {
    let mut s = UnixStream::connect(path)?;
    // Long enough to wait behind clients that hold the control thread.
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request)?;
    let mut line = String::new();
    let mut r = BufReader::new(&s);
    if r.read_line(&mut line)? == 0 {
        return Err(format!("no answer to {:?}", String::from_utf8_lossy(request)).into());
    }
    if !line.ends_with('\n') {
        r.read_to_string(&mut line)?;
    }
    Ok(line)
}

fn control_answers_json() -> TestResult {
    let lab = bare_lab()?;
    let nat = start_nat(&lab, &["--control", "/run/nat.sock"])?;
    let path = control_path(&lab)?;
    let long = vec![b'x'; 5000];
    let cases: Vec<(&str, &[u8], bool)> = vec![
        ("dump", b"dump\n", true),
        ("an empty line", b"\n", true),
        ("an unknown command", b"bogus\n", false),
        ("quotes and backslashes", b"a\"b\\c\n", false),
        ("a control character", b"\x1b[2J\n", false),
        ("bytes that are not UTF-8", b"\xff\xfe\n", false),
        ("an over-long line", &long, false),
    ];
    for (what, request, is_dump) in cases {
        let answer = ask_raw(&path, request)?;
        let json: serde_json::Value = serde_json::from_str(answer.trim_end())
            .map_err(|e| format!("the answer to {what} is not JSON ({e}): {answer:?}"))?;
        let ok = if is_dump { json.get("drops").is_some() } else { json["error"].is_string() };
        if !ok {
            return Err(format!("the answer to {what}: {json}").into());
        }
    }
    stops_on_sigterm(&nat)?;
    lab.teardown()?;
    Ok(())
}

fn no_control() -> TestResult {
    let lab = bare_lab()?;
    let nat = start_nat(&lab, &["--no-control"])?;
    let client = lab.host(&router::client_name(1))?;
    client.ping(shape().server_addr(1).into())?;
    let run_dir = lab.host(router::ROUTER)?.run_dir()?;
    let sockets: Vec<PathBuf> = std::fs::read_dir(run_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("nat")))
        .collect();
    if !sockets.is_empty() {
        return Err(format!("--no-control, yet the NAT made {sockets:?}").into());
    }
    if !std::fs::read_to_string(nat.log_path())?.contains("no control socket") {
        return Err(format!("the NAT does not say it has no control socket:\n{}", nat.log_tail(10)).into());
    }
    // Both at once is a mistake on the command line.
    let both = lab.host(router::ROUTER)?.exec(nat_cmd(&lab, &["--no-control", "--control", "/run/x.sock"])?)?;
    if both.status.success() {
        return Err("--no-control with --control was accepted".into());
    }
    stops_on_sigterm(&nat)?;
    lab.teardown()?;
    Ok(())
}
