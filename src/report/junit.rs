//! A run as a JUnit XML report, for CI systems that show test results (GitLab's test reports,
//! Jenkins, the GitHub actions that read JUnit): `run --output junit` and
//! `status --output junit` print it from the run's journal rows, so both print the same
//! document for the same run.
//!
//! The document is one `<testsuite>` (inside `<testsuites>`) per run, named after the spec,
//! with the counts of its test cases, its time and its start; one `<testcase>` per unit, its
//! `classname` the job, its `name` the unit id, its `time` the span of its nodes. How an
//! outcome reads in JUnit:
//!
//! | outcome | JUnit |
//! |---|---|
//! | `changed`, `no_changes`, `merged` | passed (the PR, when there is one, in `<system-out>`) |
//! | `agent_failed`, `qa_failed`, `timed_out`, `budget_exceeded` | `<failure>` |
//! | `blocked`, `needs_review` | `<failure>`: they wait for a person, so a pipeline must not pass over them |
//! | `infra_error` | `<error>` |
//! | `skipped`, `cancelled`, a unit still running | `<skipped>` |
//!
//! A `<failure>`, `<error>` or `<skipped>` has the outcome as its `type`, the reason's first
//! line as its `message` and the whole reason as its text.
//!
//! Invariants: the document is well-formed XML 1.0 whatever the unit ids and reasons hold
//! (they come from agents and forges): `&`, `<`, `>`, `"` and `'` are escaped everywhere;
//! controls, bidi and invisible format characters are shown as visible escapes
//! ([`super::text`]: a CI viewer renders text in a browser, which obeys bidi overrides), so
//! none of the characters XML 1.0 forbids remains, and the non-characters U+FFFE and U+FFFF,
//! which XML forbids too, are dropped; the counts of the suite are those of its test cases.

use std::fmt::Write as _;

use super::text::{shown, shown_lines};
use crate::state::views::{RunRow, UnitRow};
use crate::state::Civil;
use crate::vocab::Outcome;

/// What JUnit makes of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Passed,
    Failure,
    Error,
    Skipped,
}

impl Verdict {
    /// The verdict of a unit with `outcome` (`None`: still running).
    fn of(outcome: Option<Outcome>) -> Self {
        match outcome {
            Some(Outcome::Changed | Outcome::NoChanges | Outcome::Merged) => Verdict::Passed,
            Some(
                Outcome::AgentFailed
                | Outcome::QaFailed
                | Outcome::TimedOut
                | Outcome::BudgetExceeded
                | Outcome::Blocked
                | Outcome::NeedsReview,
            ) => Verdict::Failure,
            Some(Outcome::InfraError) => Verdict::Error,
            Some(Outcome::Skipped | Outcome::Cancelled) | None => Verdict::Skipped,
        }
    }

    /// The element of a unit that did not pass.
    fn element(self) -> Option<&'static str> {
        match self {
            Verdict::Passed => None,
            Verdict::Failure => Some("failure"),
            Verdict::Error => Some("error"),
            Verdict::Skipped => Some("skipped"),
        }
    }
}

