//! What a played scenario saw, and the checks made of it: the types the
//! expectations ([`super::expect`]) and the families' premises
//! ([`super::family`]) both produce.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::format::{Delivery, TunnelState};
use crate::capture::Facts;
use crate::router::Shape;

/// What the steps left, read from the endpoints, the captures and the
/// router.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The lab's shape.
    pub shape: Shape,
    /// Each client's tunnel after the last step that touched it.
    pub tunnels: Vec<TunnelState>,
    /// Why each tunnel is down, when it is.
    pub notes: Vec<Option<String>>,
    /// Each client's address inside its tunnel.
    pub inner_addrs: Vec<Option<Ipv4Addr>>,
    /// What crossed each client's tunnel, per traffic step.
    pub traffic: BTreeMap<String, Vec<Delivery>>,
    /// Raw ESP: whether each client received echoes meant for another.
    pub foreign: Vec<bool>,
    /// How many packets the intruder's sprays sent.
    pub hostile_sent: u64,
    /// Whether client 1 still reached its server after the intruder's
    /// spray (`None` without a hostile step).
    pub forwards_after_hostile: Option<bool>,
    /// The router's LAN side.
    pub lan: Facts,
    /// The router's WAN side.
    pub wan: Facts,
    /// Rust NAT drop counters asked for.
    pub counters: BTreeMap<String, u64>,
}

impl Observed {
    /// The addresses the router sees the clients as, client 1 first.
    pub fn clients_seen_as(&self) -> Vec<Ipv4Addr> {
        (1..=self.shape.clients).map(|i| self.shape.seen_as(i)).collect()
    }
}

/// One expectation and what was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// What the file expects.
    pub expected: String,
    /// What was seen.
    pub seen: String,
    /// Whether they agree.
    pub ok: bool,
    /// Why it was seen so, when known (one line: a daemon's reason, the
    /// values behind a yes or no).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A premise of the story rather than an expectation of the router: the
    /// lab had to produce this situation for the verdict to mean anything.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub premise: bool,
}

impl Check {
    /// The check in one line: `tunnel c1: expected up, saw down (reason)`.
    pub fn line(&self) -> String {
        let reason = self.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        format!("{}: expected {}, saw {}{reason}", self.what, self.expected, self.seen)
    }

    pub(crate) fn because(mut self, reason: impl Into<String>) -> Check {
        self.reason = Some(reason.into());
        self
    }
}

pub(crate) fn check(what: impl Into<String>, expected: impl Serialize, seen: impl Serialize) -> Check {
    let expected = show(&expected);
    let seen = show(&seen);
    Check { what: what.into(), ok: expected == seen, expected, seen, reason: None, premise: false }
}

/// A premise: `holds` must be true, `seen` says what the captures showed.
pub(crate) fn premise(what: impl Into<String>, holds: bool, seen: impl Into<String>) -> Check {
    Check {
        what: what.into(),
        expected: "true".into(),
        seen: holds.to_string(),
        ok: holds,
        reason: Some(seen.into()),
        premise: true,
    }
}

fn show(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default().replace('"', "")
}
