//! Why a node failed, and what that means for its unit.
//!
//! A handler that fails returns a [`NodeError`]: the cause (git, the forge, the container
//! engine, the journal, a file, a template, the spec's configuration, something an earlier
//! node should have left) wrapped with the [`Step`] it happened in, never flattened into a
//! string. `Display` gives the reason people read (`prep: ...`, `publish: ...`, `QA step
//! \`go test\`: ...`); [`NodeError::verdict`] is the one place that decides what the failure
//! means: the unit's outcome and whether the dispatcher may retry the node.
//!
//! Not here: the ends a handler decides itself (`no_changes`, `blocked`, `agent_failed`,
//! `timed_out`, `cancelled`, `needs_review`, a QA failure); they are
//! [`NodeResult`](super::node::NodeResult) variants of their own.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::forge::ForgeError;
use crate::git::GitError;
use crate::runtime::RuntimeError;
use crate::spec::values::{AgentRef, Approx};
use crate::state::StateError;
use crate::vocab::Outcome;

/// Where in a node an error happened. Most steps lead the reason (`prep: ...`); the ones
/// whose cause names itself lead with nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Creating the unit's directories before any handler runs (no lead).
    Workspace,
    /// Preparing the unit: clone or fetch, branch, notes, the first prompt (`prep`).
    Prep,
    /// Rendering and writing an agent run's prompt (`prompt`).
    Prompt,
    /// Putting a cached agent result into the clone (`applying the cached agent result`).
    CacheApply,
    /// Working out how to run an agent from its reference (``agent `codex` ``).
    Agent(AgentRef),
    /// Collecting the container an earlier runner started (`re-attaching to container ID`).
    Reattach(String),
    /// Creating and running the node's container (no lead: the engine's error says it).
    Container,
    /// Committing the agent's work (`commit`).
    Commit,
    /// Running one QA step, by its command (``QA step `go test` ``).
    QaStep(String),
    /// Rendering the PR's title and body, and what they need (`PR text`).
    PrText,
    /// Pushing the branch and opening or updating the PR (`publish`).
    Publish,
    /// Rendering the review agent's prompt (`review prompt`).
    ReviewPrompt,
    /// Writing the review agent's prompt (no lead: the file is named).
    ReviewPromptFile,
    /// Keeping the review and posting it on the forge (`posting the review`).
    ReviewPost,
    /// Merging the PR (`merge`).
    Merge,
    /// Rebasing the branch onto its base after a merge conflict (`rebase`).
    Rebase,
}

impl Step {
    /// What leads the reason: the step and `: `, or nothing.
    fn lead(&self) -> Lead<'_> {
        Lead(self)
    }

    /// Wraps a git error of this step (for `map_err`).
    pub fn git(self) -> impl FnOnce(GitError) -> NodeError {
        move |source| NodeError::Git { step: self, source }
    }

    /// Wraps a forge error of this step (for `map_err`).
    pub fn forge(self) -> impl FnOnce(ForgeError) -> NodeError {
        move |source| NodeError::Forge { step: self, source }
    }

    /// Wraps an engine error of this step (for `map_err`).
    pub fn runtime(self) -> impl FnOnce(RuntimeError) -> NodeError {
        move |source| NodeError::Runtime { step: self, source }
    }

    /// Wraps a file error of this step (for `map_err`).
    pub fn io(self, action: FileAction, path: &Path) -> impl FnOnce(std::io::Error) -> NodeError {
        let path = path.to_owned();
        move |source| NodeError::Io {
            step: self,
            action,
            path,
            source,
        }
    }

    /// Wraps a template's error of this step (for `map_err`).
    pub fn template<E: fmt::Display>(self) -> impl FnOnce(E) -> NodeError {
        move |error| NodeError::Template {
            step: self,
            message: error.to_string(),
        }
    }
}

/// A step as the start of a reason.
struct Lead<'a>(&'a Step);

impl fmt::Display for Lead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Step::Workspace | Step::Container | Step::ReviewPromptFile => Ok(()),
            Step::Prep => f.write_str("prep: "),
            Step::Prompt => f.write_str("prompt: "),
            Step::CacheApply => f.write_str("applying the cached agent result: "),
            Step::Agent(agent) => write!(f, "agent `{agent}`: "),
            Step::Reattach(id) => write!(f, "re-attaching to container {id}: "),
            Step::Commit => f.write_str("commit: "),
            Step::QaStep(run) => write!(f, "QA step `{run}`: "),
            Step::PrText => f.write_str("PR text: "),
            Step::Publish => f.write_str("publish: "),
            Step::ReviewPrompt => f.write_str("review prompt: "),
            Step::ReviewPost => f.write_str("posting the review: "),
            Step::Merge => f.write_str("merge: "),
            Step::Rebase => f.write_str("rebase: "),
        }
    }
}