/// The JUnit XML document of run `run` with `units` (its journal rows, in plan order).
pub fn document(run: &RunRow, units: &[UnitRow]) -> String {
    let verdicts: Vec<Verdict> = units.iter().map(|u| Verdict::of(u.outcome)).collect();
    let count = |v: Verdict| verdicts.iter().filter(|&&x| x == v).count();
    let counts = format!(
        r#"tests="{}" failures="{}" errors="{}" skipped="{}""#,
        units.len(),
        count(Verdict::Failure),
        count(Verdict::Error),
        count(Verdict::Skipped)
    );
    let time = run
        .finished_at
        .unwrap_or_else(crate::state::now)
        .saturating_sub(run.started_at)
        .max(0);
    let start = Civil::of(run.started_at);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        r#"<testsuites name="dispatch" {counts} time="{time}">"#
    );
    let _ = writeln!(
        out,
        r#"  <testsuite name="{}" {counts} time="{time}" timestamp="{:04}-{:02}-{:02}T{:02}:{:02}:{:02}">"#,
        attribute(&run.spec_name),
        start.year,
        start.month,
        start.day,
        start.hour,
        start.minute,
        start.second
    );
    out.push_str("    <properties>\n");
    let mut properties = vec![
        ("run", run.id.clone()),
        ("spec", run.spec_path.clone()),
        ("status", run.status.to_string()),
    ];
    if let Some(usage) = super::total_usage(units.iter().filter_map(|u| u.usage.as_ref())) {
        properties.push(("usage", usage.brief()));
    }
    for (name, value) in &properties {
        let _ = writeln!(
            out,
            r#"      <property name="{name}" value="{}"/>"#,
            attribute(value)
        );
    }
    out.push_str("    </properties>\n");
    for (unit, verdict) in units.iter().zip(&verdicts) {
        testcase(&mut out, unit, *verdict);
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Appends the `<testcase>` of `unit`.
fn testcase(out: &mut String, unit: &UnitRow, verdict: Verdict) {
    // Unit ids are `<job>/<org>/<repo>[/<key>]`, and a job id has no `/`.
    let job = unit.id.split('/').next().unwrap_or(&unit.id);
    let _ = write!(
        out,
        r#"    <testcase classname="{}" name="{}""#,
        attribute(job),
        attribute(&unit.id)
    );
    if let Some(time) = span(unit) {
        let _ = write!(out, r#" time="{time}""#);
    }
    let outcome = unit.outcome.map_or("running", Outcome::as_str);
    let element = verdict.element();
    if element.is_none() && unit.pr.is_none() {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    if let Some(element) = element {
        let reason = match (&unit.reason, unit.outcome) {
            (Some(reason), _) => reason.as_str(),
            (None, None) => "the unit has not ended yet",
            (None, Some(_)) => outcome,
        };
        let _ = writeln!(
            out,
            r#"      <{element} type="{outcome}" message="{}">{}</{element}>"#,
            attribute(reason.lines().next().unwrap_or("")),
            text(reason)
        );
    }
    if let Some(pr) = &unit.pr {
        let _ = writeln!(
            out,
            "      <system-out>{outcome}: PR {}</system-out>",
            text(pr)
        );
    }
    out.push_str("    </testcase>\n");
}

/// Seconds from the first start of a node of `unit` to the last end, once it ended.
fn span(unit: &UnitRow) -> Option<i64> {
    unit.outcome?;
    let start = unit.nodes.iter().filter_map(|n| n.started_at).min()?;
    let end = unit.nodes.iter().filter_map(|n| n.finished_at).max()?;
    Some(end.saturating_sub(start).max(0))
}

/// `value` as the text of an attribute: on one line ([`shown`]), escaped.
fn attribute(value: &str) -> String {
    escape(&shown(value))
}

/// `value` as the text of an element: its lines kept ([`shown_lines`]), escaped.
fn text(value: &str) -> String {
    escape(&shown_lines(value))
}

/// `value` with XML's markup characters escaped and what XML 1.0 forbids dropped (after
/// [`shown`] or [`shown_lines`] that is U+FFFE and U+FFFF only; the controls are dropped here
/// too, so the document holds none whatever the caller passed).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            '\0'..='\x1f' | '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{run, unit};

    #[test]
    fn each_outcome_reads_as_junit_says_with_counts_that_add_up() {
        let units = [
            unit(
                "fix/core/a",
                Some(Outcome::Changed),
                None,
                Some("local:core/a#1"),
            ),
            unit("fix/core/b", Some(Outcome::NoChanges), None, None),
            unit(
                "fix/core/c",
                Some(Outcome::QaFailed),
                Some("qa step `go test` failed\nFAIL x"),
                None,
            ),
            unit(
                "fix/core/d",
                Some(Outcome::Blocked),
                Some("Which database?"),
                None,
            ),
            unit(
                "fix/core/e",
                Some(Outcome::InfraError),
                Some("image missing"),
                None,
            ),
            unit(
                "fix/core/f",
                Some(Outcome::Cancelled),
                Some("stopped by Ctrl-C"),
                None,
            ),
            unit("docs/core/g", None, None, None),
        ];
        let xml = document(&run(&units), &units);
        assert!(xml.contains(
            r#"<testsuites name="dispatch" tests="7" failures="2" errors="1" skipped="2" time="95">"#
        ));
        assert!(xml.contains(r#"<testsuite name="fix-tests" tests="7" failures="2" errors="1" skipped="2" time="95" timestamp=""#));
        assert!(xml.contains(r#"<property name="run" value="20261127-011742-24681"/>"#));
        assert!(xml.contains(
            "<testcase classname=\"fix\" name=\"fix/core/a\">\n      <system-out>changed: PR local:core/a#1</system-out>"
        ));
        assert!(xml.contains(r#"<testcase classname="fix" name="fix/core/b"/>"#));
        assert!(xml.contains(
            "<failure type=\"qa_failed\" message=\"qa step `go test` failed\">qa step `go test` failed\nFAIL x</failure>"
        ));
        assert!(xml.contains(r#"<failure type="blocked" message="Which database?">"#));
        assert!(xml.contains(r#"<error type="infra_error" message="image missing">"#));
        assert!(xml.contains(r#"<skipped type="cancelled" message="stopped by Ctrl-C">"#));
        assert!(xml.contains(
            r#"<testcase classname="docs" name="docs/core/g">
      <skipped type="running" message="the unit has not ended yet">"#
        ));
        assert_eq!(xml.matches("<testcase ").count(), 7);
    }

    #[test]
    fn hostile_ids_and_reasons_are_escaped_and_forbidden_characters_never_appear() {
        let hostile = "a&b <x y=\"1\" z='2'>]]></failure><!-- \x1b]8;;https://evil\x07\u{202e}\0\x0b\u{fffe}\u{ffff}\r\nnext";
        let units = [unit(
            &format!("fix/core/{hostile}"),
            Some(Outcome::AgentFailed),
            Some(hostile),
            Some(hostile),
        )];
        let mut row = run(&units);
        row.spec_name = hostile.into();
        let xml = document(&row, &units);
        assert!(!xml.contains("<x"), "{xml}");
        assert!(!xml.contains("]]>"), "{xml}");
        assert!(!xml.contains("<!--"), "{xml}");
        assert_eq!(xml.matches("</failure>").count(), 1, "{xml}");
        assert!(xml.contains(
            r#"message="a&amp;b &lt;x y=&quot;1&quot; z=&apos;2&apos;&gt;]]&gt;&lt;/failure&gt;&lt;!-- \x1b]8;;https://evil\x07\u{202e}\x00\x0b""#
        ), "{xml}");
        assert!(
            xml.contains("\\x00\\x0b\r\nnext</failure>"),
            "lines are kept in the text: {xml}"
        );
        for c in xml.chars() {
            let allowed = matches!(c, '\t' | '\n' | '\r' | ' '..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..);
            assert!(allowed, "XML 1.0 forbids {c:?}: {xml}");
            assert!(
                !matches!(c, '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}'),
                "{c:?}"
            );
        }
    }
}
