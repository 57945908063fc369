//! The executor: runs a plan's DAG.
//!
//! The dispatcher (this module) is the only place that decides state: it owns every node's
//! [`NodeStatus`], the [`Limits`] and the ready queues. Node handlers ([`node`]) run as tasks
//! and report back through a channel; a node starts the moment its dependencies are done and
//! a slot is free, and the only timer is the one a rate limit asks for. No polling.
//!
//! Invariants:
//! - nothing depends on an unrecorded transition: a node's `Started` is queued to the journal
//!   before its task exists, so it commits before anything the task writes (the container id,
//!   committed before the container starts); its `Finished` is committed before its result
//!   takes effect (dependents start, its unit moves on, its containers are removed);
//! - a node's slot is free once its handler returns; the journal commits in queue order, so no
//!   start it lets in commits before that end, and the journal never shows more nodes running
//!   than the limits allow;
//! - a failed node never stops other units: its unit's remaining nodes, and units that need
//!   it, end `skipped` with the reason;
//! - QA failure with fix attempts left moves the agent node back to `Ready` and the QA node
//!   back to `Pending` (same ids, attempt + 1);
//! - every unit ends with exactly one [`Outcome`].
//!
//! Control: the first interrupt stops scheduling and lets running nodes finish; the second
//! stops running containers (their units end `cancelled`).

pub mod cache;
pub mod error;
pub mod limits;
pub mod node;
pub mod outcome;
#[cfg(test)]
mod testing;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::forge::{Forge, PrRef};
use crate::plan::{self, NodeKind, Plan};
use crate::runtime::Runtime;
use crate::spec::values::AgentRef;
use crate::spec::LoadedSpec;
use crate::state::{now, Journal, NodeChange, NodeWriter};
use limits::{Admission, Class, Limits};
pub use node::Handlers;
use node::{NodeCtx, NodeResult, NodeRunner, UnitRun};
pub use outcome::{NodeStatus, Outcome};

/// Retries of a node's transient infrastructure failures when the spec sets none.
pub const DEFAULT_RETRIES: u32 = 2;

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Keep containers after they finish (for debugging).
    pub keep_containers: bool,
    /// Do not take agent results from the cache (results are still stored).
    pub no_cache: bool,
}

/// How one unit ended.
#[derive(Clone, Debug, Serialize)]
pub struct UnitResult {
    /// Unit id.
    pub id: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Why, when there is something to say.
    pub reason: Option<String>,
    /// The PR, e.g. `local:core/go-io#3`.
    pub pr: Option<String>,
    /// Logs and prompt of the unit.
    pub meta: PathBuf,
}

/// Receives what happens, for progress output.
pub trait Reporter: Send + Sync {
    /// A node started.
    fn node_started(&self, node: &str);
    /// A node reached a terminal status (or failed QA before a fix attempt).
    fn node_finished(&self, node: &str, status: NodeStatus, reason: Option<&str>);
    /// A unit ended.
    fn unit_finished(&self, result: &UnitResult);
    /// A message for the user.
    fn note(&self, message: &str);
}

/// What the executor works with.
pub struct Executor<R: Runtime, F: Forge, N: NodeRunner<R, F> = Handlers> {
    /// The validated spec.
    pub loaded: Arc<LoadedSpec>,
    /// Container engine.
    pub runtime: Arc<R>,
    /// Forge.
    pub forge: Arc<F>,
    /// Journal writer.
    pub journal: Journal,
    /// Run id.
    pub run_id: String,
    /// State directory (workspaces live under it).
    pub state_dir: PathBuf,
    /// Options.
    pub options: RunOptions,
    /// Progress output.
    pub reporter: Arc<dyn Reporter>,
    /// What runs the nodes ([`Handlers`]).
    pub runner: Arc<N>,
}

struct Node {
    id: String,
    unit: usize,
    kind: NodeKind,
    class: Class,
    status: NodeStatus,
    waiting: usize,
    dependents: Vec<usize>,
    attempt: u32,
    /// A container of an earlier runner to collect (resume).
    reattach: Option<String>,
}

struct UnitState {
    run: Arc<UnitRun>,
    nodes: Vec<usize>,
    outcome: Option<Outcome>,
    reason: Option<String>,
    hint: Option<Outcome>,
    pr: Option<PrRef>,
    base: Option<String>,
    qa_passed: bool,
    qa_failure: Option<String>,
    fixes_left: u32,
    finished: bool,
}

/// A node start to record.
struct Start {
    node: String,
    attempt: u32,
    /// The agent pool and model the start counts against.
    pool: Option<(String, Option<String>)>,
}

/// A node end to record.
struct End {
    node: String,
    change: NodeChange,
    /// The unit and reference of a PR the node opened.
    pr: Option<(String, String)>,
}

