//! The userspace PPP peer: takes pppd's arguments, runs one link, exits.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(vpn_passthrough::ppp::run(&args));
}
