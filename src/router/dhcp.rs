//! DHCP, as a router from the box expects it: the suite serves the WAN
//! (dnsmasq, as an ISP would) and the lab's LAN hosts ask the router for
//! their addresses (busybox's udhcpc, as a PC would).
//!
//! The command lines live here once, for the lab's hosts and for the
//! stand-in router the tests build outside any lab.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::lab::{Cmd, Host, LabError, Process, Result};

/// How long a lease may take: a router from the box can be slow to answer
/// its first DISCOVER, and one whose WAN client found no server before the
/// first lab backs off between DISCOVERs (up to 64 s, RFC 2131 §4.1).
pub const LEASE_WAIT: Duration = Duration::from_secs(90);
/// The lease time the suite's own server hands out.
const LEASE_TIME: &str = "1h";

/// What udhcpc runs at each event: applies the lease to the interface and
/// prints it as `lease ADDR/LEN router ADDR|none`.
pub const CLIENT_SCRIPT: &str = r#"#!/bin/sh
# udhcpc's events: put the lease on the interface and say what it was.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface" || exit 1
    set -- $router
    if [ -n "$1" ]; then ip route replace default via "$1" dev "$interface"; fi
    echo "lease $ip/${mask:-24} router ${1:-none}"
    ;;
esac
"#;

/// A lease: the address with its prefix, and the router option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The leased address and the subnet's prefix length.
    pub addr: Ipv4Net,
    /// The default gateway the server named, if any.
    pub router: Option<Ipv4Addr>,
}

impl Lease {
    /// The lease a `lease ADDR/LEN router ADDR|none` line reports.
    pub fn parse(line: &str) -> Option<Lease> {
        let mut w = line.trim().strip_prefix("lease ")?.split_whitespace();
        let addr = w.next()?.parse().ok()?;
        if w.next()? != "router" {
            return None;
        }
        let router = match w.next()? {
            "none" => None,
            r => Some(r.parse().ok()?),
        };
        Some(Lease { addr, router })
    }

    /// The router's LAN address and the LAN prefix, as the lease tells
    /// them: the router option on the leased subnet.
    pub fn gateway(&self) -> Option<Ipv4Net> {
        let router = self.router?;
        Ipv4Net::new(router, self.addr.prefix_len()).ok().filter(|n| n.contains(&self.addr.addr()))
    }
}

