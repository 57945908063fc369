//! `dispatch plan SPEC`: the nodes a run would execute.

use std::path::PathBuf;

use clap::ValueEnum;

use super::Ui;
use crate::plan::{self, render};

/// Arguments of `dispatch plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec.
    pub spec: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Ask the forge nothing: `select` entries stay unresolved and the plan lists them.
    #[arg(long)]
    pub offline: bool,
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
pub fn run(ui: &Ui, args: Args) -> u8 {
    let state_dir = super::run::state_dir(&args.spec, args.state_dir.as_deref());
    let (loaded, _) = match super::targets::load(ui, &args.spec, &state_dir, args.offline) {
        Ok(loaded) => loaded,
        Err(status) => return status,
    };
    let plan = plan::build(&loaded);
    let text = match args.format {
        Format::Text => render::text_with_detected(&plan, &detect_qa(&loaded, &plan, &state_dir)),
        Format::Json => render::json(&plan),
        Format::Dot => render::dot(&plan),
        Format::Mermaid => render::mermaid(&plan),
    };
    print!("{text}");
    0
}

/// QA steps implied by the marker files at the tip of each unit's repository, where the
/// repository can be read without the network (the local forge, or a local `url`).
fn detect_qa(
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
        let Ok(output) = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["ls-tree", "--name-only", rev])
            .output()
        else {
            continue;
        };
        if output.status.success() {
            let files: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            detected.insert(unit.id.clone(), crate::exec::qa::commands_for(&files));
        }
    }
    detected
}
