//! What a remote forge says about targets before the plan is built: the repositories of an
//! organisation ([`RemoteRepo`], kept or dropped by a [`RepoFilter`]), open issues
//! ([`RemoteIssue`]) and the pull request of a PR target ([`RemotePr`]).
//!
//! Invariants: these are plain values read from the forge's JSON (Forgejo, Gitea and GitHub
//! name the fields alike); a field the forge leaves out reads as empty, `0` or `false`, never
//! as an error. Nothing here sends a request.

use super::http::text;

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

/// Opens `issue` with the create request `body` at the issues path `path`, unless one of the
/// `open` issues is it, opened by an earlier attempt (same title, and the marker only dispatch
/// writes in its body).
pub(super) async fn open_issue_once(
    http: &super::http::HttpClient,
    path: &str,
    open: &[RemoteIssue],
    issue: &super::NewIssue,
    body: serde_json::Value,
) -> Result<super::IssueRef, super::ForgeError> {
    if let Some(earlier) = open
        .iter()
        .find(|i| i.title == issue.title && i.body.contains(&issue.marker))
    {
        return Ok(super::IssueRef {
            number: earlier.number,
            opened: false,
        });
    }
    let created = http
        .send(reqwest::Method::POST, path, &[], Some(&body))
        .await?;
    Ok(super::IssueRef {
        number: created.body["number"].as_u64().unwrap_or(0),
        opened: true,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
