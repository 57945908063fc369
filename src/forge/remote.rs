//! What the remote forges share: publish options, targets read from the forge (repositories,
//! issues), repository filters, the authenticated git push, the green-check verdict, and
//! [`RemoteForge`], the one value the CLI builds from the spec's `forge:` section.
//!
//! The token reaches git only through the environment of the `git push` process
//! (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` setting `http.extraHeader`):
//! never in argv, never in the URL, never in the workspace's git config.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::forgejo::{Flavour, GiteaForge};
use super::github::GithubForge;
use super::http::{HttpClient, RetryPolicy, Secret};
use super::local::LocalForge;
use super::{Forge, ForgeError, PrRef, PrRequest};
use crate::backoff::Backoff;
use crate::spec::model::{Forge as ForgeSpec, ForgeKind};

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

/// How a remote forge client behaves, beyond URL and token.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Clone and push from `{git_base}/{org}/{repo}.git` instead of the forge's web URL (tests
    /// use a directory of bare repositories; a path or `file://` URL is pushed without a token).
    pub git_base: Option<String>,
    /// `forge.writes_per_minute`.
    pub writes_per_minute: Option<u32>,
    /// Retries and waits of the HTTP client.
    pub retry: RetryPolicy,
    /// How long merge waits for pending checks before giving up as not green.
    pub checks_timeout: Duration,
}

/// How long a guarded merge waits for pending checks unless `forge.checks_timeout` says.
pub const DEFAULT_CHECKS_TIMEOUT: Duration = Duration::from_secs(20 * 60);

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            git_base: None,
            writes_per_minute: None,
            retry: RetryPolicy::default(),
            checks_timeout: DEFAULT_CHECKS_TIMEOUT,
        }
    }
}

/// A repository as the forge lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRepo {
    /// Repository name (without the owner).
    pub name: String,
    /// Its default branch.
    pub default_branch: String,
    /// Archived (read-only).
    pub archived: bool,
    /// A fork of another repository.
    pub fork: bool,
}

impl RemoteRepo {
    /// A repository from the forge's JSON (Gitea, Forgejo and GitHub name the fields alike).
    pub(super) fn from_api(r: &serde_json::Value) -> Self {
        Self {
            name: text(r, "name"),
            default_branch: text(r, "default_branch"),
            archived: r["archived"].as_bool().unwrap_or(false),
            fork: r["fork"].as_bool().unwrap_or(false),
        }
    }
}

/// A string field of forge JSON, empty when absent.
pub(super) fn text(value: &serde_json::Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

/// An open issue as the forge lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteIssue {
    /// Issue number.
    pub number: u64,
    /// Title (reaches the prompt template).
    pub title: String,
    /// Body (reaches the prompt template).
    pub body: String,
    /// Its label names.
    pub labels: Vec<String>,
}

impl RemoteIssue {
    /// An issue from the forge's JSON (the same fields on every forge).
    pub(super) fn from_api(i: &serde_json::Value) -> Self {
        Self {
            number: i["number"].as_u64().unwrap_or(0),
            title: text(i, "title"),
            body: text(i, "body"),
            labels: i["labels"]
                .as_array()
                .map(|l| l.iter().map(|l| text(l, "name")).collect())
                .unwrap_or_default(),
        }
    }
}

/// A pull request as the forge shows it (the fields a PR target needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePr {
    /// Head branch.
    pub head: String,
    /// `owner/name` of the repository the head branch lives in (a fork's, or this one's).
    pub head_repo: String,
    /// Base branch.
    pub base: String,
    /// Open (neither closed nor merged).
    pub open: bool,
}

impl RemotePr {
    /// A PR from the forge's JSON (the same fields on every forge).
    pub(super) fn from_api(p: &serde_json::Value) -> Self {
        Self {
            head: text(&p["head"], "ref"),
            head_repo: text(&p["head"]["repo"], "full_name"),
            base: text(&p["base"], "ref"),
            open: text(p, "state") == "open" && p["merged"].as_bool() != Some(true),
        }
    }
}

