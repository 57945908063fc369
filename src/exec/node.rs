//! Node handlers: what prep, agent, qa, publish, review and merge nodes do.
//!
//! A handler owns nothing shared: it gets a [`NodeCtx`], does its work (git on the host,
//! containers through the runtime, PRs through the forge), records its transitions in the
//! journal, and returns a [`NodeResult`] that the dispatcher turns into state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{FileAction, NodeError, Step};
use super::outcome::Outcome;
use super::{cache, qa};
use crate::agents::{self, ArgvContext, Invocation};
use crate::forge::remote::PublishOptions;
use crate::forge::{Forge, ForgeError, PrRef, PrRequest};
use crate::git;
use crate::plan::{NodeKind, Plan, Qa, Unit};
use crate::prompt::PromptContext;
use crate::runtime::{
    mounted, Cancel, ContainerSpec, Exit, Mount, Resources, Runtime, LABEL_NODE, LABEL_RUN,
};
use crate::spec::model::{PromptHandoff, Resources as SpecResources};
use crate::spec::values::AgentRef;
use crate::spec::LoadedSpec;
use crate::state::{Journal, NodeChange};

/// Files an agent may leave that dispatch never commits.
pub const NEVER_COMMITTED: &[&str] = &["BLOCKED.md", "ANSWER.md"];

/// Lines of a log shown as the reason of a failure.
const TAIL_LINES: usize = 30;

/// Everything a unit's nodes share.
#[derive(Debug)]
pub struct UnitRun {
    /// The plan of the run (shared by all its units: a unit is never copied out of it).
    plan: Arc<Plan>,
    /// Index of the unit in the plan.
    index: usize,
    /// Index of the job in the spec.
    pub job: usize,
    /// The workspace directory.
    pub workspace: PathBuf,
    /// The agent reference.
    pub agent: AgentRef,
    /// The review agent reference.
    pub review: Option<AgentRef>,
}

impl UnitRun {
    /// The unit `index` of `plan` (a plan of `loaded`), with its workspace under `state_dir`.
    pub fn new(loaded: &LoadedSpec, plan: &Arc<Plan>, index: usize, state_dir: &Path) -> Self {
        let unit = &plan.units[index];
        let job = loaded.targets[unit.target].job;
        Self {
            plan: Arc::clone(plan),
            index,
            job,
            workspace: state_dir.join(&unit.workspace),
            agent: unit.agent.clone(),
            review: unit.review.clone(),
        }
    }

    /// The planned unit.
    pub fn unit(&self) -> &Unit {
        &self.plan.units[self.index]
    }

    /// The prompt context before the first agent run (built when a node needs it, so a run
    /// of 20,000 units holds none).
    pub fn context(&self, loaded: &LoadedSpec) -> PromptContext {
        crate::plan::unit_context(&loaded.spec, &loaded.targets[self.unit().target])
    }

    /// The clone.
    pub fn repo_dir(&self) -> PathBuf {
        self.workspace.join("repo")
    }

    /// Prompts, logs and results (containers reach it at `/workspace/.meta`).
    pub fn meta_dir(&self) -> PathBuf {
        self.workspace.join("meta")
    }

    /// A note dispatch keeps on the unit and must be able to trust (the commit the work
    /// started from, the base, the last QA failure): beside `repo/` and `meta/`, where no
    /// container reaches.
    pub fn note(&self, name: &str) -> PathBuf {
        self.workspace.join(name)
    }
}

/// The note of the commit a unit's work started from.
pub const START_NOTE: &str = "start.sha";
/// The note of a unit's base branch.
pub const BASE_NOTE: &str = "base";
/// The note of a unit's last QA failure (for a fix attempt of a resumed run).
pub const QA_FAILURE_NOTE: &str = "qa-failure.txt";

/// What a handler needs.
pub struct NodeCtx<R: Runtime, F: Forge> {
    /// The spec.
    pub loaded: Arc<LoadedSpec>,
    /// The unit.
    pub unit: Arc<UnitRun>,
    /// Node id.
    pub node: String,
    /// Node kind.
    pub kind: NodeKind,
    /// Attempt of this node (agent: 1 + fix attempts so far).
    pub attempt: u32,
    /// The previous QA failure output (fix attempts).
    pub qa_failure: Option<String>,
    /// The base branch as prep resolved it.
    pub base: Option<String>,
    /// Whether QA passed (for merge).
    pub qa_passed: bool,
    /// The PR publish opened (for review and merge).
    pub pr: Option<PrRef>,
    /// Container engine.
    pub runtime: Arc<R>,
    /// Forge.
    pub forge: Arc<F>,
    /// Journal.
    pub journal: Journal,
    /// Run id.
    pub run_id: String,
    /// Keep containers after they finish.
    pub keep_containers: bool,
    /// Turns true on the second Ctrl-C.
    pub cancel: Cancel,
    /// A container an earlier runner created for this node, to collect instead of starting a
    /// new one (`dispatch resume`).
    pub reattach: Option<String>,
    /// Containers the node ran, removed after its end is committed.
    pub containers: Containers,
    /// Where agent results are looked up (`None` with `--no-cache`).
    pub cache_dir: Option<PathBuf>,
    /// The state directory (agent results are stored under `cache/` in it).
    pub state_dir: PathBuf,
}

