//! `dispatch retry RUN`: re-run failed or blocked units of a run, in a new attempt of the same
//! run.

use clap::ValueEnum;

use super::finish::{hold, reopen};
use super::output::Output;
use super::state_dir::StateDirArgs;
use super::{CommandError, Ui};
use crate::vocab::{NodeKind, Outcome};

/// Arguments of `dispatch retry`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run.
    pub run: String,
    /// Where the run is.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Units that failed (every outcome but changed, no_changes, merged and blocked).
    #[arg(long)]
    pub failed: bool,
    /// Units that are blocked.
    #[arg(long)]
    pub blocked: bool,
    /// Only these units: `JOB`, `JOB/REPO` or a unit id (repeatable).
    #[arg(long, value_name = "JOB/REPO")]
    pub only: Vec<String>,
    /// Re-run from this node on (`qa` re-runs QA, and the agent's result comes from the
    /// cache when its inputs did not change).
    #[arg(long, value_enum, default_value_t = Rerun::Prep)]
    pub rerun: Rerun,
    /// Result format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Start the runner in the background and answer as soon as the run is recorded: its id
    /// and its units' states (the runner outlives this command).
    #[arg(long)]
    pub detach: bool,
}

/// Where a retried unit starts again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rerun {
    /// The whole unit (the workspace is continued, not cloned again).
    Prep,
    /// The agent and everything after it.
    Agent,
    /// QA and everything after it.
    Qa,
    /// Publishing and everything after it.
    Publish,
}

/// Re-runs chosen units of a run in a new attempt of the same run.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    let (dir, db) = args.state.open()?;
    if args.detach && !super::detach::is_runner() {
        drop(db);
        return super::detach::detach(&dir, args.output);
    }
    // Before anything of the run changes: no other runner works on it or its spec meanwhile.
    let (_, lock) = hold(&dir, &db, &args.run)?;
    let units = db.units(&args.run)?;
    let (failed, blocked) = if args.failed || args.blocked {
        (args.failed, args.blocked)
    } else {
        (true, true)
    };
    let chosen: Vec<String> = units
        .iter()
        .filter(|u| match u.outcome {
            Some(Outcome::Blocked) => blocked,
            Some(outcome) if outcome.is_success() => false,
            Some(_) => failed,
            None => false,
        })
        .filter(|u| {
            args.only.is_empty()
                || args.only.iter().any(|p| {
                    u.id == *p || u.id.starts_with(&format!("{p}/")) || unit_matches(&u.id, p)
                })
        })
        .map(|u| u.id.clone())
        .collect();
    if chosen.is_empty() {
        eprintln!("run {}: no unit to retry", args.run);
        return Ok(0);
    }
    drop(db);
    // A notice, on stderr: stdout is the report (`--output json` stays one JSON document).
    eprintln!(
        "run {}: retrying {} {}",
        args.run,
        chosen.len(),
        crate::spec::problem::plural(chosen.len(), "unit")
    );
    reopen(
        ui,
        dir,
        lock,
        &args.run,
        &chosen,
        match args.rerun {
            Rerun::Prep => NodeKind::Prep,
            Rerun::Agent => NodeKind::Agent,
            Rerun::Qa => NodeKind::Qa,
            Rerun::Publish => NodeKind::Publish,
        },
        args.output,
    )
}

/// `JOB/REPO` against a unit id `JOB/ORG/REPO[/KEY]`.
fn unit_matches(unit: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = unit.split('/').collect();
    match pattern.split_once('/') {
        Some((job, repo)) => parts.first() == Some(&job) && parts.get(2) == Some(&repo),
        None => parts.first() == Some(&pattern),
    }
}
