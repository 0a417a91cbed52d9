//! strongSwan in lab hosts: charon with `kernel-libipsec` (userspace ESP
//! over a TUN device: this kernel has no ESP) and `kernel-netlink`, driven
//! with swanctl over the host's own vici socket, tunnel state read over
//! vici.
//!
//! Each host's config lives in its config directory; charon's hard-coded
//! `/run/charon.pid` and `/run/charon.vici` land in the host's private
//! `/run`, so any number of hosts run charon at once.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lab::{Cmd, Host, LabError, Process, Result};

use super::pki::Credentials;
use super::vici::{self, IkeSa, Vici};

/// Where Debian installs charon.
pub const CHARON: &str = "/usr/lib/ipsec/charon";

/// Plugins charon loads: crypto through OpenSSL and strongSwan's own (with
/// `kdf`, which it needs for its PRFs), certificates, userspace ESP,
/// netlink, vici.
const CHARON_PLUGINS: &str = "random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey kdf aes gcm sha1 sha2 hmac gmp attr kernel-libipsec kernel-netlink socket-default vici";

/// The IKE proposals every config names: an AEAD suite, then a CBC+HMAC
/// one. Named, so that what two hosts negotiate does not depend on which
/// plugins happen to be installed; both ends list the same, so the AEAD
/// suite wins wherever [`missing_crypto`] finds nothing missing.
pub const IKE_PROPOSALS: &str = "aes256gcm16-prfsha256-modp2048, aes256-sha256-modp2048";
/// IKEv1 has no AEAD suites for its IKE SA: the CBC+HMAC one alone.
pub const IKEV1_PROPOSALS: &str = "aes256-sha256-modp2048";
/// The ESP proposals every CHILD_SA names: AEAD, then CBC+HMAC.
pub const ESP_PROPOSALS: &str = "aes256gcm16, aes256-sha256";

/// A plugin the named proposals need, and the Debian package it comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoPlugin {
    /// What it provides for the proposals.
    pub provides: &'static str,
    /// Plugins that provide it (any one will do).
    pub any_of: &'static [&'static str],
    /// The Debian package that ships the first of them.
    pub package: &'static str,
}

/// What [`IKE_PROPOSALS`] and [`ESP_PROPOSALS`] need loaded in charon.
pub const CRYPTO_PLUGINS: &[CryptoPlugin] = &[
    CryptoPlugin { provides: "AES-GCM (AEAD)", any_of: &["gcm", "openssl"], package: "libstrongswan-standard-plugins" },
    CryptoPlugin { provides: "AES-CBC", any_of: &["aes", "openssl"], package: "libstrongswan" },
    CryptoPlugin { provides: "SHA-256 and HMAC", any_of: &["sha2", "openssl"], package: "libstrongswan" },
    CryptoPlugin { provides: "HMAC", any_of: &["hmac", "openssl"], package: "libstrongswan" },
    CryptoPlugin { provides: "MODP Diffie-Hellman", any_of: &["gmp", "openssl"], package: "libstrongswan" },
    CryptoPlugin { provides: "PRF+ key derivation", any_of: &["kdf"], package: "libstrongswan" },
    CryptoPlugin { provides: "userspace ESP", any_of: &["kernel-libipsec"], package: "libcharon-extra-plugins" },
];

/// The crypto plugins the named proposals need that are not among
/// `loaded` (as charon lists them).
pub fn missing_crypto(loaded: &[String]) -> Vec<CryptoPlugin> {
    CRYPTO_PLUGINS.iter().filter(|c| !c.any_of.iter().any(|p| loaded.iter().any(|l| l == p))).copied().collect()
}
const SWANCTL_PLUGINS: &str = "random openssl pem pkcs1 pkcs8 x509 pubkey";

/// IKE version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeVersion {
    /// IKEv1 (main mode).
    V1,
    /// IKEv2.
    V2,
}

impl IkeVersion {
    fn number(self) -> u8 {
        match self {
            IkeVersion::V1 => 1,
            IkeVersion::V2 => 2,
        }
    }

    /// The IKE proposals a config of this version names.
    pub fn proposals(self) -> &'static str {
        match self {
            IkeVersion::V1 => IKEV1_PROPOSALS,
            IkeVersion::V2 => IKE_PROPOSALS,
        }
    }
}

/// How the peers authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A pre-shared key.
    Psk(String),
    /// Certificates of a test CA: this end's certificate and key, and the
    /// CA that signed the other end's.
    Cert(Credentials),
}

