//! `dispatch render SPEC --job J --repo R`: the exact prompt of one unit.

use std::path::PathBuf;

use super::{state_dir, CommandError, Ui};
use crate::plan::{self, target::ResolvedTarget};
use crate::spec::problem::SpecErrors;
use crate::spec::source::Sources;
use crate::spec::validate::{prompt_parts, template_problem};

/// Arguments of `dispatch render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec.
    pub spec: PathBuf,
    /// Job id.
    #[arg(long)]
    pub job: String,
    /// Repository: `repo` or `org/repo`.
    #[arg(long)]
    pub repo: String,
    /// Workspace key when the job has several units on the repository (`task-15`, `pr-3`, ...).
    #[arg(long)]
    pub key: Option<String>,
    /// Render the prompt of this agent run (2 and up are fix attempts after QA failures).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: u32,
    /// File holding the QA failure output given to a fix attempt.
    #[arg(long)]
    pub qa_failure: Option<PathBuf>,
    /// State directory (default: `.dispatch/` beside the spec; the local forge lives there).
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Ask the forge nothing: `select` entries and PR targets stay unresolved, and a job
    /// without `base` renders "the repository's default branch" instead of its name.
    #[arg(long)]
    pub offline: bool,
}

/// Prints the prompt.
pub fn run(ui: &Ui, args: Args) -> Result<u8, CommandError> {
    // The units of `select` entries and PR targets come from the forge, as in `plan`.
    let state_dir = state_dir::for_spec(&args.spec, args.state_dir.as_deref());
    let (loaded, _) = super::targets::load(
        ui,
        &super::source::Source::Spec(args.spec.clone()),
        &state_dir,
        args.offline,
    )?;
    let spec = &loaded.spec;
    let Some(job_index) = spec.jobs.iter().position(|j| j.id.as_str() == args.job) else {
        let ids: Vec<&str> = spec.jobs.iter().map(|j| j.id.as_str()).collect();
        return Err(CommandError::failure(format_args!(
            "{} has no job `{}`; its jobs: {}",
            args.spec.display(),
            args.job,
            ids.join(", ")
        )));
    };
    let matches: Vec<&ResolvedTarget> = loaded
        .targets
        .iter()
        .filter(|t| t.job == job_index)
        .filter(|t| t.repo.as_str() == args.repo || t.full_name() == args.repo)
        .filter(|t| args.key.as_ref().is_none_or(|k| &t.key == k))
        .collect();
    let target = match matches.as_slice() {
        [one] => *one,
        [] => {
            let names: Vec<String> = loaded
                .targets
                .iter()
                .filter(|t| t.job == job_index)
                .map(|t| t.full_name())
                .collect();
            return Err(CommandError::failure(format_args!(
                "job `{}` has no target `{}`; its targets: {}",
                args.job,
                args.repo,
                names.join(", ")
            )));
        }
        many => {
            let keys: Vec<&str> = many.iter().map(|t| t.key.as_str()).collect();
            return Err(CommandError::failure(format_args!(
                "job `{}` has {} units on `{}`; choose one with --key ({})",
                args.job,
                many.len(),
                args.repo,
                keys.join(", ")
            )));
        }
    };
    let mut context = plan::unit_context(spec, target);
    context.attempt = args.attempt;
    // The base the run's prep would resolve: the spec's, else the repository's default branch
    // (the local forge's HEAD, or what the remote forge says).
    if context.base.is_none() && !args.offline {
        let spec_dir = loaded.path.parent().unwrap_or(std::path::Path::new("."));
        context.base = resolved_base(spec, spec_dir, &state_dir, target)?;
    }
    if let Some(path) = &args.qa_failure {
        match std::fs::read_to_string(path) {
            Ok(text) => context.qa_failure = Some(text),
            Err(error) => {
                return Err(CommandError::failure(format_args!(
                    "cannot read QA failure output {}: {error}",
                    path.display()
                )));
            }
        }
    }
    match loaded
        .templates
        .prompt(prompt_parts(spec, job_index), &context)
    {
        Ok(prompt) => {
            print!("{}", crate::report::text::on_stdout(&prompt));
            Ok(0)
        }
        Err(error) => {
            let mut sources = Sources::default();
            let problem = template_problem(
                &error,
                &mut sources,
                format!("while rendering for {}", target.full_name()),
            );
            let errors = SpecErrors {
                path: args.spec.display().to_string(),
                sources,
                problems: vec![problem],
            };
            Err(CommandError::rendered(errors.render(ui.color_err)))
        }
    }
}

/// The default branch of the target's repository as prep would find it, when it can be found:
/// a local `url` is not looked into (prep clones it), the forge is asked otherwise; a
/// repository the local forge will seed at the run's start has the seed's branch.
fn resolved_base(
    spec: &crate::spec::model::Spec,
    spec_dir: &std::path::Path,
    state_dir: &std::path::Path,
    target: &ResolvedTarget,
) -> Result<Option<String>, CommandError> {
    if target.url.is_some() {
        return Ok(None);
    }
    use crate::forge::{any::AnyForge, options::RemoteOptions};
    let remote = AnyForge::from_spec(&spec.forge, RemoteOptions::default())
        .map_err(|e| CommandError::failure(e.to_string()))?;
    let (org, repo) = (target.org.as_str(), target.repo.as_str());
    let runtime = super::tokio_runtime(false)?;
    let found = runtime.block_on(super::targets::default_branch(
        remote.as_ref(),
        state_dir,
        org,
        repo,
    ));
    if found.is_some() || remote.is_some() {
        return Ok(found);
    }
    let seeded = spec
        .forge
        .seed
        .as_ref()
        .is_some_and(|seed| spec_dir.join(seed).join(org).join(repo).is_dir());
    Ok(seeded.then(|| crate::git::SEED_BRANCH.to_owned()))
}
