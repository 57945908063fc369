//! `dispatch runs`: recent runs with counts per outcome (also while one writes). A run the
//! journal has as running is only as alive as its runner: `runs` says which runners are gone
//! (killed, crashed, the machine slept), whose runs `dispatch resume` finishes.

use super::runner::{self, Runner};
use super::state_dir::StateDirArgs;
use super::CommandError;
use crate::report::text::shown;

/// Arguments of `dispatch runs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// How many runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists recent runs.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let (dir, db) = args.state.open()?;
    let rows = db.runs(args.limit)?;
    let runners = rows
        .iter()
        .map(|run| match run.status {
            crate::vocab::RunStatus::Running => runner::check(&dir, run).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<Vec<Option<Runner>>, CommandError>>()?;
    if args.json {
        // Each run's row, with `runner` (`active`, `gone`, `unverified`) for a running one.
        let listed: Vec<serde_json::Value> = rows
            .iter()
            .zip(&runners)
            .map(|(run, runner)| {
                let mut value = serde_json::to_value(run).unwrap_or_default();
                if let (Some(runner), Some(map)) = (runner, value.as_object_mut()) {
                    map.insert("runner".into(), runner.word().into());
                }
                value
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&listed).unwrap_or_default()
        );
        return Ok(0);
    }
    println!(
        "{:<28} {:<10} {:<20} {:>6}  OUTCOMES",
        "RUN", "STATUS", "SPEC", "UNITS"
    );
    let mut gone = Vec::new();
    for (run, runner) in rows.iter().zip(&runners) {
        let status = match runner {
            Some(Runner::Gone { .. }) => {
                gone.push(run.id.as_str());
                "gone"
            }
            _ => run.status.as_str(),
        };
        println!(
            "{:<28} {:<10} {:<20} {:>6}  {}",
            shown(&run.id),
            status,
            shown(&run.spec_name),
            run.units,
            crate::report::outcome_counts(run)
        );
    }
    for run in gone {
        println!(
            "run {} did not finish and its runner is gone; `dispatch resume {}` finishes it",
            shown(run),
            shown(run)
        );
    }
    Ok(0)
}
