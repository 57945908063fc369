//! Target expansion: each job's `repos` entries become resolved targets with an org, a
//! workspace key and merged variables. `select` entries wait as [`Selection`]s until the
//! forge's answer ([`Found`]) turns them into targets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::model::{Job, Select, Spec, TargetSpec};
use crate::spec::node::Path;
use crate::spec::values::{BranchName, OrgName, RepoName, TagName};

/// One target of one job, fully resolved.
#[derive(Clone, Debug)]
pub struct ResolvedTarget {
    /// Index of the job in the spec.
    pub job: usize,
    /// Index of the entry in the job's `repos`.
    pub index: usize,
    /// Organisation.
    pub org: OrgName,
    /// Repository.
    pub repo: RepoName,
    /// Workspace key: `task-N`, `pr-N`, the branch, the tag, or the job id.
    pub key: String,
    /// Whether the key is the job id (then node ids omit it).
    pub key_is_job: bool,
    /// Issue number.
    pub issue: Option<u64>,
    /// Title and body of the issue, when the forge gave them.
    pub issue_text: Option<(String, String)>,
    /// Pull request number.
    pub pr: Option<u64>,
    /// Existing branch to work on.
    pub branch: Option<BranchName>,
    /// Tag to start from.
    pub tag: Option<TagName>,
    /// Clone from this URL or path instead of the forge.
    pub url: Option<String>,
    /// Base branch of the target (target, job, then defaults).
    pub base: Option<BranchName>,
    /// Job variables overridden by the target's.
    pub variables: BTreeMap<String, serde_json::Value>,
}

impl ResolvedTarget {
    /// `org/repo`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.org, self.repo)
    }
}

/// A target that could not be resolved: where, and why.
#[derive(Clone, Debug)]
pub struct TargetError {
    /// Path of the offending entry or field.
    pub path: Path,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: Option<String>,
}

/// A `select` entry of a job: targets the forge lists, not known until it is asked.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Index of the job in the spec.
    pub job: usize,
    /// Index of the entry in the job's `repos`.
    pub index: usize,
    /// Organisation or user whose repositories are listed.
    pub org: OrgName,
    /// The entry.
    pub select: Select,
}

impl Selection {
    /// The entry's place in the spec, `jobs[J].repos[I]`: the key of its answer in [`Found`].
    pub fn key(&self) -> String {
        format!("jobs[{}].repos[{}]", self.job, self.index)
    }

    /// What the entry asks for, in words.
    pub fn describe(&self) -> String {
        let mut text = format!("repositories of {}", self.org);
        if !self.select.include.is_empty() {
            let names: Vec<&str> = self.select.include.iter().map(|g| g.as_str()).collect();
            text.push_str(&format!(" matching {}", names.join(", ")));
        }
        if !self.select.exclude.is_empty() {
            let names: Vec<&str> = self.select.exclude.iter().map(|g| g.as_str()).collect();
            text.push_str(&format!(" except {}", names.join(", ")));
        }
        if let Some(issues) = &self.select.issues {
            text = format!(
                "open issues labelled {} in {text}",
                issues.labels.join(" + ")
            );
        }
        text
    }

    /// A stand-in target for checking templates before the forge is asked.
    pub fn sample(&self, spec: &Spec) -> ResolvedTarget {
        let job = &spec.jobs[self.job];
        let mut target = ResolvedTarget {
            job: self.job,
            index: self.index,
            org: self.org.clone(),
            repo: RepoName::parse("selected").expect("a valid name"),
            key: job.id.to_string(),
            key_is_job: true,
            issue: None,
            issue_text: None,
            pr: None,
            branch: None,
            tag: None,
            url: None,
            base: None,
            variables: job.variables.clone(),
        };
        target.variables.extend(self.select.variables.clone());
        if self.select.issues.is_some() {
            target.issue = Some(1);
            target.issue_text = Some(("title".to_owned(), "body".to_owned()));
            target.key = "task-1".to_owned();
            target.key_is_job = false;
        }
        target
    }