/// What was being done to a file when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAction {
    /// Creating a directory.
    Create,
    /// Writing a file.
    Write,
    /// Moving a finished clone into place.
    MoveClone,
    /// Reading the note of the commit the unit's work started from.
    ReadStart,
    /// Looking through the work tree a container left.
    Inspect,
    /// Taking the lock of a workspace.
    Lock,
    /// Removing what an earlier run left (the agents' homes).
    Clear,
}

impl FileAction {
    /// The action on `path`, in words.
    fn on<'a>(self, path: &'a Path) -> OnPath<'a> {
        OnPath(self, path)
    }
}

/// A file action with its path, in words.
struct OnPath<'a>(FileAction, &'a Path);

impl fmt::Display for OnPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.1.display();
        match self.0 {
            FileAction::Create => write!(f, "cannot create {path}"),
            FileAction::Write => write!(f, "cannot write {path}"),
            FileAction::MoveClone => write!(f, "cannot move the clone into {path}"),
            FileAction::ReadStart => f.write_str("the starting commit is unknown"),
            FileAction::Inspect => write!(f, "cannot look through {path}"),
            FileAction::Lock => write!(f, "cannot lock {path}"),
            FileAction::Clear => write!(f, "cannot remove {path}"),
        }
    }
}

/// Why a node failed: the cause, with the step it happened in.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A git command failed.
    #[error("{}{source}", .step.lead())]
    Git {
        /// Where.
        step: Step,
        /// The failed command.
        source: GitError,
    },
    /// The forge failed or refused.
    #[error("{}{source}", .step.lead())]
    Forge {
        /// Where.
        step: Step,
        /// What the forge said.
        source: ForgeError,
    },
    /// The container engine failed.
    #[error("{}{source}", .step.lead())]
    Runtime {
        /// Where.
        step: Step,
        /// What the engine said.
        source: RuntimeError,
    },
    /// The journal failed (recording a container before it starts).
    #[error("{}{source}", .step.lead())]
    State {
        /// Where.
        step: Step,
        /// What the state database said.
        source: StateError,
    },
    /// A file could not be created, written, moved or read.
    #[error("{}{}: {source}", .step.lead(), .action.on(.path))]
    Io {
        /// Where.
        step: Step,
        /// What was being done.
        action: FileAction,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A template did not render (the prompt, the PR's title or body, the review prompt).
    #[error("{}{message}", .step.lead())]
    Template {
        /// Where.
        step: Step,
        /// The template's error, naming the template and the line.
        message: String,
    },
    /// The spec's configuration cannot be used as it is (an agent with no way to run it).
    #[error("{}{message}", .step.lead())]
    Config {
        /// Where.
        step: Step,
        /// What is wrong.
        message: String,
    },
    /// What the unit's work starts from does not exist (its base, branch or tag).
    #[error("{}{what} does not exist in {org}/{repo}", .step.lead())]
    MissingStart {
        /// Where.
        step: Step,
        /// What is missing, e.g. ``base `main` ``.
        what: String,
        /// Organisation.
        org: String,
        /// Repository.
        repo: String,
    },
    /// The forge serves no head of the unit's pull request.
    #[error(
        "{}pull request #{pr} of {org}/{repo} has no head the forge serves (refs/pull/{pr}/head)",
        .step.lead()
    )]
    MissingPrHead {
        /// Where.
        step: Step,
        /// The pull request.
        pr: u64,
        /// Organisation.
        org: String,
        /// Repository.
        repo: String,
        /// The fetch that failed.
        source: GitError,
    },
    /// The base branch is unknown: prep did not record it.
    #[error("{}the base branch is unknown: prep did not record it", .step.lead())]
    MissingBase {
        /// Where.
        step: Step,
    },
    /// A merge node ran for a unit whose publish left no PR.
    #[error("merge without a PR")]
    MissingPr,
    /// A container left something in the work tree that host git would act on: nested
    /// repositories (`.git` entries below the top) or new gitlinks. Nothing is committed.
    #[error(
        "{}the work tree holds {what} that the start commit does not have: {}; dispatch \
         runs no git on what a container planted, so nothing was committed",
        .step.lead(),
        .paths.join(", ")
    )]
    Planted {
        /// Where.
        step: Step,
        /// What was found, in words (`a nested git repository`, `gitlinks`).
        what: &'static str,
        /// The paths, relative to the work tree.
        paths: Vec<String>,
    },
    /// The unit's workspace takes more disk than its limit: what a container wrote there (the
    /// container was stopped), or the clone itself.
    #[error(
        "{}the workspace {} grew past its disk limit of {} (resources.disk)",
        .step.lead(),
        .workspace.display(),
        Approx(*.limit)
    )]
    DiskLimit {
        /// Where.
        step: Step,
        /// The workspace.
        workspace: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The run stopped the node's container because the disk holding the state directory
    /// filled up (the journal's reserve was used).
    #[error(
        "stopped: the disk holding {dir} is full (dispatch stopped the running containers so \
         the journal can record the run's end); free some space, then `dispatch retry` the run"
    )]
    DiskFull {
        /// The state directory.
        dir: String,
    },
    /// The agent's image lacks programs its agent needs (the CLI, a shell, git).
    #[error(
        "{}image `{image}` lacks what the agent needs: {}; build the image with them (README: \"Agent images\")",
        .step.lead(),
        .missing.iter().map(|need| format!("`{}` ({})", need.program, need.why)).collect::<Vec<_>>().join(", ")
    )]
    ImageLacks {
        /// Where.
        step: Step,
        /// The image.
        image: String,
        /// What it lacks, and what for.
        missing: Vec<crate::agents::Need>,
    },
    /// The agent's model API was unavailable (rate limited, overloaded, a server error) past
    /// the CLI's own retries: the machine's side, retried like any transient failure.
    #[error("{}the model API was unavailable past the CLI's own retries: {message}; see {}", .step.lead(), .log.display())]
    AgentApi {
        /// Where.
        step: Step,
        /// The CLI's own error line.
        message: String,
        /// The readable log of the run.
        log: PathBuf,
    },
    /// Another unit uses the unit's workspace (of another run, or of this one).
    #[error("workspace {} is in use by {busy}; units that share a workspace (the same repository and key, from two specs or two jobs) cannot run at once: let the other finish and `dispatch retry` this one, or give the specs different state directories", .workspace.display())]
    WorkspaceBusy {
        /// The workspace.
        workspace: PathBuf,
        /// Who holds its lock (boxed: it is rare, and every other error would carry its size).
        busy: Box<crate::state::lock::Busy>,
    },
}