/// The containers a node ran (shared with the dispatcher's task that removes them).
#[derive(Clone, Debug, Default)]
pub struct Containers(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Containers {
    /// Records a container.
    pub fn push(&self, id: String) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(id);
    }

    /// Takes every recorded container.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// What a node reports back to the dispatcher.
#[derive(Debug)]
pub enum NodeResult {
    /// Finished; the unit goes on.
    Done {
        /// Base branch resolved by prep.
        base: Option<String>,
        /// PR opened or updated by publish.
        pr: Option<PrRef>,
        /// The unit's outcome so far (publish: changed, merge: merged).
        outcome: Option<Outcome>,
    },
    /// A decided end (no_changes, blocked, agent_failed, timed_out, cancelled, needs_review);
    /// never infra_error. The unit ends here; its remaining nodes are skipped.
    Stop {
        /// The outcome.
        outcome: Outcome,
        /// Why, for people.
        reason: String,
        /// Exit code of the container, if one ran.
        exit_code: Option<i64>,
    },
    /// A QA step failed: the dispatcher decides whether a fix attempt follows.
    QaFailed {
        /// The failing step.
        step: String,
        /// The tail of its output.
        tail: String,
    },
    /// The node failed with an error; the dispatcher asks [`NodeError::verdict`] for the
    /// outcome and whether to retry.
    Failed(NodeError),
}

fn stop(outcome: Outcome, reason: impl Into<String>) -> NodeResult {
    NodeResult::Stop {
        outcome,
        reason: reason.into(),
        exit_code: None,
    }
}

fn done() -> NodeResult {
    NodeResult::Done {
        base: None,
        pr: None,
        outcome: None,
    }
}

/// What runs a node. [`Handlers`] is the real one; benchmarks put a stand-in here to measure
/// the dispatcher alone.
pub trait NodeRunner<R: Runtime, F: Forge>: Send + Sync + 'static {
    /// Runs the node to its end.
    fn run(&self, ctx: NodeCtx<R, F>) -> impl std::future::Future<Output = NodeResult> + Send;
}

/// The real node handlers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Handlers;

impl<R: Runtime, F: Forge> NodeRunner<R, F> for Handlers {
    fn run(&self, ctx: NodeCtx<R, F>) -> impl std::future::Future<Output = NodeResult> + Send {
        run_node(ctx)
    }
}

/// Runs one node.
pub async fn run_node<R: Runtime, F: Forge>(ctx: NodeCtx<R, F>) -> NodeResult {
    let meta = ctx.unit.meta_dir();
    if let Err(error) = tokio::fs::create_dir_all(&meta).await {
        return NodeResult::Failed(Step::Workspace.io(FileAction::Create, &meta)(error));
    }
    match ctx.kind {
        NodeKind::Prep => prep(&ctx).await,
        NodeKind::Agent => agent(&ctx).await,
        NodeKind::Qa => qa_node(&ctx).await,
        NodeKind::Publish => publish(&ctx).await,
        NodeKind::Review => review(&ctx).await,
        NodeKind::Merge => merge(&ctx).await,
    }
}

