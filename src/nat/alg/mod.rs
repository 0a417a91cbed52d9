//! Application-level gateways: what a NAT must understand of PPTP, L2TP
//! and IPsec to let more than one LAN host use them with one server.

pub mod ipsec;
pub mod l2tp;
pub mod pptp;

use super::profile::Profile;

/// The public UDP ports the ALGs keep for themselves with `profile`, which
/// plain NAPT never hands out.
pub fn reserved_udp_ports(profile: &Profile) -> Vec<u16> {
    [l2tp::L2tp::reserved_port(profile.l2tp), ipsec::Ipsec::reserved_port(profile.ipsec)]
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
