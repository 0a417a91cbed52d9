//! Traffic through the Rust NAT and the Linux NAT, in the same lab shape and
//! the same run: TCP bulk throughput (one and four streams), UDP packet rate
//! at 64-byte payloads, and UDP round-trip times. The end hosts keep the
//! kernel's default offloads, as users' hosts do.

use std::fmt::Write as _;
use std::time::Duration;

use crate::lab::{Cmd, LabError, Proto, Result};
use crate::nat::Profile;
use crate::router::{LinuxNat, NatLab, RouterUnderTest, RustNat};

/// Figures of one router.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Router name.
    pub router: String,
    /// TCP, one stream, Gbit/s received.
    pub tcp1_gbps: f64,
    /// TCP, four streams, Gbit/s received.
    pub tcp4_gbps: f64,
    /// UDP 64-byte payloads: packets per second received.
    pub udp64_pps: f64,
    /// UDP 64-byte payloads: percent lost.
    pub udp64_loss: f64,
    /// Round trip p50, microseconds.
    pub rtt_p50_us: f64,
    /// Round trip p99, microseconds.
    pub rtt_p99_us: f64,
}

/// Both routers' figures (medians over the rounds).
#[derive(Debug, Clone)]
pub struct NatBenchReport {
    /// Seconds per measurement.
    pub seconds: u64,
    /// Rounds; each figure is the median.
    pub rounds: usize,
    /// The Rust NAT.
    pub rust: Figures,
    /// The Linux NAT, the reference.
    pub linux: Figures,
}

impl NatBenchReport {
    /// The report as text, with ratios Rust / Linux.
    pub fn render(&self) -> String {
        let (r, l) = (&self.rust, &self.linux);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let mut s = format!(
            "nat benchmark: {} s per measurement, median of {} rounds, end hosts with default offloads\n",
            self.seconds, self.rounds
        );
        let _ = writeln!(s, "  {:<26} {:>12} {:>12} {:>9}", "", "rust-nat", "linux-nat", "rust/linux");
        for (what, a, b, unit) in [
            ("tcp, 1 stream", r.tcp1_gbps, l.tcp1_gbps, "Gbit/s"),
            ("tcp, 4 streams", r.tcp4_gbps, l.tcp4_gbps, "Gbit/s"),
            ("udp 64-byte payload", r.udp64_pps / 1000.0, l.udp64_pps / 1000.0, "kpps"),
        ] {
            let _ = writeln!(s, "  {:<26} {:>8.2} {unit:<6} {:>6.2} {unit:<6} {:>6.2}x", what, a, b, ratio(a, b));
        }
        let _ = writeln!(s, "  {:<26} {:>8.1} %      {:>6.1} %", "udp 64-byte loss", r.udp64_loss, l.udp64_loss);
        for (what, a, b) in
            [("round trip p50", r.rtt_p50_us, l.rtt_p50_us), ("round trip p99", r.rtt_p99_us, l.rtt_p99_us)]
        {
            let _ = writeln!(
                s,
                "  {:<26} {:>8.1} us     {:>6.1} us     {:>6.2}x  (+{:.1} us)",
                what,
                a,
                b,
                ratio(a, b),
                a - b
            );
        }
        let _ = writeln!(
            s,
            "  targets now: rust/linux >= 0.5x on tcp throughput and udp packet rate; the goal after that is parity"
        );
        s
    }
}

/// Measures both routers, `seconds` per measurement, `rounds` times each
/// (alternating), and keeps the medians.
pub fn run(seconds: u64, rounds: usize, binary: std::path::PathBuf) -> Result<NatBenchReport> {
    crate::prereq::require_tool("iperf3")?;
    let rust = RustNat { profile: Profile::default(), binary: binary.clone() };
    let linux = LinuxNat { pptp_helper: true };
    let (mut r, mut l) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        r.push(measure(&rust, seconds, &binary)?);
        l.push(measure(&linux, seconds, &binary)?);
    }
    Ok(NatBenchReport { seconds, rounds: rounds.max(1), rust: median(&r), linux: median(&l) })
}

/// The median of each figure on its own.
fn median(v: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        xs.get(xs.len() / 2).copied().unwrap_or(0.0)
    };
    Figures {
        router: v.first().map(|f| f.router.clone()).unwrap_or_default(),
        tcp1_gbps: m(|f| f.tcp1_gbps),
        tcp4_gbps: m(|f| f.tcp4_gbps),
        udp64_pps: m(|f| f.udp64_pps),
        udp64_loss: m(|f| f.udp64_loss),
        rtt_p50_us: m(|f| f.rtt_p50_us),
        rtt_p99_us: m(|f| f.rtt_p99_us),
    }
}

fn measure(router: &dyn RouterUnderTest, seconds: u64, binary: &std::path::Path) -> Result<Figures> {
    let nl = NatLab::build(router, 1)?;
    let (client, server) = (nl.client(1)?, nl.server()?);
    let iperf = server.spawn(Cmd::argv(&["iperf3", "-s", "-p", "5201"]).label("iperf3-server"))?;
    iperf.wait_for_port(Proto::Tcp, 5201, Duration::from_secs(5))?;
    let secs = seconds.to_string();
    let limit = Duration::from_secs(seconds + 20);
    let target = nl.shape.server_addr(1).to_string();
    let iperf_json = |args: &[&str]| -> Result<serde_json::Value> {
        let mut a = vec!["iperf3", "-c", &target, "-p", "5201", "-t", &secs, "-J"];
        a.extend_from_slice(args);
        let out = client.run_ok(Cmd::argv(&a).timeout(limit))?;
        serde_json::from_slice(&out.stdout).map_err(|e| LabError::Input(format!("iperf3 output: {e}")))
    };
    let gbps = |v: &serde_json::Value| v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9;
    let tcp1 = gbps(&iperf_json(&[])?);
    let tcp4 = gbps(&iperf_json(&["-P", "4"])?);
    let udp = iperf_json(&["-u", "-l", "64", "-b", "0"])?;
    let sum = &udp["end"]["sum"];
    let (packets, lost) = (sum["packets"].as_f64().unwrap_or(0.0), sum["lost_packets"].as_f64().unwrap_or(0.0));
    let udp64_pps = (packets - lost).max(0.0) / seconds.max(1) as f64;
    let udp64_loss = sum["lost_percent"].as_f64().unwrap_or(0.0);

    let reflector = server
        .spawn(Cmd::new(binary.to_string_lossy()).args(&["probe", "serve", "--udp", "7000"]).label("reflector"))?;
    reflector.wait_for_port(Proto::Udp, 7000, Duration::from_secs(5))?;
    let out = client.run_ok(
        Cmd::new(binary.to_string_lossy())
            .args(&["probe", "rtt", &format!("{target}:7000"), "--count", "5000"])
            .timeout(limit),
    )?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| -> f64 {
        text.split_whitespace().skip_while(|w| *w != name).nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    let figures = Figures {
        router: router.name(),
        tcp1_gbps: tcp1,
        tcp4_gbps: tcp4,
        udp64_pps,
        udp64_loss,
        rtt_p50_us: field("p50"),
        rtt_p99_us: field("p99"),
    };
    nl.teardown()?;
    Ok(figures)
}