async fn prep<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let unit = ctx.unit.unit();
    let repo = ctx.unit.repo_dir();
    let result: Result<String, NodeError> = async {
        if repo.join(".git").exists() {
            // An unfinished unit: continue it, keep its branch.
            git::git(&repo, &["fetch", "--quiet", "--prune", "origin"])
                .await
                .map_err(Step::Prep.git())?;
        } else {
            let source = match &unit.url {
                Some(url) if is_local_path(url) => {
                    let dir = ctx.loaded.path.parent().unwrap_or(Path::new("."));
                    git::path_arg(&dir.join(url))
                }
                Some(url) => url.clone(),
                None => ctx
                    .forge
                    .clone_source(&unit.org, &unit.repo)
                    .map_err(Step::Prep.forge())?,
            };
            // Cloned beside and renamed into place: a clone cut short by a crash is never
            // taken for an unfinished unit's workspace.
            let partial = ctx.unit.workspace.join("repo.partial");
            let _ = tokio::fs::remove_dir_all(&partial).await;
            let _ = tokio::fs::remove_dir_all(&repo).await;
            git::clone(&source, &partial)
                .await
                .map_err(Step::Prep.git())?;
            tokio::fs::rename(&partial, &repo)
                .await
                .map_err(Step::Prep.io(FileAction::MoveClone, &repo))?;
        }
        // One look at every ref: the default branch, the unit's branch, its start.
        let refs = git::refs(&repo).await.map_err(Step::Prep.git())?;
        let base = match (&unit.base, refs.default_branch()) {
            (Some(base), _) => base.clone(),
            (None, Some(default)) => default.to_owned(),
            (None, None) => git::default_branch(&repo).await.map_err(Step::Prep.git())?,
        };
        let start_file = ctx.unit.note(START_NOTE);
        let has_branch = refs
            .commit(&format!("refs/heads/{}", unit.branch))
            .is_some();
        let kept = match tokio::fs::read_to_string(&start_file).await {
            Ok(sha) if has_branch => Some(sha.trim().to_owned()),
            _ => None,
        };
        let start_sha = match kept {
            // An unfinished unit: its branch and its starting commit stay.
            Some(sha) => {
                git::git(&repo, &["checkout", "--quiet", &unit.branch])
                    .await
                    .map_err(Step::Prep.git())?;
                sha
            }
            None => {
                let sha = start_point(&repo, &refs, unit, &base).await?;
                git::git(&repo, &["checkout", "--quiet", "-B", &unit.branch, &sha])
                    .await
                    .map_err(Step::Prep.git())?;
                sha
            }
        };
        // The commit the work starts from: what "changed", the cache and leases compare with.
        write_file(Step::Prep, &start_file, &format!("{start_sha}\n")).await?;
        write_file(Step::Prep, &ctx.unit.note(BASE_NOTE), &format!("{base}\n")).await?;
        write_prompt(ctx, Step::Prep, Some(&base), 1, None).await?;
        Ok(base)
    }
    .await;
    match result {
        Ok(base) => NodeResult::Done {
            base: Some(base),
            pr: None,
            outcome: None,
        },
        Err(error) => NodeResult::Failed(error),
    }
}

/// The commit a unit's work starts from: the head of its existing branch, the head of its PR,
/// its tag, or its base branch.
async fn start_point(
    repo: &Path,
    refs: &git::Refs,
    unit: &Unit,
    base: &str,
) -> Result<String, NodeError> {
    let (start, missing) = if unit.existing_branch {
        (
            format!("refs/remotes/origin/{}", unit.branch),
            format!("branch `{}`", unit.branch),
        )
    } else if let Some(pr) = unit.pr {
        let local = format!("refs/dispatch/pull/{pr}");
        git::git(
            repo,
            &[
                "fetch",
                "--quiet",
                "origin",
                &format!("+refs/pull/{pr}/head:{local}"),
            ],
        )
        .await
        .map_err(|source| NodeError::MissingPrHead {
            step: Step::Prep,
            pr,
            org: unit.org.clone(),
            repo: unit.repo.clone(),
            source,
        })?;
        (local, format!("pull request #{pr}"))
    } else if let Some(tag) = &unit.tag {
        (format!("refs/tags/{tag}"), format!("tag `{tag}`"))
    } else {
        (
            format!("refs/remotes/origin/{base}"),
            format!("base `{base}`"),
        )
    };
    let found = match refs.commit(&start) {
        Some(sha) => Ok(sha.to_owned()),
        // Fetched just now (a PR's head) or otherwise not among the refs read before.
        None => git::rev_parse(repo, &start).await,
    };
    found.map_err(|_| NodeError::MissingStart {
        step: Step::Prep,
        what: missing,
        org: unit.org.clone(),
        repo: unit.repo.clone(),
    })
}

fn is_local_path(url: &str) -> bool {
    !url.contains("://") && !url.contains('@')
}

async fn write_file(step: Step, path: &Path, text: &str) -> Result<(), NodeError> {
    mounted::write(path, text.as_bytes())
        .await
        .map_err(step.io(FileAction::Write, path))
}

/// Renders the prompt of an agent run into `meta/prompt.md` and returns it.
async fn write_prompt<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    step: Step,
    base: Option<&str>,
    attempt: u32,
    qa_failure: Option<String>,
) -> Result<String, NodeError> {
    let mut context = ctx.unit.context(&ctx.loaded);
    context.base = base.map(str::to_owned).or(context.base);
    context.attempt = attempt;
    context.qa_failure = qa_failure;
    let parts = crate::spec::validate::prompt_parts(&ctx.loaded.spec, ctx.unit.job);
    let mut prompt = ctx
        .loaded
        .templates
        .prompt(parts, &context)
        .map_err(step.clone().template())?;
    // A blocked unit that was answered (`dispatch answer`): the original prompt, then the
    // agent's question and the answer.
    let meta = ctx.unit.meta_dir();
    if let (Ok(question), Ok(answer)) = (
        mounted::read_to_string(&meta.join("BLOCKED.md")).await,
        mounted::read_to_string(&meta.join("answer.md")).await,
    ) {
        prompt.push_str(&format!(
            "\n\n## Your question\n\nEarlier you stopped and asked (BLOCKED.md):\n\n{}\n\n## The answer\n\n{}\n\nThe answer is also in ANSWER.md at the repository root. Go on with the task.\n",
            question.trim(),
            answer.trim()
        ));
    }
    write_file(step, &meta.join("prompt.md"), &prompt).await?;
    Ok(prompt)
}

