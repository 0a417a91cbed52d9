//! Runs every fuzz target on stable Rust for a short, bounded time, so that
//! `cargo test` builds and exercises them: the seeds in `fuzz/seeds/<target>/`
//! first, then mutations of them (bit flips, byte changes, insertions,
//! deletions, duplications, splices of two seeds) from a fixed PRNG seed.
//! No coverage guidance: that is `cargo fuzz`'s job (see `fuzz/README.md`).
//!
//! A panic fails the test and prints the input as hex; an input running
//! longer than the hang limit aborts the run with the input printed. Each
//! test prints how many inputs ran.
//!
//! `FUZZ_SECS` sets the time per target (default 2), `FUZZ_SEED` the PRNG
//! seed, `FUZZ_HANG_SECS` the hang limit (default 20: the tests run
//! unoptimized).

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vpn_passthrough::fuzz;

/// Largest input made (what `cargo fuzz` uses by default).
const MAX_LEN: usize = 4096;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: [u8; 12] = [0, 1, 2, 0x7f, 0x80, 0xff, 0xfe, 8, 16, 32, 64, 0x45];

/// One to eight stacked mutations of a seed.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let at = rng.below(v.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 if !v.is_empty() => {
                let at = rng.below(v.len());
                let n = 1 + rng.below((v.len() - at).min(32));
                v.drain(at..at + n);
            }
            5 if !v.is_empty() => {
                // Duplicate a range somewhere else.
                let at = rng.below(v.len());
                let n = 1 + rng.below((v.len() - at).min(64));
                let part = v[at..at + n].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, part);
            }
            6 if !seeds.is_empty() => {
                // Splice: a prefix of this one, a suffix of another.
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            7 if !v.is_empty() => {
                let at = rng.below(v.len());
                v.truncate(at + 1);
            }
            _ if v.len() >= 2 => {
                // A 16-bit value, either byte order.
                let i = rng.below(v.len() - 1);
                let x = (rng.next() as u16).to_be_bytes();
                v[i..i + 2].copy_from_slice(&x);
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v.truncate(MAX_LEN);
    v
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Runs `target` over its seeds and their mutations for the time set.
fn run(name: &str, target: fn(&[u8])) {
    let budget = Duration::from_millis(env_u64("FUZZ_SECS", 2) * 1000);
    let hang = Duration::from_secs(env_u64("FUZZ_HANG_SECS", 20));
    let mut rng =
        Rng(env_u64("FUZZ_SEED", 0x5eed_f022) ^ name.bytes().fold(0u64, |h, b| h.rotate_left(8) ^ u64::from(b)));
    let seeds = seeds(name);
    // The watchdog: an input that runs past the hang limit ends the run.
    let current: Arc<Mutex<(Instant, Vec<u8>)>> = Arc::new(Mutex::new((Instant::now(), Vec::new())));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done, name) = (current.clone(), done.clone(), name.to_string());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let (since, input) = match current.lock() {
                    Ok(c) => (c.0, c.1.clone()),
                    Err(_) => return,
                };
                if !done.load(Ordering::Relaxed) && since.elapsed() > hang {
                    let _ = writeln!(
                        std::io::stderr(),
                        "fuzz {name}: an input ran for more than {hang:?} (a hang?):\n{}",
                        fuzz::hex(&input)
                    );
                    std::process::abort();
                }
            }
        })
    };
    let start = Instant::now();
    let mut runs = 0u64;
    let mut i = 0usize;
    while i < seeds.len() || start.elapsed() < budget {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, &seeds, seed)
        };
        i += 1;
        if let Ok(mut c) = current.lock() {
            *c = (Instant::now(), input.clone());
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        runs += 1;
        if let Err(e) = outcome {
            done.store(true, Ordering::Relaxed);
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("fuzz {name}: input {runs} panicked: {why}\ninput ({} bytes): {}", input.len(), fuzz::hex(&input));
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {name}: {runs} inputs ({} seeds) in {:.1} s, no failure",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn nat() {
    run("nat", fuzz::nat);
}

#[test]
fn pptp() {
    run("pptp", fuzz::pptp);
}

#[test]
fn l2tp() {
    run("l2tp", fuzz::l2tp);
}

#[test]
fn topology() {
    run("topology", fuzz::topology);
}

#[test]
fn profile() {
    run("profile", fuzz::profile);
}

#[test]
fn ppp() {
    run("ppp", fuzz::ppp);
}

#[test]
fn scenario() {
    run("scenario", fuzz::scenario);
}

#[test]
fn pcap() {
    run("pcap", fuzz::pcap);
}
