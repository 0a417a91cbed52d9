//! Reports of a suite run: the matrix in a terminal, and a report
//! directory with `junit.xml`, `report.json`, `index.html` (the matrix, a
//! topology drawing and a packet ladder per scenario) and, for every
//! failure, the scenario's logs and pcap files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::format::{Family, Scenario, Step};
use super::observed::Judge;
use super::play::{Outcome, Status};
use super::suite::Flaky;
use crate::nat_behaviour::Measured;
use crate::router::{self, Shape};

/// The matrix as text: one row per family and case, one column per
/// router kind or mode.
/// A run played more than once shows `flaky` where its outcomes differed,
/// and a line with how often each came; a run played again because its
/// lab missed the story's premise has a line saying so.
pub fn matrix_text(outcomes: &[Outcome], flaky: &[Flaky]) -> String {
    let (rows, cols, cells) = matrix(outcomes);
    let width = rows.iter().map(|(f, c)| f.name().len() + c.len() + 2).max().unwrap_or(10).max(8);
    let mut s = format!("{:width$}", "scenario");
    for c in &cols {
        let _ = write!(s, "  {c:>8}");
    }
    s.push('\n');
    for (f, c) in &rows {
        let _ = write!(s, "{:width$}", format!("{f}::{c}"));
        for col in &cols {
            let word = match cells.get(&(*f, c.clone(), col.clone())) {
                Some(o) if flaky_counts(flaky, o).is_some() => "flaky",
                Some(o) => o.status.word(),
                None => "-",
            };
            let _ = write!(s, "  {word:>8}");
        }
        s.push('\n');
    }
    let count = |st: Status| outcomes.iter().filter(|o| o.status == st).count();
    for f in flaky {
        let _ = writeln!(s, "flaky  {}: {}", f.name, f.counts());
    }
    for o in outcomes {
        if let Some(line) = o.summary() {
            let _ = writeln!(s, "{:>5}  {}: {line}", o.status.word(), o.name);
        }
        for m in &o.missed_premises {
            let _ = writeln!(s, "again  {}: played again, an attempt's lab missed the premise: {}", o.name, m.premise);
        }
    }
    let _ = writeln!(
        s,
        "{} scenarios: {} pass, {} expected failures, {} FAIL, {} ERROR (lab), {} skipped{}",
        outcomes.len(),
        count(Status::Pass),
        count(Status::ExpectedFailure),
        count(Status::Fail),
        count(Status::Error),
        count(Status::Skipped),
        if flaky.is_empty() { String::new() } else { format!("; {} flaky", flaky.len()) }
    );
    s
}

/// How often each status came for `o`'s run, if it was flaky.
fn flaky_counts(flaky: &[Flaky], o: &Outcome) -> Option<String> {
    flaky.iter().find(|f| f.name == o.name).map(Flaky::counts)
}

type Cells<'o> = BTreeMap<(Family, String, String), &'o Outcome>;

fn matrix(outcomes: &[Outcome]) -> (Vec<(Family, String)>, Vec<String>, Cells<'_>) {
    let mut rows = BTreeSet::new();
    let mut cols = BTreeSet::new();
    let mut cells = BTreeMap::new();
    for o in outcomes {
        rows.insert((o.family, o.case.clone()));
        cols.insert(o.target.key());
        cells.insert((o.family, o.case.clone(), o.target.column()), o);
    }
    let cols = cols.into_iter().map(|k| k.name().to_string()).collect();
    (rows.into_iter().collect(), cols, cells)
}

