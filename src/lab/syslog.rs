//! A host's syslog: daemons that log only through syslog(3) (pptpd, pptp)
//! write to `/dev/log`, which inside a host is a link to `/run/log.sock`,
//! the host's own socket; a thread of the lab appends what arrives to
//! `log/syslog.log`, so those lines stay with the run like every other log.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::error::{LabError, Result};

/// Where the socket is inside a host (`/dev/log` links here).
pub const SOCKET_IN_HOST: &str = "/run/log.sock";
/// Its file name in the host's run directory.
pub const SOCKET_NAME: &str = "log.sock";
/// The log file's name in the host's log directory.
pub const LOG_NAME: &str = "syslog.log";

/// The receiving end of one host's syslog.
pub struct SyslogSink {
    stop: Arc<AtomicBool>,
    /// The socket, to wake the thread from its `recv` when the sink ends.
    sock: UnixDatagram,
    thread: Option<JoinHandle<()>>,
    log: PathBuf,
}

/// One syslog datagram as a log line: the `<PRI>` prefix becomes a
/// severity word, the rest (time, tag, message) stays as the program
/// wrote it.
pub fn line(datagram: &[u8]) -> String {
    let text = String::from_utf8_lossy(datagram);
    let text = text.trim_end_matches(['\n', '\0']);
    let (severity, rest) = match text.strip_prefix('<').and_then(|t| t.split_once('>')) {
        Some((pri, rest)) => match pri.parse::<u8>() {
            Ok(p) => {
                (["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"][usize::from(p & 7)], rest)
            }
            Err(_) => ("info", text),
        },
        None => ("info", text),
    };
    format!("{severity}: {rest}\n")
}

impl SyslogSink {
    /// Binds `<run_dir>/log.sock` and starts appending to `<log_dir>/syslog.log`.
    pub fn start(host: &str, run_dir: &Path, log_dir: &Path) -> Result<SyslogSink> {
        let path = run_dir.join(SOCKET_NAME);
        let _ = std::fs::remove_file(&path);
        let what = |e| LabError::io(format!("host '{host}': syslog socket {}", path.display()), e);
        let sock = UnixDatagram::bind(&path).map_err(what)?;
        let reader = sock.try_clone().map_err(what)?;
        let log = log_dir.join(LOG_NAME);
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| LabError::io(format!("host '{host}': creating {}", log.display()), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("syslog-{host}"))
            .spawn(move || {
                let mut buf = vec![0u8; 8192];
                // What is queued is read first; after the shutdown in
                // `drop`, recv returns at once.
                loop {
                    match reader.recv(&mut buf) {
                        Ok(n) if n > 0 => {
                            let _ = file.write_all(line(&buf[..n]).as_bytes());
                        }
                        _ if flag.load(Ordering::SeqCst) => break,
                        _ => {}
                    }
                }
            })
            .map_err(|e| LabError::io(format!("host '{host}': starting the syslog thread"), e))?;
        Ok(SyslogSink { stop, sock, thread: Some(thread), log })
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_become_severities() {
        assert_eq!(
            line(b"<30>Nov 24 10:00:00 pptpd[12]: MGR: Manager process started"),
            "info: Nov 24 10:00:00 pptpd[12]: MGR: Manager process started\n"
        );
        assert_eq!(line(b"<27>x: failed\n"), "err: x: failed\n");
        assert_eq!(line(b"no priority"), "info: no priority\n");
    }

    #[test]
    fn datagrams_land_in_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = SyslogSink::start("h", dir.path(), dir.path()).expect("sink");
        let tx = UnixDatagram::unbound().expect("socket");
        tx.send_to(b"<29>pptp[1]: hello", dir.path().join(SOCKET_NAME)).expect("send");
        let log = sink.log().to_path_buf();
        drop(sink);
        assert_eq!(std::fs::read_to_string(log).expect("log"), "notice: pptp[1]: hello\n");
    }
}
