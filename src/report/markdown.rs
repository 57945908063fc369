//! A run as a Markdown summary, fit for a pull request comment or a CI step summary
//! (`$GITHUB_STEP_SUMMARY`): `run --output markdown` and `status --output markdown` print it
//! from the run's journal rows, so both print the same document for the same run.
//!
//! The document is a header line (the run, its spec and status, its counts per outcome), a
//! table `| outcome | unit | PR | reason |` with a row per unit (by outcome, then in plan
//! order; a reason is its first line, cut at [`REASON_CHARS`] characters), and what the
//! agents used when they reported it.
//!
//! Invariants: no text from outside (unit ids, reasons, PR references, the spec's name) can
//! leave its table cell or turn into markup. Each is shown on one line ([`super::text::shown`]:
//! newlines, controls, bidi and invisible characters become visible escapes) inside a code span
//! whose fence is longer than any run of backticks in it, where no emphasis, link, mention,
//! HTML or entity is read; its pipes are escaped as GitHub's tables ask (`\|`, shown as `|`). A
//! PR that is a plain `http(s)` URL is an autolink (its text is its target).

use std::fmt::Write as _;

use super::text::cut;
use super::text::shown;
use crate::state::views::{RunRow, UnitRow};
use crate::vocab::Outcome;

/// The most characters of a reason a row shows.
pub const REASON_CHARS: usize = 200;

/// The Markdown summary of run `run` with `units` (its journal rows, in plan order).
pub fn document(run: &RunRow, units: &[UnitRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**dispatch run {}** (spec {}, {}): {} {}: {}\n",
        code(&run.id),
        code(&run.spec_name),
        run.status,
        run.units,
        crate::spec::problem::plural(run.units as usize, "unit"),
        super::outcome_counts(run)
    );
    out.push_str("| outcome | unit | PR | reason |\n|---|---|---|---|\n");
    let mut rows: Vec<&UnitRow> = units.iter().collect();
    // Units that ended by outcome (the order of the vocabulary), running ones last.
    rows.sort_by_key(|u| (u.outcome.is_none(), u.outcome));
    for unit in rows {
        let reason = unit
            .reason
            .as_deref()
            .filter(|_| !unit.outcome.is_some_and(Outcome::is_success))
            .map(|reason| {
                let mut lines = reason.lines();
                let first = lines.next().unwrap_or("");
                let shown = cut(first, REASON_CHARS);
                if lines.next().is_some() && !shown.ends_with('…') {
                    format!("{shown} …")
                } else {
                    shown
                }
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            unit.outcome.map_or("running", Outcome::as_str),
            code(&unit.id),
            unit.pr.as_deref().map(pr).unwrap_or_default(),
            code(&reason)
        );
    }
    if let Some(total) = super::total_usage(units.iter().filter_map(|u| u.usage.as_ref())) {
        let _ = writeln!(out, "\nAgents used {}.", code(&total.brief()));
    }
    out
}

/// `reference` as a table cell: an autolink when it is a plain `http(s)` URL, else [`code`].
fn pr(reference: &str) -> String {
    let plain = reference.starts_with("https://") || reference.starts_with("http://");
    let safe = reference
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~:/?#@!$&'()*+,;=%".contains(c));
    if plain && safe {
        format!("<{reference}>")
    } else {
        code(reference)
    }
}

/// `text` as a code span in a table cell, or nothing when empty (see the module's invariants).
fn code(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let text = shown(text).replace('|', "\\|");
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    // The spaces inside the fence are taken off again by the reader, so a text that starts or
    // ends with a backtick keeps it.
    format!("{fence} {text} {fence}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::output::Usage;
    use crate::report::fixtures::{run, unit};

    #[test]
    fn a_header_with_counts_a_row_per_unit_by_outcome_and_the_usage() {
        let mut units = vec![
            unit(
                "fix/core/q",
                Some(Outcome::QaFailed),
                Some("qa step `go test` failed\nFAIL x"),
                None,
            ),
            unit(
                "fix/core/c",
                Some(Outcome::Changed),
                Some("published"),
                Some("https://forge.example.org/core/c/pulls/7"),
            ),
            unit(
                "fix/core/l",
                Some(Outcome::Changed),
                None,
                Some("local:core/l#1"),
            ),
        ];
        units[1].usage = Some(Usage {
            runs: 1,
            input_tokens: 2400,
            cached_tokens: 1200,
            output_tokens: 120,
            ..Usage::default()
        });
        let md = document(&run(&units), &units);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "**dispatch run ` 20261127-011742-24681 `** (spec ` fix-tests `, finished): 3 units: 2 changed, 1 qa_failed"
        );
        assert_eq!(lines[1], "");
        assert_eq!(lines[2], "| outcome | unit | PR | reason |");
        assert_eq!(lines[3], "|---|---|---|---|");
        assert_eq!(
            lines[4],
            "| changed | ` fix/core/c ` | <https://forge.example.org/core/c/pulls/7> |  |"
        );
        assert_eq!(
            lines[5],
            "| changed | ` fix/core/l ` | ` local:core/l#1 ` |  |"
        );
        assert_eq!(
            lines[6],
            "| qa_failed | ` fix/core/q ` |  | `` qa step `go test` failed … `` |"
        );
        assert!(
            lines[8].starts_with("Agents used ` 2.4k in (1.2k cached) / 120 out"),
            "{md}"
        );
    }

    #[test]
    fn hostile_text_stays_in_its_cell_as_literal_code() {
        let hostile = "a | b `` c <img src=x onerror=alert(1)> [link](https://evil) @team &amp; **bold**\u{202e}\x1b[2J";
        let units = [unit(
            &format!("fix/core/{hostile}"),
            Some(Outcome::AgentFailed),
            Some(&format!("{hostile}\nsecond line | more")),
            Some(&format!("https://evil.example/x <b>{hostile}")),
        )];
        let md = document(&run(&units), &units);
        let row = md.lines().nth(4).expect("a row");
        // Four cells: every pipe of the text is escaped.
        let unescaped = row
            .char_indices()
            .filter(|&(at, c)| c == '|' && !row[..at].ends_with('\\'))
            .count();
        assert_eq!(unescaped, 5, "{row}");
        assert!(!row.contains('\n') && !row.contains('\x1b') && !row.contains('\u{202e}'));
        // Each cell is one code span whose fence (3 backticks) is longer than the text's runs.
        assert!(row.contains(
            r"| ``` a \| b `` c <img src=x onerror=alert(1)> [link](https://evil) @team &amp; **bold**\u{202e}\x1b[2J … ``` |"
        ), "{row}");
        assert!(
            row.contains(r"| ``` https://evil.example/x <b>a \| b"),
            "not an autolink: {row}"
        );
        assert!(!md.contains("second line"));
    }

    #[test]
    fn long_reasons_are_cut() {
        let long = "x".repeat(1000);
        let units = [unit(
            "fix/core/a",
            Some(Outcome::AgentFailed),
            Some(&long),
            None,
        )];
        let md = document(&run(&units), &units);
        let row = md.lines().nth(4).expect("a row");
        assert!(
            row.contains(&format!("` {}… `", "x".repeat(REASON_CHARS))),
            "{row}"
        );
        assert!(!row.contains(&"x".repeat(REASON_CHARS + 1)));
    }
}
