//! WireGuard: wireguard-go on both ends, one server peer and a client peer
//! per client, with the scenario's keepalive as `PersistentKeepalive`.

use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;

use super::{Awaiting, Daemons, Dialing, Stage, Tunnel, VpnFamily};
use crate::lab::{Process, Result};
use crate::router::client_name;
use crate::scenario::format::{Scenario, Target};
use crate::scenario::observed::{Check, Observed};
use crate::vpn::wireguard::{WG_PORT, WgConfig, WgPeer, WireguardGo, lab_key, public_key};

/// WireGuard, the family.
pub struct Wireguard;

/// Server `j`'s tunnel network: the server is `.1`, client `i` is `.(1 + i)`.
fn network(j: usize) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 96, j as u8, 0), 24).unwrap_or_default()
}

fn host_addr(j: usize, n: usize) -> Ipv4Addr {
    let base = u32::from(network(j).network());
    Ipv4Addr::from(base + n as u32)
}

fn server_inner(j: usize) -> Ipv4Addr {
    host_addr(j, 1)
}

fn client_inner(j: usize, i: usize) -> Ipv4Addr {
    host_addr(j, 1 + i)
}

impl Daemons for WireguardGo<'_> {
    fn processes(&self) -> Vec<&Process> {
        vec![self.process()]
    }
}

impl VpnFamily for Wireguard {
    fn tools(&self, _s: &Scenario) -> &'static [&'static str] {
        &["wireguard-go", "wg"]
    }

    fn start_server<'l>(&self, stage: &mut Stage<'_, 'l>, j: usize) -> Result<Box<dyn Daemons + 'l>> {
        let s = stage.scenario;
        let host = stage.host(&stage.shape.server_name(j))?;
        // The server knows every client that will dial it, as a real one does.
        let mut peers = Vec::new();
        for i in (1..=s.file.topology.clients).filter(|&i| s.server_of(i) == j) {
            peers.push(WgPeer {
                public: public_key(&lab_key('c', i))?,
                endpoint: None,
                allowed: Ipv4Net::new(client_inner(j, i), 32).unwrap_or_default(),
                keepalive_s: 0,
            });
        }
        let config = WgConfig {
            private: lab_key('s', j),
            listen: Some(WG_PORT),
            address: Ipv4Net::new(server_inner(j), network(j).prefix_len()).unwrap_or_default(),
            peers,
        };
        Ok(Box::new(WireguardGo::start(host, &config)?))
    }

    fn dial<'l>(&self, stage: &mut Stage<'_, 'l>, i: usize, j: usize) -> Result<Box<dyn Dialing<'l> + 'l>> {
        let host = stage.host(&client_name(i))?;
        let config = WgConfig {
            private: lab_key('c', i),
            listen: None,
            address: Ipv4Net::new(client_inner(j, i), network(j).prefix_len()).unwrap_or_default(),
            peers: vec![WgPeer {
                public: public_key(&lab_key('s', j))?,
                endpoint: Some(SocketAddrV4::new(stage.shape.server_addr(j), WG_PORT)),
                allowed: network(j),
                keepalive_s: stage.scenario.file.endpoints.keepalive_s,
            }],
        };
        let wg = WireguardGo::start(host, &config)?;
        // wireguard-go starts its handshake with the first packet to send.
        Ok(Awaiting::boxed(move |_server: &dyn Daemons, timeout| {
            let tunnel = if wg.dial(server_inner(j), timeout)? {
                Tunnel { up: true, local: Some(client_inner(j, i)), remote: Some(server_inner(j)), note: None }
            } else {
                Tunnel::down("no handshake with the server: its handshake initiations went unanswered")
            };
            Ok((Box::new(wg) as Box<dyn Daemons + 'l>, tunnel))
        }))
    }

    fn premises(&self, s: &Scenario, o: &Observed, target: Target) -> Vec<Check> {
        super::idle_premise(s, o, target).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_has_its_network_and_each_client_its_address() {
        assert_eq!(server_inner(1), Ipv4Addr::new(10, 96, 1, 1));
        assert_eq!(client_inner(1, 1), Ipv4Addr::new(10, 96, 1, 2));
        assert_eq!(client_inner(2, 3), Ipv4Addr::new(10, 96, 2, 4));
        assert!(network(2).contains(&client_inner(2, 200)));
    }
}
