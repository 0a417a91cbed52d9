//! Early verdicts: while a connect step waits for its tunnels, the captures
//! on both sides of the router are read a few times a second. When they
//! prove that the router lets nothing of the clients' dialling to a server
//! out of its WAN side (the clients have been sending for a while, their
//! packets retransmitted, and not one packet to or from that server
//! crossed), waiting longer cannot bring the tunnel up: the clients' programs
//! are stopped and their tunnels are down, with the evidence as the note.
//!
//! `--slow` ([`Pace::Slow`]) waits instead, for the daemons to give up or
//! the connect timeout; the scenario suite plays stories both ways and
//! requires the same verdicts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::capture::{self, Facts};
use crate::lab::Host;

/// Whether a connect step judges a blocked router as soon as the captures
/// prove it, or waits out the daemons' own retransmissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// Judge from the captures as soon as the evidence is in.
    #[default]
    Early,
    /// Wait for the daemons to give up, or the connect timeout (`--slow`).
    Slow,
}

/// How long the first packet to a server must have waited, unanswered and
/// not forwarded, before the router is judged to block it. Every daemon has
/// retransmitted by then (charon after 0.5 s, TCP, L2TP and PPP after 1 s),
/// so a router that lets retransmissions through (one that drops a flow's
/// first packet) has shown it; and a router process starved of the CPU
/// for a second still has more time than that.
pub const PATIENCE: Duration = Duration::from_millis(1500);

/// How often the captures are read.
const EVERY: Duration = Duration::from_millis(100);

/// The evidence that the router blocks the way to `server`, at `now`
/// (since the epoch, as capture times are): at least two packets to
/// `server` on the LAN side, the first at least [`PATIENCE`] old, and no
/// packet to or from `server` on the WAN side. `None` while that is not
/// proven.
pub fn blocked(lan: &Facts, wan: &Facts, server: Ipv4Addr, now: Duration) -> Option<String> {
    let sent: Vec<Duration> = lan.packets.iter().filter(|p| p.dst == server).map(|p| p.time).collect();
    let first = *sent.iter().min()?;
    let waited = now.checked_sub(first)?;
    if sent.len() < 2 || waited < PATIENCE || wan.packets.iter().any(|p| p.src == server || p.dst == server) {
        return None;
    }
    Some(format!(
        "blocked at the router: {} packets to {server} reached its LAN side in {:.1} s and none crossed to its WAN \
         side (an early verdict from the captures: the client's programs were stopped; `--slow` waits for them to \
         give up)",
        sent.len(),
        waited.as_secs_f64()
    ))
}

/// The clients of one connect step that dial each server, and the
/// captures that show the router's sides.
pub struct Watch<'l> {
    /// The LAN side's and the WAN side's pcap files.
    pub lan: PathBuf,
    pub wan: PathBuf,
    /// Each server's address and the hosts of the clients dialling it.
    pub servers: BTreeMap<Ipv4Addr, Vec<Host<'l>>>,
}

impl Watch<'_> {
    /// Reads the captures every [`EVERY`] until `done` is set or every
    /// server is judged; stops the programs of the clients of a server
    /// the router blocks. Returns the notes, by server.
    pub fn run(mut self, done: &AtomicBool) -> BTreeMap<Ipv4Addr, String> {
        let mut judged = BTreeMap::new();
        while !done.load(Ordering::SeqCst) && !self.servers.is_empty() {
            std::thread::sleep(EVERY);
            // A capture being written may end mid-record; the reader keeps
            // what is whole. One that cannot be read yet is read next time.
            let (Ok(lan), Ok(wan)) = (capture::read(&self.lan), capture::read(&self.wan)) else { continue };
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let proven: Vec<(Ipv4Addr, String)> =
                self.servers.keys().filter_map(|&server| Some((server, blocked(&lan, &wan, server, now)?))).collect();
            for (server, note) in proven {
                for host in self.servers.remove(&server).unwrap_or_default() {
                    if let Err(e) = host.stop_programs(Duration::from_secs(1)) {
                        tracing::warn!("host '{}': stopping its programs after an early verdict: {e}", host.name());
                    }
                }
                judged.insert(server, note);
            }
        }
        judged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Seen, What};

    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn seen(ms: u64, src: [u8; 4], dst: Ipv4Addr) -> Seen {
        Seen {
            time: Duration::from_millis(ms),
            src: Ipv4Addr::from(src),
            dst,
            what: What::Other { proto: 17 },
            payload: 100,
            header_checksum_ok: true,
        }
    }

    fn facts(packets: Vec<Seen>) -> Facts {
        Facts { packets, ..Facts::default() }
    }

    #[test]
    fn retransmissions_that_never_cross_are_a_block() {
        let lan = facts(vec![seen(1_000, [192, 168, 1, 10], SERVER), seen(1_500, [192, 168, 1, 10], SERVER)]);
        let wan = facts(vec![seen(1_200, [198, 51, 100, 1], Ipv4Addr::new(198, 51, 100, 9))]);
        let note = blocked(&lan, &wan, SERVER, Duration::from_millis(2_600)).expect("blocked");
        assert!(note.contains("2 packets to 198.51.100.2") && note.contains("1.6 s"), "{note}");
    }

    #[test]
    fn no_verdict_before_the_evidence_is_in() {
        let one = facts(vec![seen(1_000, [192, 168, 1, 10], SERVER)]);
        let two = facts(vec![seen(1_000, [192, 168, 1, 10], SERVER), seen(1_500, [192, 168, 1, 10], SERVER)]);
        let empty = facts(Vec::new());
        // One packet, however old: nothing was retransmitted yet.
        assert_eq!(blocked(&one, &empty, SERVER, Duration::from_secs(60)), None);
        // Retransmitted, but not waited long enough.
        assert_eq!(blocked(&two, &empty, SERVER, Duration::from_millis(2_400)), None);
        // Nothing sent to that server.
        assert_eq!(blocked(&two, &empty, Ipv4Addr::new(198, 51, 100, 3), Duration::from_secs(60)), None);
        // A clock behind the capture's.
        assert_eq!(blocked(&two, &empty, SERVER, Duration::from_millis(500)), None);
    }

    #[test]
    fn anything_crossing_either_way_is_no_block() {
        let lan = facts(vec![seen(1_000, [192, 168, 1, 10], SERVER), seen(1_500, [192, 168, 1, 10], SERVER)]);
        // A router that drops a flow's first packet forwards the retransmission.
        let out = facts(vec![seen(1_501, [198, 51, 100, 1], SERVER)]);
        assert_eq!(blocked(&lan, &out, SERVER, Duration::from_secs(60)), None);
        let back = facts(vec![seen(1_600, SERVER.octets(), Ipv4Addr::new(198, 51, 100, 1))]);
        assert_eq!(blocked(&lan, &back, SERVER, Duration::from_secs(60)), None);
    }
}
