//! GitHub and GitHub Enterprise over the REST API: clone over HTTPS, push with the token in
//! git's environment, PRs found by `head=owner:branch` and created or updated, labels added by
//! name (GitHub creates missing ones), the issue commented with the PR link, and a merge
//! guarded by the combined status and the check runs of the head commit.
//!
//! `Authorization: Bearer T`, `Accept: application/vnd.github+json` (see [`super::http`]). The
//! API base is `https://api.github.com` unless the spec's `forge.url` names an Enterprise API
//! root (`https://ghe.example/api/v3`). GitHub has no stopwatch: it is a no-op. Reviewers are
//! not requested (the API subset dispatch is checked against has no endpoint for them).

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};

use super::http::{seg, text, AuthScheme, HttpClient, HttpConfig, Secret};
use super::options::RemoteOptions;
use super::pr::{self, Checks, ExistingPr};
use super::push;
use super::target::{self, RemoteIssue, RemoteRepo, RepoFilter};
use super::{
    needs_review_comment, opened_comment, Forge, ForgeError, IssueRef, NewIssue, PrRef, PrRequest,
    PublishOptions, Withdrawn, NEEDS_REVIEW,
};

/// The public API root.
pub const GITHUB_API: &str = "https://api.github.com";

/// Page size of list requests.
const PAGE: usize = 100;

/// A GitHub (or Enterprise) API.
#[derive(Debug)]
pub struct GithubForge {
    git_base: String,
    http: HttpClient,
    options: RemoteOptions,
}

impl GithubForge {
    /// The API at `api_base` (default [`GITHUB_API`]) with `token` read from `token_env`.
    pub fn new(
        api_base: Option<&str>,
        token: Secret,
        token_env: &str,
        options: RemoteOptions,
    ) -> Result<Self, ForgeError> {
        let api = api_base
            .unwrap_or(GITHUB_API)
            .trim_end_matches('/')
            .to_owned();
        let web = if api == GITHUB_API {
            "https://github.com".to_owned()
        } else {
            api.trim_end_matches("/api/v3").to_owned()
        };
        let git_base = options
            .git_base
            .clone()
            .unwrap_or(web)
            .trim_end_matches('/')
            .to_owned();
        let http = HttpClient::new(HttpConfig {
            forge: "github".to_owned(),
            api_base: api,
            token,
            token_env: token_env.to_owned(),
            scheme: AuthScheme::Bearer,
            writes_per_minute: options.writes_per_minute,
            retry: options.retry,
        })?;
        Ok(Self {
            git_base,
            http,
            options,
        })
    }

    fn repo_path(org: &str, repo: &str) -> String {
        format!("/repos/{}/{}", seg(org), seg(repo))
    }