/// The PR a branch had or has, as `plan --remote` compares it with what publish would send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingPr {
    /// How people refer to it (its web URL, or `local:org/repo#N`).
    pub reference: String,
    /// Open (neither closed nor merged).
    pub open: bool,
    /// Merged.
    pub merged: bool,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
}

impl ExistingPr {
    /// A PR from the forge's JSON (the same fields on every forge).
    pub(super) fn from_api(p: &serde_json::Value) -> Self {
        Self {
            reference: text(p, "html_url"),
            open: text(p, "state") == "open" && p["merged"].as_bool() != Some(true),
            merged: p["merged"].as_bool() == Some(true),
            title: text(p, "title"),
            body: text(p, "body"),
        }
    }

    /// The open one among `prs` (all of one head branch), else the newest.
    pub fn pick(prs: Vec<ExistingPr>) -> Option<ExistingPr> {
        let open = prs.iter().position(|p| p.open);
        let mut prs = prs;
        match open {
            Some(i) => Some(prs.swap_remove(i)),
            None => prs.into_iter().next(),
        }
    }
}

/// Which of an org's repositories become targets.
#[derive(Clone, Debug, Default)]
pub struct RepoFilter {
    /// Globs (`*`, `?`) a name must match; empty matches every name.
    pub include: Vec<String>,
    /// Globs that remove names.
    pub exclude: Vec<String>,
    /// Keep archived repositories.
    pub archived: bool,
    /// Keep forks.
    pub forks: bool,
}

