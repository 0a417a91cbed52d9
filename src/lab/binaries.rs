//! Where this crate's own binaries are, for running them in lab hosts.

use std::path::PathBuf;

use super::{LabError, Result};

/// The `vpn-passthrough` binary: `$VPN_PASSTHROUGH_BIN`, this program if it
/// is the binary, or the binary beside (or one directory above) it, as
/// cargo lays out tests.
pub fn own_binary() -> Result<PathBuf> {
    our_binary("vpn-passthrough", "VPN_PASSTHROUGH_BIN")
}

/// One of this crate's binaries, `name`: the path in `$env` if set, this
/// program if it is that binary, or the binary beside (or one directory
/// above) this program.
pub fn our_binary(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| LabError::io("finding this program", e))?;
    if exe.file_name().is_some_and(|n| n == name) {
        return Ok(exe);
    }
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(LabError::Input(format!(
        "cannot find the {name} binary near {}: build it (`cargo build --bins`) or set {env}",
        exe.display()
    )))
}
