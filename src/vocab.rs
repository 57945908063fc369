//! The words of DESIGN.md's vocabulary that several layers share: the kind of a node, where a
//! node is in its life, how a unit ended, and where a run is. The planner, the executor, the journal and the
//! reports all speak them; they live here so that none of those layers needs another one for
//! them (the journal sits below the executor and knows nothing of plans).
//!
//! Each word has one spelling in the journal, the JSON outputs and node ids (`as_str`), and
//! parses back from it (`FromStr`), so a reader of the journal gets typed values, never text.
//! [`CancelReason`] is the ordered reason a run stops early, which the executor decides and
//! the journal and the reports show.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word of the vocabulary that is not one of the known spellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{found}` is not a known {what}")]
pub struct UnknownWord {
    /// What was expected (`outcome`, `node status`, `node kind`).
    pub what: &'static str,
    /// The text found.
    pub found: String,
}

/// `Display` and `FromStr` over `as_str` and `ALL`.
macro_rules! words {
    ($name:ident, $what:literal) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|word| word.as_str() == text)
                    .ok_or_else(|| UnknownWord {
                        what: $what,
                        found: text.to_owned(),
                    })
            }
        }
    };
}

/// The kinds of node, in the order they run within a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Clone, branch, render the prompt.
    Prep,
    /// Run the agent in a container and commit its work.
    Agent,
    /// Run the QA steps in a container.
    Qa,
    /// Push the branch and open or update the PR.
    Publish,
    /// A reviewing agent comments on the PR.
    Review,
    /// Merge the PR when the policy allows.
    Merge,
}

impl NodeKind {
    /// Every kind, in the order they run within a unit.
    pub const ALL: [NodeKind; 6] = [
        NodeKind::Prep,
        NodeKind::Agent,
        NodeKind::Qa,
        NodeKind::Publish,
        NodeKind::Review,
        NodeKind::Merge,
    ];

    /// The kind as written in node ids.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Prep => "prep",
            NodeKind::Agent => "agent",
            NodeKind::Qa => "qa",
            NodeKind::Publish => "publish",
            NodeKind::Review => "review",
            NodeKind::Merge => "merge",
        }
    }
}

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
    /// Its agent passed the unit's budget cap and was stopped (never retried automatically).
    BudgetExceeded,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 12] = [
        Outcome::Changed,
        Outcome::NoChanges,
        Outcome::Blocked,
        Outcome::AgentFailed,
        Outcome::QaFailed,
        Outcome::TimedOut,
        Outcome::InfraError,
        Outcome::Skipped,
        Outcome::Cancelled,
        Outcome::Merged,
        Outcome::NeedsReview,
        Outcome::BudgetExceeded,
    ];

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
            Outcome::BudgetExceeded => "budget_exceeded",
        }
    }
}

words!(Outcome, "outcome");

/// Why a `skipped` unit was held back rather than skipped for good: `dispatch resume` of its
/// run, once what held it back allows (a budget raised), starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// What was left of a budget total could not cover the unit's cap.
    Budget,
    /// The rollout halted before the unit started.
    Rollout,
    /// `rollout.max_open_prs` PRs of the spec were open and nothing in the run could close
    /// one: its publish waits for people to merge or close some.
    OpenPrs,
}

impl Hold {
    /// Every reason.
    pub const ALL: [Hold; 3] = [Hold::Budget, Hold::Rollout, Hold::OpenPrs];

    /// The reason as written in the journal and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Budget => "budget",
            Hold::Rollout => "rollout",
            Hold::OpenPrs => "open_prs",
        }
    }

    /// What held the unit back, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Hold::Budget => "the budget",
            Hold::Rollout => "the rollout's halt",
            Hold::OpenPrs => "rollout.max_open_prs",
        }
    }

    /// The node a resume starts the unit again from: prep, or publish for a unit whose work
    /// is done and only its PR waited.
    pub fn resumes_from(self) -> NodeKind {
        match self {
            Hold::Budget | Hold::Rollout => NodeKind::Prep,
            Hold::OpenPrs => NodeKind::Publish,
        }
    }
}

words!(Hold, "hold");

