//! Routers under test in a lab: clients behind the router reach a server,
//! unsolicited inbound stays out, clients sharing a source port are told
//! apart — for the Rust NAT and the Linux NAT alike, plus what only the Rust
//! NAT can be asked (profiles, counters, hairpinning).

mod common;

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use common::{Need, TestResult, lab_test, nothing_of_ours_left};
use libtest_mimic::{Arguments, Trial};
use vpn_passthrough::lab::{Cmd, Host, Process, Proto};
use vpn_passthrough::nat::{Behaviour, Profile, profile::PortRange};
use vpn_passthrough::nat_behaviour::{self, Budget, Key, Measured, Value};
use vpn_passthrough::router::{self, LinuxNat, NatLab, RouterUnderTest, RustNat, Shape};

const NEEDS: &[Need] = &[Need::Root, Need::Tool("ping"), Need::Tool("nft")];
const UDP_PORT: u16 = 7000;
const TCP_PORT: u16 = 7001;

type Make = fn() -> Result<Box<dyn RouterUnderTest>, String>;

fn rust_default() -> Result<Box<dyn RouterUnderTest>, String> {
    rust_with(|_| {})
}

fn rust_with(f: impl FnOnce(&mut Profile)) -> Result<Box<dyn RouterUnderTest>, String> {
    let mut p = Profile::default();
    f(&mut p);
    Ok(Box::new(RustNat { profile: p, binary: binary().into() }))
}

fn linux() -> Result<Box<dyn RouterUnderTest>, String> {
    Ok(Box::new(LinuxNat { pptp_helper: true }))
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vpn-passthrough")
}

/// Tests run at once unless told: most of them wait out a NAT's timeouts.
const DEFAULT_TEST_THREADS: usize = 8;

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = args.test_threads.or(Some(DEFAULT_TEST_THREADS));
    let both: [(&str, Make); 2] = [("rust_nat", rust_default), ("linux_nat", linux)];
    let mut trials: Vec<Trial> = Vec::new();
    // The longest first, so that the suite does not end waiting on them.
    trials.push(lab_test("rust_nat::measured_timeouts_are_the_profile_s", NEEDS, rust_timeouts_measured));
    trials.push(lab_test("linux_nat::measured_behaviour_is_the_kernel_s", NEEDS, linux_behaviour_measured));
    for (name, make) in both {
        let t = |what: &str, f: fn(Make) -> TestResult| lab_test(&format!("{name}::{what}"), NEEDS, move || f(make));
        trials.push(t("clients_reach_the_server_by_tcp_udp_and_icmp", clients_reach_the_server));
        trials.push(t("unsolicited_inbound_is_dropped", unsolicited_inbound_is_dropped));
        trials.push(t("two_clients_on_one_source_port_get_distinct_public_ports", shared_source_port));
        trials.push(t("an_icmp_error_comes_back_translated", icmp_error_comes_back));
        trials.push(t("fragmented_datagrams_cross_both_ways", fragments_cross));
    }
    trials.push(lab_test("rust_nat::without_port_preservation_ports_come_from_the_range", NEEDS, port_range));
    trials.push(lab_test("rust_nat::mapping_behaviour_shows_end_to_end", NEEDS, mapping_behaviour));
    trials.push(lab_test("rust_nat::hairpinning_reaches_a_neighbour", NEEDS, hairpinning));
    trials.push(lab_test(
        "rust_nat::checksums_hold_when_the_kernel_checks_them",
        &[Need::Root, Need::Tool("iperf3"), Need::Tool("nft")],
        checksums_hold,
    ));
    trials.push(lab_test("rust_nat::the_dump_shows_mappings_and_drops", NEEDS, dump_shows_state));
    for &preset in vpn_passthrough::nat::profile::PRESETS {
        trials.push(lab_test(&format!("rust_nat::measured_behaviour_is_the_profile_s::{preset}"), NEEDS, move || {
            preset_measures_as_its_profile(preset)
        }));
    }
    trials.push(lab_test("rust_nat::impairments_delay_and_drop", NEEDS, impairments));
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = nothing_of_ours_left() {
        eprintln!("after the router tests: {e}");
        std::process::exit(101);
    }
    conclusion.exit();
}

/// The default lab's shape: where its hosts' addresses come from.
fn shape() -> Shape {
    Shape::new(1)
}

fn build(make: Make, clients: usize) -> Result<NatLab, libtest_mimic::Failed> {
    let router = make()?;
    Ok(NatLab::build(router.as_ref(), clients)?)
}

