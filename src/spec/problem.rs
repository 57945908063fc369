//! Problems found in a spec and their rendering as miette diagnostics.
//!
//! Loading collects every problem of a file before it gives up, so one run of
//! `dispatch validate` shows them all. What is printed stays small whatever the spec: one
//! mistake repeated over many targets (a spec of 10,000 repositories without an organisation)
//! is one grouped problem with its count and first locations ([`GROUP_SHOWN`]), and a snippet
//! shows at most [`SNIPPET_WIDTH`] characters of a line, around the column.

use std::fmt::Write as _;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError,
    MietteSpanContents, SourceCode, SourceSpan, SpanContents,
};

use super::source::{Sources, Span};
use crate::report::text::cut;

/// One thing wrong with a spec, at one place in its source.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// Where the problem is.
    pub span: Span,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The label drawn under the span.
    pub label: String,
    /// What to do about it, when there is something to say.
    pub help: Option<String>,
}

impl Problem {
    /// A problem with a message and a label.
    pub fn new(span: Span, message: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
            label: label.into(),
            help: None,
        }
    }

    /// The same problem with a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Everything wrong with one spec file.
#[derive(Clone, Debug)]
pub struct SpecErrors {
    /// The spec file as the user named it.
    pub path: String,
    /// The files the problems point into.
    pub sources: Sources,
    /// The problems, in source order.
    pub problems: Vec<Problem>,
}

/// Problems that repeat (the same message but for the values it quotes, the same label and
/// hint) more often than this are printed once, with their count and the next locations.
pub const GROUP_SHOWN: usize = 3;

/// Most characters of a source line a snippet shows: a window around the column, with `…`
/// where the line goes on.
pub const SNIPPET_WIDTH: usize = 120;

/// Most characters of a problem's message printed (a message may quote a long value).
pub const MESSAGE_WIDTH: usize = 400;

/// Problems that are the same mistake in different places, in source order of the first.
struct Group<'p> {
    first: &'p Problem,
    rest: Vec<&'p Problem>,
}

impl Group<'_> {
    /// The message printed for the group: the first one's, with the count when it repeats.
    fn message(&self) -> String {
        let message = cut(&self.first.message, MESSAGE_WIDTH);
        if self.rest.is_empty() {
            message
        } else {
            format!("{message} ({} times)", self.rest.len() + 1)
        }
    }

    /// Where else it happens: the next [`GROUP_SHOWN`] locations and how many more.
    fn elsewhere(&self, sources: &Sources) -> Option<String> {
        if self.rest.is_empty() {
            return None;
        }
        let shown: Vec<String> = self
            .rest
            .iter()
            .take(GROUP_SHOWN)
            .map(|p| sources.location(p.span))
            .collect();
        let more = self.rest.len() - shown.len();
        let mut text = format!("the same at {}", shown.join(", "));
        if more > 0 {
            let _ = write!(text, " and {more} more {}", plural(more, "place"));
        }
        Some(text)
    }
}

/// A message with the values it quotes (`...`) left out: problems of one shape share it.
fn shape(message: &str) -> String {
    let mut out = String::new();
    for (i, part) in message.split('`').enumerate() {
        out.push_str(if i % 2 == 0 { part } else { "`…`" });
    }
    out
}

/// Groups problems of one shape that repeat more than [`GROUP_SHOWN`] times; the others stay
/// one per group.
fn groups(problems: &[Problem]) -> Vec<Group<'_>> {
    let mut by_shape: std::collections::HashMap<(String, &str, Option<&str>), Vec<&Problem>> =
        std::collections::HashMap::new();
    let mut order = Vec::new();
    for problem in problems {
        let key = (
            shape(&problem.message),
            problem.label.as_str(),
            problem.help.as_deref(),
        );
        let entry = by_shape.entry(key.clone()).or_default();
        if entry.is_empty() {
            order.push(key);
        }
        entry.push(problem);
    }
    let mut groups = Vec::new();
    for key in order {
        let Some(members) = by_shape.remove(&key) else {
            continue;
        };
        if members.len() > GROUP_SHOWN {
            groups.push(Group {
                first: members[0],
                rest: members[1..].to_vec(),
            });
        } else {
            groups.extend(members.into_iter().map(|first| Group {
                first,
                rest: Vec::new(),
            }));
        }
    }
    groups.sort_by_key(|g| (g.first.span.file, g.first.span.start));
    groups
}

