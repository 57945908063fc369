//! What a run needs from the machine (the engine, the journal, the forge and the images) and
//! executing a plan with it and reporting the result: shared by `run`, `resume`, `retry` and
//! `answer`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::output::{self, Output};
use super::CommandError;
use crate::exec::{self, limits::Limits, Executor, Reporter, RunOptions, Signal};
use crate::forge::any::AnyForge;
use crate::forge::local::LocalForge;
use crate::forge::options::RemoteOptions;
use crate::plan::{self, Plan};
use crate::report;
use crate::runtime::any::AnyRuntime;
use crate::runtime::kubernetes::{GitTokens, Kubernetes};
use crate::runtime::{docker::Docker, image};
use crate::spec::model::RuntimeKind;
use crate::state::{self, Db, Journal};

/// What a run needs from the machine: the runtime, the journal and the forge, ready.
pub struct Session {
    /// Where the containers run.
    pub runtime: AnyRuntime,
    /// The run's journal.
    pub journal: Journal,
    /// The spec's forge (the local one unless the spec names another).
    pub forge: AnyForge,
    /// The state directory, absolute.
    pub state_dir: PathBuf,
}

/// Connects to the runtime `kind` names (exit 3 when it is unreachable), opens the journal,
/// seeds the local forge and, on Docker, builds the `dispatch-busybox` image when the plan
/// uses it.
pub async fn connect(
    loaded: &crate::spec::LoadedSpec,
    plan: &Plan,
    state_dir: PathBuf,
    kind: RuntimeKind,
) -> Result<Session, CommandError> {
    let runtime = match kind {
        RuntimeKind::Docker => AnyRuntime::Docker(Docker::connect().await.map_err(|error| {
            CommandError::no_engine(error).hint("Start the Docker engine (for example `sudo systemctl start docker`, or `dockerd &`) and make sure this user may use /var/run/docker.sock; set DOCKER_HOST for another socket.")
        })?),
        RuntimeKind::Kubernetes => AnyRuntime::Kubernetes(Box::new(kubernetes(loaded).await?)),
    };
    let journal = Journal::start(&state_dir).map_err(CommandError::failure)?;
    let forge = match AnyForge::from_spec(&loaded.spec.forge, RemoteOptions::default()) {
        Ok(Some(remote)) => remote,
        Ok(None) => {
            let local = LocalForge::new(LocalForge::root_in(&state_dir), journal.clone());
            if let Some(seed) = &loaded.spec.forge.seed {
                let seed_dir = loaded.path.parent().unwrap_or(Path::new(".")).join(seed);
                seed_forge(&local, &seed_dir).await.map_err(|message| {
                    CommandError::failure(format_args!(
                        "forge.seed {}: {message}",
                        seed_dir.display()
                    ))
                })?;
            }
            AnyForge::Local(local)
        }
        Err(error) => {
            return Err(CommandError::failure(format_args!(
                "{}: {error}",
                loaded.path.display()
            )))
        }
    };
    let images: std::collections::BTreeSet<String> =
        plan.units.iter().map(|u| u.image.clone()).collect();
    let busybox = image::busybox_image_tag().trim_end_matches(":latest");
    if let Some(docker) = runtime.docker().filter(|_| {
        images
            .iter()
            .chain(std::env::var("DISPATCH_IMAGE").ok().as_ref())
            .any(|i| i.trim_end_matches(":latest") == busybox)
    }) {
        image::ensure_busybox_image(docker, image::busybox_image_tag())
            .await
            .map_err(|error| {
                CommandError::failure(format_args!(
                    "cannot build the image {}: {error}",
                    image::busybox_image_tag()
                ))
            })?;
    }
    Ok(Session {
        runtime,
        journal,
        forge,
        state_dir,
    })
}

