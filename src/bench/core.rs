//! The NAT core alone: nanoseconds to translate a packet of an established
//! mapping, and bytes of memory per mapping with a million of them.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::nat::profile::Limits;
use crate::nat::{Behaviour, Config, L4Checksum, Nat, Profile, Side, Verdict};
use crate::wire::{ipv4, udp};

/// What the core benchmark measured.
#[derive(Debug, Clone)]
pub struct CoreBenchReport {
    /// Translating an outbound UDP packet of an established mapping (with
    /// a 60-byte copy of the packet into the buffer each time).
    pub translate_ns: f64,
    /// The copy alone, measured the same way.
    pub copy_ns: f64,
    /// Mappings made for the memory figure.
    pub mappings: usize,
    /// Bytes allocated per mapping, if the caller counted allocations.
    pub bytes_per_mapping: Option<f64>,
    /// Time to make them, per mapping.
    pub insert_ns: f64,
}

impl CoreBenchReport {
    /// The report as text, with the targets.
    pub fn render(&self) -> String {
        let mut s = String::from("nat core benchmark\n");
        s.push_str(&format!(
            "  translate, established udp mapping: {:.1} ns/packet ({:.1} ns of it copying the packet in; target <= 150 ns)\n",
            self.translate_ns, self.copy_ns
        ));
        s.push_str(&format!("  new mappings: {:.1} ns each\n", self.insert_ns));
        match self.bytes_per_mapping {
            Some(b) => s.push_str(&format!(
                "  memory: {:.1} bytes per mapping with {} mappings (target <= 200 bytes)\n",
                b, self.mappings
            )),
            None => s.push_str("  memory: not measured\n"),
        }
        s
    }
}

fn nat(profile: Profile) -> Result<Nat, String> {
    let cfg = Config {
        lan: "10.0.0.1/8".parse().map_err(|e| format!("{e}"))?,
        wan: "198.51.100.1/24".parse().map_err(|e| format!("{e}"))?,
        gateway: Some(Ipv4Addr::new(198, 51, 100, 254)),
        profile,
        seed: 1,
    };
    Nat::new(cfg)
}

/// Bytes resident in this process (for runs without a counting allocator).
pub fn resident_bytes() -> usize {
    resident_bytes_of("self")
}

/// The resident set of process `pid` (a number, or `self`); 0 when it
/// cannot be read.
pub fn resident_bytes_of(pid: &str) -> usize {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096);
    pages * usize::try_from(page).unwrap_or(4096)
}

/// A UDP packet from `src:sport` to `dst:53` with a right checksum.
pub fn udp_packet(src: [u8; 4], sport: u16, dst: [u8; 4]) -> Vec<u8> {
    ipv4::packet(src, dst, ipv4::PROTO_UDP, &udp::emit(sport, 53, &[0; 32]))
}

/// Runs the benchmark; `allocated` reads a byte count of live memory (a
/// counting global allocator's, or [`resident_bytes`]).
pub fn run(mappings: usize, allocated: Option<&dyn Fn() -> usize>) -> Result<CoreBenchReport, String> {
    // Translation of an established mapping.
    let mut n = nat(Profile::default())?;
    let template = udp_packet([10, 0, 0, 2], 40000, [198, 51, 100, 2]);
    let mut buf = template.clone();
    let now = Duration::from_secs(1);
    let warm = n.process(Side::Lan, &mut buf, L4Checksum::Full, now);
    if !matches!(warm, Verdict::Forward { .. }) {
        return Err(format!("the benchmark packet was not forwarded: {warm:?}"));
    }
    let rounds = 2_000_000u32;
    let start = Instant::now();
    for _ in 0..rounds {
        buf.copy_from_slice(&template);
        std::hint::black_box(n.process(Side::Lan, std::hint::black_box(&mut buf), L4Checksum::Full, now));
    }
    let translate_ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
    let start = Instant::now();
    for _ in 0..rounds {
        buf.copy_from_slice(std::hint::black_box(&template));
        std::hint::black_box(&mut buf);
    }
    let copy_ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);

    // A million mappings: address-and-port-dependent mapping lets public
    // ports repeat across remotes, as a carrier-grade table would.
    // The table's other bounds open as far as the mappings.
    let limits = Limits { sessions: mappings, mappings_per_host: mappings, ..Limits::default() };
    let profile =
        Profile { mapping: Behaviour::AddressAndPortDependent, max_mappings: mappings, limits, ..Profile::default() };
    let before = allocated.map(|f| f());
    let mut n = nat(profile)?;
    let start = Instant::now();
    let mut made = 0usize;
    for i in 0..mappings {
        let host = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8 | 1];
        let mut p = udp_packet(host, 1024 + (i % 60000) as u16, [198, 51, 100, 2 + (i % 200) as u8]);
        if matches!(n.process(Side::Lan, &mut p, L4Checksum::Full, now), Verdict::Forward { .. }) {
            made += 1;
        }
    }
    let insert_ns = start.elapsed().as_nanos() as f64 / mappings.max(1) as f64;
    let bytes_per_mapping = match (allocated, before) {
        (Some(f), Some(b)) => Some((f().saturating_sub(b)) as f64 / made.max(1) as f64),
        _ => None,
    };
    std::hint::black_box(&n);
    Ok(CoreBenchReport { translate_ns, copy_ns, mappings: made, bytes_per_mapping, insert_ns })
}
