//! `dispatch validate SPEC...`: one line per file on stdout, diagnostics on stderr.

use std::path::PathBuf;

use super::{CommandError, Ui, EXIT_INVALID};
use crate::plan;
use crate::spec::problem::plural;
use crate::spec::{self, LoadError};

/// Arguments of `dispatch validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files (.yaml, .yml or .ncl).
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
}

/// Validates every file, even after one failed; the status is 2 when any is invalid (its
/// diagnostics are printed with it).
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    let mut status = 0;
    for path in &args.specs {
        match spec::load(path) {
            Ok(loaded) => {
                let plan = plan::build(&loaded);
                let selections = match plan.unresolved.len() {
                    0 => String::new(),
                    n => format!(
                        ", plus {n} `select` {} the forge resolves when planning",
                        plural(n, "entry")
                    ),
                };
                println!(
                    "ok       {} ({}{selections})",
                    path.display(),
                    plan::render::count_line(&plan)
                );
            }
            Err(error) => {
                status = EXIT_INVALID;
                let summary = match &error {
                    LoadError::Io { error, .. } => error.to_string(),
                    LoadError::Invalid(errors) => format!(
                        "{} {}",
                        errors.problems.len(),
                        plural(errors.problems.len(), "error")
                    ),
                };
                ui.report_load_error(&error);
                println!("invalid  {} ({summary})", path.display());
            }
        }
    }
    Ok(status)
}
