//! The containers of a unit: the one place that builds their configs ([`ContainerSpec`]) for
//! agent, review and QA nodes, and the one that runs them ([`run`]).
//!
//! Every container of a unit gets the same base: a name unique per run, node, attempt and
//! step; the unit's image (or the agent's own, or a QA step's own; `DISPATCH_IMAGE` when the
//! spec names none); the clone with its `.git` read-only and `meta/`; the invoking user's
//! `uid:gid`; the labels `dispatch.run` and `dispatch.node`; the unit's resources (the job's,
//! else `defaults.resources`, as the plan resolved them). An agent container adds its prompt
//! file, the config files its CLI needs, its provider's keys (by name) and its network; a QA
//! container runs `sh -c STEP` on the step's network (`none` unless asked).
//!
//! Not here: what an agent CLI needs (`crate::agents`), how the engine makes a container
//! (`crate::runtime`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{NodeCtx, UnitRun};
use crate::agents::{self, Invocation};
use crate::exec::error::{FileAction, NodeError, Step};
use crate::forge::Forge;
use crate::git;
use crate::plan::{QaStepPlan, Unit};
use crate::runtime::{
    cancelled, mounted, Cancel, Carry, Checkout, ContainerSpec, Log, Mount, Ran, Resources,
    Runtime, RuntimeError, LABEL_NODE, LABEL_RUN,
};
use crate::spec::model::{ForgeKind, PromptHandoff, Resources as SpecResources};
use crate::state::RunEvent;

/// Whose a container is: the run, the node and the node's attempt (its name and labels).
#[derive(Clone, Copy, Debug)]
pub(super) struct Owner<'a> {
    /// Run id.
    pub run_id: &'a str,
    /// Node id.
    pub node: &'a str,
    /// The node's attempt.
    pub attempt: u32,
}

impl<R: Runtime, F: Forge> NodeCtx<R, F> {
    /// Whose the node's containers are.
    pub(super) fn owner(&self) -> Owner<'_> {
        Owner {
            run_id: &self.run_id,
            node: &self.node,
            attempt: self.attempt,
        }
    }

    /// The spec's directory (relative config mounts of custom agents start there).
    pub(super) fn spec_dir(&self) -> &Path {
        self.loaded.path.parent().unwrap_or(Path::new("."))
    }
}

/// The container of an agent run (the unit's agent or its reviewer): the unit's base, the
/// prompt file read-only, the unit's agent home of its pool writable at `/home/agent` (seeded
/// by [`seed_home`]), the mounts its spec entry names that exist, its fixed environment, its
/// provider's keys and pass-through settings that are set. `number` tells the node's agent
/// containers apart (0, then 1 for a fresh start after a session that could not be continued).
pub(super) fn agent(
    unit: &UnitRun,
    owner: &Owner<'_>,
    spec_dir: &Path,
    invocation: &Invocation,
    number: usize,
) -> ContainerSpec {
    let mut container = base(unit, owner, number, agent_image(unit.unit(), invocation));
    container.mounts.push(Mount {
        source: unit.meta_dir().join("prompt.md"),
        target: agents::PROMPT_FILE.to_owned(),
        read_only: true,
        carry: Carry::In,
    });
    container.mounts.push(Mount {
        source: unit.agent_home(&invocation.pool),
        target: agents::AGENT_HOME.to_owned(),
        read_only: false,
        carry: Carry::In,
    });
    let home = user_home();
    for config in &invocation.config_mounts {
        let mut host = config.host_path(&home);
        if host.is_relative() {
            host = spec_dir.join(host);
            host = std::path::absolute(&host).unwrap_or(host);
        }
        if host.exists() {
            container.mounts.push(Mount {
                source: host,
                target: config.target.clone(),
                read_only: config.read_only,
                carry: Carry::In,
            });
        }
    }
    container.env = invocation.fixed_env.clone();
    for name in invocation.env_names.iter().chain(&invocation.pass_env) {
        if let Ok(value) = std::env::var(name) {
            container.env.push((name.clone(), value));
        }
    }
    container.argv = invocation.argv.clone();
    container.workdir = invocation.workdir.clone();
    container.network = invocation.network.clone();
    container.stdin = invocation.prompt == PromptHandoff::Stdin;
    container.extra_hosts = invocation.extra_hosts.clone();
    container
}

/// The invoking user's home (`$HOME`), where the CLIs keep their logins.
fn user_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Most bytes of one file of the user's home copied into an agent home.
const HOME_FILE_LIMIT: u64 = 1 << 20;

