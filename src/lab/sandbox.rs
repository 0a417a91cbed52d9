//! The host sandbox: how a program enters a lab host.
//!
//! Between `fork` and `exec`, the child joins the host's network namespace,
//! unshares its mount namespace (slave to the machine's, so nothing it mounts
//! leaks out), mounts a sysfs of the host's namespace on `/sys`, shows the
//! host's own directory at `/run` (and `/var/run` where that is not a link to
//! it), gives it a `/dev` of its own (the machine's devices through an
//! overlay, a private pty instance, and `/dev/log` linked to the host's
//! syslog socket), applies the host's bind mounts, and starts a new session
//! so that the whole process group can be signalled at teardown.
//!
//! Every program of one host gets the same view, so they share `/run` (a
//! charon and its swanctl meet at `/run/charon.vici`) while two hosts never
//! see each other's (two charons each write their hard-coded
//! `/run/charon.pid`). Nothing is mounted outside the children: a mount
//! namespace ends with its last process, so there are no mounts to clean up.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nix::libc;

use super::error::{LabError, Result};
use super::topology::BindSpec;
use crate::sys::check;

/// Everything a child needs to enter one host, prepared before `fork` so the
/// child only makes system calls.
#[derive(Clone)]
pub struct Sandbox {
    netns: Arc<File>,
    run_dir: CString,
    var_run_too: bool,
    binds: Arc<Vec<Bind>>,
}

struct Bind {
    source: CString,
    target: CString,
    read_only: bool,
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| LabError::io(format!("path {}", p.display()), io::Error::other("contains a NUL byte")))
}

impl Sandbox {
    /// Prepares the sandbox of a host whose network namespace is `netns`,
    /// whose `/run` is `run_dir`, with `binds` checked to exist.
    pub fn new(host: &str, netns: File, run_dir: &Path, binds: &[BindSpec]) -> Result<Sandbox> {
        let mut prepared = Vec::new();
        for b in binds {
            for (what, p) in [("source", &b.source), ("target", &b.target)] {
                if std::fs::symlink_metadata(p).is_err() {
                    return Err(LabError::io(
                        format!("host '{host}': bind mount {what} {}", p.display()),
                        io::Error::new(io::ErrorKind::NotFound, "does not exist on this machine"),
                    ));
                }
            }
            prepared.push(Bind { source: cstring(&b.source)?, target: cstring(&b.target)?, read_only: b.read_only });
        }
        let var_run_too = std::fs::symlink_metadata("/var/run").map(|m| m.is_dir()).unwrap_or(false);
        Ok(Sandbox { netns: Arc::new(netns), run_dir: cstring(run_dir)?, var_run_too, binds: Arc::new(prepared) })
    }

    /// Makes `cmd` enter this sandbox when it is spawned.
    pub fn apply(&self, cmd: &mut Command) {
        let me = self.clone();
        // SAFETY: `enter` only makes async-signal-safe system calls on data
        // prepared before fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || me.enter());
        }
    }

    /// Runs in the child between fork and exec.
    fn enter(&self) -> io::Result<()> {
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: every pointer is a NUL-terminated string owned by `self`
        // (or a static literal) and outlives the calls.
        unsafe {
            check(libc::setns(self.netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_SLAVE, std::ptr::null()))?;
            // A sysfs mounted now belongs to the host's network namespace, so
            // /sys/class/net lists the host's interfaces.
            if libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) == 0 {
                check(libc::mount(
                    c"sysfs".as_ptr(),
                    c"/sys".as_ptr(),
                    c"sysfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ))?;
            }
            check(libc::mount(self.run_dir.as_ptr(), c"/run".as_ptr(), none, libc::MS_BIND, std::ptr::null()))?;
            if self.var_run_too {
                check(libc::mount(self.run_dir.as_ptr(), c"/var/run".as_ptr(), none, libc::MS_BIND, std::ptr::null()))?;
            }
            own_dev()?;
            for b in self.binds.iter() {
                check(libc::mount(b.source.as_ptr(), b.target.as_ptr(), none, libc::MS_BIND, std::ptr::null()))?;
                if b.read_only {
                    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                    check(libc::mount(none, b.target.as_ptr(), none, flags, std::ptr::null()))?;
                }
            }
            check(libc::setsid())?;
        }
        Ok(())
    }
}

/// Where the overlay's writable layer is mounted inside a host, briefly.
const DEV_LAYER: &std::ffi::CStr = c"/run/.dev";

/// Gives the child a `/dev` of the host's own: an overlay whose lower layer
/// is the machine's `/dev` (every device stays reachable) and whose upper
/// layer is a fresh tmpfs, so that `/dev/log` can be a link to the host's
/// syslog socket without touching the machine; a private devpts instance
/// (the machine's is under the overlay) and a private `/dev/shm`. A kernel
/// without overlayfs keeps the machine's `/dev` and loses only the syslog.
///
/// # Safety
/// Runs between fork and exec: system calls on static strings only.
unsafe fn own_dev() -> io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: static NUL-terminated strings; see the function's contract.
    unsafe {
        if libc::mount(c"tmpfs".as_ptr(), DEV_LAYER.as_ptr(), c"tmpfs".as_ptr(), 0, c"mode=0755".as_ptr().cast()) < 0 {
            return Ok(());
        }
        libc::mkdir(c"/run/.dev/upper".as_ptr(), 0o755);
        libc::mkdir(c"/run/.dev/work".as_ptr(), 0o755);
        let layered = libc::mount(
            c"overlay".as_ptr(),
            c"/dev".as_ptr(),
            c"overlay".as_ptr(),
            0,
            c"lowerdir=/dev,upperdir=/run/.dev/upper,workdir=/run/.dev/work".as_ptr().cast(),
        ) == 0;
        // The overlay holds its layer; the mount point can go.
        libc::umount2(DEV_LAYER.as_ptr(), libc::MNT_DETACH);
        if !layered {
            return Ok(());
        }
        check(libc::mount(
            c"devpts".as_ptr(),
            c"/dev/pts".as_ptr(),
            c"devpts".as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            c"newinstance,ptmxmode=0666,mode=0620".as_ptr().cast(),
        ))?;
        libc::mount(
            c"shm".as_ptr(),
            c"/dev/shm".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            none.cast(),
        );
        libc::unlink(c"/dev/log".as_ptr());
        libc::symlink(c"/run/log.sock".as_ptr(), c"/dev/log".as_ptr());
    }
    Ok(())
}

/// The directories of one host inside the run directory.
#[derive(Debug, Clone)]
pub struct HostDirs {
    /// Daemon configs and secrets of this host.
    pub conf: PathBuf,
    /// Shown at `/run` inside the host.
    pub run: PathBuf,
    /// Logs of the host's programs.
    pub log: PathBuf,
}

impl HostDirs {
    /// Creates `<run_dir>/hosts/<host>/{conf,run,run/lock,run/.dev,log}`.
    pub fn create(run_dir: &Path, host: &str) -> Result<HostDirs> {
        let base = run_dir.join("hosts").join(host);
        let dirs = HostDirs { conf: base.join("conf"), run: base.join("run"), log: base.join("log") };
        for d in [&dirs.conf, &dirs.run.join("lock"), &dirs.run.join(".dev"), &dirs.log] {
            std::fs::create_dir_all(d).map_err(|e| LabError::io(format!("creating {}", d.display()), e))?;
        }
        Ok(dirs)
    }
}