/// The cluster of the spec's `runtime:` (exit 3 when it cannot be reached), with the git
/// tokens its pods get: `runtime.read_token_env` and `write_token_env`, else the forge's
/// `token_env`. A spec whose forge the cluster cannot reach is refused first, with the reason.
pub(super) async fn kubernetes(
    loaded: &crate::spec::LoadedSpec,
) -> Result<Kubernetes, CommandError> {
    let spec = &loaded.spec;
    if let Err(why) = crate::spec::validate::kubernetes_reaches(&spec.forge) {
        return Err(CommandError::failure(format_args!(
            "{}: {} ({}); {}",
            loaded.path.display(),
            why.message,
            why.label,
            why.help
        )));
    }
    let [read, write] = spec
        .runtime
        .git_token_envs(&spec.forge)
        .map(|(field, name)| {
            name.map(|name| crate::forge::http::Secret::from_env(field, name.as_str()))
                .transpose()
        });
    let failed = |error: crate::forge::ForgeError| {
        CommandError::failure(format_args!("{}: {error}", loaded.path.display()))
    };
    let tokens = GitTokens {
        read: read.map_err(failed)?,
        write: write.map_err(failed)?,
    };
    Kubernetes::connect(&spec.runtime, tokens)
        .await
        .map_err(|error| CommandError::no_engine(error).hint("Check the kubeconfig (`$KUBECONFIG`, `~/.kube/config`), its context and that the cluster answers; `dispatch doctor` checks the namespace and the permissions the backend needs."))
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

/// For `rollout.max_open_prs`: per unit of the plan, whether its branch has an open PR on the
/// forge now (empty without the setting). Asked once, before the run starts.
async fn open_prs(
    loaded: &crate::spec::LoadedSpec,
    plan: &Plan,
    forge: &AnyForge,
    state_dir: &std::path::Path,
) -> Result<Vec<bool>, CommandError> {
    if loaded
        .spec
        .rollout
        .as_ref()
        .and_then(|r| r.max_open_prs)
        .is_none()
    {
        return Ok(Vec::new());
    }
    let local = match forge {
        AnyForge::Local(_) => plan::resolve::local_prs(state_dir).map_err(CommandError::failure)?,
        _ => Vec::new(),
    };
    let mut open = Vec::with_capacity(plan.units.len());
    for unit in &plan.units {
        let has = match forge {
            AnyForge::Local(_) => local.iter().any(|p| {
                p.org == unit.org
                    && p.repo == unit.repo
                    && p.branch == unit.branch
                    && p.status == "open"
            }),
            _ => forge
                .existing_pr(&unit.org, &unit.repo, &unit.branch)
                .await
                .map_err(|e| {
                    CommandError::failure(format_args!(
                        "rollout.max_open_prs: cannot count the open PRs of {}/{}: {e}",
                        unit.org, unit.repo
                    ))
                })?
                .is_some_and(|pr| pr.open),
        };
        open.push(has);
    }
    Ok(open)
}

/// Runs the plan (fresh, or resumed from the journal's rows) and prints the result; the
/// status is 1 when some unit did not succeed.
pub async fn execute_and_report(
    loaded: crate::spec::LoadedSpec,
    plan: Arc<Plan>,
    run_id: String,
    session: Session,
    options: RunOptions,
    output: Output,
    resumed: Option<Vec<state::views::UnitRow>>,
) -> Result<u8, CommandError> {
    let Session {
        runtime,
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
    let reporter: Arc<dyn Reporter> = if output.is_document() {
        Arc::new(report::Silent)
    } else if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
        Arc::new(report::Bars::new(plan.units.len()))
    } else {
        Arc::new(report::Lines::new())
    };
    if !output.is_document() {
        println!(
            "run {run_id}: {} (state in {})",
            plan::render::count_line(&plan),
            state_dir.display()
        );
    }
    let signals = listen_for_signals().map_err(|error| {
        CommandError::failure(format_args!("cannot listen for signals: {error}"))
    })?;
    let runtime = Arc::new(runtime);
    let keep_containers = options.keep_containers;
    let open_prs = open_prs(&loaded, &plan, &forge, &state_dir).await?;
    let executor = Executor {
        open_prs,
        loaded: Arc::new(loaded),
        runtime: runtime.clone(),
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
        if let Ok(containers) = runtime.list(&run_id).await {
            for container in containers {
                let _ = runtime.remove(&container.id).await;
            }
        }
    }
    drop(reporter);
    let success = results.iter().all(|r| r.outcome.is_success());
    // SQLite on a blocking thread, as everywhere in async code.
    let document = {
        let (dir, id) = (state_dir.clone(), run_id.clone());
        tokio::task::spawn_blocking(move || output::document_of(output, &dir, &id))
            .await
            .map_err(|error| {
                CommandError::failure(format_args!("cannot read the run's journal: {error}"))
            })??
    };
    if let Some(document) = document {
        print!("{document}");
    } else if output == Output::Json {
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
            usage: report::total_usage(results.iter().filter_map(|r| r.usage.as_ref())),
            units: &results,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    } else {
        print!("{}", report::summary(&results));
        for hold in crate::vocab::Hold::ALL {
            let held = results.iter().filter(|r| r.held == Some(hold)).count();
            if held == 0 {
                continue;
            }
            let what = match hold {
                crate::vocab::Hold::Budget => "raise it in the spec",
                crate::vocab::Hold::Rollout => {
                    "fix what failed (the spec, the template, the image)"
                }
                crate::vocab::Hold::OpenPrs => "merge or close some of the spec's PRs",
            };
            println!(
                "{held} unit{} held back by {}: {what}, then `dispatch resume {run_id} --state-dir {}` starts {}",
                if held == 1 { " was" } else { "s were" },
                hold.describe(),
                state_dir.display(),
                if held == 1 { "it" } else { "them" }
            );
        }
        println!("PRs: dispatch prs --state-dir {}", state_dir.display());
    }
    Ok(if success { 0 } else { super::EXIT_FAILURE })
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
