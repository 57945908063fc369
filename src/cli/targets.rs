//! The forge's part of planning, shared by `plan` and `run`: the targets of a spec's `select`
//! entries (an organisation's repositories, filtered, and optionally their open issues with
//! given labels), and the head and base of PR targets, read from the forge before the plan
//! is built.

use std::path::Path;

use futures_util::{stream, StreamExt, TryStreamExt};

use super::{Ui, EXIT_FAILURE};
use crate::forge::local::LocalForge;
use crate::forge::remote::{RemoteForge, RemoteOptions, RemoteRepo, RepoFilter};
use crate::plan::target::{pull_key, Found, FoundIssue, FoundPull, FoundRepo, Selection};
use crate::spec::LoadedSpec;
use crate::state;

/// How many issue listings are in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 8;

/// Loads the spec and resolves its `select` entries and PR targets: through the forge, or not
/// at all when `offline` (the entries then stay in `selections`, and the plan lists them as
/// unresolved; PR targets keep a branch of their own). Returns the forge's answer too, which a
/// run records so that a resume plans the same units.
pub fn load(
    ui: &Ui,
    path: &Path,
    state_dir: &Path,
    offline: bool,
) -> Result<(LoadedSpec, Found), u8> {
    let mut loaded = ui.load(path)?;
    let asks = !loaded.selections.is_empty() || loaded.targets.iter().any(|t| t.pr.is_some());
    if !asks || offline {
        return Ok((loaded, Found::default()));
    }
    let runtime = super::async_runtime(false)?;
    match runtime.block_on(find(&loaded, state_dir)) {
        Ok(found) => {
            loaded.expand(&found);
            Ok((loaded, found))
        }
        Err(message) => {
            eprintln!("error: {}: {message}", path.display());
            Err(EXIT_FAILURE)
        }
    }
}

/// Asks the spec's forge for the targets of every `select` entry and the PR of every PR
/// target.
pub async fn find(loaded: &LoadedSpec, state_dir: &Path) -> Result<Found, String> {
    let mut found = Found::default();
    let remote = RemoteForge::from_spec(&loaded.spec.forge, RemoteOptions::default())
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
pub(super) fn local_prs(state_dir: &Path) -> Result<Vec<state::views::PrRow>, String> {
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

async fn remote_repos(
    forge: &RemoteForge,
    selection: &Selection,
) -> Result<Vec<FoundRepo>, String> {
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
