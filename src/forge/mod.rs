//! Forges: where targets are cloned from, where branches are pushed and pull requests opened.
//!
//! The [`Forge`] trait is what publish and merge nodes need; `local` (bare repositories in the
//! state directory, PRs in the state database) is the embedded default. Forgejo/Gitea and
//! GitHub implement the same trait over their HTTP APIs: `clone_source` becomes an HTTPS or
//! SSH URL, `publish` pushes with a credential helper and creates or updates the PR through
//! the API, `merge` asks the forge. Only publish and merge nodes hold a forge.

pub mod local;

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
}

/// A pull request the forge holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrRef {
    /// PR number.
    pub number: i64,
    /// How people refer to it, e.g. `local:core/go-io#3` or a URL.
    pub reference: String,
    /// Whether this publish created it (false: it existed and was updated).
    pub created: bool,
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
}
