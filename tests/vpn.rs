//! Real VPN daemons around the Rust NAT under attack: IKEv2, PPTP, L2TP
//! and raw ESP tunnels keep delivering while hostile hosts on both sides flood it; and
//! a daemon that dies at start is named with its log. The stories of one
//! family through each router are scenario files (`tests/scenarios.rs`).

mod common;

use std::time::Duration;

use common::needs::L2TP;
use common::{Need, TestResult, lab_test, nothing_of_ours_left};
use libtest_mimic::{Arguments, Failed};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use vpn_passthrough::flood;
use vpn_passthrough::lab::{Cmd, Host};
use vpn_passthrough::nat::Profile;
use vpn_passthrough::router::{self, LinuxNat, NatLab, RouterUnderTest, RustNat, Shape};

use vpn_passthrough::ppp::session::AuthProto;
use vpn_passthrough::vpn::pki::TestPki;
use vpn_passthrough::vpn::pppd::PppConfig;
use vpn_passthrough::vpn::pptp::{PptpClient, Pptpd, PptpdConfig};
use vpn_passthrough::vpn::scripted::{EspReport, parse_esp_report};
use vpn_passthrough::vpn::strongswan::{
    Auth, Charon, ClientConfig, IkeVersion, ServerConfig, client_conf, server_conf,
};
use vpn_passthrough::vpn::xl2tpd::{L2TP_PORT, LacConfig, LnsConfig, Xl2tpd};

const UNDER_ATTACK: &[Need] = &[
    Need::Root,
    Need::Tool("pptpd"),
    Need::Tool("pptp"),
    Need::Tool("xl2tpd"),
    Need::Tool("charon"),
    Need::Tool("swanctl"),
    Need::Tool("kernel-libipsec"),
    Need::Tool("nft"),
];

