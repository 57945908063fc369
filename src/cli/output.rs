//! The result formats of the commands that report a run: `run`, `resume`, `retry` and
//! `answer` (which execute a plan) and `status` (which reads the journal). Text is for people,
//! JSON for scripts, JUnit XML and Markdown for CI.
//!
//! The JUnit and Markdown documents of every command come from one place ([`document`]) and
//! one data shape, the run's journal rows: the commands that execute a plan read them back
//! once it ended (every unit's end is committed before the plan's execution returns), so
//! `run --output junit` and a later `status --output junit` of that run print the same
//! document.

use clap::ValueEnum;

use super::CommandError;
use crate::report;
use crate::state::views::{RunRow, UnitRow};
use crate::state::Db;

/// Result formats on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people: progress and a summary table (`status`: units and nodes).
    Text,
    /// One JSON document.
    Json,
    /// A JUnit XML report: a test case per unit, failures with their reasons.
    Junit,
    /// A Markdown summary table, for a PR comment or a CI step summary.
    Markdown,
}

impl Output {
    /// Whether stdout holds one document alone (no progress lines on it).
    pub fn is_document(self) -> bool {
        self != Output::Text
    }
}

/// The JUnit or Markdown document of `run` with its `units`; `None` for text and JSON, which
/// each command writes itself.
pub fn document(output: Output, run: &RunRow, units: &[UnitRow]) -> Option<String> {
    match output {
        Output::Junit => Some(report::junit::document(run, units)),
        Output::Markdown => Some(report::markdown::document(run, units)),
        Output::Text | Output::Json => None,
    }
}

/// The JUnit or Markdown document of run `run`, read from the journal in `state_dir`.
pub fn document_of(
    output: Output,
    state_dir: &std::path::Path,
    run: &str,
) -> Result<Option<String>, CommandError> {
    if !matches!(output, Output::Junit | Output::Markdown) {
        return Ok(None);
    }
    let db = Db::open_read_only(state_dir)?;
    let row = db.run(Some(run))?.ok_or_else(|| {
        CommandError::failure(format_args!(
            "the journal in {} has no run {run}",
            state_dir.display()
        ))
    })?;
    let units = db.units(run)?;
    Ok(document(output, &row, &units))
}