/// The invoking user, `uid:gid`.
fn user() -> String {
    // SAFETY: getuid and getgid cannot fail and have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    format!("{uid}:{gid}")
}

/// Image of a unit: the agent's own, the job's, else `DISPATCH_IMAGE` or `core-dev`.
fn unit_image(ctx_unit: &Unit) -> String {
    if !ctx_unit.image_from_spec {
        if let Ok(image) = std::env::var("DISPATCH_IMAGE") {
            if !image.is_empty() {
                return image;
            }
        }
    }
    ctx_unit.image.clone()
}

fn resources(spec: Option<&SpecResources>) -> Resources {
    let mut r = Resources::default();
    if let Some(spec) = spec {
        r.memory_bytes = spec.memory.map(|m| m.bytes());
        r.cpus = spec.cpus;
        if let Some(pids) = spec.pids {
            r.pids = i64::from(pids);
        }
    }
    r
}

fn container_name(run: &str, node: &str, attempt: u32, step: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("dispatch-{run}-{hash:016x}-{attempt}-{step}")
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
        },
        Mount {
            source: unit.repo_dir().join(".git"),
            target: format!("{}/.git", agents::WORKDIR),
            read_only: true,
        },
        Mount {
            source: unit.meta_dir(),
            target: agents::META_DIR.to_owned(),
            read_only: false,
        },
    ]
}

/// Runs one container to its end: create (recorded in the journal first), run, remove.
async fn run_container<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    step: Step,
    spec: ContainerSpec,
    stdin: Option<Vec<u8>>,
    log: &Path,
    timeout: Duration,
) -> Result<Exit, NodeError> {
    let id = ctx
        .runtime
        .create(&spec)
        .await
        .map_err(step.clone().runtime())?;
    if let Err(error) = ctx
        .journal
        .node(
            &ctx.run_id,
            &ctx.node,
            NodeChange::Container { id: id.clone() },
        )
        .await
    {
        let _ = ctx.runtime.remove(&id).await;
        return Err(NodeError::State {
            step,
            source: error,
        });
    }
    let exit = ctx
        .runtime
        .run(&id, stdin, log, timeout, ctx.cancel.clone())
        .await;
    // Removed by the dispatcher once the node's end is committed: a runner killed before
    // that leaves the container for `dispatch resume` to collect.
    ctx.containers.push(id);
    exit.map_err(step.runtime())
}

fn labels(ctx_run: &str, node: &str) -> std::collections::BTreeMap<String, String> {
    [
        (LABEL_RUN.to_owned(), ctx_run.to_owned()),
        (LABEL_NODE.to_owned(), node.to_owned()),
    ]
    .into_iter()
    .collect()
}

fn agent_container<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    invocation: &Invocation,
    step: usize,
) -> ContainerSpec {
    let spec_dir = ctx
        .loaded
        .path
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut mounts = base_mounts(&ctx.unit);
    mounts.push(Mount {
        source: ctx.unit.meta_dir().join("prompt.md"),
        target: agents::PROMPT_FILE.to_owned(),
        read_only: true,
    });
    for config in &invocation.config_mounts {
        let mut host = config.host_path(&home);
        if host.is_relative() {
            host = spec_dir.join(host);
            host = std::path::absolute(&host).unwrap_or(host);
        }
        if host.exists() {
            mounts.push(Mount {
                source: host,
                target: config.target.clone(),
                read_only: config.read_only,
            });
        }
    }
    let mut env: Vec<(String, String)> = invocation.fixed_env.clone();
    for name in &invocation.env_names {
        if let Ok(value) = std::env::var(name) {
            env.push((name.clone(), value));
        }
    }
    ContainerSpec {
        name: container_name(&ctx.run_id, &ctx.node, ctx.attempt, step),
        image: invocation
            .image
            .clone()
            .unwrap_or_else(|| unit_image(ctx.unit.unit())),
        argv: invocation.argv.clone(),
        env,
        workdir: invocation.workdir.clone(),
        mounts,
        user: Some(user()),
        network: invocation.network.clone(),
        labels: labels(&ctx.run_id, &ctx.node),
        stdin: invocation.prompt == PromptHandoff::Stdin,
        resources: resources(ctx.unit.unit().resources.as_ref()),
        extra_hosts: invocation.extra_hosts.clone(),
    }
}

