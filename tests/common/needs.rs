//! What the VPN suites need, per family: the daemons, nftables (PPTP hosts
//! and the Linux NAT load rules) and tcpdump (captures). Each suite uses
//! some of these.
#![allow(dead_code)]

use super::Need;

pub const PPTP: &[Need] =
    &[Need::Root, Need::Tool("pptpd"), Need::Tool("pptp"), Need::Tool("nft"), Need::Tool("tcpdump")];
pub const L2TP: &[Need] = &[Need::Root, Need::Tool("xl2tpd"), Need::Tool("nft"), Need::Tool("tcpdump")];
/// Scripted peers and captures only.
pub const CAPTURE: &[Need] = &[Need::Root, Need::Tool("nft"), Need::Tool("tcpdump")];
