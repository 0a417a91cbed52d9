//! The packet ladder: what crossed the router, each LAN packet beside the
//! WAN packet it became (or none), in time order.

use serde::Serialize;

use crate::capture::{Facts, Seen, What};

/// One rung: a packet on one side and its translation on the other.
#[derive(Debug, Clone, Serialize)]
pub struct Rung {
    /// Milliseconds since the first packet.
    pub ms: f64,
    /// `out` (LAN to WAN), `in` (WAN to LAN), or `lan`/`wan` for a packet
    /// seen on one side only.
    pub dir: &'static str,
    /// The packet on the LAN side.
    pub lan: Option<String>,
    /// The packet on the WAN side.
    pub wan: Option<String>,
}

/// How far apart (in time) a packet and its translation may be.
const PAIRING_MS: f64 = 50.0;

/// At most `limit` rungs from the two captures.
pub fn rungs(lan: &Facts, wan: &Facts, limit: usize) -> Vec<Rung> {
    let lan: Vec<&Seen> = lan.packets.iter().collect();
    let wan: Vec<&Seen> = wan.packets.iter().collect();
    let start = lan.iter().chain(wan.iter()).map(|s| s.time).min().unwrap_or_default();
    let ms = |s: &Seen| (s.time.saturating_sub(start)).as_secs_f64() * 1000.0;
    let mut used = vec![false; wan.len()];
    let mut rungs = Vec::new();
    for l in &lan {
        let pair = wan.iter().enumerate().position(|(k, w)| {
            !used[k]
                && same_kind(&l.what, &w.what)
                && (ms(w) - ms(l)).abs() <= PAIRING_MS
                && (l.dst == w.dst || l.src == w.src)
        });
        let dir = match pair {
            Some(k) if ms(wan[k]) >= ms(l) => "out",
            Some(_) => "in",
            None => "lan",
        };
        if let Some(k) = pair {
            used[k] = true;
        }
        let t = pair.map(|k| ms(wan[k]).min(ms(l))).unwrap_or(ms(l));
        rungs.push(Rung { ms: t, dir, lan: Some(describe(l)), wan: pair.map(|k| describe(wan[k])) });
    }
    for (k, w) in wan.iter().enumerate() {
        if !used[k] {
            rungs.push(Rung { ms: ms(w), dir: "wan", lan: None, wan: Some(describe(w)) });
        }
    }
    rungs.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    rungs.truncate(limit);
    rungs
}

fn same_kind(a: &What, b: &What) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// One packet in a line: addresses, protocol, and the IDs that matter.
pub fn describe(s: &Seen) -> String {
    let what = match &s.what {
        What::Gre { call_id, .. } => format!("GRE call {call_id}"),
        What::PptpControl { sport, dport, message, call_id, peer_call_id } => {
            let mut t = format!("PPTP {} {sport}→{dport}", pptp_message(*message));
            if let Some(c) = call_id {
                t.push_str(&format!(" call {c}"));
            }
            if let Some(c) = peer_call_id {
                t.push_str(&format!(" peer {c}"));
            }
            t
        }
        What::L2tp { sport, dport, tunnel_id, control, .. } => match control {
            Some(m) => format!("L2TP ctl {} {sport}→{dport} tunnel {tunnel_id}", l2tp_message(*m)),
            None => format!("L2TP data {sport}→{dport} tunnel {tunnel_id}"),
        },
        What::Ike { sport, dport, initiator_spi, .. } => format!("IKE {sport}→{dport} spi {initiator_spi:016x}"),
        What::Esp { ports: Some((sp, dp)), spi, seq } => format!("ESP-in-UDP {sp}→{dp} spi {spi:#x} seq {seq}"),
        What::Esp { ports: None, spi, seq } => format!("ESP spi {spi:#x} seq {seq}"),
        What::NatTKeepalive { sport, dport } => format!("NAT-T keepalive {sport}→{dport}"),
        What::Udp { sport, dport } => format!("UDP {sport}→{dport}"),
        What::Tcp { sport, dport } => format!("TCP {sport}→{dport}"),
        What::Icmp { kind, code } => format!("ICMP {kind}/{code}"),
        What::Fragment { proto } => format!("fragment of proto {proto}"),
        What::Other { proto } => format!("proto {proto}"),
    };
    format!("{} → {}: {what}", s.src, s.dst)
}

fn pptp_message(m: u16) -> String {
    const NAMES: [&str; 16] = [
        "?", "SCCRQ", "SCCRP", "StopCCRQ", "StopCCRP", "ECHO-RQ", "ECHO-RP", "OCRQ", "OCRP", "ICRQ", "ICRP", "ICCN",
        "CCRQ", "CDN", "WEN", "SLI",
    ];
    NAMES.get(usize::from(m)).map(|s| s.to_string()).unwrap_or_else(|| format!("type {m}"))
}

fn l2tp_message(m: u16) -> String {
    const NAMES: [&str; 17] = [
        "ZLB", "SCCRQ", "SCCRP", "SCCCN", "StopCCN", "?", "HELLO", "OCRQ", "OCRP", "OCCN", "ICRQ", "ICRP", "ICCN", "?",
        "CDN", "WEN", "SLI",
    ];
    NAMES.get(usize::from(m)).map(|s| s.to_string()).unwrap_or_else(|| format!("type {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn seen(ms: u64, src: [u8; 4], dst: [u8; 4], what: What) -> Seen {
        Seen {
            time: Duration::from_millis(1000 + ms),
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            what,
            payload: 0,
            header_checksum_ok: true,
        }
    }

    #[test]
    fn a_packet_and_its_translation_share_a_rung() {
        let lan = Facts {
            packets: vec![
                seen(0, [192, 168, 1, 10], [198, 51, 100, 2], What::Gre { call_id: 7, inner: None }),
                seen(30, [198, 51, 100, 2], [192, 168, 1, 10], What::Gre { call_id: 7, inner: None }),
            ],
            ..Facts::default()
        };
        let wan = Facts {
            packets: vec![
                seen(1, [198, 51, 100, 1], [198, 51, 100, 2], What::Gre { call_id: 7, inner: None }),
                seen(29, [198, 51, 100, 2], [198, 51, 100, 1], What::Gre { call_id: 9, inner: None }),
                seen(200, [198, 51, 100, 66], [198, 51, 100, 1], What::Other { proto: 50 }),
            ],
            ..Facts::default()
        };
        let r = rungs(&lan, &wan, 10);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].dir, r[1].dir, r[2].dir), ("out", "in", "wan"));
        assert!(r[1].wan.as_deref().is_some_and(|w| w.contains("GRE call 9")), "{r:?}");
        assert!(r[2].lan.is_none());
    }
}
