//! Problems found in a spec and their rendering as miette diagnostics.
//!
//! Loading collects every problem of a file before it gives up, so one run of
//! `dispatch validate` shows them all.

use std::fmt::Write as _;
use std::sync::Arc;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan,
};

use super::source::{Sources, Span};

/// One thing wrong with a spec, at one place in its source.
#[derive(Clone, Debug, PartialEq)]
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

impl SpecErrors {
    /// Renders every problem as a miette report, each with `file:line:col` and a labelled span.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        for problem in &self.problems {
            let diagnostic = ProblemDiagnostic::new(&self.sources, problem);
            if handler.render_report(&mut out, &diagnostic).is_err() {
                // Rendering into a String only fails on a formatter bug; fall back to one line.
                let _ = writeln!(
                    out,
                    "{}: {}",
                    self.sources.location(problem.span),
                    problem.message
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

    /// One `file:line:col: message` line per problem (for logs and tests).
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| format!("{}: {}", self.sources.location(p.span), p.message))
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

/// A [`Problem`] with its source attached, in the shape miette renders.
#[derive(Debug)]
struct ProblemDiagnostic {
    message: String,
    help: Option<String>,
    source: NamedSource<Arc<String>>,
    label: LabeledSpan,
}

impl ProblemDiagnostic {
    fn new(sources: &Sources, problem: &Problem) -> Self {
        let file = sources.get(problem.span.file);
        let span = SourceSpan::new(
            problem.span.start.into(),
            problem.span.end - problem.span.start,
        );
        Self {
            message: problem.message.clone(),
            help: problem.help.clone(),
            source: NamedSource::new(file.name.clone(), file.text.clone()),
            label: LabeledSpan::new_primary_with_span(Some(problem.label.clone()), span),
        }
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
