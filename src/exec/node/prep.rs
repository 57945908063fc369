//! The prep node: clone (or fetch an unfinished unit's clone), check out the unit's branch at
//! its start, note the start and the base, and render the first prompt.
//!
//! The clone is made beside the workspace and renamed into place, so a clone cut short by a
//! crash is never taken for an unfinished unit; an unfinished unit (its start noted by the same
//! run: a resume, a retry, an answer) keeps its branch and its starting commit, and a later
//! run of the unit starts its branch over, so that an agent that finds nothing to change ends
//! `no_changes` whatever an earlier run did.

use std::path::Path;

use super::{
    container, write_file, write_prompt, NodeCtx, NodeResult, AGENT_HOMES, BASE_NOTE, START_NOTE,
    START_RUN_NOTE,
};
use crate::exec::error::{FileAction, NodeError, Step};
use crate::forge::Forge;
use crate::git;
use crate::plan::Unit;
use crate::runtime::Runtime;

/// Runs the prep node; its result carries the base branch it resolved.
pub(super) async fn run<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let unit = ctx.unit.unit();
    let repo = ctx.unit.repo_dir();
    let result: Result<String, NodeError> = async {
        // The agents' homes start afresh in each run (seeded again from the user's files); a
        // fix attempt or an answer later in the run keeps them.
        let homes = ctx.unit.workspace.join(AGENT_HOMES);
        match tokio::fs::remove_dir_all(&homes).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Step::Prep.io(FileAction::Clear, &homes)(e)),
        }
        if repo.join(".git").exists() {
            // An unfinished unit: continue it, keep its branch.
            git::git(&repo, &["fetch", "--quiet", "--prune", "origin"])
                .await
                .map_err(Step::Prep.git())?;
        } else {
            let source = match &unit.url {
                Some(url) if is_local_path(url) => {
                    let dir = ctx.loaded.path.parent().unwrap_or(Path::new("."));
                    git::path_arg(&dir.join(url))
                }
                Some(url) => url.clone(),
                None => ctx
                    .forge
                    .clone_source(&unit.org, &unit.repo)
                    .map_err(Step::Prep.forge())?,
            };
            // Cloned beside and renamed into place: a clone cut short by a crash is never
            // taken for an unfinished unit's workspace.
            let partial = ctx.unit.workspace.join("repo.partial");
            let _ = tokio::fs::remove_dir_all(&partial).await;
            let _ = tokio::fs::remove_dir_all(&repo).await;
            git::clone(&source, &partial)
                .await
                .map_err(Step::Prep.git())?;
            tokio::fs::rename(&partial, &repo)
                .await
                .map_err(Step::Prep.io(FileAction::MoveClone, &repo))?;
        }
        // One look at every ref: the default branch, the unit's branch, its start.
        let refs = git::refs(&repo).await.map_err(Step::Prep.git())?;
        let base = match (&unit.base, refs.default_branch()) {
            (Some(base), _) => base.clone(),
            (None, Some(default)) => default.to_owned(),
            (None, None) => git::default_branch(&repo).await.map_err(Step::Prep.git())?,
        };
        let start_file = ctx.unit.note(START_NOTE);
        let has_branch = refs
            .commit(&format!("refs/heads/{}", unit.branch))
            .is_some();
        // The run that noted the start: a later run starts the unit over from its start
        // point (the agent's work of an earlier run is not the work of this one); a note
        // without it is from a dispatch that did not write it, and is continued.
        let run_file = ctx.unit.note(START_RUN_NOTE);
        let same_run = match tokio::fs::read_to_string(&run_file).await {
            Ok(run) => run.trim() == ctx.run_id,
            Err(_) => true,
        };
        let kept = match tokio::fs::read_to_string(&start_file).await {
            Ok(sha) if has_branch && same_run => Some(sha.trim().to_owned()),
            _ => None,
        };
        let start_sha = match kept {
            // An unfinished unit: its branch and its starting commit stay.
            Some(sha) => {
                git::git(&repo, &["checkout", "--quiet", &unit.branch])
                    .await
                    .map_err(Step::Prep.git())?;
                sha
            }
            None => {
                let sha = start_point(&repo, &refs, unit, &base).await?;
                git::git(&repo, &["checkout", "--quiet", "-B", &unit.branch, &sha])
                    .await
                    .map_err(Step::Prep.git())?;
                sha
            }
        };
        // A clone past the unit's disk limit fails here, before any container adds to it.
        container::check_disk(ctx, Step::Prep).await?;
        // The commit the work starts from: what "changed", the cache and leases compare with.
        write_file(Step::Prep, &start_file, &format!("{start_sha}\n")).await?;
        write_file(Step::Prep, &run_file, &format!("{}\n", ctx.run_id)).await?;
        write_file(Step::Prep, &ctx.unit.note(BASE_NOTE), &format!("{base}\n")).await?;
        write_prompt(ctx, Step::Prep, Some(&base), 1, None).await?;
        Ok(base)
    }
    .await;
    match result {
        Ok(base) => NodeResult::Done {
            base: Some(base),
            pr: None,
            outcome: None,
        },
        Err(error) => NodeResult::Failed(error),
    }
}

/// The commit a unit's work starts from: the head of its existing branch, the head of its PR,
/// its tag, or its base branch.
async fn start_point(
    repo: &Path,
    refs: &git::Refs,
    unit: &Unit,
    base: &str,
) -> Result<String, NodeError> {
    let (start, missing) = if unit.existing_branch {
        (
            format!("refs/remotes/origin/{}", unit.branch),
            format!("branch `{}`", unit.branch),
        )
    } else if let Some(pr) = unit.pr {
        let local = format!("refs/dispatch/pull/{pr}");
        git::git(
            repo,
            &[
                "fetch",
                "--quiet",
                "origin",
                &format!("+refs/pull/{pr}/head:{local}"),
            ],
        )
        .await
        .map_err(|source| NodeError::MissingPrHead {
            step: Step::Prep,
            pr,
            org: unit.org.clone(),
            repo: unit.repo.clone(),
            source,
        })?;
        (local, format!("pull request #{pr}"))
    } else if let Some(tag) = &unit.tag {
        (format!("refs/tags/{tag}"), format!("tag `{tag}`"))
    } else {
        (
            format!("refs/remotes/origin/{base}"),
            format!("base `{base}`"),
        )
    };
    let found = match refs.commit(&start) {
        Some(sha) => Ok(sha.to_owned()),
        // Fetched just now (a PR's head) or otherwise not among the refs read before.
        None => git::rev_parse(repo, &start).await,
    };
    found.map_err(|_| NodeError::MissingStart {
        step: Step::Prep,
        what: missing,
        org: unit.org.clone(),
        repo: unit.repo.clone(),
    })
}

/// Whether a target's `url` is a path (relative to the spec) rather than a URL.
fn is_local_path(url: &str) -> bool {
    !url.contains("://") && !url.contains('@')
}
