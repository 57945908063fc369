//! `dispatch plan SPEC`: the nodes a run would execute.

use std::path::PathBuf;

use clap::ValueEnum;

use super::source::{Source, TaskArgs};
use super::{state_dir, CommandError, Ui};
use crate::plan::{self, render};

/// Arguments of `dispatch plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (or the one-call form: --repo and --task).
    pub spec: Option<PathBuf>,
    /// The one-call form.
    #[command(flatten)]
    pub one_call: TaskArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Ask the forge nothing: `select` entries stay unresolved and the plan lists them.
    #[arg(long, conflicts_with = "remote")]
    pub offline: bool,
    /// Show per unit what publish would do to its branch's PR on the forge now: create,
    /// update, unchanged, adopt (an open PR dispatch did not open), or closed already; and
    /// which PRs a run whose agent changes nothing would close.
    #[arg(long)]
    pub remote: bool,
    /// State directory (default: `.dispatch/` beside the spec; the local forge lives there).
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Plan output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A tree grouped by job and repository.
    Text,
    /// Stable JSON, byte-identical across runs (commit it, diff it in PRs).
    Json,
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// Prints the plan.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    let source = Source::of(args.spec.as_deref(), &args.one_call)?;
    let state_dir = state_dir::for_spec(source.file(), args.state_dir.as_deref());
    let (loaded, _) = super::targets::load(ui, &source, &state_dir, args.offline)?;
    let mut plan = plan::build(&loaded);
    if let Some(rollout) = &loaded.spec.rollout {
        let waves = crate::exec::rollout::waves(rollout, plan.units.len());
        for (unit, wave) in plan.units.iter_mut().zip(waves) {
            unit.wave = Some(wave);
        }
    }
    if args.remote {
        super::tokio_runtime(false)?
            .block_on(preview_publish(&loaded, &mut plan, &state_dir))
            .map_err(|message| {
                CommandError::failure(format_args!("{}: {message}", source.file().display()))
            })?;
    }
    let text = match args.format {
        Format::Text => {
            let detected =
                super::tokio_runtime(false)?.block_on(detect_qa(&loaded, &plan, &state_dir));
            render::text_with_detected(&plan, &detected)
        }
        Format::Json => render::json(&plan),
        Format::Dot => render::dot(&plan),
        Format::Mermaid => render::mermaid(&plan),
    };
    match args.format {
        // The tree shows what came from outside already, and JSON keeps it exact.
        Format::Text | Format::Json => print!("{text}"),
        Format::Dot | Format::Mermaid => print!("{}", crate::report::text::on_stdout(&text)),
    }
    Ok(0)
}

