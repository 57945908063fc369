//! The agent-output cache: what an agent produced for a given prompt, argv, image and base
//! commit, so a re-run after a crash, a retry or a second run of an unchanged spec does not
//! spend tokens again.
//!
//! An entry lives in `<state>/cache/<key>/`: `result` (the outcome: `changed` or
//! `no_changes`) and, for `changed`, `changes.bundle`, a git bundle of the agent's commits on
//! top of the base. Entries are written to a temporary directory and renamed into place.

use std::path::{Path, PathBuf};

use crate::git;

/// Where a state directory keeps the cache.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cache")
}

/// The key of an agent run: every input that decides what the agent does.
pub fn key(prompt: &str, argv: &[String], image_id: &str, base_sha: &str) -> String {
    let mut parts: Vec<&str> = vec![prompt, image_id, base_sha];
    parts.extend(argv.iter().map(String::as_str));
    // Two FNV-1a passes with different offsets: 128 bits, enough to tell runs apart (the cache
    // guards tokens, not secrets).
    let fnv = |offset: u64| {
        let mut hash = offset;
        for part in &parts {
            for byte in part.bytes().chain([0xff]) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// A cached result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// The agent committed changes, kept in this bundle.
    Changed(PathBuf),
    /// The agent changed nothing.
    NoChanges,
}

/// The entry of `key`, if there is a complete one.
pub async fn lookup(dir: &Path, key: &str) -> Option<Cached> {
    let entry = dir.join(key);
    match tokio::fs::read_to_string(entry.join("result"))
        .await
        .ok()?
        .trim()
    {
        "changed" if entry.join("changes.bundle").is_file() => {
            Some(Cached::Changed(entry.join("changes.bundle")))
        }
        "no_changes" => Some(Cached::NoChanges),
        _ => None,
    }
}

/// Puts a cached result into the clone: the bundle's commits become the branch's.
pub async fn apply(repo: &Path, cached: &Cached) -> Result<(), git::GitError> {
    if let Cached::Changed(bundle) = cached {
        let bundle = git::path_arg(bundle);
        git::git(repo, &["fetch", "--quiet", &bundle, "HEAD"]).await?;
        git::git(repo, &["reset", "--quiet", "--hard", "FETCH_HEAD"]).await?;
    }
    Ok(())
}

/// Stores what the agent produced: its commits since `base_sha`, or that it changed nothing.
pub async fn store(
    dir: &Path,
    key: &str,
    repo: &Path,
    base_sha: &str,
    changed: bool,
) -> Result<(), String> {
    let entry = dir.join(key);
    if entry.join("result").exists() {
        return Ok(());
    }
    let partial = dir.join(format!("{key}.partial"));
    let _ = tokio::fs::remove_dir_all(&partial).await;
    tokio::fs::create_dir_all(&partial)
        .await
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    if changed {
        let bundle = git::path_arg(&partial.join("changes.bundle"));
        git::git(
            repo,
            &[
                "bundle",
                "create",
                "--quiet",
                &bundle,
                &format!("{base_sha}..HEAD"),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let result = if changed { "changed\n" } else { "no_changes\n" };
    tokio::fs::write(partial.join("result"), result)
        .await
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    let _ = tokio::fs::remove_dir_all(&entry).await;
    tokio::fs::rename(&partial, &entry)
        .await
        .map_err(|e| format!("{}: {e}", entry.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_key() {
        let argv = vec!["codex".to_owned(), "exec".to_owned()];
        let k = key("p", &argv, "sha256:1", "abc");
        assert_eq!(k, key("p", &argv, "sha256:1", "abc"));
        assert_eq!(k.len(), 32);
        assert_ne!(k, key("q", &argv, "sha256:1", "abc"));
        assert_ne!(k, key("p", &argv[..1], "sha256:1", "abc"));
        assert_ne!(k, key("p", &argv, "sha256:2", "abc"));
        assert_ne!(k, key("p", &argv, "sha256:1", "abd"));
        assert_ne!(
            key("ab", &[], "", ""),
            key("a", &["b".to_owned()], "", ""),
            "parts are delimited"
        );
    }
}
