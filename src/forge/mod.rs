//! Forges: where targets are cloned from, where branches are pushed and pull requests opened.
//!
//! The [`Forge`] trait is what publish and merge nodes need; `local` (bare repositories in the
//! state directory, PRs in the state database) is the embedded default. Forgejo/Gitea and
//! GitHub implement the same trait over their HTTP APIs: `clone_source` becomes an HTTPS or
//! SSH URL, `publish` pushes with a credential helper and creates or updates the PR through
//! the API, `merge` asks the forge. Only publish and merge nodes hold a forge.
//!
//! The modules depend on each other one way only, from the bottom up:
//!
//! - this module: the [`Forge`] trait and the values it speaks in;
//! - [`http`] (the HTTP client, with its JSON and path helpers), then [`options`],
//!   [`target`], [`pr`] and [`push`], what the remote forges share;
//! - the forges themselves: [`local`], [`forgejo`], [`github`], each using only the above;
//! - [`any`]: [`any::AnyForge`], the one forge a run uses, built from the spec.

pub mod any;
pub mod forgejo;
pub mod github;
pub mod http;
pub mod local;
pub mod options;
pub mod pr;
pub mod push;
pub mod target;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;

/// What a publish node asks the forge for.
#[derive(Clone, Debug)]
pub struct PrRequest {
    /// Organisation.
    pub org: String,
    /// Repository.
    pub repo: String,
    /// Head branch (already committed in the workspace clone).
    pub branch: String,
    /// Base branch.
    pub base: String,
    /// Rendered title.
    pub title: String,
    /// Rendered body (with `Closes #N` when the unit has an issue).
    pub body: String,
    /// Run id.
    pub run_id: String,
    /// Unit id.
    pub unit_id: String,
    /// The commit the forge's branch must still be at for the push to go through (an existing
    /// branch, such as a PR's head, is never overwritten past someone else's push). `None`:
    /// the branch belongs to dispatch's unit and is forced.
    pub lease: Option<String>,
}

/// What publish does beyond title and body.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// The unit's issue: the PR link is commented on it.
    pub issue: Option<u64>,
    /// Labels to add to the PR (created when missing).
    pub labels: Vec<String>,
    /// Colours (`#rrggbb`) of labels dispatch creates; others get [`DEFAULT_LABEL_COLOUR`].
    pub label_colours: BTreeMap<String, String>,
    /// Open the PR as a draft (GitHub `draft`; Forgejo/Gitea a `WIP: ` title prefix).
    pub draft: bool,
    /// Users asked to review (Gitea, on creation only; Forgejo's and GitHub's API subsets
    /// have no field or endpoint for it, so they log a warning).
    pub reviewers: Vec<String>,
}

/// Colour of labels created without one from the spec.
pub const DEFAULT_LABEL_COLOUR: &str = "#ededed";

/// A pull request the forge holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrRef {
    /// PR number.
    pub number: i64,
    /// How people refer to it, e.g. `local:core/go-io#3` or a URL.
    pub reference: String,
    /// Whether this publish created it (false: it existed and was updated).
    pub created: bool,
    /// Who opened it, as the forge reports it for a PR that existed (`None` when this
    /// publish created it, or the forge does not say: the local forge).
    pub author: Option<String>,
}

impl PrRef {
    /// A PR from its reference (`local:org/repo#3`, or a URL ending in the number).
    pub fn from_reference(reference: &str) -> Option<Self> {
        let number = reference.rsplit(['#', '/']).next()?.parse().ok()?;
        Some(Self {
            number,
            reference: reference.to_owned(),
            created: false,
            author: None,
        })
    }
}

/// What [`Forge::withdraw`] found the PR to be before it acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrWas {
    /// Open: it is closed now, with the comment.
    Open,
    /// Closed already (by a person, or by an earlier attempt of the same withdrawal).
    Closed,
    /// Merged: nothing is closed or deleted.
    Merged,
    /// The forge has no such PR of the branch.
    Missing,
}

