//! Pull requests on a remote forge after publish: the PR a branch already has
//! ([`ExistingPr`], what `plan --remote` compares with what publish would send, with who
//! opened it), closing and reopening (`set_state`), the withdrawal of a PR whose unit changed
//! nothing (`withdraw`) and the guarded merge ([`Checks`], `wait_for_green`,
//! `guarded_merge`).
//!
//! Invariants: a merge happens only after the head commit's checks are green and the forge
//! calls the PR mergeable; pending checks are asked again after the pauses of a [`Backoff`]
//! (10 s doubling to 60 s) and never past the checks timeout; failing checks end the wait at
//! once. A PR that is merged already counts as merged.

use std::time::Duration;

use super::http::{text, HttpClient};
use super::{ForgeError, PrRef, PrRequest, PrWas, Withdrawn};
use crate::backoff::Backoff;

/// The PR a branch had or has, as `plan --remote` compares it with what publish would send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingPr {
    /// Its number.
    pub number: u64,
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
    /// Who opened it (the forge's `user.login`), when the forge says.
    pub author: Option<String>,
}

impl ExistingPr {
    /// A PR from the forge's JSON (the same fields on every forge).
    pub(super) fn from_api(p: &serde_json::Value) -> Self {
        Self {
            number: p["number"].as_u64().unwrap_or(0),
            reference: text(p, "html_url"),
            open: text(p, "state") == "open" && p["merged"].as_bool() != Some(true),
            merged: p["merged"].as_bool() == Some(true),
            title: text(p, "title"),
            body: text(p, "body"),
            author: author(p),
        }
    }

    /// The one among `prs` (all of one head branch, newest first) that closing (`open`
    /// false: the open one) or reopening (`open` true: the newest closed one that was not
    /// merged) changes.
    pub fn to_set(prs: &[ExistingPr], open: bool) -> Option<&ExistingPr> {
        match open {
            false => prs.iter().find(|p| p.open),
            true => prs.iter().find(|p| !p.open && !p.merged),
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

/// Who opened the PR of the forge's JSON `p` (`user.login`), when it says.
pub(super) fn author(p: &serde_json::Value) -> Option<String> {
    Some(text(&p["user"], "login")).filter(|login| !login.is_empty())
}

/// Whether the PR of the forge's JSON `p` has its head in `org/repo` (not in a fork with a
/// branch of the same name); a forge that does not name the head's repository is believed.
pub(super) fn head_in(p: &serde_json::Value, org: &str, repo: &str) -> bool {
    let name = text(&p["head"]["repo"], "full_name");
    name.is_empty() || name.eq_ignore_ascii_case(&format!("{org}/{repo}"))
}

/// Closes (`open` false) or reopens the PR at `pull` (its API path, the same on every remote
/// forge).
pub(super) async fn set_state(http: &HttpClient, pull: &str, open: bool) -> Result<(), ForgeError> {
    let state = if open { "open" } else { "closed" };
    http.send(
        reqwest::Method::PATCH,
        pull,
        &[],
        Some(&serde_json::json!({ "state": state })),
    )
    .await
    .map(drop)
}

/// The withdrawal of both remote forges ([`super::Forge::withdraw`]): the PR at `pull` (its
/// API path), if its head is `head`, gets the comment `comment` posts and is closed when it
/// is open; then the branch at `branch` (its API path) is deleted unless the PR was merged
/// (or is not the branch's). An answer in `gone` to the deletion means the branch is gone
/// already.
pub(super) async fn withdraw<C, Fut>(
    http: &HttpClient,
    pull: &str,
    head: &str,
    branch: &str,
    gone: &[u16],
    comment: C,
) -> Result<Withdrawn, ForgeError>
where
    C: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), ForgeError>>,
{
    let pr = match http.get(pull, &[]).await {
        Ok(p) if text(&p["head"], "ref") != head => PrWas::Missing,
        Ok(p) if p["merged"].as_bool() == Some(true) => PrWas::Merged,
        Ok(p) if text(&p, "state") == "open" => PrWas::Open,
        Ok(_) => PrWas::Closed,
        Err(ForgeError::Http { status: 404, .. }) => PrWas::Missing,
        Err(e) => return Err(e),
    };
    if pr == PrWas::Open {
        comment().await?;
        set_state(http, pull, false).await?;
    }
    let mut branch_deleted = false;
    if matches!(pr, PrWas::Open | PrWas::Closed) {
        match http.send(reqwest::Method::DELETE, branch, &[], None).await {
            Ok(_) => branch_deleted = true,
            Err(ForgeError::Http { status, .. }) if gone.contains(&status) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Withdrawn { pr, branch_deleted })
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

/// [`super::Forge::wait_green`] of both remote forges: the head of the PR at `pull` (its API
/// path) waited for until `checks(head sha)` is green.
pub(super) async fn wait_green<C, Fut>(
    http: &HttpClient,
    pull: &str,
    pr: &PrRef,
    checks_timeout: Duration,
    checks: C,
) -> Result<(), ForgeError>
where
    C: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Checks, ForgeError>>,
{
    let sha = text(&http.get(pull, &[]).await?["head"], "sha");
    wait_for_green(&pr.reference, checks_timeout, || checks(sha.clone())).await
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
}
