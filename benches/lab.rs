//! `cargo bench --bench lab`: builds and tears down a 50-host star and a
//! 50-host chain with the lab engine and with an `ip` command script, in the
//! same run, and prints both times and the ratio. Needs root (cargo runs it
//! through ci/as-root).

use vpn_passthrough::bench::{self, Layout};

fn main() {
    // `cargo test --benches` runs bench targets with no `--bench` flag:
    // build nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Err(e) = vpn_passthrough::prereq::require_lab_privileges() {
        eprintln!("lab benchmark not run: {e}");
        std::process::exit(1);
    }
    for shape in [Layout::Star, Layout::Chain] {
        match bench::run(shape, 50, 5) {
            Ok(report) => print!("{}", report.render()),
            Err(e) => {
                eprintln!("lab benchmark ({shape}): {e}");
                std::process::exit(1);
            }
        }
    }
}
