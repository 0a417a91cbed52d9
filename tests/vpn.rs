//! Real VPN daemons through each router under test: the tunnel comes up,
//! and a ping and a 1 MB TCP transfer cross it in both directions.

mod common;

use std::time::Duration;

use common::needs::{CAPTURE, IPSEC, L2TP, L2TP_IPSEC, PPTP};
use common::{Need, TestResult, lab_test, nothing_of_ours_left};
use libtest_mimic::{Arguments, Failed, Trial};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use vpn_passthrough::capture::{Capture, What};
use vpn_passthrough::flood;
use vpn_passthrough::lab::{Cmd, Host, Proto};
use vpn_passthrough::nat::Profile;
use vpn_passthrough::router::{self, LinuxNat, NatLab, RouterUnderTest, RustNat, Shape};

use vpn_passthrough::ppp::session::AuthProto;
use vpn_passthrough::vpn::pppd::PppConfig;
use vpn_passthrough::vpn::pptp::{PptpClient, Pptpd, PptpdConfig};
use vpn_passthrough::vpn::scripted::{EspReport, parse_esp_report};
use vpn_passthrough::vpn::strongswan::{
    Auth, Charon, ClientConfig, IkeVersion, ServerConfig, TestPki, client_conf, server_conf,
};
use vpn_passthrough::vpn::xl2tpd::{L2TP_PORT, LacConfig, LnsConfig, Xl2tpd};

const ROOT: &[Need] = &[Need::Root];
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

type Make = fn() -> Result<Box<dyn RouterUnderTest>, String>;

fn rust_full() -> Result<Box<dyn RouterUnderTest>, String> {
    let profile = Profile::preset("full").ok_or("no full preset")?;
    Ok(Box::new(RustNat { profile, binary: env!("CARGO_BIN_EXE_vpn-passthrough").into() }))
}

fn rust_naive() -> Result<Box<dyn RouterUnderTest>, String> {
    rust_preset("naive")
}

fn rust_off() -> Result<Box<dyn RouterUnderTest>, String> {
    rust_preset("passthrough-off")
}

fn rust_preset(name: &str) -> Result<Box<dyn RouterUnderTest>, String> {
    let profile = Profile::preset(name).ok_or(format!("no {name} preset"))?;
    Ok(Box::new(RustNat { profile, binary: env!("CARGO_BIN_EXE_vpn-passthrough").into() }))
}

fn linux() -> Result<Box<dyn RouterUnderTest>, String> {
    Ok(Box::new(LinuxNat { pptp_helper: true }))
}

