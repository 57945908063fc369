//! [`AnyForge`], the one forge a run uses whatever the spec's `forge.kind` says: one type for
//! the executor's `F: Forge`, and the questions the planner and `doctor` ask of a remote forge
//! (an organisation's repositories, open issues, pull requests, the token's scopes).
//!
//! Invariants:
//!
//! - [`AnyForge::from_spec`] is the one place a forge is built from the spec's `forge:`
//!   section; it reads the token from `forge.token_env` and never prints it. For
//!   `kind: local` it builds nothing: the local forge lives in the state directory and records
//!   PRs through the run's journal, so a run builds [`AnyForge::Local`] once it has one, and
//!   commands without a journal (plan, doctor) read the state directory themselves.
//! - Every [`Forge`] method is forwarded to the variant's forge unchanged.
//! - The remote-only questions are not asked of the local forge: there they fail with
//!   [`ForgeError::Config`] saying so, and [`AnyForge::scopes`] is `None` (it has no token).

use std::path::Path;

use super::forgejo::{Flavour, GiteaForge};
use super::github::GithubForge;
use super::http::{seg, HttpClient, Secret};
use super::local::LocalForge;
use super::options::RemoteOptions;
use super::pr::ExistingPr;
use super::target::{RemoteIssue, RemotePr, RemoteRepo, RepoFilter};
use super::{Forge, ForgeError, IssueRef, NewIssue, PrRef, PrRequest, PublishOptions, Withdrawn};
use crate::spec::model::{Forge as ForgeSpec, ForgeKind};

/// The forge of a run: the embedded local one, Forgejo/Gitea, or GitHub.
pub enum AnyForge {
    /// The embedded local forge.
    Local(LocalForge),
    /// Forgejo or Gitea.
    Gitea(GiteaForge),
    /// GitHub or GitHub Enterprise.
    Github(GithubForge),
}

/// `$body` with `$f` bound to the forge of whichever variant `$forge` is.
macro_rules! each {
    ($forge:expr, $f:ident => $body:expr) => {
        match $forge {
            AnyForge::Local($f) => $body,
            AnyForge::Gitea($f) => $body,
            AnyForge::Github($f) => $body,
        }
    };
}

impl std::fmt::Debug for AnyForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(_) => f.write_str("Local"),
            Self::Gitea(forge) => f.debug_tuple("Gitea").field(forge).finish(),
            Self::Github(forge) => f.debug_tuple("Github").field(forge).finish(),
        }
    }
}

impl AnyForge {
    /// Builds the forge the spec's `forge:` section names, reading the token from
    /// `forge.token_env`. `None` for `kind: local` (see the module doc).
    pub fn from_spec(
        spec: &ForgeSpec,
        mut options: RemoteOptions,
    ) -> Result<Option<Self>, ForgeError> {
        let name = format!("{:?}", spec.kind).to_lowercase();
        if spec.kind == ForgeKind::Local {
            return Ok(None);
        }
        let Some(env) = spec.token_env.as_ref() else {
            return Err(ForgeError::Config {
                forge: name,
                message: "a remote forge needs `token_env`, the name of the variable holding \
                          its token"
                    .to_owned(),
            });
        };
        let token = Secret::from_env(&name, env.as_str())?;
        if options.writes_per_minute.is_none() {
            options.writes_per_minute = spec.writes_per_minute;
        }
        if options.git_base.is_none() {
            options.git_base = spec.git_url.clone();
        }
        if let Some(timeout) = spec.checks_timeout {
            options.checks_timeout = timeout.get();
        }
        let forge = match spec.kind {
            ForgeKind::Local => return Ok(None),
            ForgeKind::Github => Self::Github(GithubForge::new(
                spec.url.as_deref(),
                token,
                env.as_str(),
                options,
            )?),
            kind => {
                let flavour = if kind == ForgeKind::Gitea {
                    Flavour::Gitea
                } else {
                    Flavour::Forgejo
                };
                let Some(url) = spec.url.as_deref() else {
                    return Err(ForgeError::Config {
                        forge: name,
                        message: "forge.url is required (the web root, e.g. https://forge.example)"
                            .to_owned(),
                    });
                };
                Self::Gitea(GiteaForge::new(flavour, url, token, env.as_str(), options)?)
            }
        };
        Ok(Some(forge))
    }

    /// The HTTP client of a remote forge; `None` for the local forge.
    fn http(&self) -> Option<&HttpClient> {
        match self {
            Self::Local(_) => None,
            Self::Gitea(f) => Some(f.http()),
            Self::Github(f) => Some(f.http()),
        }
    }

    /// What a remote-only question gets from the local forge.
    fn not_remote(what: &str) -> ForgeError {
        ForgeError::Config {
            forge: "local".to_owned(),
            message: format!(
                "{what} is read from the state directory, not asked of the local forge"
            ),
        }
    }

    /// Repositories of `org` that `filter` accepts (paged through).
    pub async fn list_org_repos(
        &self,
        org: &str,
        filter: &RepoFilter,
    ) -> Result<Vec<RemoteRepo>, ForgeError> {
        match self {
            Self::Local(_) => Err(Self::not_remote(
                "the list of an organisation's repositories",
            )),
            Self::Gitea(f) => f.list_org_repos(org, filter).await,
            Self::Github(f) => f.list_org_repos(org, filter).await,
        }
    }

