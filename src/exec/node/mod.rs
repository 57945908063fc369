//! Node handlers: what prep, agent, qa, publish, review and merge nodes do.
//!
//! One file per kind of node ([`prep`], [`agent`], [`qa`], [`publish`], [`review`],
//! [`merge`]); [`container`] alone builds the configs of the containers they run (agent,
//! review and QA) and runs them. This module holds what they share: the [`NodeCtx`] a
//! handler gets, the [`NodeResult`] it returns, the unit's [`UnitRun`] and its notes.
//!
//! A handler owns nothing shared: it gets a [`NodeCtx`], does its work (git on the host,
//! containers through the runtime, PRs through the forge) and returns a [`NodeResult`]; the
//! dispatcher alone turns that into state. A handler decides the ends it can name (`Done`,
//! `Stop` with `no_changes`, `blocked`, `agent_failed`, `timed_out`, `cancelled` or
//! `needs_review`, `QaFailed`); every failure is `Failed` with a typed
//! [`NodeError`](super::error::NodeError), never flattened into a reason, so that
//! [`NodeError::verdict`](super::error::NodeError::verdict) decides outcome and retry in one
//! place.
//!
//! Invariants:
//! - a container's id is in the journal before the container starts
//!   ([`container::run`]), so a runner killed meanwhile leaves it for `dispatch resume` to find
//!   and re-attach;
//! - a handler never removes its containers: it hands them over in [`NodeCtx::containers`]
//!   and the dispatcher removes them only after the node's end is committed;
//! - what dispatch must trust about a unit (where its work started, its base, the last QA
//!   failure) is kept in notes beside `repo/` and `meta/`, where no container reaches;
//! - a unit's workspace is used by one unit at a time: its first node that runs takes the
//!   workspace's lock (`<state>/locks/workspaces/...`), held until the unit finishes;
//! - the plan's unit is read, never copied: a handler takes typed values from it (agent,
//!   timeouts, resources, image) and falls back to nothing of its own.

mod agent;
mod container;
mod merge;
mod meter;
mod prep;
mod publish;
pub mod qa;
mod review;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{FileAction, NodeError, Step};
use crate::forge::{Forge, PrRef};
use crate::plan::{Plan, Unit};
use crate::prompt::PromptContext;
use crate::runtime::{mounted, Cancel, Runtime};
use crate::spec::model::OnNoChanges;
use crate::spec::values::AgentRef;
use crate::spec::LoadedSpec;
use crate::state::lock::{self, Busy, Holder, Lock};
use crate::state::views::PublishedPr;
use crate::state::Journal;
use crate::vocab::NodeKind;
use crate::vocab::Outcome;
use crate::vocab::PrOrigin;

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
    /// The workspace's lock, once a node of the unit took it ([`hold_workspace`]); released
    /// when the unit finishes ([`UnitRun::release_workspace`]).
    workspace_lock: std::sync::Mutex<Option<Lock>>,
    /// The PR the journal's runs published for the unit, as the run found it when it began.
    pub published: Option<PublishedPr>,
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
            workspace_lock: std::sync::Mutex::new(None),
            published: None,
        }
    }

    /// The PR of an earlier run that publish withdraws (closes, and deletes its branch) when
    /// the agent changes nothing: the job publishes with `pr.on_no_changes: close`, the unit
    /// works on a branch of its own (never one that existed before it), and the journal says
    /// dispatch opened the PR and its latest publish left it open. `None`: nothing to do, and
    /// publish does not run for a unit whose agent changed nothing.
    pub fn withdraws(&self, loaded: &LoadedSpec) -> Option<&PublishedPr> {
        let unit = self.unit();
        let job = &loaded.spec.jobs[self.job];
        let publishes = unit.nodes.iter().any(|n| n.kind == NodeKind::Publish);
        let closes = job.pr.on_no_changes == OnNoChanges::Close;
        self.published
            .as_ref()
            .filter(|p| p.open && p.origin == Some(PrOrigin::Opened))
            .filter(|_| publishes && closes && !unit.existing_branch)
    }

    /// Takes the workspace's lock at `path` for run `run` unless the unit holds it already,
    /// or says who holds it. Blocking (a file is opened and written): see [`hold_workspace`].
    fn take_workspace(&self, path: &Path, run: &str) -> std::io::Result<Result<(), Busy>> {
        let mut held = self
            .workspace_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.is_none() {
            match Lock::take(path, &Holder::me(run))? {
                Ok(lock) => *held = Some(lock),
                Err(busy) => return Ok(Err(busy)),
            }
        }
        Ok(Ok(()))
    }

    /// Releases the workspace's lock: the unit finished, none of its nodes uses it any more.
    pub fn release_workspace(&self) {
        self.workspace_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
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

    /// The home of the unit's agents of pool `pool` (`<workspace>/home/<pool>`), mounted
    /// writable at `/home/agent`: a CLI keeps its state and sessions there across fix attempts
    /// and answers. Prep empties `<workspace>/home` when the unit starts in a run.
    pub fn agent_home(&self, pool: &str) -> PathBuf {
        self.workspace.join(AGENT_HOMES).join(pool)
    }

    /// A note dispatch keeps on the unit and must be able to trust (the commit the work
    /// started from, the base, the last QA failure): beside `repo/` and `meta/`, where no
    /// container reaches.
    pub fn note(&self, name: &str) -> PathBuf {
        self.workspace.join(name)
    }
}

/// The directory of a unit's agent homes, beside `repo/` and `meta/`.
pub const AGENT_HOMES: &str = "home";

