//! WireGuard in lab hosts: `wireguard-go` (the kernel here has no WireGuard
//! module, so the userspace implementation does the work) on a `wg0` TUN
//! interface, configured with `wg` from wireguard-tools.
//!
//! Keys are fixed per role and number ([`lab_key`]), so a server knows its
//! clients' public keys before they dial, as a real deployment does.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::lab::{Cmd, Host, LabError, Process, Proto, Result};

pub use crate::wire::wireguard::PORT as WG_PORT;

/// The interface inside a host.
const IFACE: &str = "wg0";

/// A private key for the lab: fixed by `role` (one letter) and `n`, in
/// WireGuard's base64 form. `wg` clamps it like any other.
pub fn lab_key(role: char, n: usize) -> String {
    // 43 base64 digits and the padding: 32 bytes. The last digit before
    // the padding carries 4 bits, so it is one whose low 2 bits are zero.
    // `n` ends in byte 30: clamping rewrites bits of the first and the
    // last byte, and keys that differ only there would be one key.
    format!("{role}{n:0>40}AA=")
}

/// The public key of `private`, from `wg pubkey`.
pub fn public_key(private: &str) -> Result<String> {
    let wg = crate::prereq::require_tool("wg")?;
    let out = duct::cmd!(wg, "pubkey")
        .stdin_bytes(format!("{private}\n"))
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| LabError::io("running wg pubkey", e))?;
    if !out.status.success() {
        return Err(LabError::Input(format!(
            "wg pubkey refused a lab key: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One peer of an interface.
#[derive(Debug, Clone)]
pub struct WgPeer {
    /// Its public key.
    pub public: String,
    /// Where to send to first (a client's server); a server learns its
    /// clients' endpoints from their handshakes.
    pub endpoint: Option<SocketAddrV4>,
    /// The inner addresses it may use.
    pub allowed: Ipv4Net,
    /// `PersistentKeepalive`, seconds (0: none).
    pub keepalive_s: u64,
}

/// One interface: its key, port, address and peers.
#[derive(Debug, Clone)]
pub struct WgConfig {
    /// Its private key.
    pub private: String,
    /// The UDP port to listen on (`None`: any, as a client does).
    pub listen: Option<u16>,
    /// Its inner address and prefix.
    pub address: Ipv4Net,
    /// Its peers.
    pub peers: Vec<WgPeer>,
}

/// The configuration `wg setconf` reads.
pub fn setconf(c: &WgConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "[Interface]\nPrivateKey = {}", c.private);
    if let Some(port) = c.listen {
        let _ = writeln!(s, "ListenPort = {port}");
    }
    for p in &c.peers {
        let _ = writeln!(s, "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}", p.public, p.allowed);
        if let Some(e) = p.endpoint {
            let _ = writeln!(s, "Endpoint = {e}");
        }
        if p.keepalive_s > 0 {
            let _ = writeln!(s, "PersistentKeepalive = {}", p.keepalive_s);
        }
    }
    s
}

/// wireguard-go running in a host, its interface configured and up.
pub struct WireguardGo<'lab> {
    host: Host<'lab>,
    process: Process,
}

impl<'lab> WireguardGo<'lab> {
    /// Starts wireguard-go, configures `wg0` from `c` and brings it up.
    pub fn start(host: Host<'lab>, c: &WgConfig) -> Result<WireguardGo<'lab>> {
        let wg_go = crate::prereq::require_tool("wireguard-go")?;
        crate::prereq::require_tool("wg")?;
        let cmd = Cmd::new(wg_go.to_string_lossy())
            .args(&["-f", IFACE])
            // It runs only on a kernel without WireGuard unless told this.
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .env("LOG_LEVEL", "verbose")
            .label("wireguard-go");
        let process = host.spawn(cmd)?;
        let socket = host.run_dir()?.join("wireguard").join(format!("{IFACE}.sock"));
        process.or_stop(process.wait_for_listener(&socket, Duration::from_secs(10)))?;
        let conf = host.write_conf("wg0.conf", &setconf(c))?;
        let wg = WireguardGo { host, process };
        let steps: [&[&str]; 3] = [
            &["wg", "setconf", IFACE, &conf.to_string_lossy()],
            &["ip", "address", "add", &c.address.to_string(), "dev", IFACE],
            &["ip", "link", "set", "dev", IFACE, "up"],
        ];
        for argv in steps {
            wg.process.or_stop(wg.host.run_ok(Cmd::argv(argv)))?;
        }
        if let Some(port) = c.listen {
            wg.process.or_stop(wg.process.wait_for_port(Proto::Udp, port, Duration::from_secs(5)))?;
        }
        Ok(wg)
    }

    /// The wireguard-go process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The peers (public keys) that have completed a handshake.
    pub fn handshaken(&self) -> Result<Vec<String>> {
        let out = self.host.run_ok(Cmd::argv(&["wg", "show", IFACE, "latest-handshakes"]))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, when)| when.trim().parse::<u64>().is_ok_and(|t| t > 0))
            .map(|(key, _)| key.to_string())
            .collect())
    }

    /// Sends pings to `peer_inner` until one is answered or `timeout`
    /// passes (WireGuard shakes hands on the first packet), then says
    /// whether a handshake with a peer completed.
    pub fn dial(&self, peer_inner: Ipv4Addr, timeout: Duration) -> Result<bool> {
        self.host.answers_ping(peer_inner.into(), timeout)?;
        Ok(!self.handshaken()?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 32 bytes of a key, clamped as X25519 does.
    fn clamped(key: &str) -> Vec<u8> {
        const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bits: Vec<bool> = key
            .trim_end_matches('=')
            .bytes()
            .flat_map(|c| {
                let v = DIGITS.iter().position(|d| *d == c).expect("a base64 digit");
                (0..6).rev().map(move |b| v >> b & 1 == 1)
            })
            .collect();
        let mut bytes: Vec<u8> =
            bits.chunks(8).take(32).map(|c| c.iter().fold(0, |a, b| a << 1 | u8::from(*b))).collect();
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        bytes
    }

    #[test]
    fn lab_keys_stay_distinct_once_clamped() {
        let mut seen = std::collections::BTreeSet::new();
        for role in ['c', 's'] {
            for n in 1..=crate::vpn::pppd::LAB_CLIENTS {
                assert!(seen.insert(clamped(&lab_key(role, n))), "{role}{n} is another key once clamped");
            }
        }
    }

    #[test]
    fn a_lab_key_is_32_bytes_of_base64() {
        let k = lab_key('c', 17);
        assert_eq!(k.len(), 44);
        assert!(k.ends_with("A=") && k.starts_with('c'));
        assert_ne!(lab_key('c', 1), lab_key('s', 1));
        assert_ne!(lab_key('c', 1), lab_key('c', 2));
    }

    #[test]
    fn setconf_names_the_server_endpoint_and_keepalive() {
        let c = WgConfig {
            private: lab_key('c', 1),
            listen: None,
            address: "10.96.1.101/24".parse().expect("net"),
            peers: vec![WgPeer {
                public: "PUB".into(),
                endpoint: Some(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), WG_PORT)),
                allowed: "10.96.1.0/24".parse().expect("net"),
                keepalive_s: 0,
            }],
        };
        let text = setconf(&c);
        assert!(text.contains("Endpoint = 198.51.100.2:51820") && !text.contains("ListenPort"), "{text}");
        assert!(!text.contains("PersistentKeepalive"), "{text}");
        let text = setconf(&WgConfig {
            listen: Some(WG_PORT),
            peers: vec![WgPeer { keepalive_s: 5, endpoint: None, ..c.peers[0].clone() }],
            ..c
        });
        assert!(text.contains("ListenPort = 51820") && text.contains("PersistentKeepalive = 5"), "{text}");
    }
}