    /// The token's scopes as the forge reported them on the last answer; `None` when it does
    /// not report them (Gitea, Forgejo, GitHub's fine-grained tokens) or has no token (local).
    pub fn scopes(&self) -> Option<Vec<String>> {
        self.http()?.scopes()
    }

    /// The PR whose head is `branch`: the open one, else the newest closed or merged one.
    pub async fn existing_pr(
        &self,
        org: &str,
        repo: &str,
        branch: &str,
    ) -> Result<Option<ExistingPr>, ForgeError> {
        match self {
            Self::Local(_) => Err(Self::not_remote("the pull request of a branch")),
            Self::Gitea(f) => f.existing_pr(org, repo, branch).await,
            Self::Github(f) => f.existing_pr(org, repo, branch).await,
        }
    }

    /// Closes (`open` false) the open PR of `branch` in `org/repo`, or reopens (`open` true)
    /// its newest closed one that was not merged; the PR changed, `None` when there is none.
    pub async fn set_pr_state(
        &self,
        org: &str,
        repo: &str,
        branch: &str,
        open: bool,
    ) -> Result<Option<String>, ForgeError> {
        let (prs, http) = match self {
            Self::Local(f) => return f.set_pr_state(org, repo, branch, open).await,
            Self::Gitea(f) => (f.branch_prs(org, repo, branch).await?, f.http()),
            Self::Github(f) => (f.branch_prs(org, repo, branch).await?, f.http()),
        };
        let Some(pr) = ExistingPr::to_set(&prs, open) else {
            return Ok(None);
        };
        // The same path on every remote forge (below the API root).
        let path = format!("/repos/{}/{}/pulls/{}", seg(org), seg(repo), pr.number);
        super::pr::set_state(http, &path, open).await?;
        Ok(Some(pr.reference.clone()))
    }

    /// Pull request `number` of `org/repo`.
    pub async fn pull_request(
        &self,
        org: &str,
        repo: &str,
        number: u64,
    ) -> Result<RemotePr, ForgeError> {
        let Some(http) = self.http() else {
            return Err(Self::not_remote("a pull request"));
        };
        // The same path on every remote forge (below the API root).
        let path = format!("/repos/{}/{}/pulls/{number}", seg(org), seg(repo));
        Ok(RemotePr::from_api(&http.get(&path, &[]).await?))
    }

    /// Open issues (not PRs) of `org/repo` carrying every label in `labels`.
    pub async fn open_issues(
        &self,
        org: &str,
        repo: &str,
        labels: &[String],
    ) -> Result<Vec<RemoteIssue>, ForgeError> {
        match self {
            Self::Local(_) => Err(Self::not_remote("the open issues of a repository")),
            Self::Gitea(f) => f.open_issues(org, repo, labels).await,
            Self::Github(f) => f.open_issues(org, repo, labels).await,
        }
    }
}

impl Forge for AnyForge {
    fn name(&self) -> &str {
        each!(self, f => f.name())
    }

    fn clone_source(&self, org: &str, repo: &str) -> Result<String, ForgeError> {
        each!(self, f => f.clone_source(org, repo))
    }

    async fn publish(&self, repo_dir: &Path, request: &PrRequest) -> Result<PrRef, ForgeError> {
        each!(self, f => f.publish(repo_dir, request).await)
    }

    async fn publish_with(
        &self,
        repo_dir: &Path,
        request: &PrRequest,
        options: &PublishOptions,
    ) -> Result<PrRef, ForgeError> {
        each!(self, f => f.publish_with(repo_dir, request, options).await)
    }

    async fn merge(
        &self,
        pr: &PrRef,
        request: &PrRequest,
        scratch: &Path,
    ) -> Result<(), ForgeError> {
        each!(self, f => f.merge(pr, request, scratch).await)
    }

    async fn default_branch(&self, org: &str, repo: &str) -> Result<Option<String>, ForgeError> {
        each!(self, f => Forge::default_branch(f, org, repo).await)
    }

    async fn stopwatch(
        &self,
        org: &str,
        repo: &str,
        issue: u64,
        running: bool,
    ) -> Result<(), ForgeError> {
        each!(self, f => f.stopwatch(org, repo, issue, running).await)
    }

    async fn flag_for_review(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        reason: &str,
    ) -> Result<(), ForgeError> {
        each!(self, f => f.flag_for_review(request, pr, reason).await)
    }

    async fn comment_on_pr(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        body: &str,
    ) -> Result<(), ForgeError> {
        each!(self, f => f.comment_on_pr(request, pr, body).await)
    }

    async fn wait_green(&self, org: &str, repo: &str, pr: &PrRef) -> Result<(), ForgeError> {
        each!(self, f => f.wait_green(org, repo, pr).await)
    }

    async fn open_issue(
        &self,
        request: &PrRequest,
        issue: &NewIssue,
    ) -> Result<IssueRef, ForgeError> {
        each!(self, f => f.open_issue(request, issue).await)
    }

    async fn withdraw(
        &self,
        request: &PrRequest,
        number: u64,
        comment: &str,
    ) -> Result<Withdrawn, ForgeError> {
        each!(self, f => f.withdraw(request, number, comment).await)
    }
}
