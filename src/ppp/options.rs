//! The argument lists pppd gets from pptpd (`pptpctrl`), pptp and xl2tpd,
//! and the option files they name (`file PATH`), read the way pppd reads
//! them: words, `#` comments, quotes. Unknown options are kept to be logged
//! and ignored; a malformed value is an error.
//!
//! Secrets follow pppd: `password` is only the secret we authenticate
//! ourselves with; the secret a peer must know comes from a secrets file in
//! the format of pppd's `chap-secrets` (`client server secret [*]` lines),
//! which this peer reads from the file `secrets-file PATH` names (it never
//! reads `/etc/ppp`). As pppd does, it refuses to start when it must
//! authenticate the peer and has no secret to do it with.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::session::{AuthProto, Secret};

/// What the PPP peer was asked to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// The tty to use (a `/dev/...` argument); stdin when absent.
    pub device: Option<PathBuf>,
    /// A command to run with a pseudo-terminal as its standard input and
    /// output, whose other end is the line (`pty SCRIPT`, as pppd does):
    /// how pptp runs as `pptp SERVER --nolaunchpppd`.
    pub pty: Option<String>,
    /// Line speed (meaningless on a pty; accepted).
    pub speed: Option<u32>,
    /// Our address (`L:R`, left side).
    pub local: Option<Ipv4Addr>,
    /// The address to give the peer (`L:R`, right side).
    pub remote: Option<Ipv4Addr>,
    /// Authentication to require of the peer.
    pub require: Option<AuthProto>,
    /// The option that asked for it (`require-chap`, `require-pap`,
    /// `auth`), for errors.
    pub required_by: Option<String>,
    /// The peer must authenticate (`auth`, `require-pap` or
    /// `require-chap`, and no `noauth` after them); with `auth` alone, by
    /// CHAP.
    pub auth: bool,
    /// The name we authenticate ourselves with (`user`).
    pub user: Option<String>,
    /// Our local name (`name`): the name in our challenges and the server
    /// name of the secrets a peer authenticates with; the one we
    /// authenticate with when `user` is not given. The host name when absent.
    pub name: Option<String>,
    /// The secret we authenticate ourselves with (`password`); never the
    /// one a peer must know.
    pub password: Option<String>,
    /// The peer's name for finding our own secret (`remotename`).
    pub remotename: Option<String>,
    /// The lines of the secrets files (`secrets-file PATH`).
    pub secrets: Vec<Secret>,
    /// `ipparam`, passed through to logs.
    pub ipparam: Option<String>,
    /// Keep waiting for the peer when our LCP requests go unanswered.
    pub passive: bool,
    /// Send nothing until the peer's first LCP packet.
    pub silent: bool,
    /// Our MRU.
    pub mru: Option<u16>,
    /// The MTU to set on the interface.
    pub mtu: Option<u16>,
    /// LCP echo interval.
    pub echo_interval: Option<Duration>,
    /// LCP echo failures before giving up.
    pub echo_failure: Option<u32>,
    /// How often an unanswered LCP Configure-Request is sent again.
    pub lcp_restart: Option<Duration>,
    /// LCP Configure-Requests before giving up.
    pub lcp_max_configure: Option<u32>,
    /// Where to log.
    pub logfile: Option<PathBuf>,
    /// Options this PPP peer does not act on, logged.
    pub ignored: Vec<String>,
}

/// Options that take a value this PPP peer does not use.
const IGNORED_WITH_VALUE: &[&str] = &[
    "linkname",
    "ms-dns",
    "ms-wins",
    "plugin",
    "connect",
    "disconnect",
    "idle",
    "maxfail",
    "holdoff",
    "init",
    "asyncmap",
    "escape",
    "remotenumber",
    "chap-interval",
    "chap-restart",
    "chap-max-challenge",
    "pap-restart",
    "pap-max-authreq",
    "ipcp-restart",
    "ipcp-max-configure",
    "connect-delay",
    "unit",
    "welcome",
    "netmask",
    "kdebug",
    "mppe",
];

