//! What a review agent reports, read from its final message: a summary and its findings.
//!
//! One format serves every review agent: the one codex's review mode renders its findings in
//! (`codex exec review`), which the `review` template asks the other agents to write too:
//!
//! ```text
//! The change does what the task says, but one path is not handled.
//!
//! Full review comments:
//!
//! - [P1] Handle an empty input — /workspace/repo/src/parse.rs:12-14
//!   The loop indexes past the end when the input is empty.
//!
//! - [P3] Name the constant — src/parse.rs:3
//!   A named constant says what 80 is.
//! ```
//!
//! The header is `Full review comments:` or `Review comment:`; each finding starts with `- `,
//! an optional priority `[P0]`..`[P3]`, its title and, after ` — `, its location; its body is
//! the lines indented under it. A review without that header has no findings (its text is
//! still the review). The text is the agent's: hostile, so every part is bounded and stripped
//! of control characters, and locations lose the container's `/workspace/repo/` prefix.

use crate::agents::WORKDIR;
use crate::report::text::cut;

/// At most this many findings are read from one review.
pub const MAX_FINDINGS: usize = 50;
/// A finding's title is cut to this many characters.
const MAX_TITLE: usize = 200;
/// A finding's body is cut to this many characters.
const MAX_BODY: usize = 8_000;

/// One finding of a review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Priority 0 (most urgent) to 3, when the reviewer gave one.
    pub priority: Option<u8>,
    /// One line saying what is wrong.
    pub title: String,
    /// Where, relative to the repository (`src/parse.rs:12-14`), when given.
    pub location: Option<String>,
    /// What is wrong and what to do.
    pub body: String,
}

impl Finding {
    /// `[P1] title`, or the title alone.
    pub fn heading(&self) -> String {
        match self.priority {
            Some(p) => format!("[P{p}] {}", self.title),
            None => self.title.clone(),
        }
    }
}

/// The findings of a review text, in the reviewer's order (at most [`MAX_FINDINGS`]).
pub fn parse(text: &str) -> Vec<Finding> {
    let text = clean(text);
    let mut lines = text.lines();
    if !lines.any(|l| matches!(l.trim(), "Full review comments:" | "Review comment:")) {
        return Vec::new();
    }
    let mut findings: Vec<Finding> = Vec::new();
    let mut body: Vec<&str> = Vec::new();
    let close = |findings: &mut Vec<Finding>, body: &mut Vec<&str>| {
        if let Some(last) = findings.last_mut() {
            last.body = cut(body.join("\n").trim(), MAX_BODY);
        }
        body.clear();
    };
    for line in lines {
        if let Some(item) = line.strip_prefix("- ") {
            close(&mut findings, &mut body);
            if findings.len() == MAX_FINDINGS {
                break;
            }
            findings.push(item_line(item));
        } else if findings.is_empty() {
            continue;
        } else if let Some(indented) = line.strip_prefix("  ") {
            body.push(indented);
        } else if line.trim().is_empty() {
            body.push("");
        } else {
            // Text back at the margin ends the findings (a closing remark).
            break;
        }
    }
    close(&mut findings, &mut body);
    findings.retain(|f| !f.title.is_empty());
    findings
}

/// A finding's first line: `[P1] title — location`.
fn item_line(item: &str) -> Finding {
    let item = item.trim();
    let (priority, rest) = match item.strip_prefix("[P").and_then(|r| r.split_once(']')) {
        Some((digit, rest)) if digit.len() == 1 && matches!(digit, "0" | "1" | "2" | "3") => {
            (digit.parse().ok(), rest.trim_start())
        }
        _ => (None, item),
    };
    let (title, location) = match rest.rsplit_once(" — ") {
        Some((title, location)) if !location.trim().is_empty() => {
            (title, Some(relative(location.trim())))
        }
        _ => (rest, None),
    };
    Finding {
        priority,
        title: cut(title.trim(), MAX_TITLE),
        location,
        body: String::new(),
    }
}

/// A location relative to the repository: the container's clone prefix dropped.
fn relative(location: &str) -> String {
    let prefix = format!("{WORKDIR}/");
    cut(
        location.strip_prefix(prefix.as_str()).unwrap_or(location),
        MAX_TITLE,
    )
}

/// `text` without control characters other than newlines and tabs (a forge renders what it
/// is sent; escape sequences and NULs have no place in a comment).
pub fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_rendered_findings_are_read_with_priority_location_and_body() {
        let text = "Two defects.\n\nFull review comments:\n\n\
                    - [P0] Null deref — /workspace/repo/src/a.ts:1-1\n  First.\n  More.\n\n\
                    - [P2] Naming — src/b.ts:5-7\n  Second.";
        let findings = parse(text);
        assert_eq!(
            findings,
            vec![
                Finding {
                    priority: Some(0),
                    title: "Null deref".to_owned(),
                    location: Some("src/a.ts:1-1".to_owned()),
                    body: "First.\nMore.".to_owned(),
                },
                Finding {
                    priority: Some(2),
                    title: "Naming".to_owned(),
                    location: Some("src/b.ts:5-7".to_owned()),
                    body: "Second.".to_owned(),
                },
            ]
        );
        assert_eq!(findings[0].heading(), "[P0] Null deref");
    }

    #[test]
    fn one_finding_without_priority_or_location_and_a_closing_remark() {
        let text = "Review comment:\n\n- Guard the loop\n  It runs past the end.\nThat is all.";
        let findings = parse(text);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].priority, None);
        assert_eq!(findings[0].location, None);
        assert_eq!(findings[0].heading(), "Guard the loop");
        assert_eq!(findings[0].body, "It runs past the end.");
    }

    #[test]
    fn the_review_templates_example_is_read_as_a_finding() {
        let template = include_str!("../../templates/review.md");
        let example = template
            .split("```")
            .nth(1)
            .expect("the template shows the form of a finding");
        let findings = parse(&format!("Verdict.\n\nFull review comments:\n{example}"));
        assert_eq!(findings.len(), 1, "{example}");
        assert_eq!(findings[0].priority, Some(1));
        assert_eq!(findings[0].location.as_deref(), Some("path/to/file:12-14"));
        assert!(
            findings[0].body.ends_with("by two spaces."),
            "{:?}",
            findings[0]
        );
    }

    #[test]
    fn a_review_without_the_header_has_no_findings() {
        assert!(parse("No issues found.\n- a list item is not a finding").is_empty());
        assert!(parse("").is_empty());
    }

    #[test]
    fn hostile_reviews_are_bounded_and_cleaned() {
        let mut text = String::from("Full review comments:\n");
        for i in 0..200 {
            text.push_str(&format!(
                "- [P9] \u{1b}[31mred{i} — x\n  {}\n",
                "b".repeat(20_000)
            ));
        }
        let findings = parse(&text);
        assert_eq!(findings.len(), MAX_FINDINGS);
        assert_eq!(findings[0].priority, None, "P9 is no priority");
        assert!(
            !findings[0].title.contains('\u{1b}'),
            "{}",
            findings[0].title
        );
        assert!(findings[0].body.chars().count() <= MAX_BODY + 1);
        assert_eq!(cut("ééé", 2), "éé…");
    }
}
