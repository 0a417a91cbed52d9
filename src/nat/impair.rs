//! Impairments of one direction, sans I/O: loss, fixed delay with jitter,
//! reordering and duplication, from a seeded generator so that a run can be
//! repeated exactly. The kernel here has no netem; the NAT does it itself.

use std::time::Duration;

use super::profile::Impairment;

/// Longest a packet held back for reordering waits for a successor.
const REORDER_HOLD: Duration = Duration::from_millis(50);

struct Scheduled<T> {
    at: Duration,
    seq: u64,
    item: T,
}

/// One direction's impairment queue of items (frames with their metadata).
pub struct Impairer<T> {
    cfg: Impairment,
    rng: crate::rng::Rng,
    seq: u64,
    queue: Vec<Scheduled<T>>,
    held: Option<Scheduled<T>>,
}

impl<T: Clone> Impairer<T> {
    /// An impairer with these settings and seed.
    pub fn new(cfg: Impairment, seed: u64) -> Impairer<T> {
        Impairer { cfg, rng: crate::rng::Rng::new(seed), seq: 0, queue: Vec::new(), held: None }
    }

    /// Whether this direction is unimpaired (frames need not come here).
    pub fn is_none(&self) -> bool {
        self.cfg.is_none()
    }

    fn next(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn chance(&mut self, percent: f64) -> bool {
        percent > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 100.0 < percent
    }

    fn schedule(&mut self, at: Duration, item: T) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, item });
    }

    /// Takes an item; `false` if it is lost.
    pub fn push(&mut self, item: T, now: Duration) -> bool {
        if self.chance(self.cfg.loss_percent) {
            return false;
        }
        let jitter = if self.cfg.jitter_ms > 0 { self.next() % (self.cfg.jitter_ms + 1) } else { 0 };
        let at = now + Duration::from_millis(self.cfg.delay_ms + jitter);
        if self.chance(self.cfg.duplicate_percent) {
            self.schedule(at, item.clone());
        }
        if self.held.is_none() && self.chance(self.cfg.reorder_percent) {
            self.seq += 1;
            self.held = Some(Scheduled { at: at + REORDER_HOLD, seq: self.seq, item });
            return true;
        }
        self.schedule(at, item);
        if let Some(h) = self.held.take() {
            // Goes right after the item that overtook it.
            self.schedule(at, h.item);
        }
        true
    }

    /// An item whose time has come.
    pub fn pop(&mut self, now: Duration) -> Option<T> {
        if self.held.as_ref().is_some_and(|h| h.at <= now) {
            if let Some(h) = self.held.take() {
                self.queue.push(h);
            }
        }
        let i = self.queue.iter().enumerate().filter(|(_, s)| s.at <= now).min_by_key(|(_, s)| (s.at, s.seq))?.0;
        Some(self.queue.swap_remove(i).item)
    }

    /// When the next frame is due.
    pub fn next_release(&self) -> Option<Duration> {
        self.queue.iter().map(|s| s.at).chain(self.held.as_ref().map(|h| h.at)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: Impairment, n: u8) -> Vec<u8> {
        let mut imp = Impairer::new(cfg, 42);
        let mut got = Vec::new();
        let mut now = Duration::ZERO;
        for i in 0..n {
            imp.push(i, now);
            now += Duration::from_millis(1);
            while let Some(f) = imp.pop(now) {
                got.push(f);
            }
        }
        now += Duration::from_secs(1);
        while let Some(f) = imp.pop(now) {
            got.push(f);
        }
        got
    }

    #[test]
    fn no_impairment_keeps_everything_in_order() {
        assert_eq!(run(Impairment::default(), 50), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn loss_reorder_and_duplication_happen_about_as_often_as_asked() {
        let lossy = run(Impairment { loss_percent: 30.0, ..Default::default() }, 200);
        assert!((110..170).contains(&lossy.len()), "{} of 200 kept", lossy.len());
        let dup = run(Impairment { duplicate_percent: 20.0, ..Default::default() }, 200);
        assert!((220..260).contains(&dup.len()), "{} sent", dup.len());
        let re = run(Impairment { reorder_percent: 20.0, ..Default::default() }, 200);
        assert_eq!(re.len(), 200);
        assert!(re.windows(2).filter(|w| w[0] > w[1]).count() > 10, "some overtaking");
        // Same seed, same outcome.
        assert_eq!(re, run(Impairment { reorder_percent: 20.0, ..Default::default() }, 200));
    }

    #[test]
    fn delay_holds_frames_until_their_time() {
        let mut imp = Impairer::new(Impairment { delay_ms: 30, ..Default::default() }, 1);
        imp.push(1u8, Duration::ZERO);
        assert!(imp.pop(Duration::from_millis(29)).is_none());
        assert_eq!(imp.next_release(), Some(Duration::from_millis(30)));
        assert!(imp.pop(Duration::from_millis(30)).is_some());
    }
}
