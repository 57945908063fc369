//! How a unit ends, and the states a node moves through.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The one outcome of a unit (DESIGN.md vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The agent changed the repository and the change was published (or kept).
    Changed,
    /// The agent made no change: not a failure.
    NoChanges,
    /// The agent asked a question in `BLOCKED.md`.
    Blocked,
    /// The agent exited non-zero.
    AgentFailed,
    /// QA failed after every fix attempt.
    QaFailed,
    /// A container ran past its time limit.
    TimedOut,
    /// The engine, git or the forge failed.
    InfraError,
    /// Never ran because something it needs did not succeed.
    Skipped,
    /// Stopped by the user.
    Cancelled,
    /// The PR was merged.
    Merged,
    /// The PR could not be merged automatically and waits for people.
    NeedsReview,
}

impl Outcome {
    /// Whether this outcome counts as success for the exit status.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Changed | Outcome::NoChanges | Outcome::Merged
        )
    }

    /// The outcome as written in the journal and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Changed => "changed",
            Outcome::NoChanges => "no_changes",
            Outcome::Blocked => "blocked",
            Outcome::AgentFailed => "agent_failed",
            Outcome::QaFailed => "qa_failed",
            Outcome::TimedOut => "timed_out",
            Outcome::InfraError => "infra_error",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
            Outcome::Merged => "merged",
            Outcome::NeedsReview => "needs_review",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a node is in its life.
///
/// `Pending -> Ready -> Running -> Done | Failed | Cancelled`; `Pending | Ready -> Skipped |
/// Cancelled`; a fix attempt moves a finished agent node back to `Ready` and its QA node back
/// to `Pending`. Only the dispatcher changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Waiting for dependencies.
    Pending,
    /// Dependencies done; waiting for a slot or a rate limit.
    Ready,
    /// Its handler runs.
    Running,
    /// Finished successfully.
    Done,
    /// Finished unsuccessfully; the unit stops here.
    Failed,
    /// Not run: something upstream did not succeed.
    Skipped,
    /// Not run or stopped: the user cancelled.
    Cancelled,
}

impl NodeStatus {
    /// Whether the node will not change any more (fix attempts aside).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NodeStatus::Done | NodeStatus::Failed | NodeStatus::Skipped | NodeStatus::Cancelled
        )
    }

    /// The status as written in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "pending",
            NodeStatus::Ready => "ready",
            NodeStatus::Running => "running",
            NodeStatus::Done => "done",
            NodeStatus::Failed => "failed",
            NodeStatus::Skipped => "skipped",
            NodeStatus::Cancelled => "cancelled",
        }
    }
}
