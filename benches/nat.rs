//! `cargo bench --bench nat`: the NAT core alone (ns per translated packet,
//! bytes per mapping with a million mappings, counted exactly by this
//! allocator), then traffic through the Rust NAT and the Linux NAT in the
//! same lab (needs root: cargo runs this through ci/as-root).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use vpn_passthrough::bench;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let live = || LIVE.load(Ordering::Relaxed);
    match bench::core::run(1_000_000, Some(&live)) {
        Ok(r) => print!("{}", r.render()),
        Err(e) => {
            eprintln!("nat core benchmark: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = vpn_passthrough::prereq::require_lab_privileges() {
        eprintln!("nat lab benchmark not run: {e}");
        std::process::exit(1);
    }
    let report = vpn_passthrough::lab::own_binary().and_then(|bin| bench::nat::run(3, 3, bin));
    match report {
        Ok(r) => print!("{}", r.render()),
        Err(e) => {
            eprintln!("nat lab benchmark: {e}");
            std::process::exit(1);
        }
    }
}
