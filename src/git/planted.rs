//! What a container may have planted in a work tree for host git to act on: a nested
//! repository (a `.git` directory or a `.git` file pointing at another repository) and
//! gitlinks the start commit did not have.
//!
//! git treats a directory holding `.git` as another repository: `git add` records it as a
//! gitlink and later commands look into it, reading its configuration (a `core.fsmonitor`
//! there runs a program on the host). dispatch never clones submodules, so no `.git` below
//! the top of a work tree is dispatch's own: every one was planted.

use std::path::Path;

use super::{git, GitError};

/// How many planted paths a report names (the walk stops there).
const REPORTED: usize = 10;

/// The paths (relative to `work_tree`, `/`-separated) of every `.git` entry below its top,
/// whatever its kind (directory, file, link) and whatever the case of its name; at most
/// [`REPORTED`]. Links are never followed; the top-level `.git` is dispatch's own.
pub fn nested_repositories(work_tree: &Path) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![(work_tree.to_owned(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = if relative.is_empty() {
                name.to_string()
            } else {
                format!("{relative}/{name}")
            };
            if name.eq_ignore_ascii_case(".git") {
                if !relative.is_empty() {
                    found.push(path);
                    if found.len() == REPORTED {
                        return Ok(found);
                    }
                }
                continue;
            }
            // The entry's own type: a link to a directory is not walked into.
            if entry.file_type()?.is_dir() {
                pending.push((entry.path(), path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The gitlinks (submodule entries) staged in `repo`'s index that the commit `start` does not
/// have at the same path: what a commit now would add to the repository's submodules.
pub async fn new_gitlinks(repo: &Path, start: &str) -> Result<Vec<String>, GitError> {
    let staged = git(repo, &["ls-files", "--stage", "-z"]).await?;
    let before = git(repo, &["ls-tree", "-r", "-z", "--end-of-options", start]).await?;
    let before: std::collections::HashSet<&str> = gitlinks(&before).collect();
    Ok(gitlinks(&staged)
        .filter(|path| !before.contains(path))
        .map(str::to_owned)
        .collect())
}

/// The paths of the gitlinks in a NUL-separated listing of `git ls-files --stage -z` or
/// `git ls-tree -r -z`: both give each entry as `MODE ...\tPATH`, a gitlink's mode `160000`.
fn gitlinks(listing: &str) -> impl Iterator<Item = &str> {
    listing
        .split('\0')
        .filter(|entry| entry.starts_with("160000 "))
        .filter_map(|entry| entry.split_once('\t').map(|(_, path)| path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dispatch-planted-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".git/objects")).unwrap();
        std::fs::write(dir.join("file.txt"), "work\n").unwrap();
        dir
    }

    #[test]
    fn every_nested_git_entry_is_found_and_the_top_one_is_not() {
        let dir = tree("nested");
        std::fs::create_dir_all(dir.join("a/b/.git/objects")).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/.git"), "gitdir: /elsewhere/.git\n").unwrap();
        std::fs::create_dir_all(dir.join("c")).unwrap();
        std::os::unix::fs::symlink("/tmp", dir.join("c/.GIT")).unwrap();
        // A link to a directory with a nested repository is not walked into (git does not
        // follow it either); a loop of links ends the walk all the same.
        std::fs::create_dir_all(dir.join("outside/.git")).unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), dir.join("d")).unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("a/loop")).unwrap();
        let found = nested_repositories(&dir).unwrap();
        assert_eq!(found, ["a/b/.git", "c/.GIT", "outside/.git", "sub/.git"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gitlinks_are_read_from_both_listings() {
        let staged = [
            "100644 aaa 0\tfile.txt",
            "160000 bbb 0\tsub",
            "160000 ccc 0\tdir/with space",
        ]
        .join("\0");
        let tree = [
            "100644 blob aaa\tfile.txt",
            "160000 commit bbb\tsub",
            "040000 tree ddd\tdir",
        ]
        .join("\0");
        assert_eq!(
            gitlinks(&staged).collect::<Vec<_>>(),
            ["sub", "dir/with space"]
        );
        assert_eq!(gitlinks(&tree).collect::<Vec<_>>(), ["sub"]);
    }

    #[test]
    fn a_clean_tree_has_none() {
        let dir = tree("clean");
        std::fs::create_dir_all(dir.join("src/.github")).unwrap();
        std::fs::write(dir.join("src/.gitignore"), "x\n").unwrap();
        assert!(nested_repositories(&dir).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
