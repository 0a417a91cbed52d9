//! The conformance suite: every scenario file under `scenarios/`, played
//! against the Rust NAT in each mode the file lists and against the Linux
//! NAT, one trial each (`pptp::two-clients-same-server::rust-naive`).
//! Expected failures are asserted like everything else.

mod common;

use std::path::PathBuf;

use common::needs::{CAPTURE, PPTP};
use common::{Need, TestResult, lab_test, nothing_of_ours_left};
use libtest_mimic::{Arguments, Trial};
use vpn_passthrough::nat_behaviour;
use vpn_passthrough::router::Addressing;
use vpn_passthrough::scenario::early::Pace;
use vpn_passthrough::scenario::family;
use vpn_passthrough::scenario::format::Step;
use vpn_passthrough::scenario::observed::Judge;
use vpn_passthrough::scenario::{self, Scenario, Status, Target, suite};

const REBOOT: &[Need] = &[Need::Root, Need::Tool("conntrack")];
const REPORT: &[Need] = &[Need::Root, Need::Tool("tcpdump"), Need::Tool("nft"), Need::Tool("chromium")];

/// What a scenario needs: root, the captures and rules every run uses, and
/// the programs its family's endpoints run.
fn needs(s: &Scenario) -> &'static [Need] {
    let tools = family::of(s.file.family).tools(s).iter().map(|t| Need::Tool(t));
    Box::leak(CAPTURE.iter().copied().chain(tools).collect::<Vec<_>>().into_boxed_slice())
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vpn-passthrough"))
}

fn main() {
    let mut args = Arguments::from_args();
    // Scenarios spend most of their time waiting on daemons and timeouts:
    // about as many labs run at once as `run` plays by default. The
    // external router's trial and the early verdicts' trial each play
    // several labs at once, so they take the threads of the labs they add
    // (down to half, on a small machine).
    let added = (STAND_INS - 1) + (EARLY_RUNS.len() - 1);
    let jobs = suite::default_jobs();
    args.test_threads = args.test_threads.or(Some(jobs.saturating_sub(added).max(jobs / 2).max(1)));
    // SAFETY: set before any thread starts.
    unsafe {
        std::env::set_var("VPN_PASSTHROUGH_PPPD", env!("CARGO_BIN_EXE_vpn-passthrough-pppd"));
        std::env::set_var("VPN_PASSTHROUGH_BIN", env!("CARGO_BIN_EXE_vpn-passthrough"));
        std::env::set_var("VPN_PASSTHROUGH_ENTER", env!("CARGO_BIN_EXE_vpn-passthrough-enter"));
    }
    let mut trials = Vec::new();
    // The longest trials start first, so that the suite does not end
    // waiting on one alone: the external router's test, the scale test,
    // the early verdicts' test (which plays at the slow pace too), the
    // other tests of a few seconds each, then the scenarios' runs, the
    // longest first.
    // The stand-in router is built with `ip`; the rest is what its
    // scenarios' families need.
    let loaded = scenario::load(&[scenario::default_dir()]);
    let external = match &loaded {
        Ok(scenarios) => {
            scenarios.iter().fold(&[Need::Tool("ip"), Need::Tool("dnsmasq"), Need::Tool("busybox")][..], |need, s| {
                both(need, needs(s))
            })
        }
        Err(_) => CAPTURE,
    };
    trials.push(lab_test("external::a_router_on_two_ports", external, external_router));
    let scale = vpn_passthrough::bench::scale::scenarios(vpn_passthrough::bench::scale::FAMILIES.len());
    let scale_needs = scale.iter().flatten().fold(CAPTURE, |need, s| both(need, needs(s)));
    trials.push(lab_test("scale::two_hundred_tunnels_through_one_rust_nat", scale_needs, two_hundred_tunnels));
    let early_needs = loaded.as_ref().map_or(CAPTURE, |all| {
        all.iter()
            .filter(|s| EARLY_RUNS.iter().any(|r| r.starts_with(&format!("{}::", s.id))))
            .fold(CAPTURE, |need, s| both(need, needs(s)))
    });
    trials.push(lab_test("early::verdicts_agree_with_slow", early_needs, early_verdicts_agree_with_slow));
    trials.push(Trial::test("a broken scenario file names file, line and key", broken_file));
    trials.push(lab_test(
        "preflight::every_family_works_on_a_direct_link",
        Box::leak(
            CAPTURE
                .iter()
                .copied()
                .chain(scenario::preflight::Item::tools().into_iter().map(Need::Tool))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        ),
        preflight,
    ));
    trials.push(lab_test("report::renders_in_chromium", REPORT, report_renders));
    trials.push(lab_test("report::compare_naive_and_full", CAPTURE, compare_naive_and_full));
    trials.push(lab_test("interrupted::ctrl_c_leaves_nothing_behind", PPTP, interrupted));
    trials.push(lab_test("crash::a_server_daemon_that_dies_fails_with_its_log", PPTP, daemon_crash));
    match loaded {
        Ok(scenarios) => {
            // The longest runs first, as `run` plays them.
            let work = suite::work(&scenarios, &suite::Routers::Both, None);
            for (s, target) in suite::longest_first(&work).into_iter().map(|i| (work[i].0.clone(), work[i].1)) {
                // A router kind the file skips (with its reason) gets no
                // trial: nothing is reported as passed that did not run.
                if s.expectation(target).is_none_or(|e| e.skip.is_some()) {
                    continue;
                }
                let name = s.name(target);
                let reboots = s.file.steps.iter().any(|st| matches!(st, Step::Reboot));
                let need = if reboots && target == Target::Linux { both(needs(&s), REBOOT) } else { needs(&s) };
                trials.push(lab_test(&name, need, move || play(&s, target)));
            }
        }
        Err(e) => trials.push(Trial::test("the scenario files load", move || Err(e.into()))),
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Err(e) = nothing_of_ours_left() {
        eprintln!("after the scenario suite: {e}");
        std::process::exit(101);
    }
    conclusion.exit();
}

fn both(a: &'static [Need], b: &'static [Need]) -> &'static [Need] {
    Box::leak(a.iter().chain(b).copied().collect::<Vec<_>>().into_boxed_slice())
}

