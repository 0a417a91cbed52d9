//! The `vpn-passthrough` command: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use vpn_passthrough::bench::{self, Layout};
use vpn_passthrough::lab::{Lab, LabError, Topology};
use vpn_passthrough::nat::Profile;
use vpn_passthrough::scenario::early::Pace;
use vpn_passthrough::{doctor, prereq};

/// Test harness and conformance suite for VPN passthrough on NAT routers.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check what a run needs (privileges, kernel features, VPN daemons) and
    /// print the command that fixes anything missing.
    Doctor,
    /// Build and inspect labs.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Measure the suite's machinery against references, in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the Rust NAT on two existing interfaces of this namespace until
    /// SIGTERM or SIGINT. It owns the addresses it is given: the kernel should
    /// have none on these interfaces and forward nothing. SIGUSR1 prints the
    /// mapping table and counters as JSON on stderr; `nat-dump` reads the
    /// same from the control socket.
    Nat(NatArgs),
    /// Print a running NAT's mapping table and counters (JSON) from its
    /// control socket.
    NatDump {
        /// The control socket of the NAT.
        #[arg(long, default_value = DEFAULT_CONTROL)]
        control: PathBuf,
    },
    /// Traffic tools for lab hosts: a reflector that tells senders what
    /// address and port it saw, the asking side, a UDP round-trip timer.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Scripted VPN peers for lab hosts: raw ESP flows, a hostile WAN host,
    /// an L2TP LNS that answers from a new port.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Play scenario files against a router under test, print the matrix
    /// (family × case × mode or router), write the report. Exits 1 when an
    /// expectation is not met.
    Run(RunArgs),
    /// List the scenarios and the test each one becomes per router.
    List {
        /// Scenario files or directories (default: scenarios/).
        paths: Vec<PathBuf>,
    },
    /// Show a scenario: its story, what each router is expected to do, its
    /// lab drawn.
    Show {
        /// A scenario file, or its name (`pptp::same-call-id`).
        scenario: String,
    },
    /// Measure a router's NAT behaviour end to end (mapping, filtering,
    /// port preservation and parity, hairpinning, TCP simultaneous open,
    /// ICMP errors, fragments, idle timeouts of UDP, TCP, ICMP, GRE and ESP)
    /// and say what each value means for VPNs. Exits 1 when
    /// `--check` finds the Rust NAT measuring other than its profile, 2 when
    /// the lab could not measure.
    Behaviour(BehaviourArgs),
    /// Compare two runs' reports: regressions (pass or xfail in the first,
    /// FAIL or ERROR in the second) first, then fixes, other changes, and
    /// the router's behaviour values that moved. Exits 1 when there is a
    /// regression, 2 when a report cannot be read.
    Compare {
        /// The first run's report.json.
        a: PathBuf,
        /// The second run's report.json.
        b: PathBuf,
        /// Also write the comparison as a page here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario files or directories (default: scenarios/).
    paths: Vec<PathBuf>,
    /// The router under test: `rust` (our NAT in every mode a file
    /// lists), `linux` (the kernel's NAT), `both`, or `external` (a real
    /// router wired to --lan-port and --wan-port).
    #[arg(long, value_enum, default_value_t = RouterArg::Rust)]
    router: RouterArg,
    #[command(flatten)]
    external: ExternalArgs,
    /// Only scenarios whose name (`family::case::router`) contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Scenarios played at once (each has its own lab; most of their time
    /// is spent waiting on daemons and timeouts, so more than cores).
    /// Default: 16 per core, at most one per 256 MiB of available memory.
    #[arg(long)]
    jobs: Option<usize>,
    /// What a verdict is about: `vpn` (tunnels up, traffic delivered,
    /// nothing misdelivered or let in; what the router did to ports, Call
    /// IDs and counters is reported as observed behaviour) or `exact`
    /// (everything the file expects). Default: `vpn` for an external
    /// router, `exact` for the suite's own. A file's own `[expect.external]`
    /// block is always judged exact.
    #[arg(long, value_enum)]
    judge: Option<vpn_passthrough::scenario::observed::Judge>,
    /// Wait for every client to give up (or the connect timeout) before a
    /// tunnel is down, instead of judging a router that blocks from the
    /// captures as soon as they prove it (a few seconds sooner per blocked
    /// run; the verdicts are the same).
    #[arg(long)]
    slow: bool,
    /// The report directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// A name for this run in every report (a firmware version, say).
    #[arg(long)]
    label: Option<String>,
    /// Measure each router's NAT behaviour first (as `behaviour` does) and
    /// put the table in the report. On by default for an external router.
    #[arg(long)]
    behaviour: bool,
    /// Do not measure NAT behaviour, even for an external router.
    #[arg(long, conflicts_with = "behaviour")]
    no_behaviour: bool,
    /// The longest idle probe of the behaviour measurement, in seconds.
    #[arg(long, default_value_t = 60)]
    budget_s: u64,
    /// Real-world timeouts in the behaviour measurement: probe up to 2 h 10 min.
    #[arg(long, conflicts_with = "budget_s")]
    long: bool,
    /// Play each run this many times: the matrix shows a run's worst
    /// outcome, and runs whose outcomes differed as `flaky`, each with a
    /// line saying how often each outcome came.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
}

