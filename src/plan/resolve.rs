//! Target resolution: what the forge says the spec's `select` entries and PR targets are,
//! asked once before the plan is built. A `select` entry becomes an organisation's
//! repositories (filtered by name globs, archived and fork flags) and, with `select.issues`,
//! their open issues carrying the given labels; a PR target gets the head and base of its
//! pull request.
//!
//! Invariants:
//!
//! - The answer is a [`Found`], plain data: [`crate::spec::LoadedSpec::expand`] turns it into
//!   targets, and a run records it so that a resume plans the same units without asking again.
//! - The answer does not depend on the order the forge lists things in: repositories are
//!   sorted by name, issues by number; with `select.issues`, a repository without a matching
//!   open issue is no target. At most [`LOOKUPS_IN_FLIGHT`] issue listings run at once.
//! - The local forge is read from the state directory and the spec's `forge.seed` only (its
//!   bare repositories, its PR rows); nothing is created, and no state database before the
//!   first run reads as no PRs.
//! - Errors are sentences naming the entry or the PR they concern; the CLI prefixes the spec's
//!   path.

use std::path::Path;

use futures_util::{stream, StreamExt, TryStreamExt};

use super::target::{pull_key, Found, FoundIssue, FoundPull, FoundRepo, Selection};
use crate::forge::any::AnyForge;
use crate::forge::local::LocalForge;
use crate::forge::options::RemoteOptions;
use crate::forge::target::{RemoteRepo, RepoFilter};
use crate::spec::LoadedSpec;
use crate::state;

/// How many issue listings are in flight at once.
pub const LOOKUPS_IN_FLIGHT: usize = 8;

/// Asks the spec's forge for the targets of every `select` entry and the PR of every PR
/// target.
pub async fn find(loaded: &LoadedSpec, state_dir: &Path) -> Result<Found, String> {
    let mut found = Found::default();
    let remote = AnyForge::from_spec(&loaded.spec.forge, RemoteOptions::default())
        .map_err(|e| e.to_string())?;
    let pulls = loaded
        .targets
        .iter()
        .filter(|t| t.url.is_none())
        .filter_map(|t| Some((t.org.as_str(), t.repo.as_str(), t.pr?)));
    match &remote {
        Some(remote) => {
            for (org, repo, number) in pulls {
                let pull = remote
                    .pull_request(org, repo, number)
                    .await
                    .map_err(|e| format!("pull request #{number} of {org}/{repo}: {e}"))?;
                let same_repo =
                    pull.head_repo.is_empty() || pull.head_repo == format!("{org}/{repo}");
                found.pulls.insert(
                    pull_key(org, repo, number),
                    FoundPull {
                        head: (same_repo && pull.open).then_some(pull.head),
                        base: pull.base,
                    },
                );
            }
        }
        None => {
            // The local forge's PRs live in the state database.
            let prs = local_prs(state_dir)?;
            for (org, repo, number) in pulls {
                let pr = prs
                    .iter()
                    .find(|p| p.org == org && p.repo == repo && p.number == number as i64)
                    .ok_or_else(|| format!("the local forge has no pull request #{number} of {org}/{repo} (`dispatch prs` lists them)"))?;
                found.pulls.insert(
                    pull_key(org, repo, number),
                    FoundPull {
                        head: (pr.status == "open").then(|| pr.branch.clone()),
                        base: pr.base.clone(),
                    },
                );
            }
        }
    }
    for selection in &loaded.selections {
        let repos = match &remote {
            Some(remote) => remote_repos(remote, selection).await,
            None => local_repos(loaded, state_dir, selection),
        }
        .map_err(|message| format!("{} ({}): {message}", selection.key(), selection.describe()))?;
        found.selections.insert(selection.key(), repos);
    }
    Ok(found)
}

/// The local forge's PRs, from the state database (none before the first run).
pub fn local_prs(state_dir: &Path) -> Result<Vec<state::views::PrRow>, String> {
    if !state::Db::exists_in(state_dir) {
        return Ok(Vec::new());
    }
    state::Db::open(state_dir)
        .and_then(|db| db.prs())
        .map_err(|e| e.to_string())
}

fn filter(selection: &Selection) -> RepoFilter {
    let globs = |g: &[crate::spec::values::Glob]| g.iter().map(|g| g.to_string()).collect();
    RepoFilter {
        include: globs(&selection.select.include),
        exclude: globs(&selection.select.exclude),
        archived: selection.select.archived,
        forks: selection.select.forks,
    }
}

async fn remote_repos(forge: &AnyForge, selection: &Selection) -> Result<Vec<FoundRepo>, String> {
    let org = selection.org.as_str();
    let mut repos = forge
        .list_org_repos(org, &filter(selection))
        .await
        .map_err(|e| e.to_string())?;
    repos.sort_by(|a, b| a.name.cmp(&b.name));
    let Some(issues) = &selection.select.issues else {
        return Ok(repos
            .into_iter()
            .map(|r| FoundRepo {
                name: r.name,
                issues: Vec::new(),
            })
            .collect());
    };
    let labels = &issues.labels;
    stream::iter(repos)
        .map(|repo| async move {
            let mut issues = forge
                .open_issues(org, &repo.name, labels)
                .await
                .map_err(|e| e.to_string())?;
            issues.sort_by_key(|i| i.number);
            Ok::<_, String>(FoundRepo {
                name: repo.name,
                issues: issues
                    .into_iter()
                    .map(|i| FoundIssue {
                        number: i.number,
                        title: i.title,
                        body: i.body,
                    })
                    .collect(),
            })
        })
        .buffered(LOOKUPS_IN_FLIGHT)
        .try_filter(|repo| std::future::ready(!repo.issues.is_empty()))
        .try_collect()
        .await
}

/// The local forge's repositories of the selection's org: those it holds, and those
/// `forge.seed` will create when the run starts. It keeps no archived repositories, forks or
/// issues (validation refuses `select.issues` on it).
fn local_repos(
    loaded: &LoadedSpec,
    state_dir: &Path,
    selection: &Selection,
) -> Result<Vec<FoundRepo>, String> {
    let org = selection.org.as_str();
    let mut names = std::collections::BTreeSet::new();
    let forge_dir = LocalForge::root_in(state_dir).join(org);
    if let Ok(entries) = std::fs::read_dir(&forge_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(repo) = name.strip_suffix(".git") {
                names.insert(repo.to_owned());
            }
        }
    }
    if let Some(seed) = &loaded.spec.forge.seed {
        let dir = loaded
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join(seed)
            .join(org);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                names.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let filter = filter(selection);
    Ok(names
        .into_iter()
        .filter(|name| {
            filter.accepts(&RemoteRepo {
                name: name.clone(),
                default_branch: String::new(),
                archived: false,
                fork: false,
            })
        })
        .map(|name| FoundRepo {
            name,
            issues: Vec::new(),
        })
        .collect())
}
