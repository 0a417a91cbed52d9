//! Benchmarks: figures measured against a reference in the same run, never
//! pass/fail timings. [`lab`] builds labs with the engine and with `ip`;
//! [`nat`] moves traffic through the Rust NAT and the Linux NAT in the same
//! lab; [`core`] times the NAT core alone.

pub mod core;
pub mod lab;
pub mod nat;

pub use lab::{LabBenchReport, Layout, Timing, ip_script, run};
