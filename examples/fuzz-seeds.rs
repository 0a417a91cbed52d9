//! Tools for the fuzz targets' seeds: `write` makes the generated seeds of
//! the `nat`, `profile` and `ppp` targets in `fuzz/seeds/`, `replay` runs
//! hex inputs on a target (see `fuzz/README.md`).

use std::path::PathBuf;
use std::time::Duration;

use vpn_passthrough::fuzz;

/// Largest input made (what `cargo fuzz` uses by default).
const MAX_LEN: usize = 4096;

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("write") => write_seeds(),
        Some("replay") => replay(),
        _ => {
            eprintln!("usage: fuzz-seeds write | replay (FUZZ_TARGET=… FUZZ_REPLAY=hex,…)");
            std::process::exit(2);
        }
    }
}

/// Writes the generated seeds of the `nat` and `ppp` targets (the others
/// are files from the repository and the lab, copied by hand). With
/// `FUZZ_PCAPS=lan.pcap,wan.pcap;…` (lab runs' router captures), also a
/// `nat` seed per run replaying what entered the router: packets from LAN
/// hosts on the LAN capture, packets to the public address on the WAN one.
/// `cargo run --example fuzz-seeds -- write`
fn write_seeds() {
    let dir = |t: &str| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(t);
    let canned = fuzz::canned_ops();
    let write = |t: &str, name: &str, bytes: &[u8]| {
        assert!(bytes.len() <= MAX_LEN, "{name}: {} bytes", bytes.len());
        std::fs::write(dir(t).join(name), bytes).expect("write seed");
    };
    let with = |header: &[u8]| [header, &canned[..]].concat();
    // Header: preset, flags, limits flags (+ their bytes), addressing, driver.
    write("nat", "default-direct", &with(&[0, 0, 0, 0, 0]));
    write("nat", "full-cone-link", &with(&[1, 0, 0, 0, 1]));
    let mut small = vec![4, 0x10, 0x03, 0x20, 0x04];
    small.extend([2, 1, 0, 1, 2, 3, 1, 0, 2, 1, 3, 0, 1, 2, 0]);
    small.extend([3, 5, 1, 2, 4, 0]);
    small.extend([1 | 4, 3]);
    write("nat", "symmetric-small-limits-link-vnet", &with(&small));
    let mut naive = vec![6 | 0x50, 0x43, 0x15, 0x04, 0x0c];
    naive.extend([10, 20, 5, 10, 10, 7]);
    naive.extend([0x09, 9, 0x55]);
    write("nat", "naive-impaired-small-neighbours", &with(&naive));
    write("nat", "linux-like-direct-net3", &with(&[8, 0x28, 0, 3, 0]));
    let sets = std::env::var("FUZZ_PCAPS").unwrap_or_default();
    for (n, pcaps) in sets.split(';').filter(|s| !s.is_empty()).enumerate() {
        let mut packets: Vec<(Duration, u8, Vec<u8>)> = Vec::new();
        for path in pcaps.split(',') {
            let bytes = std::fs::read(path).expect("read pcap");
            let p = vpn_passthrough::capture::pcap::parse(&bytes).expect("pcap");
            for r in p.records {
                let Some(ip) = r.data.get(14..) else { continue };
                if r.data[12..14] != [8, 0] || ip.len() < 20 {
                    continue;
                }
                let (src, dst) = (&ip[12..16], &ip[16..20]);
                let op = if src[..3] == [192, 168, 1] {
                    8
                } else if dst == [198, 51, 100, 1] {
                    9
                } else {
                    continue;
                };
                packets.push((r.time, op, ip.to_vec()));
            }
        }
        packets.sort_by_key(|p| p.0);
        let mut ops = vec![0, 0, 0, 0, 0];
        for (_, op, ip) in packets {
            if ops.len() + ip.len() + 4 > MAX_LEN - 8 {
                break;
            }
            ops.extend([op, 0]);
            ops.extend((ip.len() as u16).to_be_bytes());
            ops.extend(ip);
        }
        write("nat", &format!("lab-capture-{n}"), &ops);
    }
    let profile = std::fs::read(dir("profile").join("small-limits.toml")).expect("profile seed");
    write("profile", "small-limits-with-traffic", &[&profile[..], &[0, 0, 1], &canned[..]].concat());
    // PPP: role, mode (1: an honest peer), then ops. With a peer: deliver
    // everything, a second passes, again.
    for role in 0..8u8 {
        let mut s = vec![role, 1];
        for _ in 0..12 {
            s.extend([6, 4, 20]);
        }
        s.extend([5, 4, 0x45, 0, 0, 20]);
        s.extend([6, 7, 0, 6, 4, 0x80, 6]);
        write("ppp", &format!("peer-role-{role}"), &s);
    }
    // Alone: an LCP Configure-Request, then a PAP Authenticate-Request with
    // the password, for a server requiring PAP; the same through HDLC.
    let lcp = [0xff, 0x03, 0xc0, 0x21, 0x01, 0x07, 0x00, 0x0a, 0x05, 0x06, 0x12, 0x34, 0x56, 0x78];
    let mut s = vec![0, 0, 3, lcp.len() as u8];
    s.extend(lcp);
    s.extend([4, 10]);
    write("ppp", "alone-server-lcp", &s);
    let mut line = Vec::new();
    vpn_passthrough::ppp::hdlc::encode(&lcp, 0xffff_ffff, &mut line);
    let mut s = vec![1, 2, 3, line.len() as u8];
    s.extend(&line);
    s.extend([4, 10, 4, 0x80]);
    write("ppp", "alone-hdlc-lcp", &s);
}

/// Replays the hex inputs in `FUZZ_REPLAY` (comma-separated) on the target
/// `FUZZ_TARGET`; with `FUZZ_TRACE` set, the NAT targets print every packet.
/// `FUZZ_TARGET=nat FUZZ_REPLAY=… cargo run --example fuzz-seeds -- replay`
fn replay() {
    let name = std::env::var("FUZZ_TARGET").expect("FUZZ_TARGET");
    let target: fn(&[u8]) = match name.as_str() {
        "nat" => fuzz::nat,
        "pptp" => fuzz::pptp,
        "l2tp" => fuzz::l2tp,
        "topology" => fuzz::topology,
        "profile" => fuzz::profile,
        "ppp" => fuzz::ppp,
        "scenario" => fuzz::scenario,
        "pcap" => fuzz::pcap,
        other => panic!("no target {other}"),
    };
    for input in std::env::var("FUZZ_REPLAY").expect("FUZZ_REPLAY").split(',') {
        let bytes: Vec<u8> =
            (0..input.len() / 2).map(|i| u8::from_str_radix(&input[2 * i..2 * i + 2], 16).expect("hex")).collect();
        target(&bytes);
    }
}
