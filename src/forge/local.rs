//! The embedded local forge: bare repositories under `<state>/forge/<org>/<repo>.git`, pull
//! requests and their comments as rows of the state database (`dispatch prs` lists them).
//! Merging merges the branch into the base of the bare repository; withdrawing a PR closes its
//! row and deletes its branch's ref there. It has no issues, and no PR of anyone but dispatch.

use std::path::{Path, PathBuf};

use super::{Forge, ForgeError, PrRef, PrRequest, PrWas, Withdrawn};
use crate::git;
use crate::state::journal::NewPr;
use crate::state::Journal;

/// The local forge of one state directory.
#[derive(Clone)]
pub struct LocalForge {
    root: PathBuf,
    journal: Journal,
}

impl LocalForge {
    /// The forge whose repositories live under `root`, recording PRs through `journal`.
    pub fn new(root: PathBuf, journal: Journal) -> Self {
        Self { root, journal }
    }

    /// Where the local forge of a state directory keeps its repositories.
    pub fn root_in(state_dir: &Path) -> PathBuf {
        state_dir.join("forge")
    }

    /// Path of the bare repository of `org/repo`.
    pub fn bare(&self, org: &str, repo: &str) -> PathBuf {
        self.root.join(org).join(format!("{repo}.git"))
    }

    /// Creates `org/repo` from the files of `dir` when it does not exist yet.
    pub async fn seed(&self, org: &str, repo: &str, dir: &Path) -> Result<bool, ForgeError> {
        let bare = self.bare(org, repo);
        if bare.exists() {
            return Ok(false);
        }
        let scratch = self.root.join(".seed").join(org).join(repo);
        git::seed_bare(dir, &bare, &scratch).await?;
        Ok(true)
    }

    /// How people refer to PR `number` of `org/repo` of the local forge.
    pub fn reference(org: &str, repo: &str, number: i64) -> String {
        format!("local:{org}/{repo}#{number}")
    }

    /// Closes (`open` false) the open PR of `branch` in `org/repo`, or reopens (`open` true)
    /// its closed one; the PR changed, `None` when there is none. Merged PRs stay merged.
    pub async fn set_pr_state(
        &self,
        org: &str,
        repo: &str,
        branch: &str,
        open: bool,
    ) -> Result<Option<String>, ForgeError> {
        let changed = self
            .journal
            .pr_set_open(org.to_owned(), repo.to_owned(), branch.to_owned(), open)
            .await?;
        Ok(changed.map(|number| Self::reference(org, repo, number)))
    }
}

impl Forge for LocalForge {
    fn name(&self) -> &str {
        "local"
    }

    fn clone_source(&self, org: &str, repo: &str) -> Result<String, ForgeError> {
        let bare = self.bare(org, repo);
        if bare.join("HEAD").exists() {
            Ok(git::path_arg(&bare))
        } else {
            Err(ForgeError::NoRepository {
                forge: "local".to_owned(),
                org: org.to_owned(),
                repo: repo.to_owned(),
                hint: format!(
                    "expected a bare repository at {}; seed it with `forge.seed`",
                    bare.display()
                ),
            })
        }
    }

    async fn publish(&self, repo_dir: &Path, request: &PrRequest) -> Result<PrRef, ForgeError> {
        git::push(
            repo_dir,
            "origin",
            &request.branch,
            request.lease.as_deref(),
        )
        .await?;
        let (number, created) = self
            .journal
            .upsert_pr(NewPr {
                org: request.org.clone(),
                repo: request.repo.clone(),
                branch: request.branch.clone(),
                base: request.base.clone(),
                title: request.title.clone(),
                body: request.body.clone(),
                run_id: request.run_id.clone(),
                unit_id: request.unit_id.clone(),
            })
            .await?;
        Ok(PrRef {
            number,
            reference: Self::reference(&request.org, &request.repo, number),
            created,
            author: None,
        })
    }

    async fn merge(
        &self,
        pr: &PrRef,
        request: &PrRequest,
        scratch: &Path,
    ) -> Result<(), ForgeError> {
        let bare = git::path_arg(&self.bare(&request.org, &request.repo));
        let _ = tokio::fs::remove_dir_all(scratch).await;
        git::clone(&bare, scratch).await?;
        git::git(scratch, &["checkout", "--quiet", &request.base]).await?;
        let message = format!(
            "Merge {} (#{}): {}",
            request.branch, pr.number, request.title
        );
        if git::git(
            scratch,
            &[
                "merge",
                "--no-ff",
                "--quiet",
                "-m",
                &message,
                &format!("origin/{}", request.branch),
            ],
        )
        .await
        .is_err()
        {
            let _ = git::git(scratch, &["merge", "--abort"]).await;
            return Err(ForgeError::Conflict(format!("branch {}", request.branch)));
        }
        git::git(scratch, &["push", "--quiet", "origin", &request.base]).await?;
        let _ = tokio::fs::remove_dir_all(scratch).await;
        self.journal.pr_merged(pr.number).await?;
        Ok(())
    }

    /// The PR's row is closed with the comment, and the branch's ref is deleted from the bare
    /// repository.
    async fn withdraw(
        &self,
        request: &PrRequest,
        number: u64,
        comment: &str,
    ) -> Result<Withdrawn, ForgeError> {
        let before = self
            .journal
            .pr_withdraw(number as i64, request.branch.clone(), comment.to_owned())
            .await?;
        let pr = match before.as_deref() {
            None => PrWas::Missing,
            Some("open") => PrWas::Open,
            Some("merged") => PrWas::Merged,
            Some(_) => PrWas::Closed,
        };
        let mut branch_deleted = false;
        if matches!(pr, PrWas::Open | PrWas::Closed) {
            let bare = self.bare(&request.org, &request.repo);
            let full = format!("refs/heads/{}", request.branch);
            if git::git(&bare, &["rev-parse", "--verify", "--quiet", &full])
                .await
                .is_ok()
            {
                git::git(&bare, &["update-ref", "-d", &full]).await?;
                branch_deleted = true;
            }
        }
        Ok(Withdrawn { pr, branch_deleted })
    }

    async fn comment_on_pr(
        &self,
        _request: &PrRequest,
        pr: &PrRef,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.journal.pr_comment(pr.number, body.to_owned()).await?;
        Ok(())
    }
}
