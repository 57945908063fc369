//! `dispatch answer RUN UNIT TEXT`: answer a blocked agent's question; its unit runs again with
//! the answer.

use std::path::PathBuf;

use super::finish::{hold, reopen};
use super::output::Output;
use super::state_dir::StateDirArgs;
use super::{CommandError, Ui};
use crate::vocab::{NodeKind, Outcome};

/// Arguments of `dispatch answer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run.
    pub run: String,
    /// The blocked unit, e.g. `fix-tests/core/go-io`.
    pub unit: String,
    /// The answer.
    #[arg(required_unless_present = "file")]
    pub text: Option<String>,
    /// Read the answer from this file.
    #[arg(long, conflicts_with = "text")]
    pub file: Option<PathBuf>,
    /// Where the run is.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Result format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Start the runner in the background and answer as soon as the run is recorded: its id
    /// and its units' states (the runner outlives this command).
    #[arg(long)]
    pub detach: bool,
}

/// Answers a blocked unit: `ANSWER.md` goes into its workspace and its agent runs again with
/// the stored prompt, the question and the answer; then QA and publish as usual.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    let (dir, db) = args.state.open()?;
    if args.detach && !super::detach::is_runner() {
        drop(db);
        return super::detach::detach(&dir, args.output);
    }
    // Before the answer goes into the workspace: no other runner works on the run or its
    // spec meanwhile.
    let (_, lock) = hold(&dir, &db, &args.run)?;
    let units = db.units(&args.run)?;
    let Some(unit) = units.iter().find(|u| u.id == args.unit) else {
        return Err(CommandError::failure(format_args!(
            "run {} has no unit {}",
            args.run, args.unit
        )));
    };
    if unit.outcome != Some(Outcome::Blocked) {
        return Err(CommandError::failure(format_args!(
            "unit {} is not blocked (it ended {})",
            unit.id,
            unit.outcome.map_or("nothing yet", Outcome::as_str)
        )));
    }
    let text = match (&args.text, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(file)) => std::fs::read_to_string(file).map_err(|error| {
            CommandError::failure(format_args!("cannot read {}: {error}", file.display()))
        })?,
        (None, None) => unreachable!("clap requires TEXT or --file"),
    };
    let workspace = dir.join(&unit.workspace);
    // Both places are the containers' to write: never through a link one planted.
    let write = crate::runtime::mounted::write_sync;
    write(&workspace.join("repo").join("ANSWER.md"), text.as_bytes())
        .and_then(|()| write(&workspace.join("meta").join("answer.md"), text.as_bytes()))
        .map_err(|error| {
            CommandError::failure(format_args!(
                "cannot write the answer into {}: {error}",
                workspace.display()
            ))
        })?;
    drop(db);
    reopen(
        ui,
        dir,
        lock,
        &args.run,
        std::slice::from_ref(&args.unit),
        NodeKind::Agent,
        args.output,
    )
}