/// A road-warrior client: gets a virtual IP from the server's pool and a
/// tunnel to the server's inner network.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Connection name (also the CHILD_SA's parent).
    pub name: String,
    /// IKE version.
    pub version: IkeVersion,
    /// Authentication.
    pub auth: Auth,
    /// This client's identity.
    pub id: String,
    /// The server's identity.
    pub server_id: String,
    /// The server's public address.
    pub server: Ipv4Addr,
    /// The server's inner network.
    pub remote_ts: String,
    /// This end's traffic selector, if not the whole virtual IP
    /// (`dynamic[udp/1701]` for L2TP over IPsec).
    pub local_ts: Option<String>,
    /// Let IKE fragment at the IP layer (no IKEv2 fragmentation), so that
    /// large IKE_AUTH messages cross the NAT as IP fragments.
    pub ip_fragments: bool,
    /// IKEv2 mobility (MOBIKE, RFC 4555) offered.
    pub mobike: bool,
    /// Dead peer detection: an IKE liveness check after this long without
    /// traffic from the server (0: none).
    pub dpd_s: u64,
}

/// A road-warrior server: hands out virtual IPs, tunnels to its inner
/// network.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// IKE version.
    pub version: IkeVersion,
    /// Authentication.
    pub auth: Auth,
    /// The server's identity.
    pub id: String,
    /// The server's address.
    pub addr: Ipv4Addr,
    /// The inner network clients reach.
    pub local_ts: String,
    /// The clients' traffic selector, if not their whole virtual IPs.
    pub remote_ts: Option<String>,
    /// The virtual IP pool.
    pub pool: String,
    /// See [`ClientConfig::ip_fragments`].
    pub ip_fragments: bool,
}

/// A CHILD_SA charon was asked to bring up ([`Charon::begin_initiate`]).
pub struct Initiating {
    swanctl: Process,
    child: String,
}

impl Initiating {
    /// Waits up to `timeout` for swanctl's answer, then for the CHILD_SA
    /// over vici; an error says why it is not up.
    pub fn wait(self, charon: &Charon<'_>, timeout: Duration) -> Result<IkeSa> {
        let deadline = std::time::Instant::now() + timeout;
        let swanctl = &self.swanctl;
        // swanctl gives up at its own timeout; the margin lets it say so.
        swanctl.wait_until("answer", timeout + Duration::from_secs(1), || swanctl.exit_status().is_some())?;
        match swanctl.answer() {
            Some(status) if status.success() => {
                charon.wait_for_child(&self.child, deadline.saturating_duration_since(std::time::Instant::now()))
            }
            Some(status) => Err(LabError::Failed {
                host: swanctl.host().to_string(),
                command: swanctl.command_line().to_string(),
                status: crate::lab::process::describe(status),
                output: format!(":\n{}", swanctl.log_tail(10)),
            }),
            None => Err(LabError::Input(format!("host '{}': swanctl never answered", swanctl.host()))),
        }
    }
}

/// The CHILD_SA name both ends use.
pub const CHILD: &str = "net";

/// How charon retransmits a request in the lab: after 0.5 s, each wait 1.2
/// times the last, 4 times, so that an exchange nobody answers gives up
/// after 3.7 s (strongSwan's defaults, 4 s, 1.8 and 5, take 165 s). Links
/// inside one machine answer in microseconds; a lossy story's lost packet
/// is still sent again 4 times.
const RETRANSMIT: (f64, f64, u32) = (0.5, 1.2, 4);

/// Half-open IKE_SAs a lab's charon takes, in all and from one address,
/// before it asks for cookies or drops: past strongSwan's defences against
/// floods (cookies past 10 half-open in all or 3 from one address, drops
/// past 5 from one address). Every client behind a NAT reaches the server
/// from the router's one public address: with the defaults, 50 clients
/// dialling at once on a loaded machine were answered with cookies and
/// drops and retransmitted into them, and a few of them ended in
/// AUTHENTICATION_FAILED ("MAC mismatched") after a cookie exchange. That
/// is the server's policy, not the router's passthrough.
const HALF_OPEN: u32 = 10_000;