/// Whose a unit's pull request is: dispatch opened it, or it was open for the unit's branch
/// already (opened by a person or another tool) and dispatch adopted it. Only a PR dispatch
/// opened is ever closed by dispatch on its own (`pr.on_no_changes: close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrOrigin {
    /// dispatch opened it (for this unit, in this run or an earlier one).
    Opened,
    /// It existed for the unit's branch and dispatch did not open it: dispatch updates it
    /// instead of opening a second one.
    Adopted,
}

impl PrOrigin {
    /// Every origin.
    pub const ALL: [PrOrigin; 2] = [PrOrigin::Opened, PrOrigin::Adopted];

    /// The origin as written in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            PrOrigin::Opened => "opened",
            PrOrigin::Adopted => "adopted",
        }
    }
}

words!(PrOrigin, "PR origin");

/// Where a node is in its life.
///
/// `Pending -> Ready -> Running -> Done | Failed | Cancelled`; `Pending | Ready -> Skipped |
/// Cancelled`; a fix attempt moves a finished agent node back to `Ready` and its QA node back
/// to `Pending`. Only the dispatcher changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Every status.
    pub const ALL: [NodeStatus; 7] = [
        NodeStatus::Pending,
        NodeStatus::Ready,
        NodeStatus::Running,
        NodeStatus::Done,
        NodeStatus::Failed,
        NodeStatus::Skipped,
        NodeStatus::Cancelled,
    ];

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

/// Where a run is, as the journal records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// A runner works on it (or died and left it for `dispatch resume`).
    Running,
    /// Every unit ended.
    Finished,
    /// It was stopped before every unit ended.
    Cancelled,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 3] = [
        RunStatus::Running,
        RunStatus::Finished,
        RunStatus::Cancelled,
    ];

    /// The status as the journal and the JSON outputs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

words!(NodeStatus, "node status");
words!(RunStatus, "run status");
words!(NodeKind, "node kind");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_back_from_its_spelling_and_serializes_as_it() {
        for kind in NodeKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        for status in NodeStatus::ALL {
            assert_eq!(status.as_str().parse(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse(), Ok(outcome));
            assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.as_str());
        }
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(
            "agent-failed".parse::<Outcome>(),
            Err(UnknownWord {
                what: "outcome",
                found: "agent-failed".to_owned()
            })
        );
    }
}

/// Why a run stops before its end, ordered: a reason is only ever replaced by a greater one
/// (a forced stop after a graceful one, never back).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CancelReason {
    /// The journal could not commit: nothing new starts (nothing could be recorded), running
    /// nodes finish.
    JournalFailed(String),
    /// The first Ctrl-C, SIGTERM or SIGHUP (`dispatch cancel`): nothing new starts, running
    /// nodes finish, units that never started end `cancelled`.
    Signal,
    /// A second signal, or SIGUSR1 (`dispatch cancel --force`): running containers are
    /// stopped too, and their units end `cancelled`.
    Forced,
    /// The disk holding the state directory (shown) filled up: the journal used its reserve,
    /// running containers are stopped so nothing takes that room, their units end
    /// `infra_error`, and nothing new starts.
    DiskFull(String),
}

impl CancelReason {
    /// What the reason means for the user, in a line.
    pub fn describe(&self) -> String {
        match self {
            CancelReason::JournalFailed(error) => {
                format!("error: the journal failed ({error}); no new nodes start")
            }
            CancelReason::Signal => "Stopping: no new nodes start; running nodes finish. Press Ctrl-C again to stop them now.".to_owned(),
            CancelReason::Forced => {
                "Stopping the running containers; their units end cancelled.".to_owned()
            }
            CancelReason::DiskFull(dir) => format!(
                "error: the disk holding {dir} is full; the running containers are stopped and \
                 no new nodes start, so the journal can record how the run ends"
            ),
        }
    }

    /// The reason as the journal records it.
    pub fn as_str(&self) -> &'static str {
        match self {
            CancelReason::JournalFailed(_) => "journal_failed",
            CancelReason::Signal => "signal",
            CancelReason::Forced => "forced",
            CancelReason::DiskFull(_) => "disk_full",
        }
    }
}