async fn tail(path: &Path, from: u64) -> String {
    // Enough bytes for the last lines of any sane log, however long the log is.
    let bytes = mounted::read_tail(path, from, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Runs an agent container with the unit's prompt; returns how it exited.
async fn run_agent<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    agent: &AgentRef,
    prompt: String,
    log: &Path,
) -> Result<Exit, NodeError> {
    let step = || Step::Agent(agent.clone());
    let base = ctx
        .base
        .as_deref()
        .ok_or_else(|| NodeError::MissingBase { step: step() })?;
    let invocation = agents::invocation(agent, &ctx.loaded.spec.agents, &ArgvContext::new(base))
        .map_err(|message| NodeError::Config {
            step: step(),
            message,
        })?;
    let container = agent_container(ctx, &invocation, 0);
    let stdin = container.stdin.then(|| prompt.into_bytes());
    let timeout = ctx.unit.unit().timeout.get();
    if let Some(id) = &ctx.reattach {
        match ctx
            .runtime
            .reattach(id, log, timeout, ctx.cancel.clone())
            .await
        {
            Ok(Some(exit)) => {
                ctx.containers.push(id.clone());
                return Ok(exit);
            }
            // Never started (or gone): start the agent afresh.
            Ok(None) => {
                let _ = ctx.runtime.remove(id).await;
            }
            Err(error) => return Err(Step::Reattach(id.clone()).runtime()(error)),
        }
    }
    run_container(ctx, Step::Container, container, stdin, log, timeout).await
}

async fn agent<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let repo = ctx.unit.repo_dir();
    let meta = ctx.unit.meta_dir();
    // A re-attached agent already has its prompt; rewriting it could change what it reads.
    let prompt = if ctx.reattach.is_some() {
        mounted::read_to_string(&meta.join("prompt.md"))
            .await
            .unwrap_or_default()
    } else {
        match write_prompt(
            ctx,
            Step::Prompt,
            ctx.base.as_deref(),
            ctx.attempt,
            ctx.qa_failure.clone(),
        )
        .await
        {
            Ok(prompt) => prompt,
            Err(error) => return NodeResult::Failed(error),
        }
    };
    let log = meta.join("agent.log");
    let from = if ctx.reattach.is_some() {
        0
    } else {
        log_len(&log)
    };
    let key = if ctx.reattach.is_some() {
        None
    } else {
        cache_key(ctx, &prompt).await
    };
    if let (Some(key), Some(dir)) = (&key, &ctx.cache_dir) {
        if let Some(cached) = cache::lookup(dir, key).await {
            return match cache::apply(&repo, &cached).await {
                Ok(()) => {
                    let (run, node, key) = (ctx.run_id.clone(), ctx.node.clone(), key.clone());
                    ctx.journal.submit(move |t| {
                        t.prepare_cached("INSERT INTO events (run_id, at_ms, node_id, kind, detail) VALUES (?1, ?2, ?3, 'cache', ?4)")?
                            .execute(rusqlite::params![run, crate::state::now_ms(), node, key])?;
                        Ok(())
                    });
                    match cached {
                        cache::Cached::Changed(_) => NodeResult::Done {
                            base: None,
                            pr: None,
                            outcome: Some(Outcome::Changed),
                        },
                        cache::Cached::NoChanges => stop(
                            Outcome::NoChanges,
                            "the agent changed nothing (result from the cache)",
                        ),
                    }
                }
                Err(error) => NodeResult::Failed(Step::CacheApply.git()(error)),
            };
        }
    }
    // The issue's stopwatch (Forgejo/Gitea) runs while the agent does, whatever its end.
    stopwatch(ctx, true).await;
    let exit = run_agent(ctx, &ctx.unit.agent, prompt, &log).await;
    stopwatch(ctx, false).await;
    let exit = match exit {
        Ok(exit) => exit,
        Err(error) => return NodeResult::Failed(error),
    };
    match exit {
        Exit::TimedOut => {
            return stop(
                Outcome::TimedOut,
                format!("agent ran past its timeout of {}", ctx.unit.unit().timeout),
            )
        }
        Exit::Cancelled => return stop(Outcome::Cancelled, "agent stopped by Ctrl-C"),
        Exit::Code(code) if code != 0 => {
            return NodeResult::Stop {
                outcome: Outcome::AgentFailed,
                reason: format!(
                    "agent exited with code {code}; last lines of {}:\n{}",
                    log.display(),
                    tail(&log, from).await
                ),
                exit_code: Some(code),
            }
        }
        Exit::Code(_) => {}
    }
    let blocked = repo.join("BLOCKED.md");
    if let Ok(question) = mounted::read_to_string(&blocked).await {
        if !question.trim().is_empty() {
            let _ = tokio::fs::rename(&blocked, meta.join("BLOCKED.md")).await;
            return stop(Outcome::Blocked, question.trim().to_owned());
        }
        let _ = tokio::fs::remove_file(&blocked).await;
    }
    // Whether the branch holds work since its start (which it returns): committed here, or
    // by the agent.
    let committed: Result<(String, bool), NodeError> = async {
        let start = start_commit(ctx, Step::Commit).await?;
        let status = git::status(&repo, NEVER_COMMITTED)
            .await
            .map_err(Step::Commit.git())?;
        if !status.changed.is_empty() {
            git::commit_all(&repo, &commit_message(ctx), NEVER_COMMITTED)
                .await
                .map_err(Step::Commit.git())?;
            return Ok((start, true));
        }
        if status.head == start {
            return Ok((start, false));
        }
        let ahead = git::commits_ahead(&repo, &start)
            .await
            .map_err(Step::Commit.git())?;
        Ok((start, ahead > 0))
    }
    .await;
    if let (Ok((start, changed)), Some(key)) = (&committed, &key) {
        if let Err(error) =
            cache::store(&cache::dir(&ctx.state_dir), key, &repo, start, *changed).await
        {
            tracing::warn!(node = %ctx.node, %error, "cannot store the agent's result in the cache");
        }
    }
    match committed {
        Ok((_, false)) => stop(Outcome::NoChanges, "the agent changed nothing"),
        Ok((_, true)) => NodeResult::Done {
            base: None,
            pr: None,
            outcome: Some(Outcome::Changed),
        },
        Err(error) => NodeResult::Failed(error),
    }
}

