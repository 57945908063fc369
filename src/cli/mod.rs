//! The command line: one file per command, all sharing [`Ui`] for colour and diagnostics.
//!
//! Each command file holds its command's `Args` and its `run` function, which returns
//! `Result<u8, CommandError>`; [`main`] prints the error once and exits with its status
//! (0 success, 1 failure, 2 invalid spec or usage, 3 no Docker engine; see [`error`]).
//! Command files use the shared modules, never each other.
//!
//! Commands:
//! - `init.rs`: a commented starter spec and its templates directory.
//! - `validate.rs`, `plan.rs`, `render.rs`, `schema.rs`, `agents.rs`, `doctor.rs`: a spec
//!   checked, planned, rendered; the schema; the agent presets; what a run needs.
//! - `run.rs`, `resume.rs`, `retry.rs`, `answer.rs`: execute a plan, or finish a run.
//! - `runs.rs`, `status.rs`, `logs.rs`, `cancel.rs`, `prs.rs`: look at runs (also while one
//!   writes) and stop one; the local forge's pull requests.
//! - `completions.rs`, `man.rs`: shell completions and the manual page, generated from the
//!   command definitions in this file.
//!
//! Shared:
//! - `error.rs`: [`CommandError`], the one error type of commands, and its exit statuses.
//! - `state_dir.rs`: where the state directory is, and opening its database.
//! - `output.rs`: the result formats (`--output text|json|junit|markdown`) of the commands
//!   that report a run, and the JUnit and Markdown documents of a run from its journal.
//! - `session.rs`: what a run needs from the machine (engine, journal, forge, images), and
//!   executing and reporting a plan.
//! - `finish.rs`: finishing a run from its journal (resume), after reopening units (retry,
//!   answer).
//! - `runner.rs`: the runner's spec lock, whether a run's runner is alive (from that lock and
//!   the journal) and signalling only a verified one.
//! - `targets.rs`: the forge's part of planning (`select` entries, PR targets).

mod agents;
mod answer;
mod cancel;
mod completions;
pub mod detach;
mod doctor;
pub mod error;
mod finish;
mod init;
mod logs;
mod man;
mod mcp;
mod output;
mod plan;
mod prs;
mod render;
mod resume;
mod retry;
mod run;
mod runner;
mod runs;
mod schema;
mod session;
mod source;
pub mod state_dir;
mod status;
mod targets;
mod validate;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use self::error::{CommandError, ExitKind};
use crate::spec::{self, LoadError, LoadedSpec};

/// Exit status for an invalid spec (and usage errors).
pub const EXIT_INVALID: u8 = ExitKind::Invalid.code();
/// Exit status for other failures.
pub const EXIT_FAILURE: u8 = ExitKind::Failure.code();

