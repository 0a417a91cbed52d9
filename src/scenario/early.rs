//! Early verdicts: while a connect step waits for its tunnels, the captures
//! on both sides of the router are read ten times a second. When they prove
//! that the router lets nothing of the clients' dialling to a server out of
//! its WAN side (the clients have been sending for a while, their packets
//! retransmitted, and not one packet to or from that server crossed),
//! waiting longer cannot bring the tunnels up: every program of those
//! clients' hosts is stopped and their tunnels are down, with the evidence
//! as the note. A router that loses packets on purpose (an impaired Rust
//! NAT) gets no early verdict: a retransmission might still cross.
//!
//! `--slow` ([`Pace::Slow`]) waits instead, for the daemons to give up or
//! the connect timeout; the scenario suite plays stories both ways and
//! requires the same verdicts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::capture::{self, Facts};
use crate::lab::{Host, Process};

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

/// How long the first packet to a server must have waited, not forwarded,
/// before the router is judged to block it. The dialling programs of the
/// families a router blocks have sent again by then (charon after 0.5 s,
/// TCP and xl2tpd after 1 s), so a router that lets a retransmission
/// through (one that drops a flow's first packet) has shown it. The others
/// (OpenVPN, WireGuard) send again later; the verdict waits for their
/// second packet.
const PATIENCE: Duration = Duration::from_millis(1500);

/// How old a packet on the LAN side must be before it counts: the time the
/// router and the WAN side's capture (another process, on a busy machine)
/// get to show it crossed.
const SETTLE: Duration = Duration::from_millis(500);

/// How often the captures are read.
const READ_EVERY: Duration = Duration::from_millis(100);

/// The evidence that the router blocks the way to `server`, at `now`
/// (since the epoch, as capture times are), for a connect step that began
/// at `since`: one LAN host sent at least two packets to `server` since
/// then, each at least [`SETTLE`] old, the first at least [`PATIENCE`]
/// old, and no packet to or from `server` ever crossed the WAN side.
/// `None` while that is not proven.
fn blocked(lan: &Facts, wan: &Facts, server: Ipv4Addr, since: Duration, now: Duration) -> Option<String> {
    let settled = now.checked_sub(SETTLE)?;
    let mut by_source: BTreeMap<Ipv4Addr, Vec<Duration>> = BTreeMap::new();
    for p in lan.packets.iter().filter(|p| p.dst == server && p.time >= since && p.time <= settled) {
        by_source.entry(p.src).or_default().push(p.time);
    }
    let sent = by_source.into_values().filter(|times| times.len() >= 2).max_by_key(Vec::len)?;
    let first = *sent.iter().min()?;
    let waited = now.checked_sub(first)?;
    if waited < PATIENCE || wan.packets.iter().any(|p| p.src == server || p.dst == server) {
        return None;
    }
    Some(format!(
        "blocked at the router: {} packets to {server} reached its LAN side in {:.1} s and none crossed to its WAN \
         side (an early verdict from the captures: the clients' programs were stopped; `--slow` waits for them to \
         give up)",
        sent.len(),
        waited.as_secs_f64()
    ))
}

/// The clients of one connect step that dial each server, and the
/// captures that show the router's sides: what [`BlockWatch::run`] reads.
pub struct BlockWatch<'l> {
    /// The LAN side's pcap file.
    pub lan: PathBuf,
    /// The WAN side's pcap file, and the tcpdump writing it: a capture
    /// that stopped shows nothing crossing, which proves nothing.
    pub wan: (PathBuf, Process),
    /// Each server's address and the hosts of the clients dialling it.
    pub servers: BTreeMap<Ipv4Addr, Vec<Host<'l>>>,
    /// When the connect step began, since the epoch: packets of earlier
    /// steps are not its clients' dialling.
    pub since: Duration,
}

/// The time since the epoch, as capture times are.
pub fn now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