/// Splits an options file into words (pppd syntax: `#` to end of line,
/// single or double quotes, backslash escapes).
pub fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') | (None, '\\') => {
                cur.push(chars.next().ok_or("a backslash at the end")?);
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("an unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Reads a secrets file (pppd's `chap-secrets` format): one `client server
/// secret` line per entry, `*` in a name for any name; `#` comments and
/// quotes as in options files. pppd's address lists are accepted only as
/// `*` (this peer hands out the address it is given), and `@file` secrets
/// not at all.
pub fn secrets(text: &str) -> Result<Vec<Secret>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: &str| format!("line {}: {e}", n + 1);
        let w = words(line).map_err(|e| at(&e))?;
        match w.as_slice() {
            [] => {}
            [client, server, secret, addrs @ ..] => {
                if !addrs.iter().all(|a| a == "*") {
                    return Err(at(&format!(
                        "addresses {addrs:?}: only `*` is supported (the address a peer gets is the L:R option's)"
                    )));
                }
                if secret.starts_with('@') {
                    return Err(at("secrets read from a file (`@PATH`) are not supported; write the secret"));
                }
                out.push(Secret { client: client.clone(), server: server.clone(), secret: secret.clone() });
            }
            _ => return Err(at("a line needs a client, a server and a secret")),
        }
    }
    Ok(out)
}

/// The machine's host name, pppd's default for `name`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vpn-passthrough".into())
}

fn parse_addr(s: &str, what: &str) -> Result<Option<Ipv4Addr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| format!("{what} '{s}' is not an IPv4 address"))
}

