//! What the lab and router suites share: prerequisites that make a test
//! ignored with its reason (or failed under VPN_PASSTHROUGH_STRICT=1).

pub mod needs;

use libtest_mimic::{Completion, Failed, Trial};
use vpn_passthrough::prereq;

/// Set to 1 to fail, not ignore, tests whose prerequisites are missing.
pub const STRICT_ENV: &str = "VPN_PASSTHROUGH_STRICT";

pub type TestResult = Result<(), Failed>;

#[derive(Clone, Copy)]
pub enum Need {
    Root,
    Tool(&'static str),
}

pub fn missing(needs: &[Need]) -> Option<String> {
    for need in needs {
        match need {
            Need::Root => {
                if prereq::require_lab_privileges().is_err() {
                    let uid = nix::unistd::geteuid();
                    return Some(format!(
                        "needs root: uid {uid} lacks CAP_NET_ADMIN/CAP_SYS_ADMIN; run `ci/test` or `sudo -E cargo test`"
                    ));
                }
            }
            Need::Tool(name) => {
                if let Err(m) = prereq::require_tool(name) {
                    return Some(format!("needs {}: {}", m.what, m.fix));
                }
            }
        }
    }
    None
}

pub fn lab_test(name: &str, needs: &'static [Need], f: impl FnOnce() -> TestResult + Send + 'static) -> Trial {
    Trial::ignorable_test(name, move || {
        if let Some(why) = missing(needs) {
            if std::env::var(STRICT_ENV).is_ok_and(|v| v == "1") {
                return Err(format!("prerequisite missing ({STRICT_ENV}=1): {why}").into());
            }
            return Ok(Completion::ignored_with(why));
        }
        f().map(|()| Completion::Completed)
    })
}

/// Runs of this process must all be gone once the tests are over.
pub fn nothing_of_ours_left() -> Result<(), String> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir(vpn_passthrough::lab::runs::RUNS_DIR) else { return Ok(()) };
    for entry in dir.filter_map(|e| e.ok()) {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if text.lines().any(|l| l == format!("pid={me}")) {
            return Err(format!("run record {} is still there", entry.path().display()));
        }
    }
    Ok(())
}