impl RepoFilter {
    /// Whether `repo` is a target.
    pub fn accepts(&self, repo: &RemoteRepo) -> bool {
        (self.archived || !repo.archived)
            && (self.forks || !repo.fork)
            && (self.include.is_empty() || self.include.iter().any(|g| glob(g, &repo.name)))
            && !self.exclude.iter().any(|g| glob(g, &repo.name))
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What the head commit's statuses and checks say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checks {
    /// Everything reported passed (or nothing is reported: dispatch's own QA was green).
    Green,
    /// Something is still running.
    Pending(String),
    /// Something failed.
    Failing(String),
}

/// Waits for `checks` to settle: returns on green, fails on red, and re-asks pending checks
/// with doubling pauses (from 10 s, at most 60 s) until `timeout` has passed.
pub(crate) async fn wait_for_green<F, Fut>(
    reference: &str,
    timeout: Duration,
    mut checks: F,
) -> Result<(), ForgeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Checks, ForgeError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pauses = Backoff::new(Duration::from_secs(10)).cap(Duration::from_secs(60));
    loop {
        match checks().await? {
            Checks::Green => return Ok(()),
            Checks::Failing(detail) => {
                return Err(ForgeError::NotGreen {
                    reference: reference.to_owned(),
                    detail,
                })
            }
            Checks::Pending(detail) => {
                let pause = pauses.next().expect("a backoff without a limit never ends");
                if tokio::time::Instant::now() + pause > deadline {
                    return Err(ForgeError::NotGreen {
                        reference: reference.to_owned(),
                        detail: format!("still pending: {detail}"),
                    });
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The guarded merge of both remote forges: the PR at `pull` (its API path) is merged by the
/// request `merge(head sha, title)` builds, once `checks(head sha)` is green and the forge
/// calls it mergeable. A PR merged already is fine; a merge refused (405, 409) or a PR the
/// forge calls unmergeable is a conflict.
pub(super) async fn guarded_merge<C, Fut>(
    http: &HttpClient,
    pull: &str,
    pr: &PrRef,
    request: &PrRequest,
    checks_timeout: Duration,
    checks: C,
    merge: impl FnOnce(String, String) -> (reqwest::Method, serde_json::Value),
) -> Result<(), ForgeError>
where
    C: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Checks, ForgeError>>,
{
    let current = http.get(pull, &[]).await?;
    if current["merged"].as_bool() == Some(true) {
        return Ok(());
    }
    let sha = text(&current["head"], "sha");
    wait_for_green(&pr.reference, checks_timeout, || checks(sha.clone())).await?;
    if current["mergeable"].as_bool() == Some(false) {
        return Err(ForgeError::Conflict(pr.reference.clone()));
    }
    let (method, body) = merge(sha, format!("{} (#{})", request.title, pr.number));
    match http
        .send(method, &format!("{pull}/merge"), &[], Some(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(ForgeError::Http {
            status: 405 | 409, ..
        }) => Err(ForgeError::Conflict(pr.reference.clone())),
        Err(e) => Err(e),
    }
}

/// Whether git reaches `url` over HTTP(S), the only transport that gets the token (SSH uses
/// the user's keys, local paths need nothing).
fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// Pushes HEAD of `repo_dir` to `url` as the request's branch (forced when the branch belongs
/// to the unit, else with the request's lease).
/// For HTTP(S) URLs the token goes into an `Authorization: Basic` header set through
/// git's environment configuration; SSH URLs use the user's keys and never see the token.
pub(crate) async fn push(
    repo_dir: &Path,
    url: &str,
    request: &PrRequest,
    token: &Secret,
) -> Result<(), ForgeError> {
    let args = crate::git::push_args(url, &request.branch, request.lease.as_deref());
    let mut command = Command::new("git");
    command
        .args(&args)
        .current_dir(repo_dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .kill_on_drop(true);
    if is_http(url) {
        let basic = base64(format!("x-access-token:{}", token.expose()).as_bytes());
        command
            .env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            )
            .env("GIT_CONFIG_KEY_1", "credential.helper")
            .env("GIT_CONFIG_VALUE_1", "");
    }
    let failed = |message: String| {
        ForgeError::Git(crate::git::GitError {
            args: args.join(" "),
            dir: repo_dir.display().to_string(),
            message: token.redact(&message),
        })
    };
    let output = command.output().await.map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(crate::git::failure(&String::from_utf8_lossy(
            &output.stderr,
        ))))
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A remote forge built from the spec: Forgejo/Gitea or GitHub.
#[derive(Debug)]
pub enum RemoteForge {
    /// Forgejo or Gitea.
    Gitea(GiteaForge),
    /// GitHub or GitHub Enterprise.
    Github(GithubForge),
}

impl RemoteForge {
    /// Builds the forge the spec's `forge:` section names, reading the token from
    /// `forge.token_env`. `None` for `kind: local`.
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

    /// Repositories of `org` that `filter` accepts (paged through).
    pub async fn list_org_repos(
        &self,
        org: &str,
        filter: &RepoFilter,
    ) -> Result<Vec<RemoteRepo>, ForgeError> {
        match self {
            Self::Gitea(f) => f.list_org_repos(org, filter).await,
            Self::Github(f) => f.list_org_repos(org, filter).await,
        }
    }

    /// The token's scopes as the forge reported them on the last answer; `None` when it does
    /// not report them (Gitea, Forgejo, GitHub's fine-grained tokens).
    pub fn scopes(&self) -> Option<Vec<String>> {
        self.http().scopes()
    }

    fn http(&self) -> &HttpClient {
        match self {
            Self::Gitea(f) => f.http(),
            Self::Github(f) => f.http(),
        }
    }

    /// The PR whose head is `branch`: the open one, else the newest closed or merged one.
    pub async fn existing_pr(
        &self,
        org: &str,
        repo: &str,
        branch: &str,
    ) -> Result<Option<ExistingPr>, ForgeError> {
        match self {
            Self::Gitea(f) => f.existing_pr(org, repo, branch).await,
            Self::Github(f) => f.existing_pr(org, repo, branch).await,
        }
    }

    /// Pull request `number` of `org/repo`.
    pub async fn pull_request(
        &self,
        org: &str,
        repo: &str,
        number: u64,
    ) -> Result<RemotePr, ForgeError> {
        // The same path on every forge (below the API root).
        let path = format!("/repos/{}/{}/pulls/{number}", seg(org), seg(repo));
        Ok(RemotePr::from_api(&self.http().get(&path, &[]).await?))
    }

    /// Open issues (not PRs) of `org/repo` carrying every label in `labels`.
    pub async fn open_issues(
        &self,
        org: &str,
        repo: &str,
        labels: &[String],
    ) -> Result<Vec<RemoteIssue>, ForgeError> {
        match self {
            Self::Gitea(f) => f.open_issues(org, repo, labels).await,
            Self::Github(f) => f.open_issues(org, repo, labels).await,
        }
    }
}

impl Forge for RemoteForge {
    fn name(&self) -> &str {
        match self {
            Self::Gitea(f) => f.name(),
            Self::Github(f) => f.name(),
        }
    }

    fn clone_source(&self, org: &str, repo: &str) -> Result<String, ForgeError> {
        match self {
            Self::Gitea(f) => f.clone_source(org, repo),
            Self::Github(f) => f.clone_source(org, repo),
        }
    }

    async fn publish(&self, repo_dir: &Path, request: &PrRequest) -> Result<PrRef, ForgeError> {
        self.publish_with(repo_dir, request, &PublishOptions::default())
            .await
    }

    async fn publish_with(
        &self,
        repo_dir: &Path,
        request: &PrRequest,
        options: &PublishOptions,
    ) -> Result<PrRef, ForgeError> {
        match self {
            Self::Gitea(f) => f.publish_with(repo_dir, request, options).await,
            Self::Github(f) => f.publish_with(repo_dir, request, options).await,
        }
    }

    async fn merge(
        &self,
        pr: &PrRef,
        request: &PrRequest,
        scratch: &Path,
    ) -> Result<(), ForgeError> {
        match self {
            Self::Gitea(f) => f.merge(pr, request, scratch).await,
            Self::Github(f) => f.merge(pr, request, scratch).await,
        }
    }

    async fn default_branch(&self, org: &str, repo: &str) -> Result<Option<String>, ForgeError> {
        match self {
            Self::Gitea(f) => Forge::default_branch(f, org, repo).await,
            Self::Github(f) => Forge::default_branch(f, org, repo).await,
        }
    }

    async fn stopwatch(
        &self,
        org: &str,
        repo: &str,
        issue: u64,
        running: bool,
    ) -> Result<(), ForgeError> {
        match self {
            Self::Gitea(f) => f.stopwatch(org, repo, issue, running).await,
            Self::Github(f) => f.stopwatch(org, repo, issue, running).await,
        }
    }

    async fn flag_for_review(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        reason: &str,
    ) -> Result<(), ForgeError> {
        match self {
            Self::Gitea(f) => f.flag_for_review(request, pr, reason).await,
            Self::Github(f) => f.flag_for_review(request, pr, reason).await,
        }
    }
}

/// The forge a run uses: the embedded local one or a remote one. One type for the executor's
/// `F: Forge` whatever the spec's `forge.kind` says.
pub enum AnyForge {
    /// The embedded local forge.
    Local(LocalForge),
    /// Forgejo, Gitea or GitHub (boxed: it is much larger than the local forge).
    Remote(Box<RemoteForge>),
}

impl Forge for AnyForge {
    fn name(&self) -> &str {
        match self {
            Self::Local(f) => f.name(),
            Self::Remote(f) => f.name(),
        }
    }

    fn clone_source(&self, org: &str, repo: &str) -> Result<String, ForgeError> {
        match self {
            Self::Local(f) => f.clone_source(org, repo),
            Self::Remote(f) => f.clone_source(org, repo),
        }
    }

    async fn publish(&self, repo_dir: &Path, request: &PrRequest) -> Result<PrRef, ForgeError> {
        match self {
            Self::Local(f) => f.publish(repo_dir, request).await,
            Self::Remote(f) => f.publish(repo_dir, request).await,
        }
    }

    async fn publish_with(
        &self,
        repo_dir: &Path,
        request: &PrRequest,
        options: &PublishOptions,
    ) -> Result<PrRef, ForgeError> {
        match self {
            Self::Local(f) => f.publish_with(repo_dir, request, options).await,
            Self::Remote(f) => f.publish_with(repo_dir, request, options).await,
        }
    }

    async fn merge(
        &self,
        pr: &PrRef,
        request: &PrRequest,
        scratch: &Path,
    ) -> Result<(), ForgeError> {
        match self {
            Self::Local(f) => f.merge(pr, request, scratch).await,
            Self::Remote(f) => f.merge(pr, request, scratch).await,
        }
    }

    async fn default_branch(&self, org: &str, repo: &str) -> Result<Option<String>, ForgeError> {
        match self {
            Self::Local(f) => f.default_branch(org, repo).await,
            Self::Remote(f) => Forge::default_branch(f.as_ref(), org, repo).await,
        }
    }

    async fn stopwatch(
        &self,
        org: &str,
        repo: &str,
        issue: u64,
        running: bool,
    ) -> Result<(), ForgeError> {
        match self {
            Self::Local(f) => f.stopwatch(org, repo, issue, running).await,
            Self::Remote(f) => f.stopwatch(org, repo, issue, running).await,
        }
    }

    async fn flag_for_review(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        reason: &str,
    ) -> Result<(), ForgeError> {
        match self {
            Self::Local(f) => f.flag_for_review(request, pr, reason).await,
            Self::Remote(f) => f.flag_for_review(request, pr, reason).await,
        }
    }
}

/// Percent-encodes one path segment.
pub(crate) fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pending_checks_are_asked_again_with_growing_pauses_until_green() {
        let start = tokio::time::Instant::now();
        let mut asked = Vec::new();
        let answers = std::cell::RefCell::new(
            vec![
                Checks::Pending("ci is running".to_owned()),
                Checks::Pending("ci is running".to_owned()),
                Checks::Green,
            ]
            .into_iter(),
        );
        let result = wait_for_green("pr#1", Duration::from_secs(20 * 60), || {
            asked.push(start.elapsed().as_secs());
            let next = answers.borrow_mut().next().expect("asked too often");
            async move { Ok(next) }
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(asked, [0, 10, 30], "pauses of 10 s, then 20 s");
    }

    #[tokio::test(start_paused = true)]
    async fn checks_still_pending_at_the_deadline_are_not_green() {
        let start = tokio::time::Instant::now();
        let mut asked = 0;
        let result = wait_for_green("pr#1", Duration::from_secs(5 * 60), || {
            asked += 1;
            async { Ok(Checks::Pending("ci is queued".to_owned())) }
        })
        .await;
        match result {
            Err(ForgeError::NotGreen { detail, .. }) => {
                assert!(detail.contains("still pending: ci is queued"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // 10 + 20 + 40 + 60 + 60 + 60 s = 250 s of pauses; the next would pass 300 s.
        assert_eq!(asked, 7);
        assert!(start.elapsed() <= Duration::from_secs(5 * 60));
    }

    #[tokio::test(start_paused = true)]
    async fn failing_checks_end_the_wait_at_once() {
        let result = wait_for_green("pr#1", Duration::from_secs(600), || async {
            Ok(Checks::Failing("ci failed".to_owned()))
        })
        .await;
        assert!(
            matches!(result, Err(ForgeError::NotGreen { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn globs_match_names() {
        assert!(glob("go-*", "go-io"));
        assert!(glob("*", ""));
        assert!(glob("g?-i*o", "go-io"));
        assert!(!glob("go-*", "php-io"));
        assert!(glob("*-io", "go-io"));
        assert!(!glob("*-io", "go-ion"));
    }

    #[test]
    fn base64_encodes_like_the_rfc() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn filters_skip_archived_and_forks_unless_asked() {
        let repo = |name: &str, archived, fork| RemoteRepo {
            name: name.to_owned(),
            default_branch: "main".to_owned(),
            archived,
            fork,
        };
        let filter = RepoFilter {
            include: vec!["go-*".to_owned()],
            exclude: vec!["go-old*".to_owned()],
            ..RepoFilter::default()
        };
        assert!(filter.accepts(&repo("go-io", false, false)));
        assert!(!filter.accepts(&repo("go-io", true, false)));
        assert!(!filter.accepts(&repo("go-io", false, true)));
        assert!(!filter.accepts(&repo("go-oldlog", false, false)));
        assert!(!filter.accepts(&repo("php-io", false, false)));
    }
}
