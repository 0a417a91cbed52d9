//! OpenVPN 2.6 in lab hosts: a server in `server` mode (TLS with the run's
//! throwaway CA, `topology subnet`) and clients, over UDP or TCP, on a `tun0`
//! TUN interface in userspace (data-channel offload off: the kernel here has
//! no `ovpn-dco`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::pki::Credentials;
use crate::lab::{Cmd, Host, LabError, Process, Proto, Result};

pub use crate::wire::openvpn::PORT as OPENVPN_PORT;

/// What a tunnel rides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: OpenVPN's own reliability layer for control, none for data.
    Udp,
    /// TCP: one connection carries everything.
    Tcp,
}

/// A server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where it listens.
    pub listen: Ipv4Addr,
    /// UDP or TCP.
    pub transport: Transport,
    /// The tunnel network; the server takes its first address.
    pub network: Ipv4Net,
    /// Its certificates.
    pub credentials: Credentials,
    /// Whether a client's packets may come from a new address or port
    /// mid-session (`float`).
    pub float: bool,
}

/// A client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's address.
    pub server: Ipv4Addr,
    /// UDP or TCP.
    pub transport: Transport,
    /// Its certificates.
    pub credentials: Credentials,
    /// `ping`: seconds between keepalives when idle (0: none).
    pub keepalive_s: u64,
}

fn common(s: &mut String, c: &Credentials) {
    let _ = writeln!(s, "dev tun\ndisable-dco\nverb 3\ndata-ciphers AES-256-GCM:AES-128-GCM");
    let _ = writeln!(s, "ca {}\ncert {}\nkey {}", c.ca.display(), c.cert.display(), c.key.display());
}

/// The server's configuration file.
pub fn server_conf(c: &ServerConfig) -> String {
    let mut s = String::new();
    common(&mut s, &c.credentials);
    let proto = match c.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp-server",
    };
    let _ = writeln!(s, "mode server\ntls-server\nproto {proto}\nlocal {}\nport {OPENVPN_PORT}", c.listen);
    let _ = writeln!(s, "topology subnet\nserver {} {}\ndh none", c.network.network(), c.network.netmask());
    if c.float {
        let _ = writeln!(s, "float");
    }
    s
}

/// A client's configuration file.
pub fn client_conf(c: &ClientConfig) -> String {
    let mut s = String::new();
    common(&mut s, &c.credentials);
    let proto = match c.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp-client",
    };
    let _ = writeln!(s, "client\nproto {proto}\nremote {} {OPENVPN_PORT}\nnobind", c.server);
    // One try per connect: a blocked server is an outcome, not a retry loop.
    let _ = writeln!(s, "connect-retry-max 1\nserver-poll-timeout 10");
    if c.keepalive_s > 0 {
        let _ = writeln!(s, "ping {}", c.keepalive_s);
    }
    s
}

/// openvpn running in a host.
pub struct OpenvpnDaemon<'lab> {
    host: Host<'lab>,
    process: Process,
}

impl<'lab> OpenvpnDaemon<'lab> {
    fn start(host: Host<'lab>, label: &str, conf: &str) -> Result<OpenvpnDaemon<'lab>> {
        let openvpn = crate::prereq::require_tool("openvpn")?;
        // The tunnel carries IPv4. Left with IPv6, the kernel sends router
        // solicitations through tun0 4 s, 8 s… after it appears: traffic
        // that keeps an idle client's NAT mapping alive by chance.
        host.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        let path = host.write_conf(&format!("{label}.conf"), conf)?;
        let cmd = Cmd::new(openvpn.to_string_lossy())
            .args(&["--config", &path.to_string_lossy()])
            .args(&["--writepid", &host.run_dir()?.join(format!("{label}.pid")).to_string_lossy()])
            .label(label);
        let process = host.spawn(cmd)?;
        Ok(OpenvpnDaemon { host, process })
    }

    /// Starts a server and waits until it listens.
    pub fn server(host: Host<'lab>, c: &ServerConfig) -> Result<OpenvpnDaemon<'lab>> {
        let server = OpenvpnDaemon::start(host, "openvpn-server", &server_conf(c))?;
        let proto = match c.transport {
            Transport::Udp => Proto::Udp,
            Transport::Tcp => Proto::Tcp,
        };
        server.process.or_stop(server.process.wait_for_port(proto, OPENVPN_PORT, Duration::from_secs(10)))?;
        server
            .process
            .or_stop(server.process.wait_for_log("Initialization Sequence Completed", Duration::from_secs(10)))?;
        Ok(server)
    }

    /// Starts a client (it dials at once).
    pub fn client(host: Host<'lab>, c: &ClientConfig) -> Result<OpenvpnDaemon<'lab>> {
        OpenvpnDaemon::start(host, "openvpn-client", &client_conf(c))
    }

    /// The openvpn process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Waits until the client's tunnel is up and returns its address, or
    /// why it is not up.
    pub fn wait_until_up(&self, timeout: Duration) -> std::result::Result<Ipv4Addr, String> {
        self.process
            .wait_for_log("Initialization Sequence Completed", timeout)
            .map_err(|e| format!("no tunnel: {}", first_line(&e.to_string())))?;
        self.tun_address().map_err(|e| e.to_string())
    }

    /// The address of the host's `tun0`.
    fn tun_address(&self) -> Result<Ipv4Addr> {
        let out = self.host.run_ok(Cmd::argv(&["ip", "-4", "-o", "address", "show", "dev", "tun0"]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next()?.parse().ok())
            .ok_or_else(|| LabError::Input(format!("host '{}': tun0 has no IPv4 address: {text}", self.host.name())))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials { ca: "/c/ca.crt".into(), cert: "/c/s.crt".into(), key: "/c/s.key".into() }
    }

    #[test]
    fn configs_name_transport_network_float_and_keepalive() {
        let s = server_conf(&ServerConfig {
            listen: Ipv4Addr::new(198, 51, 100, 2),
            transport: Transport::Tcp,
            network: "10.95.1.0/24".parse().expect("net"),
            credentials: creds(),
            float: false,
        });
        assert!(s.contains("proto tcp-server") && s.contains("server 10.95.1.0 255.255.255.0"), "{s}");
        assert!(s.contains("disable-dco") && !s.contains("float"), "{s}");
        let c = client_conf(&ClientConfig {
            server: Ipv4Addr::new(198, 51, 100, 2),
            transport: Transport::Udp,
            credentials: creds(),
            keepalive_s: 0,
        });
        assert!(c.contains("proto udp") && c.contains("remote 198.51.100.2 1194") && !c.contains("ping "), "{c}");
        let c = client_conf(&ClientConfig {
            server: Ipv4Addr::new(198, 51, 100, 2),
            transport: Transport::Udp,
            credentials: creds(),
            keepalive_s: 2,
        });
        assert!(c.contains("ping 2"), "{c}");
    }
}
