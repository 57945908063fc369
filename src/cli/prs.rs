//! `dispatch prs`: the pull requests of the local forge; `dispatch prs close|reopen SPEC`: the
//! PRs of a spec's units, closed or reopened on its forge (local or remote).

use std::path::PathBuf;

use super::source::Source;
use super::state_dir::{self, StateDirArgs};
use super::{CommandError, Ui};
use crate::forge::any::AnyForge;
use crate::forge::local::LocalForge;
use crate::forge::options::RemoteOptions;
use crate::report::text::shown;
use crate::state::Journal;
use crate::vocab::NodeKind;

/// Arguments of `dispatch prs`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Close or reopen a spec's PRs instead of listing the local forge's.
    #[command(subcommand)]
    pub action: Option<Action>,
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

/// What `prs` does to a spec's PRs.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Close the open PR of each unit of the spec (on its forge, local or remote).
    Close(ChangeArgs),
    /// Reopen the closed PR of each unit of the spec (merged PRs stay merged).
    Reopen(ChangeArgs),
}

/// Arguments of `prs close` and `prs reopen`.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// The spec.
    pub spec: PathBuf,
    /// Only these units: `JOB`, `JOB/REPO` or `JOB/ORG/REPO` (repeatable).
    #[arg(long, value_name = "JOB/REPO")]
    pub only: Vec<String>,
    /// State directory (default: `.dispatch/` beside the spec; the local forge lives there).
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print JSON: one `{unit, branch, pr}` per unit, `pr` null where nothing changed.
    #[arg(long)]
    pub json: bool,
}

/// Lists the PRs, or closes or reopens a spec's.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    match args.action {
        Some(Action::Close(change)) => return set_state(ui, change, false),
        Some(Action::Reopen(change)) => return set_state(ui, change, true),
        None => {}
    }
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

/// Closes (`open` false) or reopens the PR of each unit of the spec that publishes, one forge
/// request at a time (the remote forges' clients pace their writes by the forge's budget).
fn set_state(ui: &Ui, args: ChangeArgs, open: bool) -> Result<u8, CommandError> {
    let state_dir = state_dir::for_spec(&args.spec, args.state_dir.as_deref());
    let source = Source::Spec(args.spec.clone());
    let (loaded, _) = super::targets::load(ui, &source, &state_dir, false)?;
    let mut plan = crate::plan::build(&loaded);
    super::run::filter(&mut plan, &args.only).map_err(CommandError::failure)?;
    super::tokio_runtime(false)?.block_on(async {
        let forge = match AnyForge::from_spec(&loaded.spec.forge, RemoteOptions::default())
            .map_err(CommandError::failure)?
        {
            Some(remote) => remote,
            None => {
                let journal = Journal::start(&state_dir).map_err(CommandError::failure)?;
                AnyForge::Local(LocalForge::new(LocalForge::root_in(&state_dir), journal))
            }
        };
        let (did, none) = match open {
            true => ("reopened", "no closed PR"),
            false => ("closed", "no open PR"),
        };
        let mut listed = Vec::new();
        for unit in &plan.units {
            if !unit.nodes.iter().any(|n| n.kind == NodeKind::Publish) {
                continue;
            }
            let changed = forge
                .set_pr_state(&unit.org, &unit.repo, &unit.branch, open)
                .await
                .map_err(|e| {
                    CommandError::failure(format_args!("{}/{}: {e}", unit.org, unit.repo))
                })?;
            if !args.json {
                match &changed {
                    Some(pr) => println!("{did:<9} {} ({})", shown(pr), shown(&unit.id)),
                    None => println!(
                        "{:<9} {}: {none} of branch {}",
                        "-",
                        shown(&unit.id),
                        shown(&unit.branch)
                    ),
                }
            }
            listed.push(serde_json::json!({
                "unit": unit.id,
                "branch": unit.branch,
                "pr": changed,
            }));
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&listed).unwrap_or_default()
            );
        }
        Ok(0)
    })
}