/// What a failure means for the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The unit's outcome when the node is not retried.
    pub outcome: Outcome,
    /// Whether running the node again later may succeed.
    pub retry: bool,
}

impl NodeError {
    /// The one classification of a node's failure: what a container planted for host git, a
    /// workspace a container filled past its disk limit or left unreadable, are `agent_failed`
    /// (the agent's work, or the code it changed, did it), never retried; every other failure is
    /// `infra_error` (a clone past the disk limit too); it is retried when it may pass later
    /// (the engine, a forge that is down or rate limiting, a network failure of git, a file),
    /// never when only a person can fix it (credentials, a request the forge refuses, the
    /// spec's configuration, a template, a missing base).
    pub fn verdict(&self) -> Verdict {
        match self {
            // The clone alone is too large: the spec's limit is what to change.
            Self::DiskLimit {
                step: Step::Prep, ..
            } => {
                return Verdict {
                    outcome: Outcome::InfraError,
                    retry: false,
                }
            }
            // A work tree that cannot be looked through after a container: the container
            // made it so (a directory it made unreadable, a path too long to name).
            Self::Io {
                action: FileAction::Inspect,
                step,
                ..
            } if *step != Step::Prep => {
                return Verdict {
                    outcome: Outcome::AgentFailed,
                    retry: false,
                }
            }
            Self::Planted { .. } | Self::DiskLimit { .. } => {
                return Verdict {
                    outcome: Outcome::AgentFailed,
                    retry: false,
                }
            }
            _ => {}
        }
        let retry = match self {
            Self::Git { source, .. } | Self::MissingPrHead { source, .. } => git_may_pass(source),
            Self::Forge { source, .. } => forge_may_pass(source),
            Self::Runtime { source, .. } => match source {
                RuntimeError::Unreachable(_)
                | RuntimeError::Engine(_)
                | RuntimeError::Cluster(_) => true,
                RuntimeError::Log { .. } => true,
                // Nothing builds it meanwhile: the message says to build or load it.
                RuntimeError::ImageMissing(_) => false,
            },
            Self::State { source, .. } => state_may_pass(source),
            Self::Io { .. } | Self::AgentApi { .. } => true,
            Self::Template { .. }
            | Self::Config { .. }
            | Self::MissingStart { .. }
            | Self::MissingBase { .. }
            | Self::MissingPr
            | Self::Planted { .. }
            | Self::DiskLimit { .. }
            | Self::DiskFull { .. }
            | Self::ImageLacks { .. }
            | Self::WorkspaceBusy { .. } => false,
        };
        Verdict {
            outcome: Outcome::InfraError,
            retry,
        }
    }
}