fn main() {
    let args = Arguments::from_args();
    // SAFETY: set before any thread starts.
    unsafe { std::env::set_var("VPN_PASSTHROUGH_PPPD", env!("CARGO_BIN_EXE_vpn-passthrough-pppd")) };
    let routers: [(&str, Make); 2] = [("rust_nat", rust_full), ("linux_nat", linux)];
    let mut trials: Vec<Trial> = Vec::new();
    for (name, make) in routers {
        trials.push(lab_test(&format!("{name}::ipsec_ikev2_psk"), IPSEC, move || ipsec(make, IkeVersion::V2, false)));
        trials.push(lab_test(&format!("{name}::ipsec_ikev2_certificates"), IPSEC, move || {
            ipsec(make, IkeVersion::V2, true)
        }));
        trials.push(lab_test(&format!("{name}::ipsec_ikev1_psk"), IPSEC, move || ipsec(make, IkeVersion::V1, false)));
        trials.push(lab_test(&format!("{name}::l2tp"), L2TP, move || l2tp(make)));
        trials.push(lab_test(&format!("{name}::l2tp_over_ipsec"), L2TP_IPSEC, move || l2tp_over_ipsec(make)));
        trials.push(lab_test(&format!("{name}::pptp"), PPTP, move || pptp(make)));
    }
    for (name, make, outcome) in [
        ("rust_nat", rust_full as Make, EspOutcome::Delivered),
        ("rust_nat_naive", rust_naive, EspOutcome::Delivered),
        ("rust_nat_off", rust_off, EspOutcome::Blocked),
    ] {
        trials.push(lab_test(&format!("{name}::raw_esp_one_client"), ROOT, move || raw_esp_one(make, outcome)));
    }
    for (name, make, outcome) in [
        ("rust_nat", rust_full as Make, EspOutcome::Delivered),
        ("rust_nat_naive", rust_naive, EspOutcome::LastSenderGetsAll),
    ] {
        trials.push(lab_test(&format!("{name}::raw_esp_two_clients_at_once"), CAPTURE, move || {
            raw_esp_two(make, outcome)
        }));
    }
    for (name, make) in [
        ("rust_nat", rust_full as Make),
        ("rust_nat_naive", rust_naive),
        ("rust_nat_off", rust_off),
        ("linux_nat", linux),
    ] {
        trials.push(lab_test(&format!("{name}::hostile_wan_host_gets_nothing_in"), CAPTURE, move || hostile(make)));
    }
    for (name, make, delivered) in
        [("rust_nat", rust_full as Make, true), ("rust_nat_naive", rust_naive, false), ("linux_nat", linux, false)]
    {
        trials.push(lab_test(&format!("{name}::l2tp_lns_answering_from_a_new_port"), L2TP, move || {
            lns_new_port(make, delivered)
        }));
    }
    trials.push(lab_test("a_daemon_that_dies_is_named_with_its_log", L2TP, daemon_that_dies));
    trials.push(lab_test("rust_nat::every_tunnel_keeps_delivering_under_attack", UNDER_ATTACK, under_attack));
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = nothing_of_ours_left() {
        eprintln!("after the vpn tests: {e}");
        std::process::exit(101);
    }
    conclusion.exit();
}

/// The default lab's shape: where its hosts' addresses come from.
fn shape() -> Shape {
    Shape::new(1)
}

/// One road-warrior client through the router to the server's inner
/// address: up, ping, 1 MB each way.
fn ipsec(make: Make, version: IkeVersion, certs: bool) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
    let (_server, _client) = ipsec_up(&nl, version, certs, None)?;
    through_tunnel(&nl.client(1)?, &nl.server()?, shape().server_inner(1))?;
    nl.teardown()?;
    Ok(())
}

/// charon on the server and on client 1, a CHILD_SA between them. With
/// `only`, both ends narrow the tunnel to that protocol and port (e.g.
/// `udp/1701`) of the server's inner address; otherwise it covers the inner
/// network.
fn ipsec_up<'l>(
    nl: &'l NatLab,
    version: IkeVersion,
    certs: bool,
    only: Option<&str>,
) -> Result<(Charon<'l>, Charon<'l>), Failed> {
    let (client, server) = (nl.client(1)?, nl.server()?);
    let (client_auth, server_auth) = if certs {
        let pki = TestPki::new(&nl.lab.dir().join("pki"))?;
        let (ccert, ckey) = pki.issue("client1.lab")?;
        let (scert, skey) = pki.issue("server.lab")?;
        (
            Auth::Cert { ca: pki.ca.clone(), cert: ccert, key: ckey },
            Auth::Cert { ca: pki.ca.clone(), cert: scert, key: skey },
        )
    } else {
        let psk = Auth::Psk("lab secret".into());
        (psk.clone(), psk)
    };
    let (cid, sid) = if certs { ("client1.lab", "server.lab") } else { ("client1", "server") };
    let inner = match only {
        Some(p) => format!("{}/32[{p}]", shape().server_inner(1)),
        None => "10.10.0.0/24".to_string(),
    };
    let narrowed = only.map(|p| format!("dynamic[{p}]"));
    let srv = Charon::start(server, Duration::from_secs(20))?;
    srv.load(
        &server_conf(&ServerConfig {
            version,
            auth: server_auth.clone(),
            id: sid.into(),
            addr: shape().server_addr(1),
            local_ts: inner.clone(),
            remote_ts: narrowed.clone(),
            pool: "10.99.0.0/24".into(),
            ip_fragments: certs,
        }),
        &server_auth,
    )?;
    let cli = Charon::start(client, Duration::from_secs(20))?;
    cli.load(
        &client_conf(&ClientConfig {
            name: "home".into(),
            version,
            auth: client_auth.clone(),
            id: cid.into(),
            server_id: sid.into(),
            server: shape().server_addr(1),
            remote_ts: inner,
            local_ts: narrowed,
            ip_fragments: certs,
        }),
        &client_auth,
    )?;
    let sa = cli.initiate("net", Duration::from_secs(30))?;
    if sa.local_vips.is_empty() {
        return Err(format!("the client got no virtual IP: {sa:?}").into());
    }
    if !sa.nat_any {
        return Err(format!("IKE did not see the NAT: {sa:?}").into());
    }
    Ok((srv, cli))
}

