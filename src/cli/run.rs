//! `dispatch run SPEC`, or the one-call form `dispatch run --repo ORG/REPO --task TEXT`:
//! execute the plan.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::output::Output;
use super::session;
use super::source::{Source, TaskArgs};
use super::{runner, state_dir, CommandError, Ui};
use crate::exec::{self, RunOptions};
use crate::plan::{self, target::Found, Plan};
use crate::state::{self, Db};
use crate::vocab::RunStatus;

/// Arguments of `dispatch run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (or the one-call form: --repo and --task).
    pub spec: Option<PathBuf>,
    /// The one-call form.
    #[command(flatten)]
    pub one_call: TaskArgs,
    /// State directory (default: `.dispatch/` beside the spec).
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the plan and every rendered prompt; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only these units: `JOB`, `JOB/REPO` or `JOB/ORG/REPO` (repeatable).
    #[arg(long, value_name = "JOB/REPO")]
    pub only: Vec<String>,
    /// Keep containers after they finish.
    #[arg(long)]
    pub keep_containers: bool,
    /// Result format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Start the runner in the background and answer as soon as the run is recorded: its id,
    /// its units' states and workspaces (the runner outlives this command).
    #[arg(long, conflicts_with = "dry_run")]
    pub detach: bool,
    /// Start a new run even when the last run of this spec did not finish.
    #[arg(long)]
    pub new: bool,
    /// Run every agent even when the cache holds its result for the same prompt, argv, image
    /// and base commit.
    #[arg(long)]
    pub no_cache: bool,
    /// Where the containers run, whatever the spec's `runtime.kind` says (its other
    /// `runtime:` settings still apply); a resume of the run runs them there too.
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeArg>,
}

/// The values of `--runtime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    /// The Docker engine.
    Docker,
    /// The Kubernetes cluster of the kubeconfig (see the spec's `runtime:`).
    Kubernetes,
}

impl From<RuntimeArg> for crate::spec::model::RuntimeKind {
    fn from(arg: RuntimeArg) -> Self {
        match arg {
            RuntimeArg::Docker => Self::Docker,
            RuntimeArg::Kubernetes => Self::Kubernetes,
        }
    }
}

/// Keeps the units `--only` names (and drops edges to units left out).
pub fn filter(plan: &mut Plan, only: &[String]) -> Result<(), String> {
    if only.is_empty() {
        return Ok(());
    }
    let matches = |unit: &plan::Unit, pattern: &str| {
        let parts: Vec<&str> = pattern.split('/').collect();
        match parts.as_slice() {
            [job] => unit.job == *job,
            [job, repo] => unit.job == *job && unit.repo == *repo,
            [job, org, repo] => unit.job == *job && unit.org == *org && unit.repo == *repo,
            _ => unit.id == pattern,
        }
    };
    for pattern in only {
        if !plan.units.iter().any(|u| matches(u, pattern)) {
            return Err(format!("--only {pattern} matches no unit of the plan"));
        }
    }
    plan.retain_units(|u| only.iter().any(|p| matches(u, p)));
    Ok(())
}

/// A run id from the clock: `YYYYMMDD-HHMMSS-PID`.
pub fn new_run_id() -> String {
    let t = state::Civil::of(state::now());
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        std::process::id()
    )
}

/// Runs the command.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    let source = Source::of(args.spec.as_deref(), &args.one_call)?;
    let state_dir = state_dir::for_spec(source.file(), args.state_dir.as_deref());
    let (loaded, found) = super::targets::load(ui, &source, &state_dir, false)?;
    let mut plan = plan::build(&loaded);
    filter(&mut plan, &args.only).map_err(CommandError::failure)?;
    if args.dry_run {
        return dry_run(&loaded, &plan, &state_dir, args.output);
    }
    if args.detach && !super::detach::is_runner() {
        return super::detach::detach(&state_dir, args.output);
    }
    let runtime = super::tokio_runtime(true)?;
    runtime.block_on(run_async(args, source, state_dir, loaded, found, plan))
}

