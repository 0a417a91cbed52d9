//! OpenVPN: an `openvpn` server and clients with certificates of the run's
//! authority, over UDP or over TCP.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{Awaiting, Daemons, Dialing, Stage, Tunnel, VpnFamily};
use crate::lab::{Process, Result};
use crate::router::client_name;
use crate::scenario::format::{Scenario, Target};
use crate::scenario::observed::{Check, Observed};
use crate::vpn::openvpn::{ClientConfig, OpenvpnDaemon, ServerConfig, Transport};

/// OpenVPN over one transport.
pub struct Openvpn {
    transport: Transport,
}

/// OpenVPN over UDP.
pub const OPENVPN_UDP: Openvpn = Openvpn { transport: Transport::Udp };
/// OpenVPN over TCP.
pub const OPENVPN_TCP: Openvpn = Openvpn { transport: Transport::Tcp };

/// Server `j`'s tunnel network; the server is its `.1`.
fn network(j: usize) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 95, j as u8, 0), 24).unwrap_or_default()
}

fn server_inner(j: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(network(j).network()) + 1)
}

impl Daemons for OpenvpnDaemon<'_> {
    fn processes(&self) -> Vec<&Process> {
        vec![self.process()]
    }
}

impl VpnFamily for Openvpn {
    fn settings(&self) -> &'static [&'static str] {
        &["float"]
    }

    fn tools(&self, _s: &Scenario) -> &'static [&'static str] {
        &["openvpn", "openssl"]
    }

    fn start_server<'l>(&self, stage: &mut Stage<'_, 'l>, j: usize) -> Result<Box<dyn Daemons + 'l>> {
        let host = stage.host(&stage.shape.server_name(j))?;
        let config = ServerConfig {
            listen: stage.shape.server_addr(j),
            transport: self.transport,
            network: network(j),
            credentials: stage.certificate(&format!("server{j}.lab"))?,
            float: stage.scenario.file.endpoints.float,
        };
        Ok(Box::new(OpenvpnDaemon::server(host, &config)?))
    }

    fn dial<'l>(&self, stage: &mut Stage<'_, 'l>, i: usize, j: usize) -> Result<Box<dyn Dialing<'l> + 'l>> {
        let host = stage.host(&client_name(i))?;
        let config = ClientConfig {
            server: stage.shape.server_addr(j),
            transport: self.transport,
            credentials: stage.certificate(&format!("client{i}.lab"))?,
            keepalive_s: stage.scenario.file.endpoints.keepalive_s,
        };
        let client = OpenvpnDaemon::client(host, &config)?;
        Ok(Awaiting::boxed(move |_server: &dyn Daemons, timeout| {
            let tunnel = match client.wait_until_up(timeout) {
                Ok(local) => Tunnel { up: true, local: Some(local), remote: Some(server_inner(j)), note: None },
                Err(why) => Tunnel::down(why),
            };
            Ok((Box::new(client) as Box<dyn Daemons + 'l>, tunnel))
        }))
    }

    fn premises(&self, s: &Scenario, o: &Observed, target: Target) -> Vec<Check> {
        match self.transport {
            Transport::Udp => super::idle_premise(s, o, target).into_iter().collect(),
            Transport::Tcp => Vec::new(),
        }
    }
}
