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
    /// Show PR N whole: its title, body and comments (a review agent's reviews).
    #[arg(long, value_name = "N")]
    pub show: Option<i64>,
}

/// Lists the PRs.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let spec = args.spec_path.as_deref().or(args.state.spec.as_deref());
    let dir = state_dir::locate(args.state.state_dir.as_deref(), spec);
    let mut rows = state_dir::open(&dir)?.prs()?;
    if let Some(number) = args.show {
        rows.retain(|pr| pr.number == number);
        if rows.is_empty() {
            return Err(CommandError::invalid(format!(
                "no pull request #{number} in {}",
                dir.display()
            )));
        }
    }
    if let (Some(_), false) = (args.show, args.json) {
        show(&rows[0]);
        return Ok(0);
    }
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
        let comments = match pr.comments.len() {
            0 => String::new(),
            1 => " (1 comment)".to_owned(),
            n => format!(" ({n} comments)"),
        };
        println!(
            "#{:<5} {:<8} {:<28} {:<32} {:<10} {}{comments}",
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

/// Prints one PR whole: what it is, its body, its comments.
fn show(pr: &crate::state::views::PrRow) {
    println!("#{} {}", pr.number, shown(&pr.title));
    println!(
        "{} {}/{}: {} into {} (run {}, unit {})",
        shown(&pr.status),
        shown(&pr.org),
        shown(&pr.repo),
        shown(&pr.branch),
        shown(&pr.base),
        shown(&pr.run_id),
        shown(&pr.unit_id)
    );
    println!("\n{}", shown(pr.body.trim()));
    for comment in &pr.comments {
        println!("\n--- comment, {}", crate::state::Civil::of(comment.at));
        println!("{}", shown(comment.body.trim()));
    }
}
