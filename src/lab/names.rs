//! Names a lab gives to what it creates.
//!
//! Every namespace and interface of a lab carries the lab's prefix `vpXYZ-`,
//! where `XYZ` is the run id: three characters of `[0-9a-z]`, unique among the
//! live runs of the machine (the run record is created with `O_EXCL`). Interface
//! names must fit the kernel's 15-byte limit, which leaves 9 bytes for the
//! name a topology chooses.

use std::fmt;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Bytes of a prefix: `vp` + 3-character id + `-`.
pub const PREFIX_LEN: usize = 6;
/// Longest interface name a topology may choose.
pub const LOCAL_IFNAME_MAX: usize = IFNAME_MAX - PREFIX_LEN;
/// Longest host or switch name a topology may choose.
pub const NODE_NAME_MAX: usize = 24;

const ID_ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The identity of one lab run: three characters of `[0-9a-z]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId([u8; 3]);

impl RunId {
    /// The run id numbered `n` (taken modulo 36³).
    pub fn from_number(n: u64) -> RunId {
        let mut n = n % (36 * 36 * 36);
        let mut id = [0u8; 3];
        for slot in id.iter_mut().rev() {
            *slot = ID_ALPHABET[(n % 36) as usize];
            n /= 36;
        }
        RunId(id)
    }

    /// Parses a run id from its three characters.
    pub fn parse(s: &str) -> Option<RunId> {
        let b = s.as_bytes();
        if b.len() != 3 || !b.iter().all(|c| ID_ALPHABET.contains(c)) {
            return None;
        }
        Some(RunId([b[0], b[1], b[2]]))
    }

    /// The id's three characters.
    pub fn as_str(&self) -> &str {
        // The bytes come from ID_ALPHABET, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The prefix of every name this run creates: `vpXYZ-`.
    pub fn prefix(&self) -> String {
        format!("vp{}-", self.as_str())
    }

    /// The network namespace name of a host or switch of this run.
    pub fn netns_name(&self, node: &str) -> String {
        format!("{}{}", self.prefix(), node)
    }

    /// The kernel interface name for the topology's interface `local`.
    pub fn ifname(&self, local: &str) -> String {
        format!("{}{}", self.prefix(), local)
    }

    /// The run id a name of ours carries, if it carries one.
    pub fn of_name(name: &str) -> Option<RunId> {
        let rest = name.strip_prefix("vp")?;
        if rest.len() < 4 || rest.as_bytes()[3] != b'-' {
            return None;
        }
        RunId::parse(rest.get(..3)?)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a host or switch name: 1 to 24 characters of `[a-z0-9_-]`, starting
/// with a letter or digit. Returns what is wrong.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NODE_NAME_MAX {
        return Err(format!("must be 1 to {NODE_NAME_MAX} characters long"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if !name.chars().all(ok_char) {
        return Err("may only hold lowercase letters, digits, '-' and '_'".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or a digit".into());
    }
    Ok(())
}

/// Checks an interface name chosen by a topology: 1 to 9 characters of
/// `[A-Za-z0-9_.-]` (the run prefix takes the other 6 of the kernel's 15).
pub fn check_local_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > LOCAL_IFNAME_MAX {
        return Err(format!(
            "must be 1 to {LOCAL_IFNAME_MAX} characters long (the run prefix takes {PREFIX_LEN} of the kernel's {IFNAME_MAX})"
        ));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(ok_char) {
        return Err("may only hold letters, digits, '-', '_' and '.'".into());
    }
    if name == "." || name == ".." {
        return Err("may not be '.' or '..'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_round_trip_and_cover_the_alphabet() {
        assert_eq!(RunId::from_number(0).as_str(), "000");
        assert_eq!(RunId::from_number(35).as_str(), "00z");
        assert_eq!(RunId::from_number(36).as_str(), "010");
        assert_eq!(RunId::from_number(36 * 36 * 36 - 1).as_str(), "zzz");
        assert_eq!(RunId::from_number(36 * 36 * 36), RunId::from_number(0));
        let id = RunId::parse("k3x").expect("valid id");
        assert_eq!(id.prefix(), "vpk3x-");
        assert_eq!(RunId::parse("K3x"), None);
        assert_eq!(RunId::parse("k3"), None);
    }

    #[test]
    fn names_carry_the_prefix_and_fit_the_kernel() {
        let id = RunId::parse("a1b").expect("valid id");
        assert_eq!(id.netns_name("client"), "vpa1b-client");
        let longest = "x".repeat(LOCAL_IFNAME_MAX);
        assert_eq!(id.ifname(&longest).len(), IFNAME_MAX);
        assert_eq!(RunId::of_name("vpa1b-eth0"), Some(id));
        assert_eq!(RunId::of_name("vpa1b"), None);
        assert_eq!(RunId::of_name("vpa1bc-x"), None);
        assert_eq!(RunId::of_name("eth0"), None);
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        assert!(check_node_name("client-1").is_ok());
        assert!(check_node_name("").is_err());
        assert!(check_node_name("-x").is_err());
        assert!(check_node_name("Client").is_err());
        assert!(check_node_name(&"a".repeat(25)).is_err());
        assert!(check_local_ifname("eth0").is_ok());
        assert!(check_local_ifname("wan.100").is_ok());
        assert!(check_local_ifname("toolongname").is_err());
        assert!(check_local_ifname("a/b").is_err());
        assert!(check_local_ifname("..").is_err());
    }
}
