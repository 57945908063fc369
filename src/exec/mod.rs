//! The executor: runs a plan's DAG.
//!
//! - [`dispatcher`]: the one place that decides state (every node and unit transition, the
//!   limits, the ready queues, cancellation); its module doc gives a node's life and the
//!   invariants the journal and the limits rely on.
//! - [`resume`]: how a run whose runner died is taken over from the journal.
//! - [`node`]: the node handlers, a file per kind (prep, agent, qa, publish, review, merge)
//!   and the one place that configures containers (`node/container.rs`), run as tasks that
//!   report back to the dispatcher.
//! - [`error`]: the typed errors handlers fail with, and the one verdict that maps each to an
//!   outcome and a retry decision.
//! - [`limits`]: slots and start rates, decided without I/O; [`cache`]: agent results kept
//!   for reuse.
//!
//! [`execute`] runs the loop: it waits on the handlers' returns, the journal's commits, the
//! one timer a rate limit or a retry backoff asks for, and the user's signals, and hands each
//! to the dispatcher. No polling. The first signal (Ctrl-C, SIGTERM, SIGHUP) stops scheduling
//! and lets running nodes finish; a second one (or SIGUSR1) stops the running containers
//! (their units end `cancelled`).

pub mod budget;
pub mod cache;
pub mod dispatcher;
pub mod error;
pub mod limits;
pub mod node;
pub mod resume;
pub mod rollout;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::agents::output::Usage;
use crate::forge::Forge;
use crate::plan::{self, Plan};
use crate::runtime::Runtime;
use crate::spec::LoadedSpec;
use crate::state::{Journal, NewRun, NewUnit, RunEvent, StateError};
use crate::vocab::{Outcome, RunStatus};
pub use dispatcher::Signal;
use dispatcher::{sleep_until, Dispatcher, Event, Next};
use limits::Limits;
pub use node::Handlers;
use node::NodeRunner;

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Keep containers after they finish (for debugging).
    pub keep_containers: bool,
    /// Do not take agent results from the cache (results are still stored).
    pub no_cache: bool,
    /// The run continues a halted rollout (`dispatch resume` of it): its halt counts only the
    /// units that finish from now on.
    pub continues_halt: bool,
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
    /// What its agents used (reported by their CLIs), when any reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What held it back, when it is `skipped` until that allows it (`budget`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<crate::vocab::Hold>,
}

/// Shows what happens: it gets every [`RunEvent`] the dispatcher decides, the same values
/// the journal records, in the same order.
pub trait Reporter: Send + Sync {
    /// Something happened.
    fn event(&self, event: &RunEvent);
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
    /// For `rollout.max_open_prs`: per unit of the plan, whether its branch had an open PR on
    /// the forge as the run started (empty without the setting).
    pub open_prs: Vec<bool>,
}

/// Records the run, its units and nodes in the journal (one transaction), with what the forge
/// answered for its targets (`found`, JSON) when it asked. The run keeps the plan's
/// [`plan::fingerprint`], for `dispatch resume` to check ([`plan::same_plan`]).
pub async fn record_run(
    journal: &Journal,
    run_id: &str,
    spec_path: &str,
    plan: &Plan,
    found: Option<String>,
    runtime: crate::spec::model::RuntimeKind,
) -> Result<(), StateError> {
    let units = plan
        .units
        .iter()
        .map(|unit| NewUnit {
            id: unit.id.clone(),
            job: unit.job.clone(),
            org: unit.org.clone(),
            repo: unit.repo.clone(),
            key: unit.key.clone(),
            workspace: unit.workspace.clone(),
            nodes: unit.nodes.iter().map(|n| (n.id.clone(), n.kind)).collect(),
        })
        .collect();
    journal
        .record_run(NewRun {
            id: run_id.to_owned(),
            spec_path: spec_path.to_owned(),
            spec_name: plan.spec.clone(),
            plan: plan::fingerprint(plan),
            found,
            units,
            runtime,
        })
        .await
}

/// Runs the plan to the end and returns one result per unit, in plan order. `signals`
/// delivers the user's signals (or test stand-ins).
///
/// `resumed` holds the journal's units and nodes of a run whose runner died: finished nodes
/// keep their state, nodes with a container are re-attached, the rest run ([`resume`]).
pub async fn execute<R: Runtime, F: Forge, N: NodeRunner<R, F>>(
    ex: Executor<R, F, N>,
    plan: &Arc<Plan>,
    limits: Limits,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    resumed: Option<Vec<crate::state::views::UnitRow>>,
) -> Vec<UnitResult> {
    let published = published_prs(&ex.state_dir).await;
    let (mut d, mut inbox) = Dispatcher::new(ex, plan, limits, published);
    if let Some(rows) = resumed {
        d.take_over(&rows);
    }
    let mut next = d.handle(Event::Begin);
    let mut signals_open = true;
    let mut disk_full = d.ex.journal.disk_full();
    let mut disk_noted = false;
    while let Next::Wait(wake) = next {
        let event = tokio::select! {
            Some(first) = inbox.returned.recv() => {
                // Everything that returned meanwhile is recorded in one commit.
                let mut batch = vec![first];
                while let Ok(more) = inbox.returned.try_recv() {
                    batch.push(more);
                }
                Event::Returned(batch)
            }
            Some((batch, written)) = inbox.committed.recv() => Event::Committed(batch, written),
            Some((wave, checked)) = inbox.checked.recv() => Event::Checked(wave, checked),
            () = sleep_until(wake), if wake.is_some() => Event::Wake,
            full = disk_full.wait_for(|full| *full), if !disk_noted => {
                disk_noted = true;
                match full {
                    Ok(_) => Event::DiskFull,
                    // The journal's writer is gone: its failures reach the dispatcher anyway.
                    Err(_) => continue,
                }
            }
            signal = signals.recv(), if signals_open => match signal {
                Some(signal) => Event::Signal(signal),
                None => {
                    signals_open = false;
                    continue;
                }
            },
        };
        next = d.handle(event);
    }
    let (ex, cancelled, results) = d.finish().await;
    let status = if cancelled {
        RunStatus::Cancelled
    } else {
        RunStatus::Finished
    };
    let end = RunEvent::RunFinished { status };
    ex.reporter.event(&end);
    if let Err(error) = ex.journal.record_now(&ex.run_id, end).await {
        tracing::error!(%error, "the journal could not record the end of the run");
    }
    results
}

/// The PR the journal's runs published for each unit ([`crate::state::Db::published_prs`]),
/// read on a blocking thread; none when the journal cannot say (then nothing is withdrawn,
/// and a PR open for a unit's branch counts as adopted).
async fn published_prs(
    state_dir: &std::path::Path,
) -> std::collections::HashMap<String, crate::state::views::PublishedPr> {
    let dir = state_dir.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        crate::state::Db::open(&dir).and_then(|db| db.published_prs(None))
    })
    .await;
    match read {
        Ok(Ok(published)) => published,
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot read the PRs earlier runs published");
            Default::default()
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the PRs earlier runs published");
            Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