/// Whether a forge's failure may pass later.
fn forge_may_pass(error: &ForgeError) -> bool {
    match error {
        ForgeError::Transient { .. } => true,
        ForgeError::Git(git) => git_may_pass(git),
        ForgeError::State(state) => state_may_pass(state),
        ForgeError::NoRepository { .. }
        | ForgeError::Config { .. }
        | ForgeError::Unauthorized { .. }
        | ForgeError::Http { .. }
        | ForgeError::Conflict(_)
        | ForgeError::NotGreen { .. } => false,
    }
}

/// Whether the journal's failure may pass later (a busy database, a file): not a database of
/// a newer dispatch, not a journal that stopped.
fn state_may_pass(error: &StateError) -> bool {
    match error {
        StateError::Sqlite { .. } | StateError::Io { .. } => true,
        StateError::Newer { .. }
        | StateError::Closed(_)
        | StateError::Unreadable { .. }
        | StateError::NoReserve { .. } => false,
    }
}

/// What git prints when the network, not the request, failed (lower case).
const GIT_NETWORK: &[&str] = &[
    "could not resolve host",
    "temporary failure in name resolution",
    "connection refused",
    "connection reset",
    "connection timed out",
    "operation timed out",
    "timed out",
    "network is unreachable",
    "no route to host",
    "failed to connect",
    "unable to access",
    "could not read from remote repository",
    "the remote end hung up unexpectedly",
    "early eof",
    "rpc failed",
    "http/2 stream",
    "gnutls",
    "ssl_",
    "tls",
];

