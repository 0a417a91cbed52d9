//! vpn-passthrough: a test harness and conformance suite for VPN passthrough
//! (PPTP, L2TP, IPsec with and without NAT-T) on NAT routers.
//!
//! [`scenario`] reads scenario files and plays each against a router:
//! [`lab`] builds the topology of network namespaces and runs real programs
//! in it, [`router`] puts the router under test in the middle (the Rust NAT
//! of [`nat`], the kernel's NAT, or a real router), [`vpn`] and [`ppp`] run
//! the VPN endpoints, [`capture`] reads what crossed each side, and the
//! verdicts go to a report. [`wire`] reads and builds packets for all of
//! them. [`prereq`] and [`doctor`] say what the machine lacks and how to fix
//! it; [`bench`] measures the lab and the NAT against references; [`probe`]
//! and [`flood`] are the traffic tools that run inside lab hosts; [`sys`]
//! wraps the system calls made directly. `ARCHITECTURE.md` follows one
//! packet and one scenario through these modules.

pub mod bench;
pub mod capture;
pub mod doctor;
pub mod flood;
#[doc(hidden)]
pub mod fuzz;
pub mod lab;
pub mod nat;
pub mod nat_behaviour;
pub mod ppp;
pub mod prereq;
pub mod probe;
pub mod rng;
pub mod router;
pub mod scenario;
pub mod sys;
pub mod vpn;
pub mod wire;