    /// The targets of this entry, from the forge's answer.
    fn targets(&self, spec: &Spec, found: &[FoundRepo]) -> Vec<ResolvedTarget> {
        let job = &spec.jobs[self.job];
        let base = self
            .select
            .base
            .clone()
            .or_else(|| job.base.clone())
            .or_else(|| spec.defaults.base.clone());
        let mut targets = Vec::new();
        for repo in found {
            let Ok(name) = RepoName::parse(&repo.name) else {
                continue; // a name dispatch cannot use as a directory is never a target
            };
            let mut target = self.sample(spec);
            target.repo = name;
            target.base = base.clone();
            if self.select.issues.is_none() {
                targets.push(target);
                continue;
            }
            for issue in &repo.issues {
                let mut target = target.clone();
                target.issue = Some(issue.number);
                target.issue_text = Some((issue.title.clone(), issue.body.clone()));
                target.key = format!("task-{}", issue.number);
                targets.push(target);
            }
        }
        targets
    }
}

/// What the forge answered for a spec's `select` entries, by [`Selection::key`]. A run records
/// it, so that resuming the run plans the same units whatever the forge says by then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// The repositories (with their matching issues) of each entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selections: BTreeMap<String, Vec<FoundRepo>>,
    /// The head and base of each PR target, by `org/repo#N`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pulls: BTreeMap<String, FoundPull>,
}

impl Found {
    /// Whether the forge was asked nothing.
    pub fn is_empty(&self) -> bool {
        self.selections.is_empty() && self.pulls.is_empty()
    }
}

/// A PR target's pull request as the forge showed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundPull {
    /// The head branch, when it lives in the target repository itself (not in a fork): the
    /// unit then works on it and publish updates the PR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The PR's base branch.
    pub base: String,
}

/// The key of a PR target in [`Found::pulls`].
pub fn pull_key(org: &str, repo: &str, number: u64) -> String {
    format!("{org}/{repo}#{number}")
}

/// A repository a `select` entry matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundRepo {
    /// Repository name.
    pub name: String,
    /// Open issues carrying the entry's labels (empty without `issues`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<FoundIssue>,
}

/// An issue a `select` entry matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundIssue {
    /// Issue number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
}

/// Adds the targets of every selection that `found` answers to `targets`, in spec order (job,
/// entry, repository, issue); a selected target that the job already lists is left out.
/// Returns the selections it has no answer for.
pub fn expand<'a>(
    spec: &Spec,
    targets: &mut Vec<ResolvedTarget>,
    selections: &'a [Selection],
    found: &Found,
) -> Vec<&'a Selection> {
    for target in targets.iter_mut() {
        let Some(pull) = target.pr.and_then(|n| {
            found
                .pulls
                .get(&pull_key(target.org.as_str(), target.repo.as_str(), n))
        }) else {
            continue;
        };
        if target.branch.is_none() {
            target.branch = pull.head.as_deref().and_then(|h| BranchName::parse(h).ok());
        }
        if target.base.is_none() {
            target.base = BranchName::parse(&pull.base).ok();
        }
    }
    let mut unresolved = Vec::new();
    let mut seen: std::collections::HashSet<(usize, String, String, String)> = targets
        .iter()
        .map(|t| (t.job, t.org.to_string(), t.repo.to_string(), t.key.clone()))
        .collect();
    for selection in selections {
        match found.selections.get(&selection.key()) {
            Some(repos) => targets.extend(selection.targets(spec, repos).into_iter().filter(|t| {
                seen.insert((t.job, t.org.to_string(), t.repo.to_string(), t.key.clone()))
            })),
            None => unresolved.push(selection),
        }
    }
    targets.sort_by_key(|t| (t.job, t.index));
    unresolved
}