/// Makes the unit's agent home of the invocation's pool, once: when it does not exist yet, it
/// is created (owned by the invoking user, the containers' uid) with the directories of the
/// files of the user's home the CLI needs ([`agents::Invocation::home_files`]), and those that
/// exist are copied in, mode 0600. An existing home is the agent's from an earlier container of this run (a fix attempt,
/// an answer) and is left as it is: dispatch writes nothing into a directory a container could
/// have changed. The user's files are only ever read.
pub(super) async fn seed_home(
    unit: &UnitRun,
    invocation: &agents::Invocation,
    step: Step,
) -> Result<(), NodeError> {
    let dir = unit.agent_home(&invocation.pool);
    let files = invocation.home_files.clone();
    let (home, at) = (user_home(), dir.clone());
    tokio::task::spawn_blocking(move || seed(&at, &home, &files))
        .await
        .map_err(std::io::Error::other)
        .and_then(|seeded| seeded)
        .map_err(step.io(FileAction::Create, &dir))
}

/// [`seed_home`] on the blocking pool.
fn seed(dir: &Path, user_home: &Path, files: &[agents::HomeFile]) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    for file in files {
        // The directory is made even when the user has no such file: codex refuses a
        // `CODEX_HOME` that does not exist.
        let to = dir.join(file.to);
        if let Some(parent) = to.parent() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(parent)?;
        }
        let from = user_home.join(file.from);
        let Ok(source) = std::fs::File::open(&from) else {
            continue;
        };
        if !source.metadata()?.is_file() {
            continue;
        }
        let mut bytes = Vec::new();
        source.take(HOME_FILE_LIMIT + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > HOME_FILE_LIMIT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is larger than {} KiB; dispatch copies only small config files",
                    from.display(),
                    HOME_FILE_LIMIT >> 10
                ),
            ));
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)?;
        std::io::Write::write_all(&mut out, &bytes)?;
    }
    Ok(())
}

/// The image an agent runs in: its own, else the unit's.
pub(super) fn agent_image(unit: &Unit, invocation: &Invocation) -> String {
    invocation.image.clone().unwrap_or_else(|| unit_image(unit))
}

/// The container of QA step `index` (from 0): `sh -c STEP` in the step's image on its network.
pub(super) fn qa(
    unit: &UnitRun,
    owner: &Owner<'_>,
    step: &QaStepPlan,
    index: usize,
) -> ContainerSpec {
    // The step's own image when the spec gave it one, else the unit's.
    let image = if step.image != unit.unit().image {
        step.image.clone()
    } else {
        unit_image(unit.unit())
    };
    let mut container = base(unit, owner, index + 1, image);
    container.argv = vec!["sh".to_owned(), "-c".to_owned(), step.run.clone()];
    container.workdir = agents::WORKDIR.to_owned();
    container.network = step.network.clone();
    container
}

/// What every container of a unit has: name, image, mounts, user, labels, resources.
fn base(unit: &UnitRun, owner: &Owner<'_>, number: usize, image: String) -> ContainerSpec {
    ContainerSpec {
        name: name(owner, number),
        image,
        mounts: base_mounts(unit),
        user: Some(user()),
        labels: labels(owner),
        resources: resources(unit.unit().resources.as_ref()),
        ..ContainerSpec::default()
    }
}

/// The unit's image, or `DISPATCH_IMAGE` when the spec names none (the one place it is read).
fn unit_image(unit: &Unit) -> String {
    if !unit.image_from_spec {
        if let Ok(image) = std::env::var("DISPATCH_IMAGE") {
            if !image.is_empty() {
                return image;
            }
        }
    }
    unit.image.clone()
}

/// The invoking user, `uid:gid`.
fn user() -> String {
    // SAFETY: getuid and getgid cannot fail and have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    format!("{uid}:{gid}")
}

/// The engine's limits from the spec's (pids 512, the log and disk defaults unless the spec
/// sets them).
fn resources(spec: Option<&SpecResources>) -> Resources {
    let mut r = Resources {
        log_bytes: SpecResources::log_limit(spec).bytes(),
        // No one file larger than the whole workspace may take: a single runaway write is
        // stopped by the kernel at once, before the watcher measures the tree.
        file_bytes: Some(SpecResources::disk_limit(spec).bytes()),
        ..Resources::default()
    };
    if let Some(spec) = spec {
        r.memory_bytes = spec.memory.map(|m| m.bytes());
        r.cpus = spec.cpus;
        if let Some(pids) = spec.pids {
            r.pids = i64::from(pids);
        }
    }
    r
}