/// Finished nodes with the result of committing their transitions.
type Committed = (Vec<Finished>, Result<(), String>);

/// A node whose handler returned: its index, result and the containers it ran.
type Finished = (usize, NodeResult, Vec<String>);

struct Dispatcher<R: Runtime, F: Forge, N: NodeRunner<R, F>> {
    ex: Executor<R, F, N>,
    nodes: Vec<Node>,
    units: Vec<UnitState>,
    ready: BTreeMap<Class, VecDeque<usize>>,
    limits: Limits,
    /// Nodes whose handlers run.
    running: usize,
    /// Nodes whose handlers returned and whose ends are being committed. Their slots are free
    /// already; their results take effect once committed.
    recording: usize,
    stopping: bool,
    cancel_tx: watch::Sender<bool>,
    done_tx: mpsc::UnboundedSender<Finished>,
    /// Where agent results are cached, unless the run does without.
    cache_dir: Option<PathBuf>,
    /// Each unit's result once it ended, by unit (in plan order).
    results: Vec<Option<UnitResult>>,
    /// Nodes waiting out a retry backoff, earliest first.
    delayed: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
    /// `status.json` writes and container removals still under way (awaited before the run
    /// ends, so no container outlives its run).
    writes: Vec<tokio::task::JoinHandle<()>>,
}

fn agent_class(agent: &AgentRef) -> Class {
    Class::Agent {
        pool: agent.pool().to_owned(),
        model: agent.model().map(str::to_owned),
    }
}