/// The cache key of this agent run: the prompt, the argv, the image id and the base commit.
/// `None` when one of them cannot be known (then the cache is not used).
async fn cache_key<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>, prompt: &str) -> Option<String> {
    let base = ctx.base.clone()?;
    let invocation = agents::invocation(
        &ctx.unit.agent,
        &ctx.loaded.spec.agents,
        &ArgvContext::new(&base),
    )
    .ok()?;
    let image = agent_container(ctx, &invocation, 0).image;
    let image_id = ctx.runtime.image_id(&image).await.ok()??;
    let start = start_commit(ctx, Step::Commit).await.ok()?;
    Some(cache::key(prompt, &invocation.argv, &image_id, &start))
}

/// The commit the unit's work started from, as prep noted it.
async fn start_commit<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    step: Step,
) -> Result<String, NodeError> {
    let note = ctx.unit.note(START_NOTE);
    tokio::fs::read_to_string(&note)
        .await
        .map(|sha| sha.trim().to_owned())
        .map_err(step.io(FileAction::ReadStart, &note))
}

/// Starts or stops the stopwatch of the unit's issue; a forge that refuses is logged, never a
/// reason for the unit to fail.
async fn stopwatch<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>, running: bool) {
    let unit = ctx.unit.unit();
    if let Some(issue) = unit.issue {
        if let Err(error) = ctx
            .forge
            .stopwatch(&unit.org, &unit.repo, issue, running)
            .await
        {
            tracing::warn!(node = %ctx.node, %error, "the issue's stopwatch did not {}", if running { "start" } else { "stop" });
        }
    }
}

/// A conventional commit message: the PR title when it already is one, else `chore: TASK`.
fn commit_message<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> String {
    let job = &ctx.loaded.spec.jobs[ctx.unit.job];
    let title = pr_title(ctx).unwrap_or_else(|_| job.task.clone());
    let conventional = title.split_once(':').is_some_and(|(kind, _)| {
        !kind.is_empty()
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || matches!(c, '(' | ')' | '-' | '!'))
    });
    let first_line = title.lines().next().unwrap_or("").to_owned();
    if conventional {
        first_line
    } else {
        format!("chore: {first_line}")
    }
}

fn pr_context<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> PromptContext {
    let mut context = ctx.unit.context(&ctx.loaded);
    context.base = ctx.base.clone().or(context.base);
    context
}

fn pr_title<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> Result<String, String> {
    crate::plan::pr_title(&ctx.loaded, ctx.unit.job, &pr_context(ctx))
}