/// Run AI coding agents against many git repositories from committed specs.
#[derive(Debug, Parser)]
#[command(name = "dispatch", version, about, long_about = None)]
#[command(
    after_help = "Examples:\n  dispatch validate pipelines/*.yaml\n  dispatch plan pipelines/fix-tests.yaml\n  dispatch render pipelines/fix-tests.yaml --job fix-tests --repo go-io"
)]
pub struct Cli {
    /// When to use colour: auto (only on a terminal), always or never.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// Colour when the stream is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter spec (spec.yaml) and its templates directory.
    #[command(
        after_help = "Examples:\n  dispatch init\n  dispatch init pipelines/first && dispatch validate pipelines/first/spec.yaml\n\nNothing existing is overwritten: when a file of the starter exists, nothing is written."
    )]
    Init(init::Args),
    /// Check specs; one line per file; exit 2 when any is invalid.
    #[command(after_help = "Example:\n  dispatch validate pipelines/*.yaml pipelines/*.ncl")]
    Validate(validate::Args),
    /// Show the nodes a run would execute.
    #[command(
        after_help = "Examples:\n  dispatch plan pipelines/fix-tests.yaml\n  dispatch plan pipelines/fix-tests.yaml --format json > plan.json\n  dispatch plan pipelines/fix-tests.yaml --format dot | dot -Tsvg > plan.svg"
    )]
    Plan(plan::Args),
    /// Print the exact prompt one unit's agent would get.
    #[command(
        after_help = "Examples:\n  dispatch render pipelines/fix-tests.yaml --job fix-tests --repo go-io\n  dispatch render pipelines/fix-tests.yaml --job fix-tests --repo core/go-process --attempt 2 --qa-failure qa.log"
    )]
    Render(render::Args),
    /// Print the spec's JSON schema, or the Nickel contract with --nickel.
    #[command(
        after_help = "Examples:\n  dispatch schema > schemas/dispatch.schema.json\n  dispatch schema --nickel > schemas/dispatch.ncl"
    )]
    Schema(schema::Args),
    /// Show each agent preset's exact argv, env names, prompt hand-off and mounts.
    #[command(
        after_help = "Example:\n  dispatch agents\n  dispatch agents pipelines/fix-tests.yaml   # with the spec's custom agents and overrides"
    )]
    Agents(agents::Args),
    /// Run the plan: prep -> agent -> QA -> PR for every unit, in containers.
    #[command(
        after_help = "Examples:\n  dispatch run pipelines/demo.yaml\n  dispatch run pipelines/fix-tests.yaml --only fix-tests/go-io --output json\n  dispatch run pipelines/fix-tests.yaml --output junit > dispatch.xml\n  dispatch run pipelines/fix-tests.yaml --dry-run\n\nExit status: 0 when every unit ended changed, no_changes or merged; 1 otherwise;\n2 for an invalid spec; 3 when the Docker engine cannot be reached."
    )]
    Run(run::Args),
    /// Finish a run whose runner died (killed, crashed, the machine slept).
    #[command(
        after_help = "Example:\n  dispatch resume 20261127-011742-24681 --spec pipelines/demo.yaml"
    )]
    Resume(resume::Args),
    /// Re-run failed or blocked units of a run.
    #[command(
        after_help = "Examples:\n  dispatch retry 20261127-011742-24681 --failed --spec pipelines/demo.yaml\n  dispatch retry 20261127-011742-24681 --only fix-tests/calc --spec pipelines/demo.yaml"
    )]
    Retry(retry::Args),
    /// Answer a blocked agent's question; its unit runs again with the answer.
    #[command(
        after_help = "Examples:\n  dispatch answer RUN fix-tests/core/go-io \"Use PostgreSQL 16\" --spec pipelines/fix-tests.yaml\n  dispatch answer RUN fix-tests/core/go-io --file answer.md --spec pipelines/fix-tests.yaml"
    )]
    Answer(answer::Args),
    /// Check what a run of the spec needs: engine, images, forge token and repositories, keys.
    #[command(after_help = "Example:\n  dispatch doctor pipelines/demo.yaml")]
    Doctor(doctor::Args),
    /// List the pull requests of the local forge.
    #[command(
        after_help = "Examples:\n  dispatch prs pipelines/demo.yaml\n  dispatch prs --state-dir pipelines/.dispatch --json"
    )]
    Prs(prs::Args),
    /// List recent runs with counts per outcome.
    #[command(
        after_help = "Examples:\n  dispatch runs --spec pipelines/demo.yaml\n  dispatch runs --state-dir .dispatch --json"
    )]
    Runs(runs::Args),
    /// Show the units of a run and their nodes (works while the run is active).
    #[command(
        after_help = "Examples:\n  dispatch status --spec pipelines/demo.yaml\n  dispatch status 20261127-011742-24681 --state-dir pipelines/.dispatch --json\n  dispatch status --spec pipelines/demo.yaml --output markdown >> \"$GITHUB_STEP_SUMMARY\""
    )]
    Status(status::Args),
    /// Print a node's log; --follow keeps printing while it runs.
    #[command(
        after_help = "Example:\n  dispatch logs 20261127-011742-24681 fix-tests/demo/calc:agent --spec pipelines/demo.yaml --follow"
    )]
    Logs(logs::Args),
    /// Stop a run from another terminal.
    #[command(
        after_help = "Example:\n  dispatch cancel 20261127-011742-24681 --spec pipelines/demo.yaml"
    )]
    Cancel(cancel::Args),
    /// Print the shell completion script for bash, zsh or fish.
    #[command(
        after_help = "Examples:\n  dispatch completions bash > ~/.local/share/bash-completion/completions/dispatch\n  dispatch completions zsh > ~/.zfunc/_dispatch      # with ~/.zfunc in $fpath\n  dispatch completions fish > ~/.config/fish/completions/dispatch.fish"
    )]
    Completions(completions::Args),
    /// Print the manual page (roff) of dispatch, or of one command.
    #[command(
        after_help = "Examples:\n  dispatch man | man -l -\n  dispatch man > ~/.local/share/man/man1/dispatch.1\n  dispatch man run > ~/.local/share/man/man1/dispatch-run.1"
    )]
    Man(man::Args),
    /// Serve dispatch's tools over MCP on stdin/stdout (for Claude Code, codex, IDEs).
    #[command(
        after_help = "Examples:\n  claude mcp add dispatch -- dispatch mcp\n  codex mcp add dispatch -- dispatch mcp\n\nRuns started through it go on when the server stops."
    )]
    Mcp(mcp::Args),
}

