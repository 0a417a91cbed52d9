//! The lab benchmark: build and tear down a topology with the engine, and
//! the same topology with a script of `ip` commands, in the same run.
//!
//! The script is what one would write by hand: `ip netns add` per node,
//! `ip link add … netns … type veth peer … netns …` per link, then per
//! interface `ip link set … up`, `ip addr add`, and per route `ip route add`;
//! `ip netns del` per node to tear down. Its names carry a claimed run prefix
//! like a lab's, so an interrupted benchmark is swept like any dead run.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::lab::plan::{NodeKind, Plan};
use crate::lab::runs;
use crate::lab::{Lab, LabError, Result, RunId, Topology};

/// A topology shape for the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// All hosts on one switch.
    Star,
    /// Hosts in a line, forwarding in the middle.
    Chain,
}

impl Layout {
    /// The topology of `hosts` hosts in this shape.
    pub fn topology(self, hosts: usize) -> Topology {
        match self {
            Layout::Star => Topology::star(hosts),
            Layout::Chain => Topology::chain(hosts),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Star => "star",
            Layout::Chain => "chain",
        })
    }
}

/// Build and teardown times of one round.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Building the topology.
    pub build: Duration,
    /// Tearing it down.
    pub teardown: Duration,
}

impl Timing {
    /// Build plus teardown.
    pub fn total(&self) -> Duration {
        self.build + self.teardown
    }
}

/// The measurements of a benchmark run.
#[derive(Debug, Clone)]
pub struct LabBenchReport {
    /// The shape measured.
    pub shape: Layout,
    /// Hosts in it.
    pub hosts: usize,
    /// One timing per round, engine.
    pub engine: Vec<Timing>,
    /// One timing per round, `ip` script.
    pub script: Vec<Timing>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

impl LabBenchReport {
    /// Median build+teardown of the engine.
    pub fn engine_median(&self) -> Duration {
        median(self.engine.iter().map(Timing::total).collect())
    }

    /// Median build+teardown of the script.
    pub fn script_median(&self) -> Duration {
        median(self.script.iter().map(Timing::total).collect())
    }

    /// How many times faster the engine is than the script (medians).
    pub fn speedup(&self) -> f64 {
        self.script_median().as_secs_f64() / self.engine_median().as_secs_f64().max(1e-9)
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let line = |name: &str, t: &[Timing]| {
            let total = median(t.iter().map(Timing::total).collect());
            let build = median(t.iter().map(|x| x.build).collect());
            let down = median(t.iter().map(|x| x.teardown).collect());
            format!(
                "  {name:<10} {:>8.1} ms  (build {:.1} ms, teardown {:.1} ms; {:.2} ms a host)\n",
                ms(total),
                ms(build),
                ms(down),
                ms(total) / self.hosts.max(1) as f64
            )
        };
        let mut s = format!(
            "lab benchmark: {} of {} hosts, build + teardown, median of {} rounds\n",
            self.shape,
            self.hosts,
            self.engine.len()
        );
        s.push_str(&line("engine", &self.engine));
        s.push_str(&line("ip script", &self.script));
        let _ = writeln!(
            s,
            "  ratio      engine is {:.1}x faster than the ip script (target: at least 5x)",
            self.speedup()
        );
        s
    }
}

/// Runs `rounds` rounds, alternating engine and script.
pub fn run(shape: Layout, hosts: usize, rounds: usize) -> Result<LabBenchReport> {
    let topology = shape.topology(hosts);
    let plan = Plan::new(&topology)?;
    crate::prereq::require_tool("ip")?;
    let mut report = LabBenchReport { shape, hosts, engine: Vec::new(), script: Vec::new() };
    for _ in 0..rounds.max(1) {
        report.engine.push(time_engine(&topology)?);
        report.script.push(time_script(&plan)?);
    }
    Ok(report)
}

fn time_engine(topology: &Topology) -> Result<Timing> {
    let start = Instant::now();
    let lab = Lab::build(topology)?;
    let build = start.elapsed();
    let start = Instant::now();
    lab.teardown()?;
    Ok(Timing { build, teardown: start.elapsed() })
}

fn time_script(plan: &Plan) -> Result<Timing> {
    let record = runs::claim()?;
    let (up, down) = ip_script(plan, record.id);
    let result = (|| {
        let build = run_script(&up)?;
        let teardown = run_script(&down)?;
        Ok(Timing { build, teardown })
    })();
    if result.is_err() {
        let _ = run_script(&down);
    }
    runs::release(record.id);
    result
}

fn run_script(script: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = duct::cmd!("sh", "-e", "-c", script)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(|e| LabError::io("running the ip script", e))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(LabError::Failed {
            host: "(benchmark)".into(),
            command: "sh -e -c <ip script>".into(),
            status: crate::lab::process::describe(out.status),
            output: format!(":\n{}", String::from_utf8_lossy(&out.stdout)),
        });
    }
    Ok(took)
}