/// Two runs' PKIs: the second writes the first's CA and certificate
/// instead of running openssl again (no request file), and its
/// certificate verifies against its own CA file.
fn runs_share_the_ca() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let (first, second) = (scratch.path().join("first"), scratch.path().join("second"));
    let made = TestPki::new(&first)?.issue("client1")?;
    let again = TestPki::new(&second)?.issue("client1")?;
    if second.join("client1.csr").exists() {
        return Err("the second run ran openssl again for an identity the process already has".into());
    }
    if std::fs::read(&made.cert)? != std::fs::read(&again.cert)? {
        return Err("the second run's certificate differs from the first's".into());
    }
    let out =
        std::process::Command::new("openssl").args(["verify", "-CAfile"]).arg(&again.ca).arg(&again.cert).output()?;
    if !out.status.success() {
        return Err(format!("the shared certificate does not verify: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    // A new identity is still signed by the same CA.
    let other = TestPki::new(&second)?.issue("client2")?;
    let out =
        std::process::Command::new("openssl").args(["verify", "-CAfile"]).arg(&other.ca).arg(&other.cert).output()?;
    if !out.status.success() {
        return Err(format!("a new identity does not verify: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn rust_full() -> Result<Box<dyn RouterUnderTest>, String> {
    let profile = Profile::preset("full").ok_or("no full preset")?;
    Ok(Box::new(RustNat { profile, binary: env!("CARGO_BIN_EXE_vpn-passthrough").into() }))
}

fn linux() -> Result<Box<dyn RouterUnderTest>, String> {
    Ok(Box::new(LinuxNat { pptp_helper: true }))
}

fn main() {
    let args = Arguments::from_args();
    // SAFETY: set before any thread starts.
    unsafe { std::env::set_var("VPN_PASSTHROUGH_PPPD", env!("CARGO_BIN_EXE_vpn-passthrough-pppd")) };
    let trials = vec![
        lab_test("a_daemon_that_dies_is_named_with_its_log", L2TP, daemon_that_dies),
        lab_test("rust_nat::every_tunnel_keeps_delivering_under_attack", UNDER_ATTACK, under_attack),
        lab_test("runs_share_the_ca_and_its_certificates", &[Need::Tool("openssl")], runs_share_the_ca),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = nothing_of_ours_left() {
        eprintln!("after the vpn tests: {e}");
        std::process::exit(101);
    }
    conclusion.exit();
}

/// charon on server 1 and on client 1 (IKEv2, a pre-shared key), a
/// CHILD_SA to the server's inner network between them, seen through the
/// NAT.
fn ipsec_up(nl: &NatLab) -> Result<(Charon<'_>, Charon<'_>), Failed> {
    let (client, server) = (nl.client(1)?, nl.server()?);
    let psk = Auth::Psk("lab secret".into());
    let inner = "10.10.0.0/24".to_string();
    let srv = Charon::start(server, Duration::from_secs(20))?;
    srv.load(
        &server_conf(&ServerConfig {
            version: IkeVersion::V2,
            auth: psk.clone(),
            id: "server".into(),
            addr: nl.shape.server_addr(1),
            local_ts: inner.clone(),
            remote_ts: None,
            pool: "10.99.0.0/24".into(),
            ip_fragments: false,
        }),
        &psk,
    )?;
    let cli = Charon::start(client, Duration::from_secs(20))?;
    cli.load(
        &client_conf(&ClientConfig {
            name: "home".into(),
            version: IkeVersion::V2,
            auth: psk.clone(),
            id: "client1".into(),
            server_id: "server".into(),
            server: nl.shape.server_addr(1),
            remote_ts: inner,
            local_ts: None,
            ip_fragments: false,
            mobike: true,
            dpd_s: 0,
        }),
        &psk,
    )?;
    let sa = cli.initiate("net", Duration::from_secs(30))?;
    if sa.local_vips.is_empty() || !sa.nat_any {
        return Err(format!("the client got no virtual IP, or IKE did not see the NAT: {sa:?}").into());
    }
    Ok((srv, cli))
}

const PPP_SERVER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);

fn lns_config(listen: Ipv4Addr) -> LnsConfig {
    LnsConfig {
        listen,
        local_ip: PPP_SERVER,
        range: (Ipv4Addr::new(10, 97, 0, 100), Ipv4Addr::new(10, 97, 0, 199)),
        ppp: PppConfig::server(AuthProto::ChapMd5, "lns", "lab secret"),
    }
}

fn lac_config(lns: Ipv4Addr) -> LacConfig {
    LacConfig { name: "server".into(), lns, port: L2TP_PORT, ppp: PppConfig::client("client1", "lab secret") }
}

const PPTP_SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);

fn pptpd_config(listen: Ipv4Addr) -> PptpdConfig {
    PptpdConfig {
        listen,
        local_ip: PPTP_SERVER,
        range: (Ipv4Addr::new(10, 98, 0, 100), Ipv4Addr::new(10, 98, 0, 199)),
        ppp: PppConfig::server(AuthProto::ChapMd5, "pptpd", "lab secret"),
    }
}

fn esp_server_on(server: &Host<'_>, delay_ms: u64) -> Result<vpn_passthrough::lab::Process, Failed> {
    let bin = env!("CARGO_BIN_EXE_vpn-passthrough");
    let cmd = Cmd::new(bin).args(&["peer", "esp-server", "--delay-ms", &delay_ms.to_string()]).label("esp-server");
    let p = server.spawn(cmd)?;
    p.wait_for_log("listening", Duration::from_secs(5))?;
    Ok(p)
}

/// A scripted raw-ESP client on client `i` towards `server`: `count`
/// packets, one every `interval_ms` if given.
fn esp_client_to(
    nl: &NatLab,
    i: usize,
    server: Ipv4Addr,
    spi: u32,
    count: u32,
    interval_ms: Option<u64>,
) -> Result<vpn_passthrough::lab::Process, Failed> {
    let bin = env!("CARGO_BIN_EXE_vpn-passthrough");
    let mut cmd = Cmd::new(bin)
        .args(&["peer", "esp", &server.to_string(), "--spi", &format!("{spi:#x}"), "--ike-spi", &i.to_string()])
        .args(&["--count", &count.to_string(), "--wait-ms", "3000"])
        .label(format!("esp-client{i}"));
    if let Some(ms) = interval_ms {
        cmd = cmd.args(&["--interval-ms", &ms.to_string()]);
    }
    Ok(nl.client(i)?.spawn(cmd)?)
}

/// The client's summary; a client that lost echoes exits non-zero, which
/// is an outcome here, not a crash.
fn esp_report(p: &vpn_passthrough::lab::Process) -> Result<EspReport, Failed> {
    p.wait_for_log("esp: sent", Duration::from_secs(30))?;
    p.stop(Duration::from_secs(2))?;
    let text = std::fs::read_to_string(p.log_path())?;
    parse_esp_report(&text).ok_or_else(|| format!("no summary from {} in:\n{text}", p.label()).into())
}

/// An LNS told to listen on an address its host does not have exits at
/// once: the error names the host and the daemon and quotes its log.
fn daemon_that_dies() -> TestResult {
    let router = linux()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
    let Err(e) = Xl2tpd::lns(nl.server()?, &lns_config(Ipv4Addr::new(203, 0, 113, 9))) else {
        return Err("xl2tpd started on an address its host does not have".into());
    };
    let text = e.to_string();
    for needle in ["host 'server'", "xl2tpd-lns", "Unable to bind socket"] {
        if !text.contains(needle) {
            return Err(format!("the error should name {needle:?}: {text}").into());
        }
    }
    nl.teardown()?;
    Ok(())
}

/// Frames each hostile host sends, and how fast.
const FLOOD_FRAMES: u64 = 500_000;
const FLOOD_PER_SECOND: u64 = 25_000;
/// The NAT's resident memory may not pass this under attack: the default
/// bounds fill to a few tens of MB.
const RSS_BOUND_KB: u64 = 256 * 1024;

/// One tunnel per family through the Rust NAT (IKEv2 NAT-T c1, PPTP c2,
/// L2TP c3, raw ESP c4 to a second server) carries traffic while a hostile
/// LAN host (c5) and a hostile WAN host each send half a million frames of
/// spoofed flows, SYNs, random GRE, ESP, L2TP and IKE, ARP poisoning, RST
/// and StopCCN guesses and malformed packets. The NAT stays up under its
/// memory bound, every tunnel keeps delivering, and SIGTERM still stops it
/// within a second.
fn under_attack() -> TestResult {
    let router = rust_full()?;
    let shape = Shape { clients: 5, servers: 2, intruder: true, ..Shape::new(5) };
    let nl = NatLab::build_shaped(router.as_ref(), &shape, |t| t)?;
    let server = nl.server()?;
    // The four tunnels.
    let (_charon_server, _charon_client) = ipsec_up(&nl)?;
    let pptpd = Pptpd::start(server, &pptpd_config(shape.server_addr(1)))?;
    let pptp = PptpClient::start(nl.client(2)?, shape.server_addr(1), &PppConfig::client("client2", "lab secret"))?;
    let pptp_link = pptp.wait_for_link(Duration::from_secs(20))?;
    pptpd.wait_for_link(pptp_link.local, Duration::from_secs(5))?;
    let lns = Xl2tpd::lns(server, &lns_config(shape.server_addr(1)))?;
    let lac = Xl2tpd::lac(
        nl.client(3)?,
        &LacConfig { ppp: PppConfig::client("client3", "lab secret"), ..lac_config(shape.server_addr(1)) },
    )?;
    let l2tp_link = lac.connect("server", Duration::from_secs(20))?;
    lns.wait_for_link(l2tp_link.local, Duration::from_secs(5))?;
    let server2 = nl.lab.host(&shape.server_name(2))?;
    let _esp_server = esp_server_on(&server2, 0)?;
    let tunnels: [(usize, Ipv4Addr); 3] = [(1, shape.server_inner(1)), (2, PPTP_SERVER), (3, PPP_SERVER)];
    for (i, to) in tunnels {
        nl.client(i)?.run_ok(Cmd::argv(&["ping", "-n", "-c", "1", "-W", "3", &to.to_string()]))?;
    }
    // The hostile hosts, aimed at the NAT's MAC addresses.
    let rt = nl.lab.host(router::ROUTER)?;
    let mac_of = |host: &Host<'_>, local: &str| -> Result<[u8; 6], Failed> {
        let ifname = host.ifname(local)?;
        let out = host.run_ok(Cmd::argv(&["cat", &format!("/sys/class/net/{ifname}/address")]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let bytes: Vec<u8> = text.trim().split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
        bytes.try_into().map_err(|_| format!("{}: no MAC address in '{text}'", host.name()).into())
    };
    let (lan_mac, wan_mac) = (mac_of(&rt, router::LAN_IF)?, mac_of(&rt, router::WAN_IF)?);
    let intruder = nl.lab.host(router::INTRUDER)?;
    let inside = nl.client(5)?;
    let servers = vec![shape.server_addr(1), shape.server_addr(2)];
    let wan_aim = flood::Aim {
        side: vpn_passthrough::nat::Side::Wan,
        own_mac: mac_of(&intruder, "eth0")?,
        nat_mac: wan_mac,
        nat_addr: shape.wan.addr(),
        lan: shape.lan,
        servers: servers.clone(),
    };
    let lan_aim = flood::Aim {
        side: vpn_passthrough::nat::Side::Lan,
        own_mac: mac_of(&inside, "eth0")?,
        nat_mac: lan_mac,
        nat_addr: shape.lan.addr(),
        lan: shape.lan,
        servers,
    };
    let flood_from = |host: &Host<'_>, aim: flood::Aim, seed: u64, frames: u64, progress: &AtomicU64| {
        let ifname = host.ifname("eth0")?;
        host.inside(|| {
            flood::send(&ifname, flood::Flood::new(aim, seed), frames, FLOOD_PER_SECOND, progress)
                .map_err(|e| vpn_passthrough::lab::LabError::io("sending the flood", e))
        })
    };
    let no_watch = AtomicU64::new(0);
    // The raw ESP flow is bound before the attack starts, like the others.
    let esp = esp_client_to(&nl, 4, shape.server_addr(2), 0x4001, 150, Some(150))?;
    esp.wait_for_log("echoed seq 2", Duration::from_secs(10))?;
    let pings_each = 30;
    // How many of `count` pings through client `i`'s tunnel to `to` are
    // answered.
    let answered = |i: usize, to: Ipv4Addr, count: u32| -> Result<u32, Failed> {
        let out = nl.client(i)?.exec(Cmd::argv(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.5",
            "-W",
            "2",
            &to.to_string(),
        ]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.split(" received").next().and_then(|h| h.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0))
    };
    let (sent, replies) = std::thread::scope(|s| {
        let wan = s.spawn(|| flood_from(&intruder, wan_aim.clone(), 1, FLOOD_FRAMES, &no_watch));
        let lan = s.spawn(|| flood_from(&inside, lan_aim.clone(), 2, FLOOD_FRAMES, &no_watch));
        let pings: Vec<_> = tunnels.iter().map(|&(i, to)| s.spawn(move || answered(i, to, pings_each))).collect();
        let sent = [wan.join(), lan.join()];
        let replies: Vec<_> = pings.into_iter().map(|p| p.join()).collect();
        (sent, replies)
    });
    let sent: Vec<flood::Sent> =
        sent.into_iter().map(|r| Ok(r.map_err(|_| "a flood thread panicked")??)).collect::<Result<_, Failed>>()?;
    let replies: Vec<u32> =
        replies.into_iter().map(|r| r.map_err(|_| "a ping thread panicked")?).collect::<Result<_, _>>()?;
    let esp_report = esp_report(&esp)?;
    let nat = nl.router.process().ok_or("the Rust NAT has no process")?;
    if let Some(status) = nat.exit_status() {
        return Err(format!("the NAT ended under attack ({status:?}):\n{}", nat.log_tail(20)).into());
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", nat.pid()))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmHWM in the NAT's status")?;
    let drops = nl.router.drops(&nl.lab)?.unwrap_or_default();
    let mut top: Vec<(&String, &u64)> = drops.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    eprintln!(
        "under attack: sent {} frames from the WAN in {:.1} s, {} from the LAN in {:.1} s; NAT peak RSS {} MB (bound {} MB)",
        sent[0].frames,
        sent[0].elapsed.as_secs_f64(),
        sent[1].frames,
        sent[1].elapsed.as_secs_f64(),
        rss_kb / 1024,
        RSS_BOUND_KB / 1024,
    );
    eprintln!(
        "under attack: pings answered through IKEv2 {}/{pings_each}, PPTP {}/{pings_each}, L2TP {}/{pings_each}; raw ESP echoed {}/{}",
        replies[0], replies[1], replies[2], esp_report.echoed, esp_report.sent
    );
    eprintln!("under attack: top drops {:?}", &top[..top.len().min(12)]);
    if sent.iter().map(|s| s.frames).sum::<u64>() < FLOOD_FRAMES * 2 * 9 / 10 {
        return Err(format!("the flood was not sent: {sent:?}").into());
    }
    if rss_kb > RSS_BOUND_KB {
        return Err(format!("the NAT's RSS reached {rss_kb} kB, over {RSS_BOUND_KB} kB").into());
    }
    // A flood takes its share of the NAT's time, so some pings are lost
    // with everything else; a tunnel whose state the attack broke answers
    // none. After the flood every tunnel answers every ping.
    let names = ["IKEv2", "PPTP", "L2TP"];
    for (name, got) in names.iter().zip(&replies) {
        if *got < pings_each / 5 {
            return Err(format!("the {name} tunnel answered {got} of {pings_each} pings under attack").into());
        }
    }
    if esp_report.echoed < esp_report.sent / 5 || esp_report.foreign > 0 {
        return Err(format!("raw ESP under attack: {esp_report:?}").into());
    }
    for ((i, to), name) in tunnels.into_iter().zip(names) {
        let got = answered(i, to, 3)?;
        if got != 3 {
            return Err(format!("after the flood the {name} tunnel answered {got} of 3 pings").into());
        }
    }
    // The tunnels are done with. A PPP peer whose router is gone ends its
    // link, as it should, once its echoes go unanswered; stopped first, it
    // ends cleanly instead of while the next flood runs out.
    pptp.stop()?;
    // SIGTERM while a flood is still running: the NAT stops within 1 s.
    // The flood lasts 3 s, past the SIGTERM and the second it may take.
    let progress = AtomicU64::new(0);
    let stopped = std::thread::scope(|s| {
        let flood = s.spawn(|| flood_from(&intruder, wan_aim.clone(), 3, FLOOD_PER_SECOND * 3, &progress));
        nat.wait_until("be flooded", Duration::from_secs(10), || progress.load(Ordering::Relaxed) >= 10_000)?;
        if flood.is_finished() {
            return Err(vpn_passthrough::lab::LabError::Input("the flood ended before SIGTERM".into()));
        }
        let start = std::time::Instant::now();
        let r = nat.stop(Duration::from_secs(3));
        let took = start.elapsed();
        let _ = flood.join();
        r.map(|_| took)
    })?;
    eprintln!("under attack: SIGTERM stopped the NAT in {} ms", stopped.as_millis());
    if stopped > Duration::from_secs(1) {
        return Err(format!("SIGTERM took {} ms to stop the NAT under a flood", stopped.as_millis()).into());
    }
    drop((pptp, lac));
    nl.teardown()?;
    Ok(())
}
