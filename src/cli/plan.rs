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
    let loaded = match ui.load(&args.spec) {
        Ok(loaded) => loaded,
        Err(status) => return status,
    };
    let plan = plan::build(&loaded);
    let text = match args.format {
        Format::Text => render::text(&plan),
        Format::Json => render::json(&plan),
        Format::Dot => render::dot(&plan),
        Format::Mermaid => render::mermaid(&plan),
    };
    print!("{text}");
    0
}
