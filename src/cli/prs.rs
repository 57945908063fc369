//! `dispatch prs`: the pull requests of the local forge.

use std::path::PathBuf;

use super::{state_dir, CommandError};
use crate::state;

/// Arguments of `dispatch prs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A spec whose state directory (`.dispatch/` beside it) holds the PRs.
    pub spec: Option<PathBuf>,
    /// The state directory.
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists the PRs.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let dir = state_dir::locate(args.state_dir.as_deref(), args.spec.as_deref());
    let conn = state_dir::open(&dir)?;
    let rows = state::prs(&conn)
        .map_err(|error| state::StateError::Sqlite {
            path: dir.join(state::DB_FILE),
            error,
        })
        .map_err(CommandError::failure)?;
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
            pr.status,
            format!("{}/{}", pr.org, pr.repo),
            pr.branch,
            pr.base,
            pr.title
        );
    }
    Ok(0)
}
