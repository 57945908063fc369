//! Git through the git CLI: clone, branch, commit, push, merge. Every argument is passed as
//! one argv element (never a shell string); prompts for credentials are disabled; commits
//! made by dispatch carry a fixed identity.
//!
//! Invariant: every git process dispatch starts on the host comes from [`command`], which
//! hardens it against the work tree it runs on (containers wrote it) and the runner's
//! environment (which holds tokens and keys git must not see). [`planted`] finds what a
//! container left for git to act on.

pub mod planted;

use std::path::{Path, PathBuf};

use tokio::process::Command;

/// Identity of commits dispatch makes.
pub const AUTHOR_NAME: &str = "dispatch";
/// E-mail of commits dispatch makes.
pub const AUTHOR_EMAIL: &str = "dispatch@localhost";

/// A git command that failed.
#[derive(Debug, thiserror::Error)]
#[error("git {args} (in {dir}) failed: {message}")]
pub struct GitError {
    /// The arguments, for the message.
    pub args: String,
    /// Where it ran.
    pub dir: String,
    /// stderr, or the spawn error.
    pub message: String,
}

/// Runs `git ARGS` in `dir` (hardened, see [`command`]) and returns its trimmed stdout.
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let output = command(dir)
        .args(args)
        .output()
        .await
        .map_err(|e| error(dir, args, e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(error(
            dir,
            args,
            failure(&String::from_utf8_lossy(&output.stderr)),
        ))
    }
}

/// The one way dispatch starts git on the host: `git` in `dir`, hardened against what a
/// repository, an agent or the runner's environment could make it do (see [`hardened`]).
/// Add the subcommand and its arguments; a caller that needs more in the environment (the
/// push that carries the forge token) adds only that.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    environment(command.as_std_mut(), dir);
    command
        .args(["-c", &format!("user.name={AUTHOR_NAME}")])
        .args(["-c", &format!("user.email={AUTHOR_EMAIL}")]);
    for setting in HARDENED_CONFIG {
        command.args(["-c", setting]);
    }
    command.kill_on_drop(true);
    command
}

/// Configuration given on git's command line, which wins over every file git reads. What
/// each line switches off could run a program or reach another repository on the host:
/// hooks, the file system monitor, submodule recursion, external diff programs, credential
/// helpers, pagers and editors; and only the transports dispatch uses are allowed (`ext::`
/// and `fd::` could run commands). Filter, text conversion and merge drivers are never
/// selected (attributes come from the empty tree, see [`environment`]).
pub const HARDENED_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.pager=cat",
    "core.editor=false",
    "core.askPass=",
    "core.attributesFile=/dev/null",
    "credential.helper=",
    "diff.external=",
    "diff.ignoreSubmodules=all",
    "status.submoduleSummary=false",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "push.recurseSubmodules=no",
    "protocol.allow=never",
    "protocol.file.allow=always",
    "protocol.https.allow=always",
    "protocol.http.allow=always",
    "protocol.ssh.allow=always",
    "commit.gpgsign=false",
    "tag.gpgsign=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "advice.detachedHead=false",
];

/// git's well-known empty tree.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// The variables of the runner's environment git may see: what finds programs and the
/// user's SSH agent and proxies. Everything else (forge tokens, provider keys, `GIT_DIR`,
/// `GIT_CONFIG_*`, `GIT_SSH_COMMAND`, `LD_PRELOAD`) is left out.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "SSH_AUTH_SOCK",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Gives `command` (git, to run in `dir`) the environment of a hardened git: empty but for
/// [`PASSED_ENV`], no system or global configuration, no prompts, no replace objects, and
/// no repository discovery above `dir` (a work tree whose `.git` is gone is never taken for
/// the project around the state directory).
fn environment(command: &mut std::process::Command, dir: &Path) {
    command.env_clear();
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ATTR_NOSYSTEM", "1")
        // Attributes come from the empty tree, never from the work tree or the index: no
        // `.gitattributes` a repository or an agent wrote selects a filter, diff or merge
        // driver (git 2.40 and later).
        .env("GIT_ATTR_SOURCE", EMPTY_TREE)
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_OPTIONAL_LOCKS", "0");
    if let Some(parent) = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.parent().map(Path::to_owned))
    {
        command.env("GIT_CEILING_DIRECTORIES", parent);
    }
    command.current_dir(dir);
}