/// L2TP inside IPsec: the CHILD_SA carries only UDP 1701 between the
/// client's virtual IP and the server's inner address, where the LNS
/// listens; the WAN sees IKE and ESP in UDP 4500, never L2TP.
fn l2tp_over_ipsec(make: Make) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
    let wan = Capture::start(&nl.lab.host(router::ROUTER)?, router::WAN_IF, "wan")?;
    let (_server, _client) = ipsec_up(&nl, IkeVersion::V2, false, Some("udp/1701"))?;
    let (client, server) = (nl.client(1)?, nl.server()?);
    // PPP frames must fit libipsec's tunnel (MTU 1400) once wrapped in L2TP.
    let mut lns = lns_config(shape().server_inner(1));
    lns.ppp = lns.ppp.mtu(1280);
    let mut lac = lac_config(shape().server_inner(1));
    lac.ppp = lac.ppp.mtu(1280);
    let _lns = Xl2tpd::lns(server, &lns)?;
    let lac = Xl2tpd::lac(client, &lac)?;
    lac.connect("server", Duration::from_secs(20))?;
    through_tunnel(&client, &server, PPP_SERVER)?;
    let wan = wan.stop()?;
    let l2tp_in_clear = wan.count(None, None, |w| matches!(w, What::L2tp { .. }));
    let esp_in_udp = wan.count(None, None, |w| matches!(w, What::Esp { ports: Some(_), .. }));
    if l2tp_in_clear != 0 || esp_in_udp == 0 {
        return Err(format!(
            "the WAN should carry ESP in UDP only: {l2tp_in_clear} L2TP packets in clear, {esp_in_udp} ESP-in-UDP"
        )
        .into());
    }
    nl.teardown()?;
    Ok(())
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

/// xl2tpd LAC to xl2tpd LNS, CHAP, our PPP peer on both ends.
fn l2tp(make: Make) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
    let (client, server) = (nl.client(1)?, nl.server()?);
    let lns = Xl2tpd::lns(server, &lns_config(shape().server_addr(1)))?;
    let lac = Xl2tpd::lac(client, &lac_config(shape().server_addr(1)))?;
    let link = lac.connect("server", Duration::from_secs(20))?;
    if link.peer != PPP_SERVER {
        return Err(format!("the client's PPP link goes to {} (want {PPP_SERVER})", link.peer).into());
    }
    lns.wait_for_link(link.local, Duration::from_secs(5))?;
    through_tunnel(&client, &server, PPP_SERVER)?;
    nl.teardown()?;
    Ok(())
}

const PPTP_SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);

fn pptpd_config() -> PptpdConfig {
    PptpdConfig {
        listen: shape().server_addr(1),
        local_ip: PPTP_SERVER,
        range: (Ipv4Addr::new(10, 98, 0, 100), Ipv4Addr::new(10, 98, 0, 199)),
        ppp: PppConfig::server(AuthProto::ChapMd5, "pptpd", "lab secret"),
    }
}