/// How the suite reaches an external router.
#[derive(clap::Args)]
struct ExternalArgs {
    /// External router: the NIC wired to its LAN (joined to the clients'
    /// switch for the run, given back after).
    #[arg(long, required_if_eq("router", "external"))]
    lan_port: Option<String>,
    /// External router: the NIC wired to its WAN (joined to the servers'
    /// switch).
    #[arg(long, required_if_eq("router", "external"))]
    wan_port: Option<String>,
    /// External router: `dhcp` (its DHCP server gives the clients their
    /// addresses, and its LAN address is the lease's router option) or its
    /// LAN address and prefix, set by hand (clients get addresses in it
    /// from .10 up and use it as their gateway).
    #[arg(long, default_value = "dhcp", value_name = "dhcp|ADDR/LEN")]
    lan: vpn_passthrough::router::Addressing,
    /// External router: `dhcp` (the suite's DHCP server on its WAN hands it
    /// 198.51.100.1/24) or its WAN address and prefix, set by hand. Servers
    /// get addresses beside it from .2 up.
    #[arg(long, default_value = "dhcp", value_name = "dhcp|ADDR/LEN")]
    wan: vpn_passthrough::router::Addressing,
}

impl ExternalArgs {
    fn router(&self) -> vpn_passthrough::router::ExternalRouter {
        vpn_passthrough::router::ExternalRouter {
            lan_port: self.lan_port.clone().unwrap_or_default(),
            wan_port: self.wan_port.clone().unwrap_or_default(),
            lan: self.lan,
            wan: self.wan,
        }
    }
}

#[derive(clap::Args)]
struct BehaviourArgs {
    /// The router: `rust` (with --profile), `linux`, or `external` (wired
    /// to --lan-port and --wan-port).
    #[arg(long, value_enum, default_value_t = RouterArg::Rust)]
    router: RouterArg,
    /// The Rust NAT's profile: a preset or a TOML file.
    #[arg(long, default_value = "default")]
    profile: String,
    #[command(flatten)]
    external: ExternalArgs,
    /// The longest an idle probe waits, in seconds (0: timeouts are not
    /// measured). Every timeout is probed at once, so this is about how
    /// long the measurement takes.
    #[arg(long, default_value_t = 60)]
    budget_s: u64,
    /// How many waits below the budget (the resolution is budget / steps;
    /// default 40, at most 256).
    #[arg(long)]
    steps: Option<usize>,
    /// Real-world timeouts: probe up to 2 h 10 min.
    #[arg(long, conflicts_with_all = ["budget_s", "steps"])]
    long: bool,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
    /// With the Rust NAT: compare every value with the profile's and exit 1
    /// on a difference.
    #[arg(long)]
    check: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum RouterArg {
    Rust,
    Linux,
    Both,
    External,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Answer ESP SPI requests on UDP 500 and echo ESP back after a delay.
    EspServer {
        /// How long to hold each echo, ms: one value, or one per client
        /// separated by commas (the Nth for the client whose IKE initiator
        /// SPI's low byte is N; the last past the list).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        delay_ms: Vec<u64>,
        /// Hold every echo until this many clients have sent ESP (at most
        /// 2 s past its delay).
        #[arg(long, default_value_t = 0)]
        hold_for: usize,
    },
    /// Ask a server for SPIs on UDP 500, then send ESP and count echoes.
    /// Exits 0 when every packet came back, 5 when some did not.
    Esp {
        /// The ESP server.
        server: std::net::Ipv4Addr,
        /// Our SPI (the server sends to it).
        #[arg(long, value_parser = parse_u32)]
        spi: u32,
        /// The IKE initiator SPI.
        #[arg(long, value_parser = parse_u64, default_value = "1")]
        ike_spi: u64,
        /// ESP packets to send.
        #[arg(long, default_value_t = 3)]
        count: u32,
        /// How long to wait for each echo.
        #[arg(long, default_value_t = 2000)]
        wait_ms: u64,
        /// Send the packets this many ms apart, so the flow lasts about
        /// count × interval (0: each once the previous one was echoed).
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        /// Rekey (new SPIs both ways) after this many packets; 0: never.
        #[arg(long, default_value_t = 0)]
        rekey_after: u32,
    },
    /// Send spoofed GRE, ESP, L2TP, IKE, NAT-T, WireGuard and OpenVPN packets at an address.
    Hostile {
        /// The NAT's public address.
        target: std::net::Ipv4Addr,
        /// Rounds of ten packets (and three more per port of `--ports`).
        #[arg(long, default_value_t = 64)]
        rounds: u16,
        /// Public UDP ports the NAT gave its clients (comma-separated): each
        /// round also sends WireGuard data, an OpenVPN hard reset and
        /// ESP-in-UDP to each, from this host's address.
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
    },
    /// An L2TP LNS that answers each SCCRQ from a new UDP port (or from
    /// 1701), optionally always to one port of the client, and keeps each
    /// tunnel up (ZLB acks, never StopCCN; no calls).
    L2tpLns {
        /// The port of the first tunnel's answers (1701: the main socket).
        #[arg(long, default_value_t = 40000)]
        first_port: u16,
        /// Send answers to this port, whatever port the SCCRQ came from.
        #[arg(long)]
        to_port: Option<u16>,
    },
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("'{s}' is not a 32-bit number: {e}"))
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("'{s}' is not a 64-bit number: {e}"))
}