impl Options {
    /// Reads an argument list; `file` options are read and parsed in place.
    /// Fails, as pppd does, when the peer must authenticate and no secret
    /// for it is configured.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        o.apply(args, 0)?;
        if o.auth && o.require.is_none() {
            o.require = Some(AuthProto::ChapMd5);
        }
        o.check_secrets()?;
        Ok(o)
    }

    /// Our name: `name`, or the host name.
    pub fn our_name(&self) -> String {
        self.name.clone().unwrap_or_else(host_name)
    }

    /// With authentication required, a peer must have a secret to
    /// authenticate to us with: a secrets line for our name (or `*`).
    fn check_secrets(&self) -> Result<(), String> {
        let Some(proto) = self.require else { return Ok(()) };
        let ours = self.our_name();
        if self.secrets.iter().any(|s| s.server == ours || s.server == "*") {
            return Ok(());
        }
        let option = self.required_by.as_deref().unwrap_or("auth");
        let proto = match proto {
            AuthProto::Pap => "PAP",
            AuthProto::ChapMd5 => "CHAP",
        };
        Err(format!(
            "option '{option}': the peer must authenticate itself ({proto}), but no secret is configured for it \
             to do so: name a secrets file with `secrets-file PATH` whose lines give each peer's name, ours and \
             the secret (`client1 {ours:?} \"secret\" *`, pppd's chap-secrets format), or drop the requirement \
             with `noauth`. (`password` is only the secret we authenticate ourselves with.)"
        ))
    }

    fn apply(&mut self, args: &[String], depth: usize) -> Result<(), String> {
        if depth > 8 {
            return Err("options files include each other too deeply".into());
        }
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("option '{name}' needs a value"));
            let number = |name: &str, v: &str| {
                v.parse::<u32>().map_err(|_| format!("option '{name}' needs a number, not '{v}'"))
            };
            match arg.as_str() {
                "file" => {
                    let path = value("file")?;
                    let text = std::fs::read_to_string(&path).map_err(|e| format!("options file {path}: {e}"))?;
                    let w = words(&text).map_err(|e| format!("options file {path}: {e}"))?;
                    self.apply(&w, depth + 1).map_err(|e| format!("options file {path}: {e}"))?;
                }
                "pty" => self.pty = Some(value("pty")?),
                "user" => self.user = Some(value("user")?),
                "name" => self.name = Some(value("name")?),
                "password" => self.password = Some(value("password")?),
                "remotename" => self.remotename = Some(value("remotename")?),
                "secrets-file" => {
                    let path = value("secrets-file")?;
                    let text = std::fs::read_to_string(&path).map_err(|e| format!("secrets file {path}: {e}"))?;
                    self.secrets.extend(secrets(&text).map_err(|e| format!("secrets file {path}: {e}"))?);
                }
                "ipparam" => self.ipparam = Some(value("ipparam")?),
                "logfile" => self.logfile = Some(PathBuf::from(value("logfile")?)),
                "mtu" => {
                    let v = value("mtu")?;
                    self.mtu = Some(number("mtu", &v)?.clamp(64, 65535) as u16);
                }
                "mru" => {
                    let v = value("mru")?;
                    self.mru = Some(number("mru", &v)?.clamp(64, 65535) as u16);
                }
                "lcp-echo-interval" => {
                    let v = value("lcp-echo-interval")?;
                    let secs = number("lcp-echo-interval", &v)?;
                    self.echo_interval = (secs > 0).then(|| Duration::from_secs(u64::from(secs)));
                }
                "lcp-echo-failure" => {
                    let v = value("lcp-echo-failure")?;
                    self.echo_failure = Some(number("lcp-echo-failure", &v)?);
                }
                "lcp-restart" => {
                    let v = value("lcp-restart")?;
                    let secs = number("lcp-restart", &v)?.clamp(1, 60);
                    self.lcp_restart = Some(Duration::from_secs(u64::from(secs)));
                }
                "lcp-max-configure" => {
                    let v = value("lcp-max-configure")?;
                    self.lcp_max_configure = Some(number("lcp-max-configure", &v)?.clamp(1, 100));
                }
                "require-pap" | "require-chap" => {
                    self.require = Some(if arg == "require-pap" { AuthProto::Pap } else { AuthProto::ChapMd5 });
                    self.auth = true;
                    self.required_by = Some(arg.clone());
                }
                "auth" => {
                    self.auth = true;
                    self.required_by.get_or_insert_with(|| "auth".into());
                }
                "require-mschap" | "require-mschap-v2" | "require-eap" => {
                    return Err(format!(
                        "option '{arg}': this PPP peer speaks PAP and CHAP-MD5 only; use require-chap"
                    ));
                }
                "noauth" => {
                    self.require = None;
                    self.auth = false;
                    self.required_by = None;
                }
                "passive" => self.passive = true,
                "silent" => self.silent = true,
                name if IGNORED_WITH_VALUE.contains(&name) => {
                    let v = value(name)?;
                    self.ignored.push(format!("{name} {v}"));
                }
                a if a.starts_with("/dev/") => self.device = Some(PathBuf::from(a)),
                a if a.bytes().all(|b| b.is_ascii_digit()) && !a.is_empty() => self.speed = Some(number("speed", a)?),
                a if a.contains(':') && a.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ':') => {
                    let (l, r) = a.split_once(':').unwrap_or((a, ""));
                    if let Some(local) = parse_addr(l, "local address")? {
                        self.local = Some(local);
                    }
                    if let Some(remote) = parse_addr(r, "remote address")? {
                        self.remote = Some(remote);
                    }
                }
                other => self.ignored.push(other.to_string()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_argument_lists_of_pptpctrl_pptp_and_xl2tpd_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = dir.path().join("secrets");
        std::fs::write(&secrets, "# client server secret\nclient1 \"lab user\" \"lab secret\" *\n").expect("write");
        let opts = dir.path().join("options");
        std::fs::write(
            &opts,
            format!(
                "# server side\nrequire-chap\nname \"lab user\"  # our name\nsecrets-file {}\nms-dns 10.0.0.53\nnobsdcomp\n",
                secrets.display()
            ),
        )
        .expect("write");
        let f = opts.to_string_lossy();
        let pptpctrl =
            Options::parse(&args(&format!("local file {f} 115200 10.97.0.1:10.97.0.100 ipparam 198.51.100.1")))
                .expect("pptpctrl's arguments");
        assert_eq!(pptpctrl.device, None, "the pty is on stdin");
        assert_eq!(
            (pptpctrl.local, pptpctrl.remote),
            (Some(Ipv4Addr::new(10, 97, 0, 1)), Some(Ipv4Addr::new(10, 97, 0, 100)))
        );
        assert_eq!(pptpctrl.require, Some(AuthProto::ChapMd5));
        assert_eq!(pptpctrl.our_name(), "lab user");
        assert_eq!(
            pptpctrl.secrets,
            vec![Secret { client: "client1".into(), server: "lab user".into(), secret: "lab secret".into() }]
        );
        assert_eq!(pptpctrl.speed, Some(115200));
        assert!(pptpctrl.ignored.contains(&"ms-dns 10.0.0.53".to_string()));
        let pptp = Options::parse(&args(&format!("/dev/pts/3 38400 file {f} ipparam vpn"))).expect("pptp's arguments");
        assert_eq!(pptp.device, Some(PathBuf::from("/dev/pts/3")));
        let pty = Options::parse(
            &args(&format!("file {f}"))
                .into_iter()
                .chain(["pty".into(), "pptp 198.51.100.2 --nolaunchpppd".into()])
                .collect::<Vec<_>>(),
        )
        .expect("pppd running pptp on a pty");
        assert_eq!(pty.pty.as_deref(), Some("pptp 198.51.100.2 --nolaunchpppd"));
        assert_eq!(pty.device, None);
        let timers = Options::parse(&args("lcp-restart 1 lcp-max-configure 4")).expect("LCP timers");
        assert_eq!((timers.lcp_restart, timers.lcp_max_configure), (Some(Duration::from_secs(1)), Some(4)));
        assert!(timers.ignored.is_empty(), "acted on, not ignored: {:?}", timers.ignored);
        let named = Options::parse(&args("name lns user client1 password x remotename lns")).expect("names");
        assert_eq!((named.name.as_deref(), named.user.as_deref()), (Some("lns"), Some("client1")));
        assert_eq!(named.remotename.as_deref(), Some("lns"));
        let lac = Options::parse(&args(&format!("/dev/pts/0 passive nodetach : file {f}"))).expect("xl2tpd LAC");
        assert!(lac.passive);
        assert_eq!((lac.local, lac.remote), (None, None));
        let lns = Options::parse(&args("/dev/pts/1 passive nodetach 10.97.0.1:10.97.0.100")).expect("xl2tpd LNS");
        assert_eq!(lns.local, Some(Ipv4Addr::new(10, 97, 0, 1)));
        // What xl2tpd passes an LNS with `require chap = yes`.
        let lns = Options::parse(&args(&format!(
            "/dev/pts/1 passive nodetach 10.97.0.1:10.97.0.100 refuse-pap auth require-chap name lns file {f}"
        )))
        .expect("xl2tpd LNS with CHAP");
        assert_eq!((lns.require, lns.our_name().as_str()), (Some(AuthProto::ChapMd5), "lab user"), "the file's name");
    }

    #[test]
    fn requiring_authentication_without_a_secret_for_the_peer_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = dir.path().join("secrets");
        std::fs::write(&secrets, "client1 lns s3cr3t\n\"client 2\" * 'other secret' *  # any server\n").expect("write");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "client1 other-server s3cr3t *\n").expect("write");
        let (secrets, elsewhere) = (secrets.display(), elsewhere.display());
        for (line, option) in [
            ("require-chap name lns".to_string(), "require-chap"),
            ("name lns require-pap password s3cr3t".into(), "require-pap"),
            ("name lns password s3cr3t user lns auth".into(), "auth"),
            (format!("name lns auth require-chap secrets-file {elsewhere}"), "require-chap"),
        ] {
            let e = Options::parse(&args(&line)).expect_err(&line);
            assert!(e.starts_with(&format!("option '{option}': the peer must authenticate itself")), "{line}: {e}");
            assert!(e.contains("secrets-file PATH") && e.contains("noauth"), "{line}: {e}");
        }
        let o = Options::parse(&args(&format!("require-chap name lns secrets-file {secrets}"))).expect("a secret");
        assert_eq!(o.secrets.len(), 2);
        assert_eq!((o.secrets[1].client.as_str(), o.secrets[1].secret.as_str()), ("client 2", "other secret"));
        let o = Options::parse(&args(&format!("auth name another secrets-file {secrets}"))).expect("a * server");
        assert_eq!(o.require, Some(AuthProto::ChapMd5), "auth alone asks for CHAP");
        let o = Options::parse(&args("require-chap name lns noauth")).expect("noauth drops the requirement");
        assert_eq!(o.require, None);
    }

    #[test]
    fn malformed_secrets_files_are_errors() {
        assert!(secrets("client1 lns").unwrap_err().contains("line 1: a line needs a client, a server and a secret"));
        assert!(secrets("\n\nc s x 10.0.0.1").unwrap_err().contains("line 3: addresses"));
        assert!(secrets("c s @/etc/secret").unwrap_err().contains("@PATH"));
        assert!(secrets("c s \"open").unwrap_err().contains("unterminated"));
        assert_eq!(secrets("# nothing\n\n").map(|s| s.len()), Ok(0));
        assert!(Options::parse(&args("secrets-file /nonexistent/secrets")).is_err());
    }

    #[test]
    fn malformed_values_are_errors_and_unknown_options_are_kept() {
        assert!(Options::parse(&args("mtu lots")).is_err());
        assert!(Options::parse(&args("10.97.0.300:10.97.0.1")).is_err());
        assert!(Options::parse(&args("file")).is_err());
        assert!(Options::parse(&args("file /nonexistent/options")).is_err());
        assert!(Options::parse(&args("require-mschap-v2")).unwrap_err().contains("CHAP-MD5"));
        let o = Options::parse(&args("crtscts lock defaultroute")).expect("unknown flags are fine");
        assert_eq!(o.ignored, vec!["crtscts", "lock", "defaultroute"]);
        assert!(words("user \"open").is_err());
    }
}
