//! The dispatcher: the one place that decides a run's state.
//!
//! It owns every node's [`NodeStatus`], every unit's [`UnitPhase`], the [`Limits`] and the
//! ready queues. Everything that moves a run is an [`Event`]; [`Dispatcher::handle`] takes
//! one, makes every transition it implies, starts what may start, reports and journals the
//! [`RunEvent`]s it decided (the same values go to both), and answers with [`Next`]: wait
//! (until an instant, when a rate limit or a retry backoff asks for one), or the run is over.
//! Node handlers run as tasks and talk to it only through events; nothing else changes state.
//!
//! A node's life (every status change goes through [`Dispatcher::set`]):
//!
//! ```text
//! Pending --(dependencies done)--> Ready --(slot free, rate allows)--> Running
//! Running --(handler returned, end committed)--> Done | Failed | Cancelled
//! Running --(transient error, retries left)--> Pending --(backoff over)--> Ready
//! Running qa --(QA failed, fix attempts left)--> Pending, and its agent Done --> Ready
//! Pending | Ready --(something it needs did not succeed; the run stopped)--> Skipped | Cancelled
//! ```
//!
//! "Where does a node go from running to finished, and what happens next": its handler's
//! result arrives as [`Event::Returned`] (its slot is free at once, its end goes to the
//! journal); once the journal committed it, [`Event::Committed`] hands it to
//! [`Dispatcher::node_ended`], which decides; [`Dispatcher::propagate`] then releases or skips
//! what depends on it, and a unit whose nodes are all terminal gets its one outcome.
//!
//! Invariants:
//! - nothing depends on an unrecorded transition: a node's start is queued to the journal
//!   before its task exists, so it commits before anything the task writes (the container id,
//!   committed before the container starts); its end is committed before its result takes
//!   effect (dependents start, its unit moves on, its containers are removed);
//! - a node's slot is free once its handler returns; the journal commits in queue order, so no
//!   start it lets in commits before that end, and the journal never shows more nodes running
//!   than the limits allow;
//! - a failed node never stops other units: its unit's remaining nodes, and units that need
//!   it, end `skipped` with the reason;
//! - a unit's outcome is decided once ([`UnitPhase::Decided`]) and carried as a value, never
//!   inside a reason; every unit ends with exactly one [`Outcome`];
//! - cancellation only escalates ([`CancelReason`]): once a reason is set nothing new starts,
//!   and only [`CancelReason::Forced`] stops running containers;
//! - a unit's first node starts only once the unit's budget cap is reserved against the totals
//!   ([`Ledger`], decided without I/O like the limits); a unit that must wait for running
//!   units to give back what they hold stays ready without blocking the nodes queued behind
//!   it, and one nothing could cover is held back (`skipped`, [`Hold::Budget`]); the
//!   reservation is given back, and the unit's spend counted, when the unit finishes;
//! - a unit's first node starts only in its rollout wave ([`Rollout`]): once the waves before
//!   it finished (and, with `wait_for_checks`, their PRs are green: a task waits for the
//!   forge and answers with [`Event::Checked`], and the run does not end while one waits);
//!   a halt holds back every unit that has not started.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::budget::{Ledger, Spend};
use super::error::NodeError;
use super::limits::{Admission, Class, Limits};
use super::node::{self, NodeCtx, NodeResult, NodeRunner, UnitRun};
use super::rollout::{Gate, Rollout};
use super::{cache, Executor, UnitResult};
use crate::agents::output::{next_session, Report, Usage};
use crate::backoff::Backoff;
use crate::forge::{Forge, PrRef};
use crate::plan::Plan;
use crate::runtime::Runtime;
use crate::spec::values::AgentRef;
use crate::state::event::{PoolStart, ResetCause};
use crate::state::views::PublishedPr;
use crate::state::RunEvent;
use crate::vocab::{CancelReason, Hold, NodeKind, NodeStatus, Outcome, PrOrigin};

/// A signal from the user, as the command line hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C, SIGTERM or SIGHUP: the first stops scheduling, a second stops containers.
    Interrupt,
    /// SIGUSR1 (`dispatch cancel --force`): stop the running containers now.
    Force,
}

/// What moves the dispatcher.
pub(super) enum Event {
    /// The run begins: nodes whose dependencies are done become ready and start.
    Begin,
    /// Node handlers returned (every one that did meanwhile): their slots are free and their
    /// ends go to the journal.
    Returned(Vec<Returned>),
    /// The journal committed the ends of a batch, or failed to: their results take effect.
    Committed(Vec<Returned>, Result<(), String>),
    /// A rate limit or a retry backoff is over.
    Wake,
    /// The user asked the run to stop.
    Signal(Signal),
    /// The journal found the state directory's disk full (and used its reserve).
    DiskFull,
    /// The checks of a rollout wave's PRs settled (`wait_for_checks`): green, or what is red.
    Checked(usize, Result<(), String>),
}

/// A node whose handler returned: its index, result and the containers it ran.
pub(super) struct Returned {
    idx: usize,
    result: NodeResult,
    containers: Vec<String>,
    reports: Vec<Report>,
}

/// What the loop does after an event.
#[must_use = "the loop must wait as told, or end"]
pub(super) enum Next {
    /// Wait for the next event; wake at this instant if nothing comes before.
    Wait(Option<Instant>),
    /// Nothing runs or can run any more: the run is over.
    Over,
}

/// One node as the dispatcher tracks it.
pub(super) struct Node {
    pub(super) id: String,
    pub(super) unit: usize,
    pub(super) kind: NodeKind,
    class: Class,
    pub(super) status: NodeStatus,
    /// Dependencies not yet done.
    pub(super) waiting: usize,
    pub(super) dependents: Vec<usize>,
    /// Attempts started so far.
    pub(super) attempt: u32,
    /// A container of an earlier runner to collect (resume).
    pub(super) reattach: Option<String>,
    /// What its agent runs used, in all its attempts.
    pub(super) usage: Usage,
    /// The agent's latest session, which its next run continues.
    pub(super) session: Option<node::Session>,
}