/// The pptp client to pptpd, CHAP, our PPP peer on both ends.
fn pptp(make: Make) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
    let (client, server) = (nl.client(1)?, nl.server()?);
    let pptpd = Pptpd::start(server, &pptpd_config())?;
    let call = PptpClient::start(client, shape().server_addr(1), &PppConfig::client("client1", "lab secret"))?;
    let link = call.wait_for_link(Duration::from_secs(20))?;
    if link.peer != PPTP_SERVER {
        return Err(format!("the client's PPP link goes to {} (want {PPTP_SERVER})", link.peer).into());
    }
    pptpd.wait_for_link(link.local, Duration::from_secs(5))?;
    through_tunnel(&client, &server, PPTP_SERVER)?;
    nl.teardown()?;
    Ok(())
}

/// What a router is meant to do with raw ESP flows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EspOutcome {
    /// Every echo reaches the client that sent.
    Delivered,
    /// Nothing gets through.
    Blocked,
    /// The server's ESP goes to whichever client sent last.
    LastSenderGetsAll,
}

fn esp_server(nl: &NatLab, delay_ms: u64) -> Result<vpn_passthrough::lab::Process, Failed> {
    esp_server_on(&nl.server()?, delay_ms)
}

fn esp_server_on(server: &Host<'_>, delay_ms: u64) -> Result<vpn_passthrough::lab::Process, Failed> {
    let bin = env!("CARGO_BIN_EXE_vpn-passthrough");
    let cmd = Cmd::new(bin).args(&["peer", "esp-server", "--delay-ms", &delay_ms.to_string()]).label("esp-server");
    let p = server.spawn(cmd)?;
    p.wait_for_log("listening", Duration::from_secs(5))?;
    Ok(p)
}

fn esp_client(nl: &NatLab, i: usize, spi: u32, count: u32) -> Result<vpn_passthrough::lab::Process, Failed> {
    esp_client_to(nl, i, shape().server_addr(1), spi, count, None)
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

/// One scripted raw-ESP client: three packets, each echoed back.
fn raw_esp_one(make: Make, outcome: EspOutcome) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
    let _server = esp_server(&nl, 0)?;
    let client = esp_client(&nl, 1, 0x1001, 3)?;
    match outcome {
        EspOutcome::Blocked => {
            let err = client.wait_for_log("esp: sent", Duration::from_secs(15)).err();
            client.stop(Duration::from_secs(2))?;
            let tail = client.log_tail(5);
            if err.is_none() || !tail.contains("no IKE answer") {
                return Err(format!("IKE and ESP should be blocked; the client says:\n{tail}").into());
            }
        }
        _ => {
            let r = esp_report(&client)?;
            if (r.sent, r.echoed, r.foreign) != (3, 3, 0) {
                return Err(format!("every ESP echo should come back: {r:?}").into());
            }
        }
    }
    nl.teardown()?;
    Ok(())
}

/// Two scripted raw-ESP clients start at once: the second sends before
/// the server's (delayed) echo of the first comes back through the NAT.
fn raw_esp_two(make: Make, outcome: EspOutcome) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 2)?;
    let lan = Capture::start(&nl.lab.host(router::ROUTER)?, router::LAN_IF, "lan")?;
    let _server = esp_server(&nl, 800)?;
    let (spi1, spi2) = (0x1001u32, 0x1002u32);
    let first = esp_client(&nl, 1, spi1, 1)?;
    first.wait_for_log("sent seq 1", Duration::from_secs(10))?;
    let second = esp_client(&nl, 2, spi2, 1)?;
    let (r1, r2) = (esp_report(&first)?, esp_report(&second)?);
    let lan = lan.stop()?;
    let (c1, c2) = (shape().client_addr(1), shape().client_addr(2));
    let to = |c| lan.esp_spis(None, Some(c));
    match outcome {
        EspOutcome::Delivered => {
            if (r1.echoed, r2.echoed, r1.foreign + r2.foreign) != (1, 1, 0) {
                return Err(format!("each client should get its own echo: {r1:?} {r2:?}").into());
            }
            if !to(c1).contains(&spi1) || to(c1).contains(&spi2) || !to(c2).contains(&spi2) || to(c2).contains(&spi1) {
                return Err(format!("ESP by SPI on the LAN: to c1 {:?}, to c2 {:?}", to(c1), to(c2)).into());
            }
        }
        _ => {
            if r1.echoed != 0 || r2.echoed != 1 || r2.foreign == 0 {
                return Err(format!("the first client's echo should reach the second: {r1:?} {r2:?}").into());
            }
            if !to(c2).contains(&spi1) {
                return Err(format!("ESP for c1's SPI should have gone to c2 on the LAN: to c2 {:?}", to(c2)).into());
            }
        }
    }
    nl.teardown()?;
    Ok(())
}

