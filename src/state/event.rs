//! What the journal records: a run with its units and nodes ([`NewRun`]), then the typed
//! [`RunEvent`]s of its life.
//!
//! The dispatcher decides and emits each event once; the same value goes to the journal
//! ([`crate::state::Journal::record`]) and to the reporter, so what a person sees and what
//! `dispatch status` reads later never disagree.

use std::fmt;
use std::time::Duration;

use crate::vocab::{CancelReason, Hold, NodeKind, NodeStatus, Outcome, PrOrigin, RunStatus};

/// A run to record before it starts: its units and their nodes, in plan order.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Run id.
    pub id: String,
    /// The spec file, absolute.
    pub spec_path: String,
    /// The spec's name.
    pub spec_name: String,
    /// The plan's fingerprint, for `dispatch resume` to compare.
    pub plan: String,
    /// What the forge answered for the spec's `select` entries and PR targets (JSON), so a
    /// resume plans the same units; `None` when the spec asked nothing.
    pub found: Option<String>,
    /// The units, in plan order.
    pub units: Vec<NewUnit>,
    /// Where its containers run.
    pub runtime: crate::spec::model::RuntimeKind,
}

/// A unit of a [`NewRun`].
#[derive(Clone, Debug)]
pub struct NewUnit {
    /// Unit id.
    pub id: String,
    /// Job id.
    pub job: String,
    /// Organisation.
    pub org: String,
    /// Repository.
    pub repo: String,
    /// Workspace key.
    pub key: String,
    /// Workspace, relative to the state directory.
    pub workspace: String,
    /// Its nodes in order: id and kind.
    pub nodes: Vec<(String, NodeKind)>,
}

/// The agent pool (and model) whose start a node's start counts against, for `daily_limit`
/// in later runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStart {
    /// Pool (the agent reference before `:`).
    pub pool: String,
    /// Model, if any.
    pub model: Option<String>,
}

/// Why a node that ran goes back to `pending`.
#[derive(Clone, Debug, PartialEq)]
pub enum ResetCause {
    /// A transient failure: it runs again after `after`.
    Retry {
        /// The backoff before the next attempt.
        after: Duration,
        /// What failed.
        reason: String,
    },
    /// QA failed and a fix attempt is left: the agent runs again with the failure, then QA.
    FixAttempt,
}

impl fmt::Display for ResetCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetCause::Retry { after, reason } => write!(
                f,
                "retrying in {:.1}s after: {}",
                after.as_secs_f64(),
                reason.lines().next().unwrap_or("")
            ),
            ResetCause::FixAttempt => f.write_str("QA failed; the agent gets another attempt"),
        }
    }
}

/// One thing that happened in a run, as the dispatcher decided it.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    /// A node started (its attempt, counted from 1).
    NodeStarted {
        /// Node id.
        node: String,
        /// Attempt.
        attempt: u32,
        /// The agent start it counts as, if it runs an agent.
        pool: Option<PoolStart>,
    },
    /// A container was created for a node; recorded before the container starts, so a
    /// restarted runner can find it.
    ContainerCreated {
        /// Node id.
        node: String,
        /// Container id.
        container: String,
    },
    /// A node ended in a terminal status.
    NodeFinished {
        /// Node id.
        node: String,
        /// `done`, `failed`, `skipped` or `cancelled`.
        status: NodeStatus,
        /// The outcome it decided for its unit, if any.
        outcome: Option<Outcome>,
        /// Its container's exit code, if one ran.
        exit_code: Option<i64>,
        /// Why, for anything but a plain `done`.
        reason: Option<String>,
    },
    /// A node that ran is pending again.
    NodeReset {
        /// Node id.
        node: String,
        /// Why.
        cause: ResetCause,
    },
    /// An agent's result was taken from the cache instead of running it.
    CacheHit {
        /// Node id.
        node: String,
        /// The cache key.
        key: String,
    },
    /// An agent container ended and its CLI's output was read (recorded before the node's
    /// end): what the run used and said.
    AgentReported {
        /// Node id.
        node: String,
        /// The node's attempt.
        attempt: u32,
        /// What the CLI reported.
        report: crate::agents::output::Report,
    },
    /// A unit has a PR (recorded with the end of the node that opened, updated or adopted it).
    PrOpened {
        /// Unit id.
        unit: String,
        /// The PR's reference, e.g. `local:core/go-io#3`.
        pr: String,
        /// Whether dispatch opened it or adopted it.
        origin: PrOrigin,
    },
    /// A unit ended with its one outcome.
    UnitFinished {
        /// Unit id.
        unit: String,
        /// The outcome.
        outcome: Outcome,
        /// Why, when there is something to say.
        reason: Option<String>,
        /// Its PR, if it has one.
        pr: Option<String>,
        /// What held it back, when it was `skipped` until something allows it.
        held: Option<Hold>,
    },
    /// A unit reserved its budget cap against the totals it counts against, before its first
    /// node started (USD and tokens held).
    BudgetReserved {
        /// Unit id.
        unit: String,
        /// USD held.
        usd: f64,
        /// Tokens held.
        tokens: u64,
    },
    /// The rollout halted: units that have not started are held back.
    RolloutHalted {
        /// Why, with the figures.
        reason: String,
    },
    /// A unit that held a reservation finished: it is given back, and what the unit spent
    /// counts instead.
    BudgetReleased {
        /// Unit id.
        unit: String,
        /// USD the unit spent in the run.
        usd: f64,
        /// Tokens the unit spent in the run.
        tokens: u64,
    },
    /// The run stops scheduling (or, forced, stops its containers).
    Cancelling {
        /// Why; it only ever escalates.
        reason: CancelReason,
    },
    /// The run ended.
    RunFinished {
        /// `finished` or `cancelled`.
        status: RunStatus,
    },
}