/// Removes the run directories that runs failing as the test wants kept,
/// and those of attempts played again (they would stay in `/dev/shm` until
/// a reboot).
fn remove_kept(outcomes: &[scenario::Outcome]) {
    let missed = outcomes.iter().flat_map(|o| o.missed_premises.iter().filter_map(|m| m.kept.as_ref()));
    for dir in outcomes.iter().filter_map(|o| o.kept.as_ref()).chain(missed) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn play(s: &Scenario, target: Target) -> TestResult {
    let o = suite::play_one(s, target, &suite::Routers::Both, &binary(), suite::How::EXACT);
    for m in &o.missed_premises {
        eprintln!("{}: played again, an attempt's lab missed the premise: {}", o.name, m.premise);
    }
    match o.status {
        Status::Pass | Status::ExpectedFailure => {
            remove_kept(std::slice::from_ref(&o));
            Ok(())
        }
        Status::Skipped => Err(format!("skipped: {}", o.why.unwrap_or_default()).into()),
        // `failure()` opens a lab error with "lab error:".
        Status::Fail | Status::Error => Err(o.failure().into()),
    }
}

/// 50 clients each of PPTP, L2TP, IKEv2 with NAT-T and WireGuard behind one
/// Rust NAT, dialling without waiting for one another: every tunnel comes up and carries traffic.
fn two_hundred_tunnels() -> TestResult {
    use vpn_passthrough::bench::scale;
    let profile = vpn_passthrough::nat::Profile::preset("full").ok_or("no full profile")?;
    let router = vpn_passthrough::router::RustNat { profile, binary: binary() };
    let f = scale::measure(&router, 50)?;
    eprint!("{}", f.render());
    // Every tunnel up and carrying traffic; an echo lost to a loaded lab
    // is in the figures, not a failure.
    match f.shortfall(1) {
        Some(short) => Err(short.into()),
        None => Ok(()),
    }
}

/// Every family comes up on a direct link between two lab hosts (the
/// preflight `run`, `doctor` and every scenario trial rely on).
fn preflight() -> TestResult {
    use vpn_passthrough::scenario::preflight;
    let (reports, seconds) = preflight::run_all();
    eprintln!("preflight of {} families: {seconds:.1} s", reports.len());
    let failed: Vec<String> = reports.iter().filter(|r| r.failure.is_some()).map(|r| r.line()).collect();
    if reports.len() != preflight::Item::all().len() || !failed.is_empty() {
        return Err(format!("{} reports; failed:\n{}", reports.len(), failed.join("\n")).into());
    }
    Ok(())
}

/// Every kind of mistake names the file, the line and the key.
fn broken_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "family = \"pptp\"\ndescription = \"x\"\n\n[[step]]\ndo = \"connect\"\n\n[expect.rust]\ntunnels = [\"sideways\"]\n",
    )?;
    let Err(e) = scenario::load(&[dir.path().to_path_buf()]) else {
        return Err("a tunnel state of `sideways` was accepted".into());
    };
    for needle in [path.to_string_lossy().as_ref(), ":8:", "sideways", "up", "down"] {
        if !e.contains(needle) {
            return Err(format!("the error should contain {needle:?}: {e}").into());
        }
    }
    Ok(())
}