/// The intruder, a WAN host that is not the server, sends spoofed GRE,
/// ESP, L2TP, IKE and NAT-T at the NAT's public address: nothing of it may
/// reach the LAN.
fn hostile(make: Make) -> TestResult {
    let router = make()?;
    let nl = NatLab::build_shaped(router.as_ref(), &Shape { intruder: true, ..Shape::new(1) }, |t| t)?;
    let rt = nl.lab.host(router::ROUTER)?;
    let (lan, wan) = (Capture::start(&rt, router::LAN_IF, "lan")?, Capture::start(&rt, router::WAN_IF, "wan")?);
    let bin = env!("CARGO_BIN_EXE_vpn-passthrough");
    let public = shape().wan.addr().to_string();
    let intruder_host = nl.lab.host(router::INTRUDER)?;
    // Resolve the NAT's address first: packets sent while ARP is pending
    // would be lost before they ever reach it. (A router may well ignore
    // the ping itself; the ARP exchange is what counts.)
    intruder_host.exec(Cmd::argv(&["ping", "-n", "-c", "1", "-W", "1", &public]))?;
    let out = intruder_host.run_ok(Cmd::new(bin).args(&["peer", "hostile", &public, "--rounds", "32"]))?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    // The client still reaches the server afterwards: the NAT is alive.
    nl.client(1)?.ping(shape().server_addr(1).into())?;
    let (lan, wan) = (lan.stop()?, wan.stop()?);
    let intruder = shape().intruder_addr();
    let arrived = wan.count(Some(intruder), None, |w| !matches!(w, What::Icmp { .. }));
    if arrived < 32 * 7 {
        return Err(format!("the WAN saw {arrived} of the intruder's packets ({said})").into());
    }
    if lan.capture_drops + wan.capture_drops > 0 {
        return Err(format!("the captures lost packets (LAN {}, WAN {})", lan.capture_drops, wan.capture_drops).into());
    }
    let leaked: Vec<_> = lan.packets.iter().filter(|p| p.src == intruder).collect();
    if !leaked.is_empty() {
        return Err(format!("{} of the intruder's packets reached the LAN, e.g. {:?}", leaked.len(), leaked[0]).into());
    }
    nl.teardown()?;
    Ok(())
}

/// An LNS that answers the client's SCCRQ from UDP port 40000, not 1701:
/// the SCCRP reaches the client only through a NAT that follows L2TP
/// tunnels rather than ports.
fn lns_new_port(make: Make, delivered: bool) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
    let lan = Capture::start(&nl.lab.host(router::ROUTER)?, router::LAN_IF, "lan")?;
    let bin = env!("CARGO_BIN_EXE_vpn-passthrough");
    let lns =
        nl.server()?.spawn(Cmd::new(bin).args(&["peer", "l2tp-lns", "--first-port", "40000"]).label("l2tp-lns"))?;
    lns.wait_for_log("listening", Duration::from_secs(5))?;
    let lac = Xl2tpd::lac(nl.client(1)?, &lac_config(shape().server_addr(1)))?;
    lac.dial("server")?;
    lns.wait_for_log("from port 40000 to port", Duration::from_secs(10))?;
    let c1 = shape().client_addr(1);
    let sccrp = |f: &vpn_passthrough::capture::Facts| {
        f.count(Some(shape().server_addr(1)), Some(c1), |w| {
            matches!(w, What::L2tp { sport: 40000, dport: 1701, control: Some(2), .. })
        })
    };
    if delivered {
        lac.process().wait_until("receive the SCCRP from port 40000", Duration::from_secs(5), || {
            lan.facts().is_ok_and(|f| sccrp(&f) > 0)
        })?;
    } else {
        // xl2tpd sends its SCCRQ again when no answer came: by then the
        // first SCCRP has long crossed the NAT, or been dropped.
        lac.process().wait_until("send its SCCRQ again", Duration::from_secs(10), || {
            lan.facts()
                .is_ok_and(|f| f.count(Some(c1), None, |w| matches!(w, What::L2tp { control: Some(1), .. })) >= 2)
        })?;
        let seen = sccrp(&lan.facts()?);
        if seen != 0 {
            return Err(
                format!("{seen} SCCRP from port 40000 reached the client through a NAT that should drop them").into()
            );
        }
    }
    lan.stop()?;
    nl.teardown()?;
    Ok(())
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