/// `dispatch-RUN-HASH-ATTEMPT-NUMBER`: unique per run, node (hashed), attempt and container of
/// the node (0 the agent, 1.. the QA steps).
fn name(owner: &Owner<'_>, number: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in owner.node.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "dispatch-{}-{hash:016x}-{}-{number}",
        owner.run_id, owner.attempt
    )
}

/// The labels a restarted runner finds the container by.
fn labels(owner: &Owner<'_>) -> BTreeMap<String, String> {
    [
        (LABEL_RUN.to_owned(), owner.run_id.to_owned()),
        (LABEL_NODE.to_owned(), owner.node.to_owned()),
    ]
    .into_iter()
    .collect()
}

/// The mounts of a unit's containers: the clone (its `.git` read-only) and `meta/`.
///
/// dispatch runs git on the host on what a container leaves behind (commit, push, rebase), so
/// the container must not be able to change the repository's configuration, hooks or object
/// stores: a hook, a `core.fsmonitor`, a filter driver, a `commondir` or a remote URL written
/// there would run or redirect git on the host. Agents leave their work in the tree and
/// dispatch commits it.
fn base_mounts(unit: &UnitRun) -> Vec<Mount> {
    vec![
        Mount {
            source: unit.repo_dir(),
            target: agents::WORKDIR.to_owned(),
            read_only: false,
            carry: Carry::In,
        },
        Mount {
            source: unit.repo_dir().join(".git"),
            target: format!("{}/.git", agents::WORKDIR),
            read_only: true,
            carry: Carry::In,
        },
        Mount {
            source: unit.meta_dir(),
            target: agents::META_DIR.to_owned(),
            read_only: false,
            carry: Carry::Both,
        },
    ]
}

/// Runs one container to its end: create it, record its id in the journal (before it starts:
/// a runner killed meanwhile leaves it for `dispatch resume`), run it while its unit's
/// workspace is watched ([`watched`]), and hand it to the dispatcher for removal once the
/// node's end is committed.
pub(super) async fn run<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    step: Step,
    mut spec: ContainerSpec,
    stdin: Option<Vec<u8>>,
    log: &Log,
    timeout: Duration,
) -> Result<Ran, NodeError> {
    spec.checkout = checkout(ctx);
    let id = ctx
        .runtime
        .create(&spec)
        .await
        .map_err(step.clone().runtime())?;
    let created = RunEvent::ContainerCreated {
        node: ctx.node.clone(),
        container: id.clone(),
    };
    if let Err(error) = ctx.journal.record_now(&ctx.run_id, created).await {
        let _ = ctx.runtime.remove(&id).await;
        return Err(NodeError::State {
            step,
            source: error,
        });
    }
    let ran = watched(ctx, step.clone(), &id, |cancel| {
        ctx.runtime.run(&id, stdin, log, timeout, cancel)
    })
    .await;
    // Removed by the dispatcher once the node's end is committed: a runner killed before
    // that leaves the container for `dispatch resume` to collect.
    ctx.containers.push(id);
    let ran = ran?.map_err(step.clone().runtime())?;
    refuse_planted(ctx, step).await?;
    Ok(ran)
}

/// The unit's clone as a [`Checkout`]: where this machine reaches the forge's repository
/// (what prep cloned) and where a cluster does (the local forge's `git_url`, else the same).
/// `None` when the forge cannot say (a runtime that binds the clone does not need it).
fn checkout<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> Option<Checkout> {
    let unit = ctx.unit.unit();
    let remote = ctx.forge.clone_source(&unit.org, &unit.repo).ok()?;
    let forge = &ctx.loaded.spec.forge;
    let remote_there = match (&forge.kind, &forge.git_url) {
        (ForgeKind::Local, Some(url)) => format!(
            "{}/{}/{}.git",
            url.trim_end_matches('/'),
            unit.org,
            unit.repo
        ),
        _ => remote.clone(),
    };
    Some(Checkout {
        dir: ctx.unit.repo_dir(),
        remote,
        remote_there,
    })
}

/// The log of a unit's container at `path`, under the unit's cap (`resources.log`) and its
/// watchdog (`idle_timeout`).
pub(super) fn log(unit: &UnitRun, path: PathBuf) -> Log {
    Log {
        path,
        limit: SpecResources::log_limit(unit.unit().resources.as_ref()).bytes(),
        idle: unit.unit().idle_timeout.map(|idle| idle.get()),
        tap: None,
    }
}

