//! A start gate: programs spawned in any hosts of a lab wait at it, and
//! start together once every one of them is waiting. Launching processes
//! one after another spreads their starts by the time each launch takes,
//! hundreds of milliseconds on a loaded machine; behind the gate they
//! start within a scheduler's wake-up of each other.
//!
//! The gate is a FIFO in the lab's directory, made when the first program
//! is spawned behind it. Each gated program is run as
//! `sh -c 'exec 3<FIFO; echo WAITING; read -r _ <&3; exec PROGRAM…'`: it
//! opens the FIFO (which never blocks, the gate holding it open for
//! writing), says so in its log, and blocks reading one line. Opening the
//! gate waits for every program's line, then writes one line per program.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Cmd, Host, LabError, Process, Result};

/// What a gated program's log says once it waits at the gate.
const WAITING: &str = "start gate: waiting";

/// The shell script a gated program runs first: `$1` is the FIFO, the rest
/// the program and its arguments.
fn script() -> String {
    format!("exec 3<\"$1\"; shift; echo '{WAITING}'; read -r _ <&3; exec 3<&-; exec \"$@\"")
}

/// A start gate; see the module documentation.
pub struct StartGate {
    path: PathBuf,
    /// Once a program is behind the gate: the FIFO, held open for reading
    /// and writing, so that gated programs' opens never block and what is
    /// written stays until they read it.
    fifo: Mutex<Option<File>>,
    waiting: Mutex<Vec<Process>>,
}

impl StartGate {
    /// A closed gate in directory `dir` (the lab's), named `name`. Nothing
    /// is made until a program is spawned behind it.
    pub fn new(dir: &Path, name: &str) -> StartGate {
        StartGate { path: dir.join(format!("{name}.gate")), fifo: Mutex::new(None), waiting: Mutex::new(Vec::new()) }
    }

    /// Makes the FIFO unless it is there.
    fn make(&self) -> Result<()> {
        let mut fifo = self.fifo.lock().unwrap_or_else(|e| e.into_inner());
        if fifo.is_some() {
            return Ok(());
        }
        // A gate of an earlier step of the run may have left its name.
        let _ = std::fs::remove_file(&self.path);
        nix::unistd::mkfifo(&self.path, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
            .map_err(|e| LabError::io(format!("creating the start gate {}", self.path.display()), e.into()))?;
        let opened = File::options()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| LabError::io(format!("opening the start gate {}", self.path.display()), e))?;
        *fifo = Some(opened);
        Ok(())
    }

    /// Spawns `cmd` in `host`, held at the gate until it opens.
    pub fn spawn(&self, host: &Host<'_>, cmd: Cmd) -> Result<Process> {
        self.make()?;
        let process = host.spawn(cmd.run_by(&["sh", "-c", &script(), "sh", &self.path.to_string_lossy()]))?;
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(process.clone());
        Ok(process)
    }

    /// Waits up to `timeout` in all until every gated program waits at
    /// the gate, then lets them all start. A program that exits first or
    /// never gets there is stopped, and the first of them is an error
    /// naming it (the others are let go all the same).
    pub fn open(&self, timeout: Duration) -> Result<()> {
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = Instant::now() + timeout;
        let mut first_error = None;
        for p in &waiting {
            if let Err(e) = p.wait_for_log(WAITING, deadline.saturating_duration_since(Instant::now())) {
                let _ = p.stop(Duration::from_secs(1));
                first_error.get_or_insert(e);
            }
        }
        self.release(waiting.len());
        first_error.map_or(Ok(()), Err)
    }

    /// Writes a line for each of `n` programs.
    fn release(&self, n: usize) {
        if let Some(fifo) = self.fifo.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            // A pipe holds 64 KiB; a lab has at most a few hundred programs.
            let _ = fifo.write_all(&vec![b'\n'; n]);
        }
    }
}

impl Drop for StartGate {
    /// A gate dropped unopened lets its programs go (teardown stops them).
    fn drop(&mut self) {
        let n = self.waiting.get_mut().map(|w| w.len()).unwrap_or(0);
        self.release(n);
        let _ = std::fs::remove_file(&self.path);
    }
}