/// strongswan.conf for a host: `keepalive` is the NAT-T keepalive interval
/// (zero: none).
pub fn strongswan_conf(keepalive: Duration) -> String {
    let (timeout, base, tries) = RETRANSMIT;
    format!(
        "charon {{\n  load_modular = no\n  load = {CHARON_PLUGINS}\n  port = 500\n  port_nat_t = 4500\n  keep_alive = {}s\n  retransmit_timeout = {timeout}\n  retransmit_base = {base}\n  retransmit_tries = {tries}\n  cookie_threshold = {HALF_OPEN}\n  cookie_threshold_ip = {HALF_OPEN}\n  block_threshold = {HALF_OPEN}\n  install_routes = yes\n  install_virtual_ip = yes\n  filelog {{\n    stderr {{\n      default = 1\n      ike = 2\n      cfg = 2\n      time_format = %T\n    }}\n  }}\n}}\nswanctl {{\n  load = {SWANCTL_PLUGINS}\n}}\n",
        keepalive.as_secs()
    )
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The swanctl directory layout beside swanctl.conf holds certificates
/// (`x509/`, `x509ca/`) and keys (`private/`): names are relative to it.
fn auth_block(auth: &Auth, id: &str) -> String {
    match auth {
        Auth::Psk(_) => format!("auth = psk\n      id = {id}"),
        Auth::Cert(Credentials { cert, .. }) => {
            format!("auth = pubkey\n      certs = {}\n      id = {id}", file_name(cert))
        }
    }
}

fn remote_block(auth: &Auth, id: Option<&str>) -> String {
    let id = id.map(|i| format!("\n      id = {i}")).unwrap_or_default();
    match auth {
        Auth::Psk(_) => format!("auth = psk{id}"),
        Auth::Cert(Credentials { ca, .. }) => format!("auth = pubkey\n      cacerts = {}{id}", file_name(ca)),
    }
}

fn secrets(auth: &Auth) -> String {
    match auth {
        Auth::Psk(secret) => format!("secrets {{\n  ike-any {{\n    secret = \"{secret}\"\n  }}\n}}\n"),
        Auth::Cert(_) => String::new(),
    }
}

/// swanctl.conf of a client.
pub fn client_conf(c: &ClientConfig) -> String {
    clients_conf(std::slice::from_ref(c))
}

/// The name of a client's `k`th connection (from 0) in [`clients_conf`]:
/// `base`, then `base2`, `base3`…
pub fn conn_name(base: &str, k: usize) -> String {
    if k == 0 { base.to_string() } else { format!("{base}{}", k + 1) }
}

/// The CHILD_SA name of a client's `k`th connection (from 0) in
/// [`clients_conf`]: [`CHILD`], then `net2`, `net3`…
pub fn child_name(k: usize) -> String {
    conn_name(CHILD, k)
}

/// swanctl.conf of a client with one connection per config, each with its
/// own CHILD_SA ([`child_name`]); the secrets are the first's.
pub fn clients_conf(cs: &[ClientConfig]) -> String {
    let mut s = String::from("connections {\n");
    for (k, c) in cs.iter().enumerate() {
        let _ = write!(
            s,
            "  {name} {{\n    version = {v}\n    remote_addrs = {server}\n    vips = 0.0.0.0\n    fragmentation = {frag}\n    mobike = {mobike}\n{dpd}    proposals = {ike}\n    local {{\n      {local}\n    }}\n    remote {{\n      {remote}\n    }}\n    children {{\n      {child} {{\n        remote_ts = {ts}{local_ts}\n        esp_proposals = {ESP_PROPOSALS}\n        start_action = none\n      }}\n    }}\n  }}\n",
            name = c.name,
            v = c.version.number(),
            ike = c.version.proposals(),
            server = c.server,
            frag = if c.ip_fragments { "no" } else { "yes" },
            mobike = if c.mobike { "yes" } else { "no" },
            dpd = if c.dpd_s > 0 { format!("    dpd_delay = {}s\n", c.dpd_s) } else { String::new() },
            local = auth_block(&c.auth, &c.id),
            remote = remote_block(&c.auth, Some(&c.server_id)),
            child = child_name(k),
            ts = c.remote_ts,
            local_ts = c.local_ts.as_ref().map(|t| format!("\n        local_ts = {t}")).unwrap_or_default(),
        );
    }
    s.push_str("}\n");
    if let Some(c) = cs.first() {
        s.push_str(&secrets(&c.auth));
    }
    s
}

/// swanctl.conf of a server.
pub fn server_conf(c: &ServerConfig) -> String {
    let mut s = String::from("connections {\n");
    let _ = write!(
        s,
        "  rw {{\n    version = {v}\n    local_addrs = {addr}\n    pools = rw\n    fragmentation = {frag}\n    proposals = {ike}\n    local {{\n      {local}\n    }}\n    remote {{\n      {remote}\n    }}\n    children {{\n      {CHILD} {{\n        local_ts = {ts}{remote_ts}\n        esp_proposals = {ESP_PROPOSALS}\n      }}\n    }}\n  }}\n}}\npools {{\n  rw {{\n    addrs = {pool}\n  }}\n}}\n",
        v = c.version.number(),
        ike = c.version.proposals(),
        addr = c.addr,
        frag = if c.ip_fragments { "no" } else { "yes" },
        local = auth_block(&c.auth, &c.id),
        remote = remote_block(&c.auth, None),
        ts = c.local_ts,
        remote_ts = c.remote_ts.as_ref().map(|t| format!("\n        remote_ts = {t}")).unwrap_or_default(),
        pool = c.pool,
    );
    s.push_str(&secrets(&c.auth));
    s
}

/// charon running in a host.
pub struct Charon<'lab> {
    host: Host<'lab>,
    process: Process,
    strongswan_conf: PathBuf,
    vici: PathBuf,
}

