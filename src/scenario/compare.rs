//! Two runs side by side (`vpn-passthrough compare A/report.json
//! B/report.json`): what got worse from A to B, what got better, what
//! else changed, and which of the router's behaviour values moved.
//!
//! Runs are matched by `family::case` when each report plays every case
//! against one router (two firmware versions of one device, or two Rust
//! NAT modes), else by the whole run name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use serde::Deserialize;

use super::play::Status;
use super::report::esc;

/// A `report.json`, as far as a comparison reads it.
#[derive(Debug, Deserialize)]
pub struct RunReport {
    /// The router under test.
    pub router: String,
    /// The run's `--label`.
    #[serde(default)]
    pub label: Option<String>,
    /// The NAT behaviour measured of each router, if it was.
    #[serde(default)]
    pub behaviour: Vec<crate::nat_behaviour::Measured>,
    /// Every run.
    pub outcomes: Vec<Recorded>,
}

/// One run of a report.
#[derive(Debug, Deserialize)]
pub struct Recorded {
    /// `family::case::target`.
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// What its verdict was about (`vpn` or `exact`).
    #[serde(default)]
    pub judge: Option<String>,
    /// Its checks.
    #[serde(default)]
    pub checks: Vec<RecordedCheck>,
}

/// One check of a recorded run.
#[derive(Debug, Deserialize)]
pub struct RecordedCheck {
    /// What was checked.
    pub what: String,
    /// What was seen.
    pub seen: String,
    /// About the router's behaviour rather than the VPN's.
    #[serde(default)]
    pub behaviour: bool,
}

