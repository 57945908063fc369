//! `dispatch run SPEC`: execute the plan.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;

use super::runs::fail;
use super::{Ui, EXIT_FAILURE};
use crate::exec::{self, limits::Limits, Executor, Reporter, RunOptions, Signal};
use crate::forge::local::LocalForge;
use crate::forge::{any::AnyForge, options::RemoteOptions};
use crate::plan::{self, target::Found, Plan};
use crate::report;
use crate::runtime::{docker::Docker, image};
use crate::state::{self, Db, Journal, RunStatus};
use crate::vocab::{NodeKind, NodeStatus, Outcome};

/// Exit status when the Docker engine cannot be reached.
pub const EXIT_NO_ENGINE: u8 = 3;

/// Arguments of `dispatch run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec.
    pub spec: PathBuf,
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
    /// Start a new run even when the last run of this spec did not finish.
    #[arg(long)]
    pub new: bool,
    /// Run every agent even when the cache holds its result for the same prompt, argv, image
    /// and base commit.
    #[arg(long)]
    pub no_cache: bool,
}

/// Result formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Progress and a summary table.
    Text,
    /// One JSON document at the end.
    Json,
}

/// The state directory of a spec, absolute (git runs in other directories).
pub fn state_dir(spec: &Path, explicit: Option<&Path>) -> PathBuf {
    let dir = match explicit {
        Some(dir) => dir.to_owned(),
        None => spec.parent().unwrap_or(Path::new(".")).join(".dispatch"),
    };
    std::path::absolute(&dir).unwrap_or(dir)
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
    let secs = state::now();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}-{}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        std::process::id()
    )
}

/// Runs the command.
pub fn run(ui: &Ui, args: Args) -> u8 {
    let state_dir = state_dir(&args.spec, args.state_dir.as_deref());
    let (loaded, found) = match super::targets::load(ui, &args.spec, &state_dir, false) {
        Ok(loaded) => loaded,
        Err(status) => return status,
    };
    let mut plan = plan::build(&loaded);
    if let Err(message) = filter(&mut plan, &args.only) {
        eprintln!("error: {message}");
        return EXIT_FAILURE;
    }
    if args.dry_run {
        return dry_run(&loaded, &plan);
    }
    let runtime = match super::async_runtime(true) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    runtime.block_on(run_async(args, state_dir, loaded, found, plan))
}

fn dry_run(loaded: &crate::spec::LoadedSpec, plan: &Plan) -> u8 {
    print!("{}", plan::render::text(plan));
    for unit in &plan.units {
        let (id, target) = (&unit.id, &loaded.targets[unit.target]);
        let context = plan::unit_context(&loaded.spec, target);
        match loaded.templates.prompt(
            crate::spec::validate::prompt_parts(&loaded.spec, target.job),
            &context,
        ) {
            Ok(prompt) => println!("\n===== prompt of {id} =====\n{prompt}"),
            Err(error) => {
                eprintln!("error: {error}");
                return EXIT_FAILURE;
            }
        }
    }
    0
}

/// What a run needs from the machine: the engine, the journal and the forge, ready.
struct Session {
    docker: Docker,
    journal: Journal,
    forge: AnyForge,
    state_dir: PathBuf,
}

