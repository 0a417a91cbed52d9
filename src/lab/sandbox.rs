//! The host sandbox: how a program enters a lab host.
//!
//! Each host has one mount namespace, made when its first program starts:
//! a thread of this process joins the host's network namespace, unshares
//! a mount namespace (slave to the machine's, so nothing mounted in it
//! leaks out), mounts a sysfs of the host's network namespace on `/sys`,
//! shows the host's own directory at `/run` (and `/var/run` where that is
//! not a link to it), gives it a `/dev` of its own (the machine's devices
//! through an overlay, a private pty instance, and `/dev/log` linked to the
//! host's syslog socket) and applies the host's bind mounts. The sandbox
//! keeps a descriptor of that namespace; it ends when the lab drops the
//! sandbox and the host's last program has exited, so there are no mounts
//! to clean up.
//!
//! A program enters the host through `vpn-passthrough-enter` (see
//! [`enter_and_exec`]), spawned without forking this process: it joins the
//! host's network and mount namespaces, starts a new session (so that the
//! whole process group can be signalled at teardown) and executes the
//! program in its place, with the same pid. The runner, with its many
//! threads and large address space, is never forked: copying its page
//! tables for every `ping` would cost more than the `ping`.
//!
//! Every program of one host gets the same view, so they share `/run` (a
//! charon and its swanctl meet at `/run/charon.vici`) while two hosts never
//! see each other's (two charons each write their hard-coded
//! `/run/charon.pid`).

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use nix::libc;

use super::error::{LabError, Result};
use super::process::Cmd;
use super::topology::BindSpec;
use crate::sys::check;

/// The program that enters a host and executes a command there.
pub const ENTER_BINARY: &str = "vpn-passthrough-enter";

/// A host's network and mount namespaces, and how a command enters them.
#[derive(Clone)]
pub struct Sandbox {
    netns_path: PathBuf,
    /// The host's mount namespace, held open: `/proc/<this process>/fd/<it>`
    /// is how `vpn-passthrough-enter` finds it.
    mnt: Arc<File>,
    enter: PathBuf,
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

/// The helper's path, found once per process.
pub fn enter_binary() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| super::our_binary(ENTER_BINARY, "VPN_PASSTHROUGH_ENTER").map_err(|e| e.to_string()))
        .clone()
        .map_err(LabError::Input)
}

impl Sandbox {
    /// Makes the mount namespace of a host whose network namespace is
    /// `netns` (named `netns_path`), whose `/run` is `run_dir`, with `binds`
    /// checked to exist.
    ///
    /// The lab's directory `lab_dir` stays visible at its own path inside
    /// the host, even under `/dev` (`/dev/shm`), which the host has its own
    /// of.
    pub fn new(
        host: &str,
        netns: File,
        netns_path: PathBuf,
        lab_dir: &Path,
        run_dir: &Path,
        binds: &[BindSpec],
    ) -> Result<Sandbox> {
        let enter = enter_binary()?;
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
        let run_dir = cstring(run_dir)?;
        let through_dev = lab_dir.starts_with("/dev").then_some(lab_dir);
        let mnt = std::thread::scope(|scope| {
            scope
                .spawn(|| make_mount_namespace(&netns, &run_dir, var_run_too, &prepared, through_dev))
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the thread making it panicked")))
        })
        .map_err(|e| LabError::io(format!("host '{host}': making its mount namespace"), e))?;
        Ok(Sandbox { netns_path, mnt: Arc::new(mnt), enter })
    }

    /// `cmd` run by `vpn-passthrough-enter` inside this host. A program
    /// named without a path is looked up here, in this machine's view
    /// ([`crate::prereq::find_program`]; the host sees the machine's files,
    /// its bind mounts cover files that exist): one that is not there is a
    /// `NotFound` error now, not an exit status later, and the helper
    /// executes the file found without searching again.
    pub fn entering(&self, cmd: &Cmd) -> io::Result<Cmd> {
        let program = cmd.program();
        let found = if program.contains('/') {
            cmd.clone()
        } else {
            let path = crate::prereq::find_program(program)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("`{program}` is not on PATH")))?;
            cmd.clone().with_program(path.to_string_lossy())
        };
        let mnt = format!("/proc/{}/fd/{}", std::process::id(), self.mnt.as_raw_fd());
        let enter = self.enter.to_string_lossy();
        Ok(found.run_by(&[enter.as_ref(), &self.netns_path.to_string_lossy(), &mnt]))
    }
}