/// Fills each publishing unit's [`plan::PublishPreview`]: the PR its branch has on the forge
/// now, compared with the title and body publish would send.
async fn preview_publish(
    loaded: &crate::spec::LoadedSpec,
    plan: &mut plan::Plan,
    state_dir: &std::path::Path,
) -> Result<(), String> {
    use crate::forge::{any::AnyForge, options::RemoteOptions, pr::ExistingPr};
    use plan::{PublishAction, PublishPreview};
    let remote = AnyForge::from_spec(&loaded.spec.forge, RemoteOptions::default())
        .map_err(|e| e.to_string())?;
    let local_prs = match &remote {
        None => crate::plan::resolve::local_prs(state_dir)?,
        Some(_) => Vec::new(),
    };
    // Which PRs dispatch opened (the others are adopted by publish), as the journal says.
    let published = match crate::state::Db::exists_in(state_dir) {
        true => crate::state::Db::open_read_only(state_dir)
            .and_then(|db| db.published_prs(None))
            .map_err(|e| e.to_string())?,
        false => Default::default(),
    };
    let mut default_branches: std::collections::HashMap<(String, String), Option<String>> =
        std::collections::HashMap::new();
    for unit in &mut plan.units {
        let target = &loaded.targets[unit.target];
        if !unit
            .nodes
            .iter()
            .any(|n| n.kind == crate::vocab::NodeKind::Publish)
        {
            continue;
        }
        let (org, repo, branch) = (&unit.org, &unit.repo, &unit.branch);
        let existing = match &remote {
            Some(forge) => forge
                .existing_pr(org, repo, branch)
                .await
                .map_err(|e| format!("{org}/{repo}: {e}"))?,
            None => ExistingPr::pick(
                local_prs
                    .iter()
                    .rev()
                    .filter(|p| &p.org == org && &p.repo == repo && &p.branch == branch)
                    .map(|p| ExistingPr {
                        number: p.number as u64,
                        reference: crate::forge::local::LocalForge::reference(org, repo, p.number),
                        open: p.status == "open",
                        merged: p.status == "merged",
                        title: p.title.clone(),
                        body: p.body.clone(),
                        author: None,
                    })
                    .collect(),
            ),
        };
        let ours = published.get(&unit.id).filter(|p| {
            p.origin == Some(crate::vocab::PrOrigin::Opened)
                && existing
                    .as_ref()
                    .is_some_and(|e| e.reference == p.reference)
        });
        let closes_if_unchanged = ours.is_some_and(|p| p.open)
            && existing.as_ref().is_some_and(|e| e.open)
            && !unit.existing_branch
            && loaded.spec.jobs[target.job].pr.on_no_changes
                == crate::spec::model::OnNoChanges::Close;
        let action = match &existing {
            None => PublishAction::Create,
            Some(pr) if !pr.open => PublishAction::Closed,
            Some(_) if ours.is_none() => PublishAction::Adopt,
            Some(pr) => {
                let base = match &unit.base {
                    Some(base) => Some(base.clone()),
                    None => {
                        let key = (org.clone(), repo.clone());
                        if !default_branches.contains_key(&key) {
                            let found = super::targets::default_branch(
                                remote.as_ref(),
                                state_dir,
                                org,
                                repo,
                            )
                            .await;
                            default_branches.insert(key.clone(), found);
                        }
                        default_branches[&key].clone()
                    }
                };
                let mut context = plan::unit_context(&loaded.spec, target);
                context.base = base;
                let title = plan::pr_title(loaded, target.job, &context)?;
                let body = plan::pr_body(loaded, target.job, &context)?;
                if pr.title == title && pr.body.trim() == body.trim() {
                    PublishAction::Unchanged
                } else {
                    PublishAction::Update
                }
            }
        };
        unit.publish = Some(PublishPreview {
            action,
            author: existing
                .as_ref()
                .filter(|_| action == PublishAction::Adopt)
                .and_then(|pr| pr.author.clone()),
            closes_if_unchanged,
            pr: existing.map(|pr| {
                if pr.merged {
                    format!("{}, merged", pr.reference)
                } else {
                    pr.reference
                }
            }),
        });
    }
    Ok(())
}

/// QA steps implied by the marker files at the tip of each unit's repository, where the
/// repository can be read without the network (the local forge, or a local `url`).
async fn detect_qa(
    loaded: &crate::spec::LoadedSpec,
    plan: &plan::Plan,
    state_dir: &std::path::Path,
) -> std::collections::HashMap<String, Vec<String>> {
    let spec_dir = loaded.path.parent().unwrap_or(std::path::Path::new("."));
    let forge = crate::forge::local::LocalForge::root_in(state_dir);
    let mut detected = std::collections::HashMap::new();
    for unit in plan.units.iter().filter(|u| matches!(u.qa, plan::Qa::Auto)) {
        let repo = match &unit.url {
            Some(url) if !url.contains("://") => spec_dir.join(url),
            Some(_) => continue,
            None => forge.join(&unit.org).join(format!("{}.git", unit.repo)),
        };
        if !repo.exists() {
            continue;
        }
        let rev = unit.base.as_deref().unwrap_or("HEAD");
        let listed =
            crate::git::git(&repo, &["ls-tree", "--name-only", "--end-of-options", rev]).await;
        if let Ok(listed) = listed {
            let files: Vec<String> = listed.lines().map(str::to_owned).collect();
            detected.insert(unit.id.clone(), crate::exec::node::qa::commands_for(&files));
        }
    }
    detected
}