/// Connects to the engine (exit 3 when it is unreachable), opens the journal, seeds the local
/// forge and builds the `dispatch-busybox` image when the plan uses it.
async fn session(
    loaded: &crate::spec::LoadedSpec,
    plan: &Plan,
    state_dir: PathBuf,
) -> Result<Session, u8> {
    let docker = match Docker::connect().await {
        Ok(docker) => docker,
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("Start the Docker engine (for example `sudo systemctl start docker`, or `dockerd &`) and make sure this user may use /var/run/docker.sock; set DOCKER_HOST for another socket.");
            return Err(EXIT_NO_ENGINE);
        }
    };
    let journal = Journal::start(&state_dir).map_err(|error| {
        eprintln!("error: {error}");
        EXIT_FAILURE
    })?;
    let forge = match AnyForge::from_spec(&loaded.spec.forge, RemoteOptions::default()) {
        Ok(Some(remote)) => remote,
        Ok(None) => {
            let local = LocalForge::new(LocalForge::root_in(&state_dir), journal.clone());
            if let Some(seed) = &loaded.spec.forge.seed {
                let seed_dir = loaded.path.parent().unwrap_or(Path::new(".")).join(seed);
                if let Err(message) = seed_forge(&local, &seed_dir).await {
                    eprintln!("error: forge.seed {}: {message}", seed_dir.display());
                    return Err(EXIT_FAILURE);
                }
            }
            AnyForge::Local(local)
        }
        Err(error) => {
            eprintln!("error: {}: {error}", loaded.path.display());
            return Err(EXIT_FAILURE);
        }
    };
    let images: std::collections::BTreeSet<String> =
        plan.units.iter().map(|u| u.image.clone()).collect();
    let busybox = image::busybox_image_tag().trim_end_matches(":latest");
    if images
        .iter()
        .chain(std::env::var("DISPATCH_IMAGE").ok().as_ref())
        .any(|i| i.trim_end_matches(":latest") == busybox)
    {
        if let Err(error) = image::ensure_busybox_image(&docker, image::busybox_image_tag()).await {
            eprintln!(
                "error: cannot build the image {}: {error}",
                image::busybox_image_tag()
            );
            return Err(EXIT_FAILURE);
        }
    }
    Ok(Session {
        docker,
        journal,
        forge,
        state_dir,
    })
}

/// The last run of this spec, when its runner died before it finished.
fn unfinished_run(state_dir: &Path, spec_path: &str) -> Option<(String, i64)> {
    if !Db::exists_in(state_dir) {
        return None;
    }
    let run = Db::open(state_dir).ok()?.last_run_of(spec_path).ok()??;
    (run.status == RunStatus::Running).then_some((run.id, run.pid))
}

async fn run_async(
    args: Args,
    state_dir: PathBuf,
    loaded: crate::spec::LoadedSpec,
    found: Found,
    plan: Plan,
) -> u8 {
    let spec_path = std::path::absolute(&args.spec)
        .unwrap_or_else(|_| args.spec.clone())
        .display()
        .to_string();
    if !args.new {
        if let Some((run, pid)) = unfinished_run(&state_dir, &spec_path) {
            if super::runs::runner_alive(pid) {
                eprintln!("error: run {run} of this spec is still active (runner pid {pid}); follow it with `dispatch status {run} --state-dir {}`", state_dir.display());
            } else {
                eprintln!("error: run {run} of this spec did not finish (its runner died); continue it with `dispatch resume {run} --state-dir {}`, or start over with `dispatch run --new`", state_dir.display());
            }
            return EXIT_FAILURE;
        }
    }
    let session = match session(&loaded, &plan, state_dir).await {
        Ok(session) => session,
        Err(status) => return status,
    };
    let run_id = new_run_id();
    let plan = Arc::new(plan);
    let found = (!found.is_empty()).then(|| serde_json::to_string(&found).unwrap_or_default());
    if let Err(error) = exec::record_run(&session.journal, &run_id, &spec_path, &plan, found).await
    {
        eprintln!("error: {error}");
        return EXIT_FAILURE;
    }
    execute_and_report(
        loaded,
        plan,
        run_id,
        session,
        RunOptions {
            keep_containers: args.keep_containers,
            no_cache: args.no_cache,
        },
        args.output,
        None,
    )
    .await
}