/// A ping and 1 MB each way to `inner`, an address of the server that
/// only the tunnel reaches. A failure carries both hosts' logs.
fn through_tunnel(client: &Host<'_>, server: &Host<'_>, inner: Ipv4Addr) -> Result<(), Failed> {
    traffic(client, server, inner).map_err(|e| {
        format!("{}\n{}\n{}", e.message().unwrap_or("traffic failed"), client.log_tails(10), server.log_tails(10))
            .into()
    })
}

fn traffic(client: &Host<'_>, server: &Host<'_>, inner: Ipv4Addr) -> Result<(), Failed> {
    let inner = inner.to_string();
    client.run_ok(Cmd::argv(&["ping", "-n", "-c", "2", "-W", "3", &inner]))?;
    let bin = env!("CARGO_BIN_EXE_vpn-passthrough");
    let reflector = server.spawn(Cmd::new(bin).args(&["probe", "serve", "--tcp", "7300"]).label("reflector"))?;
    reflector.wait_for_port(Proto::Tcp, 7300, Duration::from_secs(5))?;
    for reverse in [false, true] {
        let mut cmd = Cmd::new(bin).args(&["probe", "transfer", &format!("{inner}:7300"), "--bytes", "1000000"]);
        if reverse {
            cmd = cmd.arg("--reverse");
        }
        let out = client.run_ok(cmd.timeout(Duration::from_secs(60)))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains(" 1000000 bytes") {
            return Err(format!("1 MB did not cross the tunnel (reverse: {reverse}): {text}").into());
        }
    }
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
    let (_charon_server, _charon_client) = ipsec_up(&nl, IkeVersion::V2, false, None)?;
    let pptpd = Pptpd::start(server, &pptpd_config())?;
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
    let wan_target = flood::Target {
        side: vpn_passthrough::nat::Side::Wan,
        own_mac: mac_of(&intruder, "eth0")?,
        nat_mac: wan_mac,
        nat_addr: shape.wan.addr(),
        lan: shape.lan,
        servers: servers.clone(),
    };
    let lan_target = flood::Target {
        side: vpn_passthrough::nat::Side::Lan,
        own_mac: mac_of(&inside, "eth0")?,
        nat_mac: lan_mac,
        nat_addr: shape.lan.addr(),
        lan: shape.lan,
        servers,
    };
    let flood_from = |host: &Host<'_>, target: flood::Target, seed: u64, progress: &AtomicU64| {
        let ifname = host.ifname("eth0")?;
        host.inside(|| {
            flood::send(&ifname, flood::Flood::new(target, seed), FLOOD_FRAMES, FLOOD_PER_SECOND, progress)
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
        let wan = s.spawn(|| flood_from(&intruder, wan_target.clone(), 1, &no_watch));
        let lan = s.spawn(|| flood_from(&inside, lan_target.clone(), 2, &no_watch));
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
    // SIGTERM while a flood is still running: the NAT stops within 1 s.
    let progress = AtomicU64::new(0);
    let stopped = std::thread::scope(|s| {
        let flood = s.spawn(|| flood_from(&intruder, wan_target.clone(), 3, &progress));
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