async fn qa_node<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let repo = ctx.unit.repo_dir();
    let steps = match &ctx.unit.unit().qa {
        Qa::Steps(steps) => steps.clone(),
        Qa::Auto => qa::detect(&repo, &ctx.unit.unit().image),
        Qa::None => Vec::new(),
    };
    let log = ctx.unit.meta_dir().join("qa.log");
    for (i, step) in steps.iter().enumerate() {
        let timeout = step.timeout.get();
        let container = ContainerSpec {
            name: container_name(&ctx.run_id, &ctx.node, ctx.attempt, i + 1),
            image: qa_image(ctx, &step.image),
            argv: vec!["sh".to_owned(), "-c".to_owned(), step.run.clone()],
            env: Vec::new(),
            workdir: agents::WORKDIR.to_owned(),
            mounts: base_mounts(&ctx.unit),
            user: Some(user()),
            network: step.network.clone(),
            labels: labels(&ctx.run_id, &ctx.node),
            stdin: false,
            resources: resources(ctx.loaded.spec.jobs[ctx.unit.job].resources.as_ref()),
            extra_hosts: Vec::new(),
        };
        let from = log_len(&log);
        let run_step = Step::QaStep(step.run.clone());
        match run_container(ctx, run_step, container, None, &log, timeout).await {
            Ok(Exit::Code(0)) => {}
            Ok(Exit::Code(code)) => {
                let step = format!("`{}` exited with code {code}", step.run);
                let tail = tail(&log, from).await;
                // Kept for a fix attempt that a resumed run starts afresh.
                let note = ctx.unit.note(QA_FAILURE_NOTE);
                let _ = write_file(Step::Workspace, &note, &format!("{step}\n{tail}")).await;
                return NodeResult::QaFailed { step, tail };
            }
            Ok(Exit::TimedOut) => {
                return stop(
                    Outcome::TimedOut,
                    format!("QA step `{}` ran past {}", step.run, step.timeout),
                )
            }
            Ok(Exit::Cancelled) => return stop(Outcome::Cancelled, "QA stopped by Ctrl-C"),
            Err(error) => return NodeResult::Failed(error),
        }
    }
    done()
}

/// The QA image: the step's own when the spec set one, else the unit's (which follows
/// `DISPATCH_IMAGE` when the spec names no image).
fn qa_image<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>, step_image: &str) -> String {
    if step_image != ctx.unit.unit().image {
        step_image.to_owned()
    } else {
        unit_image(ctx.unit.unit())
    }
}

async fn pr_request<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> Result<PrRequest, NodeError> {
    let unit = ctx.unit.unit();
    let body = crate::plan::pr_body(&ctx.loaded, ctx.unit.job, &pr_context(ctx))
        .map_err(Step::PrText.template())?;
    Ok(PrRequest {
        org: unit.org.clone(),
        repo: unit.repo.clone(),
        branch: unit.branch.clone(),
        base: ctx
            .base
            .clone()
            .ok_or(NodeError::MissingBase { step: Step::PrText })?,
        title: pr_title(ctx).map_err(Step::PrText.template())?,
        body,
        run_id: ctx.run_id.clone(),
        unit_id: unit.id.clone(),
        lease: match unit.existing_branch {
            true => Some(start_commit(ctx, Step::PrText).await?),
            false => None,
        },
    })
}

/// What publish does beyond title and body: the job's `pr` settings and the unit's issue.
fn publish_options<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> PublishOptions {
    let job = &ctx.loaded.spec.jobs[ctx.unit.job];
    PublishOptions {
        issue: ctx.unit.unit().issue,
        labels: job.pr.labels.clone(),
        label_colours: job
            .pr
            .label_colours
            .iter()
            .map(|(name, colour)| (name.clone(), colour.to_string()))
            .collect(),
        draft: job.pr.draft,
        reviewers: job.pr.reviewers.clone(),
    }
}

async fn publish<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let request = match pr_request(ctx).await {
        Ok(request) => request,
        Err(error) => return NodeResult::Failed(error),
    };
    match ctx
        .forge
        .publish_with(&ctx.unit.repo_dir(), &request, &publish_options(ctx))
        .await
    {
        Ok(pr) => NodeResult::Done {
            base: None,
            pr: Some(pr),
            outcome: Some(Outcome::Changed),
        },
        Err(error) => NodeResult::Failed(Step::Publish.forge()(error)),
    }
}

async fn review<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let Some(agent) = ctx.unit.review.clone() else {
        return done();
    };
    let job = &ctx.loaded.spec.jobs[ctx.unit.job];
    let template = job
        .review
        .as_ref()
        .and_then(|r| r.template.as_deref())
        .unwrap_or("review");
    let prompt = match ctx.loaded.templates.render(template, &pr_context(ctx)) {
        Ok(prompt) => prompt,
        Err(error) => return NodeResult::Failed(Step::ReviewPrompt.template()(error)),
    };
    let file = ctx.unit.meta_dir().join("prompt.md");
    if let Err(error) = write_file(Step::ReviewPromptFile, &file, &prompt).await {
        return NodeResult::Failed(error);
    }
    let log = ctx.unit.meta_dir().join("review.log");
    match run_agent(ctx, &agent, prompt, &log).await {
        Ok(Exit::Code(0)) => done(),
        Ok(Exit::Code(code)) => stop(
            Outcome::NeedsReview,
            format!(
                "the review agent exited with code {code}; see {}",
                log.display()
            ),
        ),
        Ok(Exit::TimedOut) => stop(
            Outcome::NeedsReview,
            "the review agent ran past its timeout",
        ),
        Ok(Exit::Cancelled) => stop(Outcome::Cancelled, "review stopped by Ctrl-C"),
        Err(error) => NodeResult::Failed(error),
    }
}

