//! IPv4 fragments: every fragment of a datagram is translated like its
//! first one (which alone carries the ports). Fragments that arrive before
//! their first one wait, a bounded number for a bounded time. The datagrams
//! followed are bounded too: past the bound a first fragment is refused. A
//! datagram is followed until its timeout or until as many bytes as it
//! holds have passed, so that a bulk transfer's stream of fragmented
//! datagrams does not fill the table. (Spoofed duplicates can end a
//! datagram early; its remaining fragments then wait and expire, which
//! harms only that sender's datagram.)

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

/// Where a fragment lies in its datagram, in bytes of the datagram's
/// payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The fragment offset, in bytes.
    pub offset: usize,
    /// The fragment's payload length.
    pub len: usize,
    /// More fragments follow (the MF flag).
    pub more: bool,
}

impl Piece {
    /// The piece an IPv4 packet is: its offset, payload and MF flag.
    pub fn of(packet: &[u8]) -> Option<Piece> {
        let ip = crate::wire::ipv4::Packet::new_checked(packet).ok()?;
        let len = ip.total_len().checked_sub(ip.header_len())?;
        Some(Piece { offset: ip.frag_offset(), len, more: ip.more_frags() })
    }
}

/// A datagram followed: where its fragments go, until when, and how much
/// of it has passed.
#[derive(Debug, Clone, Copy)]
struct Followed {
    target: FragmentTarget,
    deadline: Duration,
    /// Payload bytes of the fragments that passed.
    passed: usize,
    /// The payload's length, once its last fragment passed.
    end: Option<usize>,
}

impl Followed {
    fn count(&mut self, piece: Piece) {
        self.passed = self.passed.saturating_add(piece.len);
        if !piece.more {
            self.end = Some(piece.offset + piece.len);
        }
    }

    fn complete(&self) -> bool {
        self.end.is_some_and(|end| self.passed >= end)
    }
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
    known: HashMap<DatagramKey, Followed>,
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
        self.known.retain(|key, f| {
            let live = f.deadline > now;
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

    /// Records how a datagram's first fragment (`first`) was translated;
    /// returns the fragments that were waiting for it, counted as passed.
    pub fn learn(&mut self, key: DatagramKey, rewrite: FragmentTarget, first: Piece, now: Duration) -> Vec<Vec<u8>> {
        if !self.can_learn(&key, now) {
            return Vec::new();
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
        let mut followed = Followed { target: rewrite, deadline: now + self.timeout, passed: 0, end: None };
        for piece in std::iter::once(first).chain(released.iter().filter_map(|p| Piece::of(p))) {
            followed.count(piece);
        }
        // A datagram that passed whole is not followed.
        if followed.complete() {
            if self.known.remove(&key).is_some() {
                self.per_source.release(key.src);
            }
        } else if self.known.insert(key, followed).is_none() {
            self.per_source.add(key.src);
        }
        released
    }

    /// How to rewrite a later fragment, if its first one was seen; counts
    /// it as passed, and forgets a datagram once all of it passed.
    pub fn passes(&mut self, key: &DatagramKey, piece: Piece, now: Duration) -> Option<FragmentTarget> {
        let f = self.known.get_mut(key).filter(|f| f.deadline > now)?;
        f.count(piece);
        let target = f.target;
        if f.complete() {
            self.known.remove(key);
            self.per_source.release(key.src);
        }
        Some(target)
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

    /// A first fragment and a middle one: neither ends its datagram.
    const FIRST: Piece = Piece { offset: 0, len: 8, more: true };
    const MID: Piece = Piece { offset: 8, len: 8, more: true };

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
        let released = f.learn(key(1), FragmentTarget { dst: [192, 168, 1, 10] }, FIRST, t0);
        assert_eq!(released, vec![b"late part".to_vec()]);
        assert_eq!(f.passes(&key(1), MID, t0), Some(FragmentTarget { dst: [192, 168, 1, 10] }));
        assert_eq!(
            f.passes(&key(1), MID, t0 + Duration::from_secs(5)),
            None,
            "a datagram is followed for its timeout, no longer"
        );
        assert_eq!(f.expire(t0 + Duration::from_secs(6)), 1, "key 2 gave up");
        assert_eq!(f.passes(&key(1), MID, t0 + Duration::from_secs(6)), None);
    }

    #[test]
    fn followed_datagrams_are_bounded_and_expired_ones_make_room() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 2, datagrams: 2, per_source: 2 });
        let t0 = Duration::from_secs(100);
        let to = FragmentTarget { dst: [192, 168, 1, 10] };
        f.learn(key(1), to, FIRST, t0);
        f.learn(key(2), to, FIRST, t0);
        assert!(!f.can_learn(&key(3), t0), "full");
        assert!(f.can_learn(&key(2), t0), "a datagram already followed");
        f.learn(key(3), to, FIRST, t0);
        assert_eq!((f.known(), f.passes(&key(3), MID, t0)), (2, None), "refused, not evicting");
        assert!(!f.can_learn(&key(3), t0 + Duration::from_secs(4)), "still followed");
        assert!(f.can_learn(&key(3), t0 + Duration::from_secs(5)), "the others expired at their deadline");
    }