/// Starts the reflector in `host`, ready when both ports are bound.
fn serve(host: &Host<'_>) -> Result<Process, libtest_mimic::Failed> {
    let p = host.spawn(
        Cmd::new(binary())
            .args(&["probe", "serve", "--udp", &UDP_PORT.to_string(), "--tcp", &TCP_PORT.to_string()])
            .label("reflector"),
    )?;
    p.wait_for_port(Proto::Udp, UDP_PORT, Duration::from_secs(5))?;
    p.wait_for_port(Proto::Tcp, TCP_PORT, Duration::from_secs(5))?;
    Ok(p)
}

/// How an ask ended.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Seen(SocketAddr),
    TimedOut,
    Refused,
}

fn ask(
    host: &Host<'_>,
    tcp: bool,
    target: SocketAddrV4,
    from: u16,
    timeout_ms: u64,
) -> Result<Asked, libtest_mimic::Failed> {
    let mut cmd = Cmd::new(binary()).args(&["probe", "ask", &target.to_string()]);
    cmd = cmd.args(&["--from", &from.to_string(), "--timeout-ms", &timeout_ms.to_string()]);
    if tcp {
        cmd = cmd.arg("--tcp");
    }
    let out = host.exec(cmd.label("ask"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Ok(Asked::Seen(
            vpn_passthrough::probe::parse_answer(&text).ok_or_else(|| format!("unreadable answer {text:?}"))?,
        )),
        Some(2) => Ok(Asked::TimedOut),
        Some(3) => Ok(Asked::Refused),
        _ => Err(format!("probe ask failed: {}{}", text, String::from_utf8_lossy(&out.stderr)).into()),
    }
}

fn server_target(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(shape().server_addr(1), port)
}

fn seen(a: Asked) -> Result<SocketAddr, libtest_mimic::Failed> {
    match a {
        Asked::Seen(s) => Ok(s),
        other => Err(format!("expected an answer, got {other:?}").into()),
    }
}

fn clients_reach_the_server(make: Make) -> TestResult {
    let nl = build(make, 2)?;
    let _reflector = serve(&nl.server()?)?;
    for i in 1..=2 {
        let c = nl.client(i)?;
        c.ping(shape().server_addr(1).into())?;
        for tcp in [false, true] {
            let s = seen(ask(&c, tcp, server_target(if tcp { TCP_PORT } else { UDP_PORT }), 0, 2000)?)?;
            if s.ip() != shape().wan.addr() {
                return Err(format!("client {i} reached the server as {s}, not as the public address").into());
            }
        }
    }
    // The router answers pings on its LAN address too.
    nl.client(1)?.ping(shape().lan.addr().into())?;
    nl.teardown()?;
    Ok(())
}

fn unsolicited_inbound_is_dropped(make: Make) -> TestResult {
    let nl = build(make, 1)?;
    let _reflector = serve(&nl.client(1)?)?;
    let server = nl.server()?;
    let wan = SocketAddrV4::new(shape().wan.addr(), UDP_PORT);
    // Nothing answers: the client's reflector never sees it. (A wait for an
    // absence: bounded, and the only way to observe one.)
    assert_eq!(ask(&server, false, wan, 0, 500)?, Asked::TimedOut, "udp came in unsolicited");
    let wan_tcp = SocketAddrV4::new(shape().wan.addr(), TCP_PORT);
    let tcp = ask(&server, true, wan_tcp, 0, 500)?;
    if tcp != Asked::TimedOut {
        return Err(format!("unsolicited tcp: expected silence, got {tcp:?}").into());
    }
    if let Some(n) = nl.router.dropped(&nl.lab, "unsolicited")? {
        if n < 2 {
            return Err(format!("the NAT counted {n} unsolicited drops, expected at least 2").into());
        }
    }
    nl.teardown()?;
    Ok(())
}

fn shared_source_port(make: Make) -> TestResult {
    let nl = build(make, 2)?;
    let _reflector = serve(&nl.server()?)?;
    let a = seen(ask(&nl.client(1)?, false, server_target(UDP_PORT), 5000, 2000)?)?;
    let b = seen(ask(&nl.client(2)?, false, server_target(UDP_PORT), 5000, 2000)?)?;
    if a.port() == b.port() {
        return Err(format!("both clients appear as {a}").into());
    }
    if a.port() != 5000 && b.port() != 5000 {
        return Err(format!("neither kept port 5000: {a} and {b}").into());
    }
    let c = seen(ask(&nl.client(1)?, true, server_target(TCP_PORT), 5001, 2000)?)?;
    let d = seen(ask(&nl.client(2)?, true, server_target(TCP_PORT), 5001, 2000)?)?;
    if c.port() == d.port() {
        return Err(format!("both tcp clients appear as {c}").into());
    }
    nl.teardown()?;
    Ok(())
}

fn icmp_error_comes_back(make: Make) -> TestResult {
    let nl = build(make, 1)?;
    // Nothing listens on the server: it answers port unreachable, which
    // must reach the client translated.
    let got = ask(&nl.client(1)?, false, server_target(9), 0, 2000)?;
    if got != Asked::Refused {
        return Err(format!("expected the port unreachable to come back, got {got:?}").into());
    }
    nl.teardown()?;
    Ok(())
}

fn fragments_cross(make: Make) -> TestResult {
    let nl = build(make, 1)?;
    // 4000 bytes of ICMP payload: three fragments each way on 1500-byte links.
    let out = nl.client(1)?.run_ok(Cmd::argv(&["ping", "-n", "-c", "2", "-W", "2", "-s", "4000", "198.51.100.2"]))?;
    if !String::from_utf8_lossy(&out.stdout).contains("4008 bytes from") {
        return Err(format!("no whole echo reply: {}", String::from_utf8_lossy(&out.stdout)).into());
    }
    nl.teardown()?;
    Ok(())
}

fn port_range() -> TestResult {
    let nl = build(
        || {
            rust_with(|p| {
                p.port_preservation = false;
                p.port_range = PortRange { low: 20000, high: 20009 };
            })
        },
        2,
    )?;
    let _reflector = serve(&nl.server()?)?;
    for i in 1..=2 {
        let s = seen(ask(&nl.client(i)?, false, server_target(UDP_PORT), 5000, 2000)?)?;
        if !(20000..=20009).contains(&s.port()) {
            return Err(format!("client {i} appeared as {s}, outside 20000-20009").into());
        }
    }
    nl.teardown()?;
    Ok(())
}

fn mapping_behaviour() -> TestResult {
    // The reflector listens on two ports; one client port asks both.
    for (mapping, same) in [(Behaviour::EndpointIndependent, true), (Behaviour::AddressAndPortDependent, false)] {
        let nl = build(
            match mapping {
                Behaviour::EndpointIndependent => || rust_with(|p| p.port_preservation = false),
                _ => || {
                    rust_with(|p| {
                        p.port_preservation = false;
                        p.mapping = Behaviour::AddressAndPortDependent;
                    })
                },
            },
            1,
        )?;
        let server = nl.server()?;
        let _a = serve(&server)?;
        let second = server.spawn(Cmd::new(binary()).args(&["probe", "serve", "--udp", "7100"]).label("reflector2"))?;
        second.wait_for_port(Proto::Udp, 7100, Duration::from_secs(5))?;
        let c = nl.client(1)?;
        let a = seen(ask(&c, false, server_target(UDP_PORT), 6000, 2000)?)?;
        let b = seen(ask(&c, false, server_target(7100), 6000, 2000)?)?;
        if (a.port() == b.port()) != same {
            return Err(format!("{mapping} mapping: public ports {} and {}", a.port(), b.port()).into());
        }
        nl.teardown()?;
    }
    Ok(())
}

/// A lab for NAT behaviour: two clients, two servers.
fn behaviour_lab(router: &dyn RouterUnderTest) -> Result<NatLab, libtest_mimic::Failed> {
    Ok(NatLab::build_shaped(router, &nat_behaviour::shape(), |t| t)?)
}

/// Measures `nl` and fails with every value that is not `expected`; with
/// `bracketed`, every timeout expected must also be found between two
/// waits (not only longer than the budget).
fn measures_as(nl: NatLab, budget: Budget, expected: &[(Key, Value)], bracketed: bool) -> TestResult {
    let measured = nat_behaviour::measure(&nl, budget)?;
    nl.teardown()?;
    let mut off = measured.disagreements(expected);
    if bracketed {
        for (key, want) in expected {
            if matches!(want, Value::Seconds { .. }) && !matches!(measured.get(*key), Some(Value::Seconds { .. })) {
                off.push(format!("{}: not bracketed", key.title()));
            }
        }
    }
    if !off.is_empty() {
        return Err(format!("{}\n{}", off.join("\n"), measured.text()).into());
    }
    Ok(())
}

fn preset_measures_as_its_profile(preset: &str) -> TestResult {
    let profile = Profile::preset(preset).ok_or("no such preset")?;
    let expected = Measured::expected(&profile);
    let nl = behaviour_lab(&RustNat { profile, binary: binary().into() })?;
    // Every preset's timeouts are minutes: two seconds of idle probes show
    // only that they are longer.
    measures_as(nl, Budget { longest: Duration::from_secs(2), steps: 4 }, &expected, false)
}

/// The waits that measure timeouts of 2 to 5 s to within 0.25 s.
const SHORT: Budget = Budget { longest: Duration::from_secs(6), steps: 24 };

fn rust_timeouts_measured() -> TestResult {
    let mut profile = Profile::default();
    profile.timeouts.udp = 2;
    profile.timeouts.tcp_established = 3;
    profile.timeouts.tcp_transitory = 4;
    profile.timeouts.icmp = 5;
    profile.timeouts.other = 3;
    let expected = Measured::expected(&profile);
    let nl = behaviour_lab(&RustNat { profile, binary: binary().into() })?;
    measures_as(nl, SHORT, &expected, true)
}

fn linux_behaviour_measured() -> TestResult {
    let nl = behaviour_lab(&LinuxNat { pptp_helper: true })?;
    // Conntrack's timeouts, short; a half-closed connection is in FIN_WAIT
    // or CLOSE_WAIT, given the same.
    let router = nl.lab.host(router::ROUTER)?;
    let secs = |s: f64| Value::Seconds { alive_s: s, dead_s: s };
    for (key, value) in [
        ("udp_timeout", "2"),
        ("tcp_timeout_established", "3"),
        ("tcp_timeout_fin_wait", "4"),
        ("tcp_timeout_close_wait", "4"),
        ("icmp_timeout", "5"),
        // An answered GRE flow lives `gre_timeout_stream`, an unanswered
        // one `gre_timeout`; ESP is the generic protocol's.
        ("gre_timeout", "2"),
        ("gre_timeout_stream", "3"),
        ("generic_timeout", "4"),
    ] {
        router.sysctl(&format!("net.netfilter.nf_conntrack_{key}"), value)?;
    }
    let flag = |yes| Value::Flag { yes };
    let expected = [
        (Key::Mapping, Value::Behaviour { behaviour: Behaviour::EndpointIndependent }),
        (Key::Filtering, Value::Behaviour { behaviour: Behaviour::AddressAndPortDependent }),
        (Key::PortPreservation, flag(true)),
        (Key::PortParity, flag(false)),
        // The ruleset has no hairpin rules: a LAN host's packet to the
        // public address is the router's own.
        (Key::HairpinningUdp, flag(false)),
        (Key::HairpinningTcp, flag(false)),
        (Key::TcpSimultaneousOpen, flag(true)),
        (Key::IcmpErrors, flag(true)),
        (Key::FragmentsOut, flag(true)),
        (Key::FragmentsIn, flag(true)),
        (Key::UdpTimeout, secs(2.0)),
        (Key::TcpEstablishedTimeout, secs(3.0)),
        (Key::TcpTransitoryTimeout, secs(4.0)),
        (Key::IcmpTimeout, secs(5.0)),
        (Key::GreTimeout, secs(3.0)),
        (Key::EspTimeout, secs(4.0)),
    ];
    measures_as(nl, SHORT, &expected, true)
}

fn hairpinning() -> TestResult {
    let nl = build(|| rust_with(|p| p.filtering = Behaviour::EndpointIndependent), 2)?;
    let _server_reflector = serve(&nl.server()?)?;
    // c1 listens on 7200 and opens its mapping by asking the server first,
    // as a peer-to-peer application does.
    let c1 = nl.client(1)?;
    let listener = c1.spawn(
        Cmd::new(binary())
            .args(&["probe", "serve", "--udp", "7200", "--punch", &server_target(UDP_PORT).to_string()])
            .label("c1-listener"),
    )?;
    listener.wait_for_log("listening", Duration::from_secs(5))?;
    let log = std::fs::read_to_string(listener.log_path())?;
    let public = log
        .lines()
        .find_map(|l| l.strip_prefix("punched "))
        .and_then(vpn_passthrough::probe::parse_answer)
        .ok_or_else(|| format!("c1 did not open a mapping: {log}"))?;
    // c2 reaches c1 through the public address.
    let target = SocketAddrV4::new(shape().wan.addr(), public.port());
    let through = seen(ask(&nl.client(2)?, false, target, 0, 2000)?)?;
    if through.ip() != shape().wan.addr() {
        return Err(format!("c1 saw c2 as {through}, not as the public address (RFC 4787 REQ-9)").into());
    }
    nl.teardown()?;
    Ok(())
}

fn checksums_hold() -> TestResult {
    // Make the kernel segment and checksum in software at the router's
    // egress, and verify checksums at the receivers: a wrong update of a
    // checksum left to hardware shows as TCP InCsumErrors.
    let nl = build(rust_default, 1)?;
    let router = nl.lab.host(router::ROUTER)?;
    router.disable_offloads(router::LAN_IF)?;
    router.disable_offloads(router::WAN_IF)?;
    let (c, s) = (nl.client(1)?, nl.server()?);
    for (host, iface) in [(&c, "eth0"), (&s, "eth0")] {
        host.run_ok(Cmd::argv(&["ethtool", "-K", &host.ifname(iface)?, "rx", "off"]))?;
    }
    let iperf = s.spawn(Cmd::argv(&["iperf3", "-s", "-p", "5201"]))?;
    iperf.wait_for_port(Proto::Tcp, 5201, Duration::from_secs(5))?;
    for reverse in [false, true] {
        let mut cmd = Cmd::argv(&["iperf3", "-c", "198.51.100.2", "-p", "5201", "-t", "1", "-J"]);
        if reverse {
            cmd = cmd.arg("-R");
        }
        let out = c.run_ok(cmd)?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let bytes = json["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        if bytes == 0 {
            return Err(format!("no data crossed (reverse: {reverse})").into());
        }
    }
    for host in [&c, &s] {
        let errors = tcp_csum_errors(host)?;
        if errors != 0 {
            return Err(format!("{} counted {errors} TCP checksum errors", host.name()).into());
        }
    }
    nl.teardown()?;
    Ok(())
}

fn tcp_csum_errors(host: &Host<'_>) -> Result<u64, libtest_mimic::Failed> {
    let snmp = host.run_ok(Cmd::argv(&["cat", "/proc/net/snmp"]))?;
    let text = String::from_utf8_lossy(&snmp.stdout).to_string();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().ok_or("no Tcp line")?, tcp.next().ok_or("no Tcp values")?);
    let i = names.split_whitespace().position(|n| n == "InCsumErrors").ok_or("no InCsumErrors")?;
    Ok(values.split_whitespace().nth(i).and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn dump_shows_state() -> TestResult {
    let nl = build(rust_default, 1)?;
    let _reflector = serve(&nl.server()?)?;
    seen(ask(&nl.client(1)?, false, server_target(UDP_PORT), 5555, 2000)?)?;
    let dump = nl.router.dump(&nl.lab)?;
    let mappings = dump["mappings"].as_array().cloned().unwrap_or_default();
    if !mappings.iter().any(|m| m["internal"] == "192.168.1.10:5555" && m["protocol"] == "udp") {
        return Err(format!("the dump lacks the udp mapping: {dump}").into());
    }
    // Also readable with the command, as an operator would.
    let out =
        nl.lab.host(router::ROUTER)?.run_ok(Cmd::new(binary()).args(&["nat-dump", "--control", "/run/nat.sock"]))?;
    if !String::from_utf8_lossy(&out.stdout).contains("192.168.1.10:5555") {
        return Err("nat-dump does not show the mapping".into());
    }
    nl.teardown()?;
    Ok(())
}

fn impairments() -> TestResult {
    // 40 ms each way on the WAN side: a ping's round trip cannot be shorter
    // than the delay the profile asks for.
    let nl = build(
        || {
            rust_with(|p| {
                p.impair.outbound.delay_ms = 40;
                p.impair.inbound.delay_ms = 40;
            })
        },
        1,
    )?;
    let out = nl.client(1)?.run_ok(Cmd::argv(&["ping", "-n", "-c", "2", "-W", "3", "198.51.100.2"]))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    if times.is_empty() || times.iter().any(|t| *t < 80.0) {
        return Err(format!("round trips {times:?} ms are shorter than the 80 ms the profile adds:\n{text}").into());
    }
    nl.teardown()?;
    // Total loss outbound: nothing gets out, and the NAT counts it.
    let nl = build(|| rust_with(|p| p.impair.outbound.loss_percent = 100.0), 1)?;
    if nl.client(1)?.ping(shape().server_addr(1).into()).is_ok() {
        return Err("a ping crossed a NAT that loses everything".into());
    }
    let lost = nl.router.dropped(&nl.lab, "impaired-loss")?.unwrap_or(0);
    if lost == 0 {
        return Err("the NAT did not count the packets it lost on purpose".into());
    }
    nl.teardown()?;
    Ok(())
}
