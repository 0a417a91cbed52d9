//! Named network namespaces (`/run/netns/NAME`, as `ip netns` makes them)
//! and the one safe way to act inside one: a dedicated thread.
//!
//! A thread that enters a namespace never runs async tasks, and async tasks
//! never enter a namespace: tokio moves tasks between threads, so a task that
//! called `setns` could resume anywhere.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use netns_rs::NetNs;

use super::error::{LabError, Result};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace that this process created or opened.
pub struct Namespace {
    name: String,
    ns: NetNs,
    inode: u64,
}

impl Namespace {
    /// Creates `/run/netns/NAME` holding a fresh network namespace.
    pub fn create(name: &str) -> Result<Namespace> {
        let ns = NetNs::new(name).map_err(|e| ns_error(format!("creating network namespace {name}"), e))?;
        Namespace::wrap(name, ns)
    }

    fn wrap(name: &str, ns: NetNs) -> Result<Namespace> {
        let inode =
            ns.file().metadata().map_err(|e| LabError::io(format!("reading network namespace {name}"), e))?.ino();
        Ok(Namespace { name: name.to_string(), ns, inode })
    }

    /// The namespace's name (the file name under `/run/netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode: what `/proc/PID/ns/net` of its processes shows.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// An open descriptor of the namespace, for `setns` and `IFLA_NET_NS_FD`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ns.file().as_fd()
    }

    /// The raw descriptor, for netlink attributes.
    pub fn raw_fd(&self) -> RawFd {
        self.ns.file().as_raw_fd()
    }

    /// The descriptor as a file, for children that enter the namespace.
    pub fn file(&self) -> io::Result<File> {
        self.ns.file().try_clone()
    }

    /// Unmounts and deletes `/run/netns/NAME`. The kernel frees the namespace
    /// (and the interfaces in it) once no process and no descriptor holds it.
    pub fn remove(self) -> Result<()> {
        let Namespace { name, ns, .. } = self;
        // Close our descriptor, then unmount; a namespace a concurrent sweep
        // already removed is not an error.
        drop(ns);
        remove_by_name(&name)
    }
}

/// The path of a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Removes a named namespace this process did not create (a dead run's).
/// A namespace that is already gone is not an error.
pub fn remove_by_name(name: &str) -> Result<()> {
    let path = netns_path(name);
    match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(LabError::io(format!("unmounting {}", path.display()), e.into())),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::io(format!("deleting {}", path.display()), e)),
    }
}

/// The names under `/run/netns`.
pub fn list_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else { return Vec::new() };
    dir.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect()
}

/// Runs `f(i, ns)` once inside each namespace, in order, on one dedicated thread
/// that exists only for this call. Results come back in the same order.
pub fn for_each_inside<T: Send>(
    namespaces: &[&Namespace],
    mut f: impl FnMut(usize, &Namespace) -> Result<T> + Send,
) -> Result<Vec<T>> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let mut out = Vec::with_capacity(namespaces.len());
                for (i, ns) in namespaces.iter().enumerate() {
                    nix::sched::setns(ns.fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| LabError::io(format!("entering network namespace {}", ns.name), e.into()))?;
                    out.push(f(i, ns)?);
                }
                Ok(out)
            })
            .join()
            .unwrap_or_else(|_| Err(LabError::io("a namespace thread panicked", io::Error::other("thread panicked"))))
    })
}

fn ns_error(context: String, e: netns_rs::Error) -> LabError {
    use netns_rs::Error as E;
    let source = match e {
        E::CreateNsDirError(io) | E::CreateNsError(io) | E::OpenNsError(_, io) => io,
        E::CloseNsError(n) | E::MountError(_, n) | E::UnmountError(_, n) | E::UnshareError(n) | E::SetnsError(n) => {
            io::Error::from_raw_os_error(n as i32)
        }
        E::JoinThreadError(s) => io::Error::other(s),
    };
    LabError::io(context, source)
}
