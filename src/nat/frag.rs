//! IPv4 fragments: every fragment of a datagram is translated like its
//! first one (which alone carries the ports). Fragments that arrive before
//! their first one wait, a bounded number for a bounded time. The datagrams
//! followed are bounded too: past the bound a first fragment is refused.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::quota::PerHost;

/// Identifies a datagram (RFC 791: source, destination, protocol, ident).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramKey {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Protocol.
    pub proto: u8,
    /// Identification.
    pub ident: u16,
}

/// How the fragments of an inbound datagram are rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentTarget {
    /// The LAN host the first fragment went to.
    pub dst: [u8; 4],
}

/// A fragment waiting for its first fragment.
pub struct Waiting {
    /// Its datagram.
    pub key: DatagramKey,
    /// The bytes.
    pub packet: Vec<u8>,
    /// When it gives up.
    pub deadline: Duration,
}

/// The fragment state of one direction.
pub struct Fragments {
    known: HashMap<DatagramKey, (FragmentTarget, Duration)>,
    /// Datagrams followed per sender, so one sender cannot take them all.
    per_source: PerHost,
    waiting: VecDeque<Waiting>,
    max_waiting: usize,
    max_known: usize,
    timeout: Duration,
    /// When a full table was last swept for expired datagrams.
    swept: Option<Duration>,
}

/// Bounds on what [`Fragments`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Fragments waiting for their first one.
    pub waiting: usize,
    /// Datagrams followed.
    pub datagrams: usize,
    /// Datagrams followed per sender.
    pub per_source: usize,
}

impl Fragments {
    /// Tracks datagrams for `timeout`, within `bounds`.
    pub fn new(timeout: Duration, bounds: Bounds) -> Fragments {
        Fragments {
            known: HashMap::new(),
            per_source: PerHost::new(bounds.per_source),
            waiting: VecDeque::new(),
            max_waiting: bounds.waiting,
            max_known: bounds.datagrams,
            timeout,
            swept: None,
        }
    }

    /// Whether a first fragment of `key` can be followed: it is already,
    /// or there is room, in all and for its sender (expired datagrams make
    /// room, looked for at most once a second).
    pub fn can_learn(&mut self, key: &DatagramKey, now: Duration) -> bool {
        let room = |f: &Fragments| f.known.len() < f.max_known && f.per_source.has_room(key.src);
        if self.known.contains_key(key) || room(self) {
            return true;
        }
        if self.swept.is_none_or(|at| at + Duration::from_secs(1) <= now) {
            self.swept = Some(now);
            self.forget_expired(now);
        }
        room(self)
    }

    fn forget_expired(&mut self, now: Duration) {
        let per_source = &mut self.per_source;
        self.known.retain(|key, (_, deadline)| {
            let live = *deadline > now;
            if !live {
                per_source.release(key.src);
            }
            live
        });
    }

    /// How many datagrams are followed.
    pub fn known(&self) -> usize {
        self.known.len()
    }

    /// Records how a datagram's first fragment was translated; returns the
    /// fragments that were waiting for it.
    pub fn learn(&mut self, key: DatagramKey, rewrite: FragmentTarget, now: Duration) -> Vec<Vec<u8>> {
        if !self.can_learn(&key, now) {
            return Vec::new();
        }
        if self.known.insert(key, (rewrite, now + self.timeout)).is_none() {
            self.per_source.add(key.src);
        }
        let mut released = Vec::new();
        self.waiting.retain_mut(|w| {
            if w.key == key {
                released.push(std::mem::take(&mut w.packet));
                false
            } else {
                true
            }
        });
        released
    }

    /// How to rewrite a later fragment, if its first one was seen.
    pub fn lookup(&self, key: &DatagramKey, now: Duration) -> Option<FragmentTarget> {
        self.known.get(key).filter(|(_, deadline)| *deadline > now).map(|(r, _)| *r)
    }

    /// Keeps a fragment until its first one comes; `false` if too many wait.
    pub fn hold(&mut self, key: DatagramKey, packet: &[u8], now: Duration) -> bool {
        if self.waiting.len() >= self.max_waiting {
            return false;
        }
        self.waiting.push_back(Waiting { key, packet: packet.to_vec(), deadline: now + self.timeout });
        true
    }

