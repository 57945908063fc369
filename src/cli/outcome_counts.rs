//! A run's counts per outcome as `runs` and `status` print them: `2 changed, 1 qa_failed`.

use crate::state::views;

/// The counts of `run`, by outcome.
pub fn line(run: &views::RunRow) -> String {
    run.outcomes
        .iter()
        .map(|(o, n)| format!("{n} {o}"))
        .collect::<Vec<_>>()
        .join(", ")
}
