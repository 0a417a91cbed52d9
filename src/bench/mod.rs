//! Benchmarks: figures measured against a reference in the same run, never
//! pass/fail timings. [`lab`] builds labs with the engine and with `ip`;
//! [`nat`] moves traffic through the Rust NAT and the Linux NAT in the same
//! lab; [`core`] times the NAT core alone; [`scale`] puts hundreds of
//! tunnels of four families through one Rust NAT and one Linux NAT.

pub mod core;
pub mod lab;
pub mod nat;
pub mod scale;

pub use lab::{LabBenchReport, Layout, Timing, ip_script, run};
