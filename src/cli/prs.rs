//! `dispatch prs`: the pull requests of the local forge.

use std::path::PathBuf;

use super::state_dir::{self, StateDirArgs};
use super::CommandError;
use crate::report::text::shown;

/// Arguments of `dispatch prs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A spec whose state directory (`.dispatch/` beside it) holds the PRs (as `--spec`).
    #[arg(conflicts_with = "spec")]
    pub spec_path: Option<PathBuf>,
    /// Where the state directory is.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists the PRs.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let spec = args.spec_path.as_deref().or(args.state.spec.as_deref());
    let dir = state_dir::locate(args.state.state_dir.as_deref(), spec);
    let rows = state_dir::open(&dir)?.prs()?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no pull requests in {}", dir.display());
        return Ok(0);
    }
    println!(
        "{:<6} {:<8} {:<28} {:<32} {:<10} TITLE",
        "PR", "STATUS", "REPOSITORY", "BRANCH", "BASE"
    );
    for pr in &rows {
        println!(
            "#{:<5} {:<8} {:<28} {:<32} {:<10} {}",
            pr.number,
            shown(&pr.status),
            shown(&format!("{}/{}", pr.org, pr.repo)),
            shown(&pr.branch),
            shown(&pr.base),
            shown(&pr.title)
        );
    }
    Ok(0)
}