/// Runs the plan (fresh, or resumed from the journal's rows) and prints the result.
async fn execute_and_report(
    loaded: crate::spec::LoadedSpec,
    plan: Arc<Plan>,
    run_id: String,
    session: Session,
    options: RunOptions,
    output: Output,
    resumed: Option<Vec<state::views::UnitRow>>,
) -> u8 {
    let Session {
        docker,
        journal,
        forge,
        state_dir,
    } = session;
    let limits = {
        let db = Db::open(&state_dir);
        Limits::new(&loaded.spec, |key, since| {
            let (pool, model) = key
                .split_once(':')
                .map_or((key, None), |(p, m)| (p, Some(m)));
            db.as_ref()
                .ok()
                .and_then(|db| db.starts_since(pool, model, since).ok())
                .unwrap_or(0)
        })
    };
    let json = output == Output::Json;
    let reporter: Arc<dyn Reporter> = if json {
        Arc::new(report::Silent)
    } else if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
        Arc::new(report::Bars::new(plan.units.len()))
    } else {
        Arc::new(report::Lines::new())
    };
    if !json {
        println!(
            "run {run_id}: {} (state in {})",
            plan::render::count_line(&plan),
            state_dir.display()
        );
    }
    let signals = match listen_for_signals() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: cannot listen for signals: {error}");
            return EXIT_FAILURE;
        }
    };
    let docker = Arc::new(docker);
    let keep_containers = options.keep_containers;
    let executor = Executor {
        loaded: Arc::new(loaded),
        runtime: docker.clone(),
        forge: Arc::new(forge),
        journal,
        run_id: run_id.clone(),
        state_dir: state_dir.clone(),
        options,
        reporter: reporter.clone(),
        runner: Arc::new(exec::Handlers),
    };
    let results = exec::execute(executor, &plan, limits, signals, resumed).await;
    // Every node has ended, so any container still labelled with this run is garbage: for
    // example one the engine finished creating after an earlier runner was killed.
    if !keep_containers {
        use crate::runtime::Runtime;
        if let Ok(containers) = docker.list(&run_id).await {
            for container in containers {
                let _ = docker.remove(&container.id).await;
            }
        }
    }
    drop(reporter);
    let success = results.iter().all(|r| r.outcome.is_success());
    if json {
        let mut counts = std::collections::BTreeMap::new();
        for r in &results {
            *counts.entry(r.outcome.as_str()).or_insert(0) += 1;
        }
        let document = report::RunJson {
            run: &run_id,
            spec: &plan.spec,
            state_dir: state_dir.display().to_string(),
            success,
            counts,
            units: &results,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    } else {
        print!("{}", report::summary(&results));
        println!("PRs: dispatch prs --state-dir {}", state_dir.display());
    }
    if success {
        0
    } else {
        EXIT_FAILURE
    }
}

/// Arguments of `dispatch resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The run to finish.
    pub run: String,
    /// Where the run is.
    #[command(flatten)]
    pub state: super::runs::StateDir,
    /// Keep containers after they finish.
    #[arg(long)]
    pub keep_containers: bool,
    /// Run every agent even when the cache holds its result.
    #[arg(long)]
    pub no_cache: bool,
    /// Result format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Finishes a run whose runner died: finished nodes are not run again, containers that still