/// Where a unit is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum UnitPhase {
    /// Its nodes run; nothing has decided its outcome yet.
    Open,
    /// Its outcome is decided (a node stopped it, or something it needs did not succeed);
    /// its remaining nodes are skipped and it finishes once none runs.
    Decided {
        /// The outcome.
        outcome: Outcome,
        /// Why.
        reason: String,
    },
    /// Every node is terminal and its result is out, with this outcome.
    Finished(Outcome),
}

impl UnitPhase {
    /// The outcome decided so far, if any.
    pub(super) fn outcome(&self) -> Option<Outcome> {
        match self {
            UnitPhase::Open => None,
            UnitPhase::Decided { outcome, .. } | UnitPhase::Finished(outcome) => Some(*outcome),
        }
    }
}

/// What a unit's nodes have established so far, which later nodes get.
#[derive(Default)]
pub(super) struct Progress {
    /// The base branch, as prep resolved it.
    pub(super) base: Option<String>,
    /// The PR publish opened.
    pub(super) pr: Option<PrRef>,
    /// Whether QA passed (merge waits for green).
    pub(super) qa_passed: bool,
    /// The last QA failure, for the next fix attempt's prompt.
    pub(super) qa_failure: Option<String>,
    /// Fix attempts left.
    pub(super) fixes_left: u32,
    /// The outcome its nodes reached so far (`changed` after the agent, `merged` after merge).
    pub(super) reached: Option<Outcome>,
    /// What held it back, when it ends `skipped` until something allows it.
    pub(super) held: Option<Hold>,
    /// Why the agent changed nothing, when publish runs to withdraw an earlier run's PR.
    pub(super) no_changes: Option<String>,
    /// Whose the unit's PR is, as its last [`RunEvent::PrOpened`] of this run said.
    pub(super) pr_origin: Option<PrOrigin>,
    /// What a unit that ends with the outcome its nodes reached says (an adopted PR).
    pub(super) note: Option<String>,
}

/// One unit as the dispatcher tracks it.
pub(super) struct Unit {
    pub(super) run: Arc<UnitRun>,
    pub(super) nodes: Vec<usize>,
    pub(super) phase: UnitPhase,
    pub(super) progress: Progress,
}

/// The dispatcher of one run.
pub(super) struct Dispatcher<R: Runtime, F: Forge, N: NodeRunner<R, F>> {
    pub(super) ex: Executor<R, F, N>,
    pub(super) nodes: Vec<Node>,
    pub(super) units: Vec<Unit>,
    ready: BTreeMap<Class, VecDeque<usize>>,
    limits: Limits,
    /// Nodes whose handlers run.
    running: usize,
    /// Nodes whose handlers returned and whose ends are being committed. Their slots are free
    /// already; their results take effect once committed.
    recording: usize,
    /// Why the run stops early, once it does.
    cancel: Option<CancelReason>,
    cancel_tx: watch::Sender<bool>,
    returned_tx: mpsc::UnboundedSender<Returned>,
    committed_tx: mpsc::UnboundedSender<(Vec<Returned>, Result<(), String>)>,
    checked_tx: mpsc::UnboundedSender<(usize, Result<(), String>)>,
    /// Rollout waves whose PRs' checks are being waited for.
    checking: usize,
    /// Where agent results are cached, unless the run does without.
    cache_dir: Option<PathBuf>,
    /// Nodes waiting out a retry backoff, earliest first.
    delayed: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Nodes that became terminal whose dependents and unit are still to be told.
    settled: VecDeque<usize>,
    /// Events decided in the current [`Self::handle`], not yet reported and journaled.
    events: Vec<RunEvent>,
    /// Each unit's result once it ended, by unit (in plan order).
    pub(super) results: Vec<Option<UnitResult>>,
    /// `status.json` writes and container removals still under way (awaited before the run
    /// ends, so no container outlives its run).
    writes: Vec<tokio::task::JoinHandle<()>>,
    /// The budget: each unit's cap, the totals and what running units hold.
    budget: Ledger,
    /// The rollout: waves, pauses, the halt and the publish windows.
    rollout: Rollout,
    /// Whether units found finished are being taken over (a resume), not finishing now.
    restoring: bool,
}

/// The channels the dispatcher's tasks answer on, read by the loop in [`super::execute`].
pub(super) struct Inbox {
    pub(super) returned: mpsc::UnboundedReceiver<Returned>,
    pub(super) committed: mpsc::UnboundedReceiver<(Vec<Returned>, Result<(), String>)>,
    pub(super) checked: mpsc::UnboundedReceiver<(usize, Result<(), String>)>,
}

fn agent_class(agent: &AgentRef) -> Class {
    Class::Agent {
        pool: agent.pool().to_owned(),
        model: agent.model().map(str::to_owned),
    }
}

/// The journal's record of a handler's end.
fn end_event(node: &str, result: &NodeResult) -> RunEvent {
    let (status, outcome, exit_code, reason) = match result {
        NodeResult::Done { outcome, .. } => (NodeStatus::Done, *outcome, None, None),
        NodeResult::Stop {
            outcome,
            reason,
            exit_code,
        } => (
            status_of(*outcome),
            Some(*outcome),
            *exit_code,
            Some(reason.clone()),
        ),
        NodeResult::QaFailed { step, .. } => (
            NodeStatus::Failed,
            Some(Outcome::QaFailed),
            None,
            Some(step.clone()),
        ),
        NodeResult::Failed(error) => (
            NodeStatus::Failed,
            Some(error.verdict().outcome),
            None,
            Some(error.to_string()),
        ),
    };
    RunEvent::NodeFinished {
        node: node.to_owned(),
        status,
        outcome,
        exit_code,
        reason,
    }
}

/// What the agent runs of `unit` used so far in the run, all its nodes together.
fn unit_usage(nodes: &[Node], unit: &Unit) -> Usage {
    let mut usage = Usage::default();
    for &n in &unit.nodes {
        usage.add(&nodes[n].usage);
    }
    usage
}