/// Output settings shared by the commands.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    /// Colour on stderr.
    pub color_err: bool,
}

impl Ui {
    fn new(color: Color) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color_err = match color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => !no_color && std::io::stderr().is_terminal(),
        };
        Self { color_err }
    }

    /// Loads a spec; its diagnostics are the error (exit 2).
    pub fn load_spec(&self, path: &Path) -> Result<LoadedSpec, CommandError> {
        spec::load(path).map_err(|error| self.load_error(&error))
    }

    /// Prints a load error to stderr (`validate`, which reports every file it checks).
    pub fn report_load_error(&self, error: &LoadError) {
        self.load_error(error).report();
    }

    /// A load error as the command error it is: a message for a file that cannot be read,
    /// rendered diagnostics for an invalid spec; exit 2 either way.
    pub(super) fn load_error(&self, error: &LoadError) -> CommandError {
        match error {
            LoadError::Io { .. } => CommandError::invalid(error),
            LoadError::Invalid(errors) => CommandError::rendered(errors.render(self.color_err)),
        }
    }
}

/// Writes `bytes` (a document a command prints whole) to stdout: status 0, or 1 when stdout is
/// closed (a pipe whose reader left), which says nothing more.
fn write_stdout(bytes: &[u8]) -> Result<u8, CommandError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(bytes).and_then(|()| stdout.flush());
    Ok(if written.is_ok() { 0 } else { EXIT_FAILURE })
}

/// The async runtime of a command that talks to the engine or a forge (`multi_thread` for
/// runs, which drive many nodes at once), or why it cannot start.
pub fn tokio_runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, CommandError> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|error| {
        CommandError::failure(format_args!("cannot start the async runtime: {error}"))
    })
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    // The evaluator of Nickel specs is this binary in a child process (see `spec::nickel`): not
    // a user command, so it is not in the help, and it starts before anything else does.
    if std::env::args_os().nth(1).as_deref() == Some(spec::nickel::EVALUATOR_COMMAND.as_ref()) {
        return ExitCode::from(spec::nickel::serve());
    }
    detach::adopt();
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.color);
    let ui = Ui::new(cli.color);
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Validate(args) => validate::run(&ui, args),
        Command::Plan(args) => plan::run(&ui, args),
        Command::Render(args) => render::run(&ui, args),
        Command::Schema(args) => schema::run(args),
        Command::Agents(args) => agents::run(&ui, args),
        Command::Run(args) => run::run(&ui, args),
        Command::Prs(args) => prs::run(&ui, args),
        Command::Doctor(args) => doctor::run(&ui, args),
        Command::Resume(args) => resume::run(&ui, args),
        Command::Retry(args) => retry::run(&ui, args),
        Command::Answer(args) => answer::run(&ui, args),
        Command::Runs(args) => runs::run(args),
        Command::Status(args) => status::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Cancel(args) => cancel::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Mcp(args) => mcp::run(args),
    };
    ExitCode::from(result.unwrap_or_else(CommandError::report))
}

fn init_tracing(verbose: u8, color: Color) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal(),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