/// What [`Forge::withdraw`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Withdrawn {
    /// The PR before.
    pub pr: PrWas,
    /// Whether the branch was deleted now (false: it was gone already, or the PR was merged).
    pub branch_deleted: bool,
}

/// The comment on a PR dispatch closes because a later run of its unit changed nothing.
pub fn withdrawn_comment(run_id: &str, branch: &str) -> String {
    format!(
        "dispatch closed this pull request: on run {run_id} the agent found nothing to change, \
         so the change is not needed any more. The branch {branch} is deleted; a later run \
         that changes something opens a pull request again."
    )
}

/// Errors of a forge.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The repository does not exist on the forge.
    #[error("repository {org}/{repo} does not exist on the {forge} forge ({hint})")]
    NoRepository {
        /// Forge name.
        forge: String,
        /// Organisation.
        org: String,
        /// Repository.
        repo: String,
        /// Where it was looked for, or what to do.
        hint: String,
    },
    /// git failed (push, fetch, merge).
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    /// The branch cannot be merged cleanly.
    #[error("{0} does not merge cleanly into its base")]
    Conflict(String),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The forge section of the spec cannot be used as it is.
    #[error("forge {forge}: {message}")]
    Config {
        /// Forge name.
        forge: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The forge refused the token (401, or 403 that is not a rate limit).
    /// Permanent: the client refuses further writes.
    #[error("the {forge} forge refused dispatch's credentials: {hint}")]
    Unauthorized {
        /// Forge name.
        forge: String,
        /// What happened and what to check (never the token).
        hint: String,
    },
    /// The forge answered a request with an error that retrying does not fix (4xx).
    #[error("{forge}: {what} failed with HTTP {status}: {message}")]
    Http {
        /// Forge name.
        forge: String,
        /// Method and path.
        what: String,
        /// HTTP status.
        status: u16,
        /// The forge's message.
        message: String,
    },
    /// The forge could not be reached, kept failing with 5xx or kept rate limiting; retrying
    /// the unit later may succeed (`infra_error`).
    #[error("{forge}: {what} failed: {message}")]
    Transient {
        /// Forge name.
        forge: String,
        /// Method and path.
        what: String,
        /// Last failure.
        message: String,
    },
    /// Merge refused: the head commit's statuses or checks are not all green (`needs_review`).
    #[error("{reference} is not green: {detail}")]
    NotGreen {
        /// The PR.
        reference: String,
        /// Which statuses or checks fail or are pending.
        detail: String,
    },
}

impl ForgeError {
    /// Whether retrying later may succeed (the executor's `infra_error`, retried).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Whether the PR needs a person rather than a retry (not green, conflict).
    pub fn needs_review(&self) -> bool {
        matches!(self, Self::NotGreen { .. } | Self::Conflict(_))
    }
}

