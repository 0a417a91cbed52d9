//! TCP connection tracking as a NAT needs it: the state that sets a
//! session's timeout (RFC 5382), and the sequence-number windows that tell
//! a peer's RST or FIN from a stranger's guess.
//!
//! Each direction remembers where its data ends, how far the other side has
//! acknowledged it, and how far the other side's window lets it go, the way
//! Linux conntrack does. A RST changes the state only when its sequence
//! number is one the receiver would accept (RFC 5961 §3: exactly the next
//! one, or inside the window); any other segment, a FIN included, moves the
//! state and the windows only when it lies inside the window. Anything else
//! is a guess by someone who does not see the connection: the RST is
//! dropped and counted, the rest passes without changing anything (so a
//! guessed segment cannot move the window to where a guessed RST lands).
//! Window scaling is not applied, so the windows are narrower than the
//! hosts' own; a peer's RST carries the next sequence number and passes.

use super::serial::{after, within};
use crate::wire::tcp;

/// TCP connection state as a NAT sees it (RFC 5382 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpState {
    /// Not TCP.
    #[default]
    None,
    /// Opening: SYN seen, and no acknowledgment from the LAN side yet.
    Opening,
    /// Established.
    Established,
    /// FIN seen from the LAN side.
    FinOut,
    /// FIN seen from the WAN side.
    FinIn,
    /// Closing: FIN both ways, or RST.
    Closing,
}

impl TcpState {
    /// A short name for dumps.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "-",
            TcpState::Opening => "opening",
            TcpState::Established => "established",
            TcpState::FinOut => "fin-out",
            TcpState::FinIn => "fin-in",
            TcpState::Closing => "closing",
        }
    }
}

/// What tracking needs of a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seg {
    /// Flags (FIN, SYN, RST, ACK…).
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with ACK).
    pub ack: u32,
    /// Window field.
    pub window: u16,
    /// Bytes of data.
    pub len: u32,
}

impl Seg {
    /// The sequence space the segment takes: its data, plus one each for
    /// SYN and FIN.
    fn span(&self) -> u32 {
        self.len + u32::from(self.flags & tcp::SYN != 0) + u32::from(self.flags & tcp::FIN != 0)
    }
}

/// One direction of a connection.
#[derive(Debug, Clone, Copy, Default)]
struct Dir {
    seen: bool,
    /// The sequence number after the last byte sent.
    end: u32,
    /// The highest acknowledgment the other side sent for it.
    acked: u32,
    /// How far the other side's window lets it send.
    max_end: u32,
    /// The largest window the other side advertised.
    max_win: u32,
}

/// A session's TCP tracking.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracker {
    state: TcpState,
    /// LAN to WAN, WAN to LAN.
    dirs: [Dir; 2],
}

/// A RST a stranger could have sent: outside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfWindow;

impl Tracker {
    /// The state.
    pub fn state(&self) -> TcpState {
        self.state
    }

    /// Follows one segment: the state after it, or `None` for a segment
    /// outside the window, which moves nothing (and which the caller should
    /// neither parse nor let refresh the session). `Err` for a RST outside
    /// the window, which the caller drops.
    pub fn on_segment(&mut self, seg: Seg, outbound: bool) -> Result<Option<TcpState>, OutOfWindow> {
        let (me, other) = if outbound { (0, 1) } else { (1, 0) };
        let rst = seg.flags & tcp::RST != 0;
        let fin = seg.flags & tcp::FIN != 0;
        let syn = seg.flags & tcp::SYN != 0;
        let ack = seg.flags & tcp::ACK != 0;
        if rst {
            if !self.rst_in_window(seg, me, other) {
                return Err(OutOfWindow);
            }
            self.state = TcpState::Closing;
            return Ok(Some(self.state));
        }
        // A SYN starts this side's numbers only before it has sent anything
        // (or on a closed connection's reuse), and an answering SYN must
        // acknowledge the other side's: a stranger's SYN cannot move the
        // window of a connection under way.
        let fresh_syn = syn
            && (!self.dirs[me].seen || self.state == TcpState::Closing)
            && (!ack || !self.dirs[other].seen || seg.ack == self.dirs[other].end);
        if fresh_syn {
            self.dirs[me] = Dir::default();
        } else if !self.in_window(seg, me) {
            return Ok(None);
        }
        self.learn(seg, me, other);
        let next = match self.state {
            TcpState::None if syn => TcpState::Opening,
            TcpState::None => TcpState::Established,
            TcpState::Opening if !syn && ack && outbound => TcpState::Established,
            TcpState::Opening => TcpState::Opening,
            TcpState::Established if fin => {
                if outbound {
                    TcpState::FinOut
                } else {
                    TcpState::FinIn
                }
            }
            TcpState::FinOut if fin && !outbound => TcpState::Closing,
            TcpState::FinIn if fin && outbound => TcpState::Closing,
            TcpState::Closing if fresh_syn && outbound => TcpState::Opening,
            s => s,
        };
        self.state = next;
        Ok(Some(next))
    }