/// Records the run, its units and nodes in the journal (one transaction). The run keeps the
/// plan's [`plan::fingerprint`], for `dispatch resume` to check ([`plan::same_plan`]).
pub async fn record_run(
    journal: &Journal,
    run_id: &str,
    spec_path: &str,
    plan: &Arc<Plan>,
) -> Result<(), crate::state::StateError> {
    let fingerprint = plan::fingerprint(plan);
    let (run_id, spec_path, plan) = (run_id.to_owned(), spec_path.to_owned(), Arc::clone(plan));
    journal
        .write(move |t| {
            t.execute(
                "INSERT INTO runs (id, spec_path, spec_name, plan, status, pid, started_at) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
                params![run_id, spec_path, plan.spec, fingerprint, std::process::id(), now()],
            )?;
            let mut unit_row = t.prepare("INSERT INTO units (run_id, id, job, org, repo, key, workspace, ord) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
            let mut node_row = t.prepare("INSERT INTO nodes (run_id, id, unit_id, kind, status, ord) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)")?;
            let mut ord = 0;
            for (u, unit) in plan.units.iter().enumerate() {
                unit_row.execute(params![run_id, unit.id, unit.job, unit.org, unit.repo, unit.key, unit.workspace, u])?;
                for node in &unit.nodes {
                    node_row.execute(params![run_id, node.id, unit.id, node.kind.as_str(), ord])?;
                    ord += 1;
                }
            }
            Ok(())
        })
        .await
}

/// Runs the plan to the end and returns one result per unit, in plan order. `interrupts`
/// delivers Ctrl-C presses (or test stand-ins).
///
/// `resumed` holds the journal's units and nodes of a run whose runner died: finished nodes
/// keep their state, nodes with a container are re-attached, the rest run.
pub async fn execute<R: Runtime, F: Forge, N: NodeRunner<R, F>>(
    ex: Executor<R, F, N>,
    plan: &Arc<Plan>,
    limits: Limits,
    mut interrupts: mpsc::UnboundedReceiver<()>,
    resumed: Option<Vec<crate::state::views::UnitRow>>,
) -> Vec<UnitResult> {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (committed_tx, mut committed_rx) = mpsc::unbounded_channel();
    let (cancel_tx, _) = watch::channel(false);
    let mut d = Dispatcher {
        nodes: Vec::new(),
        units: Vec::new(),
        ready: BTreeMap::new(),
        limits,
        running: 0,
        recording: 0,
        stopping: false,
        cancel_tx,
        done_tx,
        results: Vec::new(),
        cache_dir: (!ex.options.no_cache).then(|| cache::dir(&ex.state_dir)),
        writes: Vec::new(),
        delayed: Default::default(),
        ex,
    };
    d.build(plan);
    if let Some(rows) = resumed {
        d.resume(&rows);
    }
    d.queue_ready();
    let mut interrupts_open = true;
    loop {
        let wake = d.dispatch();
        if d.running == 0 && d.recording == 0 && (d.stopping || wake.is_none()) {
            break;
        }
        tokio::select! {
            Some(first) = done_rx.recv() => {
                // Everything that finished meanwhile is recorded in one commit; the results
                // take effect (dependents start) once it is committed.
                let mut batch = vec![first];
                while let Ok(more) = done_rx.try_recv() {
                    batch.push(more);
                }
                for (idx, _, _) in &batch {
                    d.release(*idx);
                }
                d.record_finished(batch, committed_tx.clone());
            }
            Some((batch, written)) = committed_rx.recv() => {
                match written {
                    // Only now that the nodes' ends are recorded may their containers go.
                    Ok(()) => d.remove_containers(&batch),
                    Err(error) => if !d.stopping {
                        d.stopping = true;
                        d.ex.reporter.note(&format!("error: the journal failed ({error}); no new nodes start"));
                    }
                }
                for (idx, result, _) in batch {
                    d.recording -= 1;
                    d.complete(idx, result);
                }
            }
            () = sleep_until(wake), if wake.is_some() => {}
            pressed = interrupts.recv(), if interrupts_open => match pressed {
                Some(()) => d.interrupt(),
                None => interrupts_open = false,
            },
        }
    }
    d.finish_all();
    for write in std::mem::take(&mut d.writes) {
        let _ = write.await;
    }
    let (run_id, status) = (
        d.ex.run_id.clone(),
        if d.stopping { "cancelled" } else { "finished" },
    );
    if let Err(error) =
        d.ex.journal
            .write(move |t| {
                t.execute(
                    "UPDATE runs SET status = ?2, finished_at = ?3 WHERE id = ?1",
                    params![run_id, status, now()],
                )?;
                Ok(())
            })
            .await
    {
        d.ex.reporter.note(&format!(
            "warning: the journal could not record the end of the run: {error}"
        ));
    }
    d.results.into_iter().flatten().collect()
}

/// An outcome from its journal text.
fn parse_outcome(text: &str) -> Option<Outcome> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

/// A PR from its reference (`local:org/repo#3`, or a URL ending in the number).
fn parse_pr(reference: &str) -> Option<PrRef> {
    let number = reference.rsplit(['#', '/']).next()?.parse().ok()?;
    Some(PrRef {
        number,
        reference: reference.to_owned(),
        created: false,
    })
}

/// The journal row a handler's result leaves.
fn finished_change(result: &NodeResult) -> NodeChange {
    let (status, exit_code, reason) = match result {
        NodeResult::Done { .. } => ("done", None, None),
        NodeResult::Stop {
            outcome: Outcome::NoChanges,
            reason,
            ..
        } => ("done", None, Some(reason.clone())),
        NodeResult::Stop {
            outcome: Outcome::Cancelled,
            reason,
            exit_code,
        } => ("cancelled", *exit_code, Some(reason.clone())),
        NodeResult::Stop {
            outcome,
            reason,
            exit_code,
        } => ("failed", *exit_code, Some(format!("{outcome}: {reason}"))),
        NodeResult::QaFailed { step, .. } => ("failed", None, Some(format!("qa_failed: {step}"))),
        NodeResult::Failed(error) => (
            "failed",
            None,
            Some(format!("{}: {error}", error.verdict().outcome)),
        ),
    };
    NodeChange::Finished {
        status,
        exit_code,
        reason,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<R: Runtime, F: Forge, N: NodeRunner<R, F>> Dispatcher<R, F, N> {
    fn build(&mut self, plan: &Arc<Plan>) {
        let loaded = &self.ex.loaded;
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(plan.counts.nodes);
        self.nodes.reserve(plan.counts.nodes);
        self.units.reserve(plan.units.len());
        self.results = std::iter::repeat_with(|| None)
            .take(plan.units.len())
            .collect();
        for (u, unit) in plan.units.iter().enumerate() {
            let run = UnitRun::new(loaded, plan, u, &self.ex.state_dir);
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
                });
            }
            self.units.push(UnitState {
                run: Arc::new(run),
                nodes: ids,
                outcome: None,
                reason: None,
                hint: None,
                pr: None,
                base: None,
                qa_passed: false,
                qa_failure: None,
                fixes_left: unit.fix_attempts,
                finished: false,
            });
        }
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

    /// Queues every pending node whose dependencies are satisfied (and nodes a resume made
    /// ready).
    fn queue_ready(&mut self) {
        for i in 0..self.nodes.len() {
            let status = self.nodes[i].status;
            if (status == NodeStatus::Pending && self.nodes[i].waiting == 0)
                || status == NodeStatus::Ready
            {
                self.make_ready(i);
            }
        }
    }

    /// Takes over the state the journal recorded for a run whose runner died.
    fn resume(&mut self, rows: &[crate::state::views::UnitRow]) {
        let by_id: HashMap<String, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        for row in rows {
            for node in &row.nodes {
                let Some(&i) = by_id.get(&node.id) else {
                    continue;
                };
                let n = &mut self.nodes[i];
                n.attempt = u32::try_from(node.attempts).unwrap_or(0);
                n.status = match node.status.as_str() {
                    "done" => NodeStatus::Done,
                    "failed" => NodeStatus::Failed,
                    "skipped" => NodeStatus::Skipped,
                    "cancelled" => NodeStatus::Cancelled,
                    "running" => {
                        // It runs again as the same attempt, or its container is collected.
                        n.attempt = n.attempt.saturating_sub(1);
                        n.reattach = node
                            .container_id
                            .clone()
                            .filter(|_| matches!(n.kind, NodeKind::Agent | NodeKind::Review));
                        NodeStatus::Ready
                    }
                    _ => NodeStatus::Pending,
                };
            }
        }
        let unit_rows: HashMap<&str, &crate::state::views::UnitRow> =
            rows.iter().map(|r| (r.id.as_str(), r)).collect();
        for u in 0..self.units.len() {
            let nodes = self.units[u].nodes.clone();
            let unit = &mut self.units[u];
            unit.base = std::fs::read_to_string(unit.run.note(node::BASE_NOTE))
                .ok()
                .map(|b| b.trim().to_owned())
                .filter(|b| !b.is_empty());
            unit.qa_failure = std::fs::read_to_string(unit.run.note(node::QA_FAILURE_NOTE)).ok();
            if let Some(row) = unit_rows.get(unit.run.unit().id.as_str()) {
                unit.pr = row.pr.as_deref().and_then(parse_pr);
                if let Some(outcome) = row.outcome.as_deref().and_then(parse_outcome) {
                    unit.outcome = Some(outcome);
                    unit.reason = row.reason.clone();
                }
            }
            for &n in &nodes {
                let node = &self.nodes[n];
                match (node.kind, node.status) {
                    (NodeKind::Agent, NodeStatus::Done) => unit.hint = Some(Outcome::Changed),
                    (NodeKind::Qa, NodeStatus::Done) => unit.qa_passed = true,
                    (NodeKind::Merge, NodeStatus::Done) => unit.hint = Some(Outcome::Merged),
                    _ => {}
                }
                if node.kind == NodeKind::Agent {
                    unit.fixes_left = unit
                        .fixes_left
                        .saturating_sub(node.attempt.saturating_sub(1));
                }
            }
            // A node that failed before its unit's outcome was recorded: the outcome is the
            // prefix of the node's reason (`agent_failed: ...`).
            if unit.outcome.is_none() {
                let failed = unit_rows
                    .get(unit.run.unit().id.as_str())
                    .and_then(|row| row.nodes.iter().find(|n| n.status == "failed"))
                    .and_then(|n| n.reason.clone());
                if let Some(reason) = failed {
                    let (outcome, rest) = reason
                        .split_once(": ")
                        .unwrap_or(("infra_error", reason.as_str()));
                    unit.outcome = Some(parse_outcome(outcome).unwrap_or(Outcome::InfraError));
                    unit.reason = Some(rest.to_owned());
                }
            }
            if unit.outcome.is_some() {
                for &n in &nodes {
                    if !self.nodes[n].status.is_terminal() {
                        self.nodes[n].status = NodeStatus::Skipped;
                        self.nodes[n].reattach = None;
                    }
                }
            }
        }
        // Dependencies left to wait for.
        let mut waiting = vec![0usize; self.nodes.len()];
        for i in 0..self.nodes.len() {
            let u = self.nodes[i].unit;
            let ok = match self.nodes[i].status {
                NodeStatus::Done => true,
                NodeStatus::Skipped => self.units[u].outcome.is_none_or(Outcome::is_success),
                _ => false,
            };
            if !ok {
                for &d in &self.nodes[i].dependents {
                    waiting[d] += 1;
                }
            }
        }
        for (i, w) in waiting.into_iter().enumerate() {
            self.nodes[i].waiting = w;
        }
        for u in 0..self.units.len() {
            self.finish_unit_if_done(u);
        }
    }

    fn make_ready(&mut self, idx: usize) {
        let node = &mut self.nodes[idx];
        node.status = NodeStatus::Ready;
        // The class is cloned only for a queue that does not exist yet.
        match self.ready.get_mut(&node.class) {
            Some(queue) => queue.push_back(idx),
            None => {
                self.ready.insert(node.class.clone(), VecDeque::from([idx]));
            }
        }
    }

    /// Starts every ready node that limits allow; returns when a rate limit next allows one.
    fn dispatch(&mut self) -> Option<Instant> {
        if self.stopping {
            return None;
        }
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        // Retries whose backoff is over are ready again.
        while let Some(std::cmp::Reverse((at, idx))) = self.delayed.peek().copied() {
            if at > now {
                wake = Some(at);
                break;
            }
            self.delayed.pop();
            self.make_ready(idx);
        }
        let mut starting = Vec::new();
        for (class, queue) in &mut self.ready {
            while let Some(&idx) = queue.front() {
                match self.limits.check(class, now) {
                    Admission::Now => {
                        queue.pop_front();
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
        if !starting.is_empty() {
            self.record_started(&starting);
            for idx in starting {
                self.spawn(idx);
            }
        }
        wake
    }

    /// Marks nodes running and queues their `Started` transitions in one write, before their
    /// tasks exist, so each commits before anything its task writes (the container id above
    /// all, which is waited for before the container starts); nothing waits for the write
    /// itself. The start of an agent also counts against `daily_limit` in later runs.
    fn record_started(&mut self, starting: &[usize]) {
        let at_ms = crate::state::now_ms();
        let starts: Vec<Start> = starting
            .iter()
            .map(|&idx| {
                let node = &mut self.nodes[idx];
                node.status = NodeStatus::Running;
                node.attempt += 1;
                self.ex.reporter.node_started(&node.id);
                let pool = match &node.class {
                    Class::Agent { pool, model } => Some((pool.clone(), model.clone())),
                    _ => None,
                };
                Start {
                    node: node.id.clone(),
                    attempt: node.attempt,
                    pool,
                }
            })
            .collect();
        let run = self.ex.run_id.clone();
        self.ex.journal.submit(move |t| {
            let mut nodes = NodeWriter::new(t);
            for Start {
                node,
                attempt,
                pool,
            } in starts
            {
                if let Some((pool, model)) = pool {
                    t.prepare_cached("INSERT INTO starts (pool, model, at) VALUES (?1, ?2, ?3)")?
                        .execute(params![pool, model, at_ms / 1000])?;
                }
                nodes.apply(&run, &node, &NodeChange::Started { attempt }, at_ms)?;
            }
            Ok(())
        });
    }

    /// Runs a node whose start is queued ([`Self::record_started`]) as a task of its own.
    fn spawn(&mut self, idx: usize) {
        tracing::debug!(node = %self.nodes[idx].id, "start");
        self.running += 1;
        let node = &mut self.nodes[idx];
        let unit = &self.units[node.unit];
        let ctx = NodeCtx {
            loaded: self.ex.loaded.clone(),
            unit: unit.run.clone(),
            node: node.id.clone(),
            kind: node.kind,
            attempt: node.attempt,
            qa_failure: unit.qa_failure.clone(),
            base: unit.base.clone(),
            qa_passed: unit.qa_passed,
            pr: unit.pr.clone(),
            runtime: self.ex.runtime.clone(),
            forge: self.ex.forge.clone(),
            journal: self.ex.journal.clone(),
            run_id: self.ex.run_id.clone(),
            keep_containers: self.ex.options.keep_containers,
            cancel: self.cancel_tx.subscribe(),
            reattach: node.reattach.take(),
            containers: node::Containers::default(),
            cache_dir: self.cache_dir.clone(),
            state_dir: self.ex.state_dir.clone(),
        };
        let done = self.done_tx.clone();
        let runner = self.ex.runner.clone();
        let containers = ctx.containers.clone();
        tokio::spawn(async move {
            let result = runner.run(ctx).await;
            let _ = done.send((idx, result, containers.take()));
        });
    }

    /// Queues the `Finished` transitions of nodes whose handlers returned and hands the batch
    /// back through `committed` once they are committed, so nothing depends on an unrecorded
    /// transition while the dispatcher keeps starting other nodes. A journal that fails stops
    /// scheduling.
    fn record_finished(
        &mut self,
        batch: Vec<Finished>,
        committed: mpsc::UnboundedSender<Committed>,
    ) {
        let run = self.ex.run_id.clone();
        let ends: Vec<End> = batch
            .iter()
            .map(|(idx, result, _)| {
                // A PR a node opened is its unit's from the same commit on (a resumed run
                // needs it for merge).
                let pr = match result {
                    NodeResult::Done { pr: Some(pr), .. } => Some((
                        self.units[self.nodes[*idx].unit].run.unit().id.clone(),
                        pr.reference.clone(),
                    )),
                    _ => None,
                };
                End {
                    node: self.nodes[*idx].id.clone(),
                    change: finished_change(result),
                    pr,
                }
            })
            .collect();
        self.ex.journal.enqueue_then(
            move |t| {
                let mut nodes = NodeWriter::new(t);
                let at_ms = crate::state::now_ms();
                for End { node, change, pr } in ends {
                    nodes.apply(&run, &node, &change, at_ms)?;
                    if let Some((unit, reference)) = pr {
                        t.prepare_cached("UPDATE units SET pr = ?3 WHERE run_id = ?1 AND id = ?2")?
                            .execute(params![run, unit, reference])?;
                    }
                }
                Ok(())
            },
            // Straight from the writer to the dispatcher: its results take effect at once.
            move |written| {
                let _ = committed.send((batch, written));
            },
        );
    }

    /// Removes the containers of nodes whose ends are committed (unless they are kept), in a
    /// task of its own: dependents and freed slots need not wait for it.
    fn remove_containers(&mut self, batch: &[Finished]) {
        if self.ex.options.keep_containers || batch.iter().all(|(_, _, c)| c.is_empty()) {
            return;
        }
        let containers: Vec<String> = batch
            .iter()
            .flat_map(|(_, _, c)| c.iter().cloned())
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

    /// Whether an `infra_error` of this node may be retried (the job's `retries`, default 2).
    fn retry_left(&self, idx: usize) -> bool {
        let unit = &self.units[self.nodes[idx].unit];
        let spec = &self.ex.loaded.spec;
        let retries = spec.jobs[unit.run.job]
            .retries
            .or(spec.defaults.retries)
            .unwrap_or(DEFAULT_RETRIES);
        self.nodes[idx].attempt <= retries
    }

    /// Puts a node that hit a transient infrastructure failure back after a backoff with
    /// jitter (1 s, 2 s, 4 s ... up to a minute, plus up to a quarter more).
    fn retry_later(&mut self, idx: usize, reason: String) {
        let attempt = self.nodes[idx].attempt;
        let base = Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6))
            .min(Duration::from_secs(60));
        let jitter = Duration::from_millis(
            u64::from(std::process::id() ^ attempt.wrapping_mul(2_654_435_761))
                % (base.as_millis() as u64 / 4 + 1),
        );
        let at = Instant::now() + base + jitter;
        self.ex.reporter.node_finished(
            &self.nodes[idx].id,
            NodeStatus::Failed,
            Some(&format!(
                "{reason} (retrying in {:.1}s)",
                (base + jitter).as_secs_f64()
            )),
        );
        let (run, id) = (self.ex.run_id.clone(), self.nodes[idx].id.clone());
        self.ex
            .journal
            .submit(move |t| NodeChange::Reset.apply_to(t, &run, &id));
        self.nodes[idx].status = NodeStatus::Pending;
        self.delayed.push(std::cmp::Reverse((at, idx)));
    }

    fn interrupt(&mut self) {
        if !self.stopping {
            self.stopping = true;
            self.ex.reporter.note("Stopping: no new nodes start; running nodes finish. Press Ctrl-C again to stop them now.");
        } else {
            let _ = self.cancel_tx.send(true);
            self.ex
                .reporter
                .note("Stopping the running containers; their units end cancelled.");
        }
    }

    /// A node's handler returned: its slot is free for other nodes at once (its end is queued
    /// before any later start, so the journal never shows more running than the limits
    /// allow); what its result decides waits for the commit ([`Self::complete`]).
    fn release(&mut self, idx: usize) {
        self.running -= 1;
        self.recording += 1;
        self.limits.finish(&self.nodes[idx].class);
    }

    /// A node's end is committed: its result takes effect.
    fn complete(&mut self, idx: usize, result: NodeResult) {
        let u = self.nodes[idx].unit;
        match result {
            NodeResult::Done { base, pr, outcome } => {
                let unit = &mut self.units[u];
                if base.is_some() {
                    unit.base = base;
                }
                if let Some(pr) = pr {
                    // Already recorded, with the node's end.
                    unit.pr = Some(pr);
                }
                if outcome.is_some() {
                    unit.hint = outcome;
                }
                if self.nodes[idx].kind == NodeKind::Qa {
                    unit.qa_passed = true;
                }
                self.nodes[idx].status = NodeStatus::Done;
                self.ex
                    .reporter
                    .node_finished(&self.nodes[idx].id, NodeStatus::Done, None);
                self.settle(idx);
            }
            NodeResult::Stop {
                outcome, reason, ..
            } => self.stop_unit(idx, outcome, reason),
            NodeResult::Failed(error) => {
                let verdict = error.verdict();
                if verdict.retry && self.retry_left(idx) && !self.stopping {
                    self.retry_later(idx, error.to_string());
                } else {
                    self.stop_unit(idx, verdict.outcome, error.to_string());
                }
            }
            NodeResult::QaFailed { step, tail } => {
                let reason = format!("{step}\n{tail}");
                if self.units[u].fixes_left > 0 && !self.stopping {
                    self.fix_attempt(idx, reason);
                } else {
                    self.stop_unit(idx, Outcome::QaFailed, reason);
                }
            }
        }
        self.finish_unit_if_done(u);
    }

    /// QA failed with a fix attempt left: the agent runs again with the failure, then QA.
    fn fix_attempt(&mut self, qa_idx: usize, failure: String) {
        let u = self.nodes[qa_idx].unit;
        self.ex.reporter.node_finished(
            &self.nodes[qa_idx].id,
            NodeStatus::Failed,
            Some("QA failed; the agent gets another attempt"),
        );
        let unit = &mut self.units[u];
        unit.fixes_left -= 1;
        unit.qa_failure = Some(failure);
        let agent_idx = unit
            .nodes
            .iter()
            .copied()
            .find(|&n| self.nodes[n].kind == NodeKind::Agent)
            .expect("a unit with QA has an agent node");
        for idx in [agent_idx, qa_idx] {
            let (run, id) = (self.ex.run_id.clone(), self.nodes[idx].id.clone());
            self.ex
                .journal
                .submit(move |t| NodeChange::Reset.apply_to(t, &run, &id));
        }
        self.nodes[qa_idx].status = NodeStatus::Pending;
        self.nodes[qa_idx].waiting = 1;
        self.make_ready(agent_idx);
    }

    fn stop_unit(&mut self, idx: usize, outcome: Outcome, reason: String) {
        let u = self.nodes[idx].unit;
        let unit = &mut self.units[u];
        if unit.outcome.is_none() {
            unit.outcome = Some(outcome);
            unit.reason = Some(reason.clone());
        }
        let status = match outcome {
            Outcome::NoChanges => NodeStatus::Done,
            Outcome::Cancelled => NodeStatus::Cancelled,
            _ => NodeStatus::Failed,
        };
        self.nodes[idx].status = status;
        self.ex
            .reporter
            .node_finished(&self.nodes[idx].id, status, Some(&reason));
        let kind = self.nodes[idx].kind.as_str();
        let rest: Vec<usize> = self.units[u]
            .nodes
            .iter()
            .copied()
            .filter(|&n| !self.nodes[n].status.is_terminal())
            .collect();
        let skip_reason = format!("{kind} ended {outcome}");
        for &n in &rest {
            self.end_node(n, NodeStatus::Skipped, &skip_reason);
        }
        self.settle(idx);
        for n in rest {
            self.settle(n);
        }
    }

    /// Marks a node that never ran (skipped or cancelled) and records it.
    fn end_node(&mut self, idx: usize, status: NodeStatus, reason: &str) {
        if let Some(queue) = self.ready.get_mut(&self.nodes[idx].class) {
            queue.retain(|&n| n != idx);
        }
        self.nodes[idx].status = status;
        let (run, id, reason) = (
            self.ex.run_id.clone(),
            self.nodes[idx].id.clone(),
            reason.to_owned(),
        );
        let change = NodeChange::Finished {
            status: status.as_str(),
            exit_code: None,
            reason: Some(reason),
        };
        self.ex
            .journal
            .submit(move |t| change.apply_to(t, &run, &id));
    }

    /// A node became terminal: release or skip what depends on it.
    fn settle(&mut self, idx: usize) {
        let u = self.nodes[idx].unit;
        let unit_ok = self.units[u].outcome.is_none_or(Outcome::is_success);
        let ok = match self.nodes[idx].status {
            NodeStatus::Done => true,
            NodeStatus::Skipped => unit_ok,
            _ => false,
        };
        let dependents = self.nodes[idx].dependents.clone();
        for d in dependents {
            if self.nodes[d].status.is_terminal() || self.nodes[d].status == NodeStatus::Running {
                continue;
            }
            if ok {
                self.nodes[d].waiting = self.nodes[d].waiting.saturating_sub(1);
                if self.nodes[d].waiting == 0 && self.nodes[d].status == NodeStatus::Pending {
                    self.make_ready(d);
                }
            } else {
                let du = self.nodes[d].unit;
                let reason = format!(
                    "needs {} which ended {}",
                    self.nodes[idx].id,
                    self.units[u].outcome.unwrap_or(Outcome::Skipped)
                );
                if du == u {
                    self.end_node(d, NodeStatus::Skipped, &reason);
                    self.settle(d);
                } else {
                    self.skip_unit(du, &reason);
                }
                self.finish_unit_if_done(du);
            }
        }
    }

    fn skip_unit(&mut self, u: usize, reason: &str) {
        if self.units[u].outcome.is_none() {
            self.units[u].outcome = Some(Outcome::Skipped);
            self.units[u].reason = Some(reason.to_owned());
        }
        let rest: Vec<usize> = self.units[u]
            .nodes
            .iter()
            .copied()
            .filter(|&n| {
                !self.nodes[n].status.is_terminal() && self.nodes[n].status != NodeStatus::Running
            })
            .collect();
        for &n in &rest {
            self.end_node(n, NodeStatus::Skipped, reason);
        }
        for n in rest {
            self.settle(n);
        }
    }

    fn finish_unit_if_done(&mut self, u: usize) {
        let unit = &self.units[u];
        if unit.finished
            || !unit
                .nodes
                .iter()
                .all(|&n| self.nodes[n].status.is_terminal())
        {
            return;
        }
        let outcome = unit.outcome.or(unit.hint).unwrap_or(Outcome::Changed);
        let result = UnitResult {
            id: unit.run.unit().id.clone(),
            outcome,
            reason: unit.reason.clone(),
            pr: unit.pr.as_ref().map(|p| p.reference.clone()),
            meta: unit.run.meta_dir(),
        };
        self.units[u].finished = true;
        let (run, id, o, reason, pr) = (
            self.ex.run_id.clone(),
            result.id.clone(),
            outcome.as_str(),
            result.reason.clone(),
            result.pr.clone(),
        );
        self.ex.journal.submit(move |t| {
            t.prepare_cached(
                "UPDATE units SET outcome = ?3, reason = ?4, pr = ?5 WHERE run_id = ?1 AND id = ?2",
            )?
            .execute(params![run, id, o, reason, pr])?;
            Ok(())
        });
        tracing::info!(unit = %result.id, outcome = %outcome, "unit finished");
        self.write_status(u, &result);
        self.ex.reporter.unit_finished(&result);
        self.results[u] = Some(result);
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
            .map(|&n| serde_json::json!({ "id": self.nodes[n].id, "status": self.nodes[n].status.as_str(), "attempts": self.nodes[n].attempt }))
            .collect();
        let status = serde_json::json!({
            "run": self.ex.run_id,
            "unit": result.id,
            "outcome": result.outcome,
            "reason": result.reason,
            "pr": result.pr,
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

    /// After the loop: whatever never ran was cancelled (stop) or is unreachable.
    fn finish_all(&mut self) {
        for u in 0..self.units.len() {
            if self.units[u].finished {
                continue;
            }
            let pending: Vec<usize> = self.units[u]
                .nodes
                .iter()
                .copied()
                .filter(|&n| !self.nodes[n].status.is_terminal())
                .collect();
            if self.units[u].outcome.is_none() {
                self.units[u].outcome = Some(Outcome::Cancelled);
                self.units[u].reason =
                    Some("the run was stopped before this unit finished".to_owned());
            }
            for n in pending {
                self.end_node(n, NodeStatus::Cancelled, "the run was stopped");
            }
            self.finish_unit_if_done(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::local::LocalForge;
    use crate::runtime::noop::Noop;
    use crate::runtime::ContainerSpec;

    /// Host nodes answer at once; container nodes run a no-op container that takes a moment.
    struct NoopNodes;

    impl NodeRunner<Noop, LocalForge> for NoopNodes {
        async fn run(&self, ctx: NodeCtx<Noop, LocalForge>) -> NodeResult {
            if matches!(ctx.kind, NodeKind::Agent | NodeKind::Qa | NodeKind::Review) {
                let id = ctx
                    .runtime
                    .create(&ContainerSpec::default())
                    .await
                    .expect("noop create");
                let log = ctx.unit.meta_dir().join("noop.log");
                let timeout = Duration::from_secs(60);
                ctx.runtime
                    .run(&id, None, &log, timeout, ctx.cancel.clone())
                    .await
                    .expect("noop run");
                ctx.containers.push(id);
            }
            NodeResult::Done {
                base: None,
                pr: None,
                outcome: None,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_journal_never_shows_more_running_than_the_total_allows() {
        let mut text = String::from("version: 1\nname: limits\ndefaults: { org: core }\nlimits: { total: 2 }\njobs:\n  - id: j\n    task: t\n    qa: [{ run: 'true' }]\n    review: { agent: \"codex:review\" }\n    repos:\n");
        for i in 0..12 {
            text.push_str(&format!("      - r{i:02}\n"));
        }
        let (results, state) = testing::run(
            "limits",
            text,
            Noop::with_delay(Duration::from_millis(3)),
            Arc::new(NoopNodes),
        )
        .await;
        assert!(
            results.iter().all(|r| r.outcome.is_success()),
            "{results:?}"
        );

        let db = crate::state::open(&state).expect("the journal opens");
        let mut events = db
            .prepare("SELECT node_id, kind FROM events WHERE run_id = 'r1' ORDER BY seq")
            .expect("events are readable");
        let events: Vec<(String, String)> = events
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("events are readable")
            .map(|e| e.expect("an event row"))
            .collect();
        let (mut running, mut most) = (0, 0);
        for (node, kind) in &events {
            let container = [":agent", ":qa", ":review"]
                .iter()
                .any(|k| node.ends_with(k));
            match kind.as_str() {
                "started" if container => {
                    running += 1;
                    most = most.max(running);
                }
                "done" if container => running -= 1,
                _ => {}
            }
        }
        assert_eq!(running, 0, "every container node that started ended");
        assert_eq!(most, 2, "total 2, and the nodes did overlap: {events:?}");
        let _ = std::fs::remove_dir_all(&state);
    }
}
