//! `cargo bench --bench scale`: 200 tunnels (50 each of PPTP, L2TP, IKEv2
//! with NAT-T and WireGuard) through one Rust NAT and then one Linux NAT, in
//! the same run: time to build the lab, time until every tunnel is up, the
//! router's memory, echoes per tunnel, and the ratios. Needs root (cargo
//! runs it through ci/as-root).

use vpn_passthrough::bench;

fn main() {
    // `cargo test --benches` runs bench targets with no `--bench` flag:
    // build nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Err(e) = vpn_passthrough::prereq::require_lab_privileges() {
        eprintln!("scale benchmark not run: {e}");
        std::process::exit(1);
    }
    let result = vpn_passthrough::lab::own_binary().and_then(|bin| bench::scale::run(50, bin));
    match result {
        Ok(report) => print!("{}", report.render()),
        Err(e) => {
            eprintln!("scale benchmark: {e}");
            std::process::exit(1);
        }
    }
}
