//! `dispatch runs`: recent runs with counts per outcome (also while one writes).

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
    let (_, db) = args.state.open()?;
    let rows = db.runs(args.limit)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    println!(
        "{:<28} {:<10} {:<20} {:>6}  OUTCOMES",
        "RUN", "STATUS", "SPEC", "UNITS"
    );
    for run in &rows {
        println!(
            "{:<28} {:<10} {:<20} {:>6}  {}",
            shown(&run.id),
            run.status.as_str(),
            shown(&run.spec_name),
            run.units,
            crate::report::outcome_counts(run)
        );
    }
    Ok(0)
}