/// Whether a merge node of the run could still merge a PR (it runs, or its unit's PR is
/// published), so that a publish waiting under `max_open_prs` may go on.
fn merge_may_free(nodes: &[Node], units: &[Unit]) -> bool {
    nodes.iter().any(|node| {
        let published = units[node.unit]
            .nodes
            .iter()
            .any(|&n| nodes[n].kind == NodeKind::Publish && nodes[n].status == NodeStatus::Done);
        node.kind == NodeKind::Merge
            && matches!(node.status, NodeStatus::Ready | NodeStatus::Running)
            || (node.kind == NodeKind::Merge && node.status == NodeStatus::Pending && published)
    })
}

/// Whether any node of `unit` started in this run (or in the run's earlier runners).
fn unit_started(nodes: &[Node], unit: &Unit) -> bool {
    unit.nodes.iter().any(|&n| {
        nodes[n].attempt > 0 || matches!(nodes[n].status, NodeStatus::Done | NodeStatus::Failed)
    })
}

/// The status of a node that ended its unit with `outcome`.
fn status_of(outcome: Outcome) -> NodeStatus {
    match outcome {
        Outcome::NoChanges => NodeStatus::Done,
        Outcome::Cancelled => NodeStatus::Cancelled,
        _ => NodeStatus::Failed,
    }
}

/// The backoff before retry `attempt` (counted from 1) of a transient failure
/// ([`Backoff::node_retry`]: 1 s, 2 s, 4 s ... up to a minute, plus up to a quarter more).
fn retry_delay(attempt: u32) -> Duration {
    Backoff::node_retry(u64::from(std::process::id()))
        .nth(attempt.saturating_sub(1) as usize)
        .expect("the node retry backoff has no limit")
}

impl<R: Runtime, F: Forge, N: NodeRunner<R, F>> Dispatcher<R, F, N> {
    /// The dispatcher of `plan`, every node pending, and the channels its tasks answer on.
    /// `published` holds the PR the journal's runs published for each unit, by unit id.
    pub(super) fn new(
        ex: Executor<R, F, N>,
        plan: &Arc<Plan>,
        limits: Limits,
        published: HashMap<String, PublishedPr>,
    ) -> (Self, Inbox) {
        let (returned_tx, returned) = mpsc::unbounded_channel();
        let (committed_tx, committed) = mpsc::unbounded_channel();
        let (checked_tx, checked) = mpsc::unbounded_channel();
        let (cancel_tx, _) = watch::channel(false);
        let mut d = Self {
            nodes: Vec::with_capacity(plan.counts.nodes),
            units: Vec::with_capacity(plan.units.len()),
            ready: BTreeMap::new(),
            limits,
            running: 0,
            recording: 0,
            cancel: None,
            cancel_tx,
            returned_tx,
            committed_tx,
            checked_tx,
            checking: 0,
            cache_dir: (!ex.options.no_cache).then(|| cache::dir(&ex.state_dir)),
            delayed: BinaryHeap::new(),
            settled: VecDeque::new(),
            events: Vec::new(),
            results: std::iter::repeat_with(|| None)
                .take(plan.units.len())
                .collect(),
            writes: Vec::new(),
            budget: Ledger::default(),
            rollout: Rollout::default(),
            restoring: false,
            ex,
        };
        d.build(plan, published);
        (
            d,
            Inbox {
                returned,
                committed,
                checked,
            },
        )
    }

    fn build(&mut self, plan: &Arc<Plan>, mut published: HashMap<String, PublishedPr>) {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(plan.counts.nodes);
        for (u, unit) in plan.units.iter().enumerate() {
            let mut run = UnitRun::new(&self.ex.loaded, plan, u, &self.ex.state_dir);
            run.published = published.remove(&unit.id);
            let mut ids = Vec::with_capacity(unit.nodes.len());
            for node in &unit.nodes {
                let class = match node.kind {
                    NodeKind::Prep | NodeKind::Publish | NodeKind::Merge => Class::Host,
                    NodeKind::Qa => Class::Container,
                    NodeKind::Agent => agent_class(&run.agent),
                    NodeKind::Review => run.review.as_ref().map_or(Class::Container, agent_class),
                };
                index.insert(node.id.as_str(), self.nodes.len());
                ids.push(self.nodes.len());
                self.nodes.push(Node {
                    id: node.id.clone(),
                    unit: u,
                    kind: node.kind,
                    class,
                    status: NodeStatus::Pending,
                    waiting: node.needs.len(),
                    dependents: Vec::new(),
                    attempt: 0,
                    reattach: None,
                    usage: Usage::default(),
                    session: None,
                });
            }
            self.units.push(Unit {
                run: Arc::new(run),
                nodes: ids,
                phase: UnitPhase::Open,
                progress: Progress {
                    fixes_left: unit.fix_attempts,
                    ..Progress::default()
                },
            });
        }
        let spec = &self.ex.loaded.spec;
        self.budget = Ledger::new(spec, self.units.iter().map(|u| (u.run.job, &u.run.agent)));
        self.rollout = Rollout::new(spec.rollout.as_ref(), self.units.len())
            .with_open_prs(self.ex.open_prs.clone());
        for unit in &plan.units {
            for node in &unit.nodes {
                let me = index[node.id.as_str()];
                for need in &node.needs {
                    if let Some(&from) = index.get(need.as_str()) {
                        self.nodes[from].dependents.push(me);
                    }
                }
            }
        }
    }