#[derive(Subcommand)]
enum ProbeCommand {
    /// Answer every UDP datagram and TCP connection with `seen ADDR:PORT`.
    Serve {
        /// UDP port to serve.
        #[arg(long)]
        udp: Option<u16>,
        /// TCP port to serve.
        #[arg(long)]
        tcp: Option<u16>,
        /// First ask this reflector from the UDP port, opening a NAT mapping
        /// for it (prints `punched seen ADDR:PORT`). Given again, the later
        /// ones are sent one datagram each, answered or not, so that a
        /// filtering NAT lets them in.
        #[arg(long, value_name = "ADDR:PORT")]
        punch: Vec<std::net::SocketAddrV4>,
        /// Also answer ICMP echo requests that say `later MS`, MS later (from
        /// a raw socket: turn the host's own echo replies off).
        #[arg(long)]
        icmp: bool,
        /// Also answer plain GRE packets that say `later MS`, MS later.
        #[arg(long)]
        gre: bool,
        /// Also answer ESP packets that say `later MS`, MS later, under the
        /// asking SPI with its top bit flipped.
        #[arg(long)]
        esp: bool,
    },
    /// Ask a reflector what it saw of us; prints `seen ADDR:PORT`. Exits 2
    /// on timeout, 3 when refused (ICMP port unreachable or TCP reset).
    Ask {
        /// Ask over UDP (default) or TCP.
        #[arg(long)]
        tcp: bool,
        /// The reflector.
        target: std::net::SocketAddrV4,
        /// Local port to send from (0: any).
        #[arg(long, default_value_t = 0)]
        from: u16,
        /// How long to wait for the answer.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Pad the question to this many bytes (UDP; past the MTU it
        /// leaves as fragments).
        #[arg(long, default_value_t = 0)]
        size: usize,
        /// Ask for an answer of this many bytes (UDP).
        #[arg(long, default_value_t = 0)]
        back: usize,
    },
    /// Learn how long a NAT keeps an idle flow: one flow per wait asks the
    /// reflector to answer after that wait, all at once; prints
    /// `idle MS alive`, `idle MS dead` or `idle MS not-opened` for each.
    Idle {
        /// The reflector.
        target: std::net::SocketAddrV4,
        /// The flow: udp, tcp (established), tcp-half-closed (FIN sent),
        /// icmp (an echo request), gre or esp (each answered once before
        /// its wait; their waits run one after another, as flows without
        /// ports between two hosts may share a mapping).
        #[arg(long, default_value = "udp")]
        flow: String,
        /// The waits, in milliseconds.
        #[arg(long, value_delimiter = ',', required = true)]
        wait_ms: Vec<u64>,
        /// How long after its wait an answer may still come.
        #[arg(long, default_value_t = 1000)]
        grace_ms: u64,
    },
    /// Move bytes over TCP to a reflector (or from it, with --reverse);
    /// prints how many arrived.
    Transfer {
        /// The reflector's TCP port.
        target: std::net::SocketAddrV4,
        /// How many bytes.
        #[arg(long, default_value_t = 1_000_000)]
        bytes: u64,
        /// Have the reflector send.
        #[arg(long)]
        reverse: bool,
    },
    /// Time UDP round trips to a reflector; prints p50 and p99 in µs.
    Rtt {
        /// The reflector.
        target: std::net::SocketAddrV4,
        /// Round trips.
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
}

/// Where `nat` listens for `nat-dump` unless told otherwise.
const DEFAULT_CONTROL: &str = "/run/vpn-passthrough-nat.sock";

#[derive(clap::Args)]
struct NatArgs {
    /// The LAN (private) interface.
    #[arg(long, value_name = "IFACE")]
    lan: String,
    /// The NAT's LAN address with the LAN prefix, e.g. 192.168.1.1/24.
    #[arg(long, value_name = "ADDR/LEN")]
    lan_addr: ipnet::Ipv4Net,
    /// The WAN (public) interface.
    #[arg(long, value_name = "IFACE")]
    wan: String,
    /// The NAT's public address with the WAN prefix, e.g. 198.51.100.1/24.
    #[arg(long, value_name = "ADDR/LEN")]
    wan_addr: ipnet::Ipv4Net,
    /// Next hop for WAN destinations outside the WAN prefix.
    #[arg(long, value_name = "ADDR")]
    gateway: Option<std::net::Ipv4Addr>,
    /// A preset (default, full-cone, restricted-cone, port-restricted-cone,
    /// symmetric, passthrough-off, naive, full, linux-like, port-randomising,
    /// fragment-dropping, soc-esp-tracker, bad-gre-checksum,
    /// first-packet-dropping) or a TOML profile file.
    #[arg(long, value_name = "FILE|NAME", default_value = "default")]
    profile: String,
    /// Where to listen for `nat-dump`: a Unix socket, mode 0600. A stale
    /// socket there is replaced; anything else makes the NAT refuse to start.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    control: PathBuf,
    /// No control socket (`nat-dump` cannot ask; SIGUSR1 still prints the
    /// dump on stderr).
    #[arg(long, conflicts_with = "control")]
    no_control: bool,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build a client — router — server lab, show it, ping across it (IPv4
    /// and IPv6), tear it down.
    Demo {
        /// Keep the run directory (configs, logs) after teardown.
        #[arg(long)]
        keep: bool,
    },
    /// Build a lab and keep it up until SIGINT or SIGTERM, for poking around
    /// with `ip netns exec`.
    Up {
        /// A scenario (file or name, `pptp::same-call-id`): its lab with the
        /// router under test running, no VPN endpoints started.
        scenario: Option<String>,
        /// A topology file (TOML, see scenarios/topologies/); the demo
        /// topology when neither is given.
        #[arg(long, conflicts_with = "scenario")]
        topology: Option<PathBuf>,
        /// With a scenario: the router, `rust` or `linux`.
        #[arg(long, value_enum, default_value_t = RouterArg::Rust)]
        router: RouterArg,
        /// With a scenario and the Rust NAT: the passthrough mode.
        #[arg(long, default_value = "full")]
        mode: String,
    },
    /// Tear down labs that `lab up` keeps (all of them, or the run given).
    Down {
        /// A run id, as `lab up` printed it.
        run: Option<String>,
    },
    /// Remove what runs whose process is gone left behind: namespaces,
    /// interfaces, processes, run records.
    Sweep,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Build and tear down a lab with the engine and with an `ip` command
    /// script; print both times and the ratio.
    Lab {
        /// Number of hosts.
        #[arg(long, default_value_t = 50)]
        hosts: usize,
        /// Topology shape.
        #[arg(long, value_enum, default_value_t = ShapeArg::Star)]
        shape: ShapeArg,
        /// Rounds (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Move traffic through the Rust NAT and the Linux NAT in the same lab:
    /// TCP throughput (1 and 4 streams), UDP 64-byte packet rate, round
    /// trips; print both and the ratios.
    Nat {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Rounds per router (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Put tunnels of PPTP, L2TP, IKEv2 with NAT-T and WireGuard (as many of
    /// each) through one Rust NAT and then one Linux NAT, every client
    /// dialling without waiting for one another: time to build the lab, time until every tunnel is
    /// up, the router's memory, echoes per tunnel; both and the ratios.
    Scale {
        /// Clients of each family (4 families: 50 makes 200 tunnels).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=bench::scale::MAX_PER_FAMILY as i64))]
        per_family: u16,
    },
    /// Time the NAT core alone: ns per translated packet, memory per
    /// mapping (resident memory here; `cargo bench --bench nat` counts
    /// allocations exactly).
    NatCore {
        /// Mappings to make for the memory figure.
        #[arg(long, default_value_t = 1_000_000)]
        mappings: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ShapeArg {
    Star,
    Chain,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: lab hosts send this to log files,
        // which end up in reports.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => return doctor_command(),
        Command::Lab(LabCommand::Demo { keep }) => demo(keep),
        Command::Lab(LabCommand::Up { scenario: Some(name), router, mode, .. }) => up_scenario(&name, router, &mode),
        Command::Lab(LabCommand::Up { topology, .. }) => up(topology),
        Command::Lab(LabCommand::Down { run }) => down(run.as_deref()),
        Command::Lab(LabCommand::Sweep) => sweep(),
        Command::Nat(args) => nat(args),
        Command::NatDump { control } => nat_dump(&control),
        Command::Probe(cmd) => return probe(cmd),
        Command::Peer(cmd) => return peer(cmd),
        Command::Run(args) => return run_scenarios(args),
        Command::List { paths } => list(paths),
        Command::Show { scenario } => show(&scenario),
        Command::Compare { a, b, html } => return compare_runs(&a, &b, html.as_deref()),
        Command::Behaviour(args) => return behaviour(args),
        Command::Bench(BenchCommand::Lab { hosts, shape, rounds }) => {
            let shape = match shape {
                ShapeArg::Star => Layout::Star,
                ShapeArg::Chain => Layout::Chain,
            };
            bench::run(shape, hosts, rounds).map(|r| print!("{}", r.render()))
        }
        Command::Bench(BenchCommand::Nat { seconds, rounds }) => vpn_passthrough::lab::own_binary()
            .and_then(|bin| bench::nat::run(seconds, rounds, bin))
            .map(|r| print!("{}", r.render())),
        Command::Bench(BenchCommand::Scale { per_family }) => vpn_passthrough::lab::own_binary()
            .and_then(|bin| bench::scale::run(usize::from(per_family), bin))
            .map(|r| print!("{}", r.render())),
        Command::Bench(BenchCommand::NatCore { mappings }) => {
            let rss = bench::core::resident_bytes;
            bench::core::run(mappings, Some(&rss)).map(|r| print!("{}", r.render())).map_err(LabError::Input)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doctor_command() -> ExitCode {
    println!("vpn-passthrough doctor");
    let checks = doctor::run_all();
    let present = match doctor::print_report(&checks, &mut std::io::stdout()) {
        Ok(all) => all,
        Err(_) => return ExitCode::FAILURE,
    };
    // The preflight needs the lab's privileges; without them the report
    // above already says so.
    let works =
        prereq::require_lab_privileges().is_err() || preflight_report("preflight (each family on a direct link)");
    match (present, works) {
        (true, true) => {
            println!("everything a run needs is here, and every VPN family works in the lab");
            ExitCode::SUCCESS
        }
        (false, _) => {
            println!("some prerequisites are missing: run the fix commands above (as root)");
            ExitCode::FAILURE
        }
        (true, false) => {
            println!("a VPN family does not work in the lab: see its line above");
            ExitCode::FAILURE
        }
    }
}

/// Runs every family's preflight at once and prints a line per family and
/// the wall time; returns whether all work.
fn preflight_report(title: &str) -> bool {
    use vpn_passthrough::scenario::preflight;
    let (reports, seconds) = preflight::run_all();
    println!("{title}, {seconds:.1} s:");
    for r in &reports {
        println!("  {}", r.line());
    }
    reports.iter().all(|r| r.failure.is_none())
}

/// client — router — server, IPv4 and IPv6 (scenarios/topologies/three-hosts.toml).
fn demo_topology() -> Result<Topology, LabError> {
    Topology::from_toml(include_str!("../scenarios/topologies/three-hosts.toml")).map_err(LabError::Input)
}

fn demo(keep: bool) -> Result<(), LabError> {
    prereq::require_tool("ping")?;
    let start = Instant::now();
    let lab = Lab::build(&demo_topology()?)?;
    if keep {
        lab.keep_dir();
    }
    println!("built in {:.1} ms", start.elapsed().as_secs_f64() * 1000.0);
    print!("{lab}");
    let client = lab.host("client")?;
    let server = lab.host("server")?;
    for target in [server.ipv4(), server.ipv6()].into_iter().flatten() {
        let out = client.ping(target)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rtt = text.lines().find(|l| l.contains("time=")).unwrap_or("reply received").trim();
        println!("ping client -> server {target}: {rtt}");
    }
    let id = lab.run_id();
    let namespaces = lab.netns_names().len();
    let start = Instant::now();
    lab.teardown()?;
    println!("lab {id} torn down in {:.1} ms: {namespaces} namespaces removed", start.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}

fn up(topology: Option<PathBuf>) -> Result<(), LabError> {
    let topology = match topology {
        Some(path) => Topology::from_toml_file(&path).map_err(LabError::Input)?,
        None => demo_topology()?,
    };
    let lab = Lab::build(&topology)?;
    print!("{lab}");
    println!("lab {} is up; SIGINT or SIGTERM tears it down", lab.run_id());
    // Teardown on a signal runs on the lab's signal thread, which then ends
    // the process; this thread only waits.
    loop {
        std::thread::park();
    }
}

fn scenario_paths(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    if !paths.is_empty() {
        return paths;
    }
    let here = PathBuf::from("scenarios");
    vec![if here.is_dir() { here } else { vpn_passthrough::scenario::default_dir() }]
}

fn behaviour(args: BehaviourArgs) -> ExitCode {
    use vpn_passthrough::nat_behaviour::{self, Budget, Measured};
    use vpn_passthrough::router::{self, RouterUnderTest};
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    };
    if let Err(e) = prereq::require_lab_privileges() {
        return fail(e.to_string());
    }
    let mut profile = None;
    let r: Box<dyn RouterUnderTest> = match args.router {
        RouterArg::Rust => match Profile::load(&args.profile) {
            Ok(p) => {
                profile = Some(p.clone());
                match router::RustNat::new(p) {
                    Ok(r) => Box::new(r),
                    Err(e) => return fail(e.to_string()),
                }
            }
            Err(e) => return fail(e),
        },
        RouterArg::Linux => Box::new(router::LinuxNat { pptp_helper: true }),
        RouterArg::Both => return fail("measure one router at a time: --router rust, linux or external".into()),
        RouterArg::External => Box::new(args.external.router()),
    };
    if args.check && profile.is_none() {
        return fail("--check compares with a Rust NAT profile: use it with --router rust".into());
    }
    let budget = Budget::asked(args.long, args.budget_s, args.steps);
    let started = Instant::now();
    let measured = match nat_behaviour::measure_router(r.as_ref(), budget) {
        Ok(m) => m,
        Err(e) => {
            // A lab error, as `run` exits.
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&measured).unwrap_or_default());
    } else {
        print!("{}", measured.text());
        println!("in {:.0} s", started.elapsed().as_secs_f64());
    }
    if let (true, Some(p)) = (args.check, &profile) {
        let off = measured.disagreements(&Measured::expected(p));
        for line in &off {
            eprintln!("differs from the profile: {line}");
        }
        if !off.is_empty() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn run_scenarios(args: RunArgs) -> ExitCode {
    use vpn_passthrough::scenario::{self, Status, report, suite};
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    };
    let scenarios = match scenario::load(&scenario_paths(args.paths)) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Err(e) = prereq::require_lab_privileges() {
        return fail(e.to_string());
    }
    let binary = match vpn_passthrough::lab::own_binary() {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    let routers = match args.router {
        RouterArg::Rust => suite::Routers::Rust,
        RouterArg::Linux => suite::Routers::Linux,
        RouterArg::Both => suite::Routers::Both,
        RouterArg::External => suite::Routers::External(args.external.router()),
    };
    let work = suite::work(&scenarios, &routers, args.filter.as_deref());
    {
        use vpn_passthrough::scenario::preflight;
        let started = Instant::now();
        let mut items: Vec<preflight::Item> =
            work.iter().flat_map(|(s, _)| preflight::Item::of(s.file.family)).collect();
        items.dedup();
        items = preflight::Item::all().into_iter().filter(|i| items.contains(i)).collect();
        let reports = preflight::run(&items);
        eprintln!("preflight of {} families on a direct link: {:.1} s", reports.len(), started.elapsed().as_secs_f64());
        for r in reports.iter().filter(|r| r.failure.is_some()) {
            eprintln!("  {}", r.line());
        }
    }
    let mut behaviour = Vec::new();
    if args.behaviour || (routers.measures_behaviour() && !args.no_behaviour) {
        use vpn_passthrough::nat_behaviour::{self, Budget};
        let budget = Budget::asked(args.long, args.budget_s, None);
        for r in routers.behaviour_routers(&binary) {
            let started = Instant::now();
            match nat_behaviour::measure_router(r.as_ref(), budget) {
                Ok(m) => {
                    eprint!("{}", m.text());
                    eprintln!("measured in {:.0} s", started.elapsed().as_secs_f64());
                    behaviour.push(m);
                }
                Err(e) => eprintln!("NAT behaviour of {}: not measured: {e}", r.name()),
            }
        }
    }
    let judge = args.judge.unwrap_or_else(|| routers.default_judge());
    let jobs = args.jobs.unwrap_or_else(suite::default_jobs);
    eprintln!(
        "playing {} runs{} against {}, {} at a time, judged {}{}",
        work.len(),
        if args.repeat > 1 { format!(" {} times each", args.repeat) } else { String::new() },
        routers.name(),
        routers.jobs(jobs),
        match judge {
            vpn_passthrough::scenario::observed::Judge::Vpn => "on whether the VPNs work",
            vpn_passthrough::scenario::observed::Judge::Exact => "on everything the files expect",
        },
        if args.slow { ", waiting for every client to give up" } else { "" }
    );
    let started = Instant::now();
    let progress = |n: usize, total: usize, o: &scenario::Outcome| {
        let width = 30;
        let filled = n * width / total.max(1);
        eprintln!(
            "[{}{}] {n:>3}/{total} {:>5}  {} ({:.1} s)",
            "#".repeat(filled),
            " ".repeat(width - filled),
            o.status.word(),
            o.name,
            o.seconds
        );
        if let Some(line) = o.summary() {
            eprintln!("      {line}");
        }
        for line in o.observed_behaviour() {
            eprintln!("      observed: {line}");
        }
    };
    let pace = if args.slow { Pace::Slow } else { Pace::Early };
    let (outcomes, flaky) = suite::run_repeated(
        &work,
        &routers,
        &binary,
        jobs,
        suite::How { judge, pace },
        args.repeat as usize,
        &progress,
    );
    print!("{}", report::matrix_text(&outcomes, &flaky));
    println!("in {:.0} s", started.elapsed().as_secs_f64());
    let dir = args.report.unwrap_or_else(suite::default_report_dir);
    match report::write(&dir, &outcomes, &flaky, &routers.name(), args.label.as_deref(), &behaviour) {
        Ok(()) => println!("report: {}", dir.join("index.html").display()),
        Err(e) => return fail(e),
    }
    // 1: the router failed; 2: only lab errors, nothing judged against it.
    if outcomes.iter().any(|o| o.status == Status::Fail) {
        ExitCode::FAILURE
    } else if outcomes.iter().any(|o| o.status == Status::Error) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn compare_runs(a: &std::path::Path, b: &std::path::Path, html: Option<&std::path::Path>) -> ExitCode {
    use vpn_passthrough::scenario::compare::{RunReport, compare};
    let (ra, rb) = match (RunReport::load(a), RunReport::load(b)) {
        (Ok(ra), Ok(rb)) => (ra, rb),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let c = compare(&ra, &rb);
    print!("{}", c.text());
    if let Some(path) = html {
        if let Err(e) = std::fs::write(path, c.html()) {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("page: {}", path.display());
    }
    if c.regressions.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn list(paths: Vec<PathBuf>) -> Result<(), LabError> {
    let scenarios = vpn_passthrough::scenario::load(&scenario_paths(paths)).map_err(LabError::Input)?;
    for s in &scenarios {
        let targets: Vec<String> = s.targets().iter().map(|t| t.label()).collect();
        println!("{:<45} {}  [{}]", s.id, s.path.display(), targets.join(" "));
    }
    println!("{} scenario files", scenarios.len());
    Ok(())
}

fn show(name: &str) -> Result<(), LabError> {
    let s = find_scenario(name)?;
    print!("{}", vpn_passthrough::scenario::report::describe(&s));
    for t in s.targets() {
        if let Some(e) = s.expectation(t) {
            println!("  {:<12} {}", t.label(), e.summary());
        }
    }
    Ok(())
}

fn find_scenario(name: &str) -> Result<vpn_passthrough::scenario::Scenario, LabError> {
    use vpn_passthrough::scenario;
    let path = PathBuf::from(name);
    if path.is_file() {
        return scenario::load_file(&path).map_err(LabError::Input);
    }
    let all = scenario::load(&scenario_paths(Vec::new())).map_err(LabError::Input)?;
    let known: Vec<String> = all.iter().map(|s| s.id.clone()).collect();
    all.into_iter()
        .find(|s| s.id == name)
        .ok_or_else(|| LabError::Input(format!("no scenario {name}: give a file or one of {}", known.join(", "))))
}

/// Builds a scenario's lab with its router running and keeps it, printing
/// a line per host to paste into a shell.
fn up_scenario(name: &str, router: RouterArg, mode: &str) -> Result<(), LabError> {
    use vpn_passthrough::lab::own_binary;
    use vpn_passthrough::router::NatLab;
    use vpn_passthrough::scenario::{Mode, Target, suite};
    let s = find_scenario(name)?;
    let target = match router {
        RouterArg::Linux => Target::Linux,
        RouterArg::Rust => Target::Rust(
            Mode::ALL
                .into_iter()
                .find(|m| m.name() == mode)
                .ok_or_else(|| LabError::Input(format!("--mode {mode}: allowed: off, naive, full")))?,
        ),
        _ => return Err(LabError::Input("lab up plays the rust or linux router".into())),
    };
    let router = suite::router_for(&s, target, &suite::Routers::Both, &own_binary()?).map_err(LabError::Input)?;
    let nl = NatLab::build_shaped(router.as_ref(), &s.file.topology.shape(), |t| t)?;
    print!("{}", nl.lab);
    println!("# {} with {}; paste into a shell:", s.id, router.name());
    for name in nl.lab.netns_names() {
        let host = name.split_once('-').map(|(_, h)| h).unwrap_or(&name).to_uppercase().replace('-', "_");
        println!("export {host}=\"ip netns exec {name}\"");
    }
    println!(
        "# then e.g. $C1 ping {}; `vpn-passthrough lab down {}` (or SIGINT) tears it down",
        nl.shape.server_addr(1),
        nl.lab.run_id()
    );
    loop {
        std::thread::park();
    }
}

/// Sends SIGTERM to the `lab up` processes that own runs (or `run`), and
/// waits until their records are gone.
fn down(run: Option<&str>) -> Result<(), LabError> {
    use vpn_passthrough::lab::RunId;
    use vpn_passthrough::lab::runs::{RUNS_DIR, RunRecord};
    prereq::require_lab_privileges()?;
    let mut stopped = Vec::new();
    for entry in std::fs::read_dir(RUNS_DIR).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if run.is_some_and(|r| r != file) {
            continue;
        }
        let Some(id) = RunId::parse(&file) else { continue };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let Some(record) = RunRecord::parse(id, &text) else { continue };
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", record.pid)).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_up = args.windows(2).any(|w| w[0] == "lab" && w[1] == "up");
        if !record.owner_alive() || !is_up {
            continue;
        }
        let pid = nix::unistd::Pid::from_raw(record.pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| LabError::io(format!("stopping lab up (pid {})", record.pid), e.into()))?;
        stopped.push(entry.path());
        println!("lab {file}: stopping (pid {})", record.pid);
    }
    if stopped.is_empty() {
        println!(
            "{}",
            match run {
                Some(r) => format!("no lab up owns run {r}"),
                None => "no lab up is running".into(),
            }
        );
        return Ok(());
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    while stopped.iter().any(|p| p.exists()) {
        if Instant::now() > deadline {
            return Err(LabError::Input("lab up did not finish tearing down within 15 s; try `lab sweep`".into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("torn down");
    Ok(())
}

fn sweep() -> Result<(), LabError> {
    prereq::require_lab_privileges()?;
    let r = vpn_passthrough::lab::sweep()?;
    if r.is_empty() {
        println!("nothing to sweep");
        return Ok(());
    }
    println!(
        "swept runs {}: {} namespaces, {} interfaces, {} processes",
        r.runs.join(", "),
        r.namespaces.len(),
        r.links.len(),
        r.processes
    );
    for d in r.kept_dirs {
        println!("  their run directory is still at {}", d.display());
    }
    Ok(())
}

fn nat(args: NatArgs) -> Result<(), LabError> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use vpn_passthrough::nat::{Config, Profile, run};

    prereq::require_packet_sockets()?;
    let profile = Profile::load(&args.profile).map_err(LabError::Input)?;
    for iface in [&args.lan, &args.wan] {
        warn_if_kernel_routes(iface);
    }
    let cfg = run::RunConfig {
        lan_if: args.lan,
        wan_if: args.wan,
        nat: Config {
            lan: args.lan_addr,
            wan: args.wan_addr,
            gateway: args.gateway,
            profile,
            seed: vpn_passthrough::rng::Rng::from_entropy().next_u64(),
        },
        control: (!args.no_control).then_some(args.control),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let dump = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| LabError::io("installing signal handlers", e))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, dump.clone())
        .map_err(|e| LabError::io("installing signal handlers", e))?;
    run::run(cfg, stop, dump).map_err(|e| LabError::io("nat", e))
}

/// The NAT owns its addresses: kernel addresses or forwarding on its
/// interfaces would answer and forward beside it.
fn warn_if_kernel_routes(iface: &str) {
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1") {
        eprintln!(
            "warning: kernel forwarding is on in this namespace; it forwards beside the NAT (sysctl -w net.ipv4.ip_forward=0)"
        );
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        let has_v4 = addrs
            .filter(|a| a.interface_name == iface)
            .any(|a| a.address.as_ref().and_then(|s| s.as_sockaddr_in()).is_some());
        if has_v4 {
            eprintln!(
                "warning: {iface} has a kernel IPv4 address; the kernel answers beside the NAT (ip -4 addr flush dev {iface})"
            );
        }
    }
}

fn nat_dump(control: &std::path::Path) -> Result<(), LabError> {
    let dump = vpn_passthrough::nat::run::query(control).map_err(|e| LabError::io("asking the NAT", e))?;
    println!("{}", serde_json::to_string_pretty(&dump).unwrap_or_default());
    Ok(())
}

fn probe(cmd: ProbeCommand) -> ExitCode {
    use std::time::Duration;
    use vpn_passthrough::probe::{self, Transport};
    let fail = |code: u8, e: std::io::Error| {
        eprintln!("error: {e}");
        ExitCode::from(code)
    };
    match cmd {
        ProbeCommand::Serve { udp, tcp, punch, icmp, gre, esp } => {
            let raw: Vec<probe::RawProto> =
                [(icmp, probe::RawProto::Icmp), (gre, probe::RawProto::Gre), (esp, probe::RawProto::Esp)]
                    .into_iter()
                    .filter_map(|(on, r)| on.then_some(r))
                    .collect();
            match probe::serve(udp, tcp, &punch, &raw) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
        ProbeCommand::Idle { target, flow, wait_ms, grace_ms } => {
            let flow = match flow.as_str() {
                "udp" => probe::IdleFlow::Udp,
                "tcp" => probe::IdleFlow::Tcp,
                "tcp-half-closed" => probe::IdleFlow::TcpHalfClosed,
                "icmp" => probe::IdleFlow::Raw(probe::RawProto::Icmp),
                "gre" => probe::IdleFlow::Raw(probe::RawProto::Gre),
                "esp" => probe::IdleFlow::Raw(probe::RawProto::Esp),
                other => {
                    eprintln!("error: --flow {other}: expected udp, tcp, tcp-half-closed, icmp, gre or esp");
                    return ExitCode::from(1);
                }
            };
            let waits: Vec<Duration> = wait_ms.iter().map(|&ms| Duration::from_millis(ms)).collect();
            let alive = probe::idle(flow, target, &waits, Duration::from_millis(grace_ms));
            for (ms, alive) in wait_ms.iter().zip(alive) {
                let word = match alive {
                    Some(true) => "alive",
                    Some(false) => "dead",
                    None => "not-opened",
                };
                println!("idle {ms} {word}");
            }
            ExitCode::SUCCESS
        }
        ProbeCommand::Ask { tcp, target, from, timeout_ms, size, back } => {
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let sizes = probe::Sizes { out: size, back };
            match probe::ask(transport, target, from, sizes, Duration::from_millis(timeout_ms)) {
                Ok(seen) => {
                    println!("seen {seen}");
                    ExitCode::SUCCESS
                }
                Err(e) => match probe::Asked::of_error(&e) {
                    Some(probe::Asked::TimedOut) => fail(2, e),
                    Some(probe::Asked::Refused) => fail(3, e),
                    _ => fail(1, e),
                },
            }
        }
        ProbeCommand::Transfer { target, bytes, reverse } => {
            match probe::transfer(target, bytes, reverse, Duration::from_secs(30)) {
                Ok(n) => {
                    println!("{} {n} bytes", if reverse { "received" } else { "delivered" });
                    if n == bytes { ExitCode::SUCCESS } else { ExitCode::from(4) }
                }
                Err(e) => fail(1, e),
            }
        }
        ProbeCommand::Rtt { target, count } => match probe::rtts(target, count, Duration::from_secs(2)) {
            Ok(v) => {
                let us = |p| probe::percentile(&v, p).as_secs_f64() * 1e6;
                println!("rtt p50 {:.1} us p99 {:.1} us over {} round trips", us(50.0), us(99.0), v.len());
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
    }
}

fn peer(cmd: PeerCommand) -> ExitCode {
    use std::time::Duration;
    use vpn_passthrough::vpn::scripted;
    let done = |r: std::io::Result<()>| match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    match cmd {
        PeerCommand::EspServer { delay_ms, hold_for } => {
            let delays: Vec<Duration> = delay_ms.into_iter().map(Duration::from_millis).collect();
            done(scripted::esp_server(&delays, hold_for))
        }
        PeerCommand::Esp { server, spi, ike_spi, count, wait_ms, interval_ms, rekey_after } => {
            let client = scripted::EspClient {
                server,
                ike_spi,
                spi,
                count,
                wait: Duration::from_millis(wait_ms),
                interval: Duration::from_millis(interval_ms),
                rekey_after,
            };
            match client.run() {
                Ok(r) if r.echoed == r.sent => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(5),
                Err(e) => done(Err(e)),
            }
        }
        PeerCommand::Hostile { target, rounds, ports } => done(scripted::hostile(target, rounds, &ports).map(|_| ())),
        PeerCommand::L2tpLns { first_port, to_port } => done(scripted::l2tp_lns_new_port(first_port, to_port)),
    }
}
