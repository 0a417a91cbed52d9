//! Errors of the lab engine. Each one says which host, program or file it is
//! about, and what to do when that is not obvious.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::plan::PlanError;
use crate::prereq::Missing;

/// What went wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The topology is not valid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A topology or scenario file could not be read or parsed; the text
    /// names the file and the place.
    #[error("{0}")]
    Input(String),
    /// Something the lab needs is not on this machine or not allowed.
    #[error("{0}")]
    Missing(#[from] Missing),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the lab was doing.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("{context}: {message}")]
    Netlink {
        /// What the lab was doing.
        context: String,
        /// The kernel's answer.
        message: String,
    },
    /// The topology has no host of that name.
    #[error("lab {run}: no host called '{host}' (hosts: {known})")]
    NoSuchHost {
        /// The lab's run id.
        run: String,
        /// The name asked for.
        host: String,
        /// The names there are.
        known: String,
    },
    /// A program never became ready.
    #[error("{0}")]
    NotReady(Box<NotReady>),
    /// A one-shot command ran over its time.
    #[error("host '{host}': `{command}` did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The host.
        host: String,
        /// The command line.
        command: String,
        /// Its time limit.
        timeout: Duration,
    },
    /// A one-shot command that had to succeed did not.
    #[error("host '{host}': `{command}` ended with {status}{output}")]
    Failed {
        /// The host.
        host: String,
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// Its output, indented, after a colon (empty if it printed nothing).
        output: String,
    },
    /// Programs of the lab exited with an error before teardown.
    #[error("{}", Crashes(.0))]
    Crashed(Vec<Crash>),
}

/// A program that did not become ready in time.
#[derive(Debug, Clone)]
pub struct NotReady {
    /// The host.
    pub host: String,
    /// The program's label.
    pub program: String,
    /// What was awaited ("listen on tcp/1723", "log \"ready\"").
    pub what: String,
    /// How long the lab waited.
    pub timeout: Duration,
    /// ", and exited with …" when the program died while awaited.
    pub exited: String,
    /// The program's log file.
    pub log: PathBuf,
    /// The log's last lines.
    pub tail: String,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host '{}': {} did not {} within {:?}{}; last lines of {}:\n{}",
            self.host,
            self.program,
            self.what,
            self.timeout,
            self.exited,
            self.log.display(),
            self.tail
        )
    }
}

/// A program that exited with an error while the lab still needed it.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The host it ran in.
    pub host: String,
    /// Its label.
    pub program: String,
    /// How it ended ("exit status 1", "signal 11").
    pub status: String,
    /// Its log file.
    pub log: PathBuf,
    /// The log's last lines.
    pub tail: String,
}

struct Crashes<'a>(&'a [Crash]);

impl fmt::Display for Crashes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} program(s) of the lab exited with an error before teardown:", self.0.len())?;
        for c in self.0 {
            write!(
                f,
                "\n  host '{}': {} ended with {}; last lines of {}:\n{}",
                c.host,
                c.program,
                c.status,
                c.log.display(),
                c.tail
            )?;
        }
        Ok(())
    }
}

impl LabError {
    /// An I/O error with what the lab was doing; permission errors become
    /// the advice to run as root.
    pub fn io(context: impl Into<String>, source: io::Error) -> LabError {
        let context = context.into();
        if source.kind() == io::ErrorKind::PermissionDenied {
            return LabError::Missing(Missing::privileges(&format!("{context}: {source}")));
        }
        LabError::Io { context, source }
    }

    /// A failed netlink request; permission errors become the advice to run
    /// as root.
    pub fn netlink(context: impl Into<String>, err: rtnetlink::Error) -> LabError {
        let context = context.into();
        let message = match &err {
            rtnetlink::Error::NetlinkError(msg) => {
                if msg.raw_code() == -nix::libc::EPERM {
                    let why = format!("{context}: {}", msg.to_io());
                    return LabError::Missing(Missing::privileges(&why));
                }
                msg.to_io().to_string()
            }
            other => other.to_string(),
        };
        LabError::Netlink { context, message }
    }
}

/// Result of lab operations.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