    #[test]
    fn expiry_keeps_what_is_live_and_counts_what_gave_up() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 4, datagrams: 8, per_source: 8 });
        let t0 = Duration::from_secs(100);
        let to = FragmentTarget { dst: [192, 168, 1, 10] };
        f.learn(key(1), to, FIRST, t0);
        assert!(f.hold(key(2), b"early", t0));
        assert_eq!(f.expire(t0 + Duration::from_secs(1)), 0, "nothing gave up yet");
        let mut gives_up = Fragments::new(Duration::from_secs(5), Bounds { waiting: 4, datagrams: 8, per_source: 8 });
        gives_up.hold(key(3), b"late", t0);
        assert_eq!(gives_up.expire(t0 + Duration::from_secs(5)), 1, "a fragment waits its timeout, no longer");
        assert_eq!((f.passes(&key(1), MID, t0 + Duration::from_secs(1)), f.known(), f.waiting()), (Some(to), 1, 1));
        assert_eq!(f.learn(key(2), to, FIRST, t0 + Duration::from_secs(2)), vec![b"early".to_vec()]);
        assert_eq!(f.waiting(), 0, "released");
        assert_eq!(f.expire(t0 + Duration::from_secs(10)), 0, "nothing was waiting");
        assert_eq!(f.known(), 0, "both datagrams forgotten");
    }

    #[test]
    fn one_sender_follows_its_share_of_datagrams_and_no_more() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 2, datagrams: 8, per_source: 2 });
        let t0 = Duration::from_secs(100);
        let to = FragmentTarget { dst: [192, 168, 1, 10] };
        f.learn(key(1), to, FIRST, t0);
        f.learn(key(2), to, FIRST, t0);
        assert!(!f.can_learn(&key(3), t0), "the sender's share is taken");
        let other = DatagramKey { src: [198, 51, 100, 3], ..key(3) };
        assert!(f.can_learn(&other, t0), "another sender still gets room");
        assert!(f.can_learn(&key(3), t0 + Duration::from_secs(5)), "expired datagrams give the share back");
    }

    #[test]
    fn a_datagram_whose_bytes_all_passed_is_forgotten_and_gives_its_room_back() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 2, datagrams: 8, per_source: 1 });
        let t0 = Duration::from_secs(100);
        let to = FragmentTarget { dst: [192, 168, 1, 10] };
        f.learn(key(1), to, FIRST, t0);
        assert!(!f.can_learn(&key(2), t0), "the sender's one datagram is taken");
        assert_eq!(f.passes(&key(1), MID, t0), Some(to));
        assert_eq!(f.known(), 1, "more follows");
        let last = Piece { offset: 16, len: 4, more: false };
        assert_eq!(f.passes(&key(1), last, t0), Some(to), "the last fragment still goes through");
        assert_eq!(f.known(), 0, "all 20 bytes passed");
        assert!(f.can_learn(&key(2), t0), "its room is back before the timeout");
        // A last fragment that comes first leaves the datagram followed
        // until the rest has passed.
        f.learn(key(2), to, FIRST, t0);
        assert_eq!(f.passes(&key(2), last, t0), Some(to));
        assert_eq!(f.known(), 1, "8 of 16 bytes between");
        f.passes(&key(2), MID, t0);
        assert_eq!(f.known(), 0);
    }

    #[test]
    fn a_waiting_fragment_released_by_its_first_counts_as_passed() {
        let mut f = Fragments::new(Duration::from_secs(5), Bounds { waiting: 2, datagrams: 8, per_source: 8 });
        let t0 = Duration::from_secs(100);
        let udp = crate::wire::udp::emit(4500, 4500, &[7u8; 64]);
        let whole = crate::wire::ipv4::packet([198, 51, 100, 2], [198, 51, 100, 1], 17, &udp);
        let (first, late) = crate::wire::ipv4::split(&whole, 24).expect("two fragments");
        assert!(f.hold(key(1), &late, t0));
        let first = Piece::of(&first).expect("a packet");
        assert_eq!(first, Piece { offset: 0, len: 24, more: true });
        let released = f.learn(key(1), FragmentTarget { dst: [192, 168, 1, 10] }, first, t0);
        assert_eq!(released, vec![late]);
        assert_eq!(f.known(), 0, "every byte passed: forgotten");
    }
}