    /// A RST is the peer's when it carries the next sequence number, or
    /// one inside the receiver's window (RFC 5961 leaves the rest to the
    /// host). Before the sender has sent anything, it must acknowledge what
    /// the other side sent (a refused SYN, RFC 9293 §3.10.7.3).
    fn rst_in_window(&self, seg: Seg, me: usize, other: usize) -> bool {
        let d = &self.dirs[me];
        if !d.seen {
            let o = &self.dirs[other];
            return !o.seen || (seg.flags & tcp::ACK != 0 && seg.ack == o.end);
        }
        seg.seq == d.end || within(seg.seq, d.acked, d.max_end)
    }

    /// A segment lies in the window: it starts no earlier than one window
    /// before what the receiver acknowledged (a retransmission) and no later
    /// than the window's end.
    fn in_window(&self, seg: Seg, me: usize) -> bool {
        let d = &self.dirs[me];
        if !d.seen {
            return true;
        }
        within(seg.seq, d.acked.wrapping_sub(d.max_win.max(1)), d.max_end)
    }

    fn learn(&mut self, seg: Seg, me: usize, other: usize) {
        let end = seg.seq.wrapping_add(seg.span());
        let win = u32::from(seg.window);
        {
            let d = &mut self.dirs[me];
            if !d.seen {
                *d = Dir { seen: true, end, acked: seg.seq, max_end: end, max_win: 1 };
            } else if after(end, d.end) {
                d.end = end;
            }
            if after(d.end, d.max_end) {
                d.max_end = d.end;
            }
        }
        if seg.flags & tcp::ACK != 0 {
            let o = &mut self.dirs[other];
            if !o.seen {
                return;
            }
            if after(seg.ack, o.acked) {
                o.acked = seg.ack;
            }
            o.max_win = o.max_win.max(win);
            let reach = seg.ack.wrapping_add(win.max(1));
            if after(reach, o.max_end) {
                o.max_end = reach;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u8, seq: u32, ack: u32, len: u32) -> Seg {
        Seg { flags, seq, ack, window: 64240, len }
    }

    /// A connection from the LAN, established, 100 bytes each way.
    fn established() -> Tracker {
        let mut t = Tracker::default();
        t.on_segment(seg(tcp::SYN, 1000, 0, 0), true).expect("syn");
        t.on_segment(seg(tcp::SYN | tcp::ACK, 5000, 1001, 0), false).expect("syn-ack");
        t.on_segment(seg(tcp::ACK, 1001, 5001, 100), true).expect("data out");
        t.on_segment(seg(tcp::ACK, 5001, 1101, 100), false).expect("data in");
        assert_eq!(t.state(), TcpState::Established);
        t
    }

    #[test]
    fn a_rst_at_the_next_sequence_number_closes() {
        let mut t = established();
        assert_eq!(t.on_segment(seg(tcp::RST, 5101, 0, 0), false), Ok(Some(TcpState::Closing)));
    }

    #[test]
    fn a_rst_inside_the_window_closes_and_one_outside_does_not() {
        let mut t = established();
        // The LAN host acknowledged 5101 with a 64240-byte window.
        t.on_segment(seg(tcp::ACK, 1101, 5101, 0), true).expect("ack");
        for guess in [0u32, 1, 4_000_000_000, 5101 + 64240 + 1, 5100, 2_147_488_000] {
            assert_eq!(t.clone().on_segment(seg(tcp::RST, guess, 0, 0), false), Err(OutOfWindow), "seq {guess}");
        }
        assert_eq!(t.state(), TcpState::Established, "guesses change nothing");
        assert_eq!(t.on_segment(seg(tcp::RST, 5101 + 30000, 0, 0), false), Ok(Some(TcpState::Closing)));
    }

    #[test]
    fn a_fin_outside_the_window_changes_nothing() {
        let mut t = established();
        t.on_segment(seg(tcp::ACK, 1101, 5101, 0), true).expect("ack");
        assert_eq!(t.on_segment(seg(tcp::FIN | tcp::ACK, 3_000_000_000, 1101, 0), false), Ok(None));
        assert_eq!(t.state(), TcpState::Established);
        assert_eq!(t.on_segment(seg(tcp::FIN | tcp::ACK, 5101, 1101, 0), false), Ok(Some(TcpState::FinIn)));
        assert_eq!(t.on_segment(seg(tcp::FIN | tcp::ACK, 1101, 5102, 0), true), Ok(Some(TcpState::Closing)));
    }

    #[test]
    fn a_refused_syn_is_reset_by_an_ack_of_it_only() {
        let mut t = Tracker::default();
        t.on_segment(seg(tcp::SYN, 1000, 0, 0), true).expect("syn");
        assert_eq!(t.clone().on_segment(seg(tcp::RST | tcp::ACK, 0, 77, 0), false), Err(OutOfWindow));
        assert_eq!(t.on_segment(seg(tcp::RST | tcp::ACK, 0, 1001, 0), false), Ok(Some(TcpState::Closing)));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = Tracker::default();
        t.on_segment(seg(tcp::SYN, u32::MAX - 10, 0, 0), true).expect("syn");
        t.on_segment(seg(tcp::SYN | tcp::ACK, u32::MAX - 5, u32::MAX - 9, 0), false).expect("syn-ack");
        t.on_segment(seg(tcp::ACK, u32::MAX - 9, u32::MAX - 4, 100), true).expect("data across the wrap");
        t.on_segment(seg(tcp::ACK, u32::MAX - 4, 90, 0), false).expect("ack across the wrap");
        assert_eq!(t.on_segment(seg(tcp::RST, 90, 0, 0), true), Ok(Some(TcpState::Closing)));
    }

    #[test]
    fn a_guessed_segment_cannot_move_the_window_for_a_guessed_rst() {
        let mut t = established();
        t.on_segment(seg(tcp::ACK, 1101, 5101, 0), true).expect("ack");
        // Far ahead of the window: if it counted, a RST at its end would
        // match the next sequence number exactly.
        assert_eq!(t.on_segment(seg(tcp::ACK, 1_000_000_000, 1101, 500), false), Ok(None));
        assert_eq!(t.on_segment(seg(tcp::RST, 1_000_000_500, 0, 0), false), Err(OutOfWindow));
    }

    #[test]
    fn a_strangers_syn_cannot_restart_a_connection_under_way() {
        let mut t = established();
        t.on_segment(seg(tcp::ACK, 1101, 5101, 0), true).expect("ack");
        // A SYN from "the server" at a sequence number of the stranger's
        // choosing, then a RST just after it.
        assert_eq!(t.on_segment(seg(tcp::SYN, 3_000_000_000, 0, 0), false), Ok(None));
        assert_eq!(t.on_segment(seg(tcp::RST, 3_000_000_001, 0, 0), false), Err(OutOfWindow));
        assert_eq!(t.state(), TcpState::Established);
        // A closed connection's endpoints may start it again.
        t.on_segment(seg(tcp::RST, 5101, 0, 0), false).expect("the peer's reset");
        assert_eq!(t.on_segment(seg(tcp::SYN, 9000, 0, 0), true), Ok(Some(TcpState::Opening)));
    }
}