/// The reason of a container the watchdog stopped.
pub(super) fn idle_reason(what: &str, unit: &UnitRun) -> String {
    match unit.unit().idle_timeout {
        Some(idle) => format!("{what} printed nothing for {idle} (idle_timeout) and was stopped"),
        None => format!("{what} printed nothing for too long and was stopped"),
    }
}

/// The least time between two measurements of a workspace while a container runs: what a
/// container writes in that time may pass the limit before it is killed.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How many times the last measurement's own duration the watcher waits before the next, so
/// a large tree costs at most a twentieth of a core.
const DISK_CHECK_SPACING: u32 = 20;

/// Runs a container (`start` is given the cancel signal it must stop on) while its unit's
/// workspace is measured ([`mounted::disk_usage`]) every [`DISK_CHECK_EVERY`] or more, and
/// once more when it ended. A workspace past its disk limit (`resources.disk`) kills the
/// container `id` at once (a stop with a grace period would let it write on) and fails the
/// node with [`NodeError::DiskLimit`], one that cannot be measured with the error; the run's
/// cancel signal stops it as before. The engine's answer is returned as it is, for the caller
/// to wrap.
pub(super) async fn watched<R, F, T, Fut>(
    ctx: &NodeCtx<R, F>,
    step: Step,
    id: &str,
    start: impl FnOnce(Cancel) -> Fut,
) -> Result<Result<T, RuntimeError>, NodeError>
where
    R: Runtime,
    F: Forge,
    Fut: std::future::Future<Output = Result<T, RuntimeError>>,
{
    let limit = SpecResources::disk_limit(ctx.unit.unit().resources.as_ref()).bytes();
    let workspace = &ctx.unit.workspace;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = start(stopped);
    tokio::pin!(running);
    // Why the watcher stopped the container, once it did.
    let mut watcher: Option<std::io::Result<()>> = None;
    let mut forwarded = false;
    let out = loop {
        tokio::select! {
            out = &mut running => break out,
            past = past_limit(workspace, limit), if watcher.is_none() => {
                watcher = Some(past);
                if let Err(error) = ctx.runtime.kill(id).await {
                    tracing::warn!(container = id, %error, "cannot kill the container");
                }
                let _ = stop.send(true);
            }
            () = cancelled(ctx.cancel.clone()), if !forwarded => {
                forwarded = true;
                let _ = stop.send(true);
            }
        }
    };
    match watcher {
        Some(Ok(())) => Err(NodeError::DiskLimit {
            step,
            workspace: workspace.clone(),
            limit,
        }),
        Some(Err(error)) => Err(step.io(FileAction::Inspect, workspace)(error)),
        None => check_disk(ctx, step).await.map(|()| out),
    }
}

/// Fails the node when the unit's workspace is past its disk limit now (after the clone, after
/// a container).
pub(super) async fn check_disk<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    step: Step,
) -> Result<(), NodeError> {
    let limit = SpecResources::disk_limit(ctx.unit.unit().resources.as_ref()).bytes();
    let workspace = &ctx.unit.workspace;
    let used = measure(workspace, limit)
        .await
        .map_err(step.clone().io(FileAction::Inspect, workspace))?;
    if used > limit {
        return Err(NodeError::DiskLimit {
            step,
            workspace: workspace.clone(),
            limit,
        });
    }
    Ok(())
}

/// Resolves once the workspace is past `limit` (measured every [`DISK_CHECK_EVERY`] or more),
/// or with the error when it cannot be measured (an agent must not hide what it writes that
/// way); never while it stays under.
async fn past_limit(workspace: &Path, limit: u64) -> std::io::Result<()> {
    let mut pause = DISK_CHECK_EVERY;
    loop {
        tokio::time::sleep(pause).await;
        let started = std::time::Instant::now();
        if measure(workspace, limit).await? > limit {
            return Ok(());
        }
        pause = DISK_CHECK_EVERY.max(started.elapsed() * DISK_CHECK_SPACING);
    }
}

/// [`mounted::disk_usage`] of a workspace on the blocking pool.
async fn measure(workspace: &Path, limit: u64) -> std::io::Result<u64> {
    let dir = workspace.to_path_buf();
    tokio::task::spawn_blocking(move || mounted::disk_usage(&dir, limit))
        .await
        .map_err(std::io::Error::other)?
}

