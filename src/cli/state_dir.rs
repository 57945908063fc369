//! Where a command's state directory is, in one place: `--state-dir` (or `DISPATCH_STATE_DIR`),
//! else `.dispatch/` beside the spec, else `./.dispatch`.
//!
//! Commands that take a spec (`run`, `plan`, `render`, `doctor`) use [`for_spec`], which makes
//! the directory absolute (git runs in other directories). Commands that read runs (`runs`,
//! `status`, `logs`, `cancel`, `resume`, `retry`, `answer`, `prs`) use [`locate`] and
//! [`open`]: the directory as the user named it (messages show it that way), and a database
//! that must exist already.

use std::path::{Path, PathBuf};

use super::CommandError;
use crate::state::Db;

/// The state directory of a spec, absolute: `explicit`, else `.dispatch/` beside the spec.
pub fn for_spec(spec: &Path, explicit: Option<&Path>) -> PathBuf {
    let dir = match explicit {
        Some(dir) => dir.to_owned(),
        None => spec.parent().unwrap_or(Path::new(".")).join(".dispatch"),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The state directory of a command that reads runs: `explicit` as given, else the spec's
/// (absolute, see [`for_spec`]), else `.dispatch` in the working directory.
pub fn locate(explicit: Option<&Path>, spec: Option<&Path>) -> PathBuf {
    match (explicit, spec) {
        (Some(dir), _) => dir.to_owned(),
        (None, Some(spec)) => for_spec(spec, None),
        (None, None) => PathBuf::from(".dispatch"),
    }
}

/// Opens the state database of `dir`, which a run must have created, or says why not.
pub fn open(dir: &Path) -> Result<Db, CommandError> {
    if !Db::exists_in(dir) {
        return Err(CommandError::failure(format_args!(
            "no state database in {}; run a spec first, or pass --state-dir or --spec",
            dir.display()
        )));
    }
    Ok(Db::open(dir)?)
}

/// The flags that say where the state directory is, for commands that read runs.
#[derive(Debug, clap::Args)]
pub struct StateDirArgs {
    /// The state directory (default: `.dispatch/` beside `--spec`, else `./.dispatch`).
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The spec whose state directory to use.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

impl StateDirArgs {
    /// The flags naming `dir` itself.
    pub fn dir(dir: PathBuf) -> Self {
        Self {
            state_dir: Some(dir),
            spec: None,
        }
    }

    /// Opens the state database (see [`open`]); gives the directory too.
    pub fn open(&self) -> Result<(PathBuf, Db), CommandError> {
        let dir = locate(self.state_dir.as_deref(), self.spec.as_deref());
        let db = open(&dir)?;
        Ok((dir, db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_spec_then_the_working_directory() {
        let spec = Path::new("pipelines/demo.yaml");
        let beside = std::path::absolute("pipelines/.dispatch").unwrap();
        assert_eq!(for_spec(spec, None), beside);
        assert!(for_spec(spec, Some(Path::new("elsewhere"))).is_absolute());
        // Commands that read runs show the directory as the user named it.
        assert_eq!(
            locate(Some(Path::new("elsewhere")), Some(spec)),
            Path::new("elsewhere")
        );
        assert_eq!(locate(None, Some(spec)), beside);
        assert_eq!(locate(None, None), Path::new(".dispatch"));
    }

    #[test]
    fn a_missing_database_says_what_to_do() {
        let dir = std::env::temp_dir().join(format!("dispatch-no-db-{}", std::process::id()));
        let error = open(&dir).err().map(|e| e.stderr());
        assert_eq!(
            error.as_deref(),
            Some(
                format!(
                    "error: no state database in {}; run a spec first, or pass --state-dir or --spec\n",
                    dir.display()
                )
                .as_str()
            )
        );
        assert!(!dir.exists(), "a failed open creates nothing");
    }
}
