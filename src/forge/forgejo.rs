//! Forgejo and Gitea (they share API v1): clone over HTTPS, push with the token in git's
//! environment, PRs created or updated by head branch, labels created when missing, the issue
//! commented with the PR link, stopwatches, and a merge guarded by the combined status.
//!
//! `Authorization: token T` on every API request (see [`super::http`]). The flavour changes
//! messages and the two places where the API descriptions differ: the merge form's field
//! names, and reviewers on creation (Gitea only). Draft PRs are a `WIP: ` title prefix.

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
    PublishOptions, Withdrawn, DEFAULT_LABEL_COLOUR, NEEDS_REVIEW, NEEDS_REVIEW_COLOUR,
};

/// Page size of list requests.
const PAGE: usize = 50;

/// Which server it is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Forgejo.
    Forgejo,
    /// Gitea.
    Gitea,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Self::Forgejo => "forgejo",
            Self::Gitea => "gitea",
        }
    }
}

/// A Forgejo or Gitea server.
#[derive(Debug)]
pub struct GiteaForge {
    flavour: Flavour,
    web: String,
    git_base: String,
    http: HttpClient,
    options: RemoteOptions,
}

impl GiteaForge {
    /// The server at `url` (its web root; the API is `{url}/api/v1`), with `token` read from
    /// the environment variable `token_env`.
    pub fn new(
        flavour: Flavour,
        url: &str,
        token: Secret,
        token_env: &str,
        options: RemoteOptions,
    ) -> Result<Self, ForgeError> {
        let web = url.trim_end_matches('/').to_owned();
        let http = HttpClient::new(HttpConfig {
            forge: flavour.name().to_owned(),
            api_base: format!("{web}/api/v1"),
            token,
            token_env: token_env.to_owned(),
            scheme: AuthScheme::Token,
            writes_per_minute: options.writes_per_minute,
            retry: options.retry,
        })?;
        let git_base = options
            .git_base
            .clone()
            .unwrap_or_else(|| web.clone())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            flavour,
            web,
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
        let answer = self
            .http
            .get(&Self::repo_path(org, repo), &[])
            .await
            .map_err(|e| self.no_repository(e, org, repo))?;
        Ok(text(&answer, "default_branch"))
    }

    fn no_repository(&self, e: ForgeError, org: &str, repo: &str) -> ForgeError {
        match e {
            ForgeError::Http { status: 404, .. } => ForgeError::NoRepository {
                forge: self.flavour.name().to_owned(),
                org: org.to_owned(),
                repo: repo.to_owned(),
                hint: format!("not found at {}/{org}/{repo}", self.web),
            },
            e => e,
        }
    }

    /// The HTTP client (what the forges share goes through it in [`super::any::AnyForge`]).
    pub(super) fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Repositories of `org` that `filter` accepts.
    pub async fn list_org_repos(
        &self,
        org: &str,
        filter: &RepoFilter,
    ) -> Result<Vec<RemoteRepo>, ForgeError> {
        let path = format!("/orgs/{}/repos", seg(org));
        let items = match self.http.get_all(&path, &[], "limit", PAGE).await {
            Ok(items) => items,
            // Not an organisation: a user, whose repositories the API lists only for the
            // token's own user.
            Err(ForgeError::Http { status: 404, .. }) => self
                .http
                .get_all("/user/repos", &[], "limit", PAGE)
                .await?
                .into_iter()
                .filter(|r| text(&r["owner"], "login") == org)
                .collect(),
            Err(e) => return Err(e),
        };
        Ok(items
            .iter()
            .map(RemoteRepo::from_api)
            .filter(|r| filter.accepts(r))
            .collect())
    }

    /// Open issues of `org/repo` with all of `labels`.
    pub async fn open_issues(
        &self,
        org: &str,
        repo: &str,
        labels: &[String],
    ) -> Result<Vec<RemoteIssue>, ForgeError> {
        let path = format!("{}/issues", Self::repo_path(org, repo));
        let mut query = vec![("state", "open".to_owned()), ("type", "issues".to_owned())];
        if !labels.is_empty() {
            query.push(("labels", labels.join(",")));
        }
        let items = self.http.get_all(&path, &query, "limit", PAGE).await?;
        let mut issues: Vec<RemoteIssue> = items
            .iter()
            .filter(|i| i["pull_request"].is_null())
            .map(RemoteIssue::from_api)
            .collect();
        issues.retain(|i| labels.iter().all(|l| i.labels.contains(l)));
        Ok(issues)
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
        let query = [("state", "all".to_owned())];
        let items = self.http.get_all(&path, &query, "limit", PAGE).await?;
        Ok(items
            .iter()
            .filter(|p| p["head"]["ref"] == branch && pr::head_in(p, org, repo))
            .map(ExistingPr::from_api)
            .collect())
    }

