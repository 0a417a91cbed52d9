//! A LAN host's share of a shared table: how many entries each host holds,
//! and the most one may, so that no host (or a flood in its name) takes a
//! whole table.

use std::collections::HashMap;

/// Entries held per LAN host, bounded.
#[derive(Debug, Clone)]
pub struct PerHost {
    max: usize,
    held: HashMap<[u8; 4], usize>,
}

impl PerHost {
    /// Shares of at most `max` entries.
    pub fn new(max: usize) -> PerHost {
        PerHost { max, held: HashMap::new() }
    }

    /// Whether `host` may hold one more.
    pub fn has_room(&self, host: [u8; 4]) -> bool {
        self.held(host) < self.max
    }

    /// `host` holds one more.
    pub fn add(&mut self, host: [u8; 4]) {
        *self.held.entry(host).or_default() += 1;
    }

    /// `host` holds one fewer; hosts that hold nothing are forgotten.
    pub fn release(&mut self, host: [u8; 4]) {
        if let Some(n) = self.held.get_mut(&host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&host);
            }
        }
    }

    /// How many `host` holds.
    pub fn held(&self, host: [u8; 4]) -> usize {
        self.held.get(&host).copied().unwrap_or(0)
    }

    /// How many hosts hold anything.
    pub fn hosts(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_holds_up_to_its_share_and_is_forgotten_when_it_holds_nothing() {
        let mut q = PerHost::new(2);
        let h = [192, 168, 1, 10];
        q.add(h);
        assert!(q.has_room(h));
        q.add(h);
        assert!(!q.has_room(h) && q.has_room([192, 168, 1, 11]));
        q.release(h);
        q.release(h);
        q.release(h);
        assert_eq!((q.held(h), q.hosts()), (0, 0));
    }
}
