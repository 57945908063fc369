//! The host's side of a checkout that travels to a pod and back through the forge.
//!
//! Before a Job, [`send`] makes the work tree's state one commit (its HEAD as the parent, the
//! tree as it is now, what is not committed included, what `.gitignore` leaves out not) and
//! pushes it to the Job's scratch ref `refs/dispatch/<job>/in`, and each directory carried
//! both ways ([`Carry::Both`](crate::runtime::Carry::Both), `meta/`) as `in-N` (a commit of its
//! own). The pod clones those and, after its step, pushes the tree it left as
//! `refs/dispatch/<job>/out` (a commit on HEAD) and each directory as `out-N`. [`bring_back`]
//! fetches those and makes the host's work tree and directories what the pod left (in a
//! directory: the files the pod added, changed or deleted), so the node goes on exactly as
//! after a bound container. [`forget`] deletes the refs, there and here.
//!
//! What comes back was written by hostile code, as what a bound container leaves is: the
//! fetch checks every object (`fetch.fsckObjects`, which refuses `.git` path components among
//! others), the result must be one commit on the HEAD that was sent, the work tree is updated
//! by git's own checkout (hardened, see [`crate::git::command`]), a gitlink the agent made is
//! left as the nested repository it was in the pod (so the node refuses it as it would after
//! Docker), and files of an output directory are written only as regular files, through no
//! link, at most [`FILE_LIMIT`] each.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::forge::http::Secret;
use crate::git;
use crate::runtime::{mounted, Checkout, RuntimeError};

/// Most bytes of one file of an output directory brought back.
pub const FILE_LIMIT: u64 = 64 << 20;

/// What was sent for one Job: enough to bring its result back in another process (it is kept
/// in the Job's annotations).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The host's work tree.
    pub dir: PathBuf,
    /// Where the host pushes and fetches (path or URL).
    pub remote: String,
    /// The Job's refs: `refs/dispatch/<job>`.
    pub refs: String,
    /// The work tree's HEAD when it was sent.
    pub head: String,
    /// The commit sent (its parent is `head`).
    pub snapshot: String,
    /// The output directories, in the order of their `out-N` refs.
    pub outs: Vec<OutDir>,
}

/// A directory that goes to the pod and comes back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutDir {
    /// On the host.
    pub host: PathBuf,
    /// Paths under it that are not taken back (where other mounts sat, the node's own log).
    pub skip: Vec<String>,
    /// The commit of what it held when it was sent (set by [`send`]).
    #[serde(default)]
    pub sent: String,
}

impl Sent {
    fn out_ref(&self) -> String {
        format!("{}/out", self.refs)
    }

    fn dir_ref(&self, index: usize) -> String {
        format!("{}/out-{index}", self.refs)
    }
}

/// The scratch refs of Job `job`.
pub fn refs_of(job: &str) -> String {
    format!("refs/dispatch/{job}")
}

fn failed(what: &str, error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Cluster(format!("{what}: {error}"))
}

/// Runs hardened git in `dir` with the token for `remote` when there is one; stdout, raw.
async fn git_with(
    dir: &Path,
    args: &[&str],
    remote: Option<(&str, &Secret)>,
    index: Option<&Path>,
) -> Result<Vec<u8>, RuntimeError> {
    git_run(git::command(dir), dir, args, remote, index).await
}

/// The commit of what directory `tree` holds (what `.gitignore` leaves out aside), made with
/// the objects of the repository `repo` and a temporary index named after `name`: on `parent`
/// (whose tree the index starts from, so that files it tracks stay) when given, else with
/// none.
async fn commit_tree(
    repo: &Path,
    tree: &Path,
    name: &str,
    parent: Option<&str>,
    message: &str,
) -> Result<String, RuntimeError> {
    let index = repo.join(".git").join(format!("dispatch-{name}.index"));
    let _ = tokio::fs::remove_file(&index).await;
    let in_tree = || {
        let mut command = git::command(tree);
        command.env("GIT_DIR", repo.join(".git"));
        command.arg("--work-tree=.");
        command
    };
    let made = async {
        if let Some(parent) = parent {
            git_run(in_tree(), tree, &["read-tree", parent], None, Some(&index)).await?;
        }
        let add = ["add", "--all", "--", "."];
        git_run(in_tree(), tree, &add, None, Some(&index)).await?;
        let tree_id = git_run(in_tree(), tree, &["write-tree"], None, Some(&index)).await?;
        let tree_id = String::from_utf8_lossy(&tree_id).trim().to_owned();
        let mut args = vec!["commit-tree", tree_id.as_str(), "-m", message];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        git_text(repo, &args).await
    }
    .await;
    let _ = tokio::fs::remove_file(&index).await;
    made
}