/// Runs on a thread of its own, which ends right after: joins `netns`,
/// unshares a mount namespace, mounts the host's view and returns a
/// descriptor of the namespace. `through_dev` is the lab's directory when it
/// lies under `/dev`, to be shown again at its path once the host has its
/// own `/dev`.
fn make_mount_namespace(
    netns: &File,
    run_dir: &CString,
    var_run_too: bool,
    binds: &[Bind],
    through_dev: Option<&Path>,
) -> io::Result<File> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: every pointer is a NUL-terminated string owned by the caller
    // (or a static literal) and outlives the calls; the namespace changes
    // affect this thread only (unsharing the mount namespace unshares its
    // filesystem attributes too).
    unsafe {
        check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
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
        check(libc::mount(run_dir.as_ptr(), c"/run".as_ptr(), none, libc::MS_BIND, std::ptr::null()))?;
        if var_run_too {
            check(libc::mount(run_dir.as_ptr(), c"/var/run".as_ptr(), none, libc::MS_BIND, std::ptr::null()))?;
        }
        // Opened in this namespace, so that it can be bound from here.
        let lab_dir = through_dev.map(|path| File::open(path).map(|dir| (dir, path))).transpose()?;
        own_dev()?;
        if let Some((dir, path)) = lab_dir {
            std::fs::create_dir_all(path)?;
            let source = CString::new(format!("/proc/thread-self/fd/{}", dir.as_raw_fd())).map_err(io::Error::other)?;
            let target = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
            check(libc::mount(source.as_ptr(), target.as_ptr(), none, libc::MS_BIND, std::ptr::null()))?;
        }
        for b in binds {
            check(libc::mount(b.source.as_ptr(), b.target.as_ptr(), none, libc::MS_BIND, std::ptr::null()))?;
            if b.read_only {
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                check(libc::mount(none, b.target.as_ptr(), none, flags, std::ptr::null()))?;
            }
        }
    }
    File::open("/proc/thread-self/ns/mnt")
}

/// The body of `vpn-passthrough-enter NETNS MNTNS PROGRAM [ARG...]`: joins
/// the network namespace at path `NETNS` and the mount namespace at path
/// `MNTNS`, keeps the working directory, starts a new session and executes
/// `PROGRAM` (a path, as [`Sandbox::entering`] gives it; a bare name is
/// looked up in `PATH`). Returns only on failure: the exit
/// status (126: cannot enter the host, 127: cannot execute the program),
/// after saying why on stderr, which is the program's log.
pub fn enter_and_exec(args: Vec<OsString>) -> i32 {
    let mut args = args.into_iter();
    let (Some(netns), Some(mnt), Some(program)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: {ENTER_BINARY} NETNS-PATH MNTNS-PATH PROGRAM [ARG...]");
        return 2;
    };
    let entered = (|| -> io::Result<()> {
        let cwd = std::env::current_dir().ok();
        for (path, kind) in [(&netns, libc::CLONE_NEWNET), (&mnt, libc::CLONE_NEWNS)] {
            let ns = File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", Path::new(path).display())))?;
            // SAFETY: a namespace descriptor we own; this process has one thread.
            check(unsafe { libc::setns(ns.as_raw_fd(), kind) })?;
        }
        // Joining a mount namespace moves to its root; come back, or stay
        // at the root if the directory is not there in the host.
        if let Some(cwd) = cwd {
            let _ = std::env::set_current_dir(cwd);
        }
        // SAFETY: no arguments; fails only for a group leader, which a
        // freshly spawned process is not.
        check(unsafe { libc::setsid() })?;
        Ok(())
    })();
    if let Err(e) = entered {
        eprintln!("{ENTER_BINARY}: cannot enter the lab host: {e}");
        return 126;
    }
    let e = std::process::Command::new(&program).args(args).exec();
    eprintln!("{ENTER_BINARY}: cannot execute {}: {e}", Path::new(&program).display());
    127
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
/// Changes the calling thread's mounts: only for a thread in a mount
/// namespace of its own.
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