impl RunReport {
    /// Reads and parses a `report.json` (at most [`MAX_REPORT`] bytes).
    pub fn load(path: &Path) -> Result<RunReport, String> {
        let size = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
        if size > MAX_REPORT {
            return Err(format!("{}: {size} bytes; a report.json is at most {MAX_REPORT}", path.display()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a vpn-passthrough report.json: {e}", path.display()))
    }

    /// The run's name for people: its label, else its router.
    pub fn title(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.router.clone())
    }

    /// Every run by the key a comparison matches on.
    fn by_key(&self, per_case: bool) -> BTreeMap<String, &Recorded> {
        self.outcomes.iter().map(|o| (if per_case { case_of(&o.name) } else { o.name.clone() }, o)).collect()
    }

    /// Whether each `family::case` appears once.
    fn one_router(&self) -> bool {
        let mut cases: Vec<String> = self.outcomes.iter().map(|o| case_of(&o.name)).collect();
        cases.sort();
        cases.windows(2).all(|w| w[0] != w[1])
    }
}

/// The largest report `compare` reads.
pub const MAX_REPORT: u64 = 256 << 20;

/// What the runs of a report were judged on.
fn judges(r: &RunReport) -> BTreeSet<String> {
    r.outcomes.iter().map(|o| o.judge.clone().unwrap_or_else(|| "exact".into())).collect()
}

/// Text for a terminal: control characters shown, not obeyed.
fn plain(t: &str) -> String {
    t.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// `family::case` of `family::case::target`.
fn case_of(name: &str) -> String {
    name.rsplit_once("::").map_or(name, |(case, _)| case).to_string()
}

/// A run whose status changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The run.
    pub name: String,
    /// In A.
    pub from: Status,
    /// In B.
    pub to: Status,
}

/// A behaviour value that moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The run.
    pub name: String,
    /// What was checked.
    pub what: String,
    /// Seen in A.
    pub from: String,
    /// Seen in B.
    pub to: String,
}

/// What changed from run A to run B.
#[derive(Debug, Default)]
pub struct Comparison {
    /// A's title.
    pub a: String,
    /// B's title.
    pub b: String,
    /// Judged as expected in A (pass or xfail), FAIL or ERROR in B.
    pub regressions: Vec<Change>,
    /// FAIL or ERROR in A, judged as expected in B.
    pub fixes: Vec<Change>,
    /// Any other change of status.
    pub other: Vec<Change>,
    /// Behaviour values seen differently.
    pub moved: Vec<Moved>,
    /// Runs in only one of the two.
    pub only_a: Vec<String>,
    /// Runs in only B.
    pub only_b: Vec<String>,
    /// Why the two cannot be compared run for run, if so (they were judged
    /// on different things).
    pub warning: Option<String>,
}

fn good(s: Status) -> bool {
    matches!(s, Status::Pass | Status::ExpectedFailure)
}

fn bad(s: Status) -> bool {
    matches!(s, Status::Fail | Status::Error)
}

/// What changed from `a` to `b`.
pub fn compare(a: &RunReport, b: &RunReport) -> Comparison {
    let per_case = a.one_router() && b.one_router();
    let (ka, kb) = (a.by_key(per_case), b.by_key(per_case));
    let mut c = Comparison { a: a.title(), b: b.title(), ..Comparison::default() };
    let (ja, jb) = (judges(a), judges(b));
    if ja != jb {
        c.warning = Some(format!(
            "the runs were judged on different things ({:?} against {:?}): a change of status may be the judge's",
            ja, jb
        ));
    }
    for (key, ra) in &ka {
        let Some(rb) = kb.get(key) else {
            c.only_a.push(key.clone());
            continue;
        };
        let change = Change { name: key.clone(), from: ra.status, to: rb.status };
        if good(ra.status) && bad(rb.status) {
            c.regressions.push(change);
        } else if bad(ra.status) && good(rb.status) {
            c.fixes.push(change);
        } else if ra.status != rb.status {
            c.other.push(change);
        }
        let in_b: BTreeMap<&str, &RecordedCheck> =
            rb.checks.iter().filter(|k| k.behaviour).map(|k| (k.what.as_str(), k)).collect();
        for ca in ra.checks.iter().filter(|k| k.behaviour) {
            if let Some(cb) = in_b.get(ca.what.as_str())
                && cb.seen != ca.seen
            {
                c.moved.push(Moved {
                    name: key.clone(),
                    what: ca.what.clone(),
                    from: ca.seen.clone(),
                    to: cb.seen.clone(),
                });
            }
        }
    }
    c.only_b = kb.keys().filter(|k| !ka.contains_key(*k)).cloned().collect();
    c.moved.extend(measured_moves(a, b));
    c
}

/// Measured NAT behaviour values that differ (timeouts: ranges that do not
/// overlap), table by table: the one table of each report, else tables of
/// the same router.
fn measured_moves(a: &RunReport, b: &RunReport) -> Vec<Moved> {
    let pairs: Vec<_> = if a.behaviour.len() == 1 && b.behaviour.len() == 1 {
        vec![(&a.behaviour[0], &b.behaviour[0])]
    } else {
        a.behaviour.iter().filter_map(|ma| Some((ma, b.behaviour.iter().find(|mb| mb.router == ma.router)?))).collect()
    };
    let mut moved = Vec::new();
    for (ma, mb) in pairs {
        for ra in &ma.rows {
            if let Some(vb) = mb.get(ra.key)
                && !ra.value.agrees_with(vb)
            {
                moved.push(Moved {
                    name: format!("NAT behaviour of {}", mb.router),
                    what: ra.key.title().to_string(),
                    from: ra.value.to_string(),
                    to: vb.to_string(),
                });
            }
        }
    }
    moved
}

impl Comparison {
    /// The comparison for a terminal: regressions first.
    pub fn text(&self) -> String {
        let mut s = format!("{} -> {}\n", plain(&self.a), plain(&self.b));
        if let Some(w) = &self.warning {
            let _ = writeln!(s, "warning: {}", plain(w));
        }
        let changes = |s: &mut String, title: &str, v: &[Change]| {
            let _ = writeln!(s, "{title}: {}", v.len());
            for c in v {
                let _ = writeln!(s, "  {:<50} {} -> {}", plain(&c.name), c.from.word(), c.to.word());
            }
        };
        changes(&mut s, "regressions", &self.regressions);
        changes(&mut s, "fixes", &self.fixes);
        changes(&mut s, "other changes", &self.other);
        let _ = writeln!(s, "behaviour that moved: {}", self.moved.len());
        for m in &self.moved {
            let _ = writeln!(s, "  {:<50} {}: {} -> {}", plain(&m.name), plain(&m.what), plain(&m.from), plain(&m.to));
        }
        for (title, v) in [("only in the first", &self.only_a), ("only in the second", &self.only_b)] {
            if !v.is_empty() {
                let _ = writeln!(s, "{title}: {}", plain(&v.join(", ")));
            }
        }
        s
    }

