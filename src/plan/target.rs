//! Target expansion: each job's `repos` entries become resolved targets with an org, a
//! workspace key and merged variables.

use std::collections::BTreeMap;

use crate::spec::model::{Job, Spec, TargetSpec};
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

/// Resolves every target of every job, collecting all errors.
pub fn resolve(spec: &Spec) -> (Vec<ResolvedTarget>, Vec<TargetError>) {
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (j, job) in spec.jobs.iter().enumerate() {
        for (t, entry) in job.repos.iter().enumerate() {
            let path = Path::default().key("jobs").index(j).key("repos").index(t);
            match resolve_one(spec, job, j, t, entry, &path) {
                Ok(target) => targets.push(target),
                Err(error) => errors.push(error),
            }
        }
    }
    (targets, errors)
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
        pr,
        branch,
        tag,
        url,
        base,
        variables,
    })
}