    /// Takes one event, makes every transition it implies, starts what may start, and says
    /// what the loop does next.
    pub(super) fn handle(&mut self, event: Event) -> Next {
        match event {
            Event::Begin => self.begin(),
            Event::Returned(batch) => self.returned(batch),
            Event::Committed(batch, written) => self.committed(batch, written),
            Event::Wake => {}
            Event::Signal(Signal::Interrupt) => {
                let reason = match self.cancel {
                    Some(CancelReason::Signal | CancelReason::Forced) => CancelReason::Forced,
                    _ => CancelReason::Signal,
                };
                self.begin_cancel(reason);
            }
            Event::Signal(Signal::Force) => self.begin_cancel(CancelReason::Forced),
            Event::DiskFull => {
                let dir = self.ex.state_dir.display().to_string();
                self.begin_cancel(CancelReason::DiskFull(dir));
            }
            Event::Checked(wave, result) => {
                self.checking -= 1;
                if let Some(reason) = self.rollout.checked(wave, result) {
                    self.halt(reason);
                }
            }
        }
        self.propagate();
        let wake = self.start_ready();
        self.flush();
        // Checks being waited for keep the run going, unless it stops early.
        let checking = self.checking > 0 && self.cancel.is_none();
        let idle = self.running == 0 && self.recording == 0 && !checking;
        if idle && (self.cancel.is_some() || wake.is_none()) {
            Next::Over
        } else {
            Next::Wait(wake)
        }
    }

    /// Every pending node whose dependencies are done becomes ready, and units a resume found
    /// complete finish.
    fn begin(&mut self) {
        for idx in 0..self.nodes.len() {
            if self.nodes[idx].status == NodeStatus::Pending && self.nodes[idx].waiting == 0 {
                self.set(idx, NodeStatus::Ready);
            }
        }
        self.restoring = true;
        for u in 0..self.units.len() {
            self.finish_unit_if_done(u);
        }
        self.restoring = false;
    }

    /// Handlers returned: their slots are free for other nodes at once (their ends are queued
    /// before any later start, so the journal never shows more running than the limits
    /// allow); what their results decide waits for the commit.
    fn returned(&mut self, mut batch: Vec<Returned>) {
        if let Some(CancelReason::DiskFull(dir)) = &self.cancel {
            // Stopped for the disk, not by the user: the unit failed on the machine.
            for r in &mut batch {
                if let NodeResult::Stop {
                    outcome: Outcome::Cancelled,
                    ..
                } = r.result
                {
                    r.result = NodeResult::Failed(NodeError::DiskFull { dir: dir.clone() });
                }
            }
        }
        for r in &mut batch {
            self.running -= 1;
            self.recording += 1;
            self.limits.finish(&self.nodes[r.idx].class);
            for report in std::mem::take(&mut r.reports) {
                self.agent_reported(r.idx, report);
            }
            self.events
                .push(end_event(&self.nodes[r.idx].id, &r.result));
            // A PR a node opened is its unit's from the same commit on (a resumed run needs it
            // for merge), with whose it is.
            if let NodeResult::Done { pr: Some(pr), .. } = &r.result {
                let u = self.nodes[r.idx].unit;
                let origin = self.origin_of(u, pr);
                let unit = &mut self.units[u];
                unit.progress.pr_origin = Some(origin);
                if origin == PrOrigin::Adopted {
                    let by = pr
                        .author
                        .as_deref()
                        .map_or(String::new(), |a| format!(", opened by {a},"));
                    unit.progress.note = Some(format!(
                        "adopted PR {}{by} instead of opening a second one",
                        pr.reference
                    ));
                }
                self.events.push(RunEvent::PrOpened {
                    unit: unit.run.unit().id.clone(),
                    pr: pr.reference.clone(),
                    origin,
                });
            }
        }
        let committed = self.committed_tx.clone();
        let events = self.report();
        // Straight from the writer to the dispatcher: the results take effect at once.
        self.ex
            .journal
            .record_then(&self.ex.run_id, events, move |written| {
                let _ = committed.send((batch, written));
            });
    }

    /// Whose the PR a node of unit `u` returned is: dispatch's when this publish opened it, or
    /// when this run or the journal's runs recorded it as opened by dispatch; else adopted (it
    /// was open for the unit's branch, opened by someone or something else).
    fn origin_of(&self, u: usize, pr: &PrRef) -> PrOrigin {
        let progress = &self.units[u].progress;
        let this_run = progress.pr_origin == Some(PrOrigin::Opened)
            && progress
                .pr
                .as_ref()
                .is_some_and(|p| p.reference == pr.reference);
        let earlier = self.units[u]
            .run
            .published
            .as_ref()
            .is_some_and(|p| p.reference == pr.reference && p.origin == Some(PrOrigin::Opened));
        if pr.created || this_run || earlier {
            PrOrigin::Opened
        } else {
            PrOrigin::Adopted
        }
    }

    /// What an agent run of node `idx` reported: counted for the node and its unit, its
    /// session kept for the node's next run, and journaled before the node's end.
    fn agent_reported(&mut self, idx: usize, report: Report) {
        let node = &mut self.nodes[idx];
        node.usage.add_report(&report);
        let earlier = node.session.as_ref().map(|s| (s.id.as_str(), s.tokens));
        if let Some((id, tokens)) = next_session(earlier, &report) {
            node.session = Some(node::Session { id, tokens });
        }
        self.events.push(RunEvent::AgentReported {
            node: node.id.clone(),
            attempt: node.attempt,
            report,
        });
    }

    /// The ends of a batch are committed: their results take effect, and only now may their
    /// containers go. A journal that fails stops scheduling.
    fn committed(&mut self, batch: Vec<Returned>, written: Result<(), String>) {
        match written {
            Ok(()) => self.remove_containers(&batch),
            Err(error) => self.begin_cancel(CancelReason::JournalFailed(error)),
        }
        for r in batch {
            self.recording -= 1;
            self.node_ended(r.idx, r.result);
        }
    }

