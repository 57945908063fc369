//! `dispatch status [RUN]`: the units of a run and their nodes (works while the run is active).

use std::io::Write;

use super::output::{self, Output};
use super::runner::{self, Runner};
use super::state_dir::StateDirArgs;
use super::{CommandError, EXIT_FAILURE};
use crate::report::text::shown;
use crate::spec::problem::plural;
use crate::state::views;
use crate::vocab::RunStatus;

/// Arguments of `dispatch status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id (default: the newest run).
    pub run: Option<String>,
    /// Where the runs are.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Result format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Print JSON: the same as `--output json`.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

impl Args {
    /// The format asked for: `--json` is `--output json`.
    fn output(&self) -> Output {
        if self.json {
            Output::Json
        } else {
            self.output
        }
    }
}

/// Shows the units of a run with their nodes.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let (dir, db) = args.state.open()?;
    let Some(run) = db.run(args.run.as_deref())? else {
        return Err(CommandError::failure(format_args!(
            "no run {} in {}",
            args.run.as_deref().unwrap_or("at all"),
            dir.display()
        )));
    };
    let units = db.units(&run.id)?;
    // A run the journal has as running is only as alive as its runner.
    let runner = if run.status == RunStatus::Running {
        Some(runner::check(&dir, &run)?)
    } else {
        None
    };
    let format = args.output();
    if let Some(document) = output::document(format, &run, &units) {
        print!("{document}");
        return Ok(0);
    }
    if format == Output::Json {
        #[derive(serde::Serialize)]
        struct Document<'a> {
            run: &'a views::RunRow,
            /// For a running run: `active`, `gone` or `unverified` (see `runner::Runner`).
            #[serde(skip_serializing_if = "Option::is_none")]
            runner: Option<&'static str>,
            /// What the run's agents used, when any reported.
            #[serde(skip_serializing_if = "Option::is_none")]
            usage: Option<crate::agents::output::Usage>,
            units: &'a [views::UnitRow],
        }
        // Streamed: a run of 10,000 units is megabytes of JSON.
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let written = serde_json::to_writer_pretty(
            &mut stdout,
            &Document {
                run: &run,
                runner: runner.as_ref().map(Runner::word),
                usage: crate::report::total_usage(units.iter().filter_map(|u| u.usage.as_ref())),
                units: &units,
            },
        )
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(stdout))
        .and_then(|()| stdout.flush());
        // A write that failed (stdout closed) says nothing more.
        return Ok(if written.is_ok() { 0 } else { EXIT_FAILURE });
    }
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "run {} ({}, spec {}): {} {}: {}",
        shown(&run.id),
        run.status,
        shown(&run.spec_path),
        run.units,
        plural(run.units as usize, "unit"),
        crate::report::outcome_counts(&run)
    );
    match &runner {
        Some(Runner::Gone { .. }) => {
            let _ = writeln!(out, "its runner is gone: `dispatch resume {id} --state-dir {dir}` finishes the run, `dispatch cancel {id} --state-dir {dir}` ends it", id = shown(&run.id), dir = dir.display());
        }
        Some(Runner::Unverified(why)) => {
            let _ = writeln!(out, "its runner cannot be verified: {}", shown(why));
        }
        Some(Runner::Active { .. }) | None => {}
    }
    for unit in &units {
        let outcome = unit.outcome.map_or("running", |o| o.as_str());
        let _ = writeln!(
            out,
            "\n{:<13} {}{}",
            outcome,
            shown(&unit.id),
            unit.pr
                .as_ref()
                .map(|p| format!("  {}", shown(p)))
                .unwrap_or_default()
        );
        if let Some(reason) = unit
            .reason
            .as_deref()
            .filter(|_| !matches!(outcome, "changed" | "merged"))
        {
            let _ = writeln!(
                out,
                "{:<13} {}",
                "",
                shown(reason.lines().next().unwrap_or(""))
            );
        }
        for node in &unit.nodes {
            let attempts = if node.attempts > 1 {
                format!(" (attempt {})", node.attempts)
            } else {
                String::new()
            };
            let cached = if node.cached {
                " (result from the cache)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<9} {:<8}{attempts}{cached}",
                node.status.as_str(),
                node.kind.as_str()
            );
            if let Some(agent) = &node.agent {
                let _ = writeln!(out, "  {:<9} {}", "", agent.usage.brief());
                if let Some(session) = &agent.session {
                    let _ = writeln!(out, "  {:<9} session {}", "", shown(session));
                }
                if let Some(error) = &agent.error {
                    let line = error.lines().next().unwrap_or("");
                    let _ = writeln!(out, "  {:<9} CLI error: {}", "", shown(line));
                }
            }
        }
    }
    if let Some(total) = crate::report::total_usage(units.iter().filter_map(|u| u.usage.as_ref())) {
        let _ = writeln!(out, "\nagents used {}", total.brief());
    }
    print!("{out}");
    Ok(0)
}