/// Two real runs of one story, judged by the same expectation: two raw-ESP
/// clients to one server through the naive Rust NAT (one gets the
/// other's echoes) and through the full one. `compare` lists the story as
/// a fix from naive to full and as a regression the other way.
fn compare_naive_and_full() -> TestResult {
    use vpn_passthrough::scenario::compare::{RunReport, compare};
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("esp").join("two-at-once.toml");
    std::fs::create_dir_all(file.parent().ok_or("no parent")?)?;
    std::fs::write(
        &file,
        "family = \"esp\"\ndescription = \"two raw-ESP clients to one server\"\nmodes = [\"naive\", \"full\"]\n\n\
         [topology]\nclients = 2\n\n[endpoints]\nesp_delay_ms = 800\n\n\
         [[step]]\ndo = \"connect\"\n\n[[step]]\ndo = \"traffic\"\n\n\
         [expect.rust]\ntunnels = [\"up\", \"up\"]\ntraffic = [\"both\", \"both\"]\n\n\
         [expect.linux]\nskip = \"not compared\"\n",
    )?;
    let scenarios = scenario::load(&[file])?;
    let routers = suite::Routers::Rust;
    let mut reports = Vec::new();
    for (mode, label) in [("rust-naive", "naive"), ("rust-full", "full")] {
        let work = suite::work(&scenarios, &routers, Some(mode));
        let outcomes = suite::run_all(&work, &routers, &binary(), 1, suite::How::EXACT, &|_, _, _| {});
        let out = dir.path().join(label);
        scenario::report::write(&out, &outcomes, &[], &routers.name(), Some(label), &[])?;
        // The report holds a copy of a failure's logs.
        remove_kept(&outcomes);
        reports.push(RunReport::load(&out.join("report.json"))?);
    }
    let (naive, full) = (&reports[0], &reports[1]);
    let up = compare(naive, full);
    let down = compare(full, naive);
    let names = |v: &[vpn_passthrough::scenario::compare::Change]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let want = vec!["esp::two-at-once".to_string()];
    if names(&up.fixes) != want || !up.regressions.is_empty() || names(&down.regressions) != want {
        return Err(format!("naive to full:\n{}\nfull to naive:\n{}", up.text(), down.text()).into());
    }
    Ok(())
}

