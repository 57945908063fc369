//! `dispatch completions bash|zsh|fish`: the shell's completion script, generated from the
//! command definitions (clap_complete), so it knows every command, option and value the
//! binary that prints it knows.

use clap::CommandFactory;

use super::{Cli, CommandError};

/// Arguments of `dispatch completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells dispatch writes completions for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// Bash (source it, or put it in bash-completion's directory).
    Bash,
    /// Zsh (a `_dispatch` file in a directory of `$fpath`).
    Zsh,
    /// Fish (`~/.config/fish/completions/dispatch.fish`).
    Fish,
}

/// Prints the completion script.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "dispatch", &mut script);
    super::write_stdout(&script)
}
