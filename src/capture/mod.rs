//! Packet captures in lab hosts: tcpdump writes a pcap file per interface
//! into the host's log directory (kept with the run when a test fails), and
//! our own code reads it back ([`pcap`]) into typed facts ([`facts`]).

pub mod facts;
pub mod pcap;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lab::{Cmd, Host, LabError, Process, Result};

pub use facts::{Facts, Seen, What};

/// tcpdump capturing one interface of a host.
pub struct Capture {
    process: Process,
    path: PathBuf,
}

impl Capture {
    /// Starts tcpdump on the topology interface `iface` of `host`, IPv4
    /// only, every byte of every packet, into `log/<label>.pcap`; returns
    /// once tcpdump listens.
    pub fn start(host: &Host<'_>, iface: &str, label: &str) -> Result<Capture> {
        Capture::start_on(host, &host.ifname(iface)?, label)
    }

    /// Starts tcpdump as [`Capture::start`] does, on the kernel interface
    /// `ifname` of `host`.
    pub fn start_on(host: &Host<'_>, ifname: &str, label: &str) -> Result<Capture> {
        let tcpdump = crate::prereq::require_tool("tcpdump")?;
        let path = host.log_dir()?.join(format!("{label}.pcap"));
        let cmd = Cmd::new(tcpdump.to_string_lossy())
            // A 4 MB ring holds about 1800 packets of up to 2048 bytes: far
            // more than a story's bursts. The kernel allocates and clears
            // the whole ring when tcpdump starts, and a suite starts
            // hundreds of captures.
            .args(&["-i", ifname, "-n", "-U", "--immediate-mode", "-s", "2048", "-B", "4096", "-Z", "root"])
            .args(&["-w", &path.to_string_lossy(), "ip"])
            .label(label);
        let process = host.spawn(cmd)?;
        process.or_stop(process.wait_for_log("listening on", Duration::from_secs(10)))?;
        Ok(Capture { process, path })
    }

    /// The tcpdump writing it.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what has been captured so far.
    pub fn facts(&self) -> Result<Facts> {
        read(&self.path)
    }

    /// Stops tcpdump (it flushes on SIGTERM) and reads the whole capture,
    /// with the count of packets the kernel dropped before tcpdump read
    /// them (tcpdump's own statistics).
    pub fn stop(self) -> Result<Facts> {
        self.process.stop(Duration::from_secs(5))?;
        let mut facts = read(&self.path)?;
        let log = std::fs::read_to_string(self.process.log_path()).unwrap_or_default();
        facts.capture_drops = kernel_drops(&log);
        Ok(facts)
    }
}

/// The "N packets dropped by kernel" of tcpdump's closing statistics.
fn kernel_drops(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            l.strip_suffix(" packets dropped by kernel").or_else(|| l.strip_suffix(" packet dropped by kernel"))
        })
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

/// Reads a pcap file into facts.
pub fn read(path: &Path) -> Result<Facts> {
    let bytes = std::fs::read(path).map_err(|e| LabError::io(format!("reading capture {}", path.display()), e))?;
    let p = pcap::parse(&bytes).map_err(|e| LabError::Input(format!("capture {}: {e}", path.display())))?;
    Ok(Facts::from_pcap(&p))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tcpdump_statistics_give_the_kernel_drops() {
        let log =
            "listening on x\n142 packets captured\n228 packets received by filter\n86 packets dropped by kernel\n";
        assert_eq!(super::kernel_drops(log), 86);
        assert_eq!(super::kernel_drops("1 packet dropped by kernel\n"), 1);
        assert_eq!(super::kernel_drops("tcpdump: listening\n"), 0);
    }
}