async fn merge<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    if !ctx.qa_passed {
        return stop(
            Outcome::NeedsReview,
            "merge policy when_green: QA did not run green, so the PR waits for a person",
        );
    }
    let Some(pr) = ctx.pr.clone() else {
        return NodeResult::Failed(NodeError::MissingPr);
    };
    let request = match pr_request(ctx).await {
        Ok(request) => request,
        Err(error) => return NodeResult::Failed(error),
    };
    let scratch = ctx.unit.workspace.join("merge");
    let review = match ctx.forge.merge(&pr, &request, &scratch).await {
        Ok(()) => None,
        // On a conflict: rebase once onto the base, QA again, push with a lease, merge again.
        Err(ForgeError::Conflict(_)) => match rebase_onto_base(ctx, &request).await {
            Ok(rebased) => match ctx.forge.merge(&pr, &rebased, &scratch).await {
                Ok(()) => None,
                Err(e) if e.needs_review() => Some(format!(
                    "rebased onto `{}` and pushed, still not mergeable: {e}",
                    request.base
                )),
                Err(error) => return NodeResult::Failed(Step::Merge.forge()(error)),
            },
            Err(Rebase::NeedsReview(reason)) => Some(reason),
            Err(Rebase::Stopped(result)) => return result,
        },
        Err(e) if e.needs_review() => Some(e.to_string()),
        Err(error) => return NodeResult::Failed(Step::Merge.forge()(error)),
    };
    let Some(reason) = review else {
        return NodeResult::Done {
            base: None,
            pr: Some(pr),
            outcome: Some(Outcome::Merged),
        };
    };
    if let Err(error) = ctx.forge.flag_for_review(&request, &pr, &reason).await {
        tracing::warn!(node = %ctx.node, %error, "cannot label the PR {}", crate::forge::NEEDS_REVIEW);
    }
    stop(
        Outcome::NeedsReview,
        format!("the PR waits for a person: {reason}"),
    )
}

/// Why a rebase did not lead to a push.
enum Rebase {
    /// A person must look (conflicts, QA red after the rebase, a moved branch).
    NeedsReview(String),
    /// QA stopped the unit (timed out, cancelled, failed).
    Stopped(NodeResult),
}

/// Rebases the unit's branch once onto the forge's current base, runs QA again and pushes
/// with a lease on the head that was published. Returns the request to merge with.
async fn rebase_onto_base<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    request: &PrRequest,
) -> Result<PrRequest, Rebase> {
    let repo = ctx.unit.repo_dir();
    let review = |reason: String| Rebase::NeedsReview(reason);
    let infra = |error| Rebase::Stopped(NodeResult::Failed(Step::Rebase.git()(error)));
    let published = git::rev_parse(&repo, "HEAD").await.map_err(infra)?;
    git::git(&repo, &["fetch", "--quiet", "origin", &request.base])
        .await
        .map_err(infra)?;
    if git::git(&repo, &["rebase", "--quiet", "FETCH_HEAD"])
        .await
        .is_err()
    {
        let conflicts = git::git(&repo, &["diff", "--name-only", "--diff-filter=U"])
            .await
            .unwrap_or_default();
        let _ = git::git(&repo, &["rebase", "--abort"]).await;
        return Err(review(format!(
            "it conflicts with `{}` and a rebase cannot resolve it (in {})",
            request.base,
            conflicts.lines().collect::<Vec<_>>().join(", ")
        )));
    }
    let restore = || async {
        let _ = git::git(&repo, &["reset", "--quiet", "--hard", &published]).await;
    };
    if !matches!(ctx.unit.unit().qa, Qa::None) {
        match qa_node(ctx).await {
            NodeResult::Done { .. } => {}
            NodeResult::QaFailed { step, .. } => {
                restore().await;
                return Err(review(format!(
                    "rebased onto `{}`, QA failed: {step}",
                    request.base
                )));
            }
            other => {
                restore().await;
                return Err(Rebase::Stopped(other));
            }
        }
    }
    let rebased = PrRequest {
        lease: Some(published.clone()),
        ..request.clone()
    };
    match ctx
        .forge
        .publish_with(&repo, &rebased, &publish_options(ctx))
        .await
    {
        Ok(_) => Ok(rebased),
        Err(e) => {
            restore().await;
            Err(review(format!(
                "rebased onto `{}`, the push failed: {e}",
                request.base
            )))
        }
    }
}