async fn git_run(
    mut command: tokio::process::Command,
    dir: &Path,
    args: &[&str],
    remote: Option<(&str, &Secret)>,
    index: Option<&Path>,
) -> Result<Vec<u8>, RuntimeError> {
    command.args(args);
    if let Some((url, token)) = remote {
        crate::forge::push::authorize(&mut command, url, token);
    }
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let output = command
        .output()
        .await
        .map_err(|e| failed(&format!("git {}", args.join(" ")), e))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = git::failure(&stderr);
    let message = match remote {
        Some((_, token)) => token.redact(&message),
        None => message,
    };
    Err(failed(
        &format!("git {} (in {})", args.join(" "), dir.display()),
        message,
    ))
}

async fn git_text(dir: &Path, args: &[&str]) -> Result<String, RuntimeError> {
    let out = git_with(dir, args, None, None).await?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Sends the work tree of `checkout` for Job `job`: its state as one commit on its HEAD,
/// pushed to the Job's `in` ref (and kept under the same ref here until [`forget`]).
pub async fn send(
    checkout: &Checkout,
    job: &str,
    mut outs: Vec<OutDir>,
    token: Option<&Secret>,
) -> Result<Sent, RuntimeError> {
    let dir = &checkout.dir;
    let refs = refs_of(job);
    let head = git_text(dir, &["rev-parse", "--verify", "HEAD^{commit}"]).await?;
    let snapshot = commit_tree(
        dir,
        dir,
        job,
        Some(&head),
        "dispatch: the work tree as sent to the cluster",
    )
    .await?;
    let local = format!("{refs}/in");
    git_text(dir, &["update-ref", &local, &snapshot]).await?;
    let mut specs = vec![format!("+{snapshot}:{local}")];
    for (index, out) in outs.iter_mut().enumerate() {
        out.sent = commit_tree(
            dir,
            &out.host,
            &format!("{job}-{index}"),
            None,
            "dispatch: a directory as sent to the cluster",
        )
        .await?;
        let local = format!("{refs}/in-{index}");
        git_text(dir, &["update-ref", &local, &out.sent]).await?;
        specs.push(format!("+{}:{local}", out.sent));
    }
    let remote = checkout.remote.as_str();
    let mut args = vec!["push", "--quiet", "--no-verify", remote];
    args.extend(specs.iter().map(String::as_str));
    git_with(dir, &args, token.map(|t| (remote, t)), None).await?;
    Ok(Sent {
        dir: dir.clone(),
        remote: checkout.remote.clone(),
        refs,
        head,
        snapshot,
        outs,
    })
}

/// Makes the host's work tree and output directories what the pod left (see the module
/// doc). Safe to do again (a resumed runner collecting a Job twice).
pub async fn bring_back(sent: &Sent, token: Option<&Secret>) -> Result<(), RuntimeError> {
    let dir = &sent.dir;
    let remote = sent.remote.as_str();
    let mut specs = vec![format!("+{0}:{0}", sent.out_ref())];
    specs.extend((0..sent.outs.len()).map(|i| format!("+{0}:{0}", sent.dir_ref(i))));
    let mut args = vec![
        "-c",
        "fetch.fsckObjects=true",
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        remote,
    ];
    args.extend(specs.iter().map(String::as_str));
    git_with(dir, &args, token.map(|t| (remote, t)), None).await?;
    let out = sent.out_ref();
    let parents = git_text(dir, &["show", "-s", "--format=%P", &out]).await?;
    if parents != sent.head {
        return Err(RuntimeError::Cluster(format!(
            "the pod's result {out} is not one commit on the HEAD it was sent ({}), but has the parents `{parents}`; it is not taken",
            sent.head
        )));
    }
    git_text(dir, &["read-tree", &sent.snapshot]).await?;
    let applied = async {
        git_text(dir, &["read-tree", "--reset", "-u", &out]).await?;
        mark_new_gitlinks(dir, &sent.snapshot, &out).await
    }
    .await;
    // The index is HEAD's again whatever happened: what the pod changed is in the work tree,
    // not staged, as a bound container leaves it.
    git_text(dir, &["read-tree", &sent.head]).await?;
    applied?;
    for (index, out_dir) in sent.outs.iter().enumerate() {
        write_dir(dir, &sent.dir_ref(index), out_dir).await?;
    }
    Ok(())
}

/// Deletes the scratch refs that start with `prefix` (one Job's `refs/dispatch/<job>/`), on
/// the remote and here.
pub async fn forget(
    dir: &Path,
    remote: &str,
    prefix: &str,
    token: Option<&Secret>,
) -> Result<(), RuntimeError> {
    let pattern = format!("{prefix}*");
    let listed = git_with(
        dir,
        &["ls-remote", "--refs", remote, &pattern],
        token.map(|t| (remote, t)),
        None,
    )
    .await?;
    let there: Vec<String> = String::from_utf8_lossy(&listed)
        .lines()
        .filter_map(|line| line.split_once('\t').map(|(_, name)| format!(":{name}")))
        .collect();
    if !there.is_empty() {
        let mut args = vec!["push", "--quiet", "--no-verify", remote];
        args.extend(there.iter().map(String::as_str));
        git_with(dir, &args, token.map(|t| (remote, t)), None).await?;
    }
    if tokio::fs::metadata(dir.join(".git"))
        .await
        .is_ok_and(|m| m.is_dir())
    {
        let here = git_text(dir, &["for-each-ref", "--format=%(refname)", prefix]).await?;
        for name in here.lines().filter(|n| n.starts_with(prefix)) {
            git_text(dir, &["update-ref", "-d", name]).await?;
        }
    }
    Ok(())
}

/// One entry of `git ls-tree -r -z`.
struct Entry {
    mode: String,
    object: String,
    path: String,
}

async fn ls_tree(dir: &Path, tree: &str) -> Result<Vec<Entry>, RuntimeError> {
    let out = git_with(
        dir,
        &["ls-tree", "-r", "-z", "--full-tree", tree],
        None,
        None,
    )
    .await?;
    Ok(out
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (meta, path) = entry.split_once('\t')?;
            let mut parts = meta.split(' ');
            let (mode, _kind, object) = (parts.next()?, parts.next()?, parts.next()?);
            Some(Entry {
                mode: mode.to_owned(),
                object: object.to_owned(),
                path: path.to_owned(),
            })
        })
        .collect())
}

