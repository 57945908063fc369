//! QA steps detected from marker files when a job names none.

use std::path::Path;

use crate::plan::{QaStepPlan, DEFAULT_QA_TIMEOUT_SECS};
use crate::spec::values::Duration;

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