    /// The open PR whose head is `branch`, as JSON.
    async fn find_pr(&self, org: &str, repo: &str, branch: &str) -> Result<Value, ForgeError> {
        let path = format!("{}/pulls", Self::repo_path(org, repo));
        for page in 1.. {
            let items = self
                .http
                .get(
                    &path,
                    &[
                        ("state", "open".to_owned()),
                        ("page", page.to_string()),
                        ("limit", PAGE.to_string()),
                    ],
                )
                .await?;
            let items = items.as_array().cloned().unwrap_or_default();
            if let Some(pr) = items
                .iter()
                .find(|p| p["head"]["ref"] == branch && pr::head_in(p, org, repo))
            {
                return Ok(pr.clone());
            }
            if items.len() < PAGE {
                break;
            }
        }
        Ok(Value::Null)
    }

    /// Adds `labels` to issue/PR `number`, creating the missing ones.
    async fn add_labels(
        &self,
        org: &str,
        repo: &str,
        number: u64,
        options: &PublishOptions,
    ) -> Result<(), ForgeError> {
        let path = format!("{}/labels", Self::repo_path(org, repo));
        let existing: Vec<(String, Value)> = self
            .http
            .get_all(&path, &[], "limit", PAGE)
            .await?
            .iter()
            .map(|l| (text(l, "name"), l["id"].clone()))
            .collect();
        let mut ids = Vec::new();
        for label in &options.labels {
            if let Some((_, id)) = existing.iter().find(|(name, _)| name == label) {
                ids.push(id.clone());
                continue;
            }
            let colour = options
                .label_colours
                .get(label)
                .map(String::as_str)
                .unwrap_or(DEFAULT_LABEL_COLOUR);
            let created = self
                .http
                .send(
                    Method::POST,
                    &path,
                    &[],
                    Some(&json!({ "name": label, "color": colour })),
                )
                .await?;
            ids.push(created.body["id"].clone());
        }
        self.http
            .send(
                Method::POST,
                &format!("{}/issues/{number}/labels", Self::repo_path(org, repo)),
                &[],
                Some(&json!({ "labels": ids })),
            )
            .await?;
        Ok(())
    }

    /// Comments `body` on issue or PR `number` unless a comment already says it.
    async fn comment_once(
        &self,
        org: &str,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let path = format!("{}/issues/{number}/comments", Self::repo_path(org, repo));
        let comments = self.http.get(&path, &[]).await?;
        let already = comments
            .as_array()
            .is_some_and(|c| c.iter().any(|c| text(c, "body") == body));
        if !already {
            self.http
                .send(Method::POST, &path, &[], Some(&json!({ "body": body })))
                .await?;
        }
        Ok(())
    }

    async fn checks(&self, org: &str, repo: &str, sha: &str) -> Result<Checks, ForgeError> {
        let status = self
            .http
            .get(
                &format!("{}/commits/{}/status", Self::repo_path(org, repo), seg(sha)),
                &[],
            )
            .await?;
        Ok(verdict(&status))
    }
}