/// A gitlink in the pod's result that the snapshot did not have is a repository the agent
/// nested in the work tree: it is left as one here (`PATH/.git`), for the node to refuse as it
/// refuses one a bound container planted.
async fn mark_new_gitlinks(dir: &Path, snapshot: &str, out: &str) -> Result<(), RuntimeError> {
    let had: std::collections::HashSet<String> = ls_tree(dir, snapshot)
        .await?
        .into_iter()
        .filter(|e| e.mode == "160000")
        .map(|e| e.path)
        .collect();
    for entry in ls_tree(dir, out).await? {
        if entry.mode == "160000" && !had.contains(&entry.path) {
            let Some(relative) = safe_relative(&entry.path) else {
                continue;
            };
            let marker = relative.join(".git");
            let base = dir.to_path_buf();
            tokio::task::spawn_blocking(move || make_dirs(&base, &marker))
                .await
                .map_err(|e| failed("marking a nested repository", e))?
                .map_err(|e| failed("marking a nested repository", e))?;
        }
    }
    Ok(())
}

/// Makes the host directory what the pod left in it (`tree`, a fetched ref): the regular
/// files it added or changed are written, the ones it deleted are removed; what it did not
/// touch, and the paths it skips, are left alone.
async fn write_dir(repo: &Path, tree: &str, out: &OutDir) -> Result<(), RuntimeError> {
    let regular = |e: &Entry| matches!(e.mode.as_str(), "100644" | "100755");
    let before: std::collections::HashMap<String, String> = ls_tree(repo, &out.sent)
        .await?
        .into_iter()
        .filter(|e| regular(e))
        .map(|e| (e.path, e.object))
        .collect();
    let after = ls_tree(repo, tree).await?;
    let skipped = |relative: &Path| out.skip.iter().any(|skip| Path::new(skip) == relative);
    let left: std::collections::HashSet<&str> = after.iter().map(|e| e.path.as_str()).collect();
    for (path, _) in before.iter().filter(|(p, _)| !left.contains(p.as_str())) {
        let Some(relative) = safe_relative(path).filter(|r| !skipped(r)) else {
            continue;
        };
        let at = out.host.join(relative);
        // Only a regular file is removed (a link there is not followed, just left).
        if tokio::fs::symlink_metadata(&at)
            .await
            .is_ok_and(|m| m.is_file())
        {
            tokio::fs::remove_file(&at)
                .await
                .map_err(|e| failed(&format!("removing {}", at.display()), e))?;
        }
    }
    for entry in after {
        if !regular(&entry) || before.get(&entry.path) == Some(&entry.object) {
            continue;
        }
        let Some(relative) = safe_relative(&entry.path).filter(|r| !skipped(r)) else {
            continue;
        };
        let size = git_text(repo, &["cat-file", "-s", &entry.object]).await?;
        if size.parse::<u64>().unwrap_or(u64::MAX) > FILE_LIMIT {
            tracing::warn!(path = %entry.path, "a file the pod left is too large to bring back");
            continue;
        }
        let bytes = git_with(repo, &["cat-file", "blob", &entry.object], None, None).await?;
        let (base, path) = (out.host.clone(), relative);
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                make_dirs(&base, parent)?;
            }
            mounted::write_sync(&base.join(&path), &bytes)
        })
        .await
        .map_err(|e| failed("writing a file the pod left", e))?
        .map_err(|e| failed(&format!("writing {}", out.host.display()), e))?;
    }
    Ok(())
}