/// Writes the report directory: `junit.xml`, `report.json`, `index.html`,
/// and `failures/NAME/` with the kept logs and captures of each failure.
/// `label` names the run (a firmware version, say) in each; `behaviour`
/// holds the NAT behaviour measured of each router, if it was.
pub fn write(
    dir: &Path,
    outcomes: &[Outcome],
    flaky: &[Flaky],
    router: &str,
    label: Option<&str>,
    behaviour: &[Measured],
) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
    let json = serde_json::json!({
        "router": router,
        "label": label,
        "behaviour": behaviour,
        "outcomes": outcomes,
        "flaky": flaky,
    });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&json).unwrap_or_default())
        .map_err(|e| io("report.json", e))?;
    std::fs::write(dir.join("junit.xml"), junit(outcomes, label)).map_err(|e| io("junit.xml", e))?;
    // Only this run's failures.
    match std::fs::remove_dir_all(dir.join("failures")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("clearing failures/", e)),
        _ => {}
    }
    for o in outcomes.iter().filter(|o| matches!(o.status, Status::Fail | Status::Error)) {
        if let Some(kept) = &o.kept {
            let to = dir.join("failures").join(o.name.replace("::", "."));
            copy_logs(&kept.join("hosts"), &to).map_err(|e| io("copying logs", e))?;
        }
    }
    // The logs of attempts whose lab missed the premise, whatever came of
    // the run: `failures/NAME.missed-N`.
    for o in outcomes {
        for (n, kept) in o.missed_premises.iter().enumerate().filter_map(|(n, m)| Some((n + 1, m.kept.as_ref()?))) {
            let to = dir.join("failures").join(format!("{}.missed-{n}", o.name.replace("::", ".")));
            copy_logs(&kept.join("hosts"), &to).map_err(|e| io("copying logs", e))?;
        }
    }
    std::fs::write(dir.join("index.html"), html(outcomes, flaky, router, label, behaviour))
        .map_err(|e| io("index.html", e))?;
    Ok(())
}

/// A router's measured NAT behaviour: a table of values and what each
/// means for VPNs.
fn behaviour_html(s: &mut String, m: &Measured) {
    let _ = writeln!(
        s,
        "<h2>NAT behaviour of {}</h2>\n<table class=\"behaviour\"><tr><th>what</th><th>measured</th><th>for VPNs</th></tr>",
        esc(&m.router)
    );
    for r in &m.rows {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(r.key.title()),
            esc(&r.value.to_string()),
            esc(&r.meaning)
        );
    }
    s.push_str("</table>\n");
}

/// Copies each host's `log/` (daemon logs, syslog, pcaps).
fn copy_logs(hosts: &Path, to: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(hosts) else { return Ok(()) };
    for host in entries.flatten() {
        let log = host.path().join("log");
        let Ok(files) = std::fs::read_dir(&log) else { continue };
        let dest = to.join(host.file_name());
        std::fs::create_dir_all(&dest)?;
        for f in files.flatten() {
            if f.path().is_file() {
                std::fs::copy(f.path(), dest.join(f.file_name()))?;
            }
        }
    }
    Ok(())
}