    /// The default branch of `org/repo`.
    pub async fn repo_default_branch(&self, org: &str, repo: &str) -> Result<String, ForgeError> {
        match self.http.get(&Self::repo_path(org, repo), &[]).await {
            Ok(answer) => Ok(text(&answer, "default_branch")),
            Err(ForgeError::Http { status: 404, .. }) => Err(ForgeError::NoRepository {
                forge: "github".to_owned(),
                org: org.to_owned(),
                repo: repo.to_owned(),
                hint: "not found, or the token cannot see it".to_owned(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The HTTP client (what the forges share goes through it in [`super::any::AnyForge`]).
    pub(super) fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The PR whose head is `branch`: the open one, else the newest closed or merged one.
    pub async fn existing_pr(
        &self,
        org: &str,
        repo: &str,
        branch: &str,
    ) -> Result<Option<ExistingPr>, ForgeError> {
        Ok(ExistingPr::pick(self.branch_prs(org, repo, branch).await?))
    }

    /// The PRs whose head is `branch`, newest first.
    pub async fn branch_prs(
        &self,
        org: &str,
        repo: &str,
        branch: &str,
    ) -> Result<Vec<ExistingPr>, ForgeError> {
        let path = format!("{}/pulls", Self::repo_path(org, repo));
        let query = [
            ("state", "all".to_owned()),
            ("head", format!("{org}:{branch}")),
        ];
        let items = self.http.get_all(&path, &query, "per_page", PAGE).await?;
        Ok(items
            .iter()
            .filter(|p| pr::head_in(p, org, repo))
            .map(ExistingPr::from_api)
            .collect())
    }

    /// Repositories of `org` that `filter` accepts.
    pub async fn list_org_repos(
        &self,
        org: &str,
        filter: &RepoFilter,
    ) -> Result<Vec<RemoteRepo>, ForgeError> {
        let path = format!("/orgs/{}/repos", seg(org));
        let items = self.http.get_all(&path, &[], "per_page", PAGE).await?;
        Ok(items
            .iter()
            .map(RemoteRepo::from_api)
            .filter(|r| filter.accepts(r))
            .collect())
    }

    /// Open issues (PRs left out) of `org/repo` with all of `labels`.
    pub async fn open_issues(
        &self,
        org: &str,
        repo: &str,
        labels: &[String],
    ) -> Result<Vec<RemoteIssue>, ForgeError> {
        let path = format!("{}/issues", Self::repo_path(org, repo));
        let mut query = vec![("state", "open".to_owned())];
        if !labels.is_empty() {
            query.push(("labels", labels.join(",")));
        }
        let items = self.http.get_all(&path, &query, "per_page", PAGE).await?;
        Ok(items
            .iter()
            .filter(|i| i.get("pull_request").is_none_or(Value::is_null))
            .map(RemoteIssue::from_api)
            .collect())
    }

    async fn checks(&self, org: &str, repo: &str, sha: &str) -> Result<Checks, ForgeError> {
        let base = format!("{}/commits/{}", Self::repo_path(org, repo), seg(sha));
        let status = self.http.get(&format!("{base}/status"), &[]).await?;
        let runs = self
            .http
            .get(
                &format!("{base}/check-runs"),
                &[("per_page", PAGE.to_string())],
            )
            .await?;
        Ok(verdict(&status, &runs))
    }
}

/// Green when no status and no check run fails or is still running.
fn verdict(status: &Value, runs: &Value) -> Checks {
    let mut failing = Vec::new();
    let mut pending = Vec::new();
    for s in status["statuses"].as_array().into_iter().flatten() {
        let line = format!("{} is {}", text(s, "context"), text(s, "state"));
        match text(s, "state").as_str() {
            "success" => {}
            "pending" => pending.push(line),
            _ => failing.push(line),
        }
    }
    for r in runs["check_runs"].as_array().into_iter().flatten() {
        let name = text(r, "name");
        if text(r, "status") != "completed" {
            pending.push(format!("check {name} is {}", text(r, "status")));
            continue;
        }
        let conclusion = text(r, "conclusion");
        if !matches!(conclusion.as_str(), "success" | "neutral" | "skipped") {
            failing.push(format!("check {name} concluded {conclusion}"));
        }
    }
    if !failing.is_empty() {
        Checks::Failing(failing.join(", "))
    } else if !pending.is_empty() {
        Checks::Pending(pending.join(", "))
    } else {
        Checks::Green
    }
}

impl Forge for GithubForge {
    fn name(&self) -> &str {
        "github"
    }

    fn clone_source(&self, org: &str, repo: &str) -> Result<String, ForgeError> {
        Ok(format!("{}/{org}/{repo}.git", self.git_base))
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
        let (org, repo) = (request.org.as_str(), request.repo.as_str());
        let url = self.clone_source(org, repo)?;
        push::push(repo_dir, &url, request, self.http.token()).await?;
        let pulls = format!("{}/pulls", Self::repo_path(org, repo));
        let existing = self
            .http
            .get(
                &pulls,
                &[
                    ("state", "open".to_owned()),
                    ("head", format!("{org}:{}", request.branch)),
                ],
            )
            .await?;
        let existing = existing
            .as_array()
            .and_then(|p| p.iter().find(|p| pr::head_in(p, org, repo)).cloned())
            .unwrap_or(Value::Null);
        let author = pr::author(&existing);
        let (pr, created) = if existing.is_null() {
            let body = json!({
                "title": request.title,
                "head": request.branch,
                "base": request.base,
                "body": request.body,
                "draft": options.draft,
            });
            let answer = self
                .http
                .send(Method::POST, &pulls, &[], Some(&body))
                .await?;
            (answer.body, true)
        } else {
            let number = existing["number"].as_u64().unwrap_or(0);
            let answer = self
                .http
                .send(
                    Method::PATCH,
                    &format!("{pulls}/{number}"),
                    &[],
                    Some(&json!({
                        "title": request.title,
                        "body": request.body,
                        "base": request.base,
                    })),
                )
                .await?;
            (answer.body, false)
        };
        let number = pr["number"].as_u64().unwrap_or(0);
        let link = text(&pr, "html_url");
        let issues = format!("{}/issues", Self::repo_path(org, repo));
        if !options.labels.is_empty() {
            self.http
                .send(
                    Method::POST,
                    &format!("{issues}/{number}/labels"),
                    &[],
                    Some(&json!({ "labels": options.labels })),
                )
                .await?;
        }
        if let (Some(issue), true) = (options.issue, created) {
            self.http
                .send(
                    Method::POST,
                    &format!("{issues}/{issue}/comments"),
                    &[],
                    Some(&json!({ "body": opened_comment(&link) })),
                )
                .await?;
        }
        if !options.reviewers.is_empty() {
            tracing::warn!(pr = %link, "reviewers are not requested on GitHub yet");
        }
        Ok(PrRef {
            number: number as i64,
            reference: link,
            created,
            author: author.filter(|_| !created),
        })
    }

    async fn wait_green(&self, org: &str, repo: &str, pr: &PrRef) -> Result<(), ForgeError> {
        let pull = format!("{}/pulls/{}", Self::repo_path(org, repo), pr.number);
        let checks = |sha: String| async move { self.checks(org, repo, &sha).await };
        pr::wait_green(&self.http, &pull, pr, self.options.checks_timeout, checks).await
    }

    async fn merge(
        &self,
        pr: &PrRef,
        request: &PrRequest,
        _scratch: &Path,
    ) -> Result<(), ForgeError> {
        let (org, repo) = (request.org.as_str(), request.repo.as_str());
        let pull = format!("{}/pulls/{}", Self::repo_path(org, repo), pr.number);
        let checks = |sha: String| async move { self.checks(org, repo, &sha).await };
        pr::guarded_merge(
            &self.http,
            &pull,
            pr,
            request,
            self.options.checks_timeout,
            checks,
            |sha, title| {
                let body = json!({ "sha": sha, "merge_method": "merge", "commit_title": title });
                (Method::PUT, body)
            },
        )
        .await
    }

    async fn default_branch(&self, org: &str, repo: &str) -> Result<Option<String>, ForgeError> {
        self.repo_default_branch(org, repo).await.map(Some)
    }

    /// GitHub creates the label when missing (without a colour: the API subset has no label
    /// endpoint); comments cannot be listed there, so the comment is not deduplicated.
    async fn flag_for_review(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        reason: &str,
    ) -> Result<(), ForgeError> {
        let issue = format!(
            "{}/issues/{}",
            Self::repo_path(&request.org, &request.repo),
            pr.number
        );
        self.http
            .send(
                Method::POST,
                &format!("{issue}/labels"),
                &[],
                Some(&json!({ "labels": [NEEDS_REVIEW] })),
            )
            .await?;
        self.http
            .send(
                Method::POST,
                &format!("{issue}/comments"),
                &[],
                Some(&json!({ "body": needs_review_comment(reason) })),
            )
            .await?;
        Ok(())
    }

    /// Comments cannot be listed in GitHub's API subset, so the comment is not deduplicated.
    async fn comment_on_pr(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        body: &str,
    ) -> Result<(), ForgeError> {
        let path = format!(
            "{}/issues/{}/comments",
            Self::repo_path(&request.org, &request.repo),
            pr.number
        );
        self.http
            .send(Method::POST, &path, &[], Some(&json!({ "body": body })))
            .await?;
        Ok(())
    }

    /// The comment is posted once per attempt (GitHub's API subset cannot list comments); the
    /// branch is deleted by `DELETE /repos/{owner}/{repo}/git/refs/heads/{branch}` (404 or
    /// 422 "Reference does not exist": gone already).
    async fn withdraw(
        &self,
        request: &PrRequest,
        number: u64,
        comment: &str,
    ) -> Result<Withdrawn, ForgeError> {
        let path = Self::repo_path(&request.org, &request.repo);
        // The ref's path keeps the branch's slashes (`heads/agent/fix`), each part encoded.
        let branch: Vec<String> = request.branch.split('/').map(seg).collect();
        let pr = PrRef {
            number: number as i64,
            reference: format!("#{number}"),
            created: false,
            author: None,
        };
        pr::withdraw(
            &self.http,
            &format!("{path}/pulls/{number}"),
            &request.branch,
            &format!("{path}/git/refs/heads/{}", branch.join("/")),
            &[404, 422],
            || self.comment_on_pr(request, &pr, comment),
        )
        .await
    }

    /// GitHub takes label names on creation and creates the missing ones.
    async fn open_issue(
        &self,
        request: &PrRequest,
        issue: &NewIssue,
    ) -> Result<IssueRef, ForgeError> {
        let (org, repo) = (request.org.as_str(), request.repo.as_str());
        let open = self.open_issues(org, repo, &issue.labels).await?;
        let path = format!("{}/issues", Self::repo_path(org, repo));
        let body = json!({ "title": issue.title, "body": issue.body, "labels": issue.labels });
        target::open_issue_once(&self.http, &path, &open, issue, body).await
    }
}
