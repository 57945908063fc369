//! Git through the git CLI: clone, branch, commit, push, merge. Every argument is passed as
//! one argv element (never a shell string); prompts for credentials are disabled; commits
//! made by dispatch carry a fixed identity.

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

/// Runs `git ARGS` in `dir` and returns its trimmed stdout.
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let output = Command::new("git")
        .args([
            "-c",
            &format!("user.name={AUTHOR_NAME}"),
            "-c",
            &format!("user.email={AUTHOR_EMAIL}"),
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .kill_on_drop(true)
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
/// its object files by hard links where it can (git objects never change), which keeps prep
/// cheap.
pub async fn clone(source: &str, dest: &Path) -> Result<(), GitError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| error(parent, &["clone"], e.to_string()))?;
    let dest_text = dest.to_string_lossy().into_owned();
    git(parent, &["clone", "--quiet", "--", source, &dest_text])
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

/// Whether the working tree has changes (tracked or untracked), ignoring `excluded` paths.
pub async fn has_changes(repo: &Path, excluded: &[&str]) -> Result<bool, GitError> {
    let status = git(repo, &["status", "--porcelain", "--untracked-files=all"]).await?;
    Ok(status.lines().any(|line| {
        let path = line.get(3..).unwrap_or("").trim_matches('"');
        !excluded
            .iter()
            .any(|e| path == *e || path.starts_with(&format!("{e}/")))
    }))
}

/// Stages everything but `excluded` and commits with `message`; returns false when there was
/// nothing to commit.
pub async fn commit_all(repo: &Path, message: &str, excluded: &[&str]) -> Result<bool, GitError> {
    let mut args: Vec<String> = vec!["add".into(), "--all".into(), "--".into(), ".".into()];
    args.extend(excluded.iter().map(|e| format!(":(exclude){e}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git(repo, &args).await?;
    let staged = git(repo, &["diff", "--cached", "--name-only"]).await?;
    if staged.is_empty() {
        return Ok(false);
    }
    git(repo, &["commit", "--quiet", "--no-verify", "-m", message]).await?;
    Ok(true)
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

/// Creates a bare repository at `bare` holding the files of `dir` as one commit on `main`
/// (used to seed the local forge from fixture directories).
pub async fn seed_bare(dir: &Path, bare: &Path, scratch: &Path) -> Result<(), GitError> {
    let _ = tokio::fs::remove_dir_all(scratch).await;
    copy_dir(dir, scratch).map_err(|e| error(dir, &["seed"], e.to_string()))?;
    git(scratch, &["init", "--quiet", "--initial-branch=main"]).await?;
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
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            &partial_text,
        ],
    )
    .await?;
    git(scratch, &["push", "--quiet", &partial_text, "main"]).await?;
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