/// A forge as publish and merge nodes see it.
pub trait Forge: Send + Sync + 'static {
    /// Name for messages (`local`, `forgejo`, ...).
    fn name(&self) -> &str;

    /// Where prep clones `org/repo` from.
    fn clone_source(&self, org: &str, repo: &str) -> Result<String, ForgeError>;

    /// Pushes the workspace's HEAD as the request's branch and opens the PR, or updates the one
    /// that already exists for that branch (never a second PR for the same unit).
    fn publish(
        &self,
        repo_dir: &Path,
        request: &PrRequest,
    ) -> impl Future<Output = Result<PrRef, ForgeError>> + Send;

    /// Merges the PR into its base; `scratch` is a directory the forge may use.
    fn merge(
        &self,
        pr: &PrRef,
        request: &PrRequest,
        scratch: &Path,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send;

    /// [`Forge::publish`] with what `PrRequest` does not carry: the unit's issue (commented
    /// with the PR link), labels and their colours, draft, reviewers. Forges that cannot use
    /// them publish plainly.
    fn publish_with(
        &self,
        repo_dir: &Path,
        request: &PrRequest,
        options: &PublishOptions,
    ) -> impl Future<Output = Result<PrRef, ForgeError>> + Send {
        let _ = options;
        self.publish(repo_dir, request)
    }

    /// Waits until the head of PR `pr` of `org/repo` has all its statuses and checks green
    /// (re-asked with growing pauses, at most the forge's `checks_timeout`); an error says
    /// what is red or still pending. A forge without checks (the local one) is green at once:
    /// dispatch's own QA ran.
    fn wait_green(
        &self,
        org: &str,
        repo: &str,
        pr: &PrRef,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send {
        let _ = (org, repo, pr);
        async { Ok(()) }
    }

    /// The repository's default branch as the forge reports it; `None` when the forge does
    /// not know (use the clone's `origin/HEAD`).
    fn default_branch(
        &self,
        org: &str,
        repo: &str,
    ) -> impl Future<Output = Result<Option<String>, ForgeError>> + Send {
        let _ = (org, repo);
        async { Ok(None) }
    }

    /// Starts (`running`) or stops the stopwatch of issue `issue` (Forgejo/Gitea); a no-op
    /// where the forge has none.
    fn stopwatch(
        &self,
        org: &str,
        repo: &str,
        issue: u64,
        running: bool,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send {
        let _ = (org, repo, issue, running);
        async { Ok(()) }
    }

    /// Leaves a PR dispatch did not merge to a person: label [`NEEDS_REVIEW`] (created when
    /// missing) and a comment saying why. A no-op where the forge has no labels (local).
    fn flag_for_review(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        reason: &str,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send {
        let _ = (request, pr, reason);
        async { Ok(()) }
    }

    /// Comments `body` on the PR (a review). Forgejo and Gitea skip a comment that says the
    /// same already; the local forge keeps it in the state database (`dispatch prs --show`).
    fn comment_on_pr(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        body: &str,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send;

    /// Withdraws PR `number` of the request's branch, which dispatch opened for the unit in an
    /// earlier run: comments `comment` on it and closes it when it is open, then deletes the
    /// branch unless the PR was merged. Idempotent, so a resumed run can do it again: a PR
    /// closed already or a branch deleted already is no error. Writes go through the forge
    /// client's write budget. Never called for a branch that existed before the unit.
    fn withdraw(
        &self,
        request: &PrRequest,
        number: u64,
        comment: &str,
    ) -> impl Future<Output = Result<Withdrawn, ForgeError>> + Send;

    /// Opens `issue` in the request's repository unless an open issue with its title holds
    /// its marker already. Forges without issues (local) refuse with [`ForgeError::Config`].
    fn open_issue(
        &self,
        request: &PrRequest,
        issue: &NewIssue,
    ) -> impl Future<Output = Result<IssueRef, ForgeError>> + Send {
        let _ = (request, issue);
        async {
            Err(ForgeError::Config {
                forge: self.name().to_owned(),
                message: "this forge has no issues".to_owned(),
            })
        }
    }
}

/// An issue dispatch opens (one per finding of a review).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewIssue {
    /// Title.
    pub title: String,
    /// Body; it ends with [`NewIssue::marker`], by which an issue opened before is known.
    pub body: String,
    /// Labels (created when missing).
    pub labels: Vec<String>,
    /// A line only dispatch writes (an HTML comment naming the unit): an open issue with this
    /// title whose body holds it was opened by an earlier attempt and is not opened again.
    pub marker: String,
}

/// An issue the forge holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueRef {
    /// Issue number.
    pub number: u64,
    /// Whether this call opened it (false: an earlier attempt had).
    pub opened: bool,
}

/// The label of a PR that waits for a person.
pub const NEEDS_REVIEW: &str = "needs-review";

/// The label of the issues opened for a review's findings when the spec names none.
pub const FINDING_LABEL: &str = "review-finding";

/// Its colour where dispatch creates it.
pub const NEEDS_REVIEW_COLOUR: &str = "#d93f0b";

/// The comment on an issue that names the PR opened for it.
pub fn opened_comment(link: &str) -> String {
    format!("dispatch opened {link} for this issue.")
}

/// The comment on a PR dispatch did not merge.
pub fn needs_review_comment(reason: &str) -> String {
    format!("dispatch did not merge this pull request; it needs a person: {reason}")
}