    /// The comparison as a page.
    pub fn html(&self) -> String {
        let mut s = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>VPN passthrough: {a} to {b}</title>\n\
<style>body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:.25em .6em}}\n\
.regression{{background:#f8c8c8}} .fix{{background:#d9f2d9}}</style></head><body>\n<h1>{a} &rarr; {b}</h1>\n",
            a = esc(&self.a),
            b = esc(&self.b)
        );
        if let Some(w) = &self.warning {
            let _ = writeln!(s, "<p><b>Warning:</b> {}</p>", esc(w));
        }
        for (title, class, v) in [
            ("Regressions", "regression", &self.regressions),
            ("Fixes", "fix", &self.fixes),
            ("Other changes", "", &self.other),
        ] {
            let _ = writeln!(s, "<h2>{title}: {}</h2>", v.len());
            if !v.is_empty() {
                s.push_str("<table><tr><th>run</th><th>before</th><th>after</th></tr>\n");
                for c in v {
                    let _ = writeln!(
                        s,
                        "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&c.name),
                        c.from.word(),
                        c.to.word()
                    );
                }
                s.push_str("</table>\n");
            }
        }
        let _ = writeln!(s, "<h2>Behaviour that moved: {}</h2>", self.moved.len());
        if !self.moved.is_empty() {
            s.push_str("<table><tr><th>run</th><th>what</th><th>before</th><th>after</th></tr>\n");
            for m in &self.moved {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&m.name),
                    esc(&m.what),
                    esc(&m.from),
                    esc(&m.to)
                );
            }
            s.push_str("</table>\n");
        }
        for (title, v) in [("Only in the first", &self.only_a), ("Only in the second", &self.only_b)] {
            if !v.is_empty() {
                let _ = writeln!(s, "<h2>{title}: {}</h2>\n<p>{}</p>", v.len(), esc(&v.join(", ")));
            }
        }
        s.push_str("</body></html>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, runs: &[(&str, &str, &str)]) -> RunReport {
        let outcomes: Vec<String> = runs
            .iter()
            .map(|(name, status, ports)| {
                format!(
                    r#"{{"name":"{name}","status":"{status}","checks":[{{"what":"public source ports towards udp/500","seen":"{ports}","behaviour":true,"expected":"1","ok":true}}]}}"#
                )
            })
            .collect();
        let text = format!(r#"{{"router":"r","label":"{label}","outcomes":[{}]}}"#, outcomes.join(","));
        serde_json::from_str(&text).expect("a report")
    }

    #[test]
    fn regressions_fixes_other_changes_and_moved_behaviour_are_told_apart() {
        let a = report(
            "fw 1",
            &[
                ("pptp::one::x", "pass", "1"),
                ("l2tp::two::x", "fail", "1"),
                ("esp::three::x", "pass", "1"),
                ("ike::gone::x", "pass", "1"),
            ],
        );
        let b = report(
            "fw 2",
            &[
                ("pptp::one::x", "fail", "2"),
                ("l2tp::two::x", "pass", "1"),
                ("esp::three::x", "expected-failure", "1"),
                ("wg::new::x", "pass", "1"),
            ],
        );
        let c = compare(&a, &b);
        assert_eq!(c.regressions, vec![Change { name: "pptp::one".into(), from: Status::Pass, to: Status::Fail }]);
        assert_eq!(c.fixes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["l2tp::two"]);
        assert_eq!(c.other.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["esp::three"]);
        assert_eq!(c.moved.len(), 1);
        assert_eq!((c.moved[0].from.as_str(), c.moved[0].to.as_str()), ("1", "2"));
        assert_eq!((c.only_a.clone(), c.only_b.clone()), (vec!["ike::gone".to_string()], vec!["wg::new".to_string()]));
        let text = c.text();
        assert!(text.starts_with("fw 1 -> fw 2\nregressions: 1\n"), "{text}");
        assert!(text.find("regressions").unwrap_or(usize::MAX) < text.find("fixes").unwrap_or(0), "{text}");
        assert!(c.html().contains("<h2>Regressions: 1</h2>") && c.html().contains("Only in the second: 1"));
        assert!(c.warning.is_none(), "both judged exact");
        let mut vpn = report("fw 3", &[("pptp::one::x", "pass", "1")]);
        vpn.outcomes[0].judge = Some("vpn".into());
        assert!(compare(&a, &vpn).warning.is_some_and(|w| w.contains("judged on different things")));
        let hostile = report("fw\\u001b[2J", &[]);
        assert!(hostile.title().contains('\u{1b}'), "the report's label holds an escape code");
        assert!(!compare(&hostile, &hostile).text().contains('\u{1b}'), "no escape codes reach the terminal");
        // Two routers per case: runs are matched by their whole name.
        let both = report("x", &[("pptp::one::linux", "pass", "1"), ("pptp::one::rust-full", "pass", "1")]);
        assert!(compare(&both, &both).regressions.is_empty() && compare(&both, &both).only_a.is_empty());
        assert!(RunReport::load(Path::new("/nonexistent/report.json")).is_err());
    }

    #[test]
    fn measured_behaviour_that_moved_is_listed_and_timeouts_move_only_when_their_ranges_part() {
        use crate::nat_behaviour::{Key, Measured, Value};
        let table = |udp: Value, preserved: bool| {
            let mut m = Measured::new(
                "r",
                vec![(Key::UdpTimeout, udp), (Key::PortPreservation, Value::Flag { yes: preserved })],
            );
            m.router = "external router".into();
            m
        };
        let mut a = report("fw 1", &[]);
        let mut b = report("fw 2", &[]);
        a.behaviour = vec![table(Value::Seconds { alive_s: 29.0, dead_s: 30.5 }, true)];
        b.behaviour = vec![table(Value::Seconds { alive_s: 30.0, dead_s: 31.5 }, false)];
        let moved = compare(&a, &b).moved;
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(
            (moved[0].what.as_str(), moved[0].from.as_str(), moved[0].to.as_str()),
            ("port preservation", "yes", "no")
        );
        b.behaviour = vec![table(Value::AtLeast { s: 60.0 }, true)];
        let moved = compare(&a, &b).moved;
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].what, "UDP mapping timeout");
    }
}
