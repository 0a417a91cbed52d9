//! vpn-passthrough: a test harness and conformance suite for VPN passthrough
//! (PPTP, L2TP, IPsec with and without NAT-T) on NAT routers.
//!
//! The [`lab`] module builds virtual topologies of network namespaces and
//! runs real programs inside them; [`prereq`] and [`doctor`] say what the machine
//! lacks and how to fix it; [`bench`] measures the lab engine against a reference.

pub mod bench;
pub mod capture;
pub mod doctor;
pub mod flood;
#[doc(hidden)]
pub mod fuzz;
pub mod lab;
pub mod nat;
pub mod ppp;
pub mod prereq;
pub mod probe;
pub mod router;
pub mod scenario;
pub mod vpn;
pub mod wire;
