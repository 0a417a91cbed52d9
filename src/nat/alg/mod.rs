//! Application-level gateways: what a NAT must understand of PPTP, L2TP
//! and IPsec to let more than one LAN host use them with one server.

pub mod ipsec;
pub mod l2tp;
pub mod pptp;

#[cfg(test)]
pub(crate) mod tests;