/// `--dry-run`: the plan and every unit's rendered prompt; with `--output json` one document
/// `{ plan, prompts: [{ unit, workspace, prompt }] }`.
fn dry_run(
    loaded: &crate::spec::LoadedSpec,
    plan: &Plan,
    state_dir: &Path,
    output: Output,
) -> Result<u8, CommandError> {
    let mut prompts = Vec::new();
    for unit in &plan.units {
        let target = &loaded.targets[unit.target];
        let context = plan::unit_context(&loaded.spec, target);
        let prompt = loaded
            .templates
            .prompt(
                crate::spec::validate::prompt_parts(&loaded.spec, target.job),
                &context,
            )
            .map_err(CommandError::failure)?;
        prompts.push(prompt);
    }
    if output == Output::Json {
        let prompts: Vec<serde_json::Value> = plan
            .units
            .iter()
            .zip(&prompts)
            .map(|(unit, prompt)| {
                serde_json::json!({
                    "unit": unit.id,
                    "workspace": state_dir.join(&unit.workspace),
                    "prompt": prompt,
                })
            })
            .collect();
        let plan = serde_json::to_value(plan).unwrap_or_default();
        let document = serde_json::json!({ "plan": plan, "prompts": prompts });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
        return Ok(0);
    }
    print!("{}", plan::render::text(plan));
    for (unit, prompt) in plan.units.iter().zip(&prompts) {
        println!(
            "\n===== prompt of {} =====\n{}",
            crate::report::text::shown(&unit.id),
            crate::report::text::on_stdout(prompt)
        );
    }
    Ok(0)
}

/// The last run of this spec, when the journal has it as running: with the spec's lock held,
/// one whose runner died before it finished.
fn unfinished_run(state_dir: &Path, spec_path: &str) -> Option<String> {
    if !Db::exists_in(state_dir) {
        return None;
    }
    let run = Db::open(state_dir).ok()?.last_run_of(spec_path).ok()??;
    (run.status == RunStatus::Running).then_some(run.id)
}

async fn run_async(
    args: Args,
    source: Source,
    state_dir: PathBuf,
    loaded: crate::spec::LoadedSpec,
    found: Found,
    plan: Plan,
) -> Result<u8, CommandError> {
    // Canonical: the key of the spec's lock, so the same file reached by two paths is one
    // spec (the loader read it, so it exists).
    let spec_path = source.run_key();
    let run_id = new_run_id();
    // Held until this runner ends: no other runner of this spec works in this state directory
    // meanwhile, so a run of it the journal has as running is one whose runner died.
    let _lock = runner::take(&state_dir, &spec_path, &run_id)?;
    if !args.new {
        if let Some(run) = unfinished_run(&state_dir, &spec_path) {
            return Err(CommandError::failure(format!("run {run} of this spec did not finish (its runner died); continue it with `dispatch resume {run} --state-dir {}`, or start over with `dispatch run --new`", state_dir.display())));
        }
    }
    source.keep(&state_dir)?;
    let slots_dir = state_dir.clone();
    let runtime = args.runtime.map_or(loaded.spec.runtime.kind, Into::into);
    let session = session::connect(&loaded, &plan, state_dir, runtime).await?;
    let plan = Arc::new(plan);
    let found = (!found.is_empty()).then(|| serde_json::to_string(&found).unwrap_or_default());
    exec::record_run(&session.journal, &run_id, &spec_path, &plan, found, runtime).await?;
    super::detach::ready(&run_id);
    // One-call runs share their defaults spec's limits with the others: queued until free.
    let _slots = source.shared_slots(&slots_dir, &loaded, &plan).await?;
    session::execute_and_report(
        loaded,
        plan,
        run_id,
        session,
        RunOptions {
            keep_containers: args.keep_containers,
            no_cache: args.no_cache,
            continues_halt: false,
        },
        args.output,
        None,
    )
    .await
}
