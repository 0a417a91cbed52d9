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
    /// What the router did to ports and IDs on the way (public ports, Call
    /// IDs rewritten, its counters) rather than whether the VPN works:
    /// judged only with [`Judge::Exact`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub behaviour: bool,
    /// A premise the lab missed on its own, before anything it depends on
    /// crossed the router (clients that started apart, a capture that lost
    /// packets): the run may fairly be played again. A premise that a
    /// router could make miss never is.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub missed_by_lab: bool,
}

/// What a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Judge {
    /// Whether the VPNs do what they must: tunnels, traffic, nothing
    /// misdelivered or let in. What the router did to ports and IDs is
    /// reported beside the verdict as observed behaviour.
    Vpn,
    /// Everything the file expects, the router's behaviour included.
    Exact,
}

impl Judge {
    /// Whether `c` counts for the verdict.
    pub fn counts(self, c: &Check) -> bool {
        self == Judge::Exact || !c.behaviour
    }
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

    /// A premise missed, if `lab_alone`, by the lab on its own (see
    /// [`Check::missed_by_lab`]).
    pub(crate) fn missed_by_lab(mut self, lab_alone: bool) -> Check {
        self.missed_by_lab = !self.ok && lab_alone;
        self
    }

    /// The check is about the router's behaviour, not the VPN's.
    pub(crate) fn behaviour(mut self) -> Check {
        self.behaviour = true;
        self
    }

    /// Whether it is a failure under `judge`.
    pub fn fails(&self, judge: Judge) -> bool {
        !self.ok && judge.counts(self)
    }
}

pub(crate) fn check(what: impl Into<String>, expected: impl Serialize, seen: impl Serialize) -> Check {
    let expected = show(&expected);
    let seen = show(&seen);
    Check {
        what: what.into(),
        ok: expected == seen,
        expected,
        seen,
        reason: None,
        premise: false,
        behaviour: false,
        missed_by_lab: false,
    }
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
        behaviour: false,
        missed_by_lab: false,
    }
}

fn show(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default().replace('"', "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::format::ExpectedOutcome;
    use crate::scenario::play::{Status, verdict};

    #[test]
    fn a_vpn_verdict_reports_behaviour_beside_it_and_an_exact_one_judges_it() {
        let tunnel = check("tunnel c1", "up", "up");
        let ports = check("public source ports towards udp/500", 1, 2).behaviour();
        let checks = vec![tunnel.clone(), ports.clone()];
        assert_eq!(verdict(&checks, ExpectedOutcome::Works, Judge::Exact).0, Status::Fail);
        assert_eq!(verdict(&checks, ExpectedOutcome::Works, Judge::Vpn).0, Status::Pass);
        assert_eq!(verdict(&checks, ExpectedOutcome::Breaks, Judge::Vpn).0, Status::ExpectedFailure);
        // A VPN check fails under both; a premise not met is a lab error.
        let down = vec![check("tunnel c1", "up", "down"), ports];
        assert_eq!(verdict(&down, ExpectedOutcome::Works, Judge::Vpn).0, Status::Fail);
        let lab = vec![tunnel, premise("the spray crossed", false, "0 packets")];
        let (status, why) = verdict(&lab, ExpectedOutcome::Works, Judge::Vpn);
        assert_eq!(status, Status::Error);
        assert!(why.is_some_and(|w| w.contains("premise: the spray crossed")));
        // A file that expects only behaviour judges nothing under `vpn`.
        let only = vec![check("public source ports towards udp/500", 1, 1).behaviour()];
        assert_eq!(verdict(&only, ExpectedOutcome::Works, Judge::Vpn).0, Status::Error);
        assert_eq!(verdict(&only, ExpectedOutcome::Works, Judge::Exact).0, Status::Pass);
    }
}