    /// A node's end is committed: what its result decides.
    fn node_ended(&mut self, idx: usize, result: NodeResult) {
        let u = self.nodes[idx].unit;
        match result {
            NodeResult::Done { base, pr, outcome } => {
                let progress = &mut self.units[u].progress;
                if base.is_some() {
                    progress.base = base;
                }
                if pr.is_some() {
                    progress.pr = pr;
                }
                if outcome.is_some() {
                    progress.reached = outcome;
                }
                if self.nodes[idx].kind == NodeKind::Qa {
                    progress.qa_passed = true;
                }
                // A merged PR, or one publish withdrew, no longer counts as open.
                let withdrew = self.nodes[idx].kind == NodeKind::Publish
                    && self.units[u].progress.no_changes.is_some();
                if outcome == Some(Outcome::Merged) || withdrew {
                    self.rollout.closed(u);
                }
                self.set(idx, NodeStatus::Done);
            }
            NodeResult::Failed(error) => {
                let verdict = error.verdict();
                if verdict.retry && self.retry_left(idx) {
                    self.retry_later(idx, error.to_string());
                } else {
                    self.set(idx, NodeStatus::Failed);
                    self.decide(u, verdict.outcome, error.to_string(), self.nodes[idx].kind);
                }
            }
            // The agent changed nothing, and an earlier run's PR of the unit is open: publish
            // alone runs on, to withdraw it, and decides the unit's `no_changes`.
            NodeResult::Stop {
                outcome: Outcome::NoChanges,
                reason,
                ..
            } if self.nodes[idx].kind == NodeKind::Agent
                && self.units[u].run.withdraws(&self.ex.loaded).is_some() =>
            {
                self.set(idx, NodeStatus::Done);
                self.units[u].progress.no_changes = Some(reason);
                self.skip_to_publish(u);
            }
            NodeResult::Stop {
                outcome, reason, ..
            } => {
                self.set(idx, status_of(outcome));
                self.decide(u, outcome, reason, self.nodes[idx].kind);
            }
            NodeResult::QaFailed { step, tail } => {
                let failure = format!("{step}\n{tail}");
                if self.units[u].progress.fixes_left > 0 && self.cancel.is_none() {
                    self.fix_attempt(idx, failure);
                } else {
                    self.set(idx, NodeStatus::Failed);
                    self.decide(u, Outcome::QaFailed, failure, NodeKind::Qa);
                }
            }
        }
    }

    /// Whether a transient failure of this node may be retried: the run goes on and the job's
    /// `retries` are not used up.
    fn retry_left(&self, idx: usize) -> bool {
        let unit = self.units[self.nodes[idx].unit].run.unit();
        self.cancel.is_none() && self.nodes[idx].attempt <= unit.retries
    }

    /// Puts a node that hit a transient failure back after a backoff.
    fn retry_later(&mut self, idx: usize, reason: String) {
        let after = retry_delay(self.nodes[idx].attempt);
        self.events.push(RunEvent::NodeReset {
            node: self.nodes[idx].id.clone(),
            cause: ResetCause::Retry { after, reason },
        });
        self.set(idx, NodeStatus::Pending);
        self.delayed.push(Reverse((Instant::now() + after, idx)));
    }

    /// QA failed with a fix attempt left: the agent runs again with the failure, then QA.
    fn fix_attempt(&mut self, qa: usize, failure: String) {
        let u = self.nodes[qa].unit;
        let progress = &mut self.units[u].progress;
        progress.fixes_left -= 1;
        progress.qa_failure = Some(failure);
        let agent = self.units[u]
            .nodes
            .iter()
            .copied()
            .find(|&n| self.nodes[n].kind == NodeKind::Agent)
            .expect("the planner gives every unit with QA an agent node");
        for idx in [agent, qa] {
            self.events.push(RunEvent::NodeReset {
                node: self.nodes[idx].id.clone(),
                cause: ResetCause::FixAttempt,
            });
        }
        self.set(qa, NodeStatus::Pending);
        self.nodes[qa].waiting = 1;
        self.set(agent, NodeStatus::Ready);
    }

    /// A node of unit `u` (of kind `by`) ended it with `outcome`: the outcome is decided
    /// (unless something decided it before) and the unit's nodes that did not run are skipped.
    fn decide(&mut self, u: usize, outcome: Outcome, reason: String, by: NodeKind) {
        if self.units[u].phase == UnitPhase::Open {
            self.units[u].phase = UnitPhase::Decided { outcome, reason };
        }
        self.skip_rest(u, &format!("{} ended {outcome}", by.as_str()));
    }

    /// Skips every node of unit `u` but its publish that has not run: its agent changed
    /// nothing, and publish withdraws the PR of an earlier run.
    fn skip_to_publish(&mut self, u: usize) {
        let reason = "the agent changed nothing; publish withdraws the PR of an earlier run";
        for i in 0..self.units[u].nodes.len() {
            let n = self.units[u].nodes[i];
            let status = self.nodes[n].status;
            if self.nodes[n].kind != NodeKind::Publish
                && !status.is_terminal()
                && status != NodeStatus::Running
            {
                self.end_unrun(n, NodeStatus::Skipped, reason);
            }
        }
    }

    /// Skips every node of unit `u` that neither ran to its end nor runs now.
    fn skip_rest(&mut self, u: usize, reason: &str) {
        for i in 0..self.units[u].nodes.len() {
            let n = self.units[u].nodes[i];
            let status = self.nodes[n].status;
            if !status.is_terminal() && status != NodeStatus::Running {
                self.end_unrun(n, NodeStatus::Skipped, reason);
            }
        }
    }

    /// Ends a node that never ran (skipped or cancelled), with the reason.
    fn end_unrun(&mut self, idx: usize, status: NodeStatus, reason: &str) {
        self.events.push(RunEvent::NodeFinished {
            node: self.nodes[idx].id.clone(),
            status,
            outcome: None,
            exit_code: None,
            reason: Some(reason.to_owned()),
        });
        self.set(idx, status);
    }

