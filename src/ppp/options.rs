//! The argument lists pppd gets from pptpd (`pptpctrl`), pptp and xl2tpd,
//! and the option files they name (`file PATH`), read the way pppd reads
//! them: words, `#` comments, quotes. Unknown options are kept to be logged
//! and ignored; a malformed value is an error.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::session::AuthProto;

/// What the PPP peer was asked to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// The tty to use (a `/dev/...` argument); stdin when absent.
    pub device: Option<PathBuf>,
    /// Line speed (meaningless on a pty; accepted).
    pub speed: Option<u32>,
    /// Our address (`L:R`, left side).
    pub local: Option<Ipv4Addr>,
    /// The address to give the peer (`L:R`, right side).
    pub remote: Option<Ipv4Addr>,
    /// Authentication to require of the peer.
    pub require: Option<AuthProto>,
    /// The name we authenticate ourselves with (`user`).
    pub user: Option<String>,
    /// Our local name (`name`): the name in our challenges, and the one we
    /// authenticate with when `user` is not given.
    pub name: Option<String>,
    /// The secret (`password`): ours, and the one a peer must know.
    pub password: Option<String>,
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
    /// Where to log.
    pub logfile: Option<PathBuf>,
    /// Options this PPP peer does not act on, logged.
    pub ignored: Vec<String>,
}

/// Options that take a value this PPP peer does not use.
const IGNORED_WITH_VALUE: &[&str] = &[
    "remotename",
    "linkname",
    "ms-dns",
    "ms-wins",
    "plugin",
    "connect",
    "disconnect",
    "pty",
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
    "lcp-restart",
    "lcp-max-configure",
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

fn parse_addr(s: &str, what: &str) -> Result<Option<Ipv4Addr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| format!("{what} '{s}' is not an IPv4 address"))
}

impl Options {
    /// Reads an argument list; `file` options are read and parsed in place.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        o.apply(args, 0)?;
        Ok(o)
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
                "user" => self.user = Some(value("user")?),
                "name" => self.name = Some(value("name")?),
                "password" => self.password = Some(value("password")?),
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
                "require-pap" => self.require = Some(AuthProto::Pap),
                "require-chap" => self.require = Some(AuthProto::ChapMd5),
                "require-mschap" | "require-mschap-v2" | "require-eap" => {
                    return Err(format!(
                        "option '{arg}': this PPP peer speaks PAP and CHAP-MD5 only; use require-chap"
                    ));
                }
                "noauth" => self.require = None,
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
        let opts = dir.path().join("options");
        std::fs::write(&opts, "# server side\nrequire-chap\nuser \"lab user\"  # our name\npassword s3cr3t\nms-dns 10.0.0.53\nnobsdcomp\n")
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
        assert_eq!(pptpctrl.user.as_deref(), Some("lab user"));
        assert_eq!(pptpctrl.speed, Some(115200));
        assert!(pptpctrl.ignored.contains(&"ms-dns 10.0.0.53".to_string()));
        let pptp = Options::parse(&args(&format!("/dev/pts/3 38400 file {f} ipparam vpn"))).expect("pptp's arguments");
        assert_eq!(pptp.device, Some(PathBuf::from("/dev/pts/3")));
        let named = Options::parse(&args("name lns require-chap")).expect("a name");
        assert_eq!((named.name.as_deref(), named.user.as_deref()), (Some("lns"), None));
        let lac = Options::parse(&args(&format!("/dev/pts/0 passive nodetach : file {f}"))).expect("xl2tpd LAC");
        assert!(lac.passive);
        assert_eq!((lac.local, lac.remote), (None, None));
        let lns = Options::parse(&args("/dev/pts/1 passive nodetach 10.97.0.1:10.97.0.100")).expect("xl2tpd LNS");
        assert_eq!(lns.local, Some(Ipv4Addr::new(10, 97, 0, 1)));
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
