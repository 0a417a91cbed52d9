//! The suite's one pseudo-random generator (xorshift64*): fast, and the same
//! stream for the same seed, for impairments, floods, fuzz-like tests and
//! the NAT's random port allocation. Nothing here is for cryptography.

/// A xorshift64* generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is fixed by `seed` (any value; 0 is fine).
    /// The seed goes through splitmix64 first, so nearby seeds start far
    /// apart and no two seeds share a stream.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // xorshift never leaves zero; splitmix64 is a bijection, so only one
        // seed lands there.
        Rng(if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z })
    }

    /// A generator seeded from the kernel's entropy (or the time and the
    /// process when that fails), different in every process.
    pub fn from_entropy() -> Rng {
        let mut b = [0u8; 8];
        // SAFETY: getrandom writes at most the 8 bytes we pass.
        let n = unsafe { nix::libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
        let seed = if n == 8 {
            u64::from_ne_bytes(b)
        } else {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
        };
        Rng::new(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_fixes_the_stream_and_different_seeds_differ() {
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..4).map(|_| c.next_u64()).collect::<Vec<_>>());
        assert_ne!(Rng::new(0).next_u64(), 0, "a zero seed still moves");
        let firsts: std::collections::BTreeSet<u64> = (0..64).map(|s| Rng::new(s).next_u64()).collect();
        assert_eq!(firsts.len(), 64, "neighbouring seeds share a stream");
        assert_ne!(Rng::from_entropy().next_u64(), Rng::from_entropy().next_u64());
    }
}
