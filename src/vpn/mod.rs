//! Real VPN endpoints in lab hosts: one module per daemon renders its
//! config into the host's config directory, starts it, waits until it is
//! ready and reports tunnel state.

pub mod diagnose;
pub mod openvpn;
pub mod pki;
pub mod pppd;
pub mod pptp;
pub mod scripted;
pub mod strongswan;
pub mod vici;
pub mod wireguard;
pub mod xl2tpd;