impl BlockWatch<'_> {
    /// Reads the captures every [`READ_EVERY`] until `done` is set, every
    /// server is judged, or the WAN side's capture stopped. For a server
    /// the router blocks, notes the evidence in `judged` and then stops
    /// every program of the hosts of its clients.
    pub fn run(mut self, done: &AtomicBool, judged: &Mutex<BTreeMap<Ipv4Addr, String>>) {
        loop {
            std::thread::sleep(READ_EVERY);
            if done.load(Ordering::SeqCst) || self.servers.is_empty() || self.wan.1.exit_status().is_some() {
                return;
            }
            // A capture being written may end mid-record; the reader keeps
            // what is whole. One that cannot be read yet is read next time.
            let (Ok(lan), Ok(wan)) = (capture::read(&self.lan), capture::read(&self.wan.0)) else { continue };
            let now = now();
            let proven: Vec<(Ipv4Addr, String)> = self
                .servers
                .keys()
                .filter_map(|&server| Some((server, blocked(&lan, &wan, server, self.since, now)?)))
                .collect();
            for (server, note) in proven {
                judged.lock().unwrap_or_else(|p| p.into_inner()).insert(server, note);
                for host in self.servers.remove(&server).unwrap_or_default() {
                    if let Err(e) = host.stop_programs(Duration::from_secs(1)) {
                        tracing::warn!("host '{}': stopping its programs after an early verdict: {e}", host.name());
                    }
                }
            }
        }
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
        let note = blocked(&lan, &wan, SERVER, Duration::ZERO, Duration::from_millis(2_600)).expect("blocked");
        assert!(note.contains("2 packets to 198.51.100.2") && note.contains("1.6 s"), "{note}");
        // The second packet is too fresh to count: the WAN side's capture
        // may not show it yet.
        assert_eq!(blocked(&lan, &wan, SERVER, Duration::ZERO, Duration::from_millis(1_900)), None);
    }

    #[test]
    fn no_verdict_before_the_evidence_is_in() {
        let one = facts(vec![seen(1_000, [192, 168, 1, 10], SERVER)]);
        let two = facts(vec![seen(1_000, [192, 168, 1, 10], SERVER), seen(1_500, [192, 168, 1, 10], SERVER)]);
        let empty = facts(Vec::new());
        // One packet, however old: nothing was retransmitted yet.
        assert_eq!(blocked(&one, &empty, SERVER, Duration::ZERO, Duration::from_secs(60)), None);
        // Retransmitted, but not waited long enough.
        assert_eq!(blocked(&two, &empty, SERVER, Duration::ZERO, Duration::from_millis(2_400)), None);
        assert!(blocked(&two, &empty, SERVER, Duration::ZERO, Duration::from_millis(2_500)).is_some());
        // Nothing sent to that server.
        assert_eq!(
            blocked(&two, &empty, Ipv4Addr::new(198, 51, 100, 3), Duration::ZERO, Duration::from_secs(60)),
            None
        );
        // One packet from each of two clients: nobody retransmitted.
        let two_hosts = facts(vec![seen(1_000, [192, 168, 1, 10], SERVER), seen(1_001, [192, 168, 1, 11], SERVER)]);
        assert_eq!(blocked(&two_hosts, &empty, SERVER, Duration::ZERO, Duration::from_secs(60)), None);
        // Packets from before the connect step began are not its dialling.
        assert_eq!(blocked(&two, &empty, SERVER, Duration::from_millis(1_200), Duration::from_secs(60)), None);
        // A clock behind the capture's.
        assert_eq!(blocked(&two, &empty, SERVER, Duration::ZERO, Duration::from_millis(500)), None);
    }

    #[test]
    fn anything_crossing_either_way_is_no_block() {
        let lan = facts(vec![seen(1_000, [192, 168, 1, 10], SERVER), seen(1_500, [192, 168, 1, 10], SERVER)]);
        // A router that drops a flow's first packet forwards the retransmission.
        let out = facts(vec![seen(1_501, [198, 51, 100, 1], SERVER)]);
        assert_eq!(blocked(&lan, &out, SERVER, Duration::ZERO, Duration::from_secs(60)), None);
        let back = facts(vec![seen(1_600, SERVER.octets(), Ipv4Addr::new(198, 51, 100, 1))]);
        assert_eq!(blocked(&lan, &back, SERVER, Duration::ZERO, Duration::from_secs(60)), None);
    }
}