/// The runs [`early_verdicts_agree_with_slow`] plays both ways: every
/// blocked family alone and with clients at once, and routers that drop a
/// flow's first packet or send one client's answers to another, which an
/// early verdict must not mistake for a block.
const EARLY_RUNS: &[&str] = &[
    "pptp::one-client::rust-off",
    "pptp::three-clients-same-server::rust-off",
    "pptp::first-packet-dropped::rust-full",
    "l2tp::one-client::rust-off",
    "l2tp::two-clients-two-servers::rust-off",
    "l2tp::first-packet-dropped::rust-full",
    "ikev2::one-client::rust-off",
    "ikev2::first-packet-dropped::rust-full",
    "ikev1::two-clients-same-server::rust-off",
    "l2tp-ipsec::one-client::rust-off",
    "esp::one-client::rust-off",
    "esp::two-clients-same-server::rust-naive",
];

/// Plays [`EARLY_RUNS`] judged early and at the `--slow` pace: every
/// run's status and checks must be the same; every run of the `off` column
/// (the router blocks) must have been judged early, which is the premise
/// of the comparison, and no other run, nor any at the slow pace.
fn early_verdicts_agree_with_slow() -> TestResult {
    let scenarios = scenario::load(&[scenario::default_dir()])?;
    let routers = suite::Routers::Rust;
    let work: Vec<(&Scenario, Target)> = suite::work(&scenarios, &routers, None)
        .into_iter()
        .filter(|(s, t)| EARLY_RUNS.contains(&s.name(*t).as_str()))
        .collect();
    if work.len() != EARLY_RUNS.len() {
        return Err(format!("{} of the {} runs found", work.len(), EARLY_RUNS.len()).into());
    }
    let play = |pace| {
        suite::run_all(
            &work,
            &routers,
            &binary(),
            suite::default_jobs(),
            suite::How { judge: Judge::Exact, pace },
            &|_, _, _| {},
        )
    };
    let (early, slow) = (play(Pace::Early), play(Pace::Slow));
    let judged_early = |o: &scenario::Outcome| {
        o.checks.iter().any(|c| c.reason.as_deref().is_some_and(|r| r.contains("an early verdict")))
    };
    let checks = |o: &scenario::Outcome| o.checks.iter().map(|c| (c.what.clone(), c.ok)).collect::<Vec<_>>();
    let mut differ = Vec::new();
    for (e, s) in early.iter().zip(&slow) {
        if e.status != s.status || checks(e) != checks(s) {
            differ.push(format!(
                "{}: early {} {:?}, slow {} {:?}",
                e.name,
                e.status.word(),
                checks(e),
                s.status.word(),
                checks(s)
            ));
        }
        if judged_early(e) != e.name.ends_with("::rust-off") {
            differ.push(format!("{}: judged early: {}", e.name, judged_early(e)));
        }
        if judged_early(s) {
            differ.push(format!("{}: judged early at the slow pace", s.name));
        }
    }
    if !differ.is_empty() {
        return Err(differ.join("\n").into());
    }
    Ok(())
}