    /// Forgets expired datagrams; returns how many waiting fragments gave up.
    pub fn expire(&mut self, now: Duration) -> usize {
        self.forget_expired(now);
        let before = self.waiting.len();
        self.waiting.retain(|w| w.deadline > now);
        before - self.waiting.len()
    }

    /// How many fragments wait.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u16) -> DatagramKey {
        DatagramKey { src: [198, 51, 100, 2], dst: [198, 51, 100, 1], proto: 17, ident }
    }

    #[test]
    fn early_fragments_wait_for_their_first_and_no_longer() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 2, datagrams: 8, per_source: 8 });
        let t0 = Duration::from_secs(100);
        assert!(f.hold(key(1), b"late part", t0));
        assert!(f.hold(key(2), b"other", t0));
        assert!(!f.hold(key(3), b"one too many", t0));
        let released = f.learn(key(1), FragmentTarget { dst: [192, 168, 1, 10] }, t0);
        assert_eq!(released, vec![b"late part".to_vec()]);
        assert_eq!(f.lookup(&key(1), t0), Some(FragmentTarget { dst: [192, 168, 1, 10] }));
        assert_eq!(
            f.lookup(&key(1), t0 + Duration::from_secs(5)),
            None,
            "a datagram is followed for its timeout, no longer"
        );
        assert_eq!(f.expire(t0 + Duration::from_secs(6)), 1, "key 2 gave up");
        assert_eq!(f.lookup(&key(1), t0 + Duration::from_secs(6)), None);
    }

    #[test]
    fn followed_datagrams_are_bounded_and_expired_ones_make_room() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 2, datagrams: 2, per_source: 2 });
        let t0 = Duration::from_secs(100);
        let to = FragmentTarget { dst: [192, 168, 1, 10] };
        f.learn(key(1), to, t0);
        f.learn(key(2), to, t0);
        assert!(!f.can_learn(&key(3), t0), "full");
        assert!(f.can_learn(&key(2), t0), "a datagram already followed");
        f.learn(key(3), to, t0);
        assert_eq!((f.known(), f.lookup(&key(3), t0)), (2, None), "refused, not evicting");
        assert!(!f.can_learn(&key(3), t0 + Duration::from_secs(4)), "still followed");
        assert!(f.can_learn(&key(3), t0 + Duration::from_secs(5)), "the others expired at their deadline");
    }

    #[test]
    fn expiry_keeps_what_is_live_and_counts_what_gave_up() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 4, datagrams: 8, per_source: 8 });
        let t0 = Duration::from_secs(100);
        let to = FragmentTarget { dst: [192, 168, 1, 10] };
        f.learn(key(1), to, t0);
        assert!(f.hold(key(2), b"early", t0));
        assert_eq!(f.expire(t0 + Duration::from_secs(1)), 0, "nothing gave up yet");
        let mut gives_up = Fragments::new(Duration::from_secs(5), Bounds { waiting: 4, datagrams: 8, per_source: 8 });
        gives_up.hold(key(3), b"late", t0);
        assert_eq!(gives_up.expire(t0 + Duration::from_secs(5)), 1, "a fragment waits its timeout, no longer");
        assert_eq!((f.lookup(&key(1), t0 + Duration::from_secs(1)), f.known(), f.waiting()), (Some(to), 1, 1));
        assert_eq!(f.learn(key(2), to, t0 + Duration::from_secs(2)), vec![b"early".to_vec()]);
        assert_eq!(f.waiting(), 0, "released");
        assert_eq!(f.expire(t0 + Duration::from_secs(10)), 0, "nothing was waiting");
        assert_eq!(f.known(), 0, "both datagrams forgotten");
    }

    #[test]
    fn one_sender_follows_its_share_of_datagrams_and_no_more() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 2, datagrams: 8, per_source: 2 });
        let t0 = Duration::from_secs(100);
        let to = FragmentTarget { dst: [192, 168, 1, 10] };
        f.learn(key(1), to, t0);
        f.learn(key(2), to, t0);
        assert!(!f.can_learn(&key(3), t0), "the sender's share is taken");
        let other = DatagramKey { src: [198, 51, 100, 3], ..key(3) };
        assert!(f.can_learn(&other, t0), "another sender still gets room");
        assert!(f.can_learn(&key(3), t0 + Duration::from_secs(5)), "expired datagrams give the share back");
    }
}
