//! `dispatch prs`: the pull requests of the local forge.

use std::path::PathBuf;

use super::EXIT_FAILURE;
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
pub fn run(args: Args) -> u8 {
    let dir = match (&args.state_dir, &args.spec) {
        (Some(dir), _) => dir.clone(),
        (None, Some(spec)) => super::run::state_dir(spec, None),
        (None, None) => PathBuf::from(".dispatch"),
    };
    if !state::Db::exists_in(&dir) {
        eprintln!(
            "error: no state database in {}; run a spec first or pass --state-dir",
            dir.display()
        );
        return EXIT_FAILURE;
    }
    let rows = match state::Db::open(&dir).and_then(|db| db.prs()) {
        Ok(rows) => rows,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_FAILURE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return 0;
    }
    if rows.is_empty() {
        println!("no pull requests in {}", dir.display());
        return 0;
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
    0
}