/// Plays two quick scenarios, writes the report, and has headless
/// Chromium render `index.html`: the DOM it builds must hold the matrix
/// with a row per scenario and a topology drawing per outcome.
fn report_renders() -> TestResult {
    let scenarios = scenario::load(&[scenario::default_dir().join("esp")])?;
    let pick: Vec<Scenario> =
        scenarios.into_iter().filter(|s| s.case == "one-client" || s.case == "two-clients-same-server").collect();
    if pick.len() != 2 {
        return Err(
            format!("expected the esp one-client and two-clients-same-server scenarios, found {}", pick.len()).into()
        );
    }
    let routers = suite::Routers::Rust;
    let outcomes =
        suite::run_all(&suite::work(&pick, &routers, None), &routers, &binary(), 2, suite::How::EXACT, &|_, _, _| {});
    let dir = tempfile::tempdir()?;
    scenario::report::write(dir.path(), &outcomes, &[], &routers.name(), Some("a labelled run"), &[])?;
    let chromium = vpn_passthrough::prereq::require_tool("chromium").map_err(|m| m.to_string())?;
    let profile = tempfile::tempdir()?;
    let out = std::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", dir.path().join("index.html").display()))
        .output()?;
    let dom = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !dom.contains("<table id=\"matrix\">") {
        return Err(format!(
            "chromium did not render the matrix ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().take(10).collect::<Vec<_>>().join("\n")
        )
        .into());
    }
    let rows = dom.matches("<tr><td>esp</td>").count();
    let drawings = dom.matches("<svg").count();
    if rows != 2 || drawings != outcomes.len() {
        return Err(format!(
            "the rendered page has {rows} esp rows (want 2) and {drawings} drawings (want {})",
            outcomes.len()
        )
        .into());
    }
    for f in ["junit.xml", "report.json"] {
        if !dir.path().join(f).is_file() {
            return Err(format!("the report has no {f}").into());
        }
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json"))?)?;
    if !dom.contains("VPN passthrough report: a labelled run") || json["label"] != "a labelled run" {
        return Err(format!("the run's label is missing from the page or report.json (label {})", json["label"]).into());
    }
    Ok(())
}

/// A stand-in for a real router from the box: a namespace outside any lab,
/// running the kernel's NAT, wired by two veth pairs whose other ends sit
/// in this namespace, as a real router's cables sit in two NICs. Its LAN
/// address is its own (192.168.1.1/24), it serves DHCP on its LAN
/// (dnsmasq) and asks for its WAN address by DHCP (udhcpc), as a router
/// fresh from the box does.
struct BoxRouter {
    ns: String,
    lan_port: String,
    wan_port: String,
    daemons: Vec<std::process::Child>,
    dir: tempfile::TempDir,
}

impl BoxRouter {
    /// Stand-in number `n` of this process.
    fn build(n: usize) -> Result<BoxRouter, String> {
        use vpn_passthrough::router::dhcp;
        let id = std::process::id() % 100_000;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut b = BoxRouter {
            ns: format!("xr{id}-{n}-box"),
            lan_port: format!("xr{id}{n}l"),
            wan_port: format!("xr{id}{n}w"),
            daemons: Vec::new(),
            dir,
        };
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("ip").args(args).output().map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
            }
        };
        ip(&["netns", "add", &b.ns])?;
        ip(&["link", "add", &b.lan_port, "type", "veth", "peer", "name", "lan", "netns", &b.ns])?;
        ip(&["link", "add", &b.wan_port, "type", "veth", "peer", "name", "wan", "netns", &b.ns])?;
        // The LAN a router from the box has: the suite's default.
        let lan = vpn_passthrough::router::default_lan();
        ip(&["-n", &b.ns, "addr", "add", &lan.to_string(), "dev", "lan"])?;
        for dev in ["lo", "lan", "wan"] {
            ip(&["-n", &b.ns, "link", "set", dev, "up"])?;
        }
        let rules = vpn_passthrough::router::LinuxNat { pptp_helper: true }.ruleset("lan", "wan");
        let rules_file = b.dir.path().join("box.nft");
        std::fs::write(&rules_file, rules).map_err(|e| e.to_string())?;
        ip(&["netns", "exec", &b.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        ip(&["netns", "exec", &b.ns, "nft", "-f", &rules_file.to_string_lossy()])?;
        let path = |name: &str| b.dir.path().join(name).to_string_lossy().into_owned();
        let nth = |n: u32| std::net::Ipv4Addr::from(u32::from(lan.network()) + n);
        let mut lan_dhcp = vec!["netns".to_string(), "exec".into(), b.ns.clone(), "dnsmasq".into()];
        lan_dhcp.extend(dhcp::server_args("lan", lan, nth(10), nth(200), Some(lan.addr()), &path("lan.leases")));
        let script = path("udhcpc.sh");
        std::fs::write(&script, dhcp::CLIENT_SCRIPT).map_err(|e| e.to_string())?;
        dhcp::make_executable(std::path::Path::new(&script)).map_err(|e| e.to_string())?;
        let mut wan_dhcp = vec!["netns".to_string(), "exec".into(), b.ns.clone(), "busybox".into()];
        wan_dhcp.extend(dhcp::client_args("wan", None, "box-router", &script, false));
        for (args, log) in [(lan_dhcp, "dnsmasq.log"), (wan_dhcp, "udhcpc.log")] {
            let log = std::fs::File::create(path(log)).map_err(|e| e.to_string())?;
            let err = log.try_clone().map_err(|e| e.to_string())?;
            let child = std::process::Command::new("ip")
                .args(&args)
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", args.join(" ")))?;
            b.daemons.push(child);
        }
        // Ready once its DHCP server serves, as `dhcp::serve` waits in a lab.
        let log = path("dnsmasq.log");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("DHCP, IP range") {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the stand-in's dnsmasq did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(b)
    }

    /// The stand-in as the suite sees it: two ports, addressed by DHCP.
    fn external(&self) -> vpn_passthrough::router::ExternalRouter {
        vpn_passthrough::router::ExternalRouter {
            lan_port: self.lan_port.clone(),
            wan_port: self.wan_port.clone(),
            lan: Addressing::Dhcp,
            wan: Addressing::Dhcp,
        }
    }
}

/// Whether `port` is in this namespace.
fn port_is_home(port: &str) -> bool {
    std::process::Command::new("ip").args(["link", "show", port]).output().is_ok_and(|o| o.status.success())
}

impl Drop for BoxRouter {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        // Deleting the namespace destroys both veth pairs.
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Stand-in routers the external test plays through side by side. Each is
/// a router of its own, which plays one lab at a time, as a real router
/// does; the scenarios are dealt among them.
const STAND_INS: usize = 6;
// One digit in the stand-ins' port names (`xr<pid><n>l`), which must stay
// apart from another process's.
const _: () = assert!(STAND_INS < 10);

/// Every scenario against `--router external`, played through
/// [`STAND_INS`] stand-ins, each given nothing but its two ports: its WAN
/// takes the suite's DHCP lease and the clients lease from it. As the CLI
/// does by default: one lab at a time per router, judged on whether the
/// VPNs work. A scenario that would reconfigure or
/// reboot the router is skipped with its reason; the stand-in is a kernel
/// NAT, so a run FAILs exactly where the file expects the Linux NAT to
/// break the VPN, with a one-line reason; everything else passes (or fails
/// as expected, where every router breaks it). Its NAT behaviour measures
/// as the kernel's, and both ports are back in this namespace afterwards.
fn external_router() -> TestResult {
    use vpn_passthrough::scenario::format::ExpectedOutcome;
    let boxes = (0..STAND_INS).map(BoxRouter::build).collect::<Result<Vec<_>, _>>()?;
    let mut problems = Vec::new();
    let budget = nat_behaviour::Budget { longest: std::time::Duration::from_secs(2), steps: 4 };
    let measured = nat_behaviour::measure_router(&boxes[0].external(), budget)?;
    let eim = nat_behaviour::Value::Behaviour { behaviour: vpn_passthrough::nat::Behaviour::EndpointIndependent };
    if measured.get(nat_behaviour::Key::Mapping) != Some(&eim) {
        problems.push(format!("the stand-in's mapping is the kernel's, endpoint-independent:\n{}", measured.text()));
    }
    let scenarios = scenario::load(&[scenario::default_dir()])?;
    let work = suite::work(&scenarios, &suite::Routers::External(boxes[0].external()), None);
    // The longest runs dealt first, one to each stand-in in turn.
    let order = suite::longest_first(&work);
    let mut outcomes: Vec<Option<scenario::Outcome>> = vec![None; work.len()];
    std::thread::scope(|scope| {
        let players: Vec<_> = boxes
            .iter()
            .enumerate()
            .map(|(n, b)| {
                let mine: Vec<usize> = order.iter().copied().skip(n).step_by(boxes.len()).collect();
                let share: Vec<(&Scenario, Target)> = mine.iter().map(|&i| work[i]).collect();
                let routers = suite::Routers::External(b.external());
                scope.spawn(move || {
                    let how = suite::How { judge: routers.default_judge(), pace: Pace::Early };
                    mine.into_iter().zip(suite::run_all(&share, &routers, &binary(), 1, how, &|_, _, _| {}))
                })
            })
            .collect();
        for p in players {
            match p.join() {
                Ok(played) => played.for_each(|(i, o)| outcomes[i] = Some(o)),
                Err(_) => problems.push("a stand-in's player panicked".into()),
            }
        }
    });
    if outcomes.iter().any(Option::is_none) {
        problems.push(format!("{} runs have no outcome", outcomes.iter().filter(|o| o.is_none()).count()));
    }
    for (o, (s, _)) in outcomes.iter().zip(&work) {
        let Some(o) = o else { continue };
        let expect = |t| s.expectation(t).map(|e| (e.skip.is_some(), e.outcome));
        let linux_breaks = expect(Target::Linux) == Some((false, ExpectedOutcome::Breaks));
        let every_router_breaks = expect(Target::External) == Some((false, ExpectedOutcome::Breaks));
        let want = if let Some(why) = suite::needs_control(s) {
            if !o.why.as_deref().is_some_and(|w| w.contains(why)) {
                problems.push(format!("{}: skipped without its reason ({:?})", o.name, o.why));
            }
            Status::Skipped
        } else if every_router_breaks {
            Status::ExpectedFailure
        } else if linux_breaks {
            if !o.summary().is_some_and(|l| !l.is_empty() && !l.contains('\n')) {
                problems.push(format!("{}: a FAIL without a one-line reason: {:?}", o.name, o.summary()));
            }
            Status::Fail
        } else {
            Status::Pass
        };
        if o.status != want {
            problems.push(format!("{}: {:?} (want {want:?})\n{}", o.name, o.status, o.failure()));
        }
    }
    for port in boxes.iter().flat_map(|b| [&b.lan_port, &b.wan_port]) {
        if !port_is_home(port) {
            problems.push(format!("{port} was not given back to this namespace"));
        }
    }
    let outcomes: Vec<scenario::Outcome> = outcomes.into_iter().flatten().collect();
    if outcomes.len() != scenarios.len() || !problems.is_empty() {
        return Err(format!("{} outcomes of {} files; {}", outcomes.len(), scenarios.len(), problems.join("\n")).into());
    }
    remove_kept(&outcomes);
    Ok(())
}

/// The lab that `vpn-passthrough run` (process `pid`) builds, once the
/// file `ready` exists in its run directory.
fn lab_of(pid: u32, ready: &str) -> Option<(vpn_passthrough::lab::RunId, PathBuf)> {
    use std::time::{Duration, Instant};
    use vpn_passthrough::lab::{RunId, runs};
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir(runs::RUNS_DIR).into_iter().flatten().flatten() {
            let Some(id) = RunId::parse(&entry.file_name().to_string_lossy()) else { continue };
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(r) = runs::RunRecord::parse(id, &text)
                && r.pid == pid
                && r.dir.join(ready).is_file()
            {
                return Some((id, r.dir));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A server daemon killed in the middle of a scenario: the run fails,
/// naming the host and the daemon, with its last log lines.
fn daemon_crash() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    use vpn_passthrough::lab::netns;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("crash.toml");
    std::fs::write(
        &file,
        "family = \"pptp\"\ndescription = \"pptpd dies while the tunnel idles\"\nmodes = [\"full\"]\n\n\
         [[step]]\ndo = \"connect\"\n\n[[step]]\ndo = \"wait\"\nseconds = 4\n\n[[step]]\ndo = \"traffic\"\n\n\
         [expect.rust]\ntunnels = [\"up\"]\ntraffic = [\"both\"]\n\n[expect.linux]\nskip = \"one router is enough\"\n",
    )?;
    let report = dir.path().join("report");
    let child = std::process::Command::new(binary())
        .args(["run", &file.to_string_lossy(), "--report", &report.to_string_lossy()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // The scenario's lab, not the family's preflight before it (which has
    // no router, and a pptpd of its own that must not be the one killed).
    let Some((id, _)) = lab_of(child.id(), "hosts/router/log/nat.log") else {
        return Err("the run did not start a lab with a router within 20 s".into());
    };
    // The tunnel is up once the wait step runs; then kill pptpd.
    let server_ns = std::fs::metadata(netns::netns_path(&id.netns_name("server")))?.ino();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut killed = false;
    while !killed && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        for p in std::fs::read_dir("/proc")?.flatten() {
            let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let in_server = std::fs::metadata(p.path().join("ns/net")).is_ok_and(|m| m.ino() == server_ns);
            let pppd_up = std::fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.trim() == "pptpd");
            if in_server && pppd_up && cmd.split(|b| *b == 0).any(|a| a.ends_with(b"pptpd")) {
                let pid: i32 = p.file_name().to_string_lossy().parse()?;
                let has_link =
                    std::fs::read_to_string(format!("/proc/{pid}/net/dev")).is_ok_and(|d| d.contains("ppp0"));
                if has_link {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
                    killed = true;
                    break;
                }
            }
        }
    }
    let out = child.wait_with_output()?;
    if !killed {
        return Err("pptpd was never seen with a link to kill".into());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Err(format!("the run passed although pptpd died: {stderr}").into());
    }
    let json = std::fs::read_to_string(report.join("report.json"))?;
    for needle in ["host 'server'", "pptpd exited during the scenario", "last lines of"] {
        if !json.contains(needle) {
            return Err(format!("the report should say {needle:?}: {json}").into());
        }
    }
    let parsed: serde_json::Value = serde_json::from_str(&json)?;
    for kept in parsed["outcomes"].as_array().into_iter().flatten().filter_map(|o| o["kept"].as_str()) {
        let _ = std::fs::remove_dir_all(kept);
    }
    Ok(())
}

/// `vpn-passthrough run` interrupted with SIGINT (Ctrl-C) while a scenario
/// is under way: the process ends, and its lab is gone — namespaces, run
/// record and every program.
fn interrupted() -> TestResult {
    use std::time::{Duration, Instant};
    use vpn_passthrough::lab::{netns, runs};
    let report = tempfile::tempdir()?;
    let file = scenario::default_dir().join("pptp/two-clients-same-server.toml");
    let mut child = std::process::Command::new(binary())
        .args(["run", &file.to_string_lossy(), "--filter", "rust-off", "--jobs", "1", "--report"])
        .arg(report.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    // Wait until the scenario's lab exists (it has a router; the family's
    // preflight before it has none) and a client is dialling (the router,
    // pptpd and pptp all run).
    let dialling = lab_of(pid, "hosts/router/log/nat.log").filter(|(_, dir)| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if dir.join("hosts/c1/log/pptp.log").is_file() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let Some((id, dir)) = dialling else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the run did not start a lab with a dialling client within 20 s".into());
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("the run did not end within 20 s of SIGINT".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.success() {
        return Err("an interrupted run exited 0".into());
    }
    let left: Vec<String> = netns::list_names().into_iter().filter(|n| n.starts_with(&id.prefix())).collect();
    if !left.is_empty() {
        return Err(format!("namespaces left after SIGINT: {left:?}").into());
    }
    if std::path::Path::new(runs::RUNS_DIR).join(id.as_str()).exists() {
        return Err(format!("the run record of {id} is left").into());
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
