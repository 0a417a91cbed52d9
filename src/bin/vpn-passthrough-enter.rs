//! Enters a lab host and executes a program there:
//! `vpn-passthrough-enter NETNS-PATH MNTNS-PATH PROGRAM [ARG...]`.

fn main() {
    std::process::exit(vpn_passthrough::lab::sandbox::enter_and_exec(std::env::args_os().skip(1).collect()));
}