    /// The one place a node's status changes. A node that becomes terminal is queued for
    /// [`Self::propagate`]; a node that becomes ready joins its class's queue, and one that
    /// stops being ready leaves it.
    fn set(&mut self, idx: usize, to: NodeStatus) {
        let from = self.nodes[idx].status;
        debug_assert!(
            matches!(
                (from, to),
                (NodeStatus::Pending, NodeStatus::Ready)
                    | (NodeStatus::Ready, NodeStatus::Running)
                    | (NodeStatus::Running, _)
                    | (NodeStatus::Pending | NodeStatus::Ready, NodeStatus::Skipped)
                    | (
                        NodeStatus::Pending | NodeStatus::Ready,
                        NodeStatus::Cancelled
                    )
                    | (NodeStatus::Done, NodeStatus::Ready)
            ),
            "node {} cannot go from {from} to {to}",
            self.nodes[idx].id
        );
        if from == NodeStatus::Ready && to != NodeStatus::Running {
            if let Some(queue) = self.ready.get_mut(&self.nodes[idx].class) {
                queue.retain(|&n| n != idx);
            }
        }
        self.nodes[idx].status = to;
        if to == NodeStatus::Ready {
            // The class is cloned only for a queue that does not exist yet.
            match self.ready.get_mut(&self.nodes[idx].class) {
                Some(queue) => queue.push_back(idx),
                None => {
                    let class = self.nodes[idx].class.clone();
                    self.ready.insert(class, VecDeque::from([idx]));
                }
            }
        }
        if to.is_terminal() {
            self.settled.push_back(idx);
        }
    }

    /// Tells the dependents of every node that became terminal: a done node (or one skipped
    /// while its unit still succeeds) releases them, any other end skips them (a dependent of
    /// another unit skips its whole unit). A unit whose nodes are all terminal finishes.
    fn propagate(&mut self) {
        while let Some(idx) = self.settled.pop_front() {
            let u = self.nodes[idx].unit;
            let decided = self.units[u].phase.outcome();
            let unit_ok = decided.is_none_or(Outcome::is_success);
            let ok = match self.nodes[idx].status {
                NodeStatus::Done => true,
                NodeStatus::Skipped => unit_ok,
                _ => false,
            };
            for i in 0..self.nodes[idx].dependents.len() {
                let d = self.nodes[idx].dependents[i];
                let status = self.nodes[d].status;
                if status.is_terminal() || status == NodeStatus::Running {
                    continue;
                }
                if ok {
                    self.nodes[d].waiting = self.nodes[d].waiting.saturating_sub(1);
                    if self.nodes[d].waiting == 0 && status == NodeStatus::Pending {
                        self.set(d, NodeStatus::Ready);
                    }
                    continue;
                }
                let ended = decided.unwrap_or(Outcome::Skipped);
                let reason = format!("needs {} which ended {ended}", self.nodes[idx].id);
                let du = self.nodes[d].unit;
                if du == u {
                    self.end_unrun(d, NodeStatus::Skipped, &reason);
                } else {
                    if self.units[du].phase == UnitPhase::Open {
                        self.units[du].phase = UnitPhase::Decided {
                            outcome: Outcome::Skipped,
                            reason: reason.clone(),
                        };
                    }
                    self.skip_rest(du, &reason);
                }
            }
            self.finish_unit_if_done(u);
        }
    }

    /// A unit whose nodes are all terminal gets its one outcome: the decided one, else what
    /// its nodes reached (an agent that ran to its end changed the repository).
    fn finish_unit_if_done(&mut self, u: usize) {
        let unit = &self.units[u];
        if matches!(unit.phase, UnitPhase::Finished(_))
            || !unit
                .nodes
                .iter()
                .all(|&n| self.nodes[n].status.is_terminal())
        {
            return;
        }
        let (outcome, reason) = match &unit.phase {
            UnitPhase::Decided { outcome, reason } => (*outcome, Some(reason.clone())),
            _ => (
                unit.progress.reached.unwrap_or(Outcome::Changed),
                unit.progress.note.clone(),
            ),
        };
        let usage = unit_usage(&self.nodes, unit);
        let held = unit.progress.held;
        let spent = Spend::of(&usage);
        if self.budget.holds(u) {
            self.events.push(RunEvent::BudgetReleased {
                unit: unit.run.unit().id.clone(),
                usd: spent.usd,
                tokens: spent.tokens,
            });
        }
        self.budget.finish(u, spent);
        let counted = !(self.restoring && self.ex.options.continues_halt);
        let halt =
            (self.rollout).finished(u, outcome, crate::state::now_ms().max(0) as u64, counted);
        let unit = &self.units[u];
        let result = UnitResult {
            id: unit.run.unit().id.clone(),
            outcome,
            reason,
            pr: unit.progress.pr.as_ref().map(|p| p.reference.clone()),
            meta: unit.run.meta_dir(),
            usage: (usage.runs > 0).then_some(usage),
            held,
        };
        self.units[u].phase = UnitPhase::Finished(outcome);
        // None of its nodes runs any more.
        self.units[u].run.release_workspace();
        tracing::info!(unit = %result.id, outcome = %outcome, "unit finished");
        self.events.push(RunEvent::UnitFinished {
            unit: result.id.clone(),
            outcome,
            reason: result.reason.clone(),
            pr: result.pr.clone(),
            held,
        });
        self.write_status(u, &result);
        self.results[u] = Some(result);
        if let Some(reason) = halt {
            self.halt(reason);
        }
        self.ask_checks();
    }

    /// Waits, in a task of its own, for the checks of the PRs of every finished rollout wave a
    /// later wave waits for (`wait_for_checks`); the answer comes as [`Event::Checked`].
    fn ask_checks(&mut self) {
        while let Some(wave) = self.rollout.to_check() {
            let prs: Vec<(String, String, PrRef)> = (0..self.units.len())
                .filter(|&u| self.rollout.wave(u) == wave)
                .filter(|&u| self.units[u].phase == UnitPhase::Finished(Outcome::Changed))
                .filter_map(|u| {
                    let unit = &self.units[u];
                    let pr = unit.progress.pr.clone()?;
                    Some((
                        unit.run.unit().org.clone(),
                        unit.run.unit().repo.clone(),
                        pr,
                    ))
                })
                .collect();
            let (forge, answer) = (self.ex.forge.clone(), self.checked_tx.clone());
            self.checking += 1;
            tokio::spawn(async move {
                let mut result = Ok(());
                for (org, repo, pr) in &prs {
                    if let Err(error) = forge.wait_green(org, repo, pr).await {
                        result = Err(error.to_string());
                        break;
                    }
                }
                let _ = answer.send((wave, result));
            });
        }
    }