/// What a failed git command's stderr says, in one line: a push refused by its lease in
/// words, else git's last line.
pub fn failure(stderr: &str) -> String {
    if stderr.contains("(stale info)") {
        return "refused: the branch changed on the remote since the work started from it \
                (someone else pushed); nothing was overwritten"
            .to_owned();
    }
    stderr
        .trim()
        .lines()
        .last()
        .unwrap_or("exited non-zero")
        .to_owned()
}

fn error(dir: &Path, args: &[&str], message: String) -> GitError {
    GitError {
        args: args.join(" "),
        dir: dir.display().to_string(),
        message,
    }
}

/// Clones `source` (URL or path) into `dest` (which must not exist). A local source shares
/// its object files by hard links where it can (git objects never change), and no template
/// is copied (no sample hooks, no `info/exclude`): prep stays cheap, a third less file system
/// work per clone.
pub async fn clone(source: &str, dest: &Path) -> Result<(), GitError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| error(parent, &["clone"], e.to_string()))?;
    let dest_text = dest.to_string_lossy().into_owned();
    git(
        parent,
        &["clone", "--quiet", "--template=", "--", source, &dest_text],
    )
    .await
    .map(drop)
}

/// The default branch of the clone's origin (what `origin/HEAD` points at).
pub async fn default_branch(repo: &Path) -> Result<String, GitError> {
    let origin_head = ["symbolic-ref", "--short", "refs/remotes/origin/HEAD"];
    let head = match git(repo, &origin_head).await {
        Ok(head) => head,
        Err(_) => {
            // Not recorded by this clone (or lost): ask the remote.
            git(repo, &["remote", "set-head", "origin", "--auto"]).await?;
            git(repo, &origin_head).await?
        }
    };
    Ok(head.strip_prefix("origin/").unwrap_or(&head).to_owned())
}

/// `git rev-parse REV`.
pub async fn rev_parse(repo: &Path, rev: &str) -> Result<String, GitError> {
    git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .await
}

/// A work tree as `git status` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The commit HEAD names (empty on an unborn branch).
    pub head: String,
    /// Paths with changes, staged, unstaged or untracked.
    pub changed: Vec<String>,
}

/// HEAD and the changed paths of the work tree, leaving out `excluded` files and
/// directories, in one git process.
pub async fn status(repo: &Path, excluded: &[&str]) -> Result<Status, GitError> {
    let text = git(
        repo,
        &[
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=all",
            "-z",
        ],
    )
    .await?;
    Ok(parse_status(&text, excluded))
}

/// Parses `git status --porcelain=v2 --branch -z`.
fn parse_status(text: &str, excluded: &[&str]) -> Status {
    let mut head = String::new();
    let mut changed = Vec::new();
    let mut records = text.split('\0');
    while let Some(record) = records.next() {
        let path = match record.split_at_checked(2) {
            Some(("# ", header)) => {
                if let Some(oid) = header.strip_prefix("branch.oid ") {
                    head = if oid == "(initial)" {
                        String::new()
                    } else {
                        oid.to_owned()
                    };
                }
                continue;
            }
            // Ordinary (8 fields before the path), renamed or copied (9, then the original
            // path as its own record), unmerged (10), untracked or ignored.
            Some(("1 ", _)) => record.splitn(9, ' ').nth(8),
            Some(("2 ", _)) => {
                let path = record.splitn(10, ' ').nth(9);
                records.next();
                path
            }
            Some(("u ", _)) => record.splitn(11, ' ').nth(10),
            Some(("? ", path)) => Some(path),
            _ => None,
        };
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            let left_out = excluded
                .iter()
                .any(|e| path == *e || path.starts_with(&format!("{e}/")));
            if !left_out {
                changed.push(path.to_owned());
            }
        }
    }
    Status { head, changed }
}