/// The verdict of a combined status: green when every status is success (or there are none).
fn verdict(status: &Value) -> Checks {
    let statuses = status["statuses"].as_array().cloned().unwrap_or_default();
    let state = text(status, "state");
    if statuses.is_empty() && (state.is_empty() || state == "success" || state == "pending") {
        return Checks::Green;
    }
    let named = |wanted: &[&str]| {
        statuses
            .iter()
            .filter(|s| wanted.contains(&text(s, "status").as_str()))
            .map(|s| format!("{} is {}", text(s, "context"), text(s, "status")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match state.as_str() {
        "success" => Checks::Green,
        "pending" => Checks::Pending(named(&["pending"])),
        _ => Checks::Failing(format!(
            "combined status {state}: {}",
            named(&["failure", "error", "warning"])
        )),
    }
}

impl Forge for GiteaForge {
    fn name(&self) -> &str {
        self.flavour.name()
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
        let title = if options.draft && !request.title.starts_with("WIP:") {
            format!("WIP: {}", request.title)
        } else {
            request.title.clone()
        };
        let existing = self.find_pr(org, repo, &request.branch).await?;
        let pulls = format!("{}/pulls", Self::repo_path(org, repo));
        let author = pr::author(&existing);
        let (pr, created) = if existing.is_null() {
            let mut body = json!({
                "head": request.branch,
                "base": request.base,
                "title": title,
                "body": request.body,
            });
            // Forgejo's description has no `reviewers` on creation.
            if !options.reviewers.is_empty() && self.flavour == Flavour::Gitea {
                body["reviewers"] = json!(options.reviewers);
            } else if !options.reviewers.is_empty() {
                tracing::warn!(
                    forge = self.flavour.name(),
                    "reviewers are not requested on Forgejo yet"
                );
            }
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
                    Some(&json!({ "title": title, "body": request.body, "base": request.base })),
                )
                .await?;
            (answer.body, false)
        };
        let number = pr["number"].as_u64().unwrap_or(0);
        let link = pr["html_url"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}/{org}/{repo}/pulls/{number}", self.web));
        if !options.labels.is_empty() {
            self.add_labels(org, repo, number, options).await?;
        }
        if let Some(issue) = options.issue {
            self.comment_once(org, repo, issue, &opened_comment(&link))
                .await?;
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
        let flavour = self.flavour;
        pr::guarded_merge(
            &self.http,
            &pull,
            pr,
            request,
            self.options.checks_timeout,
            checks,
            |sha, title| {
                // Forgejo's API description names the form fields in Go case (`Do`), Gitea's
                // in snake case (`do`); both servers decode JSON keys case-insensitively.
                let body = match flavour {
                    Flavour::Gitea => {
                        json!({ "do": "merge", "head_commit_id": sha, "merge_title_field": title })
                    }
                    Flavour::Forgejo => {
                        json!({ "Do": "merge", "head_commit_id": sha, "MergeTitleField": title })
                    }
                };
                (Method::POST, body)
            },
        )
        .await
    }

    async fn default_branch(&self, org: &str, repo: &str) -> Result<Option<String>, ForgeError> {
        self.repo_default_branch(org, repo).await.map(Some)
    }

    async fn stopwatch(
        &self,
        org: &str,
        repo: &str,
        issue: u64,
        running: bool,
    ) -> Result<(), ForgeError> {
        let action = if running { "start" } else { "stop" };
        let path = format!(
            "{}/issues/{issue}/stopwatch/{action}",
            Self::repo_path(org, repo)
        );
        match self.http.send(Method::POST, &path, &[], None).await {
            Ok(_) => Ok(()),
            // 409: already running (start) or not running (stop): the state asked for holds.
            Err(ForgeError::Http { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn flag_for_review(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        reason: &str,
    ) -> Result<(), ForgeError> {
        let (org, repo) = (request.org.as_str(), request.repo.as_str());
        let number = pr.number as u64;
        let options = PublishOptions {
            labels: vec![NEEDS_REVIEW.to_owned()],
            label_colours: [(NEEDS_REVIEW.to_owned(), NEEDS_REVIEW_COLOUR.to_owned())].into(),
            ..PublishOptions::default()
        };
        self.add_labels(org, repo, number, &options).await?;
        self.comment_once(org, repo, number, &needs_review_comment(reason))
            .await
    }

    async fn comment_on_pr(
        &self,
        request: &PrRequest,
        pr: &PrRef,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.comment_once(&request.org, &request.repo, pr.number as u64, body)
            .await
    }

    /// The comment is not posted twice (a resumed withdrawal); the branch is deleted by
    /// `DELETE /repos/{owner}/{repo}/branches/{branch}` (404: gone already).
    async fn withdraw(
        &self,
        request: &PrRequest,
        number: u64,
        comment: &str,
    ) -> Result<Withdrawn, ForgeError> {
        let (org, repo) = (request.org.as_str(), request.repo.as_str());
        let path = Self::repo_path(org, repo);
        pr::withdraw(
            &self.http,
            &format!("{path}/pulls/{number}"),
            &request.branch,
            &format!("{path}/branches/{}", seg(&request.branch)),
            &[404],
            || self.comment_once(org, repo, number, comment),
        )
        .await
    }

    /// Labels are added after the issue is opened (Forgejo's and Gitea's create call takes
    /// label ids, which [`GiteaForge::add_labels`] looks up or creates).
    async fn open_issue(
        &self,
        request: &PrRequest,
        issue: &NewIssue,
    ) -> Result<IssueRef, ForgeError> {
        let (org, repo) = (request.org.as_str(), request.repo.as_str());
        let open = self.open_issues(org, repo, &issue.labels).await?;
        let path = format!("{}/issues", Self::repo_path(org, repo));
        let body = json!({ "title": issue.title, "body": issue.body });
        let opened = target::open_issue_once(&self.http, &path, &open, issue, body).await?;
        let number = opened.number;
        if opened.opened && !issue.labels.is_empty() {
            let options = PublishOptions {
                labels: issue.labels.clone(),
                ..PublishOptions::default()
            };
            self.add_labels(org, repo, number, &options).await?;
        }
        Ok(opened)
    }
}