/// Text made safe for HTML: colour codes and characters XML forbids
/// removed, markup escaped.
pub(crate) fn esc(s: &str) -> String {
    quick_junit::XmlString::new(s)
        .into_string()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML: one testsuite per family, one testcase per outcome; a FAIL
/// is a `<failure>`, a lab error an `<error>`. Written by `quick-junit`,
/// which escapes markup and drops colour codes and characters XML forbids.
pub fn junit(outcomes: &[Outcome], label: Option<&str>) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report =
        Report::new(label.map_or_else(|| "vpn-passthrough".to_string(), |l| format!("vpn-passthrough: {l}")));
    for family in Family::ALL {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.family == family).collect();
        if mine.is_empty() {
            continue;
        }
        let mut suite = TestSuite::new(family.name());
        for o in mine {
            let status = match o.status {
                Status::Pass => TestCaseStatus::success(),
                Status::ExpectedFailure => TestCaseStatus::success(),
                Status::Skipped => {
                    let mut st = TestCaseStatus::skipped();
                    st.set_message(o.why.as_deref().unwrap_or(""));
                    st
                }
                Status::Fail | Status::Error => {
                    let kind = if o.status == Status::Fail { NonSuccessKind::Failure } else { NonSuccessKind::Error };
                    let mut st = TestCaseStatus::non_success(kind);
                    st.set_message(o.summary().unwrap_or_default());
                    st.set_description(o.failure());
                    st
                }
            };
            let mut case = TestCase::new(o.target.label(), status);
            case.set_classname(format!("{family}.{}", o.case));
            case.set_time(std::time::Duration::from_secs_f64(o.seconds.max(0.0)));
            if o.status == Status::ExpectedFailure {
                case.set_system_out(format!("expected failure, as asserted: {}", o.why.as_deref().unwrap_or("")));
            }
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().unwrap_or_else(|e| format!("<?xml version=\"1.0\"?><testsuites><!-- {e} --></testsuites>"))
}

/// The HTML page: the matrix, then one section per outcome.
pub fn html(
    outcomes: &[Outcome],
    flaky: &[Flaky],
    router: &str,
    label: Option<&str>,
    behaviour: &[Measured],
) -> String {
    let (rows, cols, cells) = matrix(outcomes);
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>VPN passthrough report{}</title>\n<style>\n\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse}}\n\
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}} .pass{{background:#d9f2d9}} .xfail{{background:#fff2cc}}\n\
.FAIL{{background:#f8c8c8;font-weight:bold}} .ERROR{{background:#d9d2f2;font-weight:bold}} .skip{{background:#eee}} .observed{{background:#e6eefa}}\n\
td small{{display:block;font-weight:normal;max-width:28em}} pre{{background:#f6f6f6;padding:.5em;overflow:auto}}\n\
.ladder td{{font-family:monospace;font-size:.85em}} section{{margin-top:2em;border-top:1px solid #ddd}}\n\
</style></head><body>\n<h1>VPN passthrough report{}</h1>\n<p>Router under test: <b>{}</b>. {} scenarios. \
<b>pass</b>: the VPN works and everything expected was seen; <b>xfail</b>: the VPN breaks exactly as expected for this router; \
<b>FAIL</b>: the router did not do what was expected; \
<b>ERROR</b>: the lab could not judge the router (a family's preflight failed, a daemon would not start or died, \
the story's premise did not happen) &mdash; fix the lab and run again.{}</p>\n",
        label.map(|l| format!(": {}", esc(l))).unwrap_or_default(),
        label.map(|l| format!(": {}", esc(l))).unwrap_or_default(),
        esc(router),
        outcomes.len(),
        if outcomes.iter().any(|o| o.judge == Judge::Vpn) {
            " Verdicts are about whether the VPNs work: what the router did to ports, Call IDs and counters \
             is shown as <b>observed</b>, beside them."
        } else {
            ""
        }
    );
    s.push_str("<table id=\"matrix\"><thead><tr><th>family</th><th>case</th>");
    for c in &cols {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr></thead><tbody>\n");
    for (f, c) in &rows {
        let _ = write!(s, "<tr><td>{f}</td><td>{}</td>", esc(c));
        for col in &cols {
            match cells.get(&(*f, c.clone(), col.clone())) {
                Some(o) => {
                    let anchor = format!("{f}.{c}.{col}");
                    let line = flaky_counts(flaky, o)
                        .map(|n| format!("flaky: {n}"))
                        .into_iter()
                        .chain(o.summary())
                        .map(|l| format!("<small>{}</small>", esc(&l)))
                        .collect::<String>();
                    let _ = write!(
                        s,
                        "<td class=\"{0}\"><a href=\"#{1}\">{0}</a>{line}</td>",
                        o.status.word(),
                        esc(&anchor)
                    );
                }
                None => s.push_str("<td>-</td>"),
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    if !flaky.is_empty() {
        s.push_str("<h2>Flaky runs</h2>\n<p>Played more than once, with outcomes that differed (each cell shows the worst).</p>\n<ul>\n");
        for f in flaky {
            let _ = writeln!(s, "<li class=\"FAIL\">{}: {}</li>", esc(&f.name), esc(&f.counts()));
        }
        s.push_str("</ul>\n");
    }
    for m in behaviour {
        behaviour_html(&mut s, m);
    }
    let mut ordered: Vec<&Outcome> = outcomes.iter().collect();
    ordered.sort_by_key(|o| (o.family, o.case.clone(), o.target));
    for o in ordered {
        let anchor = format!("{}.{}.{}", o.family, o.case, o.target.column());
        let _ = write!(
            s,
            "<section id=\"{}\"><h2>{} <span class=\"{}\">{}</span></h2>\n<p>{}</p>\n",
            esc(&anchor),
            esc(&o.name),
            o.status.word(),
            o.status.word(),
            esc(&o.description)
        );
        if let Some(why) = &o.why {
            let _ = writeln!(s, "<p><i>{}</i></p>", esc(why));
        }
        s.push_str(&topology_svg(&o.shape));
        for m in &o.missed_premises {
            let _ = writeln!(
                s,
                "<p><i>Played again: an earlier attempt's lab missed the premise: {}</i></p>",
                esc(&m.premise)
            );
        }
        if !o.checks.is_empty() {
            s.push_str("<table><tr><th>expectation</th><th>expected</th><th>seen</th><th></th></tr>\n");
            for c in &o.checks {
                // Behaviour a `vpn` verdict is not about is shown as seen.
                let (class, word) = match (c.ok, o.judge.counts(c)) {
                    (true, _) => ("pass", "ok"),
                    (false, true) => ("FAIL", "not met"),
                    (false, false) => ("observed", "observed"),
                };
                let _ = writeln!(
                    s,
                    "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{word}</td></tr>",
                    esc(&if c.premise { format!("premise: {}", c.what) } else { c.what.clone() }),
                    esc(&c.expected),
                    esc(&c.reason.as_ref().map(|r| format!("{} ({r})", c.seen)).unwrap_or_else(|| c.seen.clone())),
                );
            }
            s.push_str("</table>\n");
        }
        if let Some(line) = o.summary() {
            let _ = writeln!(s, "<p class=\"{}\">{}</p>", o.status.word(), esc(&line));
        }
        if let Some(e) = o.error.as_deref().filter(|_| o.status == Status::Error) {
            let _ = writeln!(s, "<details><summary>The lab error in full</summary><pre>{}</pre></details>", esc(e));
        }
        if matches!(o.status, Status::Fail | Status::Error) {
            if let Some(logs) = &o.logs {
                let _ = writeln!(s, "<details><summary>Last log lines</summary><pre>{}</pre></details>", esc(logs));
            }
            if o.kept.is_some() {
                let _ =
                    writeln!(s, "<p>Logs and captures: <code>failures/{}</code></p>", esc(&o.name.replace("::", ".")));
            }
        }
        if !o.ladder.is_empty() {
            s.push_str("<details><summary>What crossed the router</summary><table class=\"ladder\"><tr><th>ms</th><th></th><th>LAN side</th><th>WAN side</th></tr>\n");
            for r in &o.ladder {
                let arrow = match r.dir {
                    "out" => "→",
                    "in" => "←",
                    _ => "",
                };
                let _ = writeln!(
                    s,
                    "<tr><td>{:.1}</td><td>{arrow}</td><td>{}</td><td>{}</td></tr>",
                    r.ms,
                    esc(r.lan.as_deref().unwrap_or("")),
                    esc(r.wan.as_deref().unwrap_or("(not seen)"))
                );
            }
            s.push_str("</table></details>\n");
        }
        s.push_str("</section>\n");
    }
    s.push_str("</body></html>\n");
    s
}

/// A scenario in a few lines: name, file, description, the lab drawn,
/// the steps, the modes.
pub fn describe(sc: &Scenario) -> String {
    let f = &sc.file;
    let steps: Vec<&str> = f.steps.iter().map(Step::kind).collect();
    let modes: Vec<&str> = f.modes.iter().map(|m| m.name()).collect();
    format!(
        "{}\n  file: {}\n  {}\n\n{}\n  steps: {}\n  Rust NAT modes: {}\n  expected:\n",
        sc.id,
        sc.path.display(),
        f.description,
        topology_text(&f.topology.shape(), |i| sc.server_of(i)),
        steps.join(" → "),
        modes.join(", ")
    )
}

/// The lab as text: each client, the router, each server, and which
/// server each client calls.
pub fn topology_text(shape: &Shape, server_of: impl Fn(usize) -> usize) -> String {
    let mut s = String::new();
    let behind = if shape.double_nat {
        format!(" behind {} {} (a second NAT)", router::HOME, shape.home_addr())
    } else {
        String::new()
    };
    for i in 1..=shape.clients {
        let j = server_of(i);
        let _ = writeln!(
            s,
            "  {:<4} {:<15}{behind} ──▶ {} {}",
            router::client_name(i),
            shape.client_addr(i).to_string(),
            shape.server_name(j),
            shape.server_addr(j)
        );
    }
    let _ = writeln!(s, "  through the router under test: LAN {} | WAN {}", shape.lan, shape.wan);
    for j in 1..=shape.servers {
        let _ = writeln!(
            s,
            "  {:<8} {:<15} inner {}",
            shape.server_name(j),
            shape.server_addr(j).to_string(),
            shape.server_inner(j)
        );
    }
    if shape.intruder {
        let _ =
            writeln!(s, "  {:<8} {:<15} (hostile, nobody's peer)", router::INTRUDER, shape.intruder_addr().to_string());
    }
    s
}

/// The lab as an SVG drawing: clients (behind the second NAT if any), the
/// router, the servers and the intruder.
pub fn topology_svg(shape: &Shape) -> String {
    let rows = shape.clients.max(shape.servers + usize::from(shape.intruder)).max(1);
    let h = 30 + rows * 44;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"topology\" width=\"720\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    let router_y = h / 2;
    let box_ = |s: &mut String, x: usize, y: usize, label: &str, sub: &str, fill: &str| {
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"130\" height=\"34\" rx=\"5\" fill=\"{fill}\" stroke=\"#555\"/><text x=\"{}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" fill=\"#555\">{}</text>",
            x,
            y - 17,
            x + 6,
            y - 3,
            esc(label),
            x + 6,
            y + 12,
            esc(sub)
        );
    };
    let line = |s: &mut String, x1: usize, y1: usize, x2: usize, y2: usize| {
        let _ = writeln!(s, "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"#888\"/>");
    };
    let client_x = if shape.double_nat { 10 } else { 60 };
    let gateway_x = if shape.double_nat { 190 } else { 300 };
    for i in 1..=shape.clients {
        let y = 30 + (i - 1) * 44 + 10;
        line(&mut s, client_x + 130, y, gateway_x, router_y);
        box_(&mut s, client_x, y, &router::client_name(i), &shape.client_addr(i).to_string(), "#e8f0fe");
    }
    if shape.double_nat {
        line(&mut s, 320, router_y, 300, router_y);
        box_(&mut s, 190, router_y, router::HOME, &format!("{} (second NAT)", shape.home_addr()), "#f3e8fd");
    }
    box_(
        &mut s,
        300,
        router_y,
        "router under test",
        &format!("{} | {}", shape.lan.addr(), shape.wan.addr()),
        "#fde8e8",
    );
    let mut wan_hosts: Vec<(String, String)> =
        (1..=shape.servers).map(|j| (shape.server_name(j), shape.server_addr(j).to_string())).collect();
    if shape.intruder {
        wan_hosts.push((router::INTRUDER.into(), shape.intruder_addr().to_string()));
    }
    for (k, (name, addr)) in wan_hosts.iter().enumerate() {
        let y = 30 + k * 44 + 10;
        line(&mut s, 430, router_y, 560, y);
        box_(&mut s, 560, y, name, addr, if name == router::INTRUDER { "#fbe3d0" } else { "#e6f4ea" });
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::format::{Mode, Target};
    use crate::scenario::observed::Check;

    fn outcome(case: &str, target: Target, status: Status) -> Outcome {
        let scenario = Scenario::parse(
            Path::new("x/pptp/t.toml"),
            "family = \"pptp\"\ndescription = \"d\"\n[[step]]\ndo = \"connect\"\n[expect.rust]\n[expect.linux]\n",
        )
        .expect("scenario");
        let mut o = Outcome::blank(&scenario, target);
        o.case = case.into();
        o.name = format!("pptp::{case}::{}", target.label());
        o.status = status;
        o
    }

    /// One outcome of each kind; the FAIL and the ERROR quote a log with
    /// colour codes and a control character, as daemons' logs have.
    fn outcomes() -> Vec<Outcome> {
        let colour = "\u{1b}[31mERROR\u{1b}[0m charon \u{7} gave up <&>";
        let mut fail = outcome("a", Target::Rust(Mode::Full), Status::Fail);
        fail.checks = vec![Check {
            what: "tunnel c1".into(),
            expected: "up".into(),
            seen: "down".into(),
            ok: false,
            reason: Some("charon: received NO_PROPOSAL_CHOSEN notify".into()),
            premise: false,
            behaviour: false,
            missed_by_lab: false,
        }];
        fail.logs = Some(colour.into());
        let mut error = outcome("a", Target::Linux, Status::Error);
        error.error = Some(format!("the pptp preflight failed: {colour}"));
        let mut skip = outcome("b", Target::Linux, Status::Skipped);
        skip.why = Some("not here".into());
        let mut xfail = outcome("b", Target::Rust(Mode::Off), Status::ExpectedFailure);
        xfail.why = Some("off drops it".into());
        vec![fail, error, outcome("c", Target::Rust(Mode::Naive), Status::Pass), skip, xfail]
    }

    #[test]
    fn the_matrix_shows_each_outcome_and_a_line_per_problem() {
        let text = matrix_text(&outcomes(), &[]);
        for word in ["FAIL", "ERROR", "pass", "skip", "xfail"] {
            assert!(text.contains(word), "{word} missing:\n{text}");
        }
        assert!(
            text.contains(
                "pptp::a::rust-full: tunnel c1: expected up, saw down (charon: received NO_PROPOSAL_CHOSEN notify)"
            ),
            "{text}"
        );
        assert!(text.contains("pptp::a::linux: lab error: the pptp preflight failed"), "{text}");
        assert!(text.contains("1 FAIL, 1 ERROR (lab)"), "{text}");
    }

    #[test]
    fn a_run_played_again_after_a_missed_premise_says_so_in_the_matrix_and_the_page() {
        let mut all = outcomes();
        all[2].missed_premises = vec![crate::scenario::play::MissedPremise {
            premise: "calls at once: expected true, saw false (300 ms apart)".into(),
            kept: None,
        }];
        let text = matrix_text(&all, &[]);
        assert!(
            text.contains(
                "again  pptp::c::rust-naive: played again, an attempt's lab missed the premise: calls at once"
            ),
            "{text}"
        );
        let page = html(&all, &[], "test", None, &[]);
        assert!(page.contains("Played again: an earlier attempt's lab missed the premise"), "{page}");
        assert!(!matrix_text(&outcomes(), &[]).contains("again"), "nothing played again, nothing said");
    }

    #[test]
    fn a_flaky_run_is_its_own_line_in_the_matrix_and_the_page() {
        let all = outcomes();
        let flaky = [Flaky { name: all[0].name.clone(), statuses: vec![(Status::Pass, 9), (Status::Fail, 1)] }];
        let text = matrix_text(&all, &flaky);
        assert!(text.contains("flaky  pptp::a::rust-full: 9 pass, 1 FAIL"), "{text}");
        assert!(text.contains("; 1 flaky"), "{text}");
        let row = text.lines().find(|l| l.starts_with("pptp::a")).unwrap_or_default();
        assert!(row.contains("flaky") && !row.contains("FAIL"), "the cell says flaky: {row}");
        assert!(!matrix_text(&all, &[]).contains("flaky"), "nothing flaky, nothing said");
        let page = html(&all, &flaky, "test", None, &[]);
        assert!(page.contains("<h2>Flaky runs</h2>") && page.contains("flaky: 9 pass, 1 FAIL"), "{page}");
    }

    #[test]
    fn junit_is_strict_xml_with_a_failure_and_an_error() {
        let xml = junit(&outcomes(), Some("fw 1.2.3"));
        assert!(xml.contains("vpn-passthrough: fw 1.2.3"), "the label names the report");
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("not well-formed: {e}\n{xml}"));
        let count = |tag: &str| doc.descendants().filter(|n| n.has_tag_name(tag)).count();
        assert_eq!((count("testcase"), count("failure"), count("error"), count("skipped")), (5, 1, 1, 1), "{xml}");
        let failure = doc.descendants().find(|n| n.has_tag_name("failure")).expect("failure");
        assert_eq!(
            failure.attribute("message"),
            Some("tunnel c1: expected up, saw down (charon: received NO_PROPOSAL_CHOSEN notify)")
        );
        assert!(!xml.contains('\u{1b}') && !xml.contains('\u{7}'), "colour codes or control characters left: {xml}");
    }

    #[test]
    fn json_and_html_say_error() {
        let all = outcomes();
        let json = serde_json::to_value(&all).expect("json");
        assert_eq!(json[1]["status"], "error");
        assert_eq!(json[0]["status"], "fail");
        let measured = crate::nat_behaviour::Measured::new(
            "rust-nat <full>",
            crate::nat_behaviour::Measured::expected(&crate::nat::Profile::default()),
        );
        let html = html(&all, &[], "test", Some("fw <1.2.3>"), std::slice::from_ref(&measured));
        assert!(html.contains("NAT behaviour of rust-nat &lt;full&gt;"), "a table per measured router");
        assert!(html.contains("<td>UDP mapping timeout</td><td>300 s"), "each value in a row");
        assert!(html.contains("VPN passthrough report: fw &lt;1.2.3&gt;"), "the label, escaped, heads the page");
        assert!(html.contains("<td class=\"ERROR\">"), "no ERROR cell");
        assert!(html.contains("lab error: the pptp preflight failed"), "no one-line summary");
        // Logs go in a collapsed block, never into the check table.
        let table = html.split("<table><tr><th>expectation").nth(1).and_then(|t| t.split("</table>").next());
        assert!(table.is_some_and(|t| !t.contains("gave up")), "a log line in the check table");
        assert!(html.contains("<details><summary>Last log lines</summary>"), "no collapsed logs");
        assert!(!html.contains('\u{1b}') && !html.contains('\u{7}'), "colour codes left in the HTML");
    }
}