impl SpecErrors {
    /// Renders every problem as a miette report, each with `file:line:col` and a labelled span;
    /// a problem repeated more than [`GROUP_SHOWN`] times is one report with its count.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        for group in groups(&self.problems) {
            let diagnostic = ProblemDiagnostic::new(&self.sources, &group);
            if handler.render_report(&mut out, &diagnostic).is_err() {
                // Rendering into a String only fails on a formatter bug; fall back to one line.
                let _ = writeln!(
                    out,
                    "{}: {}",
                    self.sources.location(group.first.span),
                    group.message()
                );
            }
        }
        let _ = writeln!(
            out,
            "{}: {} {}",
            self.path,
            self.problems.len(),
            plural(self.problems.len(), "error")
        );
        out
    }

    /// One `file:line:col: message` line per problem, grouped like [`Self::render`] (for logs
    /// and tests).
    pub fn lines(&self) -> Vec<String> {
        groups(&self.problems)
            .iter()
            .map(|g| {
                let mut line = format!("{}: {}", self.sources.location(g.first.span), g.message());
                if let Some(elsewhere) = g.elsewhere(&self.sources) {
                    let _ = write!(line, "; {elsewhere}");
                }
                line
            })
            .collect()
    }
}

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// `1 error`, `2 errors`.
pub fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// A [`Problem`] (or a group of them) with its source attached, in the shape miette renders.
#[derive(Debug)]
struct ProblemDiagnostic {
    message: String,
    help: Option<String>,
    source: Excerpt,
    label: LabeledSpan,
}

impl ProblemDiagnostic {
    fn new(sources: &Sources, group: &Group<'_>) -> Self {
        let problem = group.first;
        let (source, span) = Excerpt::new(sources, problem.span);
        let help = match (&problem.help, group.elsewhere(sources)) {
            (Some(help), Some(elsewhere)) => Some(format!("{help}\n{elsewhere}")),
            (help, elsewhere) => help.clone().or(elsewhere),
        };
        Self {
            message: group.message(),
            help,
            source,
            label: LabeledSpan::new_primary_with_span(
                Some(cut(&problem.label, MESSAGE_WIDTH)),
                span,
            ),
        }
    }
}

/// The lines of a source a snippet shows (the problem's line and one on each side), each cut
/// to [`SNIPPET_WIDTH`] characters: the problem's line around its column, the others from
/// their start. miette reads this instead of the whole file, told where the lines really are.
#[derive(Debug)]
struct Excerpt {
    name: String,
    text: String,
    /// 0-based line of the file the excerpt starts at.
    first_line: usize,
    /// 0-based line of the excerpt that holds the problem.
    label_line: usize,
    /// Bytes of the problem's line left out before the window, minus the `…` shown.
    shift: usize,
}

impl Excerpt {
    /// The excerpt of `span`, and the span within it (cut at the end of its first line).
    fn new(sources: &Sources, span: super::source::Span) -> (Self, SourceSpan) {
        let file = sources.get(span.file);
        let text = file.text.as_str();
        let start = floor(text, span.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_index = text[..line_start].matches('\n').count();
        let prev_start =
            (line_start > 0).then(|| text[..line_start - 1].rfind('\n').map_or(0, |i| i + 1));
        let next = (line_end < text.len()).then(|| {
            let from = line_end + 1;
            &text[from..text[from..].find('\n').map_or(text.len(), |i| from + i)]
        });

        let mut excerpt = String::new();
        if let Some(prev_start) = prev_start {
            excerpt.push_str(&cut(&text[prev_start..line_start - 1], SNIPPET_WIDTH));
            excerpt.push('\n');
        }
        // The window of the problem's line: from half the width before the column, when the
        // column is past the width. miette counts columns in bytes, so the shift is in bytes.
        let line = &text[line_start..line_end];
        let column = text[line_start..start].chars().count();
        let skip = if column > SNIPPET_WIDTH {
            column - SNIPPET_WIDTH / 2
        } else {
            0
        };
        let window_start = line.char_indices().nth(skip).map_or(line.len(), |(i, _)| i);
        let mut shift = 0;
        if skip > 0 {
            excerpt.push('…');
            shift = window_start - '…'.len_utf8();
        }
        let window_offset = excerpt.len();
        excerpt.push_str(&cut(&line[window_start..], SNIPPET_WIDTH));
        let in_window = |byte: usize| {
            // A byte of the line, as an offset of the excerpt (clamped to the window).
            let byte = byte.saturating_sub(line_start).max(window_start) - window_start;
            (window_offset + byte).min(excerpt.len())
        };
        let span_start = in_window(start);
        let span_end = in_window(floor(text, span.end.min(line_end)).max(start));
        if let Some(next) = next {
            excerpt.push('\n');
            excerpt.push_str(&cut(next, SNIPPET_WIDTH));
        }
        let label_line = usize::from(prev_start.is_some());
        (
            Self {
                name: file.name.clone(),
                text: excerpt,
                first_line: line_index - label_line,
                label_line,
                shift,
            },
            SourceSpan::new(span_start.into(), span_end - span_start),
        )
    }
}

fn floor(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner =
            self.text
                .as_str()
                .read_span(span, context_lines_before, context_lines_after)?;
        let column = if inner.line() == self.label_line && inner.column() > 0 {
            inner.column() + self.shift
        } else {
            inner.column()
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line() + self.first_line,
            column,
            inner.line_count(),
        )))
    }
}

impl std::fmt::Display for ProblemDiagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProblemDiagnostic {}

impl Diagnostic for ProblemDiagnostic {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(self.label.clone())))
    }
}
