//! `dispatch resume RUN`: finish a run whose runner died (killed, crashed, the machine slept).

use super::finish::finish;
use super::output::Output;
use super::state_dir::StateDirArgs;
use super::{CommandError, Ui};
use crate::exec::RunOptions;

/// Arguments of `dispatch resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run to finish.
    pub run: String,
    /// Where the run is.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Keep containers after they finish.
    #[arg(long)]
    pub keep_containers: bool,
    /// Run every agent even when the cache holds its result.
    #[arg(long)]
    pub no_cache: bool,
    /// Result format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Start the runner in the background and answer as soon as the run is recorded: its id
    /// and its units' states (the runner outlives this command).
    #[arg(long)]
    pub detach: bool,
}

/// Finishes a run whose runner died: finished nodes are not run again, containers that still
/// run (or exited meanwhile) are collected, every other container of the run is removed.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    if args.detach && !super::detach::is_runner() {
        let (dir, _) = args.state.open()?;
        return super::detach::detach(&dir, args.output);
    }
    finish(
        ui,
        &args.state,
        &args.run,
        RunOptions {
            keep_containers: args.keep_containers,
            no_cache: args.no_cache,
            continues_halt: false,
        },
        args.output,
    )
}
