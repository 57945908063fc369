//! The QA node: run the job's QA steps, or the steps detected from marker files in the clone
//! when the job names none, each in a container of its own (never on the host), in order,
//! stopping at the first that fails.

use std::path::Path;

use super::agent::cut_note;
use super::{
    container, done, log_len, stop, tail, write_file, NodeCtx, NodeResult, QA_FAILURE_NOTE,
};
use crate::exec::error::Step;
use crate::forge::Forge;
use crate::plan::{Qa, QaStepPlan, DEFAULT_QA_TIMEOUT_SECS};
use crate::runtime::{Exit, Runtime};
use crate::spec::values::Duration;
use crate::vocab::Outcome;

/// Runs the unit's QA steps; the first that fails ends the node.
pub(super) async fn run<R: Runtime, F: Forge>(ctx: &NodeCtx<R, F>) -> NodeResult {
    let repo = ctx.unit.repo_dir();
    let steps = match &ctx.unit.unit().qa {
        Qa::Steps(steps) => steps.clone(),
        Qa::Auto => detect(&repo, &ctx.unit.unit().image),
        Qa::None => Vec::new(),
    };
    let log = container::log(&ctx.unit, ctx.unit.meta_dir().join("qa.log"));
    for (i, step) in steps.iter().enumerate() {
        let timeout = step.timeout.get();
        let container = container::qa(&ctx.unit, &ctx.owner(), step, i);
        let from = log_len(&log.path);
        let run_step = Step::QaStep(step.run.clone());
        let ran = container::run(ctx, run_step, container, None, &log, timeout).await;
        let cut = match &ran {
            Ok(ran) => cut_note(ran.cut, &log),
            Err(_) => String::new(),
        };
        match ran.map(|ran| ran.exit) {
            Ok(Exit::Code(0)) => {}
            Ok(Exit::Code(code)) => {
                let step = format!("`{}` exited with code {code}{cut}", step.run);
                let tail = tail(&log.path, from).await;
                // Kept for a fix attempt that a resumed run starts afresh.
                let note = ctx.unit.note(QA_FAILURE_NOTE);
                let _ = write_file(Step::Workspace, &note, &format!("{step}\n{tail}")).await;
                return NodeResult::QaFailed { step, tail };
            }
            Ok(Exit::TimedOut) => {
                return stop(
                    Outcome::TimedOut,
                    format!("QA step `{}` ran past {}{cut}", step.run, step.timeout),
                )
            }
            Ok(Exit::Cancelled) => return stop(Outcome::Cancelled, "QA stopped by Ctrl-C"),
            Ok(Exit::Idle) => {
                let what = format!("QA step `{}`", step.run);
                return stop(
                    Outcome::TimedOut,
                    format!("{}{cut}", container::idle_reason(&what, &ctx.unit)),
                );
            }
            Err(error) => return NodeResult::Failed(error),
        }
    }
    done()
}

/// Marker file and the commands it implies, in detection order.
pub const MARKERS: &[(&str, &[&str])] = &[
    (
        "go.mod",
        &["go build ./...", "go vet ./...", "go test ./..."],
    ),
    ("Cargo.toml", &["cargo build", "cargo test"]),
    ("package.json", &["npm ci", "npm test"]),
    ("composer.json", &["composer install", "composer test"]),
    ("pyproject.toml", &["pytest"]),
];

/// The commands implied by the files at the top of a repository (names as `git ls-tree` or a
/// directory listing gives them).
pub fn commands_for(files: &[String]) -> Vec<String> {
    let has = |name: &str| files.iter().any(|f| f == name);
    let mut commands = Vec::new();
    for (marker, steps) in MARKERS {
        if !has(marker) {
            continue;
        }
        for step in *steps {
            if *step == "npm ci" && !has("package-lock.json") {
                commands.push("npm install".to_owned());
            } else {
                commands.push((*step).to_owned());
            }
        }
    }
    commands
}

/// QA steps for the clone at `repo`, run in `image` without network.
pub fn detect(repo: &Path, image: &str) -> Vec<QaStepPlan> {
    let files: Vec<String> = std::fs::read_dir(repo)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    commands_for(&files)
        .into_iter()
        .map(|run| QaStepPlan {
            name: run.clone(),
            run,
            image: image.to_owned(),
            timeout: Duration::from_secs(DEFAULT_QA_TIMEOUT_SECS),
            network: "none".to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_imply_their_commands() {
        let files = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            commands_for(&files(&["go.mod", "README.md"])),
            ["go build ./...", "go vet ./...", "go test ./..."]
        );
        assert_eq!(
            commands_for(&files(&["package.json"])),
            ["npm install", "npm test"]
        );
        assert_eq!(
            commands_for(&files(&["package.json", "package-lock.json"])),
            ["npm ci", "npm test"]
        );
        assert!(commands_for(&files(&["README.md"])).is_empty());
    }
}