/// Stages everything in the work tree but `excluded`.
pub async fn stage_all(repo: &Path, excluded: &[&str]) -> Result<(), GitError> {
    let mut args: Vec<String> = vec!["add".into(), "--all".into(), "--".into(), ".".into()];
    args.extend(excluded.iter().map(|e| format!(":(exclude){e}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git(repo, &args).await.map(drop)
}

/// Commits what is staged with `message`.
pub async fn commit(repo: &Path, message: &str) -> Result<(), GitError> {
    git(repo, &["commit", "--quiet", "--no-verify", "-m", message])
        .await
        .map(drop)
}

/// Every ref of a clone: its name, the commit it names (tags peeled), and the target of a
/// symbolic ref (`refs/remotes/origin/HEAD`), read in one git process.
pub async fn refs(repo: &Path) -> Result<Refs, GitError> {
    let text = git(
        repo,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname) %(*objectname) %(symref)",
        ],
    )
    .await?;
    Ok(Refs(
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let name = fields.next()?.to_owned();
                let object = fields.next()?;
                let peeled = fields.next().filter(|p| !p.is_empty()).unwrap_or(object);
                let symref = fields.next().filter(|s| !s.is_empty()).map(str::to_owned);
                Some((name, (peeled.to_owned(), symref)))
            })
            .collect(),
    ))
}

/// The refs of a clone ([`refs`]).
#[derive(Clone, Debug, Default)]
pub struct Refs(std::collections::HashMap<String, (String, Option<String>)>);

impl Refs {
    /// The commit `name` (a full ref name) names.
    pub fn commit(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|(sha, _)| sha.as_str())
    }

    /// The origin's default branch, as the clone recorded it (`origin/HEAD`).
    pub fn default_branch(&self) -> Option<&str> {
        self.0
            .get("refs/remotes/origin/HEAD")
            .and_then(|(_, target)| target.as_deref())
            .and_then(|t| t.strip_prefix("refs/remotes/origin/"))
    }
}

/// Number of commits on HEAD that `base` does not have.
pub async fn commits_ahead(repo: &Path, base: &str) -> Result<u64, GitError> {
    let count = git(repo, &["rev-list", "--count", &format!("{base}..HEAD")]).await?;
    Ok(count.parse().unwrap_or(0))
}

/// The arguments of `git push` that puts HEAD on `branch` of `remote`: forced when the branch
/// belongs to dispatch's unit (`lease` is `None`), else only while the remote branch is still
/// at `lease`.
pub fn push_args(remote: &str, branch: &str, lease: Option<&str>) -> Vec<String> {
    let guard = match lease {
        None => "--force".to_owned(),
        Some(sha) => format!("--force-with-lease=refs/heads/{branch}:{sha}"),
    };
    vec![
        "push".to_owned(),
        "--quiet".to_owned(),
        guard,
        remote.to_owned(),
        format!("HEAD:refs/heads/{branch}"),
    ]
}

/// Pushes HEAD to `remote` as `branch` (see [`push_args`] for `lease`).
pub async fn push(
    repo: &Path,
    remote: &str,
    branch: &str,
    lease: Option<&str>,
) -> Result<(), GitError> {
    let args = push_args(remote, branch, lease);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git(repo, &args).await.map(drop)
}

/// A path as a string for git arguments.
pub fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The branch of a seeded repository ([`seed_bare`]): its default branch.
pub const SEED_BRANCH: &str = "main";