/// The `ip` commands that build `plan` under run `id`, and those that tear
/// it down.
pub fn ip_script(plan: &Plan, id: RunId) -> (String, String) {
    let ns = |n: usize| id.netns_name(&plan.nodes[n].name);
    let ifn = |n: usize, i: usize| id.ifname(&plan.nodes[n].ifaces[i].local);
    let mut up = String::new();
    for n in 0..plan.nodes.len() {
        let _ = writeln!(up, "ip netns add {}", ns(n));
        let _ = writeln!(up, "ip -n {} link set lo up", ns(n));
        if plan.nodes[n].forwarding {
            let _ = writeln!(up, "ip netns exec {} sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'", ns(n));
        }
        if plan.nodes[n].kind == NodeKind::Switch {
            let _ = writeln!(up, "ip -n {} link add {} type bridge", ns(n), ifn(n, 0));
            let _ = writeln!(up, "ip -n {} link set {} up", ns(n), ifn(n, 0));
        }
    }
    for l in &plan.links {
        let ((an, ai), (bn, bi)) = (l.main, l.peer);
        let _ = writeln!(
            up,
            "ip link add {} netns {} type veth peer name {} netns {}",
            ifn(an, ai),
            ns(an),
            ifn(bn, bi),
            ns(bn)
        );
        for (n, i) in [(an, ai), (bn, bi)] {
            let node = &plan.nodes[n];
            let mut set = format!("ip -n {} link set {}", ns(n), ifn(n, i));
            if let Some(mtu) = node.ifaces[i].mtu {
                let _ = write!(set, " mtu {mtu}");
            }
            if node.kind == NodeKind::Switch {
                let _ = write!(set, " master {}", ifn(n, 0));
            }
            let _ = writeln!(up, "{set} up");
            for a in &node.ifaces[i].addrs {
                let _ = writeln!(up, "ip -n {} addr add {a} dev {}", ns(n), ifn(n, i));
            }
        }
    }
    for (n, node) in plan.nodes.iter().enumerate() {
        for r in &node.routes {
            let mut cmd = format!("ip -n {} route add {}", ns(n), r.dest);
            if let Some(g) = r.gateway {
                let _ = write!(cmd, " via {g}");
            }
            if let Some(d) = r.dev {
                let _ = write!(cmd, " dev {}", ifn(n, d));
            }
            let _ = writeln!(up, "{cmd}");
        }
    }
    let mut down = String::new();
    for n in 0..plan.nodes.len() {
        let _ = writeln!(down, "ip netns del {} 2>/dev/null || true", ns(n));
    }
    (up, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_builds_the_same_star() {
        let plan = Plan::new(&Topology::star(2)).expect("star");
        let id = RunId::parse("abc").expect("id");
        let (up, down) = ip_script(&plan, id);
        assert!(up.contains("ip netns add vpabc-h0\n"));
        assert!(up.contains("ip -n vpabc-sw link add vpabc-br type bridge\n"));
        assert!(up.contains("ip link add vpabc-p0 netns vpabc-sw type veth peer name vpabc-eth0 netns vpabc-h0\n"));
        assert!(up.contains("ip -n vpabc-sw link set vpabc-p0 master vpabc-br up\n"));
        assert!(up.contains("ip -n vpabc-h1 addr add 10.0.0.2/8 dev vpabc-eth0\n"));
        assert_eq!(down.lines().count(), 3);
    }

    #[test]
    fn the_ratio_compares_medians() {
        let t = |ms| Timing { build: Duration::from_millis(ms), teardown: Duration::ZERO };
        let r = LabBenchReport {
            shape: Layout::Star,
            hosts: 10,
            engine: vec![t(10), t(100), t(12)],
            script: vec![t(60), t(61), t(1000)],
        };
        assert!((r.speedup() - 61.0 / 12.0).abs() < 1e-9);
        assert!(r.render().contains("5.1x faster"));
    }
}
