//! `dispatch init [DIR]`: a commented starter spec (`spec.yaml`) and the spec's own templates
//! directory with the one template it uses (`templates/task.md`), written into DIR. The texts
//! are `pipelines/starter/`, embedded at build time; they validate and plan as they are on the
//! embedded local forge.
//!
//! Invariants: nothing existing is overwritten, and nothing is left half-written. Every
//! destination is checked before anything is written; each file is written whole to a
//! temporary file beside it and linked to its name, which fails rather than replaces when a
//! file of that name appeared meanwhile; when one file fails, those written before it are
//! removed again.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::CommandError;

/// The files `init` writes: path inside DIR, text.
const FILES: [(&str, &str); 2] = [
    (
        "spec.yaml",
        include_str!("../../pipelines/starter/spec.yaml"),
    ),
    (
        "templates/task.md",
        include_str!("../../pipelines/starter/templates/task.md"),
    ),
];

/// Arguments of `dispatch init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the starter spec (created when missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// Writes the starter files, or names the first one that exists and writes nothing.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let targets: Vec<(PathBuf, &str)> = FILES
        .iter()
        .map(|(path, text)| (args.dir.join(path), *text))
        .collect();
    for (path, _) in &targets {
        // `symlink_metadata`: a dangling link is a file of that name too.
        if path.symlink_metadata().is_ok() {
            return Err(CommandError::failure(format_args!(
                "{} exists already; dispatch init writes nothing over a file, so nothing was written",
                path.display()
            ))
            .hint("Move it away, or run `dispatch init DIR` for another directory."));
        }
    }
    let mut written: Vec<&Path> = Vec::new();
    for (path, text) in &targets {
        if let Err(error) = write_new(path, text) {
            for done in written {
                let _ = std::fs::remove_file(done);
            }
            return Err(CommandError::failure(format_args!(
                "cannot write {}: {error}; nothing was written",
                path.display()
            )));
        }
        written.push(path);
    }
    let spec = args.dir.join(FILES[0].0);
    for (path, _) in &targets {
        println!("wrote {}", path.display());
    }
    println!(
        "next: `dispatch validate {spec}`, `dispatch plan {spec}`, then edit it (the comments say how)",
        spec = spec.display()
    );
    Ok(0)
}

/// Writes `text` to `path`, which must not exist: whole into a temporary file beside it, then
/// linked to its name (which fails when `path` exists by then) and the temporary name removed.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = dir.join(format!(".{name}.dispatch-init-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&temporary, path)
    })();
    let _ = std::fs::remove_file(&temporary);
    result
}