/// `path` as plain components below a directory: none empty, `.`, `..` or absolute.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| path.to_path_buf())
        .filter(|p| !p.as_os_str().is_empty())
}

/// Creates the directories of `relative` below `base`, each one a real directory: an entry
/// there that is a link (or anything but a directory) is an error, never followed.
fn make_dirs(base: &Path, relative: &Path) -> std::io::Result<()> {
    let mut at = base.to_path_buf();
    for component in relative.components() {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(found) if found.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a directory; nothing is written through it",
                        at.display()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `git ARGS` in `dir` as a test sets things up (not hardened: the test's own repos).
    fn sh_git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "protocol.file.allow=always",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// What a pod does with what was sent: clone the `in` ref, leave HEAD at the host's, change
    /// the tree (and nest a repository), and push the tree and an output directory back.
    fn pod_round(bare: &Path, pod: &Path, refs: &str) {
        std::fs::create_dir_all(pod).unwrap();
        let work = pod.join("repo");
        std::fs::create_dir_all(&work).unwrap();
        sh_git(&work, &["init", "-q"]);
        let bare_text = bare.to_str().unwrap();
        sh_git(
            &work,
            &[
                "fetch",
                "-q",
                "--depth=2",
                bare_text,
                &format!("+{refs}/in:refs/in"),
                &format!("+{refs}/in-0:refs/in-0"),
            ],
        );
        sh_git(&work, &["checkout", "-q", "--detach", "refs/in"]);
        sh_git(&work, &["reset", "-q", "--mixed", "HEAD~1"]);
        assert_eq!(
            std::fs::read_to_string(work.join("new.txt")).unwrap(),
            "not committed\n"
        );
        std::fs::remove_file(work.join("a.txt")).unwrap();
        std::fs::write(work.join("b.txt"), "made in the pod\n").unwrap();
        std::fs::create_dir_all(work.join("nested")).unwrap();
        sh_git(&work.join("nested"), &["init", "-q"]);
        std::fs::write(work.join("nested/x"), "x").unwrap();
        sh_git(&work.join("nested"), &["add", "x"]);
        sh_git(&work.join("nested"), &["commit", "-q", "-m", "nested"]);
        sh_git(&work, &["add", "--all"]);
        sh_git(&work, &["commit", "-q", "--allow-empty", "-m", "result"]);
        let meta = pod.join("meta");
        std::fs::create_dir_all(meta.join("sub")).unwrap();
        std::fs::write(meta.join("sub/notes.md"), "notes").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", meta.join("link.md")).unwrap();
        let git_dir = work.join(".git");
        let index = pod.join("meta.index");
        let meta_git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .arg(format!("--git-dir={}", git_dir.display()))
                .arg("--work-tree=.")
                .args(args)
                .current_dir(&meta)
                .env("GIT_INDEX_FILE", &index)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        meta_git(&["read-tree", "-u", "--reset", "refs/in-0"]);
        assert_eq!(
            std::fs::read_to_string(meta.join("kept.md")).unwrap(),
            "kept",
            "meta/ went in"
        );
        std::fs::remove_file(meta.join("failed-once")).unwrap();
        std::fs::write(meta.join("last-message.md"), "done").unwrap();
        std::fs::write(meta.join("prompt.md"), "").unwrap();
        meta_git(&["add", "--all", "--", "."]);
        let tree = meta_git(&["write-tree"]);
        let commit = meta_git(&["commit-tree", "-m", "meta", &tree]);
        sh_git(
            &work,
            &[
                "push",
                "-q",
                bare_text,
                &format!("+HEAD:{refs}/out"),
                &format!("+{commit}:{refs}/out-0"),
            ],
        );
    }

    #[tokio::test]
    async fn a_checkout_goes_to_the_pod_and_its_result_comes_back_as_a_bound_one_would_leave_it() {
        let dir = std::env::temp_dir().join(format!("dispatch-carry-git-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (host, bare, meta) = (dir.join("host"), dir.join("forge.git"), dir.join("meta"));
        std::fs::create_dir_all(&host).unwrap();
        std::fs::create_dir_all(&meta).unwrap();
        sh_git(&dir, &["init", "-q", "--bare", bare.to_str().unwrap()]);
        sh_git(&host, &["init", "-q"]);
        std::fs::write(host.join("a.txt"), "committed\n").unwrap();
        sh_git(&host, &["add", "a.txt"]);
        sh_git(&host, &["commit", "-q", "-m", "start"]);
        let head = sh_git(&host, &["rev-parse", "HEAD"]);
        std::fs::write(host.join("new.txt"), "not committed\n").unwrap();
        std::fs::write(meta.join("prompt.md"), "the prompt").unwrap();
        let checkout = Checkout {
            dir: host.clone(),
            remote: bare.to_str().unwrap().to_owned(),
            remote_there: String::new(),
        };
        std::fs::write(meta.join("failed-once"), "").unwrap();
        std::fs::write(meta.join("kept.md"), "kept").unwrap();
        let outs = vec![OutDir {
            host: meta.clone(),
            skip: vec!["prompt.md".to_owned()],
            sent: String::new(),
        }];
        let sent = send(&checkout, "job1", outs, None).await.expect("sent");
        assert_eq!(sent.head, head);
        assert_eq!(sh_git(&host, &["rev-parse", "HEAD"]), head, "HEAD stays");
        assert_eq!(
            sh_git(&host, &["status", "--porcelain"]),
            "?? new.txt",
            "the index stays"
        );

        pod_round(&bare, &dir.join("pod"), &sent.refs);
        bring_back(&sent, None).await.expect("brought back");
        bring_back(&sent, None)
            .await
            .expect("and again: a resumed runner collects twice");
        assert!(!host.join("a.txt").exists(), "deleted in the pod");
        assert_eq!(
            std::fs::read_to_string(host.join("b.txt")).unwrap(),
            "made in the pod\n"
        );
        assert_eq!(
            std::fs::read_to_string(host.join("new.txt")).unwrap(),
            "not committed\n"
        );
        assert_eq!(sh_git(&host, &["rev-parse", "HEAD"]), head);
        assert_eq!(
            sh_git(&host, &["diff", "--cached", "--name-only"]),
            "",
            "nothing staged"
        );
        assert!(
            host.join("nested/.git").is_dir(),
            "the repository nested in the pod is one here, for the node to refuse"
        );
        assert_eq!(
            std::fs::read_to_string(meta.join("last-message.md")).unwrap(),
            "done"
        );
        assert_eq!(
            std::fs::read_to_string(meta.join("sub/notes.md")).unwrap(),
            "notes"
        );
        assert_eq!(
            std::fs::read_to_string(meta.join("prompt.md")).unwrap(),
            "the prompt"
        );
        assert!(
            std::fs::symlink_metadata(meta.join("link.md")).is_err(),
            "no link comes back"
        );
        assert!(!meta.join("failed-once").exists(), "deleted in the pod");
        assert_eq!(
            std::fs::read_to_string(meta.join("kept.md")).unwrap(),
            "kept"
        );

        forget(&host, &sent.remote, &format!("{}/", sent.refs), None)
            .await
            .expect("forgotten");
        let bare_dir = bare.clone();
        assert_eq!(sh_git(&bare_dir, &["for-each-ref", "refs/dispatch/"]), "");
        assert_eq!(sh_git(&host, &["for-each-ref", "refs/dispatch/"]), "");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_result_that_is_not_one_commit_on_the_sent_head_is_refused() {
        let dir =
            std::env::temp_dir().join(format!("dispatch-carry-refuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (host, bare) = (dir.join("host"), dir.join("forge.git"));
        std::fs::create_dir_all(&host).unwrap();
        sh_git(&dir, &["init", "-q", "--bare", bare.to_str().unwrap()]);
        sh_git(&host, &["init", "-q"]);
        std::fs::write(host.join("a.txt"), "a").unwrap();
        sh_git(&host, &["add", "a.txt"]);
        sh_git(&host, &["commit", "-q", "-m", "start"]);
        let checkout = Checkout {
            dir: host.clone(),
            remote: bare.to_str().unwrap().to_owned(),
            remote_there: String::new(),
        };
        let sent = send(&checkout, "job2", Vec::new(), None).await.unwrap();
        // A pod that rewrote history: its result has no parent at all.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        sh_git(&other, &["init", "-q"]);
        std::fs::write(other.join("evil"), "x").unwrap();
        sh_git(&other, &["add", "evil"]);
        sh_git(&other, &["commit", "-q", "-m", "orphan"]);
        sh_git(
            &other,
            &[
                "push",
                "-q",
                bare.to_str().unwrap(),
                &format!("+HEAD:{}/out", sent.refs),
            ],
        );
        let error = bring_back(&sent, None).await.expect_err("refused");
        assert!(
            error.to_string().contains("is not one commit on the HEAD"),
            "{error}"
        );
        assert!(!host.join("evil").exists(), "nothing of it is taken");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_plain_relative_paths_are_taken() {
        assert_eq!(safe_relative("a/b.md"), Some(PathBuf::from("a/b.md")));
        assert_eq!(safe_relative("../x"), None);
        assert_eq!(safe_relative("/etc/passwd"), None);
        assert_eq!(safe_relative("a/./b"), Some(PathBuf::from("a/b")));
        assert_eq!(safe_relative(""), None);
    }

    #[test]
    fn directories_are_never_made_through_a_link() {
        let dir = std::env::temp_dir().join(format!("dispatch-carry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("base")).unwrap();
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join("base/link")).unwrap();
        make_dirs(&dir.join("base"), Path::new("a/b")).unwrap();
        assert!(dir.join("base/a/b").is_dir());
        let error = make_dirs(&dir.join("base"), Path::new("link/c")).unwrap_err();
        assert!(error.to_string().contains("not a directory"), "{error}");
        assert!(
            !dir.join("elsewhere/c").exists(),
            "nothing made through the link"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