/// Fails the node when the container left a nested repository in the unit's work tree (see
/// [`git::planted`]): before any host git looks at the tree.
pub(super) async fn refuse_planted<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    step: Step,
) -> Result<(), NodeError> {
    let repo = ctx.unit.repo_dir();
    let walked = repo.clone();
    let found = tokio::task::spawn_blocking(move || git::planted::nested_repositories(&walked))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|found| found);
    match found {
        Ok(paths) if paths.is_empty() => Ok(()),
        Ok(paths) => Err(NodeError::Planted {
            step,
            what: "nested git repositories",
            paths,
        }),
        Err(source) => Err(NodeError::Io {
            step,
            action: FileAction::Inspect,
            path: repo,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::agents::ArgvContext;
    use crate::plan::Qa;

    #[test]
    fn a_home_is_seeded_once_with_the_files_that_exist_and_never_again() {
        let dir = std::env::temp_dir().join(format!("dispatch-seed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let user = dir.join("user");
        std::fs::create_dir_all(user.join(".codex")).unwrap();
        std::fs::write(user.join(".codex/auth.json"), "login").unwrap();
        let home = dir.join("workspace/home/codex");
        let files = [
            agents::HomeFile {
                from: ".codex/auth.json",
                to: ".codex/auth.json",
                login: true,
            },
            agents::HomeFile {
                from: ".codex/config.toml",
                to: ".codex/config.toml",
                login: false,
            },
        ];
        seed(&home, &user, &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join(".codex/auth.json")).unwrap(),
            "login"
        );
        assert!(
            !home.join(".codex/config.toml").exists(),
            "missing: not copied"
        );
        assert!(
            home.join(".codex").is_dir(),
            "its directory is made all the same"
        );
        // The home is the agent's now: a second seeding writes nothing into it.
        std::fs::write(home.join(".codex/auth.json"), "refreshed by the CLI").unwrap();
        std::fs::write(user.join(".codex/config.toml"), "model = 1").unwrap();
        seed(&home, &user, &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join(".codex/auth.json")).unwrap(),
            "refreshed by the CLI"
        );
        assert!(!home.join(".codex/config.toml").exists());
        // A file too large for a config file is an error, not a copy.
        std::fs::write(user.join(".codex/auth.json"), vec![b'x'; (1 << 20) + 1]).unwrap();
        let fresh = dir.join("workspace/home/other");
        let error = seed(&fresh, &user, &files).expect_err("too large");
        assert!(
            error.to_string().contains("larger than 1024 KiB"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn qa_containers_get_the_resources_agent_containers_get() {
        let text = "version: 1\nname: limits\ndefaults: { org: core, resources: { cpus: 1.5, memory: 2g, pids: 64 } }\njobs:\n  - { id: plain, task: t, qa: [{ run: go test ./... }], repos: [go-io] }\n  - { id: own, task: t, qa: [{ run: go test ./... }], repos: [go-io], resources: { memory: 512m, log: 1m, disk: 2g } }\n";
        let loaded = crate::spec::load_text(Path::new("pipelines/limits.yaml"), text.to_owned())
            .expect("the spec is valid");
        let plan = Arc::new(crate::plan::build(&loaded));
        let containers = |index: usize| {
            let unit = UnitRun::new(&loaded, &plan, index, Path::new("/state"));
            let owner = Owner {
                run_id: "r1",
                node: &unit.unit().nodes[2].id,
                attempt: 1,
            };
            let Qa::Steps(steps) = &unit.unit().qa else {
                panic!("the job names its QA steps");
            };
            let qa = qa(&unit, &owner, &steps[0], 0);
            let invocation =
                agents::invocation(&unit.agent, &loaded.spec.agents, &ArgvContext::new("main"))
                    .expect("codex is a preset");
            (qa, agent(&unit, &owner, Path::new("."), &invocation, 0))
        };

        let (qa, agent) = containers(0);
        assert_eq!(
            qa.resources,
            Resources {
                memory_bytes: Some(2 << 30),
                cpus: Some(1.5),
                pids: 64,
                log_bytes: 16 << 20,
                file_bytes: Some(20 << 30),
            },
            "a job without resources runs QA with defaults.resources"
        );
        assert_eq!(agent.resources, qa.resources);
        assert_eq!(qa.argv, ["sh", "-c", "go test ./..."]);

        let (qa, agent) = containers(1);
        assert_eq!(
            qa.resources,
            Resources {
                memory_bytes: Some(512 << 20),
                cpus: None,
                pids: 512,
                log_bytes: 1 << 20,
                file_bytes: Some(2 << 30),
            },
            "the job's own resources replace the defaults"
        );
        assert_eq!(agent.resources, qa.resources);
    }
}