    /// The rollout halted: every unit that has not started is held back with the reason.
    fn halt(&mut self, reason: String) {
        self.events.push(RunEvent::RolloutHalted {
            reason: reason.clone(),
        });
        for u in 0..self.units.len() {
            if self.units[u].phase == UnitPhase::Open && !unit_started(&self.nodes, &self.units[u])
            {
                self.hold_back(u, Hold::Rollout, reason.clone());
            }
        }
    }

    /// Holds unit `u` back: it ends `skipped` with `reason`, and a resume starts it once what
    /// held it back allows.
    fn hold_back(&mut self, u: usize, hold: Hold, reason: String) {
        if self.units[u].phase == UnitPhase::Open {
            self.units[u].phase = UnitPhase::Decided {
                outcome: Outcome::Skipped,
                reason: reason.clone(),
            };
            self.units[u].progress.held = Some(hold);
        }
        self.skip_rest(u, &reason);
    }

    /// Sets the reason the run stops early, unless it has as good a reason already; a forced
    /// stop stops the running containers.
    fn begin_cancel(&mut self, reason: CancelReason) {
        if self
            .cancel
            .as_ref()
            .is_some_and(|current| *current >= reason)
        {
            return;
        }
        if matches!(reason, CancelReason::Forced | CancelReason::DiskFull(_)) {
            let _ = self.cancel_tx.send(true);
        }
        self.cancel = Some(reason.clone());
        self.events.push(RunEvent::Cancelling { reason });
    }

    /// Starts every ready node that limits allow (nothing once the run stops early); returns
    /// when a rate limit or a retry backoff next allows one.
    fn start_ready(&mut self) -> Option<Instant> {
        if self.cancel.is_some() {
            return None;
        }
        let now = Instant::now();
        let wall = crate::state::now_ms().max(0) as u64;
        let mut wake: Option<Instant> = None;
        let wake_at = |ms: u64, wake: &mut Option<Instant>| {
            let at = now + Duration::from_millis(ms.saturating_sub(wall).max(1));
            *wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        };
        while let Some(Reverse((at, idx))) = self.delayed.peek().copied() {
            if at > now {
                wake = Some(at);
                break;
            }
            self.delayed.pop();
            self.set(idx, NodeStatus::Ready);
        }
        let mut starting = Vec::new();
        let mut held = Vec::new();
        for (class, queue) in &mut self.ready {
            // Nodes before `at` wait for the budget; those behind them may start meanwhile.
            let mut at = 0;
            while let Some(&idx) = queue.get(at) {
                match self.limits.check(class, now) {
                    Admission::Now => {
                        let u = self.nodes[idx].unit;
                        // A unit starts in its rollout wave; publish happens in a window.
                        if !unit_started(&self.nodes, &self.units[u]) {
                            match self.rollout.gate(u, wall) {
                                Gate::Now => {}
                                Gate::At(ms) => {
                                    wake_at(ms, &mut wake);
                                    at += 1;
                                    continue;
                                }
                                Gate::Wait => {
                                    at += 1;
                                    continue;
                                }
                                Gate::Halted(reason) => {
                                    queue.remove(at);
                                    held.push((idx, Hold::Rollout, reason));
                                    continue;
                                }
                            }
                        }
                        if self.nodes[idx].kind == NodeKind::Publish {
                            if let Some(ms) = self.rollout.publish_at(wall) {
                                wake_at(ms, &mut wake);
                                at += 1;
                                continue;
                            }
                            if let Some(reason) = self.rollout.publish_full(u) {
                                // A merge of this run may close one; else people must.
                                if merge_may_free(&self.nodes, &self.units) {
                                    at += 1;
                                } else {
                                    queue.remove(at);
                                    held.push((
                                        idx,
                                        Hold::OpenPrs,
                                        format!("{reason}; publish waits for fewer"),
                                    ));
                                }
                                continue;
                            }
                            self.rollout.publishing(u);
                        }
                        // A unit's first node to start reserves its budget cap; one the rest
                        // cannot cover waits while running units hold part of it, else it is
                        // held back.
                        if !self.budget.holds(u) {
                            let before = Spend::of(&unit_usage(&self.nodes, &self.units[u]));
                            match self.budget.reserve(u, before) {
                                Ok(None) => {}
                                Ok(Some(held)) => self.events.push(RunEvent::BudgetReserved {
                                    unit: self.units[u].run.unit().id.clone(),
                                    usd: held.usd,
                                    tokens: held.tokens,
                                }),
                                Err(wait) if wait.wait => {
                                    at += 1;
                                    continue;
                                }
                                Err(short) => {
                                    queue.remove(at);
                                    held.push((idx, Hold::Budget, short.reason));
                                    continue;
                                }
                            }
                        }
                        queue.remove(at);
                        self.limits.start(class, now);
                        starting.push(idx);
                    }
                    Admission::At(at) => {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                        break;
                    }
                    Admission::Full => break,
                }
            }
        }
        self.ready.retain(|_, q| !q.is_empty());
        for (idx, hold, reason) in held {
            self.hold_back(self.nodes[idx].unit, hold, reason);
        }
        if starting.is_empty() {
            return wake;
        }
        for &idx in &starting {
            self.set(idx, NodeStatus::Running);
            let node = &mut self.nodes[idx];
            node.attempt += 1;
            let pool = match &node.class {
                Class::Agent { pool, model } => Some(PoolStart {
                    pool: pool.clone(),
                    model: model.clone(),
                }),
                _ => None,
            };
            self.events.push(RunEvent::NodeStarted {
                node: node.id.clone(),
                attempt: node.attempt,
                pool,
            });
        }
        // The starts are queued before the tasks exist, so each commits before anything its
        // task writes (the container id above all, waited for before the container starts).
        self.flush();
        for idx in starting {
            self.spawn(idx);
        }
        wake
    }