impl<'lab> Charon<'lab> {
    /// Writes the host's strongswan.conf, starts charon, waits for its vici
    /// socket.
    pub fn start(host: Host<'lab>, keepalive: Duration) -> Result<Charon<'lab>> {
        let charon = crate::prereq::require_tool("charon")?;
        crate::prereq::require_tool("kernel-libipsec")?;
        crate::prereq::require_tool("swanctl")?;
        let conf = host.write_conf("strongswan.conf", &strongswan_conf(keepalive))?;
        let process = host
            .spawn(Cmd::new(charon.to_string_lossy()).env("STRONGSWAN_CONF", conf.to_string_lossy()).label("charon"))?;
        let vici = host.run_dir()?.join("charon.vici");
        process.or_stop(process.wait_for_listener(&vici, Duration::from_secs(15)))?;
        let charon = Charon { host, process, strongswan_conf: conf, vici };
        charon.require_crypto()?;
        Ok(charon)
    }

    /// The charon process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    fn swanctl(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let out = self.host.run_ok(
            Cmd::new("swanctl")
                .args(args)
                .env("STRONGSWAN_CONF", self.strongswan_conf.to_string_lossy())
                .timeout(timeout)
                .label("swanctl"),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads a swanctl.conf (written to the host's config directory), with
    /// the certificates and key `auth` names copied beside it.
    pub fn load(&self, swanctl_conf: &str, auth: &Auth) -> Result<()> {
        if let Auth::Cert(Credentials { ca, cert, key }) = auth {
            let dir = self.host.conf_dir()?;
            for (sub, file) in [("x509ca", ca), ("x509", cert), ("private", key)] {
                let to = dir.join(sub).join(file_name(file));
                std::fs::create_dir_all(dir.join(sub))
                    .and_then(|_| std::fs::copy(file, &to))
                    .map_err(|e| LabError::io(format!("copying {} to {}", file.display(), to.display()), e))?;
            }
        }
        let path = self.host.write_conf("swanctl.conf", swanctl_conf)?;
        self.swanctl(&["--load-all", "--noprompt", "--file", &path.to_string_lossy()], Duration::from_secs(15))?;
        Ok(())
    }

    /// Brings a CHILD_SA up and waits for it (swanctl returns when charon
    /// has an answer); then checks the state over vici.
    pub fn initiate(&self, child: &str, timeout: Duration) -> Result<IkeSa> {
        self.begin_initiate(child, timeout)?.wait(self, timeout)
    }

    /// Starts bringing a CHILD_SA up, without waiting: swanctl runs in the
    /// background until charon has an answer or `timeout` passed.
    pub fn begin_initiate(&self, child: &str, timeout: Duration) -> Result<Initiating> {
        let secs = timeout.as_secs().max(1).to_string();
        let swanctl = self.host.spawn(
            Cmd::new("swanctl")
                .args(&["--initiate", "--child", child, "--timeout", &secs])
                .env("STRONGSWAN_CONF", self.strongswan_conf.to_string_lossy())
                .label("swanctl-initiate"),
        )?;
        Ok(Initiating { swanctl, child: child.to_string() })
    }

    /// Rekeys the IKE_SA `ike` and its CHILD_SA `child` (new SPIs both), and
    /// waits until the CHILD_SA is installed again.
    pub fn rekey(&self, ike: &str, child: &str, timeout: Duration) -> Result<IkeSa> {
        self.swanctl(&["--rekey", "--ike", ike], timeout)?;
        // The CHILD_SA moves to the new IKE_SA: until it is installed there,
        // swanctl finds no SA to rekey (seen once in CI as "no matching SAs
        // to rekey found").
        self.wait_for_child(child, timeout)?;
        self.swanctl(&["--rekey", "--child", child], timeout)?;
        self.wait_for_child(child, timeout)
    }

    /// The plugins charon really loaded, over vici (`stats`).
    pub fn plugins(&self) -> Result<Vec<String>> {
        let what = || format!("host '{}': charon's plugins", self.host.name());
        let stats =
            Vici::connect(&self.vici).and_then(|mut v| v.request("stats")).map_err(|e| LabError::io(what(), e))?;
        Ok(stats.list("plugins").map(<[String]>::to_vec).unwrap_or_default())
    }

    /// Fails, naming the package, when charon lacks a plugin the named
    /// proposals need.
    pub fn require_crypto(&self) -> Result<()> {
        let missing = missing_crypto(&self.plugins()?);
        if missing.is_empty() {
            return Ok(());
        }
        let what: Vec<String> = missing
            .iter()
            .map(|c| format!("{} ({}; package {})", c.provides, c.any_of.join(" or "), c.package))
            .collect();
        let mut packages: Vec<&str> = missing.iter().map(|c| c.package).collect();
        packages.dedup();
        Err(LabError::Input(format!(
            "host '{}': charon loaded no plugin for {}; fix: apt-get install -y {}   (or `ci/install-deps`)",
            self.host.name(),
            what.join(", "),
            packages.join(" ")
        )))
    }

    /// The IKE_SAs charon has, over vici.
    pub fn sas(&self) -> Result<Vec<IkeSa>> {
        let mut v =
            Vici::connect(&self.vici).map_err(|e| LabError::io(format!("host '{}': vici", self.host.name()), e))?;
        let (events, _) = v
            .streamed("list-sas", "list-sa")
            .map_err(|e| LabError::io(format!("host '{}': listing SAs", self.host.name()), e))?;
        Ok(vici::ike_sas(&events))
    }

    /// Waits until an IKE_SA is established with `child` installed.
    pub fn wait_for_child(&self, child: &str, timeout: Duration) -> Result<IkeSa> {
        let mut found = None;
        self.process.wait_until(&format!("install CHILD_SA {child}"), timeout, || {
            found = self.sas().ok().and_then(|sas| {
                sas.into_iter().find(|sa| {
                    sa.state == "ESTABLISHED" && sa.children.iter().any(|c| c.name == child && c.state == "INSTALLED")
                })
            });
            found.is_some()
        })?;
        found.ok_or_else(|| LabError::Input(format!("host '{}': {child} vanished", self.host.name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, server: [u8; 4], mobike: bool, dpd_s: u64) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            version: IkeVersion::V2,
            auth: Auth::Psk("s".into()),
            id: "client1".into(),
            server_id: "server1".into(),
            server: Ipv4Addr::from(server),
            remote_ts: "10.10.0.1/32".into(),
            local_ts: None,
            ip_fragments: false,
            mobike,
            dpd_s,
        }
    }

    #[test]
    fn a_client_conf_holds_one_connection_per_config_each_with_its_own_child() {
        let one = client_conf(&config("home", [198, 51, 100, 2], true, 0));
        assert!(one.contains("mobike = yes") && !one.contains("dpd_delay"), "{one}");
        assert_eq!(one.matches("secrets {").count(), 1);
        let two =
            clients_conf(&[config("home", [198, 51, 100, 2], false, 2), config("home2", [198, 51, 100, 3], false, 2)]);
        assert!(two.contains("home2 {") && two.contains("remote_addrs = 198.51.100.3"), "{two}");
        assert!(two.contains(&format!("      {} {{", child_name(0))) && two.contains("      net2 {"), "{two}");
        assert_eq!((two.matches("mobike = no").count(), two.matches("dpd_delay = 2s").count()), (2, 2));
        assert_eq!(two.matches("secrets {").count(), 1, "one secret for all");
        // Braces balance: the file parses as one `connections` block.
        assert_eq!(two.matches('{').count(), two.matches('}').count());
    }
}
