//! `dispatch run SPEC`: execute the plan.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;

use super::{Ui, EXIT_FAILURE};
use crate::exec::{self, limits::Limits, Executor, Reporter, RunOptions};
use crate::forge::local::LocalForge;
use crate::plan::{self, Plan};
use crate::report;
use crate::runtime::{docker::Docker, image, RuntimeError};
use crate::spec::model::ForgeKind;
use crate::state::{self, Journal};

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
    plan.units.retain(|u| only.iter().any(|p| matches(u, p)));
    let kept: std::collections::HashSet<String> = plan
        .units
        .iter()
        .flat_map(|u| u.nodes.iter().map(|n| n.id.clone()))
        .collect();
    for unit in &mut plan.units {
        for node in &mut unit.nodes {
            node.needs.retain(|n| kept.contains(n));
        }
    }
    plan.counts.units = plan.units.len();
    plan.counts.nodes = plan.units.iter().map(|u| u.nodes.len()).sum();
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
    let loaded = match ui.load(&args.spec) {
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
    if loaded.spec.forge.kind != ForgeKind::Local {
        eprintln!("error: {}: forge `{:?}` is not supported by `dispatch run` yet; use `forge: {{ kind: local }}`", args.spec.display(), loaded.spec.forge.kind);
        return EXIT_FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(run_async(ui, args, loaded, plan))
}

fn dry_run(loaded: &crate::spec::LoadedSpec, plan: &Plan) -> u8 {
    print!("{}", plan::render::text(plan));
    for (unit, target) in plan.units.iter().zip(loaded.targets.iter().filter(|t| {
        plan.units
            .iter()
            .any(|u| u.id == plan::unit_id(loaded.spec.jobs[t.job].id.as_str(), t))
    })) {
        let context = plan::unit_context(&loaded.spec, target);
        match loaded.templates.prompt(
            crate::spec::validate::prompt_parts(&loaded.spec, target.job),
            &context,
        ) {
            Ok(prompt) => println!("\n===== prompt of {} =====\n{prompt}", unit.id),
            Err(error) => {
                eprintln!("error: {error}");
                return EXIT_FAILURE;
            }
        }
    }
    0
}

async fn run_async(ui: &Ui, args: Args, loaded: crate::spec::LoadedSpec, plan: Plan) -> u8 {
    let _ = ui;
    let docker = match Docker::connect().await {
        Ok(docker) => docker,
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("Start the Docker engine (for example `sudo systemctl start docker`, or `dockerd &`) and make sure this user may use /var/run/docker.sock; set DOCKER_HOST for another socket.");
            return EXIT_NO_ENGINE;
        }
    };
    let state_dir = state_dir(&args.spec, args.state_dir.as_deref());
    let journal = match Journal::start(&state_dir) {
        Ok(journal) => journal,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_FAILURE;
        }
    };
    let forge = LocalForge::new(state_dir.join("forge"), journal.clone());
    if let Some(seed) = &loaded.spec.forge.seed {
        let seed_dir = loaded.path.parent().unwrap_or(Path::new(".")).join(seed);
        if let Err(message) = seed_forge(&forge, &seed_dir).await {
            eprintln!("error: forge.seed {}: {message}", seed_dir.display());
            return EXIT_FAILURE;
        }
    }
    let images: std::collections::BTreeSet<String> =
        plan.units.iter().map(|u| u.image.clone()).collect();
    for image_ref in images
        .iter()
        .chain(std::env::var("DISPATCH_IMAGE").ok().as_ref())
    {
        if image_ref.trim_end_matches(":latest")
            == image::busybox_image_tag().trim_end_matches(":latest")
        {
            if let Err(error) =
                image::ensure_busybox_image(&docker, image::busybox_image_tag()).await
            {
                eprintln!(
                    "error: cannot build the image {}: {error}",
                    image::busybox_image_tag()
                );
                return EXIT_FAILURE;
            }
        }
    }
    let run_id = new_run_id();
    if let Err(error) =
        exec::record_run(&journal, &run_id, &args.spec.display().to_string(), &plan).await
    {
        eprintln!("error: {error}");
        return EXIT_FAILURE;
    }
    let limits = {
        let conn = state::open(&state_dir);
        Limits::new(&loaded.spec, |key, since| {
            let (pool, model) = key
                .split_once(':')
                .map_or((key, None), |(p, m)| (p, Some(m)));
            conn.as_ref()
                .ok()
                .and_then(|c| state::starts_since(c, pool, model, since).ok())
                .unwrap_or(0)
        })
    };
    let json = args.output == Output::Json;
    let reporter: Arc<dyn Reporter> = if json {
        Arc::new(Silent)
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
    let (interrupt_tx, interrupts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if interrupt_tx.send(()).is_err() {
                break;
            }
        }
    });
    let executor = Executor {
        loaded: Arc::new(loaded),
        runtime: Arc::new(docker),
        forge: Arc::new(forge),
        journal,
        run_id: run_id.clone(),
        state_dir: state_dir.clone(),
        options: RunOptions {
            keep_containers: args.keep_containers,
        },
        reporter: reporter.clone(),
        runner: Arc::new(exec::Handlers),
    };
    let results = exec::execute(executor, &plan, limits, interrupts).await;
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

/// A reporter that shows nothing (JSON output).
struct Silent;

impl Reporter for Silent {
    fn node_started(&self, _: &str) {}
    fn node_finished(&self, _: &str, _: exec::NodeStatus, _: Option<&str>) {}
    fn unit_finished(&self, _: &exec::UnitResult) {}
    fn note(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// Whether an engine error means the engine is gone.
pub fn is_unreachable(error: &RuntimeError) -> bool {
    matches!(error, RuntimeError::Unreachable(_))
}