/// Creates a bare repository at `bare` holding the files of `dir` as one commit on
/// [`SEED_BRANCH`] (used to seed the local forge from fixture directories).
pub async fn seed_bare(dir: &Path, bare: &Path, scratch: &Path) -> Result<(), GitError> {
    let _ = tokio::fs::remove_dir_all(scratch).await;
    copy_dir(dir, scratch).map_err(|e| error(dir, &["seed"], e.to_string()))?;
    let initial = format!("--initial-branch={SEED_BRANCH}");
    git(scratch, &["init", "--quiet", &initial]).await?;
    git(scratch, &["add", "--all"]).await?;
    git(
        scratch,
        &["commit", "--quiet", "--no-verify", "-m", "Initial commit"],
    )
    .await?;
    let parent = bare.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| error(parent, &["init"], e.to_string()))?;
    // Built beside and renamed into place, so a seed cut short is never taken for a repository.
    let partial = bare.with_extension("partial");
    let _ = tokio::fs::remove_dir_all(&partial).await;
    let partial_text = path_arg(&partial);
    git(
        parent,
        &["init", "--quiet", "--bare", &initial, &partial_text],
    )
    .await?;
    git(scratch, &["push", "--quiet", &partial_text, SEED_BRANCH]).await?;
    tokio::fs::rename(&partial, bare)
        .await
        .map_err(|e| error(parent, &["seed"], e.to_string()))?;
    let _ = tokio::fs::remove_dir_all(scratch).await;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_head_and_every_kind_of_change_but_the_excluded() {
        let text = [
            "# branch.oid 1234abcd",
            "# branch.head agent/fix",
            "1 .M N... 100644 100644 100644 aaa bbb src/has space.rs",
            "2 R. N... 100644 100644 100644 aaa bbb R100 new name.txt",
            "old name.txt",
            "u UU N... 100644 100644 100644 100644 aaa bbb ccc both.txt",
            "? untracked/file.txt",
            "? BLOCKED.md",
            "? meta/inner.txt",
            "",
        ]
        .join("\0");
        let status = parse_status(&text, &["BLOCKED.md", "meta"]);
        assert_eq!(status.head, "1234abcd");
        assert_eq!(
            status.changed,
            [
                "src/has space.rs",
                "new name.txt",
                "both.txt",
                "untracked/file.txt"
            ]
        );
    }

    /// A work tree whose own configuration asks for every program git could run.
    fn hostile_repo(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dispatch-git-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let init = std::process::Command::new("git")
            .args(["init", "--quiet"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(init.success());
        let config = "[core]\n\tfsmonitor = touch ran-fsmonitor\n\thooksPath = hooks\n\
                      [diff]\n\texternal = touch ran-diff\n[credential]\n\thelper = touch ran-helper\n";
        let mut text = std::fs::read_to_string(dir.join(".git/config")).unwrap();
        text.push_str(config);
        std::fs::write(dir.join(".git/config"), text).unwrap();
        std::fs::create_dir_all(dir.join("hooks")).unwrap();
        for hook in ["pre-commit", "post-commit", "post-checkout"] {
            let path = dir.join("hooks").join(hook);
            std::fs::write(&path, "#!/bin/sh\ntouch ran-hook\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn the_command_line_configuration_wins_over_the_repository() {
        let dir = hostile_repo("config");
        for (key, want) in [
            ("core.fsmonitor", "false"),
            ("core.hooksPath", "/dev/null"),
            ("diff.external", ""),
            ("protocol.ext.allow", ""),
            ("protocol.allow", "never"),
        ] {
            let got = git(&dir, &["config", "--get", key])
                .await
                .unwrap_or_default();
            assert_eq!(got, want, "{key}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_runner_environment_stays_outside() {
        let dir = hostile_repo("env");
        // Cargo gives every test this variable; it stands for a token in the runner's
        // environment.
        std::env::var("CARGO_MANIFEST_DIR").expect("tests run under cargo");
        let mut command = tokio::process::Command::new("env");
        environment(command.as_std_mut(), &dir);
        let output = command.output().await.unwrap();
        let env = String::from_utf8_lossy(&output.stdout);
        assert!(
            !env.lines().any(|l| l.starts_with("CARGO_MANIFEST_DIR=")),
            "{env}"
        );
        assert!(env.contains("GIT_CONFIG_GLOBAL=/dev/null"), "{env}");
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
        let parent = dir.parent().unwrap().display().to_string();
        assert!(
            env.contains(&format!("GIT_CEILING_DIRECTORIES={parent}")),
            "{env}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn status_and_add_run_nothing_the_repository_names() {
        let dir = hostile_repo("run");
        std::fs::write(dir.join("file.txt"), "work\n").unwrap();
        std::fs::write(dir.join(".gitattributes"), "* filter=evil diff=evil\n").unwrap();
        let mut text = std::fs::read_to_string(dir.join(".git/config")).unwrap();
        text.push_str("[filter \"evil\"]\n\tclean = touch ran-filter\n[diff \"evil\"]\n\ttextconv = touch ran-textconv\n");
        std::fs::write(dir.join(".git/config"), text).unwrap();
        status(&dir, &[]).await.unwrap();
        stage_all(&dir, &[]).await.unwrap();
        commit(&dir, "work").await.unwrap();
        git(&dir, &["diff", "HEAD~0", "--stat"]).await.unwrap();
        let ran: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("ran-"))
            .collect();
        assert!(ran.is_empty(), "git ran what the repository asked: {ran:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_clean_tree_on_an_unborn_branch_has_no_head() {
        let status = parse_status("# branch.oid (initial)\0# branch.head main\0", &[]);
        assert_eq!(
            status,
            Status {
                head: String::new(),
                changed: Vec::new()
            }
        );
    }
}
