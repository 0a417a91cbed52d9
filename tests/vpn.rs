//! Real VPN daemons through each router under test: the tunnel comes up,
//! and a ping and a 1 MB TCP transfer cross it in both directions.

mod common;

use std::time::Duration;

use common::{Need, TestResult, lab_test, nothing_of_ours_left};
use libtest_mimic::{Arguments, Failed, Trial};
use std::net::Ipv4Addr;
use vpn_passthrough::lab::{Cmd, Host, Proto};
use vpn_passthrough::nat::Profile;
use vpn_passthrough::router::{self, LinuxNat, NatLab, RouterUnderTest, RustNat};

use vpn_passthrough::ppp::session::AuthProto;
use vpn_passthrough::vpn::pppd::PppAuth;
use vpn_passthrough::vpn::strongswan::{
    Auth, Charon, ClientConfig, IkeVersion, ServerConfig, TestPki, client_conf, server_conf,
};
use vpn_passthrough::vpn::xl2tpd::{L2TP_PORT, LacConfig, LnsConfig, Xl2tpd};

const IPSEC: &[Need] =
    &[Need::Root, Need::Tool("charon"), Need::Tool("swanctl"), Need::Tool("kernel-libipsec"), Need::Tool("nft")];
const L2TP: &[Need] = &[Need::Root, Need::Tool("xl2tpd"), Need::Tool("nft")];
const IPSEC_CERTS: &[Need] = &[
    Need::Root,
    Need::Tool("charon"),
    Need::Tool("swanctl"),
    Need::Tool("kernel-libipsec"),
    Need::Tool("nft"),
    Need::Tool("openssl"),
];

type Make = fn() -> Result<Box<dyn RouterUnderTest>, String>;

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
    let routers: [(&str, Make); 2] = [("rust_nat", rust_full), ("linux_nat", linux)];
    let mut trials: Vec<Trial> = Vec::new();
    for (name, make) in routers {
        trials.push(lab_test(&format!("{name}::ipsec_ikev2_psk"), IPSEC, move || ipsec(make, IkeVersion::V2, false)));
        trials.push(lab_test(&format!("{name}::ipsec_ikev2_certificates"), IPSEC_CERTS, move || {
            ipsec(make, IkeVersion::V2, true)
        }));
        trials.push(lab_test(&format!("{name}::ipsec_ikev1_psk"), IPSEC, move || ipsec(make, IkeVersion::V1, false)));
        trials.push(lab_test(&format!("{name}::l2tp"), L2TP, move || l2tp(make)));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = nothing_of_ours_left() {
        eprintln!("after the vpn tests: {e}");
        std::process::exit(101);
    }
    conclusion.exit();
}

/// One road-warrior client through the router to the server's inner
/// address: up, ping, 1 MB each way.
fn ipsec(make: Make, version: IkeVersion, certs: bool) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
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
    let srv = Charon::start(server, Duration::from_secs(20))?;
    srv.load(
        &server_conf(&ServerConfig {
            version,
            auth: server_auth.clone(),
            id: sid.into(),
            addr: router::server_addr(),
            local_ts: "10.10.0.0/24".into(),
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
            server: router::server_addr(),
            remote_ts: "10.10.0.0/24".into(),
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
    through_tunnel(&client, &server, router::server_inner())?;
    nl.teardown()?;
    Ok(())
}

const PPP_SERVER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);

/// xl2tpd LAC to xl2tpd LNS, CHAP, our PPP peer on both ends.
fn l2tp(make: Make) -> TestResult {
    let router = make()?;
    let nl = NatLab::build(router.as_ref(), 1)?;
    let (client, server) = (nl.client(1)?, nl.server()?);
    let lns = Xl2tpd::lns(
        server,
        &LnsConfig {
            listen: router::server_addr(),
            local_ip: PPP_SERVER,
            range: (Ipv4Addr::new(10, 97, 0, 100), Ipv4Addr::new(10, 97, 0, 199)),
            auth: PppAuth::server(AuthProto::ChapMd5, "lns", "lab secret"),
        },
    )?;
    let lac = Xl2tpd::lac(
        client,
        &LacConfig {
            name: "server".into(),
            lns: router::server_addr(),
            port: L2TP_PORT,
            auth: PppAuth::client("client1", "lab secret"),
        },
    )?;
    let link = lac.connect("server", Duration::from_secs(20))?;
    if link.peer != PPP_SERVER {
        return Err(format!("the client's PPP link goes to {} (want {PPP_SERVER})", link.peer).into());
    }
    lns.wait_for_link(link.local, Duration::from_secs(5))?;
    through_tunnel(&client, &server, PPP_SERVER)?;
    nl.teardown()?;
    Ok(())
}

/// A ping and 1 MB each way to `inner`, an address of the server that
/// only the tunnel reaches.
fn through_tunnel(client: &Host<'_>, server: &Host<'_>, inner: Ipv4Addr) -> Result<(), Failed> {
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