/// dnsmasq's arguments to serve DHCP on `iface` (and no DNS), handing out
/// addresses `first` to `last` of `net` with `router` as the gateway, in
/// the foreground, its leases in `leases`. Any client may renew an address
/// in the range (`--dhcp-authoritative`): a router keeps its WAN lease from
/// one lab to the next.
pub fn server_args(
    iface: &str,
    net: Ipv4Net,
    first: Ipv4Addr,
    last: Ipv4Addr,
    router: Option<Ipv4Addr>,
    leases: &str,
) -> Vec<String> {
    let mut v = vec![
        "--keep-in-foreground".to_string(),
        "--log-facility=-".into(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        format!("--interface={iface}"),
        "--bind-interfaces".into(),
        format!("--dhcp-range={first},{last},{},{LEASE_TIME}", net.netmask()),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        format!("--dhcp-leasefile={leases}"),
        "--pid-file=".into(),
        "--user=root".into(),
    ];
    match router {
        Some(r) => v.push(format!("--dhcp-option=option:router,{r}")),
        None => v.push("--dhcp-option=option:router".into()),
    }
    v
}

/// udhcpc's arguments to lease an address for `iface`, asking for `wanted`
/// and naming itself `id` (option 61, so that a host of the same name in
/// the next lab gets its lease back, whatever its MAC address), running
/// `script`. With `once`, it exits when it has a lease (or has given up);
/// without, it keeps renewing and retries every second until a server
/// answers.
pub fn client_args(iface: &str, wanted: Option<Ipv4Addr>, id: &str, script: &str, once: bool) -> Vec<String> {
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    let mut v = vec!["udhcpc".to_string(), "-f".into(), "-i".into(), iface.into(), "-s".into(), script.into()];
    v.extend(["-x".into(), format!("0x3d:00{hex}"), "-x".into(), format!("hostname:{id}")]);
    if let Some(w) = wanted {
        v.extend(["-r".into(), w.to_string()]);
    }
    if once {
        let tries = LEASE_WAIT.as_secs().to_string();
        v.extend(["-q".into(), "-n".into(), "-t".into(), tries, "-T".into(), "1".into()]);
    } else {
        v.extend(["-t".into(), "1000000".into(), "-T".into(), "1".into(), "-A".into(), "1".into()]);
    }
    v
}

/// Serves DHCP from `host`'s `iface`: `net`'s addresses `first` to `last`,
/// `router` as the gateway.
pub fn serve(
    host: &Host<'_>,
    iface: &str,
    net: Ipv4Net,
    range: (Ipv4Addr, Ipv4Addr),
    router: Option<Ipv4Addr>,
) -> Result<Process> {
    crate::prereq::require_tool("dnsmasq")?;
    let dev = host.ifname(iface)?;
    let leases = host.run_dir()?.join("dnsmasq.leases");
    let args = server_args(&dev, net, range.0, range.1, router, &leases.to_string_lossy());
    let p = host.spawn(Cmd::new("dnsmasq").args(&args).label("dnsmasq"))?;
    p.or_stop(p.wait_for_log("DHCP, IP range", Duration::from_secs(5)))?;
    Ok(p)
}

/// Leases an address for `host`'s `iface` from whatever DHCP server its
/// link has, asking for `wanted`; the address is on the interface (and the
/// default route through the lease's router) when it returns.
pub fn lease(host: &Host<'_>, iface: &str, wanted: Option<Ipv4Addr>) -> Result<Lease> {
    crate::prereq::require_tool("busybox")?;
    let dev = host.ifname(iface)?;
    let script = host.write_conf("udhcpc.sh", CLIENT_SCRIPT)?;
    make_executable(&script)?;
    let args = client_args(&dev, wanted, host.name(), &script.to_string_lossy(), true);
    let cmd = Cmd::new("busybox").args(&args).label("udhcpc").timeout(LEASE_WAIT + Duration::from_secs(5));
    let out = host.exec(cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(Lease::parse).ok_or_else(|| {
        LabError::Input(format!(
            "host '{}': no DHCP lease on {iface} within {} s: is the router's DHCP server on? {}",
            host.name(),
            LEASE_WAIT.as_secs(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
        ))
    })
}

/// Makes the client script executable (it is written as a configuration
/// file).
pub fn make_executable(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| LabError::io(format!("making {} executable", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_line_reads_back() {
        let l = Lease::parse("lease 192.168.1.10/24 router 192.168.1.1").expect("a lease");
        assert_eq!(l.addr.to_string(), "192.168.1.10/24");
        assert_eq!(l.gateway().map(|g| g.to_string()), Some("192.168.1.1/24".into()));
        let none = Lease::parse("lease 10.0.0.5/8 router none").expect("a lease");
        assert_eq!(none.gateway(), None);
        assert_eq!(Lease::parse("lease 10.0.0.5/8"), None);
        assert_eq!(Lease::parse("udhcpc: sending discover"), None);
        // A router option off the leased subnet is no gateway.
        assert_eq!(Lease::parse("lease 10.0.0.5/24 router 10.0.9.1").and_then(|l| l.gateway()), None);
    }

    #[test]
    fn a_client_names_itself_so_the_next_lab_gets_its_lease_back() {
        let a = client_args("eth0", Some(Ipv4Addr::new(192, 168, 1, 10)), "c1", "/s", true);
        assert!(a.windows(2).any(|w| w == ["-x", "0x3d:006331"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["-r", "192.168.1.10"]));
        assert!(a.contains(&"-q".to_string()) && a.contains(&"-n".to_string()));
        let s = server_args(
            "eth0",
            "198.51.100.0/24".parse().expect("net"),
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 1),
            None,
            "/l",
        );
        assert!(s.contains(&"--dhcp-range=198.51.100.1,198.51.100.1,255.255.255.0,1h".to_string()), "{s:?}");
    }
}