    /// Runs a node whose start is queued as a task of its own.
    fn spawn(&mut self, idx: usize) {
        tracing::debug!(node = %self.nodes[idx].id, "start");
        self.running += 1;
        let u = self.nodes[idx].unit;
        let budget =
            (self.budget).allowance(u, Spend::of(&unit_usage(&self.nodes, &self.units[u])));
        let node = &mut self.nodes[idx];
        let unit = &self.units[node.unit];
        let ctx = NodeCtx {
            loaded: self.ex.loaded.clone(),
            unit: unit.run.clone(),
            node: node.id.clone(),
            kind: node.kind,
            attempt: node.attempt,
            qa_failure: unit.progress.qa_failure.clone(),
            base: unit.progress.base.clone(),
            qa_passed: unit.progress.qa_passed,
            pr: unit.progress.pr.clone(),
            no_changes: unit.progress.no_changes.clone(),
            runtime: self.ex.runtime.clone(),
            forge: self.ex.forge.clone(),
            journal: self.ex.journal.clone(),
            run_id: self.ex.run_id.clone(),
            keep_containers: self.ex.options.keep_containers,
            cancel: self.cancel_tx.subscribe(),
            reattach: node.reattach.take(),
            containers: node::Containers::default(),
            reports: node::Reports::default(),
            session: node.session.clone(),
            budget,
            cache_dir: self.cache_dir.clone(),
            state_dir: self.ex.state_dir.clone(),
        };
        let returned = self.returned_tx.clone();
        let runner = self.ex.runner.clone();
        let containers = ctx.containers.clone();
        let reports = ctx.reports.clone();
        tokio::spawn(async move {
            let result = runner.run(ctx).await;
            let _ = returned.send(Returned {
                idx,
                result,
                containers: containers.take(),
                reports: reports.take(),
            });
        });
    }

    /// Reports and journals the events decided so far.
    fn flush(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let events = self.report();
        self.ex.journal.record(&self.ex.run_id, events);
    }

    /// Shows the events decided so far to the reporter (by reference) and hands them over for
    /// the journal: the same values, in the same order.
    fn report(&mut self) -> Vec<RunEvent> {
        let events = std::mem::take(&mut self.events);
        for event in &events {
            self.ex.reporter.event(event);
        }
        events
    }

    /// Removes the containers of nodes whose ends are committed (unless they are kept), in a
    /// task of its own: dependents and freed slots need not wait for it.
    fn remove_containers(&mut self, batch: &[Returned]) {
        if self.ex.options.keep_containers || batch.iter().all(|r| r.containers.is_empty()) {
            return;
        }
        let containers: Vec<String> = batch
            .iter()
            .flat_map(|r| r.containers.iter().cloned())
            .collect();
        let runtime = self.ex.runtime.clone();
        self.writes.retain(|task| !task.is_finished());
        self.writes.push(tokio::spawn(async move {
            for id in containers {
                if let Err(error) = runtime.remove(&id).await {
                    tracing::warn!(container = %id, %error, "cannot remove a finished container");
                }
            }
        }));
    }

    /// Writes `meta/status.json`, the derived view of a finished unit for people and scripts
    /// (atomically: a temporary file renamed into place). Units that never reached prep have
    /// no workspace and get none.
    fn write_status(&mut self, u: usize, result: &UnitResult) {
        if !result.meta.is_dir() {
            return;
        }
        let nodes: Vec<serde_json::Value> = self.units[u]
            .nodes
            .iter()
            .map(|&n| {
                let node = &self.nodes[n];
                let mut json = serde_json::json!({ "id": node.id, "status": node.status, "attempts": node.attempt });
                if node.usage.runs > 0 {
                    json["usage"] = serde_json::json!(node.usage);
                }
                json
            })
            .collect();
        let status = serde_json::json!({
            "run": self.ex.run_id,
            "unit": result.id,
            "outcome": result.outcome,
            "reason": result.reason,
            "pr": result.pr,
            "usage": result.usage,
            "nodes": nodes,
        });
        let path = result.meta.join("status.json");
        self.writes.push(tokio::spawn(async move {
            let text = format!("{status:#}\n");
            if let Err(error) = crate::runtime::mounted::write(&path, text.as_bytes()).await {
                tracing::warn!(%error, path = %path.display(), "cannot write the unit's status.json");
            }
        }));
    }

    /// After the loop: whatever never ran was cancelled (the run stopped) or is unreachable.
    /// Waits for the writes still under way; returns every unit's result in plan order.
    pub(super) async fn finish(mut self) -> (Executor<R, F, N>, bool, Vec<UnitResult>) {
        for u in 0..self.units.len() {
            if matches!(self.units[u].phase, UnitPhase::Finished(_)) {
                continue;
            }
            if self.units[u].phase == UnitPhase::Open {
                let mut reason = "the run was stopped before this unit finished".to_owned();
                if let Some(CancelReason::DiskFull(dir)) = &self.cancel {
                    reason.push_str(&format!(": the disk holding {dir} is full"));
                }
                self.units[u].phase = UnitPhase::Decided {
                    outcome: Outcome::Cancelled,
                    reason,
                };
            }
            for i in 0..self.units[u].nodes.len() {
                let n = self.units[u].nodes[i];
                if !self.nodes[n].status.is_terminal() {
                    self.end_unrun(n, NodeStatus::Cancelled, "the run was stopped");
                }
            }
            self.settled.clear();
            self.finish_unit_if_done(u);
        }
        self.flush();
        for write in std::mem::take(&mut self.writes) {
            let _ = write.await;
        }
        let cancelled = self.cancel.is_some();
        let results = self.results.into_iter().flatten().collect();
        (self.ex, cancelled, results)
    }

    /// Restores a node to what the journal recorded of it (`dispatch resume`); not a
    /// transition, so it bypasses [`Self::set`].
    pub(super) fn restore(&mut self, idx: usize, status: NodeStatus, attempt: u32) {
        self.nodes[idx].status = status;
        self.nodes[idx].attempt = attempt;
    }
}

/// Which end of the loop's wait came first.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