/// Resolves every target of every job, collecting all errors. `select` entries come back as
/// selections.
pub fn resolve(spec: &Spec) -> (Vec<ResolvedTarget>, Vec<Selection>, Vec<TargetError>) {
    let mut targets = Vec::new();
    let mut selections = Vec::new();
    let mut errors = Vec::new();
    for (j, job) in spec.jobs.iter().enumerate() {
        for (t, entry) in job.repos.iter().enumerate() {
            let path = Path::default().key("jobs").index(j).key("repos").index(t);
            if let TargetSpec::Select(entry) = entry {
                let org = entry
                    .select
                    .org
                    .clone()
                    .or_else(|| job.org.clone())
                    .or_else(|| spec.defaults.org.clone());
                match org {
                    Some(org) => selections.push(Selection {
                        job: j,
                        index: t,
                        org,
                        select: entry.select.clone(),
                    }),
                    None => errors.push(TargetError {
                        path: path.key("select"),
                        message: "`select` names no organisation".to_owned(),
                        help: Some(
                            "set `select.org`, the job's `org` or `defaults.org`".to_owned(),
                        ),
                    }),
                }
                continue;
            }
            match resolve_one(spec, job, j, t, entry, &path) {
                Ok(target) => targets.push(target),
                Err(error) => errors.push(error),
            }
        }
    }
    (targets, selections, errors)
}

fn resolve_one(
    spec: &Spec,
    job: &Job,
    j: usize,
    t: usize,
    entry: &TargetSpec,
    path: &Path,
) -> Result<ResolvedTarget, TargetError> {
    let fail = |path: Path, message: String| TargetError {
        path,
        message,
        help: None,
    };
    let default_org = job.org.clone().or_else(|| spec.defaults.org.clone());
    let (org, repo, full) = match entry {
        TargetSpec::Short(text) => {
            let (org, repo) = match text.as_str().split_once('/') {
                Some((org, repo)) => {
                    let org = OrgName::parse(org).map_err(|m| fail(path.clone(), m))?;
                    (Some(org), repo)
                }
                None => (None, text.as_str()),
            };
            let repo = RepoName::parse(repo).map_err(|m| fail(path.clone(), m))?;
            (org, repo, None)
        }
        TargetSpec::Full(target) => (target.org.clone(), target.repo.clone(), Some(target)),
        TargetSpec::Select(_) => {
            return Err(fail(
                path.clone(),
                "a `select` entry is resolved by the forge, not here".to_owned(),
            ))
        }
    };
    let Some(org) = org.or(default_org) else {
        return Err(TargetError {
            path: path.clone(),
            message: format!("target `{repo}` has no organisation"),
            help: Some("write `org/repo`, or set the job's `org` or `defaults.org`".to_owned()),
        });
    };
    let mut variables = job.variables.clone();
    let (mut issue, mut pr, mut branch, mut tag, mut base, mut url) =
        (None, None, None, None, None, None);
    if let Some(target) = full {
        if target.issue.is_some() && target.pr.is_some() {
            return Err(TargetError {
                path: path.key("pr"),
                message: format!("target `{org}/{repo}` sets both `issue` and `pr`"),
                help: Some(
                    "a unit works on one issue or one pull request: split it into two targets"
                        .to_owned(),
                ),
            });
        }
        if target.branch.is_some() && target.tag.is_some() {
            return Err(TargetError {
                path: path.key("tag"),
                message: format!("target `{org}/{repo}` sets both `branch` and `tag`"),
                help: Some("start from a branch or from a tag, not both".to_owned()),
            });
        }
        if target.pr.is_some() && (target.branch.is_some() || target.tag.is_some()) {
            return Err(fail(path.key("pr"), format!("target `{org}/{repo}` sets `pr` together with `branch` or `tag`; a PR brings its own branch")));
        }
        variables.extend(target.variables.clone());
        (issue, pr, branch, tag, base, url) = (
            target.issue,
            target.pr,
            target.branch.clone(),
            target.tag.clone(),
            target.base.clone(),
            target.url.clone(),
        );
    }
    let base = base
        .or_else(|| job.base.clone())
        .or_else(|| spec.defaults.base.clone());
    let key = match (issue, pr, &branch, &tag) {
        (Some(n), _, _, _) => format!("task-{n}"),
        (_, Some(n), _, _) => format!("pr-{n}"),
        (_, _, Some(b), _) => b.to_string(),
        (_, _, _, Some(t)) => t.to_string(),
        _ => job.id.to_string(),
    };
    let key_is_job = key == job.id.as_str();
    Ok(ResolvedTarget {
        job: j,
        index: t,
        org,
        repo,
        key,
        key_is_job,
        issue,
        issue_text: None,
        pr,
        branch,
        tag,
        url,
        base,
        variables,
    })
}