/// The note of the commit a unit's work started from.
pub const START_NOTE: &str = "start.sha";
/// The note of the run that noted [`START_NOTE`] (a later run starts the unit over).
pub const START_RUN_NOTE: &str = "start.run";
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
    /// Why the agent changed nothing, when it did not and publish withdraws the PR of an
    /// earlier run instead ([`UnitRun::withdraws`]).
    pub no_changes: Option<String>,
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
    /// What its agent containers reported.
    pub reports: Reports,
    /// The agent's session of an earlier run of this node in the run, to continue.
    pub session: Option<Session>,
    /// What the unit's agents may still spend, when a budget caps the unit.
    pub budget: Option<crate::exec::budget::Allowance>,
    /// Where agent results are looked up (`None` with `--no-cache`).
    pub cache_dir: Option<PathBuf>,
    /// The state directory (agent results are stored under `cache/` in it).
    pub state_dir: PathBuf,
}

/// What a node's handler hands over to the dispatcher besides its result, as it goes (shared
/// with the dispatcher's task that takes it when the handler returns).
#[derive(Debug)]
pub struct Collected<T>(std::sync::Arc<std::sync::Mutex<Vec<T>>>);

impl<T> Default for Collected<T> {
    fn default() -> Self {
        Self(std::sync::Arc::default())
    }
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Collected<T> {
    /// Records one.
    pub fn push(&self, item: T) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(item);
    }

    /// Takes every recorded one.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// The containers a node ran, removed by the dispatcher after its end is committed.
pub type Containers = Collected<String>;

/// What the agent containers a node ran reported, journaled by the dispatcher with its end.
pub type Reports = Collected<crate::agents::output::Report>;

/// The agent's own session from an earlier run of the node (a fix attempt, an answer, a
/// retry), to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session or thread id the CLI reported.
    pub id: String,
    /// The tokens the session's runs so far reported (codex reports running totals).
    pub tokens: crate::agents::output::Tokens,
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

/// A decided end without an exit code.
fn stop(outcome: Outcome, reason: impl Into<String>) -> NodeResult {
    NodeResult::Stop {
        outcome,
        reason: reason.into(),
        exit_code: None,
    }
}

/// Finished, nothing to report.
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

/// Holds the workspace lock of `unit` for run `run` from the first of its nodes that runs
/// until the unit finishes, so no other unit (of this run, another run or another spec) uses
/// the same workspace meanwhile, between its nodes included (another unit's prep between this
/// one's agent and its publish would publish the other's work). A workspace in use fails the
/// node, naming who uses it; it is not retried.
async fn hold_workspace(unit: &Arc<UnitRun>, state_dir: &Path, run: &str) -> Result<(), NodeError> {
    let path = lock::workspace_lock(state_dir, &unit.unit().workspace);
    let (taker, run, at) = (Arc::clone(unit), run.to_owned(), path.clone());
    let taken = tokio::task::spawn_blocking(move || taker.take_workspace(&at, &run))
        .await
        .unwrap_or_else(|error| Err(std::io::Error::other(error)));
    match taken {
        Ok(Ok(())) => Ok(()),
        Ok(Err(busy)) => Err(NodeError::WorkspaceBusy {
            workspace: unit.workspace.clone(),
            busy: Box::new(busy),
        }),
        Err(error) => Err(Step::Workspace.io(FileAction::Lock, &path)(error)),
    }
}

/// Runs one node, holding its unit's workspace ([`hold_workspace`]).
pub async fn run_node<R: Runtime, F: Forge>(ctx: NodeCtx<R, F>) -> NodeResult {
    if let Err(error) = hold_workspace(&ctx.unit, &ctx.state_dir, &ctx.run_id).await {
        return NodeResult::Failed(error);
    }
    let meta = ctx.unit.meta_dir();
    if let Err(error) = tokio::fs::create_dir_all(&meta).await {
        return NodeResult::Failed(Step::Workspace.io(FileAction::Create, &meta)(error));
    }
    match ctx.kind {
        NodeKind::Prep => prep::run(&ctx).await,
        NodeKind::Agent => agent::run(&ctx).await,
        NodeKind::Qa => qa::run(&ctx).await,
        NodeKind::Publish => publish::run(&ctx).await,
        NodeKind::Review => review::run(&ctx).await,
        NodeKind::Merge => merge::run(&ctx).await,
    }
}

/// Writes a file dispatch owns (a note, a prompt) in `step`.
pub(super) async fn write_file(step: Step, path: &Path, text: &str) -> Result<(), NodeError> {
    mounted::write(path, text.as_bytes())
        .await
        .map_err(step.io(FileAction::Write, path))
}

/// Renders the prompt of an agent run into `meta/prompt.md` and returns it.
pub(super) async fn write_prompt<R: Runtime, F: Forge>(
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

/// The commit the unit's work started from, as prep noted it.
pub(super) async fn start_commit<R: Runtime, F: Forge>(
    ctx: &NodeCtx<R, F>,
    step: Step,
) -> Result<String, NodeError> {
    let note = ctx.unit.note(START_NOTE);
    tokio::fs::read_to_string(&note)
        .await
        .map(|sha| sha.trim().to_owned())
        .map_err(step.io(FileAction::ReadStart, &note))
}

/// The last lines of a log from byte `from` on (what a reason shows).
pub(super) async fn tail(path: &Path, from: u64) -> String {
    // Enough bytes for the last lines of any sane log, however long the log is.
    let bytes = mounted::read_tail(path, from, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// How long a log is now (where the tail of the next run starts).
pub(super) fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
