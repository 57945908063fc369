//! Journal rows for the tests of the CI documents ([`super::junit`], [`super::markdown`]).

use std::collections::BTreeMap;

use crate::state::views::{RunRow, UnitRow};
use crate::vocab::{Outcome, RunStatus};

/// A unit's row without nodes or usage.
pub fn unit(id: &str, outcome: Option<Outcome>, reason: Option<&str>, pr: Option<&str>) -> UnitRow {
    UnitRow {
        id: id.into(),
        workspace: "workspaces/x".into(),
        outcome,
        reason: reason.map(Into::into),
        pr: pr.map(Into::into),
        held: None,
        usage: None,
        nodes: Vec::new(),
    }
}

/// The row of a run of `fix-tests` that finished 95 s after it started, with the counts of
/// `units`.
pub fn run(units: &[UnitRow]) -> RunRow {
    let mut outcomes = BTreeMap::new();
    for unit in units {
        *outcomes
            .entry(unit.outcome.map_or("running", Outcome::as_str).to_owned())
            .or_insert(0) += 1;
    }
    RunRow {
        runtime: Default::default(),
        id: "20261127-011742-24681".into(),
        spec_path: "/src/pipelines/fix-tests.yaml".into(),
        spec_name: "fix-tests".into(),
        status: RunStatus::Finished,
        pid: 24681,
        runner_start: None,
        started_at: 1_795_749_462,
        finished_at: Some(1_795_749_462 + 95),
        units: units.len() as i64,
        outcomes,
    }
}