/// Whether a failed git command may pass later: the network failed, or git could not be run
/// or read or write its files (an operating system error). A command git refused (a ref
/// that does not exist, a push refused by its lease) fails the same way again.
fn git_may_pass(error: &GitError) -> bool {
    let message = error.message.to_ascii_lowercase();
    message.contains("(os error") || GIT_NETWORK.iter().any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge(source: ForgeError) -> NodeError {
        NodeError::Forge {
            step: Step::Publish,
            source,
        }
    }

    fn git(message: &str) -> NodeError {
        NodeError::Git {
            step: Step::Prep,
            source: GitError {
                args: "fetch --quiet --prune origin".to_owned(),
                dir: "/state/workspaces/core/go-io/j/repo".to_owned(),
                message: message.to_owned(),
            },
        }
    }

    #[test]
    fn a_forge_that_refuses_the_credentials_is_not_retried() {
        let error = forge(ForgeError::Unauthorized {
            forge: "forgejo".to_owned(),
            hint: "HTTP 401; check FORGEJO_TOKEN".to_owned(),
        });
        assert_eq!(
            error.verdict(),
            Verdict {
                outcome: Outcome::InfraError,
                retry: false
            }
        );
        assert_eq!(
            error.to_string(),
            "publish: the forgejo forge refused dispatch's credentials: HTTP 401; check FORGEJO_TOKEN"
        );
        let refused = forge(ForgeError::Http {
            forge: "github".to_owned(),
            what: "POST /repos/core/go-io/pulls".to_owned(),
            status: 422,
            message: "Validation Failed".to_owned(),
        });
        assert!(!refused.verdict().retry, "a 4xx fails the same way again");
    }

    #[test]
    fn a_forge_that_is_down_or_rate_limiting_is_retried() {
        let error = forge(ForgeError::Transient {
            forge: "gitea".to_owned(),
            what: "POST /repos/core/go-io/pulls".to_owned(),
            message: "HTTP 503 after 4 attempts".to_owned(),
        });
        assert_eq!(
            error.verdict(),
            Verdict {
                outcome: Outcome::InfraError,
                retry: true
            }
        );
        assert_eq!(
            error.to_string(),
            "publish: gitea: POST /repos/core/go-io/pulls failed: HTTP 503 after 4 attempts"
        );
    }

    #[test]
    fn an_unreachable_engine_is_retried_a_missing_image_is_not() {
        let unreachable = NodeError::Runtime {
            step: Step::QaStep("go test ./...".to_owned()),
            source: RuntimeError::Unreachable("connection refused".to_owned()),
        };
        assert!(unreachable.verdict().retry);
        assert_eq!(unreachable.verdict().outcome, Outcome::InfraError);
        assert_eq!(
            unreachable.to_string(),
            "QA step `go test ./...`: cannot reach the Docker engine: connection refused"
        );
        let missing = NodeError::Runtime {
            step: Step::Container,
            source: RuntimeError::ImageMissing("core-dev".to_owned()),
        };
        assert!(!missing.verdict().retry);
        assert_eq!(
            missing.to_string(),
            "image `core-dev` is not present in the engine; build or load it first",
            "no lead for the node's own container"
        );
    }

    #[test]
    fn configuration_and_missing_inputs_are_not_retried() {
        let config = NodeError::Config {
            step: Step::Agent(AgentRef::parse("nobody").expect("an agent ref")),
            message: "no preset or custom agent is named `nobody`".to_owned(),
        };
        assert_eq!(
            config.verdict(),
            Verdict {
                outcome: Outcome::InfraError,
                retry: false
            }
        );
        assert_eq!(
            config.to_string(),
            "agent `nobody`: no preset or custom agent is named `nobody`"
        );
        let base = NodeError::MissingBase { step: Step::PrText };
        assert!(!base.verdict().retry);
        assert_eq!(
            base.to_string(),
            "PR text: the base branch is unknown: prep did not record it"
        );
        let forge_config = forge(ForgeError::Config {
            forge: "github".to_owned(),
            message: "token_env GITHUB_TOKEN is not set".to_owned(),
        });
        assert!(!forge_config.verdict().retry);
    }

    #[test]
    fn what_a_container_did_to_its_workspace_fails_the_agent_and_a_full_disk_the_machine() {
        let never_again = |outcome| Verdict {
            outcome,
            retry: false,
        };
        let workspace = PathBuf::from("/state/workspaces/core/go-io/j");
        let filled = NodeError::DiskLimit {
            step: Step::QaStep("make".to_owned()),
            workspace: workspace.clone(),
            limit: 100 << 20,
        };
        assert_eq!(filled.verdict(), never_again(Outcome::AgentFailed));
        assert_eq!(
            filled.to_string(),
            "QA step `make`: the workspace /state/workspaces/core/go-io/j grew past its disk limit of 100 MiB (resources.disk)"
        );
        let clone = NodeError::DiskLimit {
            step: Step::Prep,
            workspace: workspace.clone(),
            limit: 1 << 30,
        };
        assert_eq!(clone.verdict(), never_again(Outcome::InfraError));
        let unreadable = |step| NodeError::Io {
            step,
            action: FileAction::Inspect,
            path: workspace.clone(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            unreadable(Step::Container).verdict(),
            never_again(Outcome::AgentFailed)
        );
        assert_eq!(
            unreadable(Step::Prep).verdict(),
            Verdict {
                outcome: Outcome::InfraError,
                retry: true
            }
        );
        let full = NodeError::DiskFull {
            dir: "/state".to_owned(),
        };
        assert_eq!(full.verdict(), never_again(Outcome::InfraError));
        assert!(full
            .to_string()
            .starts_with("stopped: the disk holding /state is full"));
    }

    #[test]
    fn git_is_retried_when_the_network_failed_not_when_git_refused() {
        let network = git("fatal: unable to access 'https://forge.example/core/go-io.git/': Could not resolve host: forge.example");
        assert!(network.verdict().retry);
        assert!(
            git("No such file or directory (os error 2)")
                .verdict()
                .retry
        );
        let refused = git("fatal: couldn't find remote ref refs/heads/nope");
        assert!(!refused.verdict().retry);
        assert_eq!(
            refused.to_string(),
            "prep: git fetch --quiet --prune origin (in /state/workspaces/core/go-io/j/repo) failed: fatal: couldn't find remote ref refs/heads/nope"
        );
        let io = NodeError::Io {
            step: Step::Prep,
            action: FileAction::MoveClone,
            path: PathBuf::from("/w/repo"),
            source: std::io::Error::other("disk full"),
        };
        assert!(io.verdict().retry);
        assert_eq!(
            io.to_string(),
            "prep: cannot move the clone into /w/repo: disk full"
        );
    }
}