/// run (or exited meanwhile) are collected, every other container of the run is removed.
pub fn resume(ui: &Ui, args: ResumeArgs) -> u8 {
    let (dir, db) = match args.state.open() {
        Ok(open) => open,
        Err(message) => return fail(message),
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let run = match db.run(Some(&args.run)) {
        Ok(Some(run)) => run,
        Ok(None) => return fail(format!("no run {} in {}", args.run, dir.display())),
        Err(error) => return fail(error),
    };
    if run.status != RunStatus::Running {
        println!(
            "run {} already ended ({}); nothing to resume",
            run.id, run.status
        );
        return 0;
    }
    if super::runs::runner_alive(run.pid) && run.pid != i64::from(std::process::id()) {
        eprintln!(
            "error: run {} is still active (runner pid {}); it cannot be resumed twice",
            run.id, run.pid
        );
        return EXIT_FAILURE;
    }
    let mut loaded = match ui.load(Path::new(&run.spec_path)) {
        Ok(loaded) => loaded,
        Err(status) => return status,
    };
    let (stored, found) = match db.recorded(&run.id) {
        Ok(recorded) => recorded,
        Err(error) => return fail(error),
    };
    // The targets the forge gave when the run started, not what it says now.
    if let Some(found) = found.and_then(|f| serde_json::from_str::<Found>(&f).ok()) {
        loaded.expand(&found);
    }
    let mut current = plan::build(&loaded);
    let units = match db.units(&run.id) {
        Ok(units) => units,
        Err(error) => return fail(error),
    };
    // A run started with --only holds a subset of the plan.
    let ids: std::collections::HashSet<&str> = units.iter().map(|u| u.id.as_str()).collect();
    let planned = current.units.len();
    current.retain_units(|u| ids.contains(u.id.as_str()));
    let outside = planned - current.units.len();
    if outside > 0 {
        eprintln!(
            "note: {outside} unit{} the spec plans now {} not part of run {} (it started with --only, or the spec gained them since); `dispatch run {}` runs them",
            if outside == 1 { "" } else { "s" },
            if outside == 1 { "is" } else { "are" },
            run.id,
            run.spec_path
        );
    }
    if !stored.is_some_and(|stored| plan::same_plan(&stored, &current)) {
        eprintln!("error: {} changed since run {} started, so it cannot be resumed safely; start over with `dispatch run --new {}`", run.spec_path, run.id, run.spec_path);
        return EXIT_FAILURE;
    }
    let runtime = match super::async_runtime(true) {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    let pid = std::process::id();
    if let Err(error) = db.set_runner(&run.id, pid) {
        return fail(error);
    }
    drop(db);
    runtime.block_on(async move {
        let session = match session(&loaded, &current, dir).await {
            Ok(session) => session,
            Err(status) => return status,
        };
        // Containers of the run that no node will collect (a QA step, a node that ended) go.
        let keep: std::collections::HashSet<String> = units
            .iter()
            .flat_map(|u| &u.nodes)
            .filter(|n| {
                n.status == NodeStatus::Running
                    && matches!(n.kind, NodeKind::Agent | NodeKind::Review)
            })
            .filter_map(|n| n.container_id.clone())
            .collect();
        use crate::runtime::Runtime;
        match session.docker.list(&run.id).await {
            Ok(containers) => {
                for container in containers.iter().filter(|c| !keep.contains(&c.id)) {
                    let _ = session.docker.remove(&container.id).await;
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                return EXIT_FAILURE;
            }
        }
        execute_and_report(
            loaded,
            Arc::new(current),
            run.id.clone(),
            session,
            RunOptions {
                keep_containers: args.keep_containers,
                no_cache: args.no_cache,
            },
            args.output,
            Some(units),
        )
        .await
    })
}

/// Creates the local forge's repositories from `ORG/REPO` directories under `dir`.
async fn seed_forge(forge: &LocalForge, dir: &Path) -> Result<(), String> {
    let orgs = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    for org in orgs.flatten().filter(|e| e.path().is_dir()) {
        let repos = std::fs::read_dir(org.path()).map_err(|e| e.to_string())?;
        for repo in repos.flatten().filter(|e| e.path().is_dir()) {
            let (org_name, repo_name) = (
                org.file_name().to_string_lossy().into_owned(),
                repo.file_name().to_string_lossy().into_owned(),
            );
            forge
                .seed(&org_name, &repo_name, &repo.path())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Delivers the signals that stop a run: SIGINT (Ctrl-C), SIGTERM and SIGHUP as
/// [`Signal::Interrupt`] (the first stops scheduling, a second stops the containers), SIGUSR1
/// (`dispatch cancel --force`) as [`Signal::Force`].
fn listen_for_signals() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<Signal>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let kinds = [
        (SignalKind::interrupt(), Signal::Interrupt),
        (SignalKind::terminate(), Signal::Interrupt),
        (SignalKind::hangup(), Signal::Interrupt),
        (SignalKind::user_defined1(), Signal::Force),
    ];
    for (kind, meaning) in kinds {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(meaning).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

/// Arguments of `dispatch retry`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// The run.
    pub run: String,
    /// Where the run is.
    #[command(flatten)]
    pub state: super::runs::StateDir,
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

/// Arguments of `dispatch answer`.
#[derive(Debug, clap::Args)]
pub struct AnswerArgs {
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
    pub state: super::runs::StateDir,
    /// Result format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Sets units of a run back to pending from the node `from` on (`prep` re-runs the whole
/// unit), reopens the run, and finishes it like `dispatch resume`.
fn reopen(
    ui: &Ui,
    state: super::runs::StateDir,
    run: &str,
    units: &[String],
    from: NodeKind,
    output: Output,
) -> u8 {
    let (dir, db) = match state.open() {
        Ok(open) => open,
        Err(message) => return fail(message),
    };
    if let Err(error) = db.reopen(run, units, from) {
        return fail(error);
    }
    drop(db);
    resume(
        ui,
        ResumeArgs {
            run: run.to_owned(),
            state: super::runs::StateDir {
                state_dir: Some(dir),
                spec: None,
            },
            keep_containers: false,
            no_cache: false,
            output,
        },
    )
}

/// Re-runs chosen units of a run in a new attempt of the same run.
pub fn retry(ui: &Ui, args: RetryArgs) -> u8 {
    let (dir, db) = match args.state.open() {
        Ok(open) => open,
        Err(message) => return fail(message),
    };
    let units = match db.units(&args.run) {
        Ok(units) if !units.is_empty() => units,
        Ok(_) => return fail(format!("no run {} in {}", args.run, dir.display())),
        Err(error) => return fail(error),
    };
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
        println!("run {}: no unit to retry", args.run);
        return 0;
    }
    drop(db);
    println!(
        "run {}: retrying {} {}",
        args.run,
        chosen.len(),
        crate::spec::problem::plural(chosen.len(), "unit")
    );
    reopen(
        ui,
        super::runs::StateDir {
            state_dir: Some(dir),
            spec: None,
        },
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

/// Answers a blocked unit: `ANSWER.md` goes into its workspace and its agent runs again with
/// the stored prompt, the question and the answer; then QA and publish as usual.
pub fn answer(ui: &Ui, args: AnswerArgs) -> u8 {
    let (dir, db) = match args.state.open() {
        Ok(open) => open,
        Err(message) => return fail(message),
    };
    let units = db.units(&args.run).unwrap_or_default();
    let Some(unit) = units.iter().find(|u| u.id == args.unit) else {
        eprintln!("error: run {} has no unit {}", args.run, args.unit);
        return EXIT_FAILURE;
    };
    if unit.outcome != Some(Outcome::Blocked) {
        eprintln!(
            "error: unit {} is not blocked (it ended {})",
            unit.id,
            unit.outcome.map_or("nothing yet", Outcome::as_str)
        );
        return EXIT_FAILURE;
    }
    let text = match (&args.text, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("error: cannot read {}: {error}", file.display());
                return EXIT_FAILURE;
            }
        },
        (None, None) => unreachable!("clap requires TEXT or --file"),
    };
    let workspace = dir.join(&unit.workspace);
    // Both places are the containers' to write: never through a link one planted.
    let write = crate::runtime::mounted::write_sync;
    let written = write(&workspace.join("repo").join("ANSWER.md"), text.as_bytes())
        .and_then(|()| write(&workspace.join("meta").join("answer.md"), text.as_bytes()));
    if let Err(error) = written {
        eprintln!(
            "error: cannot write the answer into {}: {error}",
            workspace.display()
        );
        return EXIT_FAILURE;
    }
    drop(db);
    reopen(
        ui,
        super::runs::StateDir {
            state_dir: Some(dir),
            spec: None,
        },
        &args.run,
        std::slice::from_ref(&args.unit),
        NodeKind::Agent,
        args.output,
    )
}
